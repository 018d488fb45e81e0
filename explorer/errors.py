"""Errors that teach: one sentence saying what was wrong and what is accepted."""


class ExplorerError(ValueError):
    """A wrong input from the user. The CLI prints the message alone and exits with status 2."""
