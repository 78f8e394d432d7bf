"""MqttSource: messages of an MQTT broker into a topic, through paho-mqtt
2.x (MQTT 5) with manual acknowledgement.

- A QoS 1 message is acknowledged (PUBACK) only after the batch holding it
  was appended (see Ingest for ack="durable"), in the order the messages
  came. A crash before that leaves it unacknowledged in the session the
  broker keeps for ``client_id`` (clean start off, a session expiry),
  which sends it again on the next connection: a duplicate, never a loss.
  So QoS 1 needs a client_id.
- QoS 2 subscriptions are refused: paho acknowledges a QoS 2 message
  (PUBREC) before the application sees it, after which a crash would lose
  it. Subscribe with qos=1: a QoS 2 publisher's messages then arrive at QoS
  1, acknowledged after the append. QoS 0 messages (a qos=0 subscription,
  or QoS 0 publishers) have no acknowledgement: best effort; while the
  topic is full, those beyond 4 windows are dropped (counted).
- Back-pressure: the CONNECT asks the broker to keep at most
  ``max_inflight`` unacknowledged messages on the way to us (MQTT 5 Receive
  Maximum). While the topic is full nothing is acknowledged, so the broker
  stops after that many and holds the rest. A broker may send more than it
  was asked (mosquitto 2.0 does once acknowledgements flowed): at most
  ``OVERRUN_WINDOWS`` windows are held; what comes beyond is neither kept
  nor acknowledged, and once the backlog has drained the source drops the
  connection so that the broker sends those messages again.
- An acknowledgement is sent only on the connection its message came on:
  after a reconnect a message identifier may name another message. The
  broker sends the messages of a lost connection again (counted as
  ``acks_dropped``: they will be duplicates).
- Subscriptions are made when the broker has no session for us (retain
  handling 1: retained messages only for a new subscription), so a
  reconnect does not bring retained messages again.
- The broker going away is retried with backoff for ever (state
  "connecting"); a refused CONNECT too (last_error says why).
"""
import socket
import threading

from .._errors import InvalidConfigError
from ..forward._mqtt import apply_tls, check_tls
from ..forward._sink import check_seconds, require
from ._mapping import (MQTT_TOPIC_HEADER, check_int, check_port, check_str)

SESSION_NEVER_EXPIRES = 0xFFFFFFFF
QOS0_WINDOWS = 4   # QoS 0 messages waiting, in windows, before drops
OVERRUN_WINDOWS = 4  # QoS 1 messages held, in windows, before refusing more
TOPIC_CACHE = 4096   # MQTT topics whose header and key are kept


def _check_filter(f):
    if not isinstance(f, str) or not f or "\0" in f \
            or len(f.encode("utf-8")) > 65535:
        raise InvalidConfigError(
            f"topics must hold MQTT topic filters (1 to 65535 bytes, no NUL)"
            f", not {f!r}")
    parts = f.split("/")
    for i, p in enumerate(parts):
        if ("#" in p and (p != "#" or i != len(parts) - 1)) \
                or ("+" in p and p != "+"):
            raise InvalidConfigError(
                f"invalid MQTT topic filter {f!r}: '#' only as the last "
                "level, '+' only as a whole level")
    return f


