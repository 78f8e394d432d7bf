"""SIGKILL crash tests (DESIGN.md, "Testing shape"; invariants 2, 3, 6).

A child process appends records to one topic and reports every append in a
side file: an intent line ("I seq n") before the call and an ack line
("A offset seq n") after it returns. The parent kills the child with
SIGKILL at a random moment, reopens the log and checks that

  - every acknowledged record is present, at its acknowledged offset, with
    exactly the bytes (key, value, headers) the child wrote;
  - offsets are dense from 0 to end_offset;
  - nothing else is there, except possibly the one batch that was in flight
    (intent written, no ack), and then all of it (a batch is atomic).

Cycles keep appending to the same log, so every cycle also tests recovery
of what the previous kills left behind. Some cycles use 64 KiB segments so
that kills land during segment rolls, and some kill the child while it is
still opening the log (during recovery).
"""
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import pylog
from pylog import _binding as B

# Shared by the child and the parent: record (cycle, seq) -> its bytes.
GEN_SRC = textwrap.dedent('''
    import hashlib

    def make(cycle, seq):
        """(key, value, headers) of record seq of cycle; the value starts
        with "cycle:seq:" so that a stray record names where it came from."""
        h = hashlib.blake2b(b"%d:%d" % (cycle, seq), digest_size=16).digest()
        r = int.from_bytes(h[:4], "little")
        n = r % 300 if r % 40 else 1000 + r % 4000  # some zero-copy values
        value = b"%d:%d:" % (cycle, seq) + (h * (n // 16 + 1))[:n]
        key = None if seq % 3 else b"k%d" % seq
        headers = {"s": b"%d" % seq} if seq % 5 == 0 else None
        return key, value, headers
''')

CHILD_SRC = GEN_SRC + textwrap.dedent('''
    import os, random, sys
    import pylog

    path, sync, segment_bytes, cycle, seed, ack_path = sys.argv[1:]
    cycle = int(cycle)
    rnd = random.Random(int(seed))
    fd = os.open(ack_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    log = pylog.open(path, sync=sync)
    t = log.topic("t", segment_bytes=int(segment_bytes))
    os.write(fd, b"R %d\\n" % t.end_offset)
    seq = 0
    while True:
        n = 1 if rnd.random() < 0.6 else rnd.randint(1, 40)
        recs = [make(cycle, seq + i) for i in range(n)]
        os.write(fd, b"I %d %d\\n" % (seq, n))
        if n == 1 and rnd.random() < 0.7:
            key, value, headers = recs[0]
            off = t.append(value, key=key, headers=headers)
        else:
            off = t.append_batch([r[1] for r in recs],
                                 keys=[r[0] for r in recs],
                                 headers=[r[2] for r in recs])
        os.write(fd, b"A %d %d %d\\n" % (off, seq, n))
        seq += n
''')

_ns = {}
exec(GEN_SRC, _ns)
make = _ns["make"]

CYCLES = 24


def expected(cycle, seq):
    key, value, headers = make(cycle, seq)
    return key, value, tuple(headers.items()) if headers else ()


def check_record(rec, offset, ident):
    key, value, headers = expected(*ident)
    assert rec.offset == offset
    assert bytes(rec.value) == value, f"offset {offset}: wrong value"
    assert rec.key == key, f"offset {offset}: wrong key"
    assert rec.headers == headers, f"offset {offset}: wrong headers"


def parse_acks(path):
    """(ready end_offset or None, intents [(seq, n)], acks [(off, seq, n)]).
    Only complete lines count."""
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")[:-1]  # the last piece has no newline
    ready, intents, acks = None, [], []
    for line in lines:
        kind, *nums = line.split()
        nums = [int(x) for x in nums]
        if kind == b"R":
            ready = nums[0]
        elif kind == b"I":
            intents.append(tuple(nums))
        elif kind == b"A":
            acks.append(tuple(nums))
        else:
            raise AssertionError(f"bad ack line {line!r}")
    return ready, intents, acks


