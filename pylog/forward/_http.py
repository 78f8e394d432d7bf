"""HttpSink: records to an HTTP endpoint through urllib3.

- format="ndjson" (the default): one POST per batch (per topic when the URL
  has ``{topic}``), ``Content-Type: application/x-ndjson``, one JSON object
  per line: ``topic``, ``offset``, ``timestamp`` (ms), ``key`` (base64 or
  null), ``headers`` (a list of [name, base64 value or null]) and ``value``
  (base64). format="raw": one POST per record, the value as the body
  (``application/octet-stream``) and the rest in request headers
  ``Pylog-Topic``, ``Pylog-Offset``, ``Pylog-Timestamp``, ``Pylog-Key``
  (base64, absent for no key) and ``Pylog-Headers`` (the JSON list above).
- A 2xx confirms the request's records. Connection errors, timeouts, 408,
  429 and 5xx raise RetryableError (with the Retry-After the server sent);
  any other status refuses the records for good (RejectedError). For 400,
  413 and 422 of a request of several records, the forwarder sends smaller
  requests to find the records the server refuses. With ``{topic}`` in the
  URL, a refusal of one topic's request does not hold back the others; a
  retryable failure stops the send there (nothing newer overtakes it). Redirects are not
  followed (a POST body would be lost or re-sent to another place).
- urllib3 keeps the connection alive between batches and does no retries
  of its own: the forwarder's backoff does them.
"""
import binascii
import http.client
import json
import ssl
import threading
import urllib.parse

from .._errors import InvalidConfigError
from ._errors import RejectedError, RetryableError, UpstreamError
from ._retry import parse_retry_after
from ._sink import Template, check_known, check_seconds, require

NDJSON_HEADERS = {"Content-Type": "application/x-ndjson"}
RETRY_STATUS = {408, 429}
ISOLATE_STATUS = {400, 413, 422}
TLS_KEYS = {"ca_certs", "cert_file", "key_file", "key_password", "cert_reqs",
            "assert_hostname"}
_b64 = binascii.b2a_base64


def _b64s(b):
    return _b64(b, newline=False).decode("ascii")


def _headers_json(headers, ascii=False):
    return json.dumps([[k, None if v is None else _b64s(v)]
                       for k, v in headers], separators=(",", ":"),
                      ensure_ascii=ascii)


def ndjson_py(records):
    """The NDJSON body of records (see the module's doc), as bytes: the
    reference for the C encoder (csrc/ndjson.c) that HttpSink uses."""
    out = []
    put = out.append
    topic = None
    for r in records:
        if r.topic != topic:  # a topic name is [A-Za-z0-9._-]: no escapes
            topic = r.topic
            head = b'{"topic":"' + topic.encode() + b'","offset":'
        put(head)
        put(b'%d,"timestamp":%d,"key":' % (r.offset, r.timestamp))
        k = r.key
        if k is None:
            put(b"null")
        else:
            put(b'"')
            put(_b64(k, newline=False))
            put(b'"')
        if r.headers:
            put(b',"headers":' + _headers_json(r.headers).encode("utf-8"))
            put(b',"value":"')
        else:
            put(b',"headers":[],"value":"')
        put(_b64(r.value, newline=False))
        put(b'"}\n')
    return b"".join(out)


def _done():
    pass


def pool_path(url):
    """The request target of url: its path and query."""
    parts = urllib.parse.urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


try:
    from ._ndjson import encode as ndjson
except ImportError:  # a tree whose extensions were not built
    ndjson = ndjson_py


