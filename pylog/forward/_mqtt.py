"""MqttSink: records to an MQTT broker through paho-mqtt 2.x (MQTT 5).

- QoS 1 (a record is confirmed by its PUBACK) or 2 (by its PUBCOMP); QoS 0
  has no acknowledgement and is refused.
- The payload is the value. MQTT 5 user properties carry the rest:
  ``pylog-key``, ``pylog-topic``, ``pylog-offset``, ``pylog-timestamp`` (ms)
  and each header under its own name. A key or header value that is not
  UTF-8 text goes base64-encoded under ``NAME:base64``; a header without a
  value as ``NAME:null``. The MQTT topic is the ``topic`` template, with
  ``{topic}`` (the pylog topic) and ``{key}`` (the key as text).
- One connection (clean start: the forwarder, not the session, keeps what
  is unconfirmed), opened at the first send and dropped on any trouble: a
  lost connection or a send past its timeout raises RetryableError for the
  records from the first unconfirmed one on, which the forwarder publishes
  again, in order, on a new connection. PUBACKs come in publish order, so
  what was confirmed is a prefix and a retry keeps the order.
- A PUBACK with a reason code >= 0x80 that no retry can fix (not
  authorized, topic name or payload format invalid, packet too large)
  refuses that record (RejectedError); quota exceeded and unspecified
  errors are retried.
"""
import base64
import ssl
import threading
import time

from .._errors import InvalidConfigError
from ._errors import RejectedError, RetryableError, UpstreamError
from ._sink import Template, check_known, check_seconds, require

REFUSED_CODES = {0x87, 0x90, 0x95, 0x99}  # not authorized, topic, size, format
WAIT_SLICE_S = 0.2    # waits for acks notice interrupt() this often
MAX_MIDS = 20_000     # records published before waiting (mids wrap at 65535)
TLS_KEYS = {"ca_certs", "certfile", "keyfile", "cert_reqs", "tls_version",
            "ciphers", "keyfile_password", "alpn_protocols", "insecure"}


def _text(b):
    """str of UTF-8 bytes an MQTT string may hold, or None."""
    try:
        s = bytes(b).decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if "\0" in s else s


def user_properties(r):
    """The MQTT 5 user properties of a record (see the module's doc)."""
    props = [("pylog-topic", r.topic), ("pylog-offset", str(r.offset)),
             ("pylog-timestamp", str(r.timestamp))]
    items = (("pylog-key", r.key),) if r.key is not None else ()
    for name, v in items + tuple(r.headers or ()):
        if v is None:
            props.append((name + ":null", ""))
            continue
        s = _text(v)
        if s is None:
            props.append((name + ":base64", base64.b64encode(v).decode()))
        else:
            props.append((name, s))
    return props


def check_tls(tls):
    """tls as MqttSink and MqttSource take it, or InvalidConfigError."""
    if isinstance(tls, dict):
        check_known(tls, TLS_KEYS, "tls option")
    elif not (tls is None or isinstance(tls, (bool, ssl.SSLContext))):
        raise InvalidConfigError(
            "tls must be None, True, an ssl.SSLContext or a dict of "
            f"tls_set() options, not {type(tls).__name__}")
    return tls


def apply_tls(client, tls, what):
    """Set up TLS on a paho client: None (none), True (the system's CAs),
    an ssl.SSLContext, or a dict of tls_set() options plus ``insecure``."""
    try:
        if tls is True:
            client.tls_set()
        elif isinstance(tls, ssl.SSLContext):
            client.tls_set_context(tls)
        elif isinstance(tls, dict):
            opts = dict(tls)
            insecure = opts.pop("insecure", False)
            client.tls_set(**opts)
            if insecure:
                client.tls_insecure_set(True)
    except (ValueError, OSError, ssl.SSLError) as exc:
        raise InvalidConfigError(f"{what} tls: {exc}") from None


def _check_port(port):
    if isinstance(port, bool) or not isinstance(port, int) \
            or not 1 <= port <= 65535:
        raise InvalidConfigError(f"port must be an int in [1, 65535], not "
                                 f"{port!r}")
    return port


