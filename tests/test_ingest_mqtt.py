"""MqttSource (pylog/ingest/_mqtt.py) against a mosquitto broker of the
test's own (tests/peers.py), fed by a paho publisher: the record mapping,
acknowledgements only after the append (and after durability with
ack="durable"), back-pressure of a full topic, oversized messages, broker
restarts and a broker down at start, options."""
import collections
import shutil
import time

import pytest

import pylog
from peers import (Mosquitto, MqttPublisher, mosquitto,  # noqa: F401
                   mqtt_client, need, wait_until)
from pylog.ingest import MqttSource

N = 600


@pytest.fixture
def publisher(mosquitto):  # noqa: F811 - the fixture above
    p = MqttPublisher(mosquitto.port)
    yield p
    p.close()


def source(broker, client_id="gw-test", **kw):
    kw.setdefault("topics", ["sensors/#"])
    return MqttSource("127.0.0.1", broker.port, client_id=client_id, **kw)


def messages(n, start=0, topics=3):
    return [(f"sensors/{i % topics}", b"%d" % i,
             [("unit", "C"), ("seq", str(i))]) for i in range(start,
                                                              start + n)]


def wait_acked(ing, n, timeout=30):
    assert wait_until(lambda: ing.stats()["acked"] >= n, timeout), \
        ing.stats()


def check_topic_order(records):
    """First arrivals per MQTT topic are in publish order; returns the
    count of each payload."""
    counts, last = collections.Counter(), {}
    for r in records:
        seq = int(r.value)
        counts[seq] += 1
        if counts[seq] > 1:
            continue
        t = r.key
        assert seq > last.get(t, -1), (t, seq, last[t])
        last[t] = seq
    return counts


def test_messages_become_records_with_the_topic_and_user_properties(
        tmp_path, mosquitto, publisher):  # noqa: F811
    with pylog.open(tmp_path / "log") as log:
        with log.ingest("sensors", source(mosquitto), key="{mqtt_topic}",
                        batch_records=100, linger_ms=5) as ing:
            assert wait_until(lambda: ing.state == "running", 10)
            publisher.publish(messages(N))
            wait_acked(ing, N)
            st = ing.stats()
        recs = list(log.topic("sensors").read(0))
    assert [r.value for r in recs] == [b"%d" % i for i in range(N)]
    r = recs[4]
    assert r.key == b"sensors/1"
    assert r.headers == (("mqtt.topic", b"sensors/1"), ("unit", b"C"),
                         ("seq", b"4"))
    assert check_topic_order(recs) == {i: 1 for i in range(N)}
    assert (st["received"], st["appended"], st["acked"]) == (N, N, N)
    assert st["rejected"] == st["in_flight"] == st["acks_dropped"] == 0
    assert st["batches"] >= N // 100 and st["connects"] == 1
    assert ing.state == "stopped"


def test_the_key_template_sees_a_client_id_the_publisher_sends(
        tmp_path, mosquitto, publisher):  # noqa: F811
    with pylog.open(tmp_path / "log") as log:
        with log.ingest("s", source(mosquitto),
                        key="{client_id}@{mqtt_topic}") as ing:
            assert wait_until(lambda: ing.state == "running", 10)
            publisher.publish([("sensors/x", b"1", [("client_id", "dev7")]),
                               ("sensors/y", b"2")])
            wait_acked(ing, 2)
        keys = [r.key for r in log.topic("s").read(0)]
    assert keys == [b"dev7@sensors/x", b"@sensors/y"]


def test_each_acknowledgement_follows_the_append_of_its_message(
        tmp_path, mosquitto, publisher):  # noqa: F811
    with pylog.open(tmp_path / "log") as log:
        t = log.topic("sensors")
        ing = log.ingest("sensors", source(mosquitto), batch_records=50)
        real, seen = ing.source._ack, []

        def spy(items):
            have = {r.value for r in t.read(0)}
            seen.extend(m.payload in have for m, _ in items)
            real(items)
        ing.source._ack = spy
        with ing:
            assert wait_until(lambda: ing.state == "running", 10)
            publisher.publish(messages(300))
            wait_acked(ing, 300)
    assert len(seen) == 300 and all(seen)


