"""HttpSink (pylog/forward/_http.py) against a local HTTP server
(tests/peers.py: HttpPeer) that answers 2xx, 500, 503, 429 with
Retry-After on a schedule and 400 for poisoned records."""
import sys
import time

import pytest

import pylog
from peers import http_client, http_peer, wait_until  # noqa: F401
from pylog.forward import HttpSink, UpstreamError

FAST = {"retry_backoff_ms": (10, 50)}


def fill(t, n, start=0):
    t.append_batch([b"v%d" % (start + i) for i in range(n)],
                   keys=[b"k%d" % (i % 3) for i in range(n)],
                   headers=[[("seq", b"%d" % (start + i)), ("n", None)]
                            for i in range(n)],
                   timestamps=[1_700_000_000_000 + start + i
                               for i in range(n)])


def test_ndjson_batches_carry_every_field(tmp_path, http_peer):  # noqa: F811
    with pylog.open(tmp_path) as log:
        fill(log.topic("s"), 1000)
        log.topic("a").append(b"\x00\xff" * 600, key=None)  # a memoryview
        sink = HttpSink(http_peer.url + "/ingest", headers={"X-Gw": "7"})
        with log.forwarder("up", ["s", "a"], sink, batch_records=500) as fw:
            assert fw.flush(30)
    assert len(http_peer.requests) >= 3
    assert all(len(body.splitlines()) <= 500
               for _, _, body in http_peer.requests)
    path, headers, _ = http_peer.requests[0]
    assert path == "/ingest" and headers["X-Gw"] == "7"
    assert headers["Content-Type"] == "application/x-ndjson"
    s = [r for r in http_peer.records if r["topic"] == "s"]
    assert [r["offset"] for r in s] == list(range(1000))
    assert s[5] == {"topic": "s", "offset": 5, "timestamp": 1_700_000_000_005,
                    "key": b"k2", "headers": [("seq", b"5"), ("n", None)],
                    "value": b"v5", "path": "/ingest"}
    a = [r for r in http_peer.records if r["topic"] == "a"]
    assert a[0]["value"] == b"\x00\xff" * 600 and a[0]["key"] is None


def test_a_topic_in_the_url_makes_one_request_per_topic(
        tmp_path, http_peer):  # noqa: F811
    with pylog.open(tmp_path) as log:
        fill(log.topic("s"), 10)
        fill(log.topic("a"), 5)
        sink = HttpSink(http_peer.url + "/in/{topic}")
        with log.forwarder("up", ["s", "a"], sink) as fw:
            assert fw.flush(30)
    paths = {r["path"] for r in http_peer.records}
    assert paths == {"/in/s", "/in/a"}
    assert all(r["path"] == "/in/" + r["topic"] for r in http_peer.records)


def test_raw_sends_one_record_per_request(tmp_path, http_peer):  # noqa: F811
    with pylog.open(tmp_path) as log:
        fill(log.topic("s"), 5)
        with log.forwarder("up", "s", HttpSink(http_peer.url, "raw")) as fw:
            assert fw.flush(30)
    assert len(http_peer.requests) == 5
    _, headers, body = http_peer.requests[2]
    assert body == b"v2" and headers["Content-Type"] == \
        "application/octet-stream"
    assert http_peer.records[2]["headers"] == [("seq", b"2"), ("n", None)]
    assert [r["offset"] for r in http_peer.records] == [0, 1, 2, 3, 4]


def test_5xx_and_429_are_retried_honouring_retry_after(
        tmp_path, http_peer):  # noqa: F811
    http_peer.schedule.extend([500, 503, (429, {"Retry-After": "1"}), 408,
                               204])  # any 2xx confirms
    with pylog.open(tmp_path) as log:
        fill(log.topic("s"), 100)
        with log.forwarder("up", "s", HttpSink(http_peer.url),
                           **FAST) as fw:
            assert fw.flush(30)
            s = fw.stats()
    assert s["retries"] == 4 and "HTTP 408" in s["last_error"]
    assert http_peer.answers == {500: 1, 503: 1, 429: 1, 408: 1, 204: 1}
    assert [r["offset"] for r in http_peer.records] == list(range(100))


