"""The `nmsim` command line: thin wrappers over the packages."""