class MqttSource:
    """Subscribe to topic filters of an MQTT broker and append what comes
    (``pip install "pylog[mqtt]"``); give it to ``log.ingest``.

    topics: MQTT topic filters (a str or a list); qos: 1 (acknowledged
    after the append: at least once) or 0 (best effort); client_id: the
    session's name at the broker (required for QoS 1); tls: as MqttSink;
    keepalive: seconds; session_expiry: seconds the broker keeps the
    session (and queues messages for it) while the source is away (None:
    for ever); max_inflight: messages received and not yet acknowledged at
    most (MQTT 5 Receive Maximum); reconnect_backoff: (first, longest)
    seconds between connection attempts.
    """

    scheme = "mqtt"
    STREAM = True         # messages come one by one and need an ack
    MULTI_TOPIC = False
    KEY_FIELDS = ("mqtt_topic", "client_id", "topic")

    def __init__(self, host, port=1883, topics=None, qos=1, client_id=None,
                 username=None, password=None, tls=None, *, keepalive=60,
                 session_expiry=None, max_inflight=1000,
                 reconnect_backoff=(0.1, 30.0)):
        self._mqtt = require("paho.mqtt.client", "mqtt", "MqttSource")
        if not hasattr(self._mqtt, "CallbackAPIVersion"):
            raise ImportError('MqttSource needs paho-mqtt >= 2.0: pip install '
                              '"pylog[mqtt]"', name="paho.mqtt.client")
        check_str(host, "host", none=False)
        check_port(port)
        if topics is None:
            raise InvalidConfigError(
                "topics: give the MQTT topic filters to subscribe to, such "
                "as ['sensors/#']")
        if isinstance(topics, str):
            topics = [topics]
        if not isinstance(topics, (list, tuple)) or not topics:
            raise InvalidConfigError(
                f"topics must be a topic filter or a list of them, not "
                f"{topics!r}")
        topics = [_check_filter(f) for f in topics]
        if len(set(topics)) != len(topics):
            raise InvalidConfigError(f"topics has duplicates: {topics!r}")
        if qos == 2:
            raise InvalidConfigError(
                "qos=2 is not supported: paho acknowledges a QoS 2 message "
                "before the application has it, so a crash could lose it. "
                "Subscribe with qos=1: QoS 2 publishers' messages then come "
                "at QoS 1 and are acknowledged after the append")
        if qos not in (0, 1) or isinstance(qos, bool):
            raise InvalidConfigError(f"qos must be 0 or 1, not {qos!r}")
        for what, v in (("client_id", client_id), ("username", username),
                        ("password", password)):
            if v is not None and not isinstance(v, str):
                raise InvalidConfigError(f"{what} must be a str or None, "
                                         f"not {type(v).__name__}")
        if qos == 1 and not client_id:
            raise InvalidConfigError(
                "qos=1 needs a client_id: the broker keeps the session "
                "(the messages not yet acknowledged, and those published "
                "while the source is away) under that name")
        if password is not None and username is None:
            raise InvalidConfigError("password given without a username")
        check_tls(tls)
        check_seconds(keepalive, "keepalive")
        if session_expiry is not None:
            check_int(session_expiry, "session_expiry", 0,
                      SESSION_NEVER_EXPIRES)
        check_int(max_inflight, "max_inflight", 1, 65535)
        try:
            lo, hi = reconnect_backoff
        except (TypeError, ValueError):
            raise InvalidConfigError(
                f"reconnect_backoff must be (first, longest) seconds, not "
                f"{reconnect_backoff!r}") from None
        check_seconds(lo, "reconnect_backoff")
        check_seconds(hi, "reconnect_backoff")
        if lo > hi:
            raise InvalidConfigError(
                f"reconnect_backoff={reconnect_backoff!r}: first > longest")
        self.host, self.port, self.topics, self.qos = host, port, topics, qos
        self.client_id, self.username = client_id, username
        self._password, self.tls = password, tls
        self.keepalive = int(keepalive)
        self.session_expiry = (SESSION_NEVER_EXPIRES if session_expiry is None
                               else session_expiry)
        self.max_inflight = self.window = max_inflight
        self.reconnect_backoff = (float(lo), float(hi))
        self._ingest = None
        self._client = None
        self._by_topic = {}  # MQTT topic -> ((header,), key)
        # _ack_mu orders acknowledgements against (re)connections: an ack
        # goes out only on the connection its message came on.
        self._ack_mu = threading.Lock()
        self._gen = 0
        self._connected = False
        self._closing = False
        self._connects = self._acks_dropped = 0
        self._overrun = self._overrun_total = 0  # QoS 1 messages not taken
        self._subscribed = False  # the broker granted every filter

    @property
    def url(self):
        scheme = "mqtts" if self.tls else "mqtt"
        return (f"{scheme}://{self.host}:{self.port} "
                f"{','.join(self.topics)} qos={self.qos}")

    def __repr__(self):
        return f"<pylog.ingest.MqttSource {self.url}>"

    @property
    def connected(self):
        return self._connected

    # ---- for Ingest --------------------------------------------------------
    def _bind(self, ingest):
        from ._errors import IngestError
        if self._ingest is not None:
            raise IngestError(f"{self!r} is used by ingest "
                              f"{self._ingest.name!r} already")
        self._ingest = ingest
        self._target = ingest.topic_names[0]

    def _start(self):
        m = self._mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        c = m.Client(m.CallbackAPIVersion.VERSION2,
                     client_id=self.client_id or "", protocol=m.MQTTv5,
                     manual_ack=True)
        c.suppress_exceptions = True
        if self.username is not None:
            c.username_pw_set(self.username, self._password)
        apply_tls(c, self.tls, "MqttSource")
        c.reconnect_delay_set(*self.reconnect_backoff)
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.ReceiveMaximum = self.max_inflight
        if self.client_id:
            props.SessionExpiryInterval = self.session_expiry
        self._client = c
        c.connect_async(self.host, self.port, self.keepalive,
                        clean_start=not self.client_id, properties=props)
        c.loop_start()

    def _close(self):
        c = self._client
        self._closing = True
        if c is None:
            return
        with self._ack_mu:
            self._connected = False
        try:
            c.disconnect()  # queued after the acknowledgements sent so far
        except Exception:  # noqa: BLE001 - the socket may be gone
            pass
        c.loop_stop()
        self._client = None

    def _records(self, items, key):
        """values, keys (or None), headers of received messages. What
        depends on the MQTT topic alone (its header, the key when the
        template uses no user property) is made once per topic."""
        values, headers = [], []
        keys = None if key.kind == "none" else []
        per_message = key.uses("client_id")
        cache, target = self._by_topic, self._target
        for msg, _ in items:
            topic = msg.topic
            hit = cache.get(topic)
            if hit is None:
                if len(cache) >= TOPIC_CACHE:
                    cache.clear()
                pair = (MQTT_TOPIC_HEADER, topic.encode("utf-8"))
                k = None if keys is None or per_message else key.render(
                    {"mqtt_topic": topic, "client_id": "", "topic": target})
                hit = cache[topic] = ((pair,), k)
            values.append(msg.payload)
            up = getattr(msg.properties, "UserProperty", None)
            client_id = ""
            if up:
                h = list(hit[0])
                for name, v in up:
                    h.append((name, v.encode("utf-8")))
                    if name == "client_id":
                        client_id = v
                headers.append(h)
            else:
                headers.append(hit[0])
            if keys is not None:
                keys.append(key.render({"mqtt_topic": topic,
                                        "client_id": client_id,
                                        "topic": target})
                            if per_message else hit[1])
        return values, keys, headers

    def _metadata(self, item):
        """Headers for the dead-letter record of a message refused."""
        msg, _ = item
        h = [(MQTT_TOPIC_HEADER, msg.topic.encode("utf-8")),
             ("mqtt.qos", str(msg.qos).encode())]
        up = getattr(msg.properties, "UserProperty", None) or ()
        return h + [(n, v.encode("utf-8")) for n, v in up]

    def _ack(self, items):
        """PUBACK the QoS 1 messages of items that came on the connection
        still open."""
        c = self._client
        with self._ack_mu:
            gen, ok = self._gen, self._connected and c is not None
            dropped = 0
            for msg, g in items:
                if msg.qos != 1:
                    continue
                if ok and g == gen:
                    c.ack(msg.mid, 1)
                else:
                    dropped += 1
            self._acks_dropped += dropped
        if self._overrun and self._connected \
                and self._ingest._queued() < self.window:
            self._resync()

    def _resync(self):
        """Messages were left untaken (an overrun): drop the connection so
        that the broker sends every unacknowledged one again."""
        with self._ack_mu:
            self._connected = False  # no more acks on this connection
        sock = self._client.socket() if self._client is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _stats(self):
        return {"connected": self._connected, "connects": self._connects,
                "acks_dropped": self._acks_dropped,
                "subscribed": self._subscribed,
                "overrun": self._overrun_total}

    # ---- paho callbacks (its network thread) -------------------------------
    def _on_connect(self, client, _u, flags, rc, _props):
        ingest = self._ingest
        if rc.is_failure:
            ingest._note_error(f"{self._where()} refused the connection: "
                               f"{rc}")
            return
        with self._ack_mu:
            self._gen += 1
            self._connected = True
            self._connects += 1
            self._overrun = 0  # the broker sends again what was not taken
        if flags.session_present:
            self._subscribed = True  # the session holds the subscriptions
        else:
            from paho.mqtt.subscribeoptions import SubscribeOptions
            client.subscribe([(f, SubscribeOptions(qos=self.qos,
                                                   retainHandling=1))
                              for f in self.topics])

    def _on_connect_fail(self, _client, _u):
        self._ingest._note_error(f"cannot connect to {self._where()}")

    def _on_disconnect(self, _client, _u, _flags, rc, _props):
        with self._ack_mu:
            self._connected = False
        if not self._closing:
            self._ingest._note_error(f"{self._where()}: connection lost "
                                     f"({rc})")

    def _on_subscribe(self, _client, _u, _mid, codes, _props):
        bad = [(f, rc) for f, rc in zip(self.topics, codes) if rc.is_failure]
        self._subscribed = not bad
        if bad:
            self._ingest._note_error(
                f"{self._where()} refused the subscription to "
                + ", ".join(f"{f!r} ({rc})" for f, rc in bad))

    def _on_message(self, _client, _u, msg):
        ingest = self._ingest
        if msg.qos == 1 and (self._overrun or len(ingest._queue)
                             >= OVERRUN_WINDOWS * self.window):
            self._overrun += 1        # not acknowledged: sent again after
            self._overrun_total += 1  # the resync
            return
        ingest._offer((msg, self._gen), droppable=msg.qos == 0,
                      limit=QOS0_WINDOWS * self.window)

    def _where(self):
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"