def test_retry_after_holds_the_next_request_back(tmp_path,
                                                 http_peer):  # noqa: F811
    http_peer.schedule.append((429, {"Retry-After": "3600"}))
    with pylog.open(tmp_path) as log:
        fill(log.topic("s"), 3)
        with log.forwarder("up", "s", HttpSink(http_peer.url),
                           **FAST) as fw:
            assert wait_until(lambda: fw.state == "backoff", 10)
            time.sleep(0.3)
            assert len(http_peer.requests) == 1  # an hour, not 50 ms
            assert "HTTP 429" in fw.stats()["last_error"]
            fw.stop(timeout=5)


def test_poisoned_records_alone_go_to_the_dead_letter_topic(
        tmp_path, http_peer):  # noqa: F811
    """A 400 refuses the whole request: the forwarder sends smaller ones
    until only the poisoned records are left, and dead-letters them."""
    http_peer.poison = lambda r: r["value"].startswith(b"poison")
    bad = {17, 18, 300, 999}
    with pylog.open(tmp_path) as log:
        t = log.topic("s")
        t.append_batch([b"poison" if i in bad else b"v%d" % i
                        for i in range(1000)])
        with log.forwarder("up", "s", HttpSink(http_peer.url),
                           dead_letter_topic="dead") as fw:
            assert fw.flush(30)
            assert fw.stats()["dead_lettered"] == 4
        dead = list(log.topic("dead").read(0))
        assert [int(dict(r.headers)["pylog.offset"]) for r in dead] == \
            sorted(bad)
        assert b"HTTP 400" in dict(dead[0].headers)["pylog.error"]
    assert [r["offset"] for r in http_peer.records] == [
        i for i in range(1000) if i not in bad]
    assert len(http_peer.requests) < 100


def test_a_refusing_endpoint_fails_the_forwarder_without_a_dead_letter_topic(
        tmp_path, http_peer):  # noqa: F811
    http_peer.schedule.extend([404] * 3)
    with pylog.open(tmp_path) as log:
        fill(log.topic("s"), 10)
        fw = log.forwarder("up", "s", HttpSink(http_peer.url + "/nope"))
        fw.start()
        with pytest.raises(pylog.forward.ForwarderFailedError,
                           match="HTTP 404"):
            fw.flush(30)
        assert log.groups()["up"] == {"s": 0}
        fw.stop()


def test_a_server_that_goes_away_is_waited_for(tmp_path,
                                               http_peer):  # noqa: F811
    with pylog.open(tmp_path) as log:
        t = log.topic("s")
        fill(t, 10)
        with log.forwarder("up", "s", HttpSink(http_peer.url, timeout=2),
                           **FAST) as fw:
            assert fw.flush(30)
            http_peer.down()
            fill(t, 10, start=10)
            assert wait_until(lambda: fw.stats()["retries"] >= 2, 30)
            assert "refused" in fw.stats()["last_error"].lower()
            assert fw.state in ("backoff", "running")
            http_peer.up()
            assert fw.flush(30)
    assert [r["offset"] for r in http_peer.records] == list(range(20))


def test_check_tells_whether_the_server_answers(http_peer):  # noqa: F811
    HttpSink(http_peer.url + "/x").check(timeout=5)  # a 405 is an answer
    http_peer.down()
    with pytest.raises(UpstreamError, match="cannot reach"):
        HttpSink(http_peer.url).check(timeout=2)


@pytest.mark.parametrize("args, kw, msg", [
    (("ftp://host/x",), {}, "http:// or https://"),
    (("http:///x",), {}, "with a host"),
    (("http://h:99999/x",), {}, "Port out of range"),
    (("http://h/{device}",), {}, "unknown field"),
    ((b"http://h",), {}, "must be a str"),
    (("http://h",), {"format": "xml"}, "format"),
    (("http://h",), {"headers": {"X": 1}}, "headers"),
    (("http://h",), {"headers": {"X": "a\r\nB: c"}}, "headers"),
    (("http://h",), {"timeout": 0}, "timeout"),
    (("http://h",), {"tls": {"verify": False}}, "unknown tls option"),
    (("http://h",), {"tls": True}, "tls must be"),
])
def test_bad_http_options_are_refused(http_client, args, kw,  # noqa: F811
                                      msg):
    with pytest.raises(pylog.InvalidConfigError, match=msg):
        HttpSink(*args, **kw)


def test_a_missing_client_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "urllib3", None)
    with pytest.raises(ImportError, match=r'pip install "pylog\[http\]"'):
        HttpSink("http://h")
