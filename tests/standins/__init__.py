"""Local stand-ins for the store platforms' APIs: real HTTP servers on loopback that follow the
documented requests and answers closely enough to catch a wrong request (auth headers, request
shapes, ids in the answers, asynchronous processing, throttling, a 5xx, a validation error), and
count what actually lands on each product."""

from __future__ import annotations

import http.server
import threading


class Server(http.server.ThreadingHTTPServer):
    """A threaded HTTP server on 127.0.0.1, on a free port, serving from a daemon thread."""

    daemon_threads = True

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]):
        super().__init__(("127.0.0.1", 0), handler)
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request, client_address) -> None:  # a client hanging up is not our test's failure
        pass

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
