"""MqttSink (pylog/forward/_mqtt.py) against a mosquitto broker of the
test's own (tests/peers.py), counted by a paho subscriber with a persistent
session: payloads, user properties, QoS 1 and 2, broker restarts, a broker
down at start, refusals, TLS, bad options."""
import collections
import shutil
import sys
import time

import pytest

import pylog
from peers import (Mosquitto, MqttSubscriber, mosquitto,  # noqa: F401
                   mqtt_client, need, need_module, wait_until)
from pylog.forward import MqttSink, UpstreamError

FAST = {"retry_backoff_ms": (20, 200)}


@pytest.fixture
def subscriber(mosquitto):  # noqa: F811 - the fixture above
    s = MqttSubscriber(mosquitto.port, "gw/#")
    yield s
    s.close()


def sink(broker, **kw):
    kw.setdefault("timeout", 5.0)
    return MqttSink("127.0.0.1", broker.port, **kw)


def fill(t, n, start=0, keys=4):
    t.append_batch([b"v%d" % (start + i) for i in range(n)],
                   keys=[b"k%d" % ((start + i) % keys) for i in range(n)])


def check_key_order(messages):
    """Per key, first arrivals follow the offsets; returns the arrival
    count of each offset."""
    counts, last = collections.Counter(), {}
    for _, _, props in messages:
        off = int(props["pylog-offset"])
        counts[off] += 1
        if counts[off] > 1:
            continue
        key = props.get("pylog-key")
        assert off > last.get(key, -1), (key, off, last[key])
        last[key] = off
    return counts


@pytest.mark.parametrize("qos", [1, 2])
def test_records_arrive_with_key_and_headers_as_user_properties(
        tmp_path, mosquitto, subscriber, qos):  # noqa: F811
    with pylog.open(tmp_path / "log") as log:
        t = log.topic("sensors")
        fill(t, 300)
        t.append(b"\x00\xffbinary", key=b"\xfe", timestamp=1_700_000_000_000,
                 headers=[("unit", b"C"), ("raw", b"\xff"), ("gone", None)])
        with log.forwarder("up", "sensors", sink(mosquitto, qos=qos,
                                                 topic="gw/{topic}/x"),
                           batch_records=100) as fw:
            assert fw.flush(30)
            assert fw.stats()["sent_records"] == 301
    assert subscriber.wait_for(301, 30)
    msgs = subscriber.messages
    assert {m[0] for m in msgs} == {"gw/sensors/x"}
    assert [m[1] for m in msgs[:300]] == [b"v%d" % i for i in range(300)]
    assert msgs[1][2] == {"pylog-topic": "sensors", "pylog-offset": "1",
                          "pylog-key": "k1",
                          "pylog-timestamp": msgs[1][2]["pylog-timestamp"]}
    last = msgs[300]
    assert last[1] == b"\x00\xffbinary"
    assert last[2] == {"pylog-topic": "sensors", "pylog-offset": "300",
                       "pylog-timestamp": "1700000000000",
                       "pylog-key:base64": "/g==", "unit": "C",
                       "raw:base64": "/w==", "gone:null": ""}
    assert check_key_order(msgs) == {i: 1 for i in range(301)}


def test_the_key_can_name_the_topic_and_bad_ones_are_refused(
        tmp_path, mosquitto, subscriber):  # noqa: F811
    with pylog.open(tmp_path / "log") as log:
        t = log.topic("s")
        for key in (b"dev-1", b"dev+2", b"\xff", b"dev-3"):
            t.append(b"v", key=key)
        with log.forwarder("up", "s", sink(mosquitto, topic="gw/{key}/t"),
                           dead_letter_topic="dead") as fw:
            assert fw.flush(30)
            assert fw.stats()["dead_lettered"] == 2
        dead = list(log.topic("dead").read(0))
        assert [r.key for r in dead] == [b"dev+2", b"\xff"]
        assert b"'+'" in dict(dead[0].headers)["pylog.error"]
        assert b"UTF-8" in dict(dead[1].headers)["pylog.error"]
    assert subscriber.wait_for(2, 30)
    assert [m[0] for m in subscriber.messages] == ["gw/dev-1/t", "gw/dev-3/t"]