@pytest.mark.parametrize("sync", ["none", "interval"])
def test_ack_durable_acknowledges_only_what_survives_a_power_cut(
        tmp_path, mosquitto, publisher, sync):  # noqa: F811
    with pylog.open(tmp_path / "log", sync=sync, sync_interval_ms=100) as log:
        t = log.topic("sensors")
        ing = log.ingest("sensors", source(mosquitto), ack="durable",
                         batch_records=50, linger_ms=2)
        real, late = ing.source._ack, []

        def spy(items):
            durable = t.durable_offset
            have = {r.value for r in t.read(0, max_records=durable)}
            late.extend(m.payload for m, _ in items if m.payload not in have)
            real(items)
        ing.source._ack = spy
        with ing:
            assert wait_until(lambda: ing.state == "running", 10)
            publisher.publish(messages(300))
            wait_acked(ing, 300)
    assert late == []


def test_a_full_topic_stops_acknowledgements_and_the_broker_keeps_the_rest(
        tmp_path, mosquitto, publisher):  # noqa: F811
    """While the topic is full nothing is acknowledged: the source holds a
    bounded number of messages and the broker keeps the others; once there
    is room, a new ingest of the same session gets every message, none of
    them twice (those taken but not appended were never acknowledged)."""
    n = 400
    with pylog.open(tmp_path / "log") as log:
        log.topic("sensors", segment_bytes=2048, max_bytes=6000,
                  on_full="reject")
        ing = log.ingest("sensors", source(mosquitto, max_inflight=50),
                         batch_records=20, linger_ms=2).start()
        assert wait_until(lambda: ing.state == "running", 10)
        publisher.publish(messages(n))
        assert wait_until(lambda: ing.state == "full", 10), ing.stats()
        time.sleep(0.5)  # the broker would overrun the window by now
        st = ing.stats()
        assert st["full"] >= 1 and "LogFullError" in st["last_error"]
        assert st["appended"] == st["acked"] < n
        # Receive Maximum asks for 50; mosquitto 2.0 sends more once
        # acknowledgements flowed: the source holds 4 windows and a batch.
        assert 0 < st["in_flight"] <= 4 * 50 + 20, st
        ing.stop()
        log.topic("sensors", max_bytes=0)  # room again
        with log.ingest("sensors", source(mosquitto), batch_records=100) \
                as ing2:
            wait_acked(ing2, n - st["acked"])
        values = [r.value for r in log.topic("sensors").read(0)]
    assert sorted(values, key=int) == [b"%d" % i for i in range(n)]


def test_room_again_resumes_and_messages_left_untaken_come_again(
        tmp_path, mosquitto, publisher):  # noqa: F811
    """With a small window the source may leave messages untaken (when the
    broker sends past the window); once the topic has room it appends what
    it holds, reconnects, and the broker sends the rest: all arrive, in
    order per MQTT topic."""
    n = 400
    with pylog.open(tmp_path / "log") as log:
        t = log.topic("sensors", segment_bytes=2048, max_bytes=6000,
                      on_full="reject")
        ing = log.ingest("sensors", source(mosquitto, max_inflight=5),
                         key="{mqtt_topic}", batch_records=5,
                         linger_ms=1).start()
        assert wait_until(lambda: ing.state == "running", 10)
        publisher.publish(messages(n))
        assert wait_until(lambda: ing.state == "full", 10), ing.stats()
        time.sleep(0.3)
        held = ing.stats()["in_flight"]
        assert held <= 4 * 5 + 5, ing.stats()
        log.topic("sensors", max_bytes=0)
        assert wait_until(lambda: len({r.value for r in t.read(0)}) == n,
                          30), ing.stats()
        st = ing.stats()
        ing.stop()
        counts = check_topic_order(t.read(0))
    assert set(counts) == set(range(n))
    if st["overrun"]:
        assert st["connects"] >= 2


