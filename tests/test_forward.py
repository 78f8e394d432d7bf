"""Forwarders (pylog/forward/_forwarder.py, _forwarders.py, Log.forwarder),
with sinks written here: no network.

- Delivery: every record once, in order per topic; a position is committed
  only after the sink returned; batches by records, bytes and linger;
  flush() cuts the linger short.
- Failures: retries with backoff (all, or only the records a sink names),
  Retry-After, max_retries -> "failed"; refusals go to the dead-letter
  topic (with headers naming the error, topic and offset), a refused
  request is split to find the records it is about, no dead-letter topic
  -> "failed" with everything before the refused record committed.
- Lifecycle: stop() finishes the send in flight and commits, stop(timeout)
  interrupts a sink, Log.close() stops forwarders, bad input raises clear
  errors and writes nothing.
- Bandwidth: a forwarder's cap, and the log-wide cap served by priority.
- Appends never wait for a forwarder, and a waiting forwarder leaves the
  GIL to others.
"""
import threading
import time

import pytest

import pylog
from peers import wait_until
from pylog.forward import (ForwarderError, ForwarderFailedError,
                           RejectedError, RetryableError)

FAST = {"retry_backoff_ms": (1, 5)}


class Sink:
    """Records what it is sent; behaviour per call from hooks."""

    def __init__(self, before=None):
        self.calls = []      # every send: [(topic, offset), ...]
        self.got = []        # confirmed records: (topic, offset, value)
        self.before = before  # before(records, call_no): may raise
        self.closed = False
        self.mu = threading.Lock()

    def send(self, records):
        with self.mu:
            n = len(self.calls)
            self.calls.append([(r.topic, r.offset) for r in records])
        ok = []
        try:
            if self.before is not None:
                self.before(records, n)
            ok = records
        except (RetryableError, RejectedError) as exc:
            # the records the exception does not name are confirmed
            if exc.records is not None:
                named = {(r.topic, r.offset) for r in exc.records}
                ok = [r for r in records if (r.topic, r.offset) not in named]
            raise
        finally:
            with self.mu:
                self.got.extend((r.topic, r.offset, bytes(r.value))
                                for r in ok)

    def close(self):
        self.closed = True

    def offsets(self, topic):
        return [o for t, o, _ in self.got if t == topic]


def fill(t, n, prefix=b"v"):
    first = t.end_offset
    t.append_batch([prefix + b"%d" % (first + i) for i in range(n)],
                   keys=[b"k%d" % (i % 4) for i in range(n)])
    return first


# ---- delivery ------------------------------------------------------------------

def test_every_record_arrives_once_in_order_and_positions_follow(tmp_path):
    with pylog.open(tmp_path) as log:
        a, b = log.topic("a"), log.topic("b")
        fill(a, 1200)
        fill(b, 300)
        sink = Sink()
        fw = log.forwarder("cloud", ["a", "b"], sink, batch_records=250)
        assert fw.stats()["lag"] == {"a": 1200, "b": 300}
        assert fw.stats()["state"] == "created"
        fw.start()
        assert fw.flush(30)
        assert sink.offsets("a") == list(range(1200))
        assert sink.offsets("b") == list(range(300))
        assert all(len(c) <= 250 for c in sink.calls)
        assert log.groups()["cloud"] == {"a": 1200, "b": 300}
        s = fw.stats()
        assert s["state"] == "running" and s["lag"] == {"a": 0, "b": 0}
        assert s["sent_records"] == 1500 and s["batches"] == len(sink.calls)
        assert s["sent_bytes"] == sum(len(v) + 2 for _, _, v in sink.got)
        assert s["retries"] == s["dead_lettered"] == 0
        assert s["last_error"] is None and s["last_success_ms"] > 0
        fill(a, 10)
        assert fw.flush(10) and sink.offsets("a") == list(range(1210))
        fw.stop()
        assert fw.state == "stopped" and sink.closed
        # the group is free again, and a new forwarder resumes at the end
        fill(a, 5)
        sink2 = Sink()
        with log.forwarder("cloud", ["a", "b"], sink2) as fw2:
            assert fw2.flush(10)
        assert sink2.offsets("a") == list(range(1210, 1215))
        assert sink2.offsets("b") == []


