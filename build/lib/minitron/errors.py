"""The one exception type users see.

Every error caused by the user's input (a config value, a file, a size) is raised as
:class:`MinitronError` with a message that names the field or file and the fix. The CLI prints it as
one line and exits with status 2; anything else is a bug and keeps its traceback.
"""


class MinitronError(Exception):
    """A user-facing error: bad config value, missing or corrupt file, incompatible sizes."""
