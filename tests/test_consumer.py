"""Consumers: durable group cursors in the LMDB catalog (pylog/_consumer.py,
pylog/_groups.py) and the notifiers that let a poll sleep (csrc/notify.c).

- API semantics: start=, auto_commit, commit() and commit({topic: off}),
  committed/position/seek*/lag, groups()/delete_group, max_bytes, several
  topics served round-robin, gaps (list, callback, DataLossError).
- Threads: several groups in several threads each see every record in
  order; a blocking poll wakes on an append (the latency is printed, not
  asserted); close() wakes only its own poll.
- A hypothesis state machine against a plain-list oracle: positions across
  poll/commit/seek/reopen, with tiny segments and retention
  (retain_until_consumed, max_bytes drop_oldest) deleting under the
  consumers; gaps are reported exactly when a position fell below
  start_offset.
- SIGKILL crash cycles: a child appends, polls and commits; after every
  kill the group resumes at its last committed position and no record the
  group had not committed is gone (the retention variant lives in
  test_retention.py and uses run_crash_cycles below).
"""
import collections
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant,
                                 rule, run_state_machine_as_test)

import pylog
from conftest import Threads, segment_files


def val(i, size=20):
    """A value that names its offset: b"<i>:" padded to size bytes."""
    v = b"%d:" % i
    return v + b"v" * max(0, size - len(v))


def fill(t, n, size=20):
    first = t.end_offset
    for i in range(first, first + n):
        assert t.append(val(i, size)) == i
    return first


def offsets(recs):
    return [r.offset for r in recs]


# ---- basics -----------------------------------------------------------------

def test_poll_reads_in_order_and_commit_survives_reopen(tmp_path):
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        fill(t, 25)
        c = log.consumer("g", "t")
        assert c.position("t") == 0 and c.committed("t") == 0
        got = c.poll(max_records=10)
        assert offsets(got) == list(range(10))
        assert [bytes(r.value) for r in got] == [val(i) for i in range(10)]
        assert all(r.topic == "t" for r in got)
        assert c.position("t") == 10
        assert c.committed("t") == 0  # poll alone commits nothing
        c.commit()
        assert c.committed("t") == 10
        assert offsets(c.poll(max_records=3)) == [10, 11, 12]
    with pylog.open(tmp_path) as log:
        c = log.consumer("g", "t")
        assert c.committed("t") == 10
        assert c.position("t") == 10  # resumes at committed, not at 13
        assert offsets(c.poll(max_records=100)) == list(range(10, 25))
        assert c.poll(timeout=0) == []
        assert log.groups() == {"g": {"t": 10}}


def test_a_new_group_starts_at_earliest_or_latest(tmp_path):
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        fill(t, 5)
        early = log.consumer("early", "t")
        late = log.consumer("late", "t", start="latest")
        assert early.position("t") == 0
        assert late.position("t") == 5
        assert late.poll() == []
        fill(t, 2)
        assert offsets(late.poll()) == [5, 6]
        assert offsets(early.poll()) == list(range(7))
        # registration stores the start, so it is the committed position
        assert log.groups() == {"early": {"t": 0}, "late": {"t": 5}}
        # an existing group ignores start=
        early.close()
        again = log.consumer("early", "t", start="latest")
        assert again.position("t") == 0


def test_a_group_has_one_open_consumer_at_a_time(tmp_path):
    with pylog.open(tmp_path) as log:
        log.topic("t").append(b"x")
        c = log.consumer("g", "t")
        with pytest.raises(pylog.GroupInUseError, match="'g'.*in use"):
            log.consumer("g", "t")
        other = log.consumer("h", "t")  # other groups are free
        c.close()
        again = log.consumer("g", "t")  # a closed consumer frees its group
        del again  # so does one that is dropped
        log.consumer("g", "t").close()
        other.close()


def test_bad_consumer_arguments_are_rejected(tmp_path):
    with pylog.open(tmp_path) as log:
        log.topic("t")
        for kw in ({"start": "middle"}, {"on_gap": "ignore"}):
            with pytest.raises(pylog.InvalidConfigError):
                log.consumer("g", "t", **kw)
        with pytest.raises(pylog.InvalidConfigError):
            log.consumer("g", ["t", "t"])
        with pytest.raises(pylog.InvalidConfigError):
            log.consumer("", "t")
        with pytest.raises(pylog.InvalidTopicName):
            log.consumer("g", "a/b")
        c = log.consumer("g", "t")
        with pytest.raises(ValueError):
            c.poll(max_records=0)
        with pytest.raises(ValueError):
            c.poll(max_bytes=0)
        with pytest.raises(ValueError):
            c.poll(timeout=-1)
        with pytest.raises(pylog.InvalidConfigError):
            c.position("other")
        assert log.groups() == {"g": {"t": 0}}