def test_a_position_is_committed_only_after_the_sink_returns(tmp_path):
    release = threading.Event()
    entered = threading.Event()

    def before(records, n):
        entered.set()
        assert release.wait(30)

    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        fill(t, 50)
        sink = Sink(before)
        with log.forwarder("fw", "t", sink) as fw:
            assert entered.wait(10)
            time.sleep(0.1)
            assert log.groups()["fw"] == {"t": 0}
            assert fw.stats()["in_flight"] == 50
            assert fw.flush(0.05) is False
            release.set()
            assert fw.flush(10)
            assert log.groups()["fw"] == {"t": 50}


class TwoHalfSink(Sink):
    """A sink with begin(records) -> finish(): begin records the call,
    finish(), once the test lets it, confirms or raises as send would."""

    def __init__(self, before=None, gate=None):
        super().__init__(before)
        self.gate = gate      # an Event finish() waits for, or None
        self.begun = []       # offsets handed to begin, as they came
        self.finished = 0
        self.prepared = []    # the lists prepare got
        self.reused = 0       # begin calls that got a prepared list

    def prepare(self, records):
        self.prepared.append(records)

    def begin(self, records):
        self.begun.append([r.offset for r in records])
        if any(p is records for p in self.prepared):
            self.reused += 1

        def finish():
            if self.gate is not None:
                assert self.gate.wait(30)
            self.finished += 1
            self.send(records)
        return finish


def test_a_sink_in_two_halves_gets_the_next_batch_after_the_commit(tmp_path):
    gate = threading.Event()
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        fill(t, 1000)
        sink = TwoHalfSink(gate=gate)
        with log.forwarder("fw", "t", sink, batch_records=100) as fw:
            assert wait_until(lambda: sink.begun, 10)
            time.sleep(0.1)
            # the next batch was polled while the first is unconfirmed,
            # but neither sent nor committed
            assert sink.begun == [list(range(100))]
            assert fw._consumer.position("t") == 200
            assert log.groups()["fw"] == {"t": 0}
            gate.set()
            assert fw.flush(10)
        assert sink.offsets("t") == list(range(1000))
        assert [b[0] for b in sink.begun] == list(range(0, 1000, 100))
        assert sink.finished == 10 and log.groups()["fw"] == {"t": 1000}
        # the full batches read ahead were prepared, and begun as they were
        assert len(sink.prepared) == sink.reused == 9


def test_a_sink_in_two_halves_retries_before_the_batch_read_ahead(tmp_path):
    def before(records, n):
        if n == 0:
            raise RetryableError("half", records=records[50:])

    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        fill(t, 300)
        sink = TwoHalfSink(before)
        with log.forwarder("fw", "t", sink, batch_records=100,
                           **FAST) as fw:
            assert fw.flush(10)
        # the retry (by send) goes before the batch read ahead
        assert [(c[0][1], len(c)) for c in sink.calls] == [
            (0, 100), (50, 50), (100, 100), (200, 100)]
        assert sink.offsets("t") == list(range(300))


def test_a_stop_drops_the_batch_read_ahead_uncommitted(tmp_path):
    gate = threading.Event()
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        fill(t, 300)
        sink = TwoHalfSink(gate=gate)
        fw = log.forwarder("fw", "t", sink, batch_records=100).start()
        assert wait_until(lambda: sink.begun, 10)
        threading.Timer(0.2, gate.set).start()
        fw.stop()
        assert log.groups()["fw"] == {"t": 100}
        sink2 = Sink()
        with log.forwarder("fw", "t", sink2) as fw2:
            assert fw2.flush(10)
        assert sink2.offsets("t") == list(range(100, 300))


def test_an_error_reading_ahead_fails_after_the_commit(tmp_path):
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        fill(t, 300)
        sink = TwoHalfSink()
        fw = log.forwarder("fw", "t", sink, batch_records=100)
        poll = fw._consumer.poll

        def failing_poll(*a, **kw):
            if kw.get("timeout") == 0:  # the read ahead
                raise RuntimeError("disk gone")
            return poll(*a, **kw)

        fw._consumer.poll = failing_poll
        fw.start()
        assert wait_until(lambda: fw.state == "failed", 10)
        assert isinstance(fw.error, RuntimeError)
        assert log.groups()["fw"] == {"t": 100}  # the batch it followed
        assert sink.offsets("t") == list(range(100))
        fw.stop()


