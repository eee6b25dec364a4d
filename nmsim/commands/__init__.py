"""One module per `nmsim` subcommand (see nmsim.cli)."""
