"""A scripted OpenAI-compatible teacher on loopback: the test double for a hosted API (only in tests).

It answers `POST /v1/chat/completions` with `reply(body) -> str`, optionally answers the first requests with the
statuses in `failures` (429 with `Retry-After: 0`, 5xx), can hold every request after `hold_after` answers until
`release()` and then refuse it (so a client can be killed with no answer in flight), and records what it served:
the SHA-256 of each answered body, the Authorization headers, the statuses sent.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def last_text(body: dict) -> str:
    content = body["messages"][-1]["content"]
    if isinstance(content, str):
        return content
    return "\n".join(p["text"] for p in content if p.get("type") == "text")


def valid_cot_reply(body: dict) -> str:
    """A reply that passes `cot.validate_reply`: the asked keyframe and one in-frame box per target."""
    text = last_text(body)
    keyframe = int(re.search(r"Keyframe timestamp: (\d+)", text).group(1))
    targets = int(re.search(r"\((\d+) target", text).group(1))
    answer = json.dumps({"keyframe_timestamp": keyframe, "bbox_2d_list": [[10, 20, 200, 220]] * targets})
    return (
        f"<think>Step 1: shapes move across the frames. Step 2: timestamp {keyframe} shows the target best. "
        f"Step 3: it is in the middle of the frame.</think>\n<answer>{answer}</answer>"
    )


def ratings_for(expression: str) -> list[int]:
    digest = hashlib.sha256(expression.encode()).digest()
    return [1 + digest[i] % 10 for i in range(5)]


def valid_difficulty_reply(body: dict) -> str:
    from vrsjax.teacher.difficulty import DIMENSIONS

    expression = re.search(r"Expression: '(.*)'", last_text(body)).group(1)
    ratings = dict(zip(DIMENSIONS, ratings_for(expression), strict=True))
    return f"The scene is simple.\n<answer>{json.dumps(ratings)}</answer>"


class ScriptedTeacher:
    def __init__(self, reply, failures=(), hold_after: int | None = None, delay: float = 0.0):
        self.reply, self.failures, self.hold_after, self.delay = reply, list(failures), hold_after, delay
        self.answered: list[str] = []  # sha256 of each body answered 200
        self.statuses: list[int] = []
        self.authorizations: list[str | None] = []
        self.lock = threading.Lock()
        self._released = threading.Event()
        teacher = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                status, headers, payload = teacher.handle(raw, self.headers.get("Authorization"))
                data = json.dumps(payload).encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedTeacher:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()

    def release(self) -> None:
        self._released.set()

    def handle(self, raw: bytes, authorization: str | None):
        body = json.loads(raw)
        with self.lock:
            self.authorizations.append(authorization)
            failure = self.failures.pop(0) if self.failures else None
            hold = self.hold_after is not None and len(self.answered) >= self.hold_after and not self._released.is_set()
        if failure is not None:
            self.statuses.append(failure)
            headers = {"Retry-After": "0"} if failure == 429 else {}
            return failure, headers, {"error": {"message": "scripted failure", "type": "server_error", "code": None}}
        if hold:  # never answered: the client that sent it is killed meanwhile
            self._released.wait(60)
            return 503, {}, {"error": {"message": "held", "type": "server_error", "code": None}}
        time.sleep(self.delay)
        text = self.reply(body)
        with self.lock:
            self.statuses.append(200)
            self.answered.append(hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest())
        usage = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        return 200, {}, {"id": "x", "object": "chat.completion", "choices": [choice], "usage": usage}
