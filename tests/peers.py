"""Real network peers for tests, started by the tests themselves on loopback.

- Mosquitto: the mosquitto broker (Debian package ``mosquitto``) on a free
  port, with its own config, persistence and log in a temp dir; ``stop()``
  / ``start()`` make an outage (the port stays the same); ``tls=True`` adds
  a TLS listener with a throw-away CA (made with the openssl command).
- MqttSubscriber: a paho client with a persistent session (MQTT 5
  clean_start=False and a session expiry) that reconnects by itself, so a
  broker restart loses none of the messages the broker had accepted.
- MqttPublisher: a paho client publishing QoS 1 messages (with user
  properties) and waiting for the broker's PUBACKs.
- KafkaMock: librdkafka's mock cluster (bundled in confluent-kafka's
  wheel), which speaks the Kafka protocol on loopback; ``down()`` / ``up()``
  call rd_kafka_mock_broker_set_down / _up through ctypes.
- HttpPeer: an HTTP/1.1 server that records what it receives and answers
  from a schedule (any status, with headers such as Retry-After) and 400
  for poisoned records; ``down()`` / ``up()`` close and reopen its port.

Each peer is a plain class usable outside pytest (bench/forward.py uses
them); the fixtures at the end wrap them. A missing broker or client
library skips the tests that need it, except when the environment variable
CI is set: then it fails them.
"""
import base64
import collections
import ctypes
import glob
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

LOOPBACK = "127.0.0.1"


def need(what, available, hint=""):
    """Skip (fail when CI is set) a test whose peer is missing."""
    if available:
        return
    msg = f"{what} is not available{': ' + hint if hint else ''}"
    if os.environ.get("CI"):
        pytest.fail(f"{msg} (CI is set: .ci/run must install it)")
    pytest.skip(msg)


def free_port():
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_port(port, up=True, timeout=10.0):
    """Wait until LOOPBACK:port accepts connections (or refuses them)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.02)
    raise TimeoutError(f"port {port} still {'closed' if up else 'open'}")


def wait_until(cond, timeout=30.0, every=0.02):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True


# ---- MQTT ----------------------------------------------------------------------

def make_tls_files(d, host=LOOPBACK):
    """A CA and a server certificate for host, made with openssl in d;
    returns (ca.pem, server.pem, server.key)."""
    ca_key, ca = os.path.join(d, "ca.key"), os.path.join(d, "ca.pem")
    key, csr = os.path.join(d, "server.key"), os.path.join(d, "server.csr")
    crt, ext = os.path.join(d, "server.pem"), os.path.join(d, "ext.cnf")
    with open(ext, "w") as f:
        f.write(f"subjectAltName=IP:{host},DNS:localhost\n")
    run = lambda *a: subprocess.run(  # noqa: E731
        ["openssl", *a], check=True, capture_output=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key,
        "-out", ca, "-days", "2", "-subj", "/CN=pylog test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
        "-subj", f"/CN={host}")
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
        "-CAcreateserial", "-out", crt, "-days", "2", "-extfile", ext)
    return ca, crt, key


class Mosquitto:
    """A mosquitto broker of its own: persistence on, no queue limits."""

    def __init__(self, workdir=None, tls=False):
        self.dir = workdir or tempfile.mkdtemp(prefix="pylog-mosquitto-")
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.ca = None
        self.proc = None
        conf = [
            f"listener {self.port} {LOOPBACK}",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.dir}/",
            "autosave_interval 1",
            # A subscriber that reconnects must find every message queued:
            "max_queued_messages 0",
            "max_queued_bytes 0",
            "max_inflight_messages 0",
            "log_dest file " + os.path.join(self.dir, "mosquitto.log"),
            "log_type error",
            "log_type warning",
        ]
        if os.geteuid() == 0:  # else it would switch to user mosquitto
            conf.append("user root")
        if tls:
            self.ca, crt, key = make_tls_files(self.dir)
            conf += [f"listener {self.tls_port} {LOOPBACK}",
                     f"cafile {self.ca}", f"certfile {crt}",
                     f"keyfile {key}"]
        self.conf = os.path.join(self.dir, "mosquitto.conf")
        with open(self.conf, "w") as f:
            f.write("\n".join(conf) + "\n")

    @staticmethod
    def available():
        return shutil.which("mosquitto") or os.path.exists(
            "/usr/sbin/mosquitto")

    def start(self):
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([exe, "-c", self.conf],
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        try:
            wait_port(self.port)
        except TimeoutError:
            self.stop()
            raise RuntimeError("mosquitto did not start: " + self.log())
        return self

    def stop(self):
        """Stop the broker (SIGTERM: it saves its persistence first)."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
            wait_port(self.port, up=False)

    def restart(self, down_for=0.0):
        self.stop()
        time.sleep(down_for)
        self.start()

    def log(self):
        try:
            with open(os.path.join(self.dir, "mosquitto.log")) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class MqttSubscriber:
    """Counts what a broker delivers on a topic filter, QoS 1, with a
    persistent session that survives broker restarts."""

    def __init__(self, port, topic="#", client_id=None, qos=1):
        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        self.messages = []  # (topic, payload bytes, {user property: value})
        self._cv = threading.Condition()
        self._topic, self._qos = topic, qos
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"pylog-test-sub-{os.getpid()}-{id(self)}",
            protocol=mqtt.MQTTv5)
        self.client.reconnect_delay_set(0.05, 0.5)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self._connected = threading.Event()
        self.client.connect(LOOPBACK, port, keepalive=30, clean_start=False,
                            properties=props)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise RuntimeError("the subscriber did not connect")

    def _on_connect(self, client, _u, flags, rc, _props):
        if not rc.is_failure:
            if not flags.session_present:
                client.subscribe(self._topic, qos=self._qos)
            self._connected.set()

    def _on_message(self, _c, _u, msg):
        props = dict(getattr(msg.properties, "UserProperty", None) or [])
        with self._cv:
            self.messages.append((msg.topic, bytes(msg.payload), props))
            self._cv.notify_all()

    def wait_for(self, n, timeout=60.0):
        with self._cv:
            return self._cv.wait_for(lambda: len(self.messages) >= n,
                                     timeout)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


