"""One exception type for mistakes a user can fix: the CLI prints it as one line, no traceback."""


class LabError(Exception):
    """A problem with the user's input or environment, with a message that says what to do."""
