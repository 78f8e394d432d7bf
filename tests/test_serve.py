"""``pylog serve`` (pylog/serve) as a child process against real peers:
MQTT in -> pylog -> Kafka mock cluster out from one config; HTTP in ->
MQTT out; the status endpoint (JSON and Prometheus text); SIGTERM stops in
order with exit 0; log lines per state change, live status lines on a
terminal."""
import os
import pty
import select
import signal
import subprocess
import sys
import time

import pytest

import pylog
from peers import (MqttPublisher, MqttSubscriber, free_port,  # noqa: F401
                   kafka_mock, mosquitto, need_module, wait_until)
from serving import ENV, ROOT, Serve, write_config
from test_ingest_http import post


def mqtt_to_kafka(tmp_path, broker, kafka, status_port):
    return write_config(tmp_path / "gw.toml", f"""
log = "{tmp_path}/log"
sync = "interval"

[topics.sensors]
max_bytes = 67108864
segment_bytes = 1048576

[[ingest]]
topic = "sensors"
source = "mqtt://127.0.0.1:{broker.port}"
topics = ["sensors/#"]
qos = 1
client_id = "gw-e2e"
key = "{{mqtt_topic}}"

[[forward]]
name = "cloud"
topics = ["sensors"]
to = "kafka://{kafka.bootstrap}/up"
linger_ms = 20
config = {{"linger.ms" = "5"}}

[status]
listen = "127.0.0.1:{status_port}"
""")


def test_mqtt_in_kafka_out_through_one_config(tmp_path, mosquitto,  # noqa: F811
                                              kafka_mock):  # noqa: F811
    n = 3000
    status_port = free_port()
    cfg = mqtt_to_kafka(tmp_path, mosquitto, kafka_mock, status_port)
    serve = Serve(cfg, status_port).start()
    try:
        assert serve.wait_status(lambda st: st["ingests"]["sensors-mqtt"][
            "subscribed"]) is not None, serve.stderr()
        pub = MqttPublisher(mosquitto.port)
        pub.publish([(f"sensors/{i % 4}", b"%d" % i) for i in range(n)])
        pub.close()
        st = serve.wait_status(
            lambda st: st["forwarders"]["cloud"]["sent_records"] >= n, 60)
        assert st is not None, serve.stderr()
    finally:
        rc = serve.terminate()
    assert rc == 0, serve.stderr()
    msgs = kafka_mock.consume(["up"], until=lambda out: len(out) >= n)
    assert sorted(int(m.value()) for m in msgs) == list(range(n))
    assert {m.key() for m in msgs} == {b"sensors/%d" % i for i in range(4)}
    for m in msgs[:5]:
        assert ("mqtt.topic", m.key()) in m.headers()
    with pylog.open(tmp_path / "log") as log:
        assert log.groups() == {"cloud": {"sensors": n}}
    ing, fw = st["ingests"]["sensors-mqtt"], st["forwarders"]["cloud"]
    assert ing["appended"] == ing["acked"] == n and fw["lag"] == {
        "sensors": 0}
    assert st["topics"]["sensors"]["end_offset"] == n


def http_to_mqtt(tmp_path, broker, http_port, status_port, extra=""):
    return write_config(tmp_path / "gw.toml", f"""
log = "{tmp_path}/log"

[[ingest]]
name = "web"
topic = ["events", "alarms"]
source = "http://127.0.0.1:{http_port}"
key = "{{client_id}}"

[[forward]]
name = "up"
topics = ["events", "alarms"]
to = "mqtt://127.0.0.1:{broker.port}/gw/{{topic}}"
timeout = 2.0
retry_backoff_ms = [20, 200]
{extra}
[status]
listen = "127.0.0.1:{status_port}"
""")


