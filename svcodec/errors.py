"""Exception types shared by every svcodec module.

The CLI catches ``SvcError`` and prints its message as one line, so messages
should be self-contained sentences ("access unit 12: checksum mismatch ...").
Programming errors (bad arguments from our own code) stay ValueError/TypeError.
"""


class SvcError(Exception):
    """Base class for all errors svcodec reports to the user."""


class BitstreamError(SvcError):
    """An .svc stream is malformed, corrupt, truncated or of an unsupported version."""


class InputError(SvcError):
    """A user-supplied input (path, video, option value) cannot be used."""


class ModelError(SvcError):
    """Model weights are missing, corrupt or do not match the stream."""
