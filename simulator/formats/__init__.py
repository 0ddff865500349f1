"""Number formats, sparsity patterns and the bit-exact storage of parameters."""