def test_start_latest_forwards_only_new_records(tmp_path):
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        fill(t, 20)
        sink = Sink()
        with log.forwarder("fw", "t", sink, start="latest") as fw:
            fill(t, 3)
            assert fw.flush(10)
        assert sink.offsets("t") == [20, 21, 22]


def test_a_full_batch_is_sent_without_waiting_for_the_linger(tmp_path):
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        sink = Sink()
        with log.forwarder("fw", "t", sink, batch_records=20,
                           linger_ms=600_000):
            for i in range(20):
                t.append(b"%d" % i)
                time.sleep(0.002)
            assert wait_until(lambda: len(sink.got) == 20, 30)
        assert sink.calls == [[("t", i) for i in range(20)]]


def test_batch_bytes_bounds_a_batch(tmp_path):
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        t.append_batch([b"x" * 100] * 100)
        sink = Sink()
        with log.forwarder("fw", "t", sink, batch_bytes=1000) as fw:
            assert fw.flush(10)
        assert [len(c) for c in sink.calls] == [10] * 10


def test_a_partial_batch_goes_after_the_linger(tmp_path):
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        sink = Sink()
        with log.forwarder("fw", "t", sink, batch_records=1000,
                           linger_ms=50):
            t.append_batch([b"a", b"b", b"c"])
            assert wait_until(lambda: len(sink.got) == 3, 30)
        assert sink.calls == [[("t", 0), ("t", 1), ("t", 2)]]


def test_flush_cuts_the_linger_short(tmp_path):
    """With a ten-minute linger, only flush() can make this batch go."""
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        sink = Sink()
        with log.forwarder("fw", "t", sink, batch_records=1000,
                           linger_ms=600_000) as fw:
            fill(t, 5)
            assert fw.flush(30)
        assert sink.offsets("t") == [0, 1, 2, 3, 4]


def test_batch_weights_in_c_match_the_python_reference(tmp_path):
    from pylog._records import Record, weigh_kv
    from pylog.forward._sink import batch_bytes, batch_bytes_py
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        fill(t, 10)
        t.append(b"x" * 5000, key=None, headers=[("h", b"abc"), ("n", None)])
        t.append(b"", key=b"", headers=[("\u00e9", b"")])
        recs = list(t.read(0))
        assert any(type(r.value) is memoryview for r in recs)
        assert batch_bytes(recs) == batch_bytes_py(recs) > 0
        assert weigh_kv(recs) == sum(len(r.value) + len(r.key or b"")
                                     for r in recs)
        made = [Record(0, 0, None, bytearray(b"abc"), [("k", b"12")], "t")]
        assert batch_bytes(made) == batch_bytes_py(made) == 6
        assert batch_bytes([object()] * 0) == 0
        del recs


# ---- retries -------------------------------------------------------------------

def test_retryable_errors_back_off_and_send_again_in_order(tmp_path):
    def before(records, n):
        if n % 2 == 0:
            raise RetryableError("uplink down")

    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        fill(t, 1000)
        sink = Sink(before)
        with log.forwarder("fw", "t", sink, batch_records=100,
                           **FAST) as fw:
            assert fw.flush(30)
            s = fw.stats()
        assert sink.offsets("t") == list(range(1000))
        assert s["retries"] == 10 and s["batches"] == 10
        assert s["last_error"] == "RetryableError: uplink down"
        # a retry sends the same records again
        assert sink.calls[0] == sink.calls[1]


