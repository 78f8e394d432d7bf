"""Segment files removed by hand: offsets are never reused and the loss is
reported (csrc/recover.c step 5, csrc/read.c; invariant 9).

A topic of many small segments is built in a child process (this file run
as a script) and left in one of three states: closed cleanly; killed by
SIGKILL once a periodic checkpoint covered every record ("sigkill"); and
killed with records appended after that checkpoint ("sigkill-tail"). Then
the first, a middle or the active segment file is deleted with its index,
and the log is opened. Expected:

  - the log opens; every record outside the missing range reads back;
  - the missing range [from, to) is in ``lost_ranges()`` and counted in
    ``stats()["lost_records"]``: at open for the first and the active
    segment, once the segment before it has been read for a middle one;
  - ``get`` of an offset in it raises DataLossError whose ``gap`` is
    ``Gap(topic, from, to, "lost")``;
  - no offset is reused: the next append gets an offset >= the old
    end_offset (after "sigkill-tail", when the active segment is gone,
    nothing durable recorded the tail after the checkpoint: the next
    offset is >= what the checkpoint recorded, and the loss covers the
    whole segment up to there);
  - a consumer positioned before the range gets that Gap and goes on after
    it; with ``on_gap="raise"`` it raises DataLossError and stays put
    until it seeks;
  - all of it holds after a reopen;
  - ``pylog DIR verify`` exits non-zero and names the range (its own test
    function, at the end).
"""
import hashlib
import json
import os
import shutil
import signal
import sys
import time

import pytest

import childproc
import pylog
from conftest import segment_base, segment_files

SEGMENT_BYTES = 4096
BATCH = 4
MIN_SEGMENTS = 8
TAIL = 7      # records appended after the last checkpoint ("sigkill-tail")
STATES = ["clean", "sigkill", "sigkill-tail"]
WHICH = ["first", "middle", "active"]


def value(off):
    h = hashlib.blake2b(b"%d" % off, digest_size=16).digest()
    return b"%d:" % off + h * (2 + h[0] % 6)


