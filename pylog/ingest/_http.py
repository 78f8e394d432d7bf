"""HttpSource: records POSTed over HTTP into topics (the standard library's
threading HTTP/1.1 server, keep-alive, one thread per connection).

    POST /topics/NAME
      Content-Type: application/octet-stream   the body is one record
      Content-Type: application/x-ndjson       one record per non-empty line
                    (or application/jsonl,      (each line must be JSON; its
                     application/ndjson)        text is the value)
      X-Pylog-Key: KEY                          the records' key (else the
                                                key template, if any)
      X-Pylog-Timestamp: MS                     their timestamp (else now)
      X-Pylog-NAME: VALUE                       the header "name" (lower case)
      Authorization: Bearer TOKEN               when the source has a token

Answers (JSON bodies; the error ones ``{"error": "..."}``):

- 200 ``{"topic", "first_offset", "last_offset", "count"}`` once the
  request's records were appended as one batch (and were durable, with
  ack="durable"): never before.
- 400 a malformed body (a line that is not JSON, no record, a bad
  X-Pylog-Timestamp), 401 a missing or wrong token, 404 a topic this
  source does not append to, 405 another method, 411 no Content-Length,
  413 a body over max_body_bytes or a record over the topic's
  max_record_bytes, 415 another Content-Type: nothing of the request was
  appended.
- 503 with ``Retry-After`` while the topic (or the disk) is full, 500 if
  the log failed: nothing was appended; send the same request again.
"""
import hmac
import http.server
import json
import socket
import ssl
import threading
import urllib.parse

from .. import _errors as E
from .._errors import InvalidConfigError
from ._errors import IngestError
from ._mapping import check_int, check_port, check_str

NDJSON_TYPES = ("application/x-ndjson", "application/ndjson",
                "application/jsonl", "application/x-jsonlines")
RAW_TYPES = ("application/octet-stream",)
PREFIX = "x-pylog-"
TLS_KEYS = ("certfile", "keyfile", "password")


class _Reject(Exception):
    """An answer other than 200 (status, message, extra headers)."""

    def __init__(self, status, message, headers=None):
        super().__init__(message)
        self.status, self.headers = status, headers or {}


_decode = json.JSONDecoder().raw_decode
_JSON_SPACE = " \t\r"


def _lines(body):
    """The NDJSON records of body: its non-blank lines, each checked to be
    one JSON value; _Reject(400) names the first that is not. (A value is
    checked with raw_decode on the line's text: 4x faster than json.loads
    per line, which decodes bytes and matches whitespace again.)"""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None:
        out, raw = [], body.split(b"\n")
        try:
            for i, line in enumerate(text.split("\n")):
                s = line.strip(_JSON_SPACE)
                if not s:
                    continue
                if _decode(s)[1] != len(s):
                    raise ValueError
                line = raw[i]
                out.append(line[:-1] if line.endswith(b"\r") else line)
            return out
        except ValueError:
            pass
    for i, line in enumerate(body.split(b"\n"), 1):  # say which line
        try:
            s = line.decode("utf-8").strip(_JSON_SPACE)
        except UnicodeDecodeError as exc:
            raise _Reject(400, f"line {i} is not UTF-8 text: {exc}") from None
        if not s:
            continue
        try:
            end = _decode(s)[1]
        except ValueError as exc:
            raise _Reject(400, f"line {i} is not JSON: {exc}") from None
        if end != len(s):
            raise _Reject(400, f"line {i} holds more than one JSON value "
                               f"(extra data at column {end + 1})")
    raise _Reject(400, "the body is not NDJSON")