class MqttPublisher:
    """A paho publisher (MQTT 5) of QoS 1 messages; publish() returns once
    the broker acknowledged every one. persistent: a session the broker
    keeps across reconnects (clean_start off), so that a message without
    a PUBACK is sent again after a broker restart."""

    def __init__(self, port, client_id=None, persistent=False,
                 max_inflight=100):
        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        self._props = lambda: Properties(PacketTypes.PUBLISH)  # noqa: E731
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"pylog-test-pub-{os.getpid()}-{id(self)}",
            protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(max_inflight)
        self.client.reconnect_delay_set(0.05, 0.5)
        self._connected = threading.Event()
        self.client.on_connect = lambda *a: self._connected.set()
        props = Properties(PacketTypes.CONNECT)
        if persistent:
            props.SessionExpiryInterval = 3600
        self.client.connect(LOOPBACK, port, keepalive=30,
                            clean_start=not persistent, properties=props)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise RuntimeError("the publisher did not connect")

    def publish(self, messages, timeout=60.0):
        """messages: (topic, payload) or (topic, payload, user properties
        as a list of pairs); returns once all are acknowledged."""
        infos = []
        for m in messages:
            props = None
            if len(m) > 2 and m[2]:
                props = self._props()
                props.UserProperty = list(m[2])
            infos.append(self.client.publish(m[0], m[1], qos=1,
                                             properties=props))
        deadline = time.monotonic() + timeout
        for info in infos:
            info.wait_for_publish(max(0.01, deadline - time.monotonic()))
            if not info.is_published():
                raise TimeoutError("the broker did not acknowledge a "
                                   "message in time")

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


# ---- Kafka ---------------------------------------------------------------------

