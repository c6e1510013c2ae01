"""The command line, ``python -m fer_lib <command>``: one module per group of commands (``main``
lists them)."""