def test_status_endpoint_serves_json_and_prometheus_text(
        tmp_path, mosquitto):  # noqa: F811
    parser = need_module("prometheus_client.parser", "prometheus-client")
    http_port, status_port = free_port(), free_port()
    serve = Serve(http_to_mqtt(tmp_path, mosquitto, http_port, status_port),
                  status_port).start()
    try:
        assert serve.wait_status(lambda st: st["ingests"]["web"][
            "listening"]) is not None, serve.stderr()
        for i in range(20):
            assert post(http_port, "/topics/events", b"%d" % i)[0] == 200
        assert post(http_port, "/topics/nope", b"x")[0] == 404
        st = serve.wait_status(
            lambda st: st["forwarders"]["up"]["sent_records"] == 20)
        assert st is not None, serve.stderr()
        text = serve.status("/metrics")
        with pytest.raises(OSError):
            serve.status("/other")
    finally:
        assert serve.terminate() == 0, serve.stderr()
    assert st["ingests"]["web"]["responses"] == {"200": 20, "404": 1}
    assert st["topics"]["events"]["end_offset"] == 20
    assert st["topics"]["alarms"]["end_offset"] == 0
    fams = {f.name: f for f in parser.text_string_to_metric_families(text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in fams.values() for s in f.samples}
    assert fams["pylog_ingest_appended"].type == "counter"
    assert samples[("pylog_ingest_appended_total",
                    (("ingest", "web"),))] == 20
    assert samples[("pylog_ingest_state", (("ingest", "web"),
                                           ("state", "running")))] == 1
    assert samples[("pylog_ingest_state", (("ingest", "web"),
                                           ("state", "full")))] == 0
    assert samples[("pylog_forwarder_sent_records_total",
                    (("forwarder", "up"),))] == 20
    assert samples[("pylog_forwarder_lag", (("forwarder", "up"),
                                            ("topic", "events")))] == 0
    assert samples[("pylog_topic_end_offset", (("topic", "events"),))] == 20


def test_sigterm_stops_in_order_and_logs_state_changes(
        tmp_path, mosquitto):  # noqa: F811
    """Without a terminal: one line per state change. The broker goes away
    (the forwarder backs off: a line), comes back (a line); SIGTERM stops
    the ingest, flushes the forwarder, closes the log: exit 0, and the
    log holds what was acknowledged, uploaded and committed."""
    http_port, status_port = free_port(), free_port()
    serve = Serve(http_to_mqtt(tmp_path, mosquitto, http_port, status_port,
                               "\n[serve]\nflush_timeout = 20\n"),
                  status_port).start()
    sub = MqttSubscriber(mosquitto.port, "gw/#")
    try:
        assert serve.wait_status(lambda st: st["ingests"]["web"][
            "listening"]) is not None, serve.stderr()
        mosquitto.stop()
        for i in range(10):
            assert post(http_port, "/topics/alarms", b"%d" % i)[0] == 200
        assert serve.wait_status(lambda st: st["forwarders"]["up"][
            "state"] == "backoff", 20) is not None, serve.stderr()
        mosquitto.start()
        rc = serve.terminate()  # the flush waits for the broker
    finally:
        sub.close()
    err = serve.stderr()
    assert rc == 0, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert any("forward up: backoff" in x for x in lines), err
    assert any("forward up: running" in x for x in lines), err
    order = [i for i, x in enumerate(lines) if "stopping" in x or
             "ingest web:" in x and "appended" in x or
             "forward up:" in x and "sent" in x]
    assert len(order) == 3 and order == sorted(order), err
    assert "ingest web: 10 appended, 10 acknowledged" in err
    assert "forward up: 10 sent, lag 0" in err
    with pylog.open(tmp_path / "log") as log:
        assert log.groups() == {"up": {"events": 0, "alarms": 10}}


def test_on_a_terminal_each_ingest_and_forwarder_has_a_status_line(
        tmp_path, mosquitto):  # noqa: F811
    http_port, status_port = free_port(), free_port()
    cfg = http_to_mqtt(tmp_path, mosquitto, http_port, status_port)
    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "pylog", "serve", cfg],
                         stdin=slave, stdout=slave, stderr=slave, env=ENV,
                         cwd=ROOT)
    os.close(slave)
    shown = b""

    def read(until):
        nonlocal shown
        deadline = time.monotonic() + 30
        while until not in shown and time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                shown += chunk
        return until in shown
    try:
        assert read(b"ingest web <- http://127.0.0.1"), shown
        post(http_port, "/topics/events", b"x")
        assert read(b"appended 1  acked 1"), shown
        assert read(b"forward up  running  sent 1"), shown
        p.send_signal(signal.SIGINT)
        read(b"never: until the end")
    finally:
        os.close(master)
        rc = p.wait(30)
    assert rc == 0, shown
    assert b"\x1b[2A" in shown  # the two lines are redrawn in place
    assert b"pylog serve: stopping" in shown and b"Traceback" not in shown


def test_a_second_signal_cuts_the_flush_short(tmp_path, mosquitto):  # noqa: F811
    http_port, status_port = free_port(), free_port()
    serve = Serve(http_to_mqtt(tmp_path, mosquitto, http_port, status_port,
                               "\n[serve]\nflush_timeout = 600\n"),
                  status_port).start()
    assert serve.wait_status(lambda st: st["ingests"]["web"]["listening"]), \
        serve.stderr()
    mosquitto.stop()
    assert post(http_port, "/topics/events", b"x")[0] == 200
    serve.proc.send_signal(signal.SIGTERM)
    assert wait_until(lambda: "stopping" in serve.stderr(), 10)
    time.sleep(0.5)
    t0 = time.monotonic()
    rc = serve.terminate(timeout=30)
    assert rc == 0 and time.monotonic() - t0 < 20, serve.stderr()
    assert "not waiting for the forwarders" in serve.stderr()
    with pylog.open(tmp_path / "log") as log:  # closed cleanly: reopens
        assert log.topic("events").end_offset == 1
