"""Energy and area: cited tables, per-action costs, and accounting over the engine's action counts."""
