"""Generation results, and the iterator over a streamed generation's server-sent events
(docs/api.md 4.10)."""
from __future__ import annotations

import http.client
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from .errors import ConnectionFailed, RnndError, error_from_object


@dataclass
class Token:
    """One event of a streamed generation: the chosen token id, the text it completes (may
    be "" while a byte model's character is incomplete), its index in the completion, and,
    on a session, the session's step count once it was fed."""
    token: int
    text: str
    index: int
    step: int | None = None


@dataclass
class Completion:
    """A finished generation: the completion's text and token ids, why it ended
    (`"length"`, `"stop"`, `"cancelled"`), the stop string that ended it, token counts, the
    session's step count after it (sessions only) and the seed it used."""
    text: str
    tokens: list[int]
    finish_reason: str
    usage: dict[str, int] = field(default_factory=dict)
    steps: int | None = None
    seed: int | None = None
    stop: str | None = None

    @classmethod
    def from_reply(cls, d: dict[str, Any]) -> "Completion":
        return cls(d.get("text", ""), list(d.get("tokens", [])), d.get("finish_reason", ""),
                   d.get("usage", {}), d.get("steps"), d.get("seed"), d.get("stop"))


def sse_events(lines: Iterator[bytes]) -> Iterator[tuple[str, str]]:
    """(event type, data) of each event in the lines of a text/event-stream; comment lines
    (`: ping`) are skipped, multi-line data joined with newlines."""
    kind, data = "message", []
    for raw in lines:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield kind, "\n".join(data)
            kind, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                data.append(value)
            elif name == "event":
                kind = value
    if data:
        yield kind, "\n".join(data)


class Generation:
    """A streamed generation: iterate for its `Token`s as the daemon chooses them. Once the
    iteration ends, `completion` holds the `Completion` (text and ids gathered from the
    events). An `error` event raises the error's exception. Closing it early (`close()`,
    leaving a `with` block, dropping it) disconnects, and the daemon stops the generation at
    its next token (`finish_reason` "cancelled"); the session keeps the tokens fed so far.
    """

    def __init__(self, response: http.client.HTTPResponse, conn: http.client.HTTPConnection,
                 on_steps: Callable[[int], None] | None = None) -> None:
        self._response = response
        self._conn = conn
        self._on_steps = on_steps
        self._events = sse_events(iter(response.readline, b""))
        self.tokens: list[Token] = []
        self.completion: Completion | None = None

    @property
    def text(self) -> str:
        """The text of the tokens received so far."""
        return "".join(t.text for t in self.tokens)

    def __iter__(self) -> Iterator[Token]:
        try:
            for kind, data in self._events:
                if data == "[DONE]":
                    break
                obj = json.loads(data)
                if kind == "error" or "error" in obj:
                    if self._on_steps and isinstance(obj.get("steps"), int):
                        self._on_steps(obj["steps"])
                    raise error_from_object(obj, None)
                if "finish_reason" in obj:
                    self._finish(obj)
                    continue
                tok = Token(obj["token"], obj.get("text", ""), obj["index"], obj.get("step"))
                self.tokens.append(tok)
                if self._on_steps and tok.step is not None:
                    self._on_steps(tok.step)
                yield tok
        except (OSError, http.client.HTTPException) as e:
            raise ConnectionFailed("the event stream broke: %s" % e) from e
        finally:
            self.close()
        if self.completion is None:
            raise RnndError("the event stream ended without its final event")

    def _finish(self, obj: dict[str, Any]) -> None:
        self.completion = Completion(self.text, [t.token for t in self.tokens],
                                     obj["finish_reason"], obj.get("usage", {}),
                                     obj.get("steps"), obj.get("seed"), obj.get("stop"))
        if self._on_steps and isinstance(obj.get("steps"), int):
            self._on_steps(obj["steps"])

    def result(self) -> Completion:
        """Read the rest of the stream and return the Completion."""
        for _ in self:
            pass
        assert self.completion is not None
        return self.completion

    def close(self) -> None:
        """Disconnect (the daemon cancels a generation still running)."""
        self._response.close()
        self._conn.close()

    def __enter__(self) -> "Generation":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
