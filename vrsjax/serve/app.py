"""`vrsjax serve`: an OpenAI-compatible HTTP server over the JAX rollout engine (`POST /v1/chat/completions`,
`GET /v1/models`, `GET /v1/models/{id}`, `GET /health`).

Built on the standard library's `ThreadingHTTPServer`: the model runs on one batching thread anyway (a JAX call
blocks), so an async framework would add dependencies without adding throughput; a thread per connection only
parses, validates and waits on its request's future. The server binds 127.0.0.1 unless told otherwise and takes no
credentials. A body over `max_request_bytes` is answered 413 without being read, a body without Content-Length
411, a body that ends (or stalls for `body_timeout` seconds) before its Content-Length 408 with one log line, an
idle connection is closed after `socket_timeout` seconds; every failure is an OpenAI error JSON and the server keeps
serving. The port is bound before the checkpoint loads, so a busy port fails at once. When ready it prints
`VRSJAX_SERVE_READY http://HOST:PORT` (port 0 picks a free port).
"""

from __future__ import annotations

import errno
import json
import logging
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

from vrsjax.errors import UserError
from vrsjax.serve.batcher import Batcher
from vrsjax.serve.protocol import Limits, RequestError, model_body, models_body, parse_request

logger = logging.getLogger(__name__)

READY = "VRSJAX_SERVE_READY"
DEFAULT_HOST = "127.0.0.1"


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, engine, batcher: Batcher | None, limits: Limits, socket_timeout=60.0, body_timeout=5.0):
        super().__init__(address, Handler)
        self.engine, self.batcher, self.limits = engine, batcher, limits
        self.socket_timeout, self.body_timeout = socket_timeout, body_timeout
        self.created = int(time.time())
        self.counts = {"requests": 0, "errors": 0}
        self._count_lock = threading.Lock()

    def count(self, key: str) -> None:
        with self._count_lock:
            self.counts[key] += 1


class Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.socket_timeout)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's signature
        logger.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, error: RequestError, close: bool = False) -> None:
        self.server.count("errors")
        if close:
            self.close_connection = True
        self._send(error.status, error.body())

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0].rstrip("/")
        name = self.server.engine.model_name
        if path == "/v1/models":
            self._send(200, models_body(name, self.server.created))
        elif path.startswith("/v1/models/"):
            asked = unquote(path.removeprefix("/v1/models/"))
            if asked == name:
                self._send(200, model_body(name, self.server.created))
            else:
                message = f"model {asked!r} does not exist; this server serves {name!r}"
                self._error(RequestError(404, message, "model_not_found", "model"))
        elif path == "/health":
            sizes = self.server.batcher.batch_sizes
            self._send(
                200,
                {"status": "ok", **self.server.counts, "batches": len(sizes), "largest_batch": max(sizes, default=0)},
            )
        else:
            self._error(RequestError(404, f"no route GET {path}", "not_found"))

    def do_POST(self) -> None:  # noqa: N802
        self.server.count("requests")
        path = self.path.split("?", 1)[0].rstrip("/")
        if path != "/v1/chat/completions":
            self._drain_or_close()
            return self._error(RequestError(404, f"no route POST {path}; use /v1/chat/completions", "not_found"))
        try:
            body = self._read_json()
            request = parse_request(body, self.server.engine.model_name, self.server.limits)
            result = self.server.batcher.submit(request).result()
        except RequestError as error:
            return self._error(error, close=error.status in (408, 411, 413))
        except Exception as error:  # noqa: BLE001 - any failure becomes a 500, the server goes on
            logger.exception("request failed")
            return self._error(RequestError(500, f"internal error: {error}", "internal_error"))
        self._send(200, result)

    def _drain_or_close(self) -> None:
        length = self.headers.get("Content-Length")
        if length and length.isdigit() and int(length) <= self.server.limits.max_request_bytes:
            self.rfile.read(int(length))
        else:
            self.close_connection = True

    def _discard(self, length: int, limit: int) -> None:
        """Read and drop a refused body (up to 8x the limit, within the socket timeout) so that the client, still
        sending, gets the 413 instead of a connection reset; bigger bodies just get the connection closed."""
        if length > 8 * limit:
            return
        try:
            while length > 0:
                chunk = self.rfile.read(min(length, 2**20))
                if not chunk:
                    break
                length -= len(chunk)
        except OSError:
            pass

    def _read_body(self, length: int) -> bytes:
        """The body, or 408 when the client stops sending before Content-Length bytes (it closed, or sent nothing
        for body_timeout seconds): one log line, no traceback; the connection is then closed."""
        chunks, received = [], 0
        self.connection.settimeout(self.server.body_timeout)
        try:
            while received < length:
                chunk = self.rfile.read1(min(length - received, 2**20))
                if not chunk:
                    break
                chunks.append(chunk)
                received += len(chunk)
        except TimeoutError:
            pass
        finally:
            self.connection.settimeout(self.server.socket_timeout)
        if received < length:
            logger.warning(
                "%s: request body ended after %d of %d bytes (Content-Length); answered 408",
                self.address_string(),
                received,
                length,
            )
            raise RequestError(
                408, f"the request body ended after {received} of {length} bytes (Content-Length)", "request_timeout"
            )
        return b"".join(chunks)

    def _read_json(self):
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise RequestError(411, "a Content-Length header is required", "length_required")
        limit = self.server.limits.max_request_bytes
        if int(length) > limit:
            self._discard(int(length), limit)
            raise RequestError(
                413,
                f"the request body has {int(length)} bytes, over the limit of {limit} (--max-request-mb)",
                "request_too_large",
            )
        raw = self._read_body(int(length))
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise RequestError(400, f"the body is not valid JSON: {error}", "invalid_json") from error


def serve(
    checkpoint: str | Path,
    port: int = 8000,
    host: str = DEFAULT_HOST,
    *,
    max_batch: int = 8,
    max_request_mb: float = 32.0,
    batch_window_ms: float = 5.0,
    model_name: str | None = None,
    dtype: str = "float32",
) -> int:
    """Bind host:port, load the checkpoint and serve until SIGINT/SIGTERM. A port in use is a UserError."""
    from vrsjax.serve.engine import Engine

    server = bind(host, port, Limits(max_request_bytes=int(max_request_mb * 2**20)))
    try:
        engine = Engine(checkpoint, model_name, dtype)
    except BaseException:
        server.server_close()
        raise
    batcher = Batcher(engine.run, max_batch=max_batch, window_s=batch_window_ms / 1000)
    server.engine, server.batcher = engine, batcher
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    bound_host, bound_port = server.server_address[:2]
    print(f"{READY} http://{bound_host}:{bound_port} model={engine.model_name}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        batcher.close()
    return 0


def bind(host: str, port: int, limits: Limits) -> Server:
    """A Server listening on host:port, its engine and batcher still to be set; a busy or unusable address is a
    UserError naming it and --port / --host."""
    try:
        return Server((host, port), None, None, limits)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise UserError(
                f"--port {port}: {host}:{port} is already in use (another server?); stop it or choose another "
                "--port (0 picks a free one)"
            ) from error
        if isinstance(error, socket.gaierror) or error.errno == errno.EADDRNOTAVAIL:
            raise UserError(
                f"--host {host}: cannot listen there ({error.strerror}); use 127.0.0.1 or 0.0.0.0"
            ) from error
        raise