def test_an_oversized_message_is_acknowledged_counted_and_dead_lettered(
        tmp_path, mosquitto, publisher):  # noqa: F811
    with pylog.open(tmp_path / "log") as log:
        log.topic("sensors", max_record_bytes=1000)
        with log.ingest("sensors", source(mosquitto),
                        dead_letter_topic="rejected") as ing:
            assert wait_until(lambda: ing.state == "running", 10)
            publisher.publish([("sensors/a", b"small"),
                               ("sensors/b", b"x" * 5000, [("k", "v")]),
                               ("sensors/a", b"after")])
            wait_acked(ing, 2)
            assert wait_until(lambda: ing.stats()["in_flight"] == 0, 10)
            st = ing.stats()
        # acknowledged: a new ingest of the session gets nothing again
        with log.ingest("sensors", source(mosquitto)) as ing2:
            assert wait_until(lambda: ing2.state == "running", 10)
            time.sleep(0.5)
            assert ing2.stats()["received"] == 0
        assert [r.value for r in log.topic("sensors").read(0)] == [
            b"small", b"after"]
        dead = list(log.topic("rejected").read(0))
    assert (st["rejected"], st["dead_lettered"], st["acked"]) == (1, 1, 2)
    assert "exceeds max_record_bytes=1000" in st["last_error"]
    assert len(dead) == 1 and dead[0].value == b""
    h = dict(dead[0].headers)
    assert b"5033 bytes" in h["pylog.error"]
    assert h["pylog.topic"] == b"sensors" and h["mqtt.topic"] == b"sensors/b"
    assert h["pylog.value_bytes"] == b"5000" and h["k"] == b"v"


def test_a_broker_restart_loses_no_acknowledged_message(
        tmp_path, mosquitto):  # noqa: F811
    pub = MqttPublisher(mosquitto.port, client_id="pub", persistent=True)
    try:
        with pylog.open(tmp_path / "log") as log:
            with log.ingest("sensors", source(mosquitto), key="{mqtt_topic}",
                            batch_records=50, linger_ms=1,
                            ) as ing:
                assert wait_until(lambda: ing.state == "running", 10)
                pub.publish(messages(300))
                mosquitto.restart(down_for=0.3)
                assert wait_until(lambda: ing.state == "connecting"
                                  or ing.stats()["connects"] > 1, 10)
                assert wait_until(lambda: ing.state == "running", 20)
                pub.publish(messages(300, start=300))
                t = log.topic("sensors")
                # acked counts duplicates too: wait for every message
                assert wait_until(lambda: len({r.value for r in t.read(0)})
                                  == 600, 30), ing.stats()
                st = ing.stats()
            counts = check_topic_order(log.topic("sensors").read(0))
    finally:
        pub.close()
    assert set(counts) == set(range(600))
    assert st["connects"] >= 2


def test_a_broker_down_at_start_is_retried_until_it_comes(
        tmp_path, mosquitto, publisher):  # noqa: F811
    mosquitto.stop()
    with pylog.open(tmp_path / "log") as log:
        with log.ingest("s", source(mosquitto,
                                    reconnect_backoff=(0.05, 0.2))) as ing:
            time.sleep(0.3)
            assert ing.state == "connecting"
            assert "cannot connect" in ing.stats()["last_error"]
            mosquitto.start()
            assert wait_until(lambda: ing.state == "running", 20)
            p = MqttPublisher(mosquitto.port)
            p.publish(messages(10))
            p.close()
            wait_acked(ing, 10)


def test_qos_0_needs_no_session_and_appends_what_comes(
        tmp_path, mosquitto, publisher):  # noqa: F811
    with pylog.open(tmp_path / "log") as log:
        with log.ingest("s", MqttSource("127.0.0.1", mosquitto.port,
                                        topics="sensors/+", qos=0)) as ing:
            assert wait_until(lambda: ing.state == "running", 10)
            time.sleep(0.2)  # the SUBACK
            publisher.publish(messages(100))
            wait_acked(ing, 100)
        assert log.topic("s").end_offset == 100


def test_log_close_stops_a_running_ingest_after_acknowledging(
        tmp_path, mosquitto, publisher):  # noqa: F811
    log = pylog.open(tmp_path / "log")
    ing = log.ingest("s", source(mosquitto)).start()
    assert wait_until(lambda: ing.state == "running", 10)
    publisher.publish(messages(50))
    wait_acked(ing, 50)
    log.close()
    assert ing.state == "stopped" and not ing.stats()["connected"]
    with pylog.open(tmp_path / "log") as log:
        assert log.topic("s").end_offset == 50


