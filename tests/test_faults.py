"""Fault injection through the C I/O layer (DESIGN.md, "Testing shape").

pylog._binding.fault_set(op, nth, err, count, short_bytes) makes the nth
next call of one I/O operation ("write", "fsync", "fallocate", "open") fail.
Each test checks that the error reaches Python as the right exception, that
nothing partial becomes visible, and that the log stays consistent and
usable: at once for write/open/fallocate failures, after a reopen for a
failed fsync (which makes the topic refuse writes: invariant 4 of topic.c).
"""
import errno
import os
import threading

import pytest

import pylog
from pylog import _binding as B
from conftest import segment_files, topic_dir


@pytest.fixture(autouse=True)
def no_faults():
    B.fault_clear()
    yield
    B.fault_clear()


def values(t, start=0):
    return [bytes(r.value) for r in t.read(start)]


def seg_count(t):
    return B.lib.pl_topic_segment_count(t._h)


def files(path, ext):
    """Names of the topic's files ending in ext, sorted."""
    return sorted(f for f in os.listdir(topic_dir(path, "t"))
                  if f.endswith(ext))


def append(t, how, vals):
    if how == "append":
        assert len(vals) == 1
        return t.append(vals[0])
    return t.append_batch(vals)


# ---- write ------------------------------------------------------------------

@pytest.mark.parametrize("sync", ["none", "always"])
@pytest.mark.parametrize("how", ["append", "batch"])
@pytest.mark.parametrize("err,exc", [(errno.EIO, pylog.PylogIOError),
                                     (errno.ENOSPC, pylog.DiskFullError)])
def test_failed_write_raises_and_publishes_nothing(tmp_path, how, err, exc,
                                                   sync):
    path = str(tmp_path)
    want = [b"v%d" % i for i in range(10)]
    with pylog.open(path, sync=sync) as log:
        t = log.topic("t")
        t.append_batch(want[:4])
        for v in want[4:]:
            t.append(v)
        B.fault_set("write", err=err)
        bad = [b"bad"] if how == "append" else [b"bad1", b"bad2", b"bad3"]
        with pytest.raises(exc) as ei:
            append(t, how, bad)
        assert ei.value.errno == err
        assert not isinstance(ei.value, pylog.LogFailedError)
        if err == errno.EIO:
            assert not isinstance(ei.value, pylog.DiskFullError)
        assert "00000000000000000000.log" in str(ei.value)
        assert t.end_offset == 10
        with pytest.raises(pylog.OffsetOutOfRangeError):
            t.get(10)
        assert values(t) == want
        # Not sticky: the next append succeeds where the failed one was.
        assert append(t, how, [b"next"]) == 10
        assert values(t) == want + [b"next"]
        assert t.get(10).value == b"next"
        if sync == "always":
            assert t.durable_offset == 11
    with pylog.open(path, sync=sync) as log:
        t = log.topic("t")
        assert values(t) == want + [b"next"]
        assert B.lib.pl_topic_truncated_bytes(t._h) == 0


@pytest.mark.parametrize("ending", ["close", "crash"])
@pytest.mark.parametrize("then_append", [False, True])
@pytest.mark.parametrize("short", [0, 8, 20, 60, 200])
def test_short_write_is_invisible_and_cut_by_recovery(tmp_path, short,
                                                      then_append, ending):
    """A short write publishes nothing. A clean close cuts the partial bytes
    (the active segment is truncated to its data); after a crash, which we
    simulate by putting back the file as it was while the log was open,
    recovery cuts them."""
    path = str(tmp_path)
    seg = os.path.join(path, "topics", "t", "00000000000000000000.log")
    want = [b"w%d" % i for i in range(10)]
    with pylog.open(path) as log:
        t = log.topic("t")
        for v in want:
            t.append(v)
        B.fault_set("write", short_bytes=short)
        with pytest.raises(pylog.PylogIOError):
            t.append_batch([b"x" * 50] * 3)  # a 258-byte batch
        assert t.end_offset == 10
        assert values(t) == want
        if then_append:
            # A smaller batch lands on the partial one's bytes.
            assert t.append(b"s") == 10
            want.append(b"s")
            assert values(t) == want
        with open(seg, "rb") as f:
            at_crash = f.read()
    data_end = 32 + sum(48 + 20 + len(v) for v in want)
    # After a crash, the partial bytes left past the end (all of them, or
    # those past the 69-byte batch written over them) are cut.
    end_and_reopen(path, seg, at_crash, ending, data_end, want,
                   short > (48 + 20 + 1 if then_append else 0), b"after")