def test_auto_commit_commits_what_the_previous_poll_returned(tmp_path):
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        fill(t, 10)
        c = log.consumer("g", "t", auto_commit=True)
        assert offsets(c.poll(max_records=4)) == [0, 1, 2, 3]
        assert c.committed("t") == 0  # not before the next poll
        assert offsets(c.poll(max_records=4)) == [4, 5, 6, 7]
        assert c.committed("t") == 4  # what the first poll returned
        assert c.poll(max_records=4, timeout=0) != []
        assert c.committed("t") == 8
        assert c.poll(timeout=0) == []  # commits 10; returns nothing
        assert c.committed("t") == 10
        fill(t, 3)
        assert offsets(c.poll()) == [10, 11, 12]
        c.close()  # close does not commit
    with pylog.open(tmp_path) as log:
        c = log.consumer("g", "t", auto_commit=True)
        assert c.committed("t") == 10
        assert offsets(c.poll()) == [10, 11, 12]  # redelivered


def test_commit_of_given_offsets_is_validated_and_atomic(tmp_path):
    with pylog.open(tmp_path) as log:
        a, b = log.topic("a"), log.topic("b")
        fill(a, 5)
        fill(b, 3)
        c = log.consumer("g", ["a", "b"])
        c.commit({"a": 5, "b": 2})
        assert (c.committed("a"), c.committed("b")) == (5, 2)
        assert (c.position("a"), c.position("b")) == (0, 0)  # unchanged
        for bad in ({"a": 6}, {"a": -1}, {"a": 1, "b": 4}):
            with pytest.raises(pylog.OffsetOutOfRangeError):
                c.commit(bad)
        with pytest.raises(pylog.InvalidConfigError):
            c.commit({"a": 1, "nope": 0})  # not subscribed: nothing stored
        with pytest.raises(TypeError):
            c.commit({"a": "1"})
        assert (c.committed("a"), c.committed("b")) == (5, 2)
        c.commit({"a": 0})  # backwards is allowed (replay)
        assert (c.committed("a"), c.committed("b")) == (0, 2)
        assert log.groups() == {"g": {"a": 0, "b": 2}}


def test_seek_and_friends(tmp_path):
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        for i in range(10):
            t.append(val(i), timestamp=1000 + 10 * i)
        c = log.consumer("g", "t")
        c.seek("t", 7)
        assert c.position("t") == 7
        assert offsets(c.poll()) == [7, 8, 9]
        for bad in (-1, 11):
            with pytest.raises(pylog.OffsetOutOfRangeError):
                c.seek("t", bad)
        assert c.position("t") == 10
        c.seek("t", 10)  # end_offset itself is a position
        c.seek_to_beginning()
        assert c.position("t") == 0
        c.seek_to_end("t")
        assert c.position("t") == 10
        assert c.lag() == {"t": 0}
        c.seek_to_time(1035)
        assert c.position("t") == 4
        assert c.lag() == {"t": 6}
        c.seek_to_time(10**12)  # later than every record: the end
        assert c.position("t") == 10
        with pytest.raises(pylog.InvalidConfigError):
            c.seek("x", 0)
        assert c.committed("t") == 0  # seeking commits nothing


def test_groups_and_delete_group(tmp_path):
    with pylog.open(tmp_path) as log:
        fill(log.topic("a"), 3)
        fill(log.topic("b"), 3)
        c1 = log.consumer("one", ["a", "b"])
        c1.poll()
        c1.commit()
        log.consumer("two", "b", start="latest")
        assert log.groups() == {"one": {"a": 3, "b": 3}, "two": {"b": 3}}
        with pytest.raises(pylog.GroupNotFoundError):
            log.delete_group("three")
        with pytest.raises(KeyError):  # GroupNotFoundError is a KeyError
            log.delete_group("three")
        c1.close()
        log.delete_group("one")
        assert log.groups() == {"two": {"b": 3}}
        with pytest.raises(pylog.GroupNotFoundError):
            log.delete_group("one")
        # a deleted group starts afresh
        again = log.consumer("one", "a")
        assert again.position("a") == 0
    with pylog.open(tmp_path) as log:
        assert log.groups() == {"one": {"a": 0}, "two": {"b": 3}}


def test_a_commit_after_delete_topic_stores_nothing(tmp_path):
    """delete_topic removes the groups' positions in it; a live consumer's
    commit must not store them again (a topic re-created under that name
    would start the group at an offset it does not have)."""
    with pylog.open(tmp_path) as log:
        fill(log.topic("t"), 10)
        c = log.consumer("g", "t")
        c.poll()
        log.delete_topic("t")
        with pytest.raises(pylog.ClosedError):
            c.commit()
        assert log.groups() == {}
        c.close()
        log.topic("t").append(b"new")
        c2 = log.consumer("g", "t")
        assert c2.position("t") == 0
        assert [bytes(r.value) for r in c2.poll()] == [b"new"]


def test_several_topics_are_served_round_robin_in_offset_order(tmp_path):
    with pylog.open(tmp_path) as log:
        names = ["a", "b", "c"]
        for n, name in enumerate(names):
            t = log.topic(name)
            for i in range(100 + 10 * n):
                t.append(b"%s%d" % (name.encode(), i))
        c = log.consumer("g", names)
        seen = {name: [] for name in names}
        first_polls = []
        while True:
            recs = c.poll(max_records=7)
            if not recs:
                break
            assert len(recs) <= 7
            first_polls.append({r.topic for r in recs})
            for r in recs:
                assert bytes(r.value) == b"%s%d" % (r.topic.encode(),
                                                    r.offset)
                seen[r.topic].append(r.offset)
        for n, name in enumerate(names):
            assert seen[name] == list(range(100 + 10 * n)), name
        # no topic waits for another to be drained
        assert set().union(*first_polls[:3]) == set(names)
        assert c.lag() == {"a": 0, "b": 0, "c": 0}


