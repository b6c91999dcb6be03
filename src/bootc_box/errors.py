"""The one error type for failures a user can act on."""

# podman run's convention: 125 means the tool itself failed, anything else
# is the status of the command that ran.
EXIT_TOOL_FAILED = 125


class BootcBoxError(Exception):
    """An expected failure: printed as one line, with the fix, and no traceback."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message