def end_and_reopen(path, seg, at_crash, ending, data_end, want, crash_cuts,
                   next_value):
    """The end of a short-write scenario. A clean close has cut the active
    segment to data_end; a crash is simulated by putting back at_crash, the
    file as it was while the log was open. Reopened, the log holds want,
    recovery cut bytes exactly when crash_cuts (after a crash), and
    next_value appends and survives one more reopen."""
    if ending == "crash":
        with open(seg, "wb") as f:
            f.write(at_crash)
    else:
        assert os.path.getsize(seg) == data_end
    with pylog.open(path) as log:
        t = log.topic("t")
        assert t.end_offset == len(want)
        assert values(t) == want
        cut = B.lib.pl_topic_truncated_bytes(t._h)
        if ending == "crash":
            assert (cut > 0) == crash_cuts
        else:
            assert cut == 0
        assert t.append(next_value) == len(want)
    with pylog.open(path) as log:
        t = log.topic("t")
        assert values(t) == want + [next_value]
        assert B.lib.pl_topic_truncated_bytes(t._h) == 0


# A large single append (>= 32 KiB) goes out as one pwritev of its pieces
# (headers, key, value, header block) and a zero pad to the next 64 KiB of
# the file (csrc/topic.c): the same write fault point as the other paths.
BIG = b"\xa5" * 65536  # no zero byte: partial bytes are visible in the file
BIG_LEN = 48 + 20 + len(BIG)


@pytest.mark.parametrize("sync", ["none", "always"])
@pytest.mark.parametrize("shape", ["value", "key+headers"])
@pytest.mark.parametrize("err,exc", [(errno.EIO, pylog.PylogIOError),
                                     (errno.ENOSPC, pylog.DiskFullError)])
def test_failed_large_append_raises_and_publishes_nothing(tmp_path, shape,
                                                          err, exc, sync):
    path = str(tmp_path)
    kw = ({} if shape == "value" else
          {"key": b"k" * 40, "headers": [("h", b"x" * 300), ("n", None)]})
    want = [b"v%d" % i for i in range(3)] + [BIG[:40000], BIG]
    with pylog.open(path, sync=sync) as log:
        t = log.topic("t")
        for v in want:
            t.append(v, **kw)
        B.fault_set("write", err=err)
        with pytest.raises(exc) as ei:
            t.append(b"\x01" * 70000, **kw)
        assert ei.value.errno == err
        assert not isinstance(ei.value, pylog.LogFailedError)
        assert "00000000000000000000.log" in str(ei.value)
        assert t.end_offset == len(want)
        with pytest.raises(pylog.OffsetOutOfRangeError):
            t.get(len(want))
        assert values(t) == want
        # Not sticky: the next append succeeds where the failed one was.
        assert t.append(BIG, **kw) == len(want)
        want.append(BIG)
        assert values(t) == want
        if sync == "always":
            assert t.durable_offset == len(want)
    with pylog.open(path, sync=sync) as log:
        t = log.topic("t")
        assert values(t) == want
        assert B.lib.pl_topic_truncated_bytes(t._h) == 0
        if kw:
            r = t.get(len(want) - 1)
            assert r.key == kw["key"]
            assert r.headers == (("h", b"x" * 300), ("n", None))


@pytest.mark.parametrize("ending", ["close", "crash"])
@pytest.mark.parametrize("then", [None, "small", "large"])
@pytest.mark.parametrize("short", [0, 8, 68, 100, 40_000, 50_000,
                                   BIG_LEN - 1])