def test_poll_max_bytes_bounds_a_batch(tmp_path):
    rnd = random.Random(5)
    sizes = [rnd.choice([0, 10, 100, 700, 2000]) for _ in range(300)]
    with pylog.open(tmp_path) as log:
        t = log.topic("t", segment_bytes=16 << 10)
        for i, n in enumerate(sizes):
            t.append(val(i, n), key=b"k" * (i % 3))
        c = log.consumer("g", "t")
        got = []
        for limit in [1, 50, 1000, 3000, 10**6] * 20:
            recs = c.poll(max_records=500, max_bytes=limit)
            if not recs:
                break
            sz = [len(r.value) + len(r.key) for r in recs]
            # at least one record; stops once the limit is reached
            assert sum(sz[:-1]) < limit
            got.extend(recs)
        assert offsets(got) == list(range(len(sizes)))
        for r in got:
            assert bytes(r.value) == val(r.offset, sizes[r.offset])


def test_poll_timeout_returns_nothing_when_no_record_comes(tmp_path):
    with pylog.open(tmp_path) as log:
        log.topic("t")
        c = log.consumer("g", "t")
        assert c.poll(timeout=0.05) == []
        assert c.poll(timeout=0) == []


def test_a_closed_consumer_raises_and_log_close_closes_consumers(tmp_path):
    log = pylog.open(tmp_path)
    fill(log.topic("t"), 2)
    c = log.consumer("g", "t")
    c.close()
    c.close()  # idempotent
    with pytest.raises(pylog.ClosedError):
        c.poll()
    with pytest.raises(pylog.ClosedError):
        c.commit()
    d = log.consumer("h", "t")
    log.close()
    with pytest.raises(pylog.ClosedError):
        d.poll()
    with pytest.raises(pylog.ClosedError):
        log.consumer("k", "t")


# ---- gaps -------------------------------------------------------------------

def _gappy_log(path, **consumer_kw):
    """A log whose topic dropped its oldest segments under a consumer that
    read nothing: retention_bytes, not retain_until_consumed."""
    log = pylog.open(path)
    t = log.topic("t", segment_bytes=1024, retention_bytes=3000)
    c = log.consumer("g", "t", **consumer_kw)
    fill(t, 200, size=100)
    assert t.start_offset > 0
    return log, t, c


def test_a_gap_is_reported_and_reading_goes_on_at_start_offset(tmp_path):
    calls = []
    log, t, c = _gappy_log(tmp_path, on_gap=calls.append)
    with log:
        start = t.start_offset
        recs = c.poll(max_records=1000)
        assert recs[0].offset == start
        assert offsets(recs) == list(range(start, 200))
        assert c.gaps == [pylog.Gap("t", 0, start)] == calls
        assert c.position("t") == 200
        # seeking below start_offset reports the gap again, from there
        c.seek("t", 3)
        assert c.lag() == {"t": 200 - start}
        assert c.poll(max_records=1)[0].offset == start
        assert c.gaps[-1] == pylog.Gap("t", 3, start)
        assert len(c.gaps) == 2


def test_on_gap_raise_raises_data_loss_and_stays_put(tmp_path):
    log, t, c = _gappy_log(tmp_path, on_gap="raise")
    with log:
        start = t.start_offset
        for _ in range(2):
            with pytest.raises(pylog.DataLossError) as ei:
                c.poll()
            assert ei.value.gap == pylog.Gap("t", 0, start)
            assert c.position("t") == 0
        c.seek_to_beginning()
        assert c.poll()[0].offset == start
        assert c.gaps == []


def test_on_gap_raise_returns_what_other_topics_gave_first(tmp_path):
    """With several topics, records read from one topic in the same poll
    are returned before the next poll raises for another: raising at once
    would drop them (their position had moved on)."""
    with pylog.open(tmp_path) as log:
        ok = log.topic("ok")
        fill(ok, 30)
        gappy = log.topic("gappy", segment_bytes=1024, retention_bytes=3000)
        c = log.consumer("g", ["ok", "gappy"], on_gap="raise")
        fill(gappy, 200, size=100)
        seen, raised = [], 0
        for _ in range(10):
            try:
                recs = c.poll(max_records=1000)
            except pylog.DataLossError:
                raised += 1
                c.seek("gappy", gappy.start_offset)
                continue
            seen.extend(r.offset for r in recs if r.topic == "ok")
        assert raised == 1
        assert seen == list(range(30))


def test_a_new_group_holds_retention_from_the_moment_it_registers(tmp_path):
    """retain_until_consumed: a group that subscribes lowers the floor at
    once. (Before the fix the floor was refreshed only at the next commit,
    so a roll in between deleted what the new group had not read.)"""
    with pylog.open(tmp_path) as log:
        t = log.topic("t", segment_bytes=1024, retain_until_consumed=True)
        fill(t, 5, size=100)  # within the first segment
        old = log.consumer("old", "t")
        old.seek_to_end()
        old.commit()  # floor 5
        new = log.consumer("new", "t")  # registers at 0
        fill(t, 60, size=100)  # rolls: retention runs
        assert t.start_offset == 0
        assert offsets(new.poll(max_records=1000)) == list(range(65))
        assert new.gaps == []


