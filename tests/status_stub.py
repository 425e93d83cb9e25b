"""A stand-in for a running runtime's ``/status``, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any


@contextmanager
def serving_status(body: Mapping[str, Any]) -> Iterator[str]:
    """Serve ``body`` as JSON at ``/status`` (404 with ``{}`` elsewhere); yields the base URL."""
    data = json.dumps(body).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = self.path == "/status"
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(data if found else b"{}")

        def log_message(self, format: str, *args: object) -> None:
            pass  # the tests read what they need; request lines would only be noise

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
