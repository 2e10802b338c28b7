"""The one exception type a user sees: a clear, one-line message, never a traceback."""


class QuijoteError(Exception):
    """Bad input or an unmet precondition, explained in one line for the person at the keyboard."""
