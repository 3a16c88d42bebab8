#!/usr/bin/python3
"""bench/baseline_server.py: the Python baseline of bench/e2e.

A plain Python server of the kind people write today to put a PyTorch LSTM behind HTTP:
the standard library's ThreadingHTTPServer (one thread per connection, HTTP/1.1 keep-alive)
and one torch call per request. It implements the part of rnnd's v1 session API that
bench/e2e drives, with the same request and response shapes:

    POST /v1/sessions            {"model": NAME}            -> 201 {"id", "model", "steps"}
    POST /v1/sessions/{id}/step  {"inputs": [[I floats], ...]} -> 200 {"outputs", "steps"}
    GET  /v1/models/{name}       state size (as rnnd reports it)
    GET  /healthz

The model is an nn.LSTM with random weights (torch's default init, fixed seed): H hidden,
I inputs, L layers, no head, as the model bench/e2e gives rnnd. A step request runs
`lstm(x, (h, c))` once on all of its steps under torch.inference_mode(); the session's
(h, c) is kept between requests, behind a per-session lock (requests of one session run in
order, as in rnnd). Once listening it logs `event=listening port=N` on stderr, like rnnd.
"""
import argparse
import json
import secrets
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch


class Session:
    __slots__ = ("lock", "h", "c", "steps")

    def __init__(self, layers, hidden):
        self.lock = threading.Lock()
        self.h = torch.zeros(layers, 1, hidden)
        self.c = torch.zeros(layers, 1, hidden)
        self.steps = 0


class App:
    def __init__(self, o):
        torch.manual_seed(0)
        self.o = o
        self.lstm = torch.nn.LSTM(o.input, o.hidden, o.layers).eval()
        self.sessions = {}
        self.mu = threading.Lock()

    def model_info(self):
        floats = 2 * self.o.layers * self.o.hidden
        return {"name": self.o.name, "input_kind": "vectors", "input_dim": self.o.input,
                "output_dim": self.o.hidden, "stateful": True, "state_floats": floats,
                "state_bytes": 4 * floats, "layers": self.o.layers}

    def create(self, body):
        if not isinstance(body, dict) or body.get("model") != self.o.name:
            return 404, {"error": {"code": "not_found", "message": "no such model"}}
        sid = secrets.token_hex(16)
        with self.mu:
            self.sessions[sid] = Session(self.o.layers, self.o.hidden)
        return 201, {"id": sid, "model": self.o.name, "steps": 0}

    def step(self, sid, body):
        with self.mu:
            s = self.sessions.get(sid)
        if s is None:
            return 404, {"error": {"code": "not_found", "message": "no such session"}}
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or not inputs or \
                any(not isinstance(v, list) or len(v) != self.o.input for v in inputs):
            return 400, {"error": {"code": "invalid_request",
                                   "message": "inputs: a list of vectors of %d numbers"
                                              % self.o.input}}
        x = torch.tensor(inputs, dtype=torch.float32).unsqueeze(1)    # (T, 1, I)
        with s.lock:
            with torch.inference_mode():
                y, (s.h, s.c) = self.lstm(x, (s.h, s.c))             # the one torch call
            s.steps += len(inputs)
            steps = s.steps
        return 200, {"outputs": y.squeeze(1).tolist(), "steps": steps}


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024       # 64+ clients connect at once


def make_handler(app):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"        # keep-alive, as rnnd
        disable_nagle_algorithm = True       # headers and body are two writes

        def log_message(self, *args):
            pass

        def reply(self, status, obj):
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/healthz":
                self.reply(200, {"status": "ok"})
            elif self.path == "/v1/models/" + app.o.name:
                self.reply(200, app.model_info())
            else:
                self.reply(404, {"error": {"code": "not_found", "message": "no route"}})

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(n))
            except ValueError as e:
                self.reply(400, {"error": {"code": "invalid_json", "message": str(e)}})
                return
            parts = self.path.strip("/").split("/")
            if parts == ["v1", "sessions"]:
                self.reply(*app.create(body))
            elif len(parts) == 4 and parts[:2] == ["v1", "sessions"] and parts[3] == "step":
                self.reply(*app.step(parts[2], body))
            else:
                self.reply(404, {"error": {"code": "not_found", "message": "no route"}})

    return Handler


def main():
    p = argparse.ArgumentParser(prog="bench/baseline_server.py",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any)")
    p.add_argument("--name", default="lstm", help="model name (default lstm)")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--input", type=int, default=512)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--threads", type=int, default=0,
                   help="torch.set_num_threads (default: torch's own choice)")
    o = p.parse_args()
    if o.threads:
        torch.set_num_threads(o.threads)
    app = App(o)
    srv = Server(("127.0.0.1", o.port), make_handler(app))
    sys.stderr.write("level=info event=listening addr=127.0.0.1 port=%d torch=%s "
                     "torch_threads=%d\n" % (srv.server_address[1], torch.__version__,
                                             torch.get_num_threads()))
    sys.stderr.flush()
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
