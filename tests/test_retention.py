"""Bounded disk (csrc/retention.c): retention_ms, retention_bytes,
retain_until_consumed, and the max_bytes cap with on_full drop_oldest /
reject / block; topic.stats() counters; zero-copy views and concurrent
readers of deleted segments; SIGKILL while commits delete segments.

The cap is checked two ways at every sample: the core's own count
(stats()["bytes_on_disk"]) and the sizes of the files in the topic's
directory, sampled after every append and, at the same time, from a
second thread.
"""
import gc
import os
import random
import threading
import time

import pytest

import pylog
from conftest import Threads, now_ms, segment_base, segment_files, topic_dir
from test_consumer import dir_bytes, fill, offsets, run_crash_cycles, val

SEG = 4096
# the smallest cap validate_config accepts is two segments with their
# largest indexes (2 * 4224 for SEG); four leave room for retention to act
MAX = 4 * 4224


def bases(path, name="t"):
    return [segment_base(p) for p in segment_files(path, name)]


class DiskSampler:
    """Samples a topic's disk use (core count and directory sum) in a
    background thread until stopped; also samples on demand."""

    def __init__(self, t, path, limit):
        self.t, self.dir, self.limit = t, path, limit
        self.samples = 0
        self.worst = 0
        self._stop = threading.Event()
        self.th = Threads()

    def sample(self, exact=False):
        """exact: no append runs concurrently, so the core's count must
        be the files' sizes."""
        core = self.t.stats()["bytes_on_disk"]
        files = dir_bytes(self.dir)
        if exact:
            assert core == files
        self.worst = max(self.worst, core, files)
        self.samples += 1
        assert core <= self.limit, f"stats: {core} bytes > {self.limit}"
        assert files <= self.limit, f"files: {files} bytes > {self.limit}"

    def _run(self):
        while not self._stop.is_set():
            self.sample()

    def __enter__(self):
        self.th.start(self._run)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.th.join()


def record(i, rnd):
    return val(i, rnd.randrange(50, 400))


# ---- the max_bytes cap ------------------------------------------------------

def test_drop_oldest_keeps_disk_under_max_bytes_and_counts_drops(tmp_path):
    rnd = random.Random(1)
    with pylog.open(tmp_path) as log:
        # retain_until_consumed with a group that never commits: only the
        # cap (drop_oldest) may delete, and it must
        t = log.topic("t", segment_bytes=SEG, max_bytes=MAX,
                      on_full="drop_oldest", retain_until_consumed=True)
        c = log.consumer("slow", "t")
        written = i = 0
        with DiskSampler(t, topic_dir(tmp_path, "t"), MAX) as ds:
            while written < 20 * MAX:
                v = record(i, rnd)
                assert t.append(v) == i  # never raises
                written += len(v)
                i += 1
                ds.sample(exact=True)
        assert ds.samples > i
        st = t.stats()
        start = st["start_offset"]
        assert start > 0
        assert st["full_dropped_records"] == start
        assert st["retention_dropped_records"] == 0
        assert st["rejected_records"] == 0
        assert st["appended_records"] == i
        recs = c.poll(max_records=10**6)
        assert c.gaps == [pylog.Gap("t", 0, start)]
        assert offsets(recs) == list(range(start, i))
        rnd = random.Random(1)
        expect = [record(k, rnd) for k in range(i)]
        assert [bytes(r.value) for r in recs] == expect[start:]
        assert bases(tmp_path)[0] == start


