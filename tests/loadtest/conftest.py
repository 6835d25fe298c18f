"""A real HTTP server on loopback, in a thread, whose answers a test scripts."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

# (request number from 1, parsed body or None, headers) -> (status, answer body), or None to
# drop the connection without an answer.
Answer = Callable[[int, Any, dict[str, str]], tuple[int, Any] | None]


@dataclass
class Server:
    url: str
    answer: Answer
    received: list[tuple[Any, dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self) -> int:
        with self.lock:
            return len(self.received)


@pytest.fixture
def server() -> Iterator[Callable[[Answer], Server]]:
    started: list[ThreadingHTTPServer] = []

    def start(answer: Answer) -> Server:
        state = Server("", answer)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                headers = {k.lower(): v for k, v in self.headers.items()}
                with state.lock:
                    state.received.append((body, headers))
                    number = len(state.received)
                reply = state.answer(number, body, headers)
                if reply is None:
                    self.close_connection = True
                    return
                code, payload = reply
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        started.append(httpd)
        state.url = f"http://127.0.0.1:{httpd.server_address[1]}/predict"
        return state

    yield start
    for httpd in started:
        httpd.shutdown()
        httpd.server_close()