def test_short_large_write_is_invisible_and_cut_by_recovery(tmp_path, short,
                                                            then, ending):
    """A short write of a large append writes exactly short_bytes bytes and
    publishes nothing; what follows lands on them (an append covers its own
    bytes, and nothing past them: no padding is written), and close or
    recovery cut the rest."""
    path = str(tmp_path)
    seg = os.path.join(path, "topics", "t", "00000000000000000000.log")
    want = [b"w%d" % i for i in range(10)]
    pos = 32 + 10 * (48 + 20 + 2)
    with pylog.open(path) as log:
        t = log.topic("t")
        for v in want:
            t.append(v, timestamp=1)
        B.fault_set("write", short_bytes=short)
        with pytest.raises(pylog.PylogIOError):
            t.append(BIG, timestamp=2)
        assert t.end_offset == 10
        assert values(t) == want
        with open(seg, "rb") as f:
            data = f.read()
        # Exactly the first `short` bytes of the batch were written.
        assert not any(data[pos + short:])
        if short > 68:
            assert data[pos + 68:pos + short] == BIG[:short - 68]
        if short > 0:
            assert any(data[pos:pos + min(short, 8)])  # the checksum
        if then == "small":
            assert t.append(b"s", timestamp=3) == 10
            want.append(b"s")
        elif then == "large":
            assert t.append(BIG[:40000], timestamp=3) == 10
            want.append(BIG[:40000])
        assert values(t) == want
        with open(seg, "rb") as f:
            at_crash = f.read()
    data_end = pos + sum(48 + 20 + len(v) for v in want[10:])
    covered = data_end
    if pos + short > covered >= pos + 68:  # the rest of the partial value
        assert at_crash[covered:pos + short] == \
            BIG[covered - pos - 68:short - 68]
    end_and_reopen(path, seg, at_crash, ending, data_end, want,
                   pos + short > covered, BIG)


@pytest.mark.parametrize("nth", [1, 2, 3])
def test_write_fault_during_large_roll(tmp_path, nth):
    """A large append that rolls: the new segment's header (1st write), the
    sealed segment's index (2nd, best effort), then the pwritev (3rd)."""
    path = str(tmp_path)
    with pylog.open(path) as log:
        t = log.topic("t", segment_bytes=100_000)
        want = [BIG[:50000]]
        t.append(want[0])
        B.fault_set("write", nth=nth)
        if nth == 2:
            assert t.append(BIG) == 1
            want.append(BIG)
        else:
            with pytest.raises(pylog.PylogIOError):
                t.append(BIG)
            assert t.end_offset == 1
            assert seg_count(t) == (1 if nth == 1 else 2)
        assert values(t) == want
        B.fault_clear()
        for i in range(5):
            want.append(bytes([i + 1]) * (40000 + 9999 * i))
            assert t.append(want[-1]) == len(want) - 1
        assert values(t) == want
        assert seg_count(t) >= 3
    with pylog.open(path) as log:
        t = log.topic("t")
        assert values(t) == want
        assert B.lib.pl_topic_truncated_bytes(t._h) == 0


def roll_setup(log):
    """A topic whose 6th append of a 100-byte value rolls: 1024-byte
    segments, batches of 48 + 20 + 100 bytes after a 32-byte header."""
    t = log.topic("t", segment_bytes=1024)
    for i in range(5):
        t.append(b"%03d" % i + b"r" * 97)
    assert seg_count(t) == 1
    return t, [bytes(r.value) for r in t.read(0)]


@pytest.mark.parametrize("nth", [1, 2, 3])
def test_write_fault_during_roll(tmp_path, nth):
    """The rolling append writes the new segment's header (1st write), the
    sealed segment's index (2nd, best effort), then the batch (3rd)."""
    path = str(tmp_path)
    with pylog.open(path) as log:
        t, want = roll_setup(log)
        B.fault_set("write", nth=nth)
        v = b"roll" + b"r" * 96
        if nth == 2:
            assert t.append(v) == 5  # a lost index is rebuilt later
            want.append(v)
            assert seg_count(t) == 2
            assert files(path, ".idx") == []
        else:
            with pytest.raises(pylog.PylogIOError):
                t.append(v)
            assert t.end_offset == 5
            assert seg_count(t) == (1 if nth == 1 else 2)
            assert len(files(path, ".log")) == seg_count(t)
        assert values(t) == want
        B.fault_clear()
        for i in range(12):
            want.append(b"%03d" % (i + 100) + b"a" * 97)
            assert t.append(want[-1]) == len(want) - 1
        assert values(t) == want
        assert seg_count(t) >= 3
    with pylog.open(path) as log:
        t = log.topic("t")
        assert values(t) == want
        assert [t.get(i).value for i in range(len(want))] == want
    # Reading the sealed segments rebuilt the missing index (and the clean
    # close wrote the active segment's).
    assert files(path, ".idx") == [f[:-4] + ".idx"
                                   for f in files(path, ".log")]


