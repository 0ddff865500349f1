"""The ``accelsim`` command line, one module per command (errors and exit codes in ``main``)."""
