#!/usr/bin/env python3
"""A stand-in for a server that starts, is ready, and dies of a signal at
its first generation request, as llama-server built with ggml's AMX kernels
does on an Intel Xeon that never granted it AMX (SIGILL at `tilezero` in
its first decode). It is what the tests can run on any CPU.

    dying_server.py [ANY LLAMA-SERVER ARGUMENTS] --port PORT

Reads `--port` and `--alias` (the model name /v1/models lists, default
`fake`) and ignores every other argument, so it stands in for
llama-server both under the harness's `launch:` and under
scripts/llama-smoke. GET /v1/models lists the one model, any other GET
answers 200 `{"status": "ok"}` (/health); the first POST prints a line to
stderr and kills the process with $FAKE_SIGNAL (default SIGILL), with
core dumps off.
"""

import http.server
import json
import os
import resource
import signal
import sys


def arg(argv, name, default=None):
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
    if default is None:
        sys.exit(f"dying_server.py: {name} is required")
    return default


MODEL = arg(sys.argv[1:], "--alias", "fake")


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.rstrip("/") == "/v1/models":
            answer = {"object": "list", "data": [{"id": MODEL, "object": "model"}]}
        else:
            answer = {"status": "ok"}
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        sig = getattr(signal, os.environ.get("FAKE_SIGNAL", "SIGILL"))
        print(f"fake server: first decode: raising {sig.name}", file=sys.stderr, flush=True)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)

    def log_message(self, *args):
        pass


def main():
    port = int(arg(sys.argv[1:], "--port"))
    server = http.server.HTTPServer(("127.0.0.1", port), Handler)
    print(f"fake server: listening on http://127.0.0.1:{port}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
