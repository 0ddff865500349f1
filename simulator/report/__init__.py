"""Reports at the edge: summaries, text tables, plots and atomic files."""
