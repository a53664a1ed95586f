"""The one exception type the command line turns into a one-sentence error."""


class NightlinkError(Exception):
    """A user-facing error: its message is a full sentence, shown without a traceback."""