class MqttSink:
    """Publish records to an MQTT broker (``pip install "pylog[mqtt]"``).

    topic: the MQTT topic, from ``{topic}`` and ``{key}``; qos: 1 or 2;
    tls: None (plain TCP), True (TLS with the system's CAs), an
    ssl.SSLContext, or a dict of paho's tls_set() arguments (plus
    ``insecure``: skip the host name check); timeout: seconds to connect
    and, per send, for the acknowledgements; max_inflight: unacknowledged
    messages on the wire at once.
    """

    def __init__(self, host, port=1883, topic="gw/{topic}", qos=1,
                 client_id=None, username=None, password=None, tls=None, *,
                 keepalive=60, timeout=10.0, max_inflight=1000):
        self._mqtt = require("paho.mqtt.client", "mqtt", "MqttSink")
        if not hasattr(self._mqtt, "CallbackAPIVersion"):
            raise ImportError('MqttSink needs paho-mqtt >= 2.0: pip install '
                              '"pylog[mqtt]"', name="paho.mqtt.client")
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        self._props_cls, self._publish_type = Properties, PacketTypes.PUBLISH
        if not isinstance(host, str) or not host:
            raise InvalidConfigError(f"host must be a non-empty str, not "
                                     f"{host!r}")
        _check_port(port)
        if qos not in (1, 2) or isinstance(qos, bool):
            raise InvalidConfigError(
                f"qos must be 1 or 2, not {qos!r} (QoS 0 is never "
                "acknowledged: nothing could be committed safely)")
        for name, v in (("client_id", client_id), ("username", username),
                        ("password", password)):
            if v is not None and not isinstance(v, str):
                raise InvalidConfigError(f"{name} must be a str or None, "
                                         f"not {type(v).__name__}")
        if password is not None and username is None:
            raise InvalidConfigError("password given without a username")
        check_tls(tls)
        check_seconds(timeout, "timeout")
        check_seconds(keepalive, "keepalive")
        if isinstance(max_inflight, bool) or not isinstance(max_inflight, int) \
                or max_inflight < 1:
            raise InvalidConfigError(
                f"max_inflight must be an int >= 1, not {max_inflight!r}")
        self.template = Template(topic, ("topic", "key"), "MqttSink topic")
        if self.template.static is not None:
            self._check_topic(topic)
        self.host, self.port, self.qos = host, port, qos
        self.client_id, self.username = client_id, username
        self._password, self.tls = password, tls
        self.keepalive, self.timeout = int(keepalive), float(timeout)
        self.max_inflight = max_inflight
        self._mu = threading.Lock()       # one send at a time
        self._cv = threading.Condition()  # the network thread's callbacks
        self._client = None
        self._connected = False
        self._connack = None
        self._acks = {}                   # mid -> ReasonCode, this send
        self._interrupted = threading.Event()

    def __repr__(self):
        scheme = "mqtts" if self.tls else "mqtt"
        return (f"<pylog.forward.MqttSink {scheme}://{self.host}:{self.port}"
                f" topic={self.template!r} qos={self.qos}>")

    @staticmethod
    def _check_topic(name):
        if not name or "+" in name or "#" in name or "\0" in name \
                or len(name.encode("utf-8")) > 65535:
            raise InvalidConfigError(
                f"invalid MQTT topic {name!r} for a publish: it must be 1 to "
                "65535 bytes without '+', '#' or NUL")

    # ---- connection --------------------------------------------------------
    def _on_connect(self, _c, _u, _flags, rc, _props):
        with self._cv:
            self._connack = rc
            self._connected = not rc.is_failure
            self._cv.notify_all()

    def _on_disconnect(self, _c, _u, _flags, _rc, _props):
        with self._cv:
            self._connected = False
            self._cv.notify_all()

    def _on_publish(self, _c, _u, mid, rc, _props):
        with self._cv:
            self._acks[mid] = rc
            self._cv.notify_all()

    def _where(self):
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def _connect(self, timeout):
        m = self._mqtt
        c = m.Client(m.CallbackAPIVersion.VERSION2,
                     client_id=self.client_id or "", protocol=m.MQTTv5,
                     reconnect_on_failure=False)
        c.connect_timeout = timeout
        c.max_inflight_messages_set(self.max_inflight)
        c.max_queued_messages_set(0)
        if self.username is not None:
            c.username_pw_set(self.username, self._password)
        apply_tls(c, self.tls, "MqttSink")
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        with self._cv:
            self._connack, self._connected = None, False
        try:
            c.connect(self.host, self.port, self.keepalive, clean_start=True)
        except (OSError, ValueError) as exc:  # refused, unresolvable, TLS
            raise RetryableError(
                f"cannot connect to {self._where()}: {exc}") from None
        c.loop_start()
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._connack is None and time.monotonic() < deadline:
                self._cv.wait(min(WAIT_SLICE_S, deadline - time.monotonic()))
            rc = self._connack
        if rc is None or rc.is_failure:
            self._drop(c)
            why = "no CONNACK" if rc is None else f"refused: {rc}"
            raise RetryableError(f"cannot connect to {self._where()}: {why}")
        self._client = c

    def _drop(self, c=None):
        c = c or self._client
        self._client = None
        if c is not None:
            try:
                c.disconnect()
            except Exception:  # noqa: BLE001 - the socket may be gone
                pass
            c.loop_stop()

    # ---- the sink protocol -------------------------------------------------
    def check(self, timeout=10.0):
        """Connect now; raise UpstreamError if the broker cannot be
        reached or refuses the connection."""
        with self._mu:
            if self._client is not None and self._connected:
                return
            self._drop()
            try:
                self._connect(timeout)
            except RetryableError as exc:
                raise UpstreamError(str(exc)) from None

    def interrupt(self):
        self._interrupted.set()
        with self._cv:
            self._cv.notify_all()

    def close(self):
        with self._mu:
            self._drop()

    def _prepare(self, records):
        """(topic, payload, properties) of each record, or (the error,
        None, None) for one that cannot be published."""
        out = []
        for r in records:
            try:
                topic = self._render(r)
            except InvalidConfigError as exc:
                out.append((exc, None, None))
                continue
            props = self._props_cls(self._publish_type)
            props.UserProperty = user_properties(r)
            value = r.value if type(r.value) is bytes else bytes(r.value)
            out.append((topic, value, props))
        return out

    def send(self, records):
        msgs = self._prepare(records)
        with self._mu:
            self._interrupted.clear()
            for i in range(0, len(records), MAX_MIDS):
                try:
                    self._send(records[i:i + MAX_MIDS], msgs[i:i + MAX_MIDS])
                except (RetryableError, RejectedError) as exc:
                    if isinstance(exc, RetryableError) and exc.records is not None:
                        exc.records = list(exc.records) + list(
                            records[i + MAX_MIDS:])
                    elif isinstance(exc, RejectedError) \
                            and i + MAX_MIDS < len(records):
                        # what follows is unsent: retry it, refused included
                        raise RetryableError(
                            str(exc), records=list(exc.records or
                                                   records[i:i + MAX_MIDS])
                            + list(records[i + MAX_MIDS:])) from None
                    raise

    def _send(self, records, msgs):
        if self._client is None or not self._connected:
            self._drop()
            self._connect(self.timeout)
        c = self._client
        with self._cv:
            self._acks = {}
        mids = [None] * len(records)
        refused, reasons = {}, {}
        lost = False
        for i, (topic, value, props) in enumerate(msgs):
            if isinstance(topic, Exception):
                refused[i], reasons[i] = True, str(topic)
                continue
            try:
                info = c.publish(topic, value, self.qos, properties=props)
            except ValueError as exc:  # e.g. a payload over 256 MiB
                refused[i], reasons[i] = True, str(exc)
                continue
            if info.rc != self._mqtt.MQTT_ERR_SUCCESS:
                lost = True  # not connected any more: the rest waits
                break
            mids[i] = info.mid
        deadline = time.monotonic() + self.timeout
        with self._cv:
            while True:
                waiting = [m for m in mids if m is not None
                           and m not in self._acks]
                if not waiting or lost or not self._connected \
                        or self._interrupted.is_set():
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(min(left, WAIT_SLICE_S))
            acks = dict(self._acks)
            connected = self._connected
        first = None  # the first record neither confirmed nor refused
        for i, mid in enumerate(mids):
            if i in refused:
                continue
            rc = acks.get(mid) if mid is not None else None
            if rc is None or (rc.is_failure and rc.value not in REFUSED_CODES):
                first = i
                break
            if rc.is_failure:
                refused[i], reasons[i] = True, f"PUBACK {rc}"
        if first is not None:
            why = ("interrupted" if self._interrupted.is_set() else
                   "connection lost" if lost or not connected else
                   f"no acknowledgement within {self.timeout:g}s")
            rc = acks.get(mids[first])
            if rc is not None and rc.is_failure:
                why = f"PUBACK {rc}"
            else:
                self._drop()  # unacknowledged: start over on a new connection
            again = [r for i, r in enumerate(records) if i >= first
                     or i in refused]
            raise RetryableError(
                f"{self._where()}: {len(records) - first} record(s) not "
                f"confirmed ({why})", records=again)
        if refused:
            idx = sorted(refused)
            raise RejectedError(
                f"{self._where()} refused {len(idx)} record(s): "
                f"{reasons[idx[0]]}", records=[records[i] for i in idx],
                reasons=[reasons[i] for i in idx])

    def _render(self, r):
        if self.template.static is not None:
            return self.template.static
        key = ""
        if r.key is not None and "key" in self.template.fields:
            key = _text(r.key)
            if key is None:
                raise InvalidConfigError(
                    f"the key of {r.topic!r} offset {r.offset} is not UTF-8 "
                    "text: it cannot be part of an MQTT topic")
        name = self.template.render(topic=r.topic, key=key)
        self._check_topic(name)
        return name
