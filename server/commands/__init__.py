"""One module per CLI command group; each parses arguments and calls storage."""