def test_broker_restarts_lose_nothing_and_keep_the_order(
        tmp_path, mosquitto, subscriber):  # noqa: F811
    """The broker restarts twice while a backlog drains and records keep
    coming: every record arrives; per key, in order; only records in
    flight at a restart may come twice."""
    with pylog.open(tmp_path / "log") as log:
        t = log.topic("s")
        fill(t, 3000)
        with log.forwarder("up", "s", sink(mosquitto), batch_records=200,
                           **FAST) as fw:
            for i in range(2):
                assert wait_until(lambda: fw.stats()["sent_records"] >
                                  500 * (i + 1), 60)
                mosquitto.restart(down_for=0.3)
                fill(t, 500, start=t.end_offset)
            assert fw.flush(60)  # (a restart between two sends costs no retry)
        end = t.end_offset
    assert subscriber.wait_for(end, 60)
    time.sleep(0.3)  # duplicates, if any, arrive too
    counts = check_key_order(subscriber.messages)
    assert set(counts) == set(range(end))
    assert sum(counts.values()) - end <= 2 * 200


def test_a_broker_down_at_start_is_waited_for(tmp_path, mosquitto):  # noqa: F811
    sub = MqttSubscriber(mosquitto.port, "gw/#")
    mosquitto.stop()
    with pylog.open(tmp_path / "log") as log:
        t = log.topic("s")
        fill(t, 50)
        with log.forwarder("up", "s", sink(mosquitto), **FAST) as fw:
            assert wait_until(lambda: fw.stats()["retries"] >= 2, 30)
            assert "cannot connect" in fw.stats()["last_error"]
            assert log.groups()["up"] == {"s": 0}
            mosquitto.start()
            assert fw.flush(30)
    assert sub.wait_for(50, 30)
    sub.close()


def test_mqtts_with_the_brokers_ca(tmp_path):
    need("the mosquitto broker", Mosquitto.available(),
         "apt-get install mosquitto")
    need("the openssl command", bool(shutil.which("openssl")))
    need_module("paho.mqtt.client", "paho-mqtt")
    d = tmp_path / "broker"
    d.mkdir()
    b = Mosquitto(str(d), tls=True).start()
    sub = MqttSubscriber(b.port, "gw/#")
    try:
        trusting = MqttSink("127.0.0.1", b.tls_port, tls={"ca_certs": b.ca})
        trusting.check(timeout=5)
        with pylog.open(tmp_path / "log") as log:
            fill(log.topic("s"), 20)
            with log.forwarder("up", "s", trusting) as fw:
                assert fw.flush(30)
        assert sub.wait_for(20, 30)
        # the system's CAs do not know this broker's certificate
        with pytest.raises(UpstreamError, match="certificate"):
            MqttSink("127.0.0.1", b.tls_port, tls=True).check(timeout=5)
    finally:
        sub.close()
        b.close()


def test_check_tells_whether_the_broker_answers(mosquitto):  # noqa: F811
    s = sink(mosquitto)
    s.check(timeout=5)
    s.close()
    port = mosquitto.port
    mosquitto.stop()
    with pytest.raises(UpstreamError, match=f"mqtt://127.0.0.1:{port}"):
        MqttSink("127.0.0.1", port).check(timeout=2)


@pytest.mark.parametrize("kw, msg", [
    ({"qos": 0}, "qos must be 1 or 2"),
    ({"qos": True}, "qos must be 1 or 2"),
    ({"port": 0}, "port"),
    ({"port": "1883"}, "port"),
    ({"host": ""}, "host"),
    ({"topic": "gw/{device}"}, "unknown field {device}"),
    ({"topic": "gw/#"}, "invalid MQTT topic"),
    ({"password": "x"}, "without a username"),
    ({"username": 5}, "username"),
    ({"tls": "yes"}, "tls must be"),
    ({"tls": {"cafile": "x"}}, "unknown tls option"),
    ({"timeout": 0}, "timeout"),
    ({"max_inflight": 0}, "max_inflight"),
])
def test_bad_mqtt_options_are_refused(mqtt_client, kw, msg):  # noqa: F811
    args = {"host": "127.0.0.1", **kw}
    with pytest.raises(pylog.InvalidConfigError, match=msg):
        MqttSink(**args)


def test_a_missing_client_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "paho.mqtt.client", None)
    with pytest.raises(ImportError, match=r'pip install "pylog\[mqtt\]"'):
        MqttSink("127.0.0.1")
