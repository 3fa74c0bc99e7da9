"""The lab's two exception types: ``LabError`` for mistakes a user can fix (the CLI prints it as one
line, no traceback) and ``WorkerError`` for a launch whose ranks failed."""


class LabError(Exception):
    """A problem with the user's input or environment, with a message that says what to do."""


class WorkerError(LabError):
    """One or more ranks failed: ``ranks`` (the first is the cause), ``reason``, ``tracebacks``, ``exitcodes``."""

    def __init__(self, message: str, ranks: list[int], reason: str, tracebacks: dict | None = None,
                 exitcodes: dict | None = None):
        super().__init__(message)
        self.ranks, self.reason = list(ranks), reason
        self.tracebacks, self.exitcodes = dict(tracebacks or {}), dict(exitcodes or {})
