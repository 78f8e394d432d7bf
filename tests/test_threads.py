"""Concurrency: the C core is thread-safe by itself (cffi releases the GIL
on every call). Eight writers append to one topic at once, with append and
append_batch mixed, while readers call get() and read() and a flusher calls
flush(). Offsets come out dense and unique; every record is the one its
writer wrote; readers never see a torn or wrong record (invariants 1, 2, 3
and 4 of csrc/topic.c).
"""
import hashlib
import random
import threading

import pytest

import pylog
from conftest import Threads, segment_files

WRITERS = 8


def make(w, seq):
    """(key, value) of record seq of writer w. Values start with "w:seq:",
    so a reader can tell which record it holds and check all its bytes;
    some are large enough to come back as zero-copy views."""
    h = hashlib.blake2b(b"%d/%d" % (w, seq), digest_size=16).digest()
    r = int.from_bytes(h[:4], "little")
    n = r % 200 if r % 25 else 1024 + r % 3000
    return b"w%d" % w, b"%d:%d:" % (w, seq) + (h * (n // 16 + 1))[:n]


def check_self_consistent(rec):
    """The record is exactly one that some writer wrote; returns (w, seq)."""
    value = bytes(rec.value)
    w, seq, _ = value.split(b":", 2)
    w, seq = int(w), int(seq)
    assert (rec.key, value) == make(w, seq), (
        f"offset {rec.offset}: torn or wrong record")
    return w, seq


def writer(t, w, ops, seed, out):
    rnd = random.Random(seed)
    seq = 0
    for _ in range(ops):
        n = 1 if rnd.random() < 0.5 else rnd.randint(2, 20)
        recs = [make(w, seq + i) for i in range(n)]
        if n == 1 and rnd.random() < 0.7:
            off = t.append(recs[0][1], key=recs[0][0])
        else:
            off = t.append_batch([r[1] for r in recs],
                                 keys=[r[0] for r in recs])
        out.append((off, seq, n))
        seq += n


def check_writes(t, outs):
    """Offsets are dense and unique, each writer's offsets increase, and
    every record is the one its writer wrote. Returns {offset: (w, seq)}."""
    truth = {}
    for w, out in enumerate(outs):
        last = -1
        for off, seq, n in out:
            assert off > last, f"writer {w}: offsets went backwards"
            last = off + n - 1
            for i in range(n):
                assert off + i not in truth, f"offset {off + i} given twice"
                truth[off + i] = (w, seq + i)
    end = t.end_offset
    assert sorted(truth) == list(range(end)), "offsets are not dense"
    n = 0
    for n, rec in enumerate(t.read(0), 1):
        assert rec.offset == n - 1
        assert check_self_consistent(rec) == truth[rec.offset]
    assert n == end
    for off in random.Random(1).sample(range(end), min(end, 2000)):
        assert check_self_consistent(t.get(off)) == truth[off]
    return truth


@pytest.mark.parametrize("segment_bytes", [64 << 10, 4096])
def test_concurrent_writers_and_readers(tmp_path, segment_bytes):
    path = str(tmp_path)
    stop = threading.Event()
    seen = [dict() for _ in range(3)]
    held = []  # records kept across reads: zero-copy views must not change

    def reader(k):
        rnd = random.Random(k)
        mine = seen[k]
        while not stop.is_set():
            end = t.end_offset
            if end == 0:
                continue
            off = rnd.randrange(end)
            if rnd.random() < 0.5:
                rec = t.get(off)
                assert rec.offset == off
                mine[off] = check_self_consistent(rec)
                if isinstance(rec.value, memoryview) and len(held) < 200:
                    held.append((rec, bytes(rec.value)))
            else:
                expect = off
                for rec in t.read(off, max_records=rnd.randint(1, 700)):
                    assert rec.offset == expect, "read() skipped an offset"
                    expect += 1
                    mine[rec.offset] = check_self_consistent(rec)
                assert expect > off
            assert t.end_offset >= end

    def flusher():
        while not stop.is_set():
            t.flush()
            assert t.durable_offset <= t.end_offset

    with pylog.open(path, segment_bytes=segment_bytes) as log:
        t = log.topic("t")
        ths = Threads()
        readers = [ths.start(reader, k) for k in range(3)]
        readers.append(ths.start(flusher))
        outs = [[] for _ in range(WRITERS)]
        writers = [ths.start(writer, t, w, 1500, w, outs[w])
                   for w in range(WRITERS)]
        try:
            ths.join(writers, timeout=120)
        finally:
            stop.set()
            ths.join(timeout=120)
        truth = check_writes(t, outs)
        assert t.end_offset > WRITERS * 1500
        # What readers saw while the writers ran is what is there now.
        nseen = 0
        for mine in seen:
            for off, ident in mine.items():
                assert truth[off] == ident
            nseen += len(mine)
        assert nseen > 1000
        for rec, value in held:
            assert bytes(rec.value) == value
        if segment_bytes == 4096:  # the readers met many rolls
            assert len(segment_files(path, "t")) > 50
    with pylog.open(path) as log:
        check_writes(log.topic("t"), outs)


def test_concurrent_writers_sync_always_group_commit(tmp_path):
    path = str(tmp_path)
    with pylog.open(path, sync="always", segment_bytes=64 << 10) as log:
        t = log.topic("t")
        ths = Threads()
        outs = [[] for _ in range(WRITERS)]
        durable_ok = []

        def always_writer(w):
            writer(t, w, 150, 100 + w, outs[w])
            # Each append returned after an fsync that covered it.
            off, _, n = outs[w][-1]
            durable_ok.append(t.durable_offset >= off + n)

        for w in range(WRITERS):
            ths.start(always_writer, w)
        ths.join(timeout=120)
        assert all(durable_ok) and len(durable_ok) == WRITERS
        check_writes(t, outs)
        assert t.durable_offset == t.end_offset
    with pylog.open(path, sync="always") as log:
        t = log.topic("t")
        check_writes(t, outs)
        assert t.durable_offset == t.end_offset
