"""A run config bound to a hardware: every decision that pairs what a config asks with what a chip can do."""
