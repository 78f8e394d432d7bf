"""The status endpoint of ``pylog serve`` (the standard library's HTTP
server, a thread of its own):

    GET /          JSON: {"log", "ingests", "forwarders", "topics", ...}
    GET /metrics   the same as Prometheus text (see _metrics.py)

Anything else is 404 (405 for another method). It only reads stats().
"""
import http.server
import json
import threading

from . import _metrics


class StatusServer:
    """Serve collect() (a function returning the status dict)."""

    def __init__(self, host, port, collect):
        self._collect = collect
        self._server = _Server((host, port), _handler(self))
        self.host, self.port = host, self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
            daemon=True, name="pylog-serve-status")

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"

    def start(self):
        self._thread.start()
        return self

    def close(self):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _get(self, h):
        path = h.path.split("?", 1)[0]
        if path not in ("/", "/metrics"):
            return 404, "application/json", b'{"error": "GET / or /metrics"}'
        try:
            status = self._collect()
        except Exception as exc:  # noqa: BLE001 - say it, keep serving
            body = json.dumps({"error": f"{type(exc).__name__}: {exc}"})
            return 500, "application/json", body.encode()
        if path == "/metrics":
            return 200, _metrics.CONTENT_TYPE, _metrics.render(
                status).encode("utf-8")
        return 200, "application/json", json.dumps(
            status, indent=1).encode("utf-8")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass


def _handler(status):
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "pylog-serve"
        wbufsize = 1 << 16  # headers and body in one send()

        def log_message(self, *args):
            pass

        def _send(self, code, ctype, body):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self):
            self._send(*status._get(self))

        do_HEAD = do_GET

        def do_POST(self):
            self._send(405, "application/json", b'{"error": "GET only"}')

        do_PUT = do_DELETE = do_PATCH = do_POST
    return Handler
