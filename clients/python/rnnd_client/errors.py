"""Typed exceptions: one class per family of the daemon's error codes (docs/api.md, section 3).

Every error the daemon answers is `{"error": {"code": ..., "message": ...}}` with the HTTP
status of its code; `error_from_reply` turns it into the class of its code, so a caller
branches with `except NotFound:` rather than on strings. Failures that never reached an
answer (connection refused, reset, timed out) are `ConnectionFailed`.
"""
from __future__ import annotations

import json
from typing import Any


class RnndError(Exception):
    """Any failure of a request to rnnd.

    code: the daemon's stable error code (`"not_found"`, ...), or None when no error object
    came (a transport failure, a reply that is not rnnd's JSON).
    message: the daemon's message (for people; its wording may change).
    status: the HTTP status, or None when no reply came.
    body: the whole error object as the daemon sent it (e.g. `steps` of a conflict), or {}.
    """

    def __init__(self, message: str, code: str | None = None, status: int | None = None,
                 body: dict[str, Any] | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.body = body or {}
        self.retry_after = retry_after
        # set by the transport: an earlier attempt of this request lost its reply after it
        # was written, so it may have run
        self.maybe_applied = False
        # set for a WebSocket stream's socket that closed: the close code (docs/websocket.md)
        self.close_code: int | None = None

    def __str__(self) -> str:
        if self.status is None:
            return self.message
        return "%s %s: %s" % (self.status, self.code or "error", self.message)


class ConnectionFailed(RnndError, ConnectionError):
    """No reply: the connection could not be made, broke, or timed out (after the retries
    the request allowed)."""


class MissingDependency(RnndError, ImportError):
    """An optional part of the client needs a package that is not installed (the WebSocket
    stream needs python3-websockets: the extra `websocket`)."""


class BadRequest(RnndError):
    """400: `invalid_json`, `invalid_request`, `numeric_error`."""


class NumericError(BadRequest):
    """400 `numeric_error`: the computation produced NaN or Infinity. On a session step the
    steps were applied: `steps` is the new count."""

    @property
    def steps(self) -> int | None:
        return self.body.get("steps")


class Unauthorized(RnndError):
    """401 `unauthorized`: API keys are on and this client's key is missing or wrong."""


class Forbidden(RnndError):
    """403 `forbidden`: the key's scope does not allow this (e.g. /metrics needs admin)."""


class NotFound(RnndError):
    """404 `not_found`: no such model, session or route."""


class MethodNotAllowed(RnndError):
    """405 `method_not_allowed`."""


class Unsupported(RnndError):
    """409 `unsupported`: valid, but not something this model can do (sessions on a model
    with a backward layer, generation on a vector model)."""


class Conflict(RnndError):
    """409 `conflict`: `if_steps` was not the session's step count (nothing ran; `steps` is
    the count the daemon has), or a state's digest is another model's."""

    @property
    def steps(self) -> int | None:
        return self.body.get("steps")


class ReplyLost(Conflict):
    """A step (or reset) whose reply was lost was resent with the same `if_steps`, and the
    daemon had already applied it (or another client advanced the session in between): the
    request ran at most once, but its outputs are gone. `steps` is the session's count now."""


class Gone(RnndError):
    """410 `gone`: the session expired or was evicted; its state is lost."""


class LimitExceeded(RnndError):
    """413 `limit_exceeded`: larger than a configured limit (body, steps, tokens, memory)."""


class UnsupportedMediaType(RnndError):
    """415 `unsupported_media_type`."""


class Overloaded(RnndError):
    """429 `overloaded`: at capacity (sessions, queue, memory budget); `retry_after` is the
    daemon's Retry-After in seconds."""


class InternalError(RnndError):
    """500 `internal`: a bug in rnnd or an I/O failure on its side."""


class Unavailable(RnndError):
    """503: `unavailable` (starting or stopping), `out_of_memory`, `model_error`,
    `no_models`; `retry_after` is the daemon's Retry-After in seconds."""


# code -> class; the codes are the list RNND_ERRCODES of include/rnnd/errcode.h
BY_CODE: dict[str, type[RnndError]] = {
    "invalid_json": BadRequest,
    "invalid_request": BadRequest,
    "numeric_error": NumericError,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "not_found": NotFound,
    "method_not_allowed": MethodNotAllowed,
    "unsupported": Unsupported,
    "conflict": Conflict,
    "gone": Gone,
    "limit_exceeded": LimitExceeded,
    "unsupported_media_type": UnsupportedMediaType,
    "overloaded": Overloaded,
    "internal": InternalError,
    "model_error": Unavailable,
    "out_of_memory": Unavailable,
    "unavailable": Unavailable,
    "no_models": Unavailable,
}

# code -> its HTTP status (errcode.h's v1 column): the status of an error event, which
# arrives inside a 200 stream
STATUS_OF: dict[str, int] = {
    "invalid_json": 400, "invalid_request": 400, "numeric_error": 400, "unauthorized": 401,
    "forbidden": 403, "not_found": 404, "method_not_allowed": 405, "unsupported": 409,
    "conflict": 409, "gone": 410, "limit_exceeded": 413, "unsupported_media_type": 415,
    "overloaded": 429, "internal": 500, "model_error": 503, "out_of_memory": 503,
    "unavailable": 503, "no_models": 503,
}

# status -> class, for replies without rnnd's error object (libmicrohttpd's own 414/431/505
# pages, a proxy in between)
BY_STATUS: dict[int, type[RnndError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound,
    405: MethodNotAllowed, 409: Conflict, 410: Gone, 413: LimitExceeded, 414: LimitExceeded,
    415: UnsupportedMediaType, 429: Overloaded, 431: LimitExceeded, 500: InternalError,
    502: Unavailable, 503: Unavailable, 504: Unavailable,
}


def error_from_object(obj: Any, status: int | None,
                      retry_after: float | None = None) -> RnndError:
    """The exception for a decoded error object `{"error": {...}, ...}`: a reply's body of
    STATUS, or a server-sent `error` event (STATUS None: its code's status; its `steps`
    sits beside `error`)."""
    err = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(err, dict) and isinstance(err.get("code"), str):
        code = err["code"]
        body = dict(err)
        for k, v in obj.items():
            if k != "error":
                body.setdefault(k, v)
        if status is None:
            status = STATUS_OF.get(code)
        cls = BY_CODE.get(code) or BY_STATUS.get(status or 0, RnndError)
        return cls(str(err.get("message", "")), code, status, body, retry_after)
    cls = BY_STATUS.get(status or 0, RnndError)
    return cls("unexpected reply: %r" % (obj,), None, status, {}, retry_after)


def error_from_reply(status: int, data: bytes, retry_after: float | None) -> RnndError:
    """The exception for an HTTP reply of STATUS (>= 400) with body DATA."""
    try:
        obj = json.loads(data)
    except ValueError:
        text = data.decode("utf-8", "replace").strip()
        cls = BY_STATUS.get(status, RnndError)
        return cls("HTTP %d: %s" % (status, text[:200] or "(empty body)"), None, status, {},
                   retry_after)
    return error_from_object(obj, status, retry_after)