def test_reject_raises_writes_nothing_until_a_commit_makes_room(tmp_path):
    rnd = random.Random(2)
    with pylog.open(tmp_path) as log:
        t = log.topic("t", segment_bytes=SEG, max_bytes=MAX,
                      on_full="reject", retain_until_consumed=True)
        c = log.consumer("g", "t")
        expect, consumed, rejected = [], [], 0
        written = 0
        with DiskSampler(t, topic_dir(tmp_path, "t"), MAX) as ds:
            while written < 20 * MAX:
                v = record(len(expect), rnd)
                end = t.end_offset
                try:
                    off = t.append(v)
                except pylog.LogFullError as exc:
                    rejected += 1
                    assert "full" in str(exc)
                    assert t.end_offset == end  # wrote nothing
                    assert t.stats()["rejected_records"] == rejected
                    ds.sample()
                    with pytest.raises(pylog.LogFullError):
                        t.append_batch([v, v])  # still full
                    rejected += 2
                    assert t.end_offset == end
                    # consume half, commit: that much room appears
                    half = max(1, (end - c.position("t")) // 2)
                    recs = c.poll(max_records=half)
                    consumed.extend(recs)
                    c.commit()
                    continue
                assert off == len(expect)
                expect.append(v)
                written += len(v)
                ds.sample(exact=True)
        assert rejected >= 10
        assert t.stats()["rejected_records"] == rejected
        assert t.stats()["full_dropped_records"] == 0
        consumed.extend(c.poll(max_records=10**6))
        assert c.gaps == []
        assert offsets(consumed) == list(range(len(expect)))
        assert [bytes(r.value) for r in consumed] == expect


def test_block_waits_for_a_consumer_in_another_thread(tmp_path):
    """A producer thread appends 20 * max_bytes; a consumer commits only
    once the producer has stalled (end_offset stopped moving): every
    append must wait for a commit, and none fails or is lost."""
    rnd = random.Random(3)
    vals = []
    while sum(map(len, vals)) < 20 * MAX:
        vals.append(record(len(vals), rnd))
    with pylog.open(tmp_path) as log:
        t = log.topic("t", segment_bytes=SEG, max_bytes=MAX, on_full="block",
                      full_timeout_ms=60_000, retain_until_consumed=True)
        c = log.consumer("g", "t")
        th = Threads()
        got, done = [], threading.Event()

        def produce():
            for i, v in enumerate(vals):
                assert t.append(v) == i
                ds.sample()
            done.set()

        with DiskSampler(t, topic_dir(tmp_path, "t"), MAX) as ds:
            th.start(produce)
            stalls = 0
            while len(got) < len(vals):
                end = t.end_offset
                time.sleep(0.02)
                if t.end_offset == end or done.is_set():
                    stalls += not done.is_set()
                    got.extend(c.poll(max_records=10**6, timeout=1))
                    c.commit()
                    ds.sample()
            th.join()
        assert stalls > 0
        assert offsets(got) == list(range(len(vals)))
        assert [bytes(r.value) for r in got] == vals
        assert t.stats()["rejected_records"] == 0
        assert t.stats()["full_dropped_records"] == 0


def test_block_without_a_commit_times_out_with_log_full(tmp_path):
    with pylog.open(tmp_path) as log:
        t = log.topic("t", segment_bytes=SEG, max_bytes=MAX, on_full="block",
                      full_timeout_ms=200, retain_until_consumed=True)
        log.consumer("g", "t")
        with pytest.raises(pylog.LogFullError):
            for _ in range(10**5):
                t.append(b"x" * 200)
        end = t.end_offset
        with pytest.raises(pylog.LogFullError) as ei:
            t.append_batch([b"y" * 300] * 20)
        assert "timed out" in str(ei.value)
        assert t.end_offset == end
        assert t.stats()["rejected_records"] == 21


def test_a_blocked_append_resumes_after_a_commit_and_loses_nothing(tmp_path):
    """One append waits for room (it needs a new segment) while another,
    which fits in the active segment, goes through. When a commit makes
    room the first completes, and both records are intact. (Before the fix
    the woken append sealed the active segment at the length it saw before
    waiting, cutting the second record off: CorruptionError on read.)"""
    with pylog.open(tmp_path) as log:
        t = log.topic("t", segment_bytes=SEG, max_bytes=3 * 4224,
                      on_full="block", full_timeout_ms=60_000,
                      retain_until_consumed=True)
        c = log.consumer("g", "t")
        while t.stats()["segments"] < 3:
            t.append(b"a" * 200)
        first_seg_end = bases(tmp_path)[1]
        res, th = {}, Threads()
        blocked = th.start(
            lambda: res.setdefault("big", t.append(b"B" * 3900)))
        time.sleep(0.3)
        assert blocked.is_alive(), "the big append did not wait for room"
        small = t.append(b"small")  # fits in the active segment
        c.commit({"t": first_seg_end})  # frees the first segment
        th.join(timeout=30)
        big = res["big"]
        assert big == small + 1
        assert bytes(t.get(small).value) == b"small"
        assert bytes(t.get(big).value) == b"B" * 3900
        assert t.start_offset == first_seg_end
        assert offsets(t.read()) == list(range(first_seg_end, big + 1))
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        assert bytes(t.get(small).value) == b"small"
        assert bytes(t.get(big).value) == b"B" * 3900


def test_block_with_several_producers_keeps_every_record(tmp_path):
    """Several threads append while the topic is full: each blocked append
    resumes after commits with the active segment others moved on."""
    N, W = 400, 4
    with pylog.open(tmp_path) as log:
        t = log.topic("t", segment_bytes=SEG, max_bytes=MAX, on_full="block",
                      full_timeout_ms=60_000, retain_until_consumed=True)
        c = log.consumer("g", "t")
        th = Threads()
        acked = []

        def produce(w):
            rnd = random.Random(w)
            for i in range(N):
                v = b"%d:%d:" % (w, i) + b"p" * rnd.randrange(20, 300)
                acked.append((t.append(v), v))
                ds.sample()

        ds = DiskSampler(t, topic_dir(tmp_path, "t"), MAX)
        for w in range(W):
            th.start(produce, w)
        got = []
        with ds:
            while len(got) < N * W:
                recs = c.poll(max_records=50, timeout=5)
                assert recs, "producers hang"
                got.extend(recs)
                c.commit()
        th.join()
        assert offsets(got) == list(range(N * W))
        assert {o: v for o, v in acked} == {r.offset: bytes(r.value)
                                            for r in got}


# ---- retention --------------------------------------------------------------

def test_retention_ms_deletes_at_roll_segments_whose_newest_is_older(
        tmp_path):
    old = now_ms() - 3_600_000  # an hour ago
    with pylog.open(tmp_path) as log:
        t = log.topic("t", segment_bytes=1024, retention_ms=60_000)
        for i in range(40):
            t.append(val(i, 100), timestamp=old + i)
        # every roll deleted the (old) sealed segments: the active one,
        # holding old records too, is all that is left
        b = bases(tmp_path)
        assert len(b) == 1 and t.start_offset == b[0] > 0
        mixed = b[0]
        st = t.stats()
        assert st["retention_dropped_records"] == mixed
        assert st["full_dropped_records"] == 0
        # one new (small: it fits) record in it: its newest record is
        # new, it stays
        t.append(val(40, 5))
        assert bases(tmp_path) == [mixed]
        for i in range(41, 100):
            t.append(val(i, 100))
        assert len(bases(tmp_path)) > 3
        assert t.start_offset == mixed
        assert t.apply_retention() == 0
        assert [bytes(r.value) for r in t.read()] == [
            val(i, 5 if i == 40 else 100) for i in range(mixed, 100)]
        # records with timestamps in the future are not "old"
        t.append(val(100, 100), timestamp=now_ms() + 3_600_000)
        appended = now_ms()
    while now_ms() <= appended + 2:  # the others are older than 1 ms now
        time.sleep(0.005)
    # at open, under a config that now finds more to delete
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        assert t.start_offset == mixed
        t = log.topic("t", retention_ms=1)
        assert t.start_offset == bases(tmp_path)[-1]  # only the active one
        assert t.start_offset > mixed


def test_apply_retention_deletes_what_has_aged_since_the_roll(tmp_path):
    RET = 60_000
    t0 = now_ms()
    stamp = t0 - RET + 1500  # old in 1.5 s
    with pylog.open(tmp_path) as log:
        t = log.topic("t", segment_bytes=1024, retention_ms=RET)
        for i in range(40):
            t.append(val(i, 100), timestamp=stamp)
        t.append(val(40, 100), timestamp=t0 + RET)  # the active one: new
        if now_ms() < stamp + RET:  # (unless this machine is very slow)
            assert t.start_offset == 0
            assert t.apply_retention() == 0
        while now_ms() <= stamp + RET:
            time.sleep(0.05)
        n = len(bases(tmp_path)) - 1
        assert n > 2
        assert t.apply_retention() == n
        assert t.start_offset == bases(tmp_path)[-1] > 0
        assert len(bases(tmp_path)) == 1
        assert t.stats()["retention_dropped_records"] == t.start_offset


def test_retention_bytes_keeps_the_newest_segments_under_the_limit(tmp_path):
    LIMIT = 6000
    with pylog.open(tmp_path) as log:
        t = log.topic("t", segment_bytes=1024, retention_bytes=LIMIT)
        for i in range(400):
            t.append(val(i, 100))
            if len(bases(tmp_path)) > 1:
                assert t.stats()["bytes_on_disk"] <= LIMIT
        st = t.stats()
        start = st["start_offset"]
        assert start > 0
        assert st["retention_dropped_records"] == start
        files = segment_files(tmp_path, "t")
        total = dir_bytes(topic_dir(tmp_path, "t"))
        assert total <= LIMIT
        # and no more was deleted than needed: one more segment (1 KiB
        # and its index) would not have fit
        assert total > LIMIT - 1200
        assert [bytes(r.value) for r in t.read()] == [
            val(i, 100) for i in range(start, 400)]
        assert len(files) >= 3


def test_retain_until_consumed_waits_for_the_slowest_group(tmp_path):
    with pylog.open(tmp_path) as log:
        t = log.topic("t", segment_bytes=1024, retain_until_consumed=True,
                      retention_ms=1, retention_bytes=1)  # protected anyway
        fast = log.consumer("fast", "t")
        slow = log.consumer("slow", "t")
        fill(t, 200, size=100)
        b = bases(tmp_path)
        assert len(b) > 10
        assert offsets(fast.poll(max_records=10**6)) == list(range(200))
        fast.commit()
        assert t.start_offset == 0  # slow is at 0
        slow.poll(max_records=b[3] + 2)
        slow.commit()  # inside segment 3
        assert t.start_offset == b[3]
        assert t.stats()["retention_dropped_records"] == b[3]
        # a group that has not committed past a segment keeps it after
        # rolls too
        fill(t, 50, size=100)
        assert t.start_offset == b[3]
        b = bases(tmp_path)
        log.delete_group("slow")  # releases it: fast's floor is 200
        fast_start = max(x for x in b if x <= 200)
        assert t.start_offset == fast_start > b[0]
        assert [bytes(r.value) for r in t.read()] == [
            val(i, 100) for i in range(fast_start, 250)]
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        assert t.start_offset == fast_start
        # a new group registers at start_offset and holds from there
        log.consumer("new", "t")
        fast = log.consumer("fast", "t")
        fast.seek_to_end()
        fast.commit()
        assert t.start_offset == fast_start


def test_retain_until_consumed_without_groups_keeps_everything(tmp_path):
    with pylog.open(tmp_path) as log:
        t = log.topic("t", segment_bytes=1024, retain_until_consumed=True)
        fill(t, 200, size=100)
        t.apply_retention()
        assert t.start_offset == 0
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        assert t.start_offset == 0
        assert len(list(t.read())) == 200


def test_options_are_validated(tmp_path):
    with pylog.open(tmp_path) as log:
        for bad in ({"on_full": "wait"}, {"retain_until_consumed": 1},
                    {"retention_ms": -1}, {"max_bytes": 10},
                    {"max_bytes": 2 * 4224 - 1, "segment_bytes": SEG}):
            with pytest.raises(pylog.InvalidConfigError):
                log.topic("t", **bad)
        log.topic("t", segment_bytes=SEG, max_bytes=2 * 4224)


def test_closing_the_log_ends_an_append_blocked_for_room(tmp_path):
    log = pylog.open(tmp_path)
    t = log.topic("t", segment_bytes=SEG, max_bytes=MAX, on_full="block",
                  full_timeout_ms=60_000, retain_until_consumed=True)
    log.consumer("g", "t")
    while t.stats()["bytes_on_disk"] + 2 * SEG <= MAX:
        t.append(b"f" * 200)
    th = Threads()
    waiter = th.start(lambda: [t.append(b"x" * 300) for _ in range(100)])
    time.sleep(0.3)
    assert waiter.is_alive(), "the appends did not wait for room"
    log.close()
    with pytest.raises(pylog.ClosedError):
        th.join(timeout=10)


# ---- crashes between the steps of a deletion --------------------------------

def test_a_commit_whose_deletion_did_not_happen_deletes_at_open(tmp_path):
    """A crash after the commit reached LMDB but before the segments went:
    the next open deletes them."""
    with pylog.open(tmp_path) as log:
        t = log.topic("t", segment_bytes=1024, retain_until_consumed=True)
        log.consumer("g", "t")
        fill(t, 100, size=100)
        log._groups.commit("g", {"t": 60})  # the catalog only, as if the
        # process died before it told the core
        b = bases(tmp_path)
        assert b[0] == 0
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        assert t.start_offset == max(x for x in b if x <= 60)
        assert offsets(log.consumer("g", "t").poll(max_records=1000)) == \
            list(range(60, 100))


def test_an_index_left_by_an_interrupted_deletion_is_removed(tmp_path):
    """A crash between the two unlinks of a deletion leaves BASE.idx
    without BASE.log: open removes it and starts at the next segment."""
    with pylog.open(tmp_path) as log:
        t = log.topic("t", segment_bytes=1024)
        fill(t, 100, size=100)
    b = bases(tmp_path)
    first = segment_files(tmp_path, "t")[0]
    idx = first[:-4] + ".idx"
    assert os.path.exists(idx)
    os.unlink(first)
    with pylog.open(tmp_path) as log:
        t = log.topic("t")
        assert not os.path.exists(idx)
        assert t.start_offset == b[1]
        assert [bytes(r.value) for r in t.read()] == [
            val(i, 100) for i in range(b[1], 100)]


# ---- deleted segments under readers -----------------------------------------

def test_a_view_of_a_deleted_segment_stays_valid_and_unchanged(tmp_path):
    log = pylog.open(tmp_path)
    t = log.topic("t", segment_bytes=SEG, retain_until_consumed=True)
    c = log.consumer("g", "t")
    big = [bytes([65 + i % 26]) * 3000 for i in range(20)]
    for v in big:
        t.append(v)
    first = t.get(0).value
    polled = c.poll(max_records=5)
    assert isinstance(first, memoryview) and len(first) == 3000
    seg0 = segment_files(tmp_path, "t")[0]
    c.seek_to_end()
    c.commit()  # every segment but the active one goes
    assert not os.path.exists(seg0)
    assert t.start_offset > 0
    with pytest.raises(pylog.OffsetOutOfRangeError):
        t.get(0)
    # appends reuse the freed disk and address space
    for v in big:
        t.append(v[::-1] + b"z")
    c.seek_to_end()
    c.commit()
    gc.collect()
    assert bytes(first) == big[0]
    assert [bytes(r.value) for r in polled] == big[:5]
    sl = polled[2].value[100:200]
    del polled
    gc.collect()
    assert bytes(sl) == big[2][100:200]
    log.close()
    assert bytes(first) == big[0] and bytes(sl) == big[2][100:200]


def test_readers_during_retention_never_get_wrong_data(tmp_path):
    """A writer appends and a committing consumer makes retention delete
    segments constantly while readers get(), read() and poll(): each sees
    the right record, or OffsetOutOfRangeError / a Gap for what is gone."""
    N = 6000
    with pylog.open(tmp_path) as log:
        t = log.topic("t", segment_bytes=2048, retain_until_consumed=True)
        # the one group that holds retention, committing from the writer
        boss = log.consumer("boss", "t")
        stop = threading.Event()
        th = Threads()
        stats = {"get": 0, "gone": 0, "read": 0, "polled": 0}

        def size(i):
            return 1500 if i % 7 == 0 else 40 + i % 90  # some zero-copy

        def writer():
            for i in range(N):
                assert t.append(val(i, size(i))) == i
                if i % 50 == 0:
                    boss.poll(max_records=10**6)
                    boss.commit()
            stop.set()

        def getter(seed):
            rnd = random.Random(seed)
            while not stop.is_set():
                start = t.start_offset  # before end: start <= end then
                end = t.end_offset
                if not end:
                    continue
                off = rnd.randrange(max(0, start - 20), end)
                try:
                    r = t.get(off)
                except pylog.OffsetOutOfRangeError:
                    assert off < t.start_offset
                    stats["gone"] += 1
                    continue
                v = r.value
                assert r.offset == off and bytes(v) == val(off, size(off))
                stats["get"] += 1

        def reader():
            while not stop.is_set():
                try:
                    for r in t.read():
                        assert bytes(r.value) == val(r.offset, size(r.offset))
                        stats["read"] += 1
                except pylog.OffsetOutOfRangeError:
                    stats["gone"] += 1

        def poller():
            c = log.consumer("reader", "t")
            # a reader that must not hold retention back: forget its group
            log.delete_group("reader")
            nxt = c.position("t")  # start_offset when it subscribed
            while nxt < N:
                for r in c.poll(max_records=300, timeout=1):
                    # skipped offsets were reported, as one gap or as
                    # several back to back (retention moved on mid-poll)
                    while nxt != r.offset:
                        gap = next((g for g in c.gaps
                                    if g.from_offset == nxt), None)
                        assert gap, (nxt, r.offset, c.gaps[-5:])
                        nxt = gap.to_offset
                        assert nxt <= r.offset
                    assert bytes(r.value) == val(r.offset, size(r.offset))
                    nxt = r.offset + 1
                    stats["polled"] += 1
                time.sleep(0.002)

        for fn in (writer, getter, getter, reader, poller):
            th.start(fn, *([random.random()] if fn is getter else []))
        th.join(timeout=120)
        assert t.stats()["retention_dropped_records"] > N // 2
        assert stats["get"] > 100 and stats["read"] > 100, stats
        assert stats["polled"] > 100, stats


def test_sigkill_while_commits_delete_segments(tmp_path):
    """Crash cycles with 1 KiB segments and retain_until_consumed: nearly
    every commit deletes segments, so kills land between the commit and
    the deletion and inside it. After each: the log opens, start_offset <=
    committed, the group resumes at its last commit, nothing lost."""
    totals = run_crash_cycles(tmp_path, {"segment_bytes": 1024,
                                         "retain_until_consumed": True},
                              cycles=12, seed="retention-crash")
    print("\n12 kill cycles:", totals)
    assert totals["commits"] > 100, totals
    assert totals["deleted"] > 500, totals
