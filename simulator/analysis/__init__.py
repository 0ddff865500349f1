"""What is computed from runs: generation, sweeps and the paper reproduction."""