class HttpSink:
    """POST records to url (``pip install "pylog[http]"``).

    url: http:// or https://, may hold ``{topic}``; format: "ndjson" or
    "raw"; headers: extra request headers (authorization, ...); timeout:
    seconds to connect and to read the answer; tls: an ssl.SSLContext or a
    dict of urllib3 TLS options (ca_certs, cert_file, key_file,
    key_password, cert_reqs, assert_hostname).
    """

    def __init__(self, url, format="ndjson", headers=None, timeout=10.0, *,
                 tls=None):
        self._u3 = require("urllib3", "http", "HttpSink")
        if not isinstance(url, str):
            raise InvalidConfigError(f"url must be a str, not "
                                     f"{type(url).__name__}")
        self.template = Template(url, ("topic",), "HttpSink url")
        parts = urllib.parse.urlsplit(url.replace("{topic}", "topic"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidConfigError(
                f"HttpSink url must be http:// or https:// with a host, "
                f"not {url!r}")
        try:
            parts.port
        except ValueError as exc:
            raise InvalidConfigError(f"HttpSink url {url!r}: {exc}") from None
        if format not in ("ndjson", "raw"):
            raise InvalidConfigError(
                f"format must be 'ndjson' or 'raw', not {format!r}")
        extra = {}
        for k, v in (headers or {}).items():
            if not isinstance(k, str) or not isinstance(v, str) \
                    or "\n" in k + v or "\r" in k + v:
                raise InvalidConfigError(
                    f"headers must map str to str on one line, not "
                    f"{k!r}: {v!r}")
            extra[k] = v
        check_seconds(timeout, "timeout")
        pool_kw = {}
        if isinstance(tls, ssl.SSLContext):
            pool_kw["ssl_context"] = tls
        elif isinstance(tls, dict):
            pool_kw.update(check_known(tls, TLS_KEYS, "tls option"))
        elif tls is not None:
            raise InvalidConfigError(
                "tls must be None, an ssl.SSLContext or a dict of urllib3 "
                f"TLS options, not {type(tls).__name__}")
        self.url, self.format, self.timeout = url, format, float(timeout)
        self.headers = extra
        self._base = f"{parts.scheme}://{parts.netloc}"
        self._pool = self._u3.PoolManager(
            num_pools=4, maxsize=1, retries=False,
            timeout=self._u3.Timeout(connect=timeout, read=timeout),
            **pool_kw)
        self._interrupted = threading.Event()
        self._prepared = None  # (records, their number, body) of prepare
        self._static_pool = None  # (urllib3 pool, request target) of begin

    def __repr__(self):
        return f"<pylog.forward.HttpSink {self.url!r} format={self.format!r}>"

    # ---- the sink protocol -------------------------------------------------
    def check(self, timeout=10.0):
        """Raise UpstreamError unless the server answers (any status)."""
        try:
            self._pool.request("HEAD", self._base + "/", redirect=False,
                               timeout=self._u3.Timeout(connect=timeout,
                                                        read=timeout))
        except (self._u3.exceptions.HTTPError, OSError) as exc:
            raise UpstreamError(
                f"cannot reach {self._base}: {self._reason(exc)}") from None

    def interrupt(self):
        self._interrupted.set()

    def close(self):
        self._prepared = self._static_pool = None
        self._pool.clear()

    def _requests(self, records):
        """The requests for records: (records, body, headers) each."""
        if self.format == "raw":  # one request per record
            return [([r], r.value, self._raw_headers(r)) for r in records]
        if self.template.static is not None:
            groups = [records]
        else:  # one request per topic, each in offset order
            by_topic = {}
            for r in records:
                by_topic.setdefault(r.topic, []).append(r)
            groups = list(by_topic.values())
        return [(g, ndjson(g), NDJSON_HEADERS) for g in groups]

    def send(self, records):
        self._interrupted.clear()
        requests = self._requests(records)
        refused, isolate, retry, why = [], False, None, None
        for i, (recs, body, headers) in enumerate(requests):
            if i and self._interrupted.is_set():
                retry = [r for q in requests[i:] for r in q[0]]
                why = why or RetryableError("interrupted")
                break
            try:
                self._post(self.template.render(topic=recs[0].topic), body,
                           headers, len(recs))
            except RetryableError as exc:
                # Stop here: what follows must not overtake these records.
                retry = [r for q in requests[i:] for r in q[0]]
                why = exc
                break
            except RejectedError as exc:
                refused.extend(recs)  # other topics (requests) go on
                isolate = isolate or exc.isolate
                why = why or exc
        if retry:
            again = {id(r) for r in retry + refused}
            raise RetryableError(str(why), retry_after=getattr(
                why, "retry_after", None),
                records=[r for r in records if id(r) in again])
        if refused:
            raise RejectedError(str(why), records=refused, isolate=isolate)

    def begin(self, records):
        """send in two halves (see the forwarder): an NDJSON batch to a URL
        without {topic} is one POST; its request goes out now and the
        returned finish() reads the answer, as send would. Anything else
        is sent whole here, finish() having nothing left to do."""
        if self.format != "ndjson" or self.template.static is None:
            self.send(records)
            return _done
        self._interrupted.clear()
        url = self.template.static
        headers = ({**self.headers, **NDJSON_HEADERS} if self.headers
                   else NDJSON_HEADERS)
        body = self._prepared
        self._prepared = None
        if body is None or body[0] is not records or body[1] != len(records):
            body = ndjson(records)
        else:
            body = body[2]
        # What urllib3's urlopen turns into its own errors, and those.
        failures = (self._u3.exceptions.HTTPError, OSError,
                    http.client.HTTPException)
        try:
            if self._static_pool is None:  # parsed once, not per batch
                self._static_pool = (self._pool.connection_from_url(url),
                                     pool_path(url))
            pool, path = self._static_pool
            conn = pool._get_conn()
        except failures as exc:
            self._static_pool = None  # e.g. a pool the manager closed
            raise RetryableError(f"POST {url}: {self._reason(exc)}") from None
        try:
            conn.timeout = self.timeout
            try:
                conn.request("POST", path, body=body,
                             headers=headers)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server may have answered already: read it
        except BaseException as exc:
            conn.close()
            pool._put_conn(conn)
            if isinstance(exc, failures):
                raise RetryableError(
                    f"POST {url}: {self._reason(exc)}") from None
            raise

        def finish():
            try:
                resp = conn.getresponse()
            except BaseException as exc:
                conn.close()
                if isinstance(exc, failures):
                    raise RetryableError(
                        f"POST {url}: {self._reason(exc)}") from None
                raise
            finally:
                pool._put_conn(conn)
            self._answer(url, resp, len(records))
        return finish

    def prepare(self, records):
        """Encode the body begin(records) will send (the same list, not
        grown since: anything else is encoded again there)."""
        if self.format == "ndjson" and self.template.static is not None:
            self._prepared = (records, len(records), ndjson(records))

    @staticmethod
    def _raw_headers(r):
        h = {"Content-Type": "application/octet-stream",
             "Pylog-Topic": r.topic, "Pylog-Offset": str(r.offset),
             "Pylog-Timestamp": str(r.timestamp)}
        if r.key is not None:
            h["Pylog-Key"] = _b64s(r.key)
        if r.headers:
            h["Pylog-Headers"] = _headers_json(r.headers, ascii=True)
        return h

    @staticmethod
    def _reason(exc):
        reason = getattr(exc, "reason", None)
        return str(reason or exc)

    def _post(self, url, body, headers, n):
        if self.headers:
            headers = {**self.headers, **headers}
        try:
            resp = self._pool.request("POST", url, body=bytes(body),
                                      headers=headers, redirect=False)
        except (self._u3.exceptions.HTTPError, OSError) as exc:
            raise RetryableError(
                f"POST {url}: {self._reason(exc)}") from None
        self._answer(url, resp, n)

    @staticmethod
    def _answer(url, resp, n):
        """Return for a 2xx, else raise RetryableError or RejectedError."""
        status = resp.status
        if 200 <= status < 300:
            return
        text = resp.data[:200].decode("utf-8", "replace").strip()
        what = f"POST {url}: HTTP {status} {resp.reason or ''}".rstrip() + (
            f": {text}" if text else "")
        if status in RETRY_STATUS or status >= 500:
            raise RetryableError(what, retry_after=parse_retry_after(
                resp.headers.get("Retry-After")))
        raise RejectedError(what, isolate=status in ISOLATE_STATUS and n > 1)
