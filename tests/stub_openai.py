"""A scripted OpenAI-compatible chat server for adapter tests (no model, loopback only).

`StubOpenAI(answer)` serves `POST /v1/chat/completions` (and `GET /v1/models`) on 127.0.0.1; each reply
is `answer(messages)`, the text of the assistant message. Every request is kept in `requests` so a test
can check what the trainer sent.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = Callable[[list[dict[str, Any]]], str]
USAGE = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}


class StubOpenAI:
    def __init__(self, answer: Answer, model: str = "stub") -> None:
        self.answer = answer
        self.model = model
        self.requests: list[dict[str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, payload: dict[str, Any]) -> None:
                body = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._send({"object": "list", "data": [{"id": stub.model, "object": "model"}]})

            def do_POST(self) -> None:
                request = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                stub.requests.append(request)
                text = stub.answer(request.get("messages", []))
                completion_id = f"chatcmpl-{len(stub.requests)}"
                if request.get("stream"):
                    self._stream(completion_id, text)
                    return
                self._send(
                    {
                        "id": completion_id,
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": stub.model,
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": text},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": USAGE,
                    }
                )

            def _stream(self, completion_id: str, text: str) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.end_headers()
                base = {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time())}
                base["model"] = stub.model
                chunks = [
                    {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}}]},
                    {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                    {**base, "choices": [], "usage": USAGE},
                ]
                for chunk in chunks:
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> StubOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