# ---- the child: build the log -----------------------------------------------
def child_build(path, state):
    log = pylog.open(path, sync="none", checkpoint_interval_ms=50)
    t = log.topic("t", segment_bytes=SEGMENT_BYTES)

    def append(n):
        off = t.end_offset
        t.append_batch([value(off + i) for i in range(n)])

    # Several segments, and an active one holding several batches.
    def active_records():
        return t.end_offset - segment_base(segment_files(path, "t")[-1])

    while len(segment_files(path, "t")) < MIN_SEGMENTS or \
            active_records() < 5 * BATCH:
        append(BATCH)
    if state == "clean":
        end = t.end_offset
        log.close()
        print(json.dumps({"end": end, "vouched": end}))
        return
    deadline = time.monotonic() + 20
    while t.durable_offset < t.end_offset:  # the syncer's checkpoint
        assert time.monotonic() < deadline, "no periodic checkpoint"
        time.sleep(0.01)
    time.sleep(0.3)  # the round that raised durable wrote its checkpoint
    vouched = t.end_offset
    if state == "sigkill-tail":
        for i in range(TAIL):
            t.append(value(t.end_offset))
    print(json.dumps({"end": t.end_offset, "vouched": vouched}), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """{state: (path, end_offset at the end, end_offset a checkpoint
    recorded)}."""
    out = {}
    for state in STATES:
        path = str(tmp_path_factory.mktemp("pristine") / state)
        doc = childproc.build([__file__, "build", path, state],
                              killed=state != "clean")
        out[state] = (path, doc["end"], doc["vouched"])
    return out


def delete_segment(pristine, tmp_path, state, which):
    """A copy of the log with one segment (and its index) removed: (path,
    old end, vouched end, lost from, lost to or None if not known)."""
    src, end, vouched = pristine[state]
    path = str(tmp_path / "log")
    shutil.copytree(src, path)
    segs = segment_files(path, "t")
    assert len(segs) >= MIN_SEGMENTS
    i = {"first": 0, "middle": len(segs) // 2, "active": len(segs) - 1}[which]
    lo = segment_base(segs[i])
    if i + 1 < len(segs):
        hi = segment_base(segs[i + 1])
    else:
        hi = end if state != "sigkill-tail" else None
    os.unlink(segs[i])
    idx = segs[i][:-4] + ".idx"
    if os.path.exists(idx):
        os.unlink(idx)
    return path, end, vouched, lo, hi


def check_lost(t, lo, hi):
    ranges = t.lost_ranges()
    assert len(ranges) == 1 and ranges[0][0] == lo, ranges
    if hi is not None:
        assert ranges[0][1] == hi, ranges
    got = ranges[0][1]
    st = t.stats()
    assert st["lost_ranges"] == ranges
    assert st["lost_records"] == got - lo, st
    return got


def check_lost_reads(t, lo, hi):
    for off in sorted({lo, (lo + hi) // 2, hi - 1}):
        with pytest.raises(pylog.DataLossError) as ei:
            t.get(off)
        assert ei.value.gap == pylog.Gap("t", lo, hi, "lost"), off


@pytest.mark.parametrize("which", WHICH)
@pytest.mark.parametrize("state", STATES)
def test_deleted_segment_is_a_lost_range_never_reused(
        pristine, tmp_path, state, which):
    path, end, vouched, lo, hi = delete_segment(pristine, tmp_path, state,
                                                which)
    with pylog.open(path) as log:
        t = log.topic("t")
        if which != "middle":  # known at open
            hi = check_lost(t, lo, hi)
        else:
            assert bytes(t.get(lo - 1).value) == value(lo - 1)
            hi = check_lost(t, lo, hi)
        # Never reused.
        new_end = t.end_offset
        assert new_end >= hi
        floor = vouched if (state, which) == ("sigkill-tail", "active") \
            else end
        assert new_end >= floor, (new_end, floor)
        if which == "active":
            assert hi >= floor, (hi, floor)
        if which != "active":
            assert new_end == end
        # Everything outside the range is there.
        start = t.start_offset
        assert start == (hi if which == "first" else 0)
        for off in range(start, new_end):
            if not lo <= off < hi:
                assert bytes(t.get(off).value) == value(off), off
        check_lost_reads(t, lo, hi)
        appended = [t.append(value(new_end)),
                    t.append_batch([value(new_end + 1), value(new_end + 2)])]
        assert appended == [new_end, new_end + 1]
        final = new_end + 3
    # Reopened: the range is remembered, nothing is reused.
    with pylog.open(path) as log:
        t = log.topic("t")
        assert t.lost_ranges() == [(lo, hi)]
        assert t.end_offset == final
        check_lost_reads(t, lo, hi)
        assert t.append(b"again") == final


@pytest.mark.parametrize("which", WHICH)
@pytest.mark.parametrize("state", ["clean", "sigkill"])
def test_consumer_gets_the_gap_and_goes_on(pristine, tmp_path, state, which):
    path, end, _, lo, hi = delete_segment(pristine, tmp_path, state, which)
    before = max(0, lo - 3)
    with pylog.open(path) as log:
        t = log.topic("t")
        t.append(value(end))
        seen = []
        c = log.consumer("reader", "t", on_gap=seen.append)
        c.seek("t", before)
        got = []
        while True:
            batch = c.poll(max_records=50, timeout=0)
            if not batch:
                break
            got += [r.offset for r in batch]
            for r in batch:
                assert bytes(r.value) == value(r.offset)
        gap = pylog.Gap("t", lo, hi, "lost")
        assert c.gaps == [gap] and seen == [gap]
        assert got == list(range(before, lo)) + list(range(hi, end + 1))
        c.close()
        # on_gap="raise": raises at the range and stays put until a seek.
        c = log.consumer("strict", "t", on_gap="raise")
        c.seek("t", before)
        got = []
        with pytest.raises(pylog.DataLossError) as ei:
            for _ in range(10):
                got += [r.offset for r in c.poll(max_records=50, timeout=0)]
        assert ei.value.gap == gap
        assert got == list(range(before, lo))
        assert c.position("t") == lo
        with pytest.raises(pylog.DataLossError):
            c.poll(timeout=0)
        assert c.position("t") == lo and c.gaps == []
        c.seek("t", hi)
        assert c.poll(max_records=1, timeout=0)[0].offset == hi
        c.close()


@pytest.mark.parametrize("which", WHICH)
@pytest.mark.parametrize("state", STATES)
def test_verify_reports_a_deleted_segment(pristine, tmp_path, state, which):
    """`pylog DIR verify` of the log with a segment removed (before anything
    opened it) exits non-zero and names where the range starts."""
    path, _, _, lo, _ = delete_segment(pristine, tmp_path, state, which)
    status, out = childproc.verify(path)
    assert status != 0, f"verify exited 0 with a segment missing:\n{out}"
    assert str(lo) in out, out


if __name__ == "__main__":
    child_build(sys.argv[2], sys.argv[3])