# ---- fallocate and open during a roll ---------------------------------------

@pytest.mark.parametrize("sync", ["none", "always"])
@pytest.mark.parametrize("op,err,exc", [
    ("fallocate", errno.ENOSPC, pylog.DiskFullError),
    ("fallocate", errno.EIO, pylog.PylogIOError),
    ("open", errno.EIO, pylog.PylogIOError),
    ("open", errno.EMFILE, pylog.PylogIOError)])
def test_failed_segment_create_during_roll(tmp_path, sync, op, err, exc):
    path = str(tmp_path)
    with pylog.open(path, sync=sync) as log:
        t, want = roll_setup(log)
        logs = files(path, ".log")
        B.fault_set(op, err=err, count=3)
        for attempt in range(3):  # the rolling append fails every time
            with pytest.raises(exc) as ei:
                t.append(b"x" * 100)
            assert ei.value.errno == err
            assert "00000000000000000005.log" in str(ei.value)
            assert t.end_offset == 5
            assert seg_count(t) == 1
            assert files(path, ".log") == logs  # nothing left behind
            assert values(t) == want
        # The fault is used up: the log goes on, rolls and reads.
        for i in range(20):
            want.append(b"%03d" % i + b"n" * 97)
            assert t.append(want[-1]) == len(want) - 1
        assert seg_count(t) >= 4
        # segment_bytes bounds every segment, rolled ones too.
        assert all(os.path.getsize(p) <= 1024
                   for p in segment_files(path, "t"))
        assert values(t) == want
        if sync == "always":
            assert t.durable_offset == t.end_offset
    with pylog.open(path, sync=sync) as log:
        t = log.topic("t")
        assert values(t) == want


@pytest.mark.parametrize("err,exc", [(errno.ENOSPC, pylog.DiskFullError),
                                     (errno.EIO, pylog.PylogIOError)])
def test_failed_fallocate_when_growing_an_empty_segment(tmp_path, err, exc):
    path = str(tmp_path)
    with pylog.open(path) as log:
        t = log.topic("t", segment_bytes=1024)
        big = bytes(range(256)) * 12  # larger than the segment
        B.fault_set("fallocate", err=err)
        with pytest.raises(exc):
            t.append(big)
        assert t.end_offset == 0
        assert t.append(big) == 0
        assert t.append(b"small") == 1
        assert values(t) == [big, b"small"]
    with pylog.open(path) as log:
        assert values(log.topic("t")) == [big, b"small"]


def test_a_full_disk_fails_only_the_appends_that_need_space(tmp_path):
    """The active file grows as it fills: an append that needs more space
    on a full disk fails cleanly (DiskFullError, nothing published); the
    ones that fit in what is allocated go on, and so does the log once
    space is back."""
    path = str(tmp_path)
    with pylog.open(path) as log:
        t = log.topic("t", segment_bytes=1 << 20)
        want = [b"%d" % i * 10 for i in range(20)]
        t.append_batch(want)
        B.fault_set("fallocate", err=errno.ENOSPC, count=-1)
        failures = 0
        for i in range(2000):  # 64 KiB steps: the allocation runs out
            v = b"more-%d" % i * 5
            try:
                assert t.append(v) == len(want)
            except pylog.DiskFullError as exc:
                assert "00000000000000000000.log" in str(exc)
                failures += 1
                assert t.end_offset == len(want)
                if failures == 3:
                    break
            else:
                want.append(v)
        assert failures == 3 and len(want) > 20
        B.fault_clear()
        for i in range(100):
            want.append(b"after-%d" % i * 5)
            assert t.append(want[-1]) == len(want) - 1
        assert values(t) == want
    with pylog.open(path) as log:
        assert values(log.topic("t")) == want


# ---- open -------------------------------------------------------------------

