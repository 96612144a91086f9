"""Subcommands of `pspec`; see pspec_jax.cli."""