class KafkaMock:
    """librdkafka's mock cluster, made through its C API (ctypes on the
    library bundled with confluent-kafka, already loaded by it)."""

    def __init__(self, brokers=3):
        import confluent_kafka
        self.ck = confluent_kafka
        self.lib = self._library(confluent_kafka)
        L, vp = self.lib, ctypes.c_void_p
        L.rd_kafka_conf_new.restype = vp
        L.rd_kafka_conf_set.argtypes = [vp, ctypes.c_char_p, ctypes.c_char_p,
                                        ctypes.c_char_p, ctypes.c_size_t]
        L.rd_kafka_new.restype = vp
        L.rd_kafka_new.argtypes = [ctypes.c_int, vp, ctypes.c_char_p,
                                   ctypes.c_size_t]
        L.rd_kafka_destroy.argtypes = [vp]
        L.rd_kafka_mock_cluster_new.restype = vp
        L.rd_kafka_mock_cluster_new.argtypes = [vp, ctypes.c_int]
        L.rd_kafka_mock_cluster_destroy.argtypes = [vp]
        L.rd_kafka_mock_cluster_bootstraps.restype = ctypes.c_char_p
        L.rd_kafka_mock_cluster_bootstraps.argtypes = [vp]
        for fn in (L.rd_kafka_mock_broker_set_down,
                   L.rd_kafka_mock_broker_set_up):
            fn.argtypes = [vp, ctypes.c_int32]
        L.rd_kafka_mock_topic_create.argtypes = [vp, ctypes.c_char_p,
                                                 ctypes.c_int, ctypes.c_int]
        L.rd_kafka_mock_push_request_errors_array.argtypes = [
            vp, ctypes.c_int16, ctypes.c_size_t, ctypes.POINTER(ctypes.c_int)]
        err = ctypes.create_string_buffer(512)
        conf = L.rd_kafka_conf_new()
        # The handle only owns the cluster; keep it quiet.
        L.rd_kafka_conf_set(conf, b"log_level", b"0", err, 512)
        self._rk = L.rd_kafka_new(1, conf, err, 512)  # a consumer: no queue
        if not self._rk:
            raise RuntimeError(err.value.decode())
        self._mc = L.rd_kafka_mock_cluster_new(self._rk, brokers)
        if not self._mc:
            raise RuntimeError("rd_kafka_mock_cluster_new failed")
        self.brokers = brokers
        self.bootstrap = L.rd_kafka_mock_cluster_bootstraps(
            self._mc).decode()

    @staticmethod
    def _library(ck):
        """The librdkafka that confluent_kafka loaded (its wheel bundles
        one; a source build links the system's)."""
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1]
                if "librdkafka" in os.path.basename(path):
                    return ctypes.CDLL(path)
        here = os.path.dirname(os.path.dirname(ck.__file__))
        found = glob.glob(os.path.join(here, "confluent_kafka.libs",
                                       "librdkafka*.so*"))
        if not found:
            raise RuntimeError("cannot find the librdkafka of confluent_kafka")
        return ctypes.CDLL(found[0])

    def create_topic(self, name, partitions=4):
        rc = self.lib.rd_kafka_mock_topic_create(self._mc, name.encode(),
                                                 partitions, 1)
        if rc:
            raise RuntimeError(f"mock topic {name}: error {rc}")

    def down(self, broker=-1):
        """Disconnect the broker(s) (-1: all) and refuse new connections."""
        self.lib.rd_kafka_mock_broker_set_down(self._mc, broker)

    def up(self, broker=-1):
        self.lib.rd_kafka_mock_broker_set_up(self._mc, broker)

    def fail_produce(self, error_name, count=1):
        """The next count Produce requests fail with a Kafka error code
        (confluent_kafka.KafkaError.<error_name>)."""
        code = getattr(self.ck.KafkaError, error_name)
        arr = (ctypes.c_int * count)(*([code] * count))
        self.lib.rd_kafka_mock_push_request_errors_array(self._mc, 0, count,
                                                         arr)

    def consume(self, topics, until=None, idle=3.0, timeout=120.0):
        """Every record of topics, read from the beginning: a list of
        confluent_kafka Messages. Stops once until(messages) is true, or
        after idle seconds without a new record."""
        c = self.ck.Consumer({"bootstrap.servers": self.bootstrap,
                              "group.id": f"check-{time.monotonic_ns()}",
                              "auto.offset.reset": "earliest",
                              "enable.auto.commit": False,
                              "log_level": 0})
        # Assign every partition from the beginning: no group to join.
        md = c.list_topics(timeout=10)
        c.assign([self.ck.TopicPartition(t, p, self.ck.OFFSET_BEGINNING)
                  for t in topics if t in md.topics
                  for p in md.topics[t].partitions])
        out, last = [], time.monotonic()
        deadline = last + timeout
        try:
            while time.monotonic() < deadline:
                batch = c.consume(1000, 0.2)
                got = [m for m in batch if m.error() is None]
                out.extend(got)
                now = time.monotonic()
                if got:
                    last = now
                if until is not None and until(out):
                    break
                if now - last > idle and (until is None or out):
                    break
        finally:
            c.close()
        return out

    def close(self):
        if self._mc:
            self.lib.rd_kafka_mock_cluster_destroy(self._mc)
            self._mc = None
        if self._rk:
            self.lib.rd_kafka_destroy(self._rk)
            self._rk = None


# ---- HTTP ----------------------------------------------------------------------

