"""A session: one sequence's recurrent state kept by the daemon (docs/api.md 4.4).

Every step and reset carries `if_steps`, the step count this object last saw, so a request
resent after its reply was lost can never apply twice: the daemon runs it only while the
count is still that one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import Conflict, Gone, NotFound, ReplyLost
from .generation import Completion, Generation
from .transport import Policy

if TYPE_CHECKING:
    from .client import Client
    from .stream import Stream


@dataclass
class StepResult:
    """What a step answered: `outputs` (one list of numbers per step, or one list with
    `outputs="last"`; None with `logits=False`), `steps` (the session's count after it) and,
    when asked for, `top_k` (per step, the likeliest next tokens)."""
    outputs: Any
    steps: int
    top_k: Any = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


def _fields(**kw: Any) -> dict[str, Any]:
    """The request fields that were given (None: leave the field out)."""
    return {k: v for k, v in kw.items() if v is not None}


class Session:
    """A session of the daemon. Made by `Client.session()`, `Client.attach()`,
    `Client.import_state()` or `Session.fork()`. As a context manager it is deleted on exit.
    Not for use by several threads at once (its step count is one client's view)."""

    def __init__(self, client: "Client", reply: dict[str, Any]) -> None:
        self.client = client
        self.id: str = reply["id"]
        self.model: str = reply["model"]
        self.steps: int = reply.get("steps", 0)
        self.ttl_s: int | None = reply.get("ttl_s")
        self.closed = False

    def __repr__(self) -> str:
        return "Session(%s, model=%r, steps=%d)" % (self.id, self.model, self.steps)

    @property
    def path(self) -> str:
        return "/v1/sessions/" + self.id

    def _guarded(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST BODY with if_steps; resent freely, and a conflict after a lost reply is
        ReplyLost. The step count follows what the daemon says either way."""
        try:
            return self.client.transport.request("POST", path, body, Policy.REPEATABLE).data
        except Conflict as e:
            if isinstance(e.steps, int):
                self.steps = e.steps
            if e.maybe_applied:
                raise ReplyLost(
                    "the reply to a request at step %d was lost and its resend was refused: "
                    "the session is at step %s now, so the request ran once (or another "
                    "client advanced the session)" % (body["if_steps"], e.steps),
                    e.code, e.status, e.body, e.retry_after) from e
            raise

    def step(self, inputs: Any = None, *, text: str | None = None,
             outputs: str | None = None, top_k: int | None = None,
             logits: bool | None = None, if_steps: int | None = None) -> StepResult:
        """Feed steps: INPUTS (token ids, or vectors of input_dim numbers) or, for a text
        model, TEXT. `outputs="last"` returns only the last step's output; `top_k=K` adds the
        K likeliest next tokens; `logits=False` leaves the raw outputs out. Runs only if the
        session is at IF_STEPS (default: the count this object last saw), else Conflict."""
        if (inputs is None) == (text is None):
            raise ValueError("step: give inputs or text (exactly one)")
        body = _fields(inputs=inputs, text=text, outputs=outputs, top_k=top_k, logits=logits,
                       if_steps=self.steps if if_steps is None else if_steps)
        reply = self._guarded(self.path + "/step", body)
        self.steps = reply["steps"]
        return StepResult(reply.get("outputs"), reply["steps"], reply.get("top_k"), reply)

    def stream(self, *, binary: bool = False, max_in_flight: int = 16,
               timeout: float | None = None) -> "Stream":
        """A WebSocket over this session (docs/websocket.md): `step()` and pipelined
        `send()`, as JSON or, with BINARY, raw numbers; closed at the end of a `with` block.
        It keeps this object's step count. Needs python3-websockets (MissingDependency
        without). MAX_IN_FLIGHT: steps sent before waiting for a reply; TIMEOUT: seconds
        for a reply (default: the client's)."""
        from .stream import Stream
        return Stream(self, binary, max_in_flight, timeout)

    def generate(self, prompt: str | list[int], *, max_tokens: int | None = None,
                 temperature: float | None = None, top_k: int | None = None,
                 top_p: float | None = None, seed: int | None = None,
                 stop: str | list[str] | None = None,
                 stream: bool = False) -> Completion | Generation:
        """Generate on this session: it reads PROMPT then the completion, and a later step
        or generate continues after it. With `stream=True` a `Generation` to iterate for
        tokens as they come; else the `Completion`. Omitted parameters take the session's
        defaults, then the daemon's (docs/api.md 4.10). A generation cannot be guarded by
        if_steps, so it is resent only when it certainly never reached the daemon."""
        body = _fields(prompt=prompt, max_tokens=max_tokens, temperature=temperature,
                       top_k=top_k, top_p=top_p, seed=seed, stop=stop,
                       stream=True if stream else None)
        return self.client._generate(self.path + "/generate", body, stream, Policy.ONCE,
                                     self._saw)

    def _saw(self, steps: int) -> None:
        self.steps = steps

    def info(self) -> dict[str, Any]:
        """The session as the daemon describes it (model, steps, created, idle_s,
        expires_in, ttl_s, busy); updates `steps`."""
        d = self.client.transport.request("GET", self.path).data
        self.steps = d["steps"]
        return d

    def state(self) -> dict[str, Any]:
        """Export the state: `{"id", "model", "digest", "steps", "state"}`, every number as
        the daemon wrote it. `Client.import_state()` or `import_state()` takes it back."""
        d = self.client.transport.request("GET", self.path + "/state").data
        self.steps = d["steps"]
        return d

    def import_state(self, export: dict[str, Any]) -> None:
        """Replace this session's state and step count with EXPORT (from `state()`, of a model
        with the same digest; another digest is Conflict and changes nothing)."""
        body = _fields(state=export["state"], digest=export["digest"],
                       steps=export.get("steps"))
        d = self.client.transport.request("PUT", self.path + "/state", body).data
        self.steps = d["steps"]

    def reset(self, state: dict[str, Any] | None = None,
              digest: str | None = None) -> None:
        """State back to zeros (or to STATE, with its model's DIGEST) and the count to 0."""
        body = _fields(state=state, digest=digest, if_steps=self.steps)
        try:
            self._guarded(self.path + "/reset", body)
        except ReplyLost as e:
            if e.steps != 0:
                raise
            # the lost attempt was this reset: it ran once, and that is all a reset returns
        self.steps = 0

    def fork(self, ttl_s: int | None = None) -> "Session":
        """A new session with a copy of this one's state, step count and generation
        defaults (and its ttl_s unless TTL_S is given)."""
        d = self.client.transport.request("POST", self.path + "/fork", _fields(ttl_s=ttl_s),
                                          Policy.ONCE).data
        return Session(self.client, d)

    def close(self) -> None:
        """Delete the session (an already deleted, expired or evicted one is fine)."""
        if self.closed:
            return
        try:
            self.client.transport.request("DELETE", self.path)
        except (NotFound, Gone):
            pass
        self.closed = True

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