def run_child(script, path, sync, segment_bytes, cycle, seed, ack_path,
              delay, from_ready):
    """Start the child, kill it with SIGKILL after `delay` seconds (counted
    from its ready line or from its start) and return its stderr."""
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path), sync, str(segment_bytes),
         str(cycle), str(seed), str(ack_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        if from_ready:
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    break
                if os.path.exists(ack_path):
                    with open(ack_path, "rb") as f:
                        if f.read(2) == b"R ":
                            break
                assert time.monotonic() < deadline, "child never got ready"
                time.sleep(0.005)
        time.sleep(delay)
        died_early = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not died_early, f"child exited by itself: {err.decode()[-3000:]}"
    assert proc.returncode == -signal.SIGKILL
    return err


@pytest.mark.parametrize("sync", ["none", "always"])
def test_acknowledged_records_survive_sigkill(tmp_path, sync):
    script = tmp_path / "child.py"
    script.write_text(CHILD_SRC)
    path = tmp_path / "log"
    rnd = random.Random(f"crash-{sync}")
    model = []  # model[offset] = (cycle, seq) of the record there
    totals = {"acked": 0, "inflight_kept": 0, "inflight_dropped": 0,
              "segments": 0}
    for cycle in range(CYCLES):
        segment_bytes = rnd.choice([64 << 10, 64 << 10, 1 << 20])
        ack_path = tmp_path / f"acks-{cycle}"
        run_child(script, path, sync, segment_bytes, cycle,
                  rnd.randrange(1 << 30), ack_path,
                  delay=rnd.uniform(0.05, 0.5), from_ready=cycle % 4 != 3)
        ready, intents, acks = (parse_acks(ack_path) if ack_path.exists()
                                else (None, [], []))
        if ready is not None:
            # The child's recovery saw exactly what the parent verified.
            assert ready == len(model), f"cycle {cycle}"

        # Acks answer intents in order; at most the last intent is open.
        assert len(intents) - len(acks) in (0, 1), f"cycle {cycle}"
        next_off = len(model)
        for (off, seq, n), intent in zip(acks, intents):
            assert (seq, n) == intent
            assert off == next_off, f"cycle {cycle}: offsets not dense"
            next_off += n
        acked_end = next_off
        inflight = intents[-1] if len(intents) > len(acks) else None

        with pylog.open(path, sync=sync) as log:
            t = log.topic("t")
            end = t.end_offset
            assert t.start_offset == 0
            if inflight is not None and end != acked_end:
                seq, n = inflight
                assert end == acked_end + n, (
                    f"cycle {cycle}: end_offset {end}: the in-flight batch "
                    f"of {n} records is partly there (acked up to "
                    f"{acked_end})")
                totals["inflight_kept"] += 1
            else:
                assert end == acked_end, (
                    f"cycle {cycle}: end_offset {end}, acknowledged "
                    f"{acked_end}, nothing was in flight")
                totals["inflight_dropped"] += inflight is not None
            old_len = len(model)
            for off, seq, n in acks:
                model.extend((cycle, seq + i) for i in range(n))
            if end > acked_end:
                seq, n = inflight
                model.extend((cycle, seq + i) for i in range(n))
            assert len(model) == end
            totals["acked"] += acked_end - old_len

            # By read(): what this cycle added and the 2000 records before
            # (recovery works on that tail); by get(): a sample of all.
            lo = max(0, old_len - 2000)
            got = list(t.read(lo))
            assert [r.offset for r in got] == list(range(lo, end))
            for rec in got:
                check_record(rec, rec.offset, model[rec.offset])
            for off in rnd.sample(range(end), min(end, 300)):
                check_record(t.get(off), off, model[off])
            with pytest.raises(pylog.OffsetOutOfRangeError):
                t.get(end)
            totals["segments"] = B.lib.pl_topic_segment_count(t._h)

    # One full pass over everything at the end.
    with pylog.open(path, sync=sync) as log:
        t = log.topic("t")
        n = 0
        for n, rec in enumerate(t.read(0), 1):
            check_record(rec, n - 1, model[n - 1])
        assert n == len(model) == t.end_offset
    # The test exercised what it claims to: many acknowledged records, and
    # segment rolls.
    assert totals["acked"] > 1000, totals
    assert totals["segments"] > 3, totals