def test_a_retry_sends_only_the_records_the_sink_names(tmp_path):
    def before(records, n):
        if n == 0:
            # the first half is safe upstream, the rest is not
            raise RetryableError("half", records=records[len(records) // 2:])

    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        fill(t, 100)
        sink = Sink(before)
        with log.forwarder("fw", "t", sink, **FAST) as fw:
            assert fw.flush(30)
        assert [(c[0][1], len(c)) for c in sink.calls] == [(0, 100), (50, 50)]
        assert sink.offsets("t") == list(range(100))  # each once
        assert fw.stats()["sent_records"] == 100


def test_retry_after_is_honoured_and_stop_ends_the_wait(tmp_path):
    def before(records, n):
        raise RetryableError("slow down", retry_after=3600)

    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        fill(t, 10)
        sink = Sink(before)
        fw = log.forwarder("fw", "t", sink, **FAST).start()
        assert wait_until(lambda: fw.state == "backoff", 10)
        time.sleep(0.3)
        assert len(sink.calls) == 1  # an hour to wait, not 5 ms
        fw.stop(timeout=5)
        assert fw.state == "stopped"
        assert log.groups()["fw"] == {"t": 0}


def test_max_retries_fails_the_forwarder_and_commits_nothing_unsent(tmp_path):
    def before(records, n):
        raise RetryableError("down for good")

    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        fill(t, 10)
        sink = Sink(before)
        fw = log.forwarder("fw", "t", sink, max_retries=2, **FAST).start()
        with pytest.raises(ForwarderFailedError, match="gave up after 2"):
            fw.flush(30)
        assert fw.state == "failed" and len(sink.calls) == 3
        assert isinstance(fw.error, ForwarderFailedError)
        assert "down for good" in fw.stats()["last_error"]
        assert log.groups()["fw"] == {"t": 0}
        fw.stop()  # releases the group; the state says why it ended
        assert fw.state == "failed"
        with log.forwarder("fw", "t", Sink()) as again:
            assert again.flush(10)


# ---- refusals ------------------------------------------------------------------

def poisoned(records):
    return [r for r in records if bytes(r.value).startswith(b"poison")]


def put_poison(t, n, at):
    vals = [b"poison%d" % i if i in at else b"ok%d" % i for i in range(n)]
    t.append_batch(vals, keys=[b"k"] * n,
                   headers=[{"unit": b"C"}] * n,
                   timestamps=[1_700_000_000_000 + i for i in range(n)])


def test_refused_records_go_to_the_dead_letter_topic(tmp_path):
    def before(records, n):
        bad = poisoned(records)
        if bad:
            raise RejectedError("bad record", records=bad,
                                reasons=[f"no {r.offset}" for r in bad])

    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        put_poison(t, 100, {7, 55})
        sink = Sink(before)
        with log.forwarder("fw", "t", sink, dead_letter_topic="dlq") as fw:
            assert fw.flush(10)
            s = fw.stats()
        assert s["dead_lettered"] == 2 and s["sent_records"] == 98
        assert sink.offsets("t") == [i for i in range(100) if i not in (7, 55)]
        dead = list(log.topic("dlq").read(0))
        assert [bytes(r.value) for r in dead] == [b"poison7", b"poison55"]
        assert [r.key for r in dead] == [b"k", b"k"]
        assert [r.timestamp for r in dead] == [1_700_000_000_007,
                                               1_700_000_000_055]
        assert dict(dead[0].headers) == {
            "unit": b"C", "pylog.error": b"no 7", "pylog.topic": b"t",
            "pylog.offset": b"7"}
        assert log.groups()["fw"] == {"t": 100}


@pytest.mark.parametrize("refusal", ["isolate", "exception"])
def test_a_refused_request_is_split_to_find_its_bad_records(tmp_path,
                                                             refusal):
    """The upstream refuses a whole request for one bad record in it; only
    the bad records are dead-lettered, every other one arrives once."""
    def before(records, n):
        if poisoned(records):
            if refusal == "isolate":
                raise RejectedError("HTTP 400", isolate=True)
            raise ValueError("cannot encode")

    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        bad = {3, 4, 250, 499}
        put_poison(t, 500, bad)
        sink = Sink(before)
        with log.forwarder("fw", "t", sink, dead_letter_topic="dlq") as fw:
            assert fw.flush(30)
        assert sink.offsets("t") == [i for i in range(500) if i not in bad]
        assert [int(dict(r.headers)["pylog.offset"])
                for r in log.topic("dlq").read(0)] == sorted(bad)
        # a binary search, not one send per record
        assert len(sink.calls) < 100


def test_without_a_dead_letter_topic_a_refusal_fails_the_forwarder(tmp_path):
    def before(records, n):
        bad = poisoned(records)
        if bad:
            raise RejectedError("HTTP 403 Forbidden", records=bad)

    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        put_poison(t, 100, {42})
        sink = Sink(before)
        fw = log.forwarder("fw", "t", sink).start()
        with pytest.raises(ForwarderFailedError) as ei:
            fw.flush(10)
        assert "offset 42" in str(ei.value) and "403" in str(ei.value)
        assert fw.state == "failed"
        # what came before the refused record is committed, nothing after
        assert log.groups()["fw"] == {"t": 42}
        assert "dlq" not in log.topics()
        fw.close()
        ok = Sink()
        with log.forwarder("fw", "t", ok) as fw2:
            assert fw2.flush(10)
        assert ok.offsets("t")[0] == 42


def test_gaps_are_counted_and_the_forwarder_goes_on(tmp_path):
    with pylog.open(tmp_path) as log:
        t = log.topic("t", segment_bytes=1024, max_bytes=4096,
                      on_full="drop_oldest")
        sink = Sink()
        fw = log.forwarder("fw", "t", sink)  # registered at offset 0
        for i in range(400):
            t.append(b"%03d" % i + b"x" * 60)
        assert t.start_offset > 0
        with fw:
            assert fw.flush(10)
            s = fw.stats()
        assert s["gaps"] == 1 and s["state"] == "running"
        assert sink.offsets("t") == list(range(t.start_offset, 400))


# ---- lifecycle -----------------------------------------------------------------

def test_stop_finishes_the_send_in_flight_and_commits_it(tmp_path):
    entered = threading.Event()

    def before(records, n):
        entered.set()
        time.sleep(0.3)

    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        fill(t, 30)
        sink = Sink(before)
        fw = log.forwarder("fw", "t", sink).start()
        assert entered.wait(10)
        fw.stop()
        assert sink.offsets("t") == list(range(30))
        assert log.groups()["fw"] == {"t": 30}


def test_stop_with_a_timeout_interrupts_a_stuck_sink(tmp_path):
    class Stuck:
        def __init__(self):
            self.interrupted = threading.Event()
            self.entered = threading.Event()

        def send(self, records):
            self.entered.set()
            self.interrupted.wait(60)
            raise RetryableError("interrupted")

        def interrupt(self):
            self.interrupted.set()

    with pylog.open(tmp_path) as log:
        fill(log.topic("t"), 10)
        sink = Stuck()
        fw = log.forwarder("fw", "t", sink).start()
        assert sink.entered.wait(10)
        fw.stop(timeout=0.1)
        assert sink.interrupted.is_set() and fw.state == "stopped"
        assert log.groups()["fw"] == {"t": 0}


def test_log_close_stops_running_forwarders(tmp_path):
    log = pylog.open(tmp_path)
    t = log.topic("t")
    fill(t, 100)
    sink = Sink()
    fw = log.forwarder("fw", "t", sink, batch_records=10).start()
    idle = log.forwarder("idle", "t", Sink())
    assert wait_until(lambda: len(sink.got) >= 10, 10)
    log.close()
    assert fw.state == "stopped" and idle.state == "created"
    with pylog.open(tmp_path) as log:
        pos = log.groups()["fw"]["t"]
        assert pos == len(sink.got) and pos % 10 == 0


def test_the_log_lists_its_forwarders(tmp_path):
    with pylog.open(tmp_path) as log:
        log.topic("t")
        a = log.forwarder("a", "t", Sink())
        b = log.forwarder("b", "t", Sink(), priority=3)
        fws = log.forwarders
        assert len(fws) == 2 and "a" in fws and fws["b"] is b
        assert set(fws.stats()) == {"a", "b"}
        assert fws.stats()["b"]["priority"] == 3
        with pytest.raises(KeyError):
            fws["c"]
        a.close()
        a.close()  # idempotent
        assert list(fws) == [b]
        with b:
            pass
        assert len(fws) == 0


# ---- bad input -----------------------------------------------------------------

@pytest.mark.parametrize("kw, exc", [
    ({"batch_records": 0}, pylog.InvalidConfigError),
    ({"batch_records": 1.5}, pylog.InvalidConfigError),
    ({"batch_bytes": 0}, pylog.InvalidConfigError),
    ({"linger_ms": -1}, pylog.InvalidConfigError),
    ({"priority": "high"}, pylog.InvalidConfigError),
    ({"max_bytes_per_s": 0}, pylog.InvalidConfigError),
    ({"max_bytes_per_s": float("nan")}, pylog.InvalidConfigError),
    ({"retry_backoff_ms": (0, 10)}, pylog.InvalidConfigError),
    ({"retry_backoff_ms": (100, 10)}, pylog.InvalidConfigError),
    ({"retry_backoff_ms": 100}, pylog.InvalidConfigError),
    ({"max_retries": -1}, pylog.InvalidConfigError),
    ({"dead_letter_topic": "t"}, pylog.InvalidConfigError),
    ({"dead_letter_topic": "bad/name"}, pylog.InvalidTopicName),
    ({"start": "middle"}, pylog.InvalidConfigError),
    ({"batch_size": 10}, TypeError),
])
def test_bad_options_raise_and_write_nothing(tmp_path, kw, exc):
    with pylog.open(tmp_path) as log:
        log.topic("t")
        before = log.groups()
        with pytest.raises(exc):
            log.forwarder("fw", "t", Sink(), **kw)
        assert log.groups() == before and log.topics() == ["t"]
        assert len(log.forwarders) == 0


def test_bad_sinks_topics_and_names_raise_and_write_nothing(tmp_path):
    with pylog.open(tmp_path) as log:
        log.topic("t")
        with pytest.raises(TypeError, match="send"):
            log.forwarder("fw", "t", object())
        with pytest.raises(pylog.TopicNotFoundError, match="nope"):
            log.forwarder("fw", ["t", "nope"], Sink())
        with pytest.raises(pylog.InvalidConfigError):
            log.forwarder("fw", [], Sink())
        with pytest.raises(pylog.InvalidConfigError):
            log.forwarder("fw", ["t", "t"], Sink())
        with pytest.raises(pylog.InvalidConfigError):
            log.forwarder("", "t", Sink())
        assert log.topics() == ["t"] and log.groups() == {}
        c = log.consumer("taken", "t")
        with pytest.raises(pylog.GroupInUseError):
            log.forwarder("taken", "t", Sink())
        c.close()
        fw = log.forwarder("taken", "t", Sink())
        with pytest.raises(pylog.GroupInUseError):
            log.forwarder("taken", "t", Sink())
        with pytest.raises(pylog.GroupInUseError):
            log.consumer("taken", "t")
        assert log.groups() == {"taken": {"t": 0}}
        fw.close()


def test_starting_twice_and_stopping_twice_raise(tmp_path):
    with pylog.open(tmp_path) as log:
        log.topic("t")
        fw = log.forwarder("fw", "t", Sink())
        with pytest.raises(ForwarderError, match="not started"):
            fw.stop()
        with pytest.raises(ForwarderError, match="not started|running"):
            fw.flush(0)
        fw.start()
        with pytest.raises(ForwarderError, match="started already"):
            fw.start()
        fw.stop()
        with pytest.raises(ForwarderError, match="stopped already"):
            fw.stop()
        with pytest.raises(ForwarderError, match="started already"):
            fw.start()
        assert fw.flush(0)  # nothing to forward: true even when stopped
        log.topic("t").append(b"x")
        with pytest.raises(ForwarderError, match="stopped"):
            fw.flush(0)
        closed = log.forwarder("c", "t", Sink())
        closed.close()
        with pytest.raises(ForwarderError, match="closed"):
            closed.start()
    with pytest.raises(pylog.ClosedError):
        log.forwarder("late", "t", Sink())


# ---- bandwidth -----------------------------------------------------------------

class TimedSink(Sink):
    def __init__(self, clock_log, name):
        super().__init__()
        self.clock_log, self.name = clock_log, name

    def send(self, records):
        super().send(records)
        self.clock_log.append((time.monotonic(), self.name,
                               sum(len(r.value) for r in records)))


def test_a_forwarders_cap_bounds_its_rate(tmp_path):
    """Bytes confirmed by time t never exceed rate * t + one second's
    burst + one batch (a load on the machine only makes it slower)."""
    RATE = 40_000
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        t.append_batch([b"x" * 100] * 1200)
        sent = []
        sink = TimedSink(sent, "t")
        t0 = time.monotonic()
        with log.forwarder("fw", "t", sink, batch_records=50,
                           max_bytes_per_s=RATE) as fw:
            assert fw.flush(60)
        total = 0
        for when, _, n in sent:
            total += n
            assert total <= RATE * (when - t0) + RATE + 50 * 100 + 1
        assert total == 120_000


def test_the_log_wide_cap_serves_lower_priority_numbers_first(tmp_path):
    """Alarms (priority 0) and a sensor backlog (priority 10) compete for
    a log-wide cap: the alarms go out first."""
    with pylog.open(tmp_path) as log:
        alarms, sensors = log.topic("alarms"), log.topic("sensors")
        alarms.append_batch([b"a" * 100] * 200)
        sensors.append_batch([b"s" * 100] * 2000)
        log.forwarders.max_bytes_per_s = 50_000
        assert log.forwarders.max_bytes_per_s == 50_000
        sent = []
        fs = log.forwarder("bulk", "sensors", TimedSink(sent, "sensors"),
                           priority=10, batch_records=20)
        fa = log.forwarder("live", "alarms", TimedSink(sent, "alarms"),
                           priority=0, batch_records=20)
        with fs, fa:
            assert fa.flush(60)
            log.forwarders.max_bytes_per_s = None  # lift the cap: drain
            assert fs.flush(60)
        last_alarm = max(i for i, (_, who, _) in enumerate(sent)
                         if who == "alarms")
        sensors_before = sum(1 for _, who, _ in sent[:last_alarm]
                             if who == "sensors")
        # at most the batches that went while the alarms had none waiting
        # (the start, when the bucket is full) or had just taken one
        assert sensors_before <= 3, sent[:last_alarm + 1]
        with pytest.raises(pylog.InvalidConfigError):
            log.forwarders.max_bytes_per_s = -5


# ---- appends and the GIL -------------------------------------------------------

def test_appends_never_wait_for_a_forwarder(tmp_path):
    """A sink stuck in send: appends go on (a thread's join limit only
    catches a hang)."""
    release = threading.Event()

    def before(records, n):
        release.wait(60)

    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        fill(t, 10)
        sink = Sink(before)
        with log.forwarder("fw", "t", sink) as fw:
            assert wait_until(lambda: sink.calls, 10)
            done = threading.Event()

            def append():
                for i in range(20_000):
                    t.append(b"x")
                done.set()

            th = threading.Thread(target=append, daemon=True)
            th.start()
            assert done.wait(60), "appends waited for the forwarder"
            assert fw.stats()["lag"]["t"] == 20_010
            release.set()
            assert fw.flush(60)


def _spin(seconds):
    n, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        n += 1
    return n


def test_a_waiting_forwarder_leaves_the_gil_to_others(tmp_path):
    """Python code in another thread runs at about its own speed while
    forwarders wait: idle in poll, in backoff, and for bandwidth. A wait
    holding the GIL would leave it a small fraction."""
    def before(records, n):
        raise RetryableError("down")

    with pylog.open(tmp_path) as log:
        log.topic("t")
        fill(log.topic("u"), 100)
        base = _spin(0.3)
        idle = log.forwarder("idle", "t", Sink()).start()
        backoff = log.forwarder("backoff", "u", Sink(before),
                                retry_backoff_ms=(5000, 5000)).start()
        log.topic("w").append_batch([b"x" * 1000] * 100)
        capped = log.forwarder("capped", "w", Sink(),
                               max_bytes_per_s=1000).start()
        assert wait_until(lambda: backoff.state == "backoff", 10)
        assert wait_until(lambda: capped.stats()["sent_records"] > 0, 10)
        busy = _spin(0.3)
        for fw in (idle, backoff, capped):
            fw.stop(timeout=5)
        assert busy > 0.3 * base, (busy, base)
