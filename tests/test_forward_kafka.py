"""KafkaSink (pylog/forward/_kafka.py) against librdkafka's mock cluster
(tests/peers.py: KafkaMock), read back with a separate confluent-kafka
consumer: every record, key, header, timestamp and the order per key;
broker outages (rd_kafka_mock_broker_set_down / _up); refusals."""
import collections
import sys

import pytest

import pylog
from peers import kafka_client, kafka_mock  # noqa: F401 - fixtures
from pylog.forward import KafkaSink, UpstreamError


def records(n, topic="s", keys=8, start=0):
    return [dict(value=b"%s-%d" % (topic.encode(), start + i) + b"x" * 90,
                 key=b"dev-%d" % ((start + i) % keys),
                 headers=[("unit", b"C"), ("seq", b"%d" % (start + i)),
                          ("none", None)],
                 timestamp=1_700_000_000_000 + start + i) for i in range(n)]


def append(t, recs):
    t.append_batch([r["value"] for r in recs], keys=[r["key"] for r in recs],
                   headers=[r["headers"] for r in recs],
                   timestamps=[r["timestamp"] for r in recs])


def sink(mock, **kw):
    kw.setdefault("delivery_timeout", 30.0)
    return KafkaSink({"bootstrap.servers": mock.bootstrap}, "up.{topic}",
                     **kw)


def by_value(msgs):
    return collections.Counter(m.value() for m in msgs)


def check_key_order(msgs):
    """Per key, the first arrival of each record follows the offsets."""
    seen, last = set(), {}
    for m in msgs:
        seq = int(dict(m.headers())["seq"])
        if (m.key(), seq) in seen:
            continue
        seen.add((m.key(), seq))
        assert seq > last.get(m.key(), -1), (m.key(), seq, last[m.key()])
        last[m.key()] = seq


def test_records_carry_key_value_headers_and_timestamp(tmp_path,
                                                       kafka_mock):
    want = {"s": records(1500, "s"), "a": records(40, "a", keys=2)}
    with pylog.open(tmp_path) as log:
        for name, recs in want.items():
            append(log.topic(name), recs)
        with log.forwarder("cloud", ["s", "a"], sink(kafka_mock),
                           batch_records=300) as fw:
            assert fw.flush(60)
            assert fw.stats()["sent_records"] == 1540
    got = kafka_mock.consume(["up.s", "up.a"],
                             until=lambda out: len(out) >= 1540)
    assert len(got) == 1540
    for name, recs in want.items():
        msgs = [m for m in got if m.topic() == f"up.{name}"]
        assert {m.value(): (m.key(), m.headers(), m.timestamp()[1])
                for m in msgs} == {
            r["value"]: (r["key"], r["headers"], r["timestamp"])
            for r in recs}
        check_key_order(msgs)


def test_a_broker_blip_is_retried_without_duplicates(tmp_path, kafka_mock):
    """Brokers down for less than delivery_timeout: librdkafka's own
    retries, with the idempotent producer, neither lose nor duplicate."""
    with pylog.open(tmp_path) as log:
        t = log.topic("s")
        append(t, records(500))
        with log.forwarder("cloud", "s", sink(kafka_mock),
                           batch_records=100) as fw:
            assert fw.flush(60)
            kafka_mock.down()
            append(t, records(500, start=500))
            kafka_mock.fail_produce("NOT_ENOUGH_REPLICAS", 3)
            assert not fw.flush(1.0)  # nothing gets through meanwhile
            kafka_mock.up()
            assert fw.flush(60)
            assert fw.stats()["retries"] == 0
    got = kafka_mock.consume(["up.s"], until=lambda out: len(out) >= 1000)
    counts = by_value(got)
    assert len(counts) == 1000 and max(counts.values()) == 1
    check_key_order(got)


def test_an_outage_longer_than_delivery_timeout_backs_off(tmp_path,
                                                          kafka_mock):
    """Past delivery_timeout, what is unconfirmed is purged and sent
    again after a backoff: nothing lost, order per key kept."""
    with pylog.open(tmp_path) as log:
        t = log.topic("s")
        kafka_mock.down()
        append(t, records(600))
        s = sink(kafka_mock, delivery_timeout=0.5)
        with log.forwarder("cloud", "s", s, batch_records=200,
                           retry_backoff_ms=(50, 200)) as fw:
            assert not fw.flush(1.5)
            st = fw.stats()
            assert st["retries"] >= 1 and st["sent_records"] == 0
            assert "not confirmed" in st["last_error"]
            assert log.groups()["cloud"] == {"s": 0}
            kafka_mock.up()
            assert fw.flush(60)
    got = kafka_mock.consume(["up.s"], until=lambda out: len(out) >= 600)
    counts = by_value(got)
    assert len(counts) == 600 and sum(counts.values()) - 600 <= 200
    check_key_order(got)


