"""Ingest (pylog/ingest/_ingest.py) whatever the source: options, topic
options, lifecycle, stats, Log.close, key templates. The sources have
their own modules (test_ingest_http.py, test_ingest_mqtt.py)."""
import http.client

import pytest

import pylog
from pylog.ingest import HttpSource, IngestError
from pylog.ingest._mapping import KeyTemplate, record_size


def src():
    return HttpSource(port=0)


def post(port, body=b"x", topic="events"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("POST", f"/topics/{topic}", body=body)
    r = c.getresponse()
    r.read()
    c.close()
    return r.status


@pytest.mark.parametrize("kw, exc, match", [
    ({"batch_records": 0}, pylog.InvalidConfigError, "batch_records"),
    ({"batch_records": True}, pylog.InvalidConfigError, "batch_records"),
    ({"linger_ms": -1}, pylog.InvalidConfigError, "linger_ms"),
    ({"ack": "never"}, pylog.InvalidConfigError, "ack must be"),
    ({"dead_letter_topic": "events"}, pylog.InvalidConfigError, "also a"),
    ({"dead_letter_topic": "bad name"}, pylog.InvalidTopicName, "invalid"),
    ({"key": "{nope}"}, pylog.InvalidConfigError, "unknown field"),
    ({"key": 7}, pylog.InvalidConfigError, "key must be"),
    ({"name": ""}, pylog.InvalidConfigError, "name must be"),
    ({"max_byte": 10}, pylog.InvalidConfigError, "neither an ingest option"),
    ({"max_bytes": -1}, pylog.InvalidConfigError, "max_bytes"),
])
def test_bad_options_raise_and_create_no_topic(tmp_path, kw, exc, match):
    with pylog.open(tmp_path) as log:
        with pytest.raises(exc, match=match):
            log.ingest("events", src(), **kw)
        assert log.topics() == []


def test_bad_topics_and_sources_raise(tmp_path):
    with pylog.open(tmp_path) as log:
        with pytest.raises(pylog.InvalidTopicName):
            log.ingest("a b", src())
        with pytest.raises(pylog.InvalidConfigError, match="distinct"):
            log.ingest(["a", "a"], src())
        with pytest.raises(pylog.InvalidConfigError, match="topic name"):
            log.ingest([], src())
        with pytest.raises(TypeError, match="MqttSource or an HttpSource"):
            log.ingest("a", object())
        s = src()
        log.ingest("a", s)
        with pytest.raises(IngestError, match="used by"):
            log.ingest("b", s)


@pytest.mark.parametrize("kw, match", [
    ({"port": -1}, "port"), ({"port": 70000}, "port"), ({"host": ""}, "host"),
    ({"token": "a b"}, "token"), ({"tls": {"keyfile": "k"}}, "certfile"),
    ({"tls": 1}, "tls must be"), ({"max_body_bytes": 0}, "max_body_bytes"),
    ({"retry_after": -1}, "retry_after"), ({"timeout": 0}, "timeout"),
])
def test_bad_http_source_options_raise(kw, match):
    with pytest.raises(pylog.InvalidConfigError, match=match):
        HttpSource(**kw)


def test_topic_options_create_the_topic_with_them(tmp_path):
    with pylog.open(tmp_path) as log:
        log.ingest("events", src(), max_bytes=1 << 20, on_full="block",
                   segment_bytes=1 << 16)
        cfg = log.topic("events").config
        assert cfg["max_bytes"] == 1 << 20 and cfg["on_full"] == "block"


def test_lifecycle_errors_and_context_manager(tmp_path):
    with pylog.open(tmp_path) as log:
        ing = log.ingest("events", src())
        assert ing.state == "created"
        with pytest.raises(IngestError, match="not started"):
            ing.stop()
        with ing:
            assert ing.state == "running"
            with pytest.raises(IngestError, match="started already"):
                ing.start()
            assert post(ing.source.port) == 200
        assert ing.state == "stopped"
        with pytest.raises(IngestError, match="stopped already"):
            ing.stop()
        ing.close()  # idempotent
        with pytest.raises(IngestError, match="started already"):
            ing.start()


def test_stats_hold_the_contract_fields(tmp_path):
    with pylog.open(tmp_path) as log:
        with log.ingest("events", src(), name="web") as ing:
            post(ing.source.port)
            st = ing.stats()
    for k in ("state", "received", "appended", "acked", "rejected",
              "last_error", "in_flight", "dead_lettered", "deferred"):
        assert k in st
    assert st["name"] == "web" and st["topics"] == ["events"]
    assert (st["received"], st["appended"], st["acked"]) == (1, 1, 1)


def test_log_close_stops_running_ingests_first(tmp_path):
    log = pylog.open(tmp_path)
    ing = log.ingest("events", src()).start()
    port = ing.source.port
    assert post(port) == 200
    log.close()
    assert ing.state == "stopped"
    with pytest.raises(OSError):
        post(port)
    with pytest.raises(pylog.ClosedError):
        log.ingest("events", src())


def test_an_ingest_not_started_is_released_by_close(tmp_path):
    with pylog.open(tmp_path) as log:
        ing = log.ingest("events", src())
        ing.close()
        assert ing not in log._ingests


def test_key_templates():
    assert KeyTemplate(None, ("a",)).render({}) is None
    assert KeyTemplate("fixed", ("a",)).render({}) == b"fixed"
    assert KeyTemplate("{a}", ("a", "b")).render({"a": "x/y"}) == b"x/y"
    t = KeyTemplate("{b}-{a}", ("a", "b"))
    assert t.render({"a": b"1", "b": "\u00e9"}) == "\u00e9-1".encode()
    with pytest.raises(pylog.InvalidConfigError, match="unknown field"):
        KeyTemplate("{c}", ("a",))


def test_record_size_counts_key_value_and_the_header_block():
    assert record_size(b"vv", b"k", [("ab", b"xyz"), ("n", None)]) == \
        2 + 1 + (6 + 2 + 3) + (6 + 1)


def test_record_size_matches_what_the_core_refuses(tmp_path):
    h = [("mqtt.topic", b"a/b"), ("unit", b"C")]
    size = record_size(b"v" * 40, b"key", h)
    with pylog.open(tmp_path) as log:
        t = log.topic("t", max_record_bytes=size)
        t.append(b"v" * 40, key=b"key", headers=h)
        with pytest.raises(pylog.RecordTooLargeError):
            t.append(b"v" * 41, key=b"key", headers=h)
