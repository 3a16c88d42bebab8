"""The client: models, infer, generation and the way to sessions (docs/client.md)."""
from __future__ import annotations

import re
import ssl
import urllib.parse
from typing import Any, Callable, Iterator

from .errors import RnndError
from .generation import Completion, Generation
from .session import Session, _fields
from .transport import Policy, Transport

# what the daemon's names and ids are made of (docs/api.md section 1): nothing else may go
# into a path
MODEL_NAME = re.compile(r"[A-Za-z0-9._-]+")
SESSION_ID = re.compile(r"[0-9a-f]{32}")


class Model:
    """A model served by the daemon, by name (no request is made until one is asked for)."""

    def __init__(self, client: "Client", name: str) -> None:
        if not isinstance(name, str) or not MODEL_NAME.fullmatch(name):
            raise ValueError("model name: expected letters, digits, '.', '_' or '-', got %r"
                             % (name,))
        self.client = client
        self.name = name

    def __repr__(self) -> str:
        return "Model(%r)" % self.name

    @property
    def path(self) -> str:
        return "/v1/models/" + self.name

    def info(self) -> dict[str, Any]:
        """The model's metadata, layers, vocabulary and architecture (docs/api.md 4.2)."""
        return self.client.transport.request("GET", self.path).data

    def infer(self, inputs: list[Any], *, outputs: str | None = None,
              return_state: bool | None = None, initial_state: list[Any] | None = None,
              digest: str | None = None) -> dict[str, Any]:
        """Run whole sequences, statelessly (docs/api.md section 2). Returns the response as
        the daemon sent it: `outputs`, and with `return_state=True` `states` and `digest`."""
        body = _fields(inputs=inputs, outputs=outputs, return_state=return_state,
                       initial_state=initial_state, digest=digest)
        return self.client.transport.request("POST", self.path + "/infer", body).data

    def generate(self, prompt: str | list[int], *, max_tokens: int | None = None,
                 temperature: float | None = None, top_k: int | None = None,
                 top_p: float | None = None, seed: int | None = None,
                 stop: str | list[str] | None = None,
                 stream: bool = False) -> Completion | Generation:
        """Generate from PROMPT on a temporary session (nothing is kept). With `stream=True`
        a `Generation` to iterate for tokens as they come; else the `Completion`."""
        body = _fields(prompt=prompt, max_tokens=max_tokens, temperature=temperature,
                       top_k=top_k, top_p=top_p, seed=seed, stop=stop,
                       stream=True if stream else None)
        return self.client._generate(self.path + "/generate", body, stream,
                                     Policy.REPEATABLE, None)

    def session(self, **kw: Any) -> Session:
        """`Client.session(this model, ...)`."""
        return self.client.session(self.name, **kw)


class Client:
    """A connection to one rnnd daemon.

    url: `http://HOST:PORT` (or https, with `ssl_context` for a private CA).
    api_key: sent as `Authorization: Bearer KEY` when the daemon has API keys.
    timeout: seconds to wait for a connection, a reply, or the next streamed event.
    retries, backoff, max_backoff: a failed request is tried again up to RETRIES times,
    waiting about BACKOFF * 2**n seconds (at most MAX_BACKOFF, at least Retry-After).
    Thread-safe (each thread gets its own connection); a Session is one thread's.
    """

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 60.0, *,
                 retries: int = 3, backoff: float = 0.1, max_backoff: float = 5.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.transport = Transport(url, api_key, timeout, retries, backoff, max_backoff,
                                   ssl_context)
        self.url = url

    def __repr__(self) -> str:
        return "Client(%r)" % self.url

    def close(self) -> None:
        """Close the kept-alive connections of every thread (a later request opens
        another)."""
        self.transport.close_all()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Any route of docs/api.md: METHOD PATH with BODY as JSON; the decoded reply, or the
        typed exception of its error. Resent after failures only for GET and DELETE."""
        policy = Policy.REPEATABLE if method in ("GET", "HEAD", "DELETE") else Policy.ONCE
        return self.transport.request(method, path, body, policy).data

    def models(self) -> list[dict[str, Any]]:
        """The loaded models with their metadata, in name order (docs/api.md 4.2)."""
        return self.transport.request("GET", "/v1/models").data["models"]

    def model(self, name: str) -> Model:
        """The model NAME (no request is made)."""
        return Model(self, name)

    def session(self, model: str, *, ttl_s: int | None = None,
                state: dict[str, Any] | None = None, digest: str | None = None,
                generate: dict[str, Any] | None = None) -> Session:
        """Open a session on MODEL, from zeros or from STATE (with its model's DIGEST);
        GENERATE holds the session's generation defaults. Resent only when it certainly
        never reached the daemon, so a lost reply cannot leave a second session behind."""
        body = _fields(model=model, ttl_s=ttl_s, state=state, digest=digest,
                       generate=generate)
        return Session(self, self.transport.request("POST", "/v1/sessions", body,
                                                    Policy.ONCE).data)

    def attach(self, session_id: str) -> Session:
        """The existing session SESSION_ID (e.g. made by another process), at its current
        step count."""
        if not isinstance(session_id, str) or not SESSION_ID.fullmatch(session_id):
            raise ValueError("session id: expected 32 lowercase hex digits, got %r"
                             % (session_id,))
        d = self.transport.request("GET", "/v1/sessions/" + session_id).data
        return Session(self, d)

    def import_state(self, export: dict[str, Any], *, model: str | None = None,
                     ttl_s: int | None = None) -> Session:
        """A new session holding EXPORT (a `Session.state()`), step count included, on
        MODEL (default: the export's model; any model with the same digest takes it)."""
        s = self.session(model or export["model"], ttl_s=ttl_s)
        try:
            s.import_state(export)
        except BaseException:
            try:
                s.close()
            except RnndError:
                pass
            raise
        return s

    def sessions(self, model: str | None = None, page: int | None = None
                 ) -> Iterator[dict[str, Any]]:
        """Every open session this key may see (of MODEL only, if given), page by page."""
        after = None
        while True:
            q = urllib.parse.urlencode([kv for kv in (("limit", page), ("after", after),
                                                      ("model", model)) if kv[1] is not None])
            d = self.transport.request("GET", "/v1/sessions" + ("?" + q if q else "")).data
            yield from d["sessions"]
            after = d.get("next")
            if not after:
                return

    def ready(self) -> bool:
        """Whether the daemon is ready (models loaded, not shutting down): GET /readyz."""
        try:
            self.transport.request("GET", "/readyz")
        except RnndError:
            return False
        return True

    def metrics(self) -> str:
        """The Prometheus text of /metrics (an admin key, when keys are on)."""
        return self.transport.text("/metrics")

    def _generate(self, path: str, body: dict[str, Any], stream: bool, policy: Policy,
                  on_steps: Callable[[int], None] | None) -> Completion | Generation:
        reply = self.transport.request("POST", path, body, policy, stream=stream)
        if stream:
            assert reply.response is not None and reply.conn is not None
            return Generation(reply.response, reply.conn, on_steps)
        c = Completion.from_reply(reply.data)
        if on_steps and c.steps is not None:
            on_steps(c.steps)
        return c