# ---- threads ----------------------------------------------------------------

def test_several_groups_in_threads_each_see_every_record(tmp_path):
    N, GROUPS = 3000, 4
    with pylog.open(tmp_path) as log:
        t = log.topic("t", segment_bytes=8192)
        consumers = [log.consumer(f"g{i}", "t", auto_commit=i % 2 == 0)
                     for i in range(GROUPS)]
        got = [[] for _ in range(GROUPS)]
        th = Threads()

        def consume(i):
            c = consumers[i]
            while len(got[i]) < N:
                for r in c.poll(max_records=97, timeout=5):
                    assert bytes(r.value) == val(r.offset)
                    got[i].append(r.offset)
            c.commit()

        def produce():
            rnd = random.Random(1)
            i = 0
            while i < N:
                n = min(N - i, rnd.randint(1, 30))
                if n == 1:
                    t.append(val(i))
                else:
                    t.append_batch([val(i + k) for k in range(n)])
                i += n
                if rnd.random() < 0.1:
                    time.sleep(0.001)

        for i in range(GROUPS):
            th.start(consume, i)
        th.start(produce)
        th.join()
        for i in range(GROUPS):
            assert got[i] == list(range(N)), f"group g{i}"
        assert log.groups() == {f"g{i}": {"t": N} for i in range(GROUPS)}


def test_blocking_poll_wakes_on_append_from_another_thread(tmp_path):
    """Prints the median wake latency (pytest -s); asserts only liveness."""
    ROUNDS = 200
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        c = log.consumer("g", "t")
        ready = threading.Semaphore(0)
        woke = []
        th = Threads()

        def consume():
            for _ in range(ROUNDS):
                ready.release()
                recs = c.poll(timeout=10)
                woke.append((time.perf_counter(), len(recs)))

        th.start(consume)
        sent = []
        for i in range(ROUNDS):
            assert ready.acquire(timeout=10)
            time.sleep(0.002)  # let the consumer block
            sent.append(time.perf_counter())
            t.append(val(i))
            while len(woke) <= i:
                time.sleep(0.0002)
        th.join()
        assert [n for _, n in woke] == [1] * ROUNDS  # one record per wake
        lat = [w - s for (w, _), s in zip(woke, sent)]
        med = statistics.median(lat)
        print(f"\nblocking poll wake latency: median {med * 1e6:.0f} us, "
              f"p90 {sorted(lat)[int(0.9 * ROUNDS)] * 1e6:.0f} us, "
              f"max {max(lat) * 1e6:.0f} us over {ROUNDS} wakes")
        assert med < 1.0


def test_closing_a_consumer_wakes_its_own_poll_only(tmp_path):
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        mine = log.consumer("mine", "t")
        other = log.consumer("other", "t")
        res = {}
        th = Threads()

        def poll(name, c):
            res[name] = c.poll(timeout=30)

        a = th.start(poll, "mine", mine)
        b = th.start(poll, "other", other)
        time.sleep(0.2)
        assert a.is_alive() and b.is_alive()
        mine.close()
        a.join(timeout=10)
        assert not a.is_alive(), "close did not wake its own poll"
        assert res["mine"] == []
        time.sleep(0.2)
        assert b.is_alive(), "closing one consumer woke another"
        assert "other" not in res
        t.append(b"x")
        th.join()
        assert offsets(res["other"]) == [0]
        assert offsets(other.poll(timeout=0)) == []
        # the other keeps working
        t.append(b"y")
        assert offsets(other.poll(timeout=5)) == [1]


def test_log_close_wakes_a_blocked_poll_without_an_error(tmp_path):
    log = pylog.open(tmp_path)
    log.topic("t")
    c = log.consumer("g", "t")
    res = {}
    th = Threads()
    th.start(lambda: res.setdefault("r", c.poll(timeout=30)))
    time.sleep(0.2)
    log.close()
    th.join(timeout=10)
    assert res["r"] == []


def test_reconfiguring_a_topic_does_not_break_a_blocked_poll(tmp_path):
    """Log.topic() with new options closes and reopens the topic, which
    wakes a poll blocked on it; the poll must wait for the reopen, not
    raise ClosedError (it did, about one time in five)."""
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        c = log.consumer("g", "t")
        for i in range(20):
            res = {}
            th = Threads()
            th.start(lambda: res.setdefault("r", c.poll(timeout=30)))
            time.sleep(0.02)
            log.topic("t", retention_ms=1000 + i)  # closes and reopens
            t.append(val(i))
            th.join(timeout=10)
            assert offsets(res["r"]) == [i]
        # deleting the topic is for good: the poll raises
        th = Threads()
        th.start(lambda: c.poll(timeout=30))
        time.sleep(0.05)
        log.delete_topic("t")
        with pytest.raises(pylog.ClosedError):
            th.join(timeout=10)


def test_poll_with_no_timeout_waits_for_a_record(tmp_path):
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        c = log.consumer("g", "t")
        res = {}
        th = Threads()
        th.start(lambda: res.setdefault("r", c.poll(timeout=None)))
        time.sleep(0.1)
        assert "r" not in res
        t.append_batch([b"a", b"b"])
        th.join(timeout=10)
        assert offsets(res["r"]) == [0, 1]


