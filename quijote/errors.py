"""The one exception type a user sees: a clear, one-line message, never a traceback."""


class QuijoteError(Exception):
    """Bad input or an unmet precondition, explained in one line for the person at the keyboard."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
