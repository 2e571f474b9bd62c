"""A local stand-in for an OpenAI-compatible ``/v1/chat/completions`` endpoint.

It answers every completion with a fixed message and ``usage`` block, records
the request bodies it got, and can be told to fail, so the enrichment code is
tested over real HTTP without a model.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class LlmDouble:
    """What the double answers and what it was asked."""

    content: str = "{}"
    status: int = 200
    prompt_tokens: int = 120
    completion_tokens: int = 45
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""


@contextmanager
def llm_double(double: LlmDouble) -> Iterator[LlmDouble]:
    """Serve ``double`` on a free local port for the duration of the block."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            double.requests.append({"path": self.path, "body": body})
            if self.path != "/v1/chat/completions" or double.status != 200:
                self.send_response(404 if self.path != "/v1/chat/completions" else double.status)
                self.end_headers()
                return
            answer = {
                "id": "chatcmpl-double",
                "object": "chat.completion",
                "model": body.get("model"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": double.content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": double.prompt_tokens,
                    "completion_tokens": double.completion_tokens,
                    "total_tokens": double.prompt_tokens + double.completion_tokens,
                },
            }
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    double.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield double
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