class HttpPeer:
    """An HTTP/1.1 server that keeps what it was sent.

    requests: (path, headers, body) of every request; records: the NDJSON
    lines (decoded: key/value bytes, headers pairs) and raw bodies of the
    requests it answered 2xx. schedule: statuses (or (status, headers)) to
    answer the next requests with, then 200. poison(record) -> True makes
    the request holding that record answer 400.
    """

    def __init__(self):
        self.port = free_port()
        self.requests, self.records = [], []
        self.schedule = collections.deque()
        self.poison = None
        self.answers = collections.Counter()
        self._mu = threading.Lock()
        self._server = None
        self._thread = None
        self._conns = set()  # open client connections (keep-alive)

    @property
    def url(self):
        return f"http://{LOOPBACK}:{self.port}"

    def _handler(peer):  # noqa: N805 - the peer, seen from the handler
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                with peer._mu:
                    peer._conns.add(self.request)

            def finish(self):
                with peer._mu:
                    peer._conns.discard(self.request)
                super().finish()

            def do_HEAD(self):
                self.send_response(405)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                status, extra = peer._answer(self.path, self.headers, body)
                text = b"" if status < 300 else b"refused"
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)
        return Handler

    @staticmethod
    def decode(path, headers, body):
        """The records of one request, as dicts."""
        if headers.get("Content-Type") == "application/x-ndjson":
            out = []
            for line in body.splitlines():
                d = json.loads(line)
                d["key"] = None if d["key"] is None else base64.b64decode(
                    d["key"])
                d["value"] = base64.b64decode(d["value"])
                d["headers"] = [(k, None if v is None else base64.b64decode(v))
                                for k, v in d["headers"]]
                d["path"] = path
                out.append(d)
            return out
        key = headers.get("Pylog-Key")
        return [{"topic": headers.get("Pylog-Topic"),
                 "offset": int(headers.get("Pylog-Offset")),
                 "timestamp": int(headers.get("Pylog-Timestamp")),
                 "key": None if key is None else base64.b64decode(key),
                 "headers": [(k, None if v is None else base64.b64decode(v))
                             for k, v in json.loads(
                                 headers.get("Pylog-Headers") or "[]")],
                 "value": body, "path": path}]

    def _answer(self, path, headers, body):
        recs = self.decode(path, headers, body)
        with self._mu:
            self.requests.append((path, dict(headers), body))
            if self.schedule:
                a = self.schedule.popleft()
                status, extra = (a, {}) if isinstance(a, int) else a
            elif self.poison and any(map(self.poison, recs)):
                status, extra = 400, {}
            else:
                status, extra = 200, {}
            self.answers[status] += 1
            if 200 <= status < 300:
                self.records.extend(recs)
        return status, extra

    class _Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):
            pass  # a client killed mid-request: nothing to report

    def start(self):
        self._server = self._Server((LOOPBACK, self.port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def down(self):
        """Close the port and every open connection: new connections are
        refused, kept-alive ones are cut."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = None
        with self._mu:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def up(self):
        self.start()

    def close(self):
        self.down()


# ---- fixtures ------------------------------------------------------------------

def need_module(name, pip_name):
    try:
        return __import__(name, fromlist=["_"])
    except ImportError:
        need(pip_name, False, 'pip install -e ".[test]"')


@pytest.fixture
def kafka_client():
    """confluent_kafka, for tests that make a KafkaSink."""
    return need_module("confluent_kafka", "confluent-kafka")


@pytest.fixture
def mqtt_client():
    """paho.mqtt.client, for tests that make an MqttSink."""
    return need_module("paho.mqtt.client", "paho-mqtt")


@pytest.fixture
def http_client():
    """urllib3, for tests that make an HttpSink."""
    return need_module("urllib3", "urllib3")


@pytest.fixture
def mosquitto(tmp_path):
    need("the mosquitto broker", Mosquitto.available(),
         "apt-get install mosquitto")
    need_module("paho.mqtt.client", "paho-mqtt")
    d = tmp_path / "mosquitto"
    d.mkdir()
    b = Mosquitto(str(d)).start()
    yield b
    b.close()


@pytest.fixture
def kafka_mock():
    need_module("confluent_kafka", "confluent-kafka")
    m = KafkaMock()
    yield m
    m.close()


@pytest.fixture
def http_peer(http_client):
    """An HttpPeer, for tests of HttpSink (hence urllib3)."""
    p = HttpPeer().start()
    yield p
    p.close()
