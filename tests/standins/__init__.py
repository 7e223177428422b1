"""Local stand-ins for the store platforms' APIs: real HTTP servers on loopback that follow the
documented requests and answers closely enough to catch a wrong request (auth headers, request
shapes, ids in the answers, asynchronous processing, throttling, a 5xx, a validation error), and
count what actually lands on each product."""

from __future__ import annotations

import http.server
import json
import threading
from email.message import Message

# What a stand-in answers: status, body (bytes as they are, anything else as JSON), headers, type.
Answer = tuple[int, object, dict[str, str], str]


class _Handler(http.server.BaseHTTPRequestHandler):
    """Reads a request whole and writes the server's answer(method, path, headers, body)."""

    protocol_version = "HTTP/1.1"

    def _any(self, method: str) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, doc, headers, ctype = self.server.answer(method, self.path, self.headers, body)
        data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        self._any("GET")

    def do_POST(self):  # noqa: N802
        self._any("POST")

    def do_PUT(self):  # noqa: N802
        self._any("PUT")

    def do_DELETE(self):  # noqa: N802
        self._any("DELETE")

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    """A threaded HTTP server on 127.0.0.1, on a free port, serving from a daemon thread; each
    stand-in says what it answers in `answer`."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    def answer(self, method: str, path: str, headers: Message, body: bytes) -> Answer:
        raise NotImplementedError

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request, client_address) -> None:  # a client hanging up is not our test's failure
        pass

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