@pytest.mark.parametrize("kw, match", [
    ({"qos": 2}, "qos=2 is not supported"),
    ({"qos": 3}, "qos must be 0 or 1"),
    ({"client_id": None}, "needs a client_id"),
    ({"topics": None}, "give the MQTT topic filters"),
    ({"topics": []}, "topic filter or a list"),
    ({"topics": ["a/#/b"]}, "invalid MQTT topic filter"),
    ({"topics": ["a+"]}, "invalid MQTT topic filter"),
    ({"topics": ["a", "a"]}, "duplicates"),
    ({"port": 0}, "port must be"),
    ({"max_inflight": 0}, "max_inflight"),
    ({"session_expiry": -1}, "session_expiry"),
    ({"reconnect_backoff": (2, 1)}, "first > longest"),
    ({"password": "x"}, "without a username"),
    ({"tls": "yes"}, "tls must be"),
])
def test_bad_options_raise_invalid_config(mqtt_client, kw, match):  # noqa: F811
    args = {"topics": ["a/#"], "client_id": "c", **kw}
    with pytest.raises(pylog.InvalidConfigError, match=match):
        MqttSource("127.0.0.1", args.pop("port", 1883), **args)


def test_an_mqtt_source_feeds_one_topic_and_one_ingest(tmp_path,
                                                       mqtt_client):  # noqa: F811
    src = MqttSource("127.0.0.1", 1883, topics="a/#", client_id="c")
    with pylog.open(tmp_path / "log") as log:
        with pytest.raises(pylog.InvalidConfigError, match="one topic"):
            log.ingest(["a", "b"], src)
        log.ingest("a", src)
        with pytest.raises(pylog.ingest.IngestError, match="used by"):
            log.ingest("b", src)


def test_mqtts_with_the_brokers_ca(tmp_path, mqtt_client):  # noqa: F811
    need("the mosquitto broker", Mosquitto.available(),
         "apt-get install mosquitto")
    need("openssl", shutil.which("openssl"), "apt-get install openssl")
    d = tmp_path / "broker"
    d.mkdir()
    b = Mosquitto(str(d), tls=True).start()
    try:
        with pylog.open(tmp_path / "log") as log:
            src = MqttSource("127.0.0.1", b.tls_port, topics="sensors/#",
                             client_id="gw-tls", tls={"ca_certs": b.ca})
            assert src.url.startswith("mqtts://")
            with log.ingest("s", src) as ing:
                assert wait_until(lambda: ing.stats()["subscribed"], 10), \
                    ing.stats()
                pub = MqttPublisher(b.port)  # publishes on the plain port
                pub.publish(messages(20))
                pub.close()
                wait_acked(ing, 20)
            assert log.topic("s").end_offset == 20
    finally:
        b.close()


def test_an_append_error_fails_the_ingest_and_acknowledges_nothing_more(
        tmp_path, mosquitto, publisher):  # noqa: F811
    with pylog.open(tmp_path / "log") as log:
        ing = log.ingest("s", source(mosquitto), batch_records=10).start()
        assert wait_until(lambda: ing.stats()["subscribed"], 10)
        publisher.publish(messages(10))
        wait_acked(ing, 10)
        log.delete_topic("s")  # the ingest's topic is closed: appends raise
        publisher.publish(messages(10, start=10))
        assert wait_until(lambda: ing.state == "failed", 10), ing.stats()
        st = ing.stats()
        assert st["acked"] == 10 and "ClosedError" in st["last_error"]
        assert isinstance(ing.error, pylog.ClosedError)
        ing.stop()
        assert ing.state == "failed" and not ing.stats()["connected"]
    with pylog.open(tmp_path / "log") as log:  # the broker kept what failed
        with log.ingest("s", source(mosquitto)) as ing:
            t = log.topic("s")
            assert wait_until(lambda: t.end_offset == 10, 10), ing.stats()
            assert [r.value for r in t.read(0)] == [b"%d" % i
                                                    for i in range(10, 20)]
