"""The click command line, thin: one module per command."""