class HttpSource:
    """Listen for POST /topics/NAME and append the records; give it to
    ``log.ingest`` (which names the topics it may append to).

    host, port: where to listen (port 0: one the system picks, then
    ``source.port``); token: a bearer token requests must carry (None: no
    check); tls: an ssl.SSLContext or a dict (certfile, keyfile, password)
    to serve HTTPS; max_body_bytes: the largest request body; retry_after:
    seconds a 503 asks the client to wait; timeout: seconds an idle
    kept-alive connection stays open.
    """

    scheme = "http"
    STREAM = False        # each request appends its own batch
    MULTI_TOPIC = True
    KEY_FIELDS = ("client_id", "topic")
    window = 0
    connected = False

    def __init__(self, host="127.0.0.1", port=8080, *, token=None, tls=None,
                 max_body_bytes=16 << 20, retry_after=1, timeout=60.0):
        check_str(host, "host", none=False)
        check_port(port, zero=True)
        if token is not None and (not isinstance(token, str) or not token
                                  or any(c in token for c in "\r\n ")):
            raise InvalidConfigError(
                "token must be a non-empty str without spaces or line breaks,"
                " or None")
        if isinstance(tls, dict):
            unknown = set(tls) - set(TLS_KEYS)
            if unknown or "certfile" not in tls:
                raise InvalidConfigError(
                    f"tls must hold certfile (and keyfile, password), not "
                    f"{sorted(tls)}")
        elif tls is not None and not isinstance(tls, ssl.SSLContext):
            raise InvalidConfigError(
                "tls must be None, an ssl.SSLContext or a dict (certfile, "
                f"keyfile, password), not {type(tls).__name__}")
        self.host, self.port, self.tls = host, port, tls
        self._token = token
        self.max_body_bytes = check_int(max_body_bytes, "max_body_bytes")
        self.retry_after = check_int(retry_after, "retry_after", 0)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
                or not timeout > 0:
            raise InvalidConfigError(f"timeout must be a number > 0, not "
                                     f"{timeout!r}")
        self.timeout = float(timeout)
        self._ingest = None
        self._server = None
        self._thread = None
        self._mu = threading.Lock()
        self._conns = set()
        self._busy = 0                 # requests being answered
        self._closing = False
        self._idle = threading.Condition(self._mu)
        self._requests = 0
        self._responses = {}

    @property
    def url(self):
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def __repr__(self):
        return f"<pylog.ingest.HttpSource {self.url}>"

    # ---- for Ingest --------------------------------------------------------
    def _bind(self, ingest):
        if self._ingest is not None:
            raise IngestError(f"{self!r} is used by ingest "
                              f"{self._ingest.name!r} already")
        self._ingest = ingest

    def _context(self):
        if isinstance(self.tls, dict):
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                ctx.load_cert_chain(self.tls["certfile"],
                                    self.tls.get("keyfile"),
                                    self.tls.get("password"))
            except (OSError, ssl.SSLError) as exc:
                raise InvalidConfigError(f"HttpSource tls: {exc}") from None
            return ctx
        return self.tls

    def _start(self):
        ctx = self._context() if self.tls is not None else None
        try:
            srv = _Server((self.host, self.port), _handler(self))
        except OSError as exc:
            raise IngestError(f"cannot listen on {self.host}:{self.port}: "
                              f"{exc.strerror or exc}") from None
        if ctx is not None:  # the handshake is made by each connection's
            srv.socket = ctx.wrap_socket(  # thread, not by the accepting one
                srv.socket, server_side=True, do_handshake_on_connect=False)
        self.port = srv.server_address[1]
        self._server = srv
        self._thread = threading.Thread(
            target=srv.serve_forever, kwargs={"poll_interval": 0.1},
            daemon=True, name=f"pylog-ingest-http-{self.port}")
        self._thread.start()
        self.connected = True

    def _close(self, timeout=30.0):
        """Stop listening, let the requests being answered finish (up to
        timeout seconds) and close every connection."""
        srv, self._server = self._server, None
        if srv is None:
            return
        self.connected = False
        srv.shutdown()
        srv.server_close()
        self._thread.join()
        with self._mu:
            self._closing = True
            self._idle.wait_for(lambda: self._busy == 0, timeout)
            conns = list(self._conns)
        for c in conns:  # idle kept-alive connections: end them
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _stats(self):
        with self._mu:
            return {"listening": self.connected, "requests": self._requests,
                    "responses": dict(sorted(self._responses.items()))}

    # ---- a request (the connection's thread) -------------------------------
    def _handle(self, h):
        ingest = self._ingest
        with self._mu:
            if self._closing:
                h.close_connection = True
                return self._answer(h, 503, {"error": "shutting down"},
                                    {"Retry-After": str(self.retry_after)},
                                    count=False)
            self._busy += 1
            self._requests += 1
        try:
            try:
                status, body, extra = 200, self._post(h, ingest), None
            except _Reject as r:
                status, body, extra = r.status, {"error": str(r)}, r.headers
            self._answer(h, status, body, extra)
        finally:
            with self._mu:
                self._busy -= 1
                if not self._busy:
                    self._idle.notify_all()

    def _answer(self, h, status, body, extra=None, count=True):
        data = json.dumps(body).encode() + b"\n"
        if count:
            with self._mu:
                self._responses[str(status)] = self._responses.get(
                    str(status), 0) + 1
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            for k, v in (extra or {}).items():
                h.send_header(k, v)
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(data)
        except OSError:
            h.close_connection = True  # the client went away

    def _post(self, h, ingest):
        path = urllib.parse.urlsplit(h.path).path
        name = urllib.parse.unquote(path[len("/topics/"):]) \
            if path.startswith("/topics/") else None
        if name is None or name not in ingest._topics:
            self._discard(h)
            known = ", ".join("/topics/" + t for t in ingest.topic_names)
            raise _Reject(404, f"no such topic here: POST to {known}")
        if self._token is not None:
            auth = h.headers.get("Authorization") or ""
            if not hmac.compare_digest(auth.encode("latin-1", "replace"),
                                       f"Bearer {self._token}".encode()):
                self._discard(h)
                raise _Reject(401, "a valid bearer token is required",
                              {"WWW-Authenticate": "Bearer"})
        body = self._body(h)
        ctype = (h.headers.get("Content-Type") or RAW_TYPES[0]).split(
            ";")[0].strip().lower()
        try:
            if ctype in NDJSON_TYPES:
                values = _lines(body)
            elif ctype in RAW_TYPES:
                values = [body]
            else:
                raise _Reject(415, f"Content-Type {ctype!r} is not "
                                   "application/octet-stream (one record) or "
                                   "application/x-ndjson (one per line)")
            if not values:
                raise _Reject(400, "the body holds no record")
            topic = ingest._topics[name]
            keys, headers, stamps = self._meta(h, ingest, name, len(values))
            bad = ingest._check_sizes(topic, values, keys, headers,
                                      uniform=True)
            if bad:
                i, size = bad[0]
                limit = topic.config["max_record_bytes"]
                raise _Reject(413, f"record {i + 1} of the body is {size} "
                                   f"bytes (key, value and headers), over "
                                   f"max_record_bytes={limit} of topic "
                                   f"{name!r}")
        except _Reject:
            n = 1 if ctype not in NDJSON_TYPES else max(1, sum(
                1 for line in body.split(b"\n") if line.strip()))
            ingest._count(received=n, rejected=n)
            raise
        n = len(values)
        ingest._count(received=n)
        try:
            first = ingest._append(topic, values, keys, headers, stamps)
            if ingest.ack == "durable":
                ingest._wait_durable(topic, first + n)
        except (E.LogFullError, E.DiskFullError) as exc:
            ingest._count(deferred=n)
            raise _Reject(503, f"topic {name!r} is full: {exc}",
                          {"Retry-After": str(self.retry_after)}) from None
        except E.PylogError as exc:
            ingest._count(deferred=n)
            ingest._note_error(f"{type(exc).__name__}: {exc}")
            raise _Reject(500, f"{type(exc).__name__}: {exc}") from None
        ingest._count(acked=n)
        return {"topic": name, "first_offset": first,
                "last_offset": first + n - 1, "count": n}

    def _discard(self, h):
        """Refusing before reading the body: the connection cannot be
        reused (its next bytes would be this body)."""
        h.close_connection = True

    def _body(self, h):
        if "chunked" in (h.headers.get("Transfer-Encoding") or "").lower():
            self._discard(h)
            raise _Reject(411, "send a Content-Length (chunked bodies are "
                               "not accepted)")
        try:
            length = int(h.headers.get("Content-Length"))
        except (TypeError, ValueError):
            self._discard(h)
            raise _Reject(411, "a Content-Length is required") from None
        if length < 0 or length > self.max_body_bytes:
            self._discard(h)
            raise _Reject(413, f"a body of {length} bytes is over "
                               f"max_body_bytes={self.max_body_bytes}")
        body = h.rfile.read(length)
        if len(body) != length:
            self._discard(h)
            raise _Reject(400, f"the body ended after {len(body)} of "
                               f"{length} bytes")
        return body

    def _meta(self, h, ingest, name, n):
        """keys, headers and timestamps (each None or a list of n) from the
        X-Pylog-* request headers and the key template."""
        key, stamp, pairs = None, None, []
        for k, v in h.headers.items():
            lk = k.lower()
            if not lk.startswith(PREFIX):
                continue
            raw = v.encode("latin-1", "replace")
            if lk == "x-pylog-key":
                key = raw
            elif lk == "x-pylog-timestamp":
                try:
                    stamp = int(v)
                except ValueError:
                    stamp = -1
                if not 0 <= stamp < 2**63:
                    raise _Reject(400, f"X-Pylog-Timestamp must be ms since "
                                       f"the epoch, not {v!r}")
            elif len(lk) > len(PREFIX):
                pairs.append((lk[len(PREFIX):], raw))
        if key is None and ingest.key.kind != "none":
            key = ingest.key.render({"client_id": h.client_address[0],
                                     "topic": name})
        return (None if key is None else [key] * n,
                [pairs] * n if pairs else None,
                None if stamp is None else [stamp] * n)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass  # a client gone mid-request: nothing to report


def _handler(source):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "pylog-ingest"
        timeout = source.timeout
        # Buffered: the status line, headers and body leave in one send()
        # (two small writes would meet Nagle and delayed ACKs: 40 ms each),
        # flushed by handle_one_request after each request.
        wbufsize = 1 << 16

        def log_message(self, *args):
            pass

        def setup(self):
            super().setup()  # sets the timeout on the socket
            if isinstance(self.request, ssl.SSLSocket):
                self.request.do_handshake()  # failing: the connection ends
            try:
                self.request.setsockopt(socket.IPPROTO_TCP,
                                        socket.TCP_NODELAY, 1)
            except OSError:
                pass
            with source._mu:
                source._conns.add(self.request)

        def finish(self):
            with source._mu:
                source._conns.discard(self.request)
            super().finish()

        def do_POST(self):
            source._handle(self)

        def _not_allowed(self):
            self.close_connection = True
            source._answer(self, 405, {"error": "use POST /topics/NAME"},
                           {"Allow": "POST"})

        do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = _not_allowed
    return Handler
