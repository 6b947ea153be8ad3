"""Errors an RPC caller gets back as a JSON-RPC error with a clear message."""

INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603     # a bug of ours: the trace goes to the log, not to the caller
BUSY = -32000
REBALANCE_REFUSED = -32001


class UserError(Exception):
    """A request the plugin refuses; nothing was changed."""

    def __init__(self, message: str, code: int = INVALID_PARAMS):
        super().__init__(message)
        self.code = code
        self.message = message
