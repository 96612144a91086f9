"""Errors a user can cause; the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input: a path, an option, a corrupt file, a mismatched model pair, a lost peer."""