def test_records_kafka_refuses_go_to_the_dead_letter_topic(tmp_path,
                                                           kafka_mock):
    with pylog.open(tmp_path) as log:
        t = log.topic("s")
        append(t, records(10))
        t.append(b"y" * 20_000, key=b"big")          # over message.max.bytes
        append(t, records(10, start=11))
        s = KafkaSink({"bootstrap.servers": kafka_mock.bootstrap,
                       "message.max.bytes": 10_000}, "up.{topic}")
        with log.forwarder("cloud", "s", s, dead_letter_topic="dead") as fw:
            assert fw.flush(60)
            assert fw.stats()["dead_lettered"] == 1
            # the cluster refuses a produce request: its records are
            # dead-lettered, with the error, and the rest goes on
            kafka_mock.fail_produce("TOPIC_AUTHORIZATION_FAILED")
            append(t, records(5, start=21))
            assert fw.flush(60)
        dead = list(log.topic("dead").read(0))
        assert dead[0].key == b"big" and len(dead[0].value) == 20_000
        h = dict(dead[0].headers)
        assert h["pylog.topic"] == b"s" and h["pylog.offset"] == b"10"
        assert b"too large" in h["pylog.error"].lower()
        later = [r for r in dead[1:]]
        assert later and all(b"uthoriz" in dict(r.headers)["pylog.error"]
                             for r in later)
    got = kafka_mock.consume(["up.s"], until=lambda out: len(out) >= 25
                             - len(later), idle=2)
    values = {m.value() for m in got}
    sent = {r["value"] for r in records(10) + records(15, start=11)}
    dead_values = {bytes(r.value) for r in later}
    assert values | dead_values == sent and not values & dead_values


def test_check_tells_whether_the_cluster_answers(kafka_mock):
    sink(kafka_mock).check(timeout=10)
    bad = KafkaSink({"bootstrap.servers": "127.0.0.1:9"})
    with pytest.raises(UpstreamError, match="cannot reach Kafka"):
        bad.check(timeout=0.5)
    bad.close()


@pytest.mark.parametrize("config, topic, msg", [
    ({"bootstrap.servers": "b", "no.such": 1}, "t",
     "No such configuration property"),
    ({"bootstrap.servers": "b", "linger.ms": "soon"}, "t", "Invalid value"),
    ({"bootstrap.servers": "b", "enable.idempotence": False}, "t",
     "enable.idempotence"),
    ({"bootstrap.servers": "b", "acks": 1}, "t", "acks=all"),
    ({"client.id": "x"}, "t", "bootstrap.servers"),
    ({"bootstrap.servers": "b", 5: 1}, "t", "keys must be str"),
    ({"bootstrap.servers": "b"}, "up.{topc}", "unknown field {topc}"),
    ({"bootstrap.servers": "b"}, "", "non-empty"),
])
def test_bad_kafka_options_are_refused(kafka_client, config, topic,  # noqa: F811
                                        msg):
    with pytest.raises(pylog.InvalidConfigError, match=msg):
        KafkaSink(config, topic)


def test_bad_kafka_arguments(kafka_client):  # noqa: F811
    with pytest.raises(TypeError):
        KafkaSink("bootstrap.servers=b")
    with pytest.raises(pylog.InvalidConfigError):
        KafkaSink({"bootstrap.servers": "b"}, delivery_timeout=0)


def test_a_missing_client_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "confluent_kafka", None)
    with pytest.raises(ImportError, match=r'pip install "pylog\[kafka\]"'):
        KafkaSink({"bootstrap.servers": "b"})


def test_produce_arguments_in_c_match_the_python_reference(tmp_path):
    # pylog._records.kafka_args vs KafkaSink._prepare_py: headers, no key,
    # an empty key, values large enough to be memoryviews of the map
    with pylog.open(tmp_path) as log:
        a, b = log.topic("a"), log.topic("b")
        append(a, records(20, "a"))
        a.append(b"x" * 5000, key=None)
        a.append(b"", key=b"", headers=[])
        append(b, records(5, "b"))
        recs = list(a.read(0)) + list(b.read(0))
        assert any(type(r.value) is memoryview for r in recs)
        s = KafkaSink({"test.mock.num.brokers": 1}, "up.{topic}")
        try:
            got = s._prepare(recs)
            assert got == s._prepare_py(recs)
            assert all(type(args[1]) is bytes for args in got)
            assert {args[0] for args in got} == {"up.a", "up.b"}
        finally:
            s.close()
        del recs, got


def test_a_full_local_queue_drains_and_every_record_goes_once_in_order(
        tmp_path, kafka_mock):  # noqa: F811
    # produce() raises BufferError every few records: the send picks up at
    # the record that raised it
    want = records(300, "s", keys=3)
    with pylog.open(tmp_path) as log:
        append(log.topic("s"), want)
        s = KafkaSink({"bootstrap.servers": kafka_mock.bootstrap,
                       "queue.buffering.max.messages": 7}, "up.{topic}")
        with log.forwarder("cloud", "s", s, batch_records=100) as fw:
            assert fw.flush(60)
            assert fw.stats()["sent_records"] == 300
            assert fw.stats()["retries"] == 0
    got = kafka_mock.consume(["up.s"], until=lambda out: len(out) >= 300)
    assert by_value(got) == collections.Counter(r["value"] for r in want)
    check_key_order(got)