# ---- batched polls: min_records ------------------------------------------------

def test_poll_min_records_waits_for_a_whole_batch(tmp_path):
    """Records appended one by one come back as one batch, not one by one
    (the uploader's commit then costs once per batch)."""
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        c = log.consumer("g", "t")
        res = {}
        th = Threads()
        th.start(lambda: res.setdefault(
            "r", c.poll(max_records=20, min_records=20, timeout=60)))
        for i in range(25):
            t.append(val(i))
            time.sleep(0.002)
        th.join()
        assert offsets(res["r"]) == list(range(20))  # max_records bounds it
        assert offsets(c.poll(max_records=20, timeout=0)) == list(range(20, 25))


def test_poll_min_records_returns_what_there_is_at_the_deadline(tmp_path):
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        fill(t, 3)
        c = log.consumer("g", "t")
        assert offsets(c.poll(max_records=100, min_records=50,
                              timeout=0.05)) == [0, 1, 2]
        assert c.poll(max_records=100, min_records=50, timeout=0.02) == []
        fill(t, 2)
        assert offsets(c.poll(max_records=100, min_records=50,
                              timeout=0)) == [3, 4]


def test_poll_max_bytes_ends_a_batched_wait(tmp_path):
    """Reaching max_bytes returns at once, however many records are
    missing to min_records (timeout=None: it would otherwise wait for
    ever; the join's limit only catches a hang)."""
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        c = log.consumer("g", "t")
        res = {}
        th = Threads()
        th.start(lambda: res.setdefault("r", c.poll(
            max_records=1000, min_records=1000, max_bytes=1000,
            timeout=None)))
        for i in range(12):
            t.append(val(i, 100))
            time.sleep(0.002)
        th.join(timeout=60)
        got = res["r"]
        assert 10 <= len(got) <= 12
        assert offsets(got) == list(range(len(got)))
        assert sum(len(r.value) for r in got[:-1]) < 1000


def test_closing_a_consumer_ends_a_batched_wait_with_what_was_read(tmp_path):
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        fill(t, 2)
        c = log.consumer("g", "t")
        res = {}
        th = Threads()
        th.start(lambda: res.setdefault(
            "r", c.poll(max_records=10, min_records=10, timeout=None)))
        time.sleep(0.1)
        assert "r" not in res
        c.close()
        th.join(timeout=10)
        assert offsets(res["r"]) == [0, 1]
        assert log.groups() == {"g": {"t": 0}}  # nothing was committed


def test_auto_commit_with_batched_polls(tmp_path):
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        fill(t, 7)
        c = log.consumer("g", "t", auto_commit=True)
        assert len(c.poll(max_records=5, min_records=5, timeout=1)) == 5
        assert offsets(c.poll(max_records=5, min_records=5,
                              timeout=0.01)) == [5, 6]
        assert c.committed("t") == 5
        assert c.poll(timeout=0) == []
        assert c.committed("t") == 7


@pytest.mark.parametrize("kw, exc", [
    ({"min_records": 0}, ValueError),
    ({"min_records": 11, "max_records": 10}, ValueError),
    ({"min_records": 2.0}, TypeError),
    ({"min_records": True}, TypeError),
])
def test_poll_rejects_bad_min_records(tmp_path, kw, exc):
    with pylog.open(tmp_path) as log:
        fill(log.topic("t"), 3)
        c = log.consumer("g", "t")
        with pytest.raises(exc):
            c.poll(**kw)
        assert c.position("t") == 0


def test_iterating_a_consumer_yields_until_closed(tmp_path):
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        c = log.consumer("g", "t")
        got = []
        th = Threads()

        def run():
            for r in c:
                got.append(r.offset)
                if len(got) == 5:
                    c.close()

        th.start(run)
        for i in range(5):
            t.append(val(i))
            time.sleep(0.01)
        th.join(timeout=10)
        assert got == [0, 1, 2, 3, 4]


# ---- model ------------------------------------------------------------------

SEG = 1024
CAP = 4000  # max_bytes of "capped": a handful of 1 KiB segments
TOPICS = {
    "plain": {"segment_bytes": SEG},
    "held": {"segment_bytes": SEG, "retain_until_consumed": True},
    "capped": {"segment_bytes": SEG, "retain_until_consumed": True,
               "max_bytes": CAP, "on_full": "drop_oldest"},
}
GROUPS = ["g1", "g2"]

topic_names = st.sampled_from(sorted(TOPICS))
group_names = st.sampled_from(GROUPS)
# a batch stays below segment_bytes: a larger one gets a segment of its own
# size, which "capped" (CAP) has no room for
small_values = st.lists(st.binary(max_size=100), min_size=1, max_size=7)


def dir_bytes(d):
    """Bytes of the segment and index files of a topic directory (what
    max_bytes caps; checkpoint and meta are small fixed metadata)."""
    total = 0
    for f in os.listdir(d):
        if not (f.endswith(".log") or f.endswith(".idx")):
            continue
        try:
            total += os.path.getsize(os.path.join(d, f))
        except FileNotFoundError:
            pass  # deleted while we looked
    return total