def test_failed_open_when_creating_a_topic(tmp_path):
    path = str(tmp_path)
    with pylog.open(path) as log:
        other = log.topic("other")
        other.append(b"o")
        B.fault_set("open", err=errno.EACCES)
        with pytest.raises(pylog.PylogIOError) as ei:
            log.topic("t")
        assert ei.value.errno == errno.EACCES
        assert os.path.join("t", "00000000000000000000.log") in str(ei.value)
        assert values(other) == [b"o"]
        t = log.topic("t")  # the retry creates it
        assert t.append(b"first") == 0
        assert values(t) == [b"first"]
    with pylog.open(path) as log:
        assert values(log.topic("t")) == [b"first"]
        assert values(log.topic("other")) == [b"o"]


def test_failed_open_of_existing_segments(tmp_path):
    path = str(tmp_path)
    with pylog.open(path) as log:
        t, want = roll_setup(log)
        for i in range(20):
            want.append(b"%03d" % i + b"z" * 97)
            t.append(want[-1])
        assert seg_count(t) >= 3
    with pylog.open(path) as log:
        # The 1st open reads the durability checkpoint: best effort, its
        # failure only makes the open verify (and sync) everything.
        B.fault_set("open", nth=1)
        t = log.topic("t")
        assert t.durable_offset == t.end_offset
        assert values(t) == want
    with pylog.open(path) as log:
        # The active segment at open (after the checkpoint).
        B.fault_set("open", nth=2)
        with pytest.raises(pylog.PylogIOError) as ei:
            log.topic("t")
        assert ".log" in str(ei.value)
        t = log.topic("t")
        # A sealed segment, opened lazily on its first read.
        B.fault_set("open")
        with pytest.raises(pylog.PylogIOError) as ei:
            t.get(0)
        assert "00000000000000000000.log" in str(ei.value)
        assert t.get(0).value == want[0]
        # The index file of the next sealed segment (2nd open): a missing
        # index is rebuilt from the segment.
        B.fault_set("open", nth=2)
        assert t.get(6).value == want[6]
        assert values(t) == want
        assert t.append(b"end") == len(want)


# ---- fsync ------------------------------------------------------------------

def test_failed_fsync_in_always_mode_is_sticky_until_reopen(tmp_path):
    path = str(tmp_path)
    want = [b"a%d" % i for i in range(5)]
    with pylog.open(path, sync="always") as log:
        t = log.topic("t")
        for v in want:
            t.append(v)
        assert t.durable_offset == 5
        B.fault_set("fsync")
        with pytest.raises(pylog.PylogIOError) as ei:
            t.append(b"unsure")
        assert ei.value.errno == errno.EIO
        assert "fdatasync" in str(ei.value)
        assert t.durable_offset == 5
        end = t.end_offset
        assert end in (5, 6)
        # The fault was used up; the topic refuses writes by itself.
        with pytest.raises(pylog.LogFailedError):
            t.append(b"refused")
        with pytest.raises(pylog.LogFailedError):
            t.append_batch([b"refused", b"too"])
        with pytest.raises(pylog.LogFailedError):
            log.flush()
        assert t.end_offset == end
        assert t.durable_offset == 5
        # Reads still work.
        assert values(t)[:5] == want
        assert [t.get(i).value for i in range(5)] == want
    with pylog.open(path, sync="always") as log:
        t = log.topic("t")
        assert t.end_offset == end
        assert values(t) == (want + [b"unsure"])[:end]
        assert t.durable_offset == end
        assert t.append(b"ok") == end
        assert t.durable_offset == end + 1
        assert values(t)[-1] == b"ok"


@pytest.mark.parametrize("sync", ["none", "interval"])
def test_failed_fsync_in_flush_is_sticky_until_reopen(tmp_path, sync):
    path = str(tmp_path)
    want = [b"f%d" % i for i in range(7)]
    with pylog.open(path, sync=sync, sync_interval_ms=3_600_000) as log:
        t = log.topic("t")
        t.append_batch(want[:3])
        for v in want[3:]:
            t.append(v)
        durable = t.durable_offset
        B.fault_set("fsync", err=errno.EIO)
        with pytest.raises(pylog.PylogIOError) as ei:
            log.flush()
        assert ei.value.errno == errno.EIO
        assert t.durable_offset == durable
        with pytest.raises(pylog.LogFailedError):
            t.append(b"no")
        with pytest.raises(pylog.LogFailedError):
            log.flush()
        assert values(t) == want
        assert t.end_offset == 7
    with pylog.open(path, sync=sync, sync_interval_ms=3_600_000) as log:
        t = log.topic("t")
        assert values(t) == want
        assert t.append(b"yes") == 7
        log.flush()
        assert t.durable_offset == 8


