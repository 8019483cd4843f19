"""The one exception type that reaches the user as a one-line message instead of a traceback."""


class UserError(Exception):
    """A problem the user can fix: the message names the field or file, and the fix."""
