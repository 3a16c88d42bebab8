"""rnnd_client: a Python client for rnnd, standard library only (docs/client.md); the
WebSocket stream (Session.stream()) needs python3-websockets.

    from rnnd_client import Client
    client = Client("http://127.0.0.1:8080")
    with client.session("charlm") as s:
        print(s.step(text="The ", outputs="last", top_k=3).top_k)
"""
from .client import Client, Model
from .errors import (BadRequest, Conflict, ConnectionFailed, Forbidden, Gone, InternalError,
                     LimitExceeded, MethodNotAllowed, MissingDependency, NotFound,
                     NumericError, Overloaded, ReplyLost, RnndError, Unauthorized, Unavailable,
                     Unsupported, UnsupportedMediaType)
from .generation import Completion, Generation, Token
from .session import Session, StepResult
from .stream import Pending, Stream

__version__ = "0.1.0"
__all__ = ["Client", "Model", "Session", "StepResult", "Stream", "Pending", "Completion",
           "Generation", "Token",
           "RnndError", "ConnectionFailed", "BadRequest", "NumericError", "Unauthorized",
           "Forbidden", "NotFound", "MethodNotAllowed", "Unsupported", "Conflict",
           "ReplyLost", "Gone", "LimitExceeded", "UnsupportedMediaType", "Overloaded",
           "InternalError", "Unavailable", "MissingDependency"]