class ConsumerModel(RuleBasedStateMachine):
    root = None  # set by the test to its tmp_path
    seen = None  # a Counter of what the runs exercised, set by the test

    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(dir=self.root)
        self.log = None
        self.recs = {name: [] for name in TOPICS}   # (ts, key, value)
        self.pos = {g: {} for g in GROUPS}          # the oracle's positions
        self.committed = {g: {} for g in GROUPS}
        self.starts = {}                            # last start seen

    @initialize()
    def start(self):
        self.open()
        for g in GROUPS:
            self.subscribe(g, "earliest")

    def open(self):
        self.log = pylog.open(self.dir)
        self.topics = {name: self.log.topic(name, **cfg)
                       for name, cfg in TOPICS.items()}
        self.consumers = {}
        self.open_start = {n: t.start_offset for n, t in self.topics.items()}

    def subscribe(self, g, start):
        c = self.log.consumer(g, sorted(TOPICS), start=start)
        self.consumers[g] = c
        if not self.committed[g]:  # a new group: registered at start
            for name, t in self.topics.items():
                p = t.start_offset if start == "earliest" else t.end_offset
                self.committed[g][name] = p
        self.pos[g] = dict(self.committed[g])
        for name in TOPICS:
            assert c.position(name) == self.pos[g][name]
            assert c.committed(name) == self.committed[g][name]

    def teardown(self):
        if self.log is not None:
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def floor(self, name):
        return min(self.committed[g][name] for g in GROUPS)

    # ---- rules --------------------------------------------------------------
    @rule(name=topic_names, values=small_values,
          ts=st.integers(1000, 1100), batch=st.booleans())
    def append(self, name, values, ts, batch):
        t = self.topics[name]
        key = b"k%d" % ts if ts % 2 else None
        if batch or len(values) > 1:
            first = t.append_batch(values, keys=[key] * len(values),
                                   timestamps=[ts] * len(values))
        else:
            first = t.append(values[0], key=key, timestamp=ts)
        assert first == len(self.recs[name])
        self.recs[name].extend((ts, key, v) for v in values)

    @rule(name=topic_names, count=st.integers(1, 60),
          size=st.integers(0, 120), ts=st.integers(1000, 1100))
    def append_many(self, name, count, size, ts):
        t = self.topics[name]
        for i in range(count):
            off = len(self.recs[name])
            v = val(off, size)
            assert t.append(v, timestamp=ts + i % 7) == off
            self.recs[name].append((ts + i % 7, None, v))

    @rule(name=st.sampled_from(["plain", "held"]),
          size=st.integers(1024, 2500))
    def append_large(self, name, size):
        """A zero-copy value, larger than a segment: a bigger segment."""
        t = self.topics[name]
        v = bytes([size % 251]) * size
        assert t.append(v, timestamp=1050) == len(self.recs[name])
        self.recs[name].append((1050, None, v))

    @rule(g=group_names, max_records=st.integers(1, 25),
          max_bytes=st.none() | st.integers(1, 2000))
    def poll(self, g, max_records, max_bytes):
        c = self.consumers[g]
        start = {n: t.start_offset for n, t in self.topics.items()}
        end = {n: t.end_offset for n, t in self.topics.items()}
        ngaps = len(c.gaps)
        recs = c.poll(max_records=max_records, max_bytes=max_bytes)
        gaps = c.gaps[ngaps:]
        self.seen["gaps"] += len(gaps)
        self.seen["records polled"] += len(recs)
        assert len(recs) <= max_records
        by = {n: [r for r in recs if r.topic == n] for n in TOPICS}
        gapped = set()
        for gap in gaps:
            n = gap.topic
            assert n not in gapped
            gapped.add(n)
            # a gap is reported exactly when the position fell behind
            assert gap == pylog.Gap(n, self.pos[g][n], start[n])
            assert self.pos[g][n] < start[n]
        for n, rs in by.items():
            if rs and self.pos[g][n] < start[n]:
                assert n in gapped, f"{n}: records after an unreported gap"
            first = start[n] if n in gapped else self.pos[g][n]
            assert offsets(rs) == list(range(first, first + len(rs)))
            for r in rs:
                ts, key, v = self.recs[n][r.offset]
                assert (r.timestamp, r.key, bytes(r.value)) == (ts, key, v)
                if len(v) >= 1024:
                    assert isinstance(r.value, memoryview)
            self.pos[g][n] = first + len(rs)
        sizes = [len(r.value) + len(r.key or b"") for r in recs]
        if max_bytes is not None:
            assert sum(sizes[:-1]) < max_bytes
        if len(recs) < max_records and (max_bytes is None
                                        or sum(sizes) < max_bytes):
            # nothing stopped it early: every topic was drained
            for n in TOPICS:
                assert self.pos[g][n] == end[n], n
        for n in TOPICS:
            assert c.position(n) == self.pos[g][n]

    @rule(g=group_names)
    def commit(self, g):
        self.consumers[g].commit()
        self.committed[g] = dict(self.pos[g])

    @rule(g=group_names, name=topic_names, data=st.data())
    def commit_offset(self, g, name, data):
        end = len(self.recs[name])
        off = data.draw(st.integers(0, end), label="offset")
        self.consumers[g].commit({name: off})
        self.committed[g][name] = off

    @rule(g=group_names, name=topic_names, data=st.data())
    def commit_out_of_range(self, g, name, data):
        end = len(self.recs[name])
        off = data.draw(st.sampled_from([-1, end + 1, end + 100]))
        with pytest.raises(pylog.OffsetOutOfRangeError):
            self.consumers[g].commit({name: off})

    @rule(g=group_names, name=topic_names, data=st.data())
    def seek(self, g, name, data):
        end = len(self.recs[name])
        off = data.draw(st.integers(-2, end + 2), label="offset")
        c = self.consumers[g]
        if 0 <= off <= end:
            c.seek(name, off)
            self.pos[g][name] = off
        else:
            with pytest.raises(pylog.OffsetOutOfRangeError):
                c.seek(name, off)

    @rule(g=group_names, to=st.sampled_from(["beginning", "end"]))
    def seek_to(self, g, to):
        c = self.consumers[g]
        if to == "beginning":
            c.seek_to_beginning()
        else:
            c.seek_to_end()
        for n, t in self.topics.items():
            self.pos[g][n] = (t.start_offset if to == "beginning"
                              else len(self.recs[n]))

    @rule(g=group_names, ms=st.integers(990, 1110))
    def seek_to_time(self, g, ms):
        self.consumers[g].seek_to_time(ms)
        for n, t in self.topics.items():
            recs = self.recs[n]
            self.pos[g][n] = next(
                (o for o in range(t.start_offset, len(recs))
                 if recs[o][0] >= ms), len(recs))

    @rule()
    def reopen(self):
        self.seen["reopens"] += 1
        self.log.close()
        self.open()
        for g in GROUPS:
            self.subscribe(g, "earliest")

    @rule(name=topic_names)
    def apply_retention(self, name):
        self.topics[name].apply_retention()

    @rule(g=group_names, start=st.sampled_from(["earliest", "latest"]))
    def delete_and_recreate_group(self, g, start):
        self.consumers[g].close()
        self.log.delete_group(g)
        assert g not in self.log.groups()
        self.committed[g] = {}
        self.subscribe(g, start)

    # ---- invariants ---------------------------------------------------------
    @invariant()
    def offsets_groups_and_retention(self):
        if self.log is None:
            return
        assert self.log.groups() == {g: self.committed[g] for g in GROUPS}
        for n, t in self.topics.items():
            st_ = t.stats()
            start, end = st_["start_offset"], st_["end_offset"]
            assert end == len(self.recs[n])
            assert start >= self.starts.get(n, 0), "start_offset went back"
            grew = start > self.starts.get(n, 0)
            self.seen[f"{n} deletions"] += grew
            self.seen[f"{n} segments"] = max(self.seen[f"{n} segments"],
                                             st_["segments"])
            self.starts[n] = start
            bases = [int(os.path.basename(p)[:20])
                     for p in segment_files(self.dir, n)]
            assert bases[0] == start
            assert st_["segments"] == len(bases)
            dropped = (st_["retention_dropped_records"]
                       + st_["full_dropped_records"])
            # lifetime counters: kept across reopens
            assert dropped == start
            if n == "plain":
                assert start == 0
            elif n == "held":
                # retention deletes exactly the segments every group passed
                assert st_["full_dropped_records"] == 0
                if grew:
                    assert start <= self.floor(n)
                if len(bases) > 1:
                    assert bases[1] > self.floor(n), "a consumed segment stays"
            else:
                assert st_["bytes_on_disk"] <= CAP
                assert dir_bytes(os.path.join(self.dir, "topics", n)) <= CAP
                if grew and start > self.floor(n):
                    assert st_["full_dropped_records"] > 0
                    self.seen["capped drops above the floor"] += 1
            if end > start:
                off = (start + end) // 2
                ts, key, v = self.recs[n][off]
                r = t.get(off)
                assert (r.timestamp, r.key, bytes(r.value)) == (ts, key, v)


