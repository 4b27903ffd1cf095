"""The one exception type that reaches users as a single line, never a traceback."""


class UserError(Exception):
    """A mistake in what the user gave us (a path, a file, an option); printed as one line."""