def test_failed_fsync_in_interval_syncer_is_sticky(tmp_path):
    path = str(tmp_path)
    with pylog.open(path, sync="interval", sync_interval_ms=2) as log:
        t = log.topic("t")
        B.fault_set("fsync", count=-1)
        n = 0
        with pytest.raises(pylog.LogFailedError):
            for n in range(1_000_000):  # until the syncer meets the fault
                t.append(b"i%d" % n)
        assert t.durable_offset == 0
        assert values(t) == [b"i%d" % i for i in range(n)]
        B.fault_clear()
        with pytest.raises(pylog.LogFailedError):
            t.append(b"still refused")
    with pylog.open(path, sync="interval", sync_interval_ms=2) as log:
        t = log.topic("t")
        assert values(t) == [b"i%d" % i for i in range(n)]
        assert t.append(b"fine") == n
        log.flush()
        assert t.durable_offset == n + 1


@pytest.mark.parametrize("sync", ["always", "interval"])
def test_failed_fsync_during_roll_is_sticky(tmp_path, sync):
    """A roll fdatasyncs the segment it seals (always: even when every
    append was synced already, so that a checkpoint never rests on another
    thread's sync that may still fail), then the directory: a failure of
    either is sticky."""
    path = str(tmp_path)
    with pylog.open(path, sync=sync, sync_interval_ms=3_600_000) as log:
        t, want = roll_setup(log)
        B.fault_set("fsync")
        with pytest.raises(pylog.PylogIOError) as ei:
            t.append(b"x" * 100)
        assert ei.value.errno == errno.EIO
        assert "fdatasync of" in str(ei.value)
        assert "00000000000000000000.log" in str(ei.value)
        with pytest.raises(pylog.LogFailedError):
            t.append(b"y")
        assert t.end_offset == 5
        assert values(t) == want
    with pylog.open(path, sync=sync, sync_interval_ms=3_600_000) as log:
        t = log.topic("t")
        assert values(t) == want
        assert t.append(b"z") == 5
        log.flush()
        assert t.durable_offset == 6


@pytest.mark.parametrize("sync", ["interval", "always"])
def test_failed_directory_fsync_during_roll_is_sticky(tmp_path, sync):
    path = str(tmp_path)
    with pylog.open(path, sync=sync, sync_interval_ms=3_600_000) as log:
        t, want = roll_setup(log)
        B.fault_set("fsync", nth=2)  # 1st: the sealed segment, 2nd: the dir
        with pytest.raises(pylog.PylogIOError) as ei:
            t.append(b"x" * 100)
        assert "directory" in str(ei.value)
        with pytest.raises(pylog.LogFailedError):
            t.append(b"y")
    with pylog.open(path, sync=sync) as log:
        assert values(log.topic("t"))[:5] == want


def test_failed_group_commit_fails_every_writer_without_hanging(tmp_path):
    path = str(tmp_path)
    results = {}
    with pylog.open(path, sync="always") as log:
        t = log.topic("t")
        B.fault_set("fsync", nth=6)

        def writer(w):
            acked, err = [], None
            try:
                for i in range(200):
                    v = b"%d-%d" % (w, i)
                    off = t.append(v) if i % 2 else t.append_batch([v])
                    acked.append((off, v))
            except pylog.PylogIOError as exc:
                err = exc
            results[w] = (acked, err)

        threads = [threading.Thread(target=writer, args=(w,))
                   for w in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=60)
        assert not any(th.is_alive() for th in threads), "writers hang"
        assert len(results) == 4
        for acked, err in results.values():
            assert err is not None  # nobody got past the failed fsync
        acked = [a for acked, _ in results.values() for a in acked]
        durable = t.durable_offset
        assert all(off < durable for off, _ in acked)
        for off, v in acked:
            assert t.get(off).value == v
        end = t.end_offset
    with pylog.open(path, sync="always") as log:
        t = log.topic("t")
        assert t.end_offset == end
        for off, v in acked:
            assert t.get(off).value == v
        assert t.append(b"ok") == end
