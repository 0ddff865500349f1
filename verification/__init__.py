"""Independent oracles and peer drivers the tests compare accelsim with (not installed)."""