def test_consumer_model(tmp_path):
    ConsumerModel.root = str(tmp_path)
    ConsumerModel.seen = seen = collections.Counter()
    run_state_machine_as_test(
        ConsumerModel,
        settings=settings(max_examples=120, stateful_step_count=80,
                          deadline=None,
                          suppress_health_check=list(HealthCheck)))
    print("\nconsumer model exercised:", dict(seen))
    # the runs reached what the model is about
    for what in ("gaps", "reopens", "held deletions", "capped deletions",
                 "capped drops above the floor"):
        assert seen[what] >= 3, (what, dict(seen))


# ---- SIGKILL crash cycles ---------------------------------------------------

CHILD_SRC = textwrap.dedent('''
    import os, random, sys
    import pylog

    path, config, cycle, seed, side = sys.argv[1:]
    config = eval(config)
    cycle = int(cycle)
    rnd = random.Random(int(seed))
    fd = os.open(side, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def say(line):  # unbuffered: the line is in the file once it returns
        os.write(fd, line.encode() + b"\\n")

    log = pylog.open(path)
    t = log.topic("t", **config)
    c = log.consumer("g", "t")
    say("R %d %d %d" % (c.position("t"), t.start_offset, t.end_offset))
    seq = 0
    while True:
        n = rnd.randint(1, 8)
        vals = [b"%d:%d:" % (cycle, seq + i) + b"x" * rnd.randrange(200)
                for i in range(n)]
        say("I %d %d" % (seq, n))
        off = t.append_batch(vals) if n > 1 else t.append(vals[0])
        say("A %d %d %d" % (off, seq, n))
        seq += n
        recs = c.poll(max_records=rnd.randint(1, 12))
        if c.gaps:
            say("G %r" % (c.gaps,))
        if recs:
            say("P %d %d" % (recs[0].offset, recs[-1].offset + 1))
        if rnd.random() < 0.6:
            pos = c.position("t")
            say("c %d" % pos)
            c.commit()
            say("C %d" % pos)
''')


