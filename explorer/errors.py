"""Errors that teach: one sentence saying what was wrong and what is accepted."""


class ExplorerError(ValueError):
    """A wrong input from the user. The CLI prints the message alone and exits with status 2."""


class OptionError(ExplorerError):
    """A wrong value for one option. The message names the option as Python callers spell it
    (`height must be ...`); the command line shows the same sentence with its flag (`--height`)."""

    def __init__(self, option: str, rest: str):
        self.option, self.rest = option, rest
        super().__init__(f"{option} {rest}")

    def for_cli(self) -> str:
        return f"--{self.option.replace('_', '-')} {self.rest}"
