"""HttpSource (pylog/ingest/_http.py): POST /topics/NAME appends one record
or NDJSON lines as one batch and answers 200 only after the append; bad
requests get 4xx and append nothing; a full topic answers 503 with
Retry-After. A client posting single records and batches with retries on
503 into a capped topic loses nothing acknowledged and appends nothing
unacknowledged."""
import http.client
import json
import random
import shutil
import ssl
import threading
import time

import pytest

import pylog
from peers import make_tls_files, need
from pylog.ingest import HttpSource, IngestError


def post(port, path, body, ctype="application/octet-stream", conn=None,
         **headers):
    """(status, decoded JSON answer, response headers)."""
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    h = {"Content-Type": ctype} if ctype else {}
    h.update({k.replace("_", "-"): v for k, v in headers.items()})
    c.request("POST", path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    out = (r.status, json.loads(data) if data else None, dict(r.getheaders()))
    if conn is None:
        c.close()
    return out


@pytest.fixture
def log(tmp_path):
    with pylog.open(tmp_path / "log") as lg:
        yield lg


def serve(log, topic="events", **kw):
    opts = {k: kw.pop(k) for k in list(kw) if k in (
        "token", "max_body_bytes", "retry_after", "timeout")}
    return log.ingest(topic, HttpSource(port=0, **opts), **kw).start()


def test_one_raw_record_is_appended_with_key_headers_and_timestamp(log):
    ing = serve(log)
    st, body, _ = post(ing.source.port, "/topics/events", b"\x00\xffraw",
                       X_Pylog_Key="dev-7", X_Pylog_Unit="C",
                       X_Pylog_Timestamp="1700000000000")
    assert st == 200
    assert body == {"topic": "events", "first_offset": 0, "last_offset": 0,
                    "count": 1}
    r = log.topic("events").get(0)
    assert (r.value, r.key, r.timestamp) == (b"\x00\xffraw", b"dev-7",
                                             1700000000000)
    assert r.headers == (("unit", b"C"),)
    ing.stop()
    st = ing.stats()
    assert (st["received"], st["appended"], st["acked"]) == (1, 1, 1)
    assert st["responses"] == {"200": 1} and st["state"] == "stopped"


def test_ndjson_lines_are_one_batch_each_line_a_value(log):
    ing = serve(log)
    lines = [json.dumps({"seq": i}).encode() for i in range(500)]
    body = b"\n".join(lines[:250]) + b"\r\n\n" + b"\n".join(lines[250:]) \
        + b"\n"
    st, ans, _ = post(ing.source.port, "/topics/events", body,
                      "application/x-ndjson; charset=utf-8")
    assert st == 200 and ans["count"] == 500 and ans["last_offset"] == 499
    assert [r.value for r in log.topic("events").read(0)] == lines
    st, ans, _ = post(ing.source.port, "/topics/events", b"[1]",
                      "application/jsonl")
    assert st == 200 and ans["first_offset"] == 500
    assert ing.stats()["batches"] == 2


@pytest.mark.parametrize("body, ctype, status, text", [
    (b'{"a": 1}\n{"b": \n', "application/x-ndjson", 400, "line 2"),
    (b"\n \n", "application/x-ndjson", 400, "no record"),
    (b"\xff\xfe\n", "application/x-ndjson", 400, "line 1 is not UTF-8"),
    (b'1\n"a" "b"\n', "application/x-ndjson", 400, "line 2 holds more"),
    (b'1,2\n[3\n4]\n', "application/x-ndjson", 400, "line 1"),
    ("[1]\n".encode("utf-16"), "application/x-ndjson", 400, "UTF-8"),
    (b"text", "text/plain", 415, "text/plain"),
])
def test_a_malformed_body_gets_4xx_and_appends_nothing(log, body, ctype,
                                                       status, text):
    ing = serve(log)
    post(ing.source.port, "/topics/events", b"before")
    st, ans, _ = post(ing.source.port, "/topics/events", body, ctype)
    assert st == status and text in ans["error"]
    assert log.topic("events").end_offset == 1
    assert ing.stats()["rejected"] >= 1 and ing.stats()["appended"] == 1


def test_refusals_name_what_is_wrong_and_append_nothing(log):
    ing = serve(log, ["events", "alarms"], token="s3cret",
                max_body_bytes=1000, max_record_bytes=100)
    port = ing.source.port
    auth = {"Authorization": "Bearer s3cret"}
    st, ans, hdr = post(port, "/topics/events", b"x")
    assert st == 401 and hdr["WWW-Authenticate"] == "Bearer"
    assert post(port, "/topics/events", b"x",
                Authorization="Bearer wrong")[0] == 401
    st, ans, _ = post(port, "/topics/other", b"x", **auth)
    assert st == 404 and "/topics/events, /topics/alarms" in ans["error"]
    assert post(port, "/", b"x", **auth)[0] == 404
    st, ans, _ = post(port, "/topics/events", b"x" * 1001, **auth)
    assert st == 413 and "max_body_bytes=1000" in ans["error"]
    st, ans, _ = post(port, "/topics/events", b"1\n" + b"2" * 101,
                      "application/x-ndjson", **auth)
    assert st == 413 and "record 2" in ans["error"]
    assert "max_record_bytes=100" in ans["error"]
    st, ans, _ = post(port, "/topics/events", b"x", X_Pylog_Timestamp="soon",
                      **auth)
    assert st == 400 and "X-Pylog-Timestamp" in ans["error"]
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/topics/events")
    r = c.getresponse()
    assert r.status == 405 and r.getheader("Allow") == "POST"
    r.read()
    c.close()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.putrequest("POST", "/topics/events")
    c.putheader("Authorization", "Bearer s3cret")
    c.putheader("Transfer-Encoding", "chunked")
    c.endheaders()
    c.send(b"1\r\nx\r\n0\r\n\r\n")
    assert c.getresponse().status == 411
    c.close()
    assert log.topic("events").end_offset == 0
    assert log.topic("alarms").end_offset == 0
    assert post(port, "/topics/alarms", b"ok", **auth)[0] == 200
    assert log.topic("alarms").end_offset == 1
    assert ing.stats()["appended"] == 1


def test_a_kept_alive_connection_carries_many_requests(log):
    ing = serve(log)
    c = http.client.HTTPConnection("127.0.0.1", ing.source.port, timeout=10)
    for i in range(50):
        st, ans, _ = post(ing.source.port, "/topics/events", b"%d" % i,
                          conn=c)
        assert st == 200 and ans["first_offset"] == i
    c.close()
    assert ing.stats()["requests"] == 50


def test_a_key_template_names_the_client_unless_the_request_gives_one(log):
    ing = serve(log, key="{topic}/{client_id}")
    post(ing.source.port, "/topics/events", b"a")
    post(ing.source.port, "/topics/events", b"b", X_Pylog_Key="own")
    t = log.topic("events")
    assert t.get(0).key == b"events/127.0.0.1"
    assert t.get(1).key == b"own"


def test_a_full_topic_answers_503_with_retry_after(log):
    ing = serve(log, retry_after=7, max_bytes=4096, segment_bytes=1024,
                on_full="reject")
    port, n = ing.source.port, 0
    while True:
        st, ans, hdr = post(port, "/topics/events", b"v" * 200)
        if st != 200:
            break
        n += 1
        assert n < 100, "the topic never filled"
    assert st == 503 and hdr["Retry-After"] == "7"
    assert "full" in ans["error"]
    assert log.topic("events").end_offset == n
    st = ing.stats()
    assert st["appended"] == st["acked"] == n
    assert st["deferred"] == 1 and st["full"] == 1 and st["in_flight"] == 0
    assert ing.state == "full" and "LogFullError" in st["last_error"]


@pytest.mark.parametrize("sync", ["none", "interval"])
def test_ack_durable_answers_once_durable_offset_passed(tmp_path, sync):
    with pylog.open(tmp_path, sync=sync, sync_interval_ms=50) as log:
        ing = serve(log, ack="durable")
        for i in range(5):
            st, ans, _ = post(ing.source.port, "/topics/events", b"x")
            assert st == 200
            assert log.topic("events").durable_offset > ans["last_offset"]


def test_a_port_in_use_fails_start_and_releases_the_source(log):
    a = serve(log)
    b = log.ingest("other", HttpSource(port=a.source.port))
    with pytest.raises(IngestError, match="cannot listen"):
        b.start()
    assert b.state == "stopped"
    b.close()
    assert post(a.source.port, "/topics/events", b"x")[0] == 200


def test_stop_answers_the_request_in_flight_then_closes(log):
    ing = serve(log, on_full="block", max_bytes=4096, segment_bytes=1024,
                full_timeout_ms=500)
    port = ing.source.port
    while post(port, "/topics/events", b"v" * 200)[0] == 200:
        pass
    received = ing.stats()["received"]
    out = []
    th = threading.Thread(target=lambda: out.append(
        post(port, "/topics/events", b"v" * 200)))
    th.start()
    deadline = time.monotonic() + 10
    while ing.stats()["received"] == received:  # the request arrived
        assert time.monotonic() < deadline, ing.stats()
        time.sleep(0.005)
    time.sleep(0.05)  # and waits in the blocked append
    ing.stop()
    th.join(10)
    assert out and out[0][0] == 503
    with pytest.raises(OSError):
        post(port, "/topics/events", b"x")


def test_capped_topic_with_retrying_clients_keeps_exactly_what_was_acked(
        tmp_path):
    """Two clients post single records and NDJSON batches into a capped
    topic (on_full="reject") that a slow consumer drains; each retries on
    503. Every acknowledged record is in the topic once, nothing else is,
    and the ingest counts as appended exactly what it acknowledged."""
    with pylog.open(tmp_path) as log:
        log.topic("events", segment_bytes=4096, max_bytes=16384,
                  on_full="reject", retain_until_consumed=True)
        cons = log.consumer("drain", "events")
        ing = serve(log, retry_after=0)
        port = ing.source.port
        acked, busy, errors = set(), [0], []
        lock = threading.Lock()

        def client(cid, n):
            rnd = random.Random(cid)
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            i = 0
            try:
                while i < n:
                    k = rnd.choice([1, 1, 20, 50])
                    ids = [f"{cid}-{j}" for j in range(i, min(n, i + k))]
                    if len(ids) == 1:
                        body, ctype = ids[0].encode(), None
                    else:
                        body = "\n".join(json.dumps(x) for x in ids).encode()
                        ctype = "application/x-ndjson"
                    st, ans, _ = post(port, "/topics/events", body,
                                      ctype or "application/octet-stream",
                                      conn=c)
                    if st == 503:
                        with lock:
                            busy[0] += 1
                        time.sleep(0.005)
                        continue
                    assert st == 200, ans
                    assert ans["count"] == len(ids)
                    with lock:
                        acked.update(ids)
                    i += len(ids)
            except BaseException as exc:  # noqa: BLE001 - raised below
                errors.append(exc)
            finally:
                c.close()

        got = []
        stop = threading.Event()

        def drain():  # slow: the topic fills, then room comes back
            while not stop.is_set() or cons.lag()["events"]:
                recs = cons.poll(max_records=20, timeout=0.05)
                got.extend(r.value for r in recs)
                cons.commit()
                time.sleep(0.02)

        th = [threading.Thread(target=client, args=(c, 1500))
              for c in ("a", "b")]
        d = threading.Thread(target=drain)
        d.start()
        for t in th:
            t.start()
        for t in th:
            t.join(120)
        stop.set()
        d.join(60)
        assert not errors, errors[0]
        ing.stop()
        st = ing.stats()
        cons.close()
    assert busy[0] > 0, f"the cap never refused a request: {st}"
    values = [v.decode().strip('"') for v in got]
    assert len(values) == len(set(values)), "a record was appended twice"
    assert set(values) == acked
    assert len(acked) == 3000
    assert st["appended"] == st["acked"] == 3000
    assert st["deferred"] >= busy[0] and st["rejected"] == 0


def test_https_with_a_certificate_of_its_own(tmp_path, log):
    need("openssl", shutil.which("openssl"), "apt-get install openssl")
    ca, crt, key = make_tls_files(str(tmp_path))
    ing = log.ingest("events", HttpSource(
        port=0, tls={"certfile": crt, "keyfile": key})).start()
    ctx = ssl.create_default_context(cafile=ca)
    c = http.client.HTTPSConnection("127.0.0.1", ing.source.port,
                                    context=ctx, timeout=10)
    st, ans, _ = post(ing.source.port, "/topics/events", b"secret", conn=c)
    c.close()
    assert st == 200 and log.topic("events").get(0).value == b"secret"
    plain = http.client.HTTPConnection("127.0.0.1", ing.source.port,
                                       timeout=10)
    with pytest.raises(OSError):  # no TLS: the handshake fails, nothing
        post(ing.source.port, "/topics/events", b"x", conn=plain)
    assert log.topic("events").end_offset == 1
    assert ing.source.url.startswith("https://")