def parse_side(path):
    """Complete lines of the child's side file, split into fields."""
    with open(path, "rb") as f:
        data = f.read()
    return [line.split() for line in data.split(b"\n")[:-1]]


def run_crash_cycles(tmp_path, config, cycles, seed):
    """Kill a child that appends, polls and commits, `cycles` times, and
    check after each kill what the group and the topic hold. Returns
    totals for the caller to check that the test exercised something."""
    script = tmp_path / "child.py"
    script.write_text(CHILD_SRC)
    path = tmp_path / "log"
    rnd = random.Random(seed)
    model = {}        # offset -> b"cycle:seq:" of the record there
    committed = 0     # what the parent verified after the last kill
    totals = {"commits": 0, "appended": 0, "deleted": 0, "redelivered": 0,
              "pending_commit": 0}
    for cycle in range(cycles):
        side = tmp_path / f"side-{cycle}"
        proc = subprocess.Popen(
            [sys.executable, str(script), str(path), repr(config),
             str(cycle), str(rnd.randrange(1 << 30)), str(side)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 30
            while proc.poll() is None and not (
                    side.exists() and side.read_bytes()[:2] == b"R "):
                assert time.monotonic() < deadline, "child never got ready"
                time.sleep(0.005)
            time.sleep(rnd.uniform(0.02, 0.3))
            died = proc.poll() is not None
            proc.send_signal(signal.SIGKILL)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert not died, f"child exited by itself: {err.decode()[-3000:]}"

        lines = parse_side(side)
        assert lines[0][0] == b"R"
        ready_pos, ready_start, ready_end = map(int, lines[0][1:])
        # the group resumed exactly where the parent found it
        assert ready_pos == committed, f"cycle {cycle}"
        assert ready_end == len(model), f"cycle {cycle}"
        acked_end, inflight = len(model), None
        last_commit, pending = committed, None
        processed = ready_pos
        for f in lines[1:]:
            kind, nums = f[0], [int(x) for x in f[1:]] if f[0] != b"G" else []
            if kind == b"I":
                inflight = tuple(nums)
            elif kind == b"A":
                off, seq, n = nums
                assert (seq, n) == inflight and off == acked_end
                for i in range(n):
                    model[off + i] = b"%d:%d:" % (cycle, seq + i)
                acked_end += n
                inflight = None
                totals["appended"] += n
            elif kind == b"P":
                # every poll went on exactly where the previous one ended
                assert nums[0] == processed, f"cycle {cycle}: {f}"
                processed = nums[1]
            elif kind == b"G":
                raise AssertionError(f"cycle {cycle}: gap in the child {f}")
            elif kind == b"c":
                pending = nums[0]
            elif kind == b"C":
                assert nums[0] == pending
                last_commit, pending = nums[0], None
                totals["commits"] += 1
            else:
                raise AssertionError(f"bad side line {f}")

        with pylog.open(path) as log:  # reopens after every kill
            t = log.topic("t")
            c = log.consumer("g", "t")
            committed = c.committed("t")
            if pending is not None and committed == pending != last_commit:
                totals["pending_commit"] += 1  # the commit made it
            else:
                assert committed == last_commit, (
                    f"cycle {cycle}: committed {committed}, last completed "
                    f"commit {last_commit}, in flight {pending}")
            assert ready_pos <= committed <= processed
            start, end = t.start_offset, t.end_offset
            # nothing the group had not committed was deleted
            assert start <= committed, f"cycle {cycle}"
            if end != acked_end:  # the batch in flight made it, whole
                assert inflight is not None, f"cycle {cycle}: end {end}"
                seq, n = inflight
                assert end == acked_end + n, f"cycle {cycle}: end {end}"
                for i in range(n):
                    model[acked_end + i] = b"%d:%d:" % (cycle, seq + i)
            assert end == len(model)
            # every record from start_offset on is the one appended there
            for r in t.read(start):
                assert bytes(r.value).startswith(model[r.offset]), r.offset
            totals["deleted"] = max(totals["deleted"], start)
            # the group resumes at committed: what the child processed
            # after its last commit comes again, nothing before it does
            assert c.position("t") == committed
            recs = c.poll(max_records=end - committed + 1)
            assert offsets(recs) == list(range(committed, end))
            assert c.gaps == []
            totals["redelivered"] += processed - committed
    return totals


def test_group_resumes_at_its_last_commit_after_sigkill(tmp_path):
    totals = run_crash_cycles(tmp_path, {"segment_bytes": 64 << 10},
                              cycles=12, seed="consumer-crash")
    print("\n12 kill cycles:", totals)
    assert totals["commits"] > 100, totals
    assert totals["appended"] > 1000, totals
