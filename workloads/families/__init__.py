"""Model families: one module each, on top of :mod:`workloads.families.base`."""
