"""Corruption tests (DESIGN.md, "Testing shape"; invariants 2, 5, 6).

Cut and flip bytes of segment (.log) and index (.idx) files of a closed log,
sealed segments and the active one, then reopen and read every offset by
get() and by read(). Opening and reading must never crash the interpreter
and never return wrong data: each offset gives exactly the record that was
written or a CorruptionError naming the file and the offset. A torn active
tail is cut back to a batch boundary (offsets past it are then out of
range, everything below is intact); a damaged index is rebuilt; a corrupt
sealed segment leaves the rest of the log readable.

The randomized cases run in a child process (this file run as a script),
so that a segfault fails the test instead of killing pytest.
"""
import faulthandler
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys

import pytest

import pylog
from conftest import segment_base, segment_files, topic_dir

SEGMENT_BYTES = 4096
INDEX_INTERVAL = 128
N_RECORDS = 420
TS0 = 1_700_000_000_000


def make(i):
    """(key, value, headers, timestamp) of record i."""
    h = hashlib.blake2b(b"rec-%d" % i, digest_size=32).digest()
    r = int.from_bytes(h[:4], "little")
    n = 1200 + r % 1800 if i % 17 == 0 else r % 400
    value = b"%d:" % i + (h * (n // 32 + 1))[:n]
    key = None if i % 4 == 1 else b"key-%d" % i
    headers = (("i", b"%d" % i),) if i % 6 == 0 else ()
    return key, value, headers, TS0 + 3 * i


def build(path):
    """Write the pristine log; return the first offset of every batch and
    the end offset."""
    rnd = random.Random(20240611)
    starts, off = [], 0
    with pylog.open(path, segment_bytes=SEGMENT_BYTES,
                    index_interval_bytes=INDEX_INTERVAL) as log:
        t = log.topic("t")
        nsegs = active_batches = 0
        # Go on until the active segment holds several batches too.
        while off < N_RECORDS or active_batches < 8:
            if off < N_RECORDS:
                n = 1 if rnd.random() < 0.5 else rnd.randint(2, 12)
            else:
                n = rnd.choice([1, 1, 2, 3])
            recs = [make(off + i) for i in range(n)]
            if n == 1:
                key, value, headers, ts = recs[0]
                got = t.append(value, key=key, headers=headers or None,
                               timestamp=ts)
            else:
                got = t.append_batch([r[1] for r in recs],
                                     keys=[r[0] for r in recs],
                                     headers=[r[2] or None for r in recs],
                                     timestamps=[r[3] for r in recs])
            assert got == off
            starts.append(off)
            off += n
            segs = len(logs_of(path))
            active_batches = 1 if segs != nsegs else active_batches + 1
            nsegs = segs
    return starts, off


def logs_of(root):
    return segment_files(root, "t")


def segment_bases(root):
    return [segment_base(p) for p in logs_of(root)]


def same(rec, off):
    key, value, headers, ts = make(off)
    return (rec.offset == off and rec.key == key and
            bytes(rec.value) == value and rec.headers == headers and
            rec.timestamp == ts)


def check_corruption_error(exc, off, paths):
    msg = str(exc)
    assert f"offset {off}" in msg, msg
    assert any(p in msg for p in paths), f"{msg!r} names none of {paths}"


def check_lost(exc, off, t):
    """A DataLossError names a range holding off that the topic reports."""
    gap = exc.gap
    assert gap.reason == "lost" and gap.from_offset <= off < gap.to_offset
    assert any(a <= off < b for a, b in t.lost_ranges()), (off, gap)


def scan_log(t, end, log_paths):
    """Read every offset by get() and by read(); return {offset: True for an
    exact record, False for a CorruptionError or a reported lost range (a
    segment cut short: its records are gone, not wrong)}. Anything else
    fails."""
    by_get = {}
    for off in range(end):
        try:
            rec = t.get(off)
        except pylog.CorruptionError as exc:
            check_corruption_error(exc, off, log_paths)
            by_get[off] = False
        except pylog.DataLossError as exc:
            check_lost(exc, off, t)
            by_get[off] = False
        else:
            assert same(rec, off), f"get({off}) returned wrong data: {rec!r}"
            by_get[off] = True
    with pytest.raises(pylog.OffsetOutOfRangeError):
        t.get(end)
    by_read, off = {}, 0
    while off < end:
        try:
            for rec in t.read(off):
                assert same(rec, off), f"read() at {off}: wrong data {rec!r}"
                by_read[off] = True
                off += 1
        except pylog.CorruptionError as exc:
            check_corruption_error(exc, off, log_paths)
            by_read[off] = False
            off += 1
        except pylog.DataLossError as exc:
            check_lost(exc, off, t)
            by_read[off] = False
            off += 1
        else:
            assert off == end
    return by_get, by_read


# ---- damage ---------------------------------------------------------------

def data_len(path):
    """Bytes up to the last non-zero one (the active segment is
    preallocated with zeros)."""
    with open(path, "rb") as f:
        return len(f.read().rstrip(b"\0"))


def damage(path, rnd, is_index):
    """Apply one random damage to the file; return a description."""
    size = os.path.getsize(path)
    used = max(1, data_len(path))
    # Mostly inside the data, sometimes anywhere (the zero tail too).
    span = used if rnd.random() < 0.85 else max(1, size)
    kind = rnd.choice(["flip", "flip", "flip", "truncate", "zero", "garbage",
                       "header", "extend"] + (["delete"] if is_index else []))
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        if kind == "flip":
            for _ in range(rnd.randint(1, 3)):
                p = rnd.randrange(span)
                data[p] ^= rnd.randint(1, 255)
            desc = "flip"
        elif kind == "truncate":
            p = rnd.randrange(span)
            data = data[:p]
            desc = f"truncate to {p}"
        elif kind == "zero":
            p = rnd.randrange(span)
            n = rnd.randint(1, 600)
            data[p:p + n] = bytes(len(data[p:p + n]))
            desc = f"zero [{p}, {p + n})"
        elif kind == "garbage":
            p = rnd.randrange(span)
            n = rnd.randint(1, 64)
            data[p:p + n] = rnd.randbytes(len(data[p:p + n]))
            desc = f"garbage at {p}"
        elif kind == "header":
            p = rnd.randrange(56 if is_index else 32)
            if p < len(data):
                data[p] ^= 1 << rnd.randrange(8)
            desc = f"header byte {p}"
        elif kind == "extend":
            data += rnd.randbytes(rnd.randint(1, 100))
            desc = "extend"
        else:
            desc = "delete"
        f.seek(0)
        f.truncate()
        f.write(data)
    if kind == "delete":
        os.unlink(path)
    return f"{kind} {os.path.basename(path)}: {desc}"


def run_case(pristine, work, starts, end0, target, rnd):
    """Copy the pristine log to work, damage it, reopen and check."""
    if os.path.exists(work):
        shutil.rmtree(work)
    shutil.copytree(pristine, work)
    logs = logs_of(work)
    bases = segment_bases(work)
    sealed = list(range(len(logs) - 1))
    active = len(logs) - 1
    damaged_logs = set()
    descs = []
    if target == "sealed-log":
        victims = [(rnd.choice(sealed), ".log")]
    elif target == "sealed-idx":
        victims = [(rnd.choice(sealed), ".idx")]
    elif target == "active-log":
        victims = [(active, ".log")]
    else:
        victims = [(rnd.randrange(len(logs)),
                    rnd.choice([".log", ".log", ".idx"]))
                   for _ in range(rnd.randint(2, 4))]
    for i, ext in victims:
        if ext == ".idx" and i == active:
            ext = ".log"  # the active segment has no index file
        path = logs[i][:-4] + ext
        if not os.path.exists(path):
            continue
        descs.append(damage(path, rnd, ext == ".idx"))
        if ext == ".log":
            damaged_logs.add(i)
    print("  " + "; ".join(descs), file=sys.stderr, flush=True)

    with pylog.open(work) as log:
        t = log.topic("t")
        end = t.end_offset
        print(f"  -> end_offset {end} of {end0}", file=sys.stderr, flush=True)
        assert t.start_offset == 0
        # The clean close vouched for end_offset: damage never moves it
        # back (offsets are never reused); what is gone is a lost range.
        assert end == end0
        by_get, by_read = scan_log(t, end, [logs[i] for i in damaged_logs])

        def seg_of(off):
            return max(i for i, b in enumerate(bases) if b <= off)

        for off in range(end):
            if seg_of(off) not in damaged_logs:
                # Undamaged segments read back intact.
                assert by_get[off] and by_read[off], (
                    f"offset {off} in an undamaged segment is unreadable")
        if target == "sealed-idx":
            # The index was rebuilt from the segment, byte for byte.
            (i, _), = victims
            with open(os.path.join(topic_dir(pristine, "t"),
                                   os.path.basename(logs[i])[:-4] + ".idx"),
                      "rb") as f:
                want = f.read()
            with open(logs[i][:-4] + ".idx", "rb") as f:
                assert f.read() == want, "index file was not rebuilt"
        # The log stays usable: appends continue at the (new) end.
        assert t.append(b"after", timestamp=TS0) == end
        assert bytes(t.get(end).value) == b"after"
    with pylog.open(work) as log:
        t = log.topic("t")
        assert t.end_offset == end + 1
        assert bytes(t.get(end).value) == b"after"
    return sum(not v for v in by_get.values())


def worker(pristine, work, plan_path, target, ncases, seed):
    faulthandler.enable()
    with open(plan_path) as f:
        plan = json.load(f)
    rnd = random.Random(f"{seed}-{target}")
    errors = 0
    for case in range(ncases):
        print(f"case {case}", file=sys.stderr, flush=True)
        errors += run_case(pristine, work, plan["starts"], plan["end"],
                           target, rnd)
    print(json.dumps({"cases": ncases, "corrupt_reads": errors}))


# ---- tests ----------------------------------------------------------------

@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    path = str(root / "log")
    starts, end = build(path)
    plan = root / "plan.json"
    plan.write_text(json.dumps({"starts": starts, "end": end}))
    logs = logs_of(path)
    assert len(logs) >= 8, "want several sealed segments"
    for p in logs[:-1]:
        assert os.path.exists(p[:-4] + ".idx"), p
    # The pristine log reads back as written.
    with pylog.open(path) as log:
        t = log.topic("t")
        by_get, by_read = scan_log(t, end, [])
        assert all(by_get.values()) and all(by_read.values())
    return path, str(plan), starts, end


@pytest.mark.parametrize("target,ncases", [
    ("sealed-log", 150), ("sealed-idx", 80), ("active-log", 150),
    ("multi", 120)])
def test_random_damage_never_returns_wrong_data(pristine, tmp_path, target,
                                                ncases):
    path, plan, _, _ = pristine
    proc = subprocess.run(
        [sys.executable, __file__, path, str(tmp_path / "work"), plan, target,
         str(ncases), "7"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (
        f"worker failed (rc {proc.returncode}):\n{proc.stderr[-6000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["cases"] == ncases
    if target in ("sealed-log", "multi"):
        # The damage was real: some reads met it.
        assert result["corrupt_reads"] > 0


def test_corrupt_sealed_segment_does_not_stop_open(pristine, tmp_path):
    src, _, _, end = pristine
    path = str(tmp_path / "log")
    shutil.copytree(src, path)
    logs = logs_of(path)
    bases = segment_bases(path)
    bad = 2
    with open(logs[bad], "r+b") as f:       # the header: the whole segment
        f.write(b"XXXXXXXX")
    with open(logs[bad + 2], "r+b") as f:   # one batch in the middle
        f.seek(os.path.getsize(logs[bad + 2]) // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x40]))
    with pylog.open(path) as log:
        t = log.topic("t")
        assert t.end_offset == end
        by_get, by_read = scan_log(t, end, [logs[bad], logs[bad + 2]])
        assert by_get == by_read
        for off in range(end):
            seg = max(i for i, b in enumerate(bases) if b <= off)
            if seg == bad:
                assert not by_get[off]
            elif seg != bad + 2:
                assert by_get[off]
        assert not all(by_get[o] for o in range(bases[bad + 2],
                                                bases[bad + 3]))
        with pytest.raises(pylog.CorruptionError) as ei:
            t.get(bases[bad] + 1)
        assert logs[bad] in str(ei.value)
        assert f"offset {bases[bad] + 1}" in str(ei.value)
        assert t.append(b"more") == end


def test_missing_sealed_segment_is_reported_not_fatal(pristine, tmp_path):
    """Offsets of a segment file removed by hand are a lost range, found
    when the segment before it (whose data ends early) is read; the rest
    of the log reads and appends as before."""
    src, _, _, end = pristine
    path = str(tmp_path / "log")
    shutil.copytree(src, path)
    logs = logs_of(path)
    bases = segment_bases(path)
    os.unlink(logs[3])
    os.unlink(logs[3][:-4] + ".idx")
    with pylog.open(path) as log:
        t = log.topic("t")
        assert (t.start_offset, t.end_offset) == (0, end)
        by_get, by_read = scan_log(t, end, [logs[2]])
        assert by_get == by_read
        assert [o for o in by_get if not by_get[o]] == list(
            range(bases[3], bases[4]))
        assert t.lost_ranges() == [(bases[3], bases[4])]
        assert t.append(b"more") == end


@pytest.mark.parametrize("how", ["flip", "truncate", "delete", "stale"])
def test_damaged_index_is_rebuilt(pristine, tmp_path, how):
    src, _, _, end = pristine
    path = str(tmp_path / "log")
    shutil.copytree(src, path)
    logs = logs_of(path)
    idx = [p[:-4] + ".idx" for p in logs[:-1]]
    originals = {}
    for i, p in enumerate(idx):
        with open(p, "rb") as f:
            originals[p] = f.read()
        data = bytearray(originals[p])
        if how == "flip":
            data[56 + (i * 37) % (len(data) - 56)] ^= 0x10
        elif how == "truncate":
            data = data[:len(data) - 5]
        elif how == "stale":
            # A well-formed index of another segment: header fields mismatch.
            data = bytearray(originals[idx[0]] if i else
                             open(idx[1], "rb").read())
        if how == "delete":
            os.unlink(p)
        else:
            with open(p, "wb") as f:
                f.write(data)
    with pylog.open(path) as log:
        t = log.topic("t")
        by_get, by_read = scan_log(t, end, [])
        assert all(by_get.values()) and all(by_read.values())
        # offset_for_time goes through the (rebuilt) time entries too.
        for off in range(0, end, 37):
            assert t.offset_for_time(TS0 + 3 * off) == off
    for p in idx:
        with open(p, "rb") as f:
            assert f.read() == originals[p], f"{p} not rebuilt"


@pytest.mark.parametrize("vouched", [False, True])
def test_torn_active_tail_is_cut_to_batch_boundary(pristine, tmp_path,
                                                   vouched):
    """A tail cut into the last batch: without a checkpoint vouching for
    it (a crash before anything was synced), the topic ends at the batch
    boundary and appends go on there; with one (the clean close's), the
    batch's offsets are a lost range and appends go on after it."""
    src, _, starts, end = pristine
    path = str(tmp_path / "log")
    shutil.copytree(src, path)
    active = logs_of(path)[-1]
    if not vouched:
        os.unlink(os.path.join(os.path.dirname(active), "checkpoint"))
    used = data_len(active)
    with open(active, "r+b") as f:
        f.truncate(used - 3)  # cut into the last batch
    last = starts[-1]
    new_end = end if vouched else last
    with pylog.open(path) as log:
        t = log.topic("t")
        assert t.end_offset == new_end
        assert t.lost_ranges() == ([(last, end)] if vouched else [])
        with pytest.raises(pylog.DataLossError if vouched
                           else pylog.OffsetOutOfRangeError):
            t.get(last)
        assert [r.offset for r in t.read(0, max_records=last)] == list(
            range(last))
        assert all(same(r, r.offset) for r in t.read(0, max_records=last))
        assert t.append(b"new") == new_end
    with pylog.open(path) as log:
        t = log.topic("t")
        assert t.end_offset == new_end + 1
        assert bytes(t.get(new_end).value) == b"new"


def test_index_entry_at_the_first_record_of_a_batch_is_not_corruption(
        tmp_path):
    """A batch longer than index_interval_bytes, starting just before an
    index entry is due, gets its entry at its first record (not at the
    batch). Readers took that valid entry for damage ("index entry outside
    its batch"); the SIGKILL test found it."""
    path = str(tmp_path)
    with pylog.open(path, index_interval_bytes=4096,
                    segment_bytes=16384) as log:
        t = log.topic("t")
        # The first batch gets the entry at position 32; the second starts
        # at 32 + 4070, 26 bytes before the next entry is due, and its first
        # record (48 bytes further) is past that point.
        t.append(b"x" * (4070 - 48 - 20))
        assert t.append_batch([b"y" * 3000, b"z" * 3000]) == 1
        assert [bytes(t.get(i).value[:1]) for i in range(3)] == [b"x", b"y",
                                                                  b"z"]
        t.append(b"w" * 9000)  # seal the segment: its index goes to a file
    with pylog.open(path) as log:  # the sealed index file is used now
        t = log.topic("t")
        assert [bytes(t.get(i).value[:1]) for i in range(4)] == [
            b"x", b"y", b"z", b"w"]
        assert [bytes(r.value[:1]) for r in t.read(1)] == [b"y", b"z", b"w"]


if __name__ == "__main__":
    pristine_, work_, plan_, target_, ncases_, seed_ = sys.argv[1:]
    worker(pristine_, work_, plan_, target_, int(ncases_), int(seed_))
