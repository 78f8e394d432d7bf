"""Readers in other processes (pylog.open(path, readonly=True); csrc/follow.c).

A writer process appends while reader processes follow the same directory
with consumers: each reader sees every record in offset order, exactly as
written, apart from gaps it reports (retention deleting segments under a
slow reader); a reader never returns a record that is not, byte for byte,
the record the recovered log holds at that offset, even when the writer is
killed mid-batch again and again; a read-only log writes nothing, also on
a read-only mount; a group is used by one process at a time.
"""
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import pylog

HERE = os.path.dirname(os.path.abspath(__file__))

# Shared by the writer, the readers and the parent: record seq -> bytes.
GEN_SRC = textwrap.dedent('''
    import hashlib

    def value(cycle, seq):
        """b"cycle:seq:" and a pattern: 0 bytes to 70 KiB (mostly small)."""
        h = hashlib.blake2b(b"%d:%d" % (cycle, seq), digest_size=16).digest()
        r = int.from_bytes(h[:4], "little")
        n = (r % 200 if r % 23 else r % (70 * 1024)) if r % 97 else 0
        return b"%d:%d:" % (cycle, seq) + (h * (n // 16 + 1))[:n]
''')

WRITER_SRC = GEN_SRC + textwrap.dedent('''
    import os, random, sys, time
    import pylog

    path, cycle, seconds, seed, acks = sys.argv[1:]
    cycle, seconds = int(cycle), float(seconds)
    rnd = random.Random(int(seed))
    fd = os.open(acks, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    log = pylog.open(path, sync="none")
    t = log.topic("t", segment_bytes=64 * 1024, max_bytes=1 << 20,
                  on_full="drop_oldest")
    os.write(fd, b"R %d\\n" % t.end_offset)
    seq, stop = 0, time.monotonic() + seconds
    while time.monotonic() < stop:
        n = 1 if rnd.random() < 0.6 else rnd.randint(2, 30)
        vals = [value(cycle, seq + i) for i in range(n)]
        off = t.append(vals[0]) if n == 1 else t.append_batch(vals)
        os.write(fd, b"A %d %d %d\\n" % (off, seq, n))
        seq += n
        if rnd.random() < 0.05:
            time.sleep(rnd.uniform(0, 0.01))
    os.write(fd, b"E %d\\n" % t.append(b"END"))
    log.close()
''')

READER_SRC = textwrap.dedent('''
    import hashlib, json, os, sys, time
    import pylog

    path, group, out, until = sys.argv[1:]
    until = float(until)
    res = {"records": [], "gaps": []}
    log = pylog.open(path, readonly=True)
    c = log.consumer(group, "t", on_gap=lambda g: res["gaps"].append(
        [g.from_offset, g.to_offset, g.reason]))
    deadline = time.monotonic() + until
    done = False
    while not done and time.monotonic() < deadline:
        for r in c.poll(max_records=500, timeout=0.5):
            v = bytes(r.value)
            res["records"].append([r.offset, hashlib.blake2b(
                v, digest_size=8).hexdigest(), v[:24].decode("latin-1")])
            done = done or v == b"END"
        c.commit()
    res["done"] = done
    res["committed"] = c.committed("t")
    c.close()
    log.close()
    with open(out, "w") as f:
        json.dump(res, f)
''')

_ns = {}
exec(GEN_SRC, _ns)
value = _ns["value"]


def digest(v):
    return hashlib.blake2b(bytes(v), digest_size=8).hexdigest()


def spawn(src, *args, **kw):
    return subprocess.Popen([sys.executable, "-c", src, *map(str, args)],
                            stderr=subprocess.PIPE, **kw)


def check_reader(res, expect, name):
    """Every record the reader got is the one expected at its offset, in
    order, dense apart from the gaps it reported."""
    prev = None
    gaps = [tuple(g[:2]) for g in res["gaps"]]
    for off, dig, head in res["records"]:
        assert off in expect, f"{name}: offset {off} ({head!r}) was never " \
                              "written"
        assert expect[off] == dig, f"{name}: offset {off} holds other bytes"
        if prev is not None and off != prev + 1:
            # the gaps reported (one after another) cover the jump
            at = prev + 1
            for a, b in sorted(gaps):
                if a <= at < b:
                    at = b
            assert at >= off, f"{name}: jumped from {prev} to {off} " \
                              "without a gap"
        prev = off


def parse_acks(path, cycle):
    """{offset: digest} of every acknowledged record of one writer run,
    and the END offset (or None)."""
    out, end = {}, None
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")[:-1]
    for line in lines:
        kind, *nums = line.split()
        nums = [int(x) for x in nums]
        if kind == b"A":
            off, seq, n = nums
            for i in range(n):
                out[off + i] = digest(value(cycle, seq + i))
        elif kind == b"E":
            end = nums[0]
            out[end] = digest(b"END")
    return out, end


def test_three_reader_processes_follow_a_writer(tmp_path):
    """A writer appends single records and batches (0 B to 70 KiB) for
    several seconds, rolling small segments and deleting old ones
    (max_bytes, drop_oldest), while three reader processes follow."""
    path = tmp_path / "log"
    with pylog.open(path) as log:  # the topic exists before readers look
        log.topic("t", segment_bytes=64 * 1024, max_bytes=1 << 20,
                  on_full="drop_oldest")
    acks = tmp_path / "acks"
    readers = [spawn(READER_SRC, path, f"r{i}", tmp_path / f"out{i}", 60)
               for i in range(3)]
    time.sleep(0.5)
    writer = spawn(WRITER_SRC, path, 0, 4, 1, acks)
    assert writer.wait(timeout=120) == 0, writer.stderr.read().decode()
    for p in readers:
        assert p.wait(timeout=120) == 0, p.stderr.read().decode()
    expect, end = parse_acks(acks, 0)
    assert end is not None and len(expect) > 1000
    for i in range(3):
        res = json.loads((tmp_path / f"out{i}").read_text())
        assert res["done"], f"reader {i} never saw the last record"
        check_reader(res, expect, f"reader {i}")
        assert res["records"][-1][0] == end
        assert res["committed"] == end + 1
        # retention is the only reason to skip anything
        assert all(g[2] == "retention" for g in res["gaps"])
        got = {r[0] for r in res["records"]}
        skipped = sum(b - a for a, b, _ in res["gaps"])
        assert len(got) + skipped >= end + 1 - min(got)
    with pylog.open(path, readonly=True) as log:
        assert log.groups()["r0"]["t"] == end + 1


FOLLOWER_SRC = textwrap.dedent('''
    import hashlib, json, os, sys, time
    import pylog

    path, group, out, stop_file = sys.argv[1:]
    seen = []
    log = pylog.open(path, readonly=True)
    t = log.topic("t")
    c = log.consumer(group, "t")
    while not os.path.exists(stop_file):
        for r in c.poll(max_records=200, timeout=0.2):
            seen.append([r.offset, hashlib.blake2b(
                bytes(r.value), digest_size=8).hexdigest()])
    for r in c.poll(max_records=1_000_000, timeout=0.5):
        seen.append([r.offset, hashlib.blake2b(
            bytes(r.value), digest_size=8).hexdigest()])
    c.close()
    log.close()
    with open(out, "w") as f:
        json.dump({"seen": seen, "gaps": [list(g) for g in c.gaps]}, f)
''')


def test_readers_survive_writer_kills_and_never_return_torn_records(
        tmp_path):
    """SIGKILL of the writer mid-run, 20 times: two readers follow the whole
    time. Every record they returned is, byte for byte, what the log holds
    at that offset once a writer recovered it; they go on after each new
    writer's recovery."""
    path = tmp_path / "log"
    with pylog.open(path) as log:
        log.topic("t", segment_bytes=64 * 1024, max_bytes=1 << 20,
                  on_full="drop_oldest")
    stop = tmp_path / "stop"
    readers = [spawn(FOLLOWER_SRC, path, f"f{i}", tmp_path / f"f{i}", stop)
               for i in range(2)]
    rnd = random.Random(11)
    progress = []
    try:
        for cycle in range(20):
            w = spawn(WRITER_SRC, path, cycle, 30, rnd.randrange(1 << 30),
                      tmp_path / f"acks{cycle}")
            time.sleep(rnd.uniform(0.15, 0.5))
            w.send_signal(signal.SIGKILL)
            w.wait()
            with pylog.open(path, readonly=True) as log:
                progress.append(log.topic("t").end_offset)
    finally:
        stop.write_text("stop")
        for p in readers:
            assert p.wait(timeout=60) == 0, p.stderr.read().decode()
    assert progress == sorted(progress) and progress[-1] > progress[0]
    with pylog.open(path) as log:  # a writer recovers what the last left
        t = log.topic("t")
        start, end = t.start_offset, t.end_offset
        final = {r.offset: digest(r.value) for r in t.read(start)}
    for i in range(2):
        res = json.loads((tmp_path / f"f{i}").read_text())
        seen = res["seen"]
        assert len(seen) > 1000
        offs = [o for o, _ in seen]
        assert offs == sorted(set(offs)), f"reader {i}: not in order"
        # what is still retained is what the reader saw, byte for byte
        for off, dig in seen:
            if off >= start:
                assert final[off] == dig, f"reader {i}: offset {off} differs"
        # and it saw everything up to where the last writer left it
        assert offs[-1] == end - 1, f"reader {i} stopped at {offs[-1]}"


def _tree(path):
    out = {}
    for root, dirs, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            st = os.stat(p)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, path)] = (st.st_size,
                                                  hashlib.sha256(
                                                      fh.read()).hexdigest())
    return out


def _writes_all_raise(log):
    t = log.topic("t")
    for call in (lambda: t.append(b"x"), lambda: t.append_batch([b"x"]),
                 t.flush, t.apply_retention, log.flush,
                 lambda: log.topic("new"), lambda: log.topic("t", max_bytes=1),
                 lambda: log.delete_topic("t"), lambda: log.delete_group("g")):
        with pytest.raises(pylog.ReadOnlyError):
            call()
    with pytest.raises(pylog.TopicNotFoundError):
        log.consumer("g", "new")
    with pytest.raises(pylog.ReadOnlyError):
        log.consumer("g", "new", create=True)


@pytest.mark.parametrize("writer_running", [False, True])
def test_a_read_only_log_writes_nothing(tmp_path, writer_running):
    path = tmp_path / "log"
    w = pylog.open(path)
    t = w.topic("t", segment_bytes=4096)
    t.append_batch([b"v%d" % i for i in range(500)])
    w.consumer("g", "t").close()
    if not writer_running:
        w.close()
    before = _tree(path)
    with pylog.open(path, readonly=True) as log:
        assert log.topics() == ["t"]
        r = log.topic("t")
        assert [bytes(x.value) for x in r.read(0)] == \
               [b"v%d" % i for i in range(500)]
        assert r.offset_for_time(0) == 0
        assert r.stats()["end_offset"] == 500
        _writes_all_raise(log)
    after = _tree(path)
    if writer_running:
        w.close()
    # nothing changed but the catalog's lock file (LMDB's reader table)
    changed = {k for k in set(before) | set(after)
               if before.get(k) != after.get(k)}
    assert changed <= {"catalog/lock.mdb"}, changed


@pytest.fixture
def ro_mount(tmp_path):
    """A read-only bind mount of tmp_path/log at tmp_path/ro."""
    src, dst = tmp_path / "log", tmp_path / "ro"
    src.mkdir()
    dst.mkdir()
    r = subprocess.run(["mount", "--bind", str(src), str(dst)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.fail(f"cannot bind-mount (the tests run as root): "
                    f"{r.stderr.decode()}")
    subprocess.run(["mount", "-o", "remount,bind,ro", str(dst)], check=True)
    try:
        yield src, dst
    finally:
        subprocess.run(["umount", str(dst)], check=True)


RO_READER_SRC = textwrap.dedent('''
    import json, sys
    import pylog
    out = {}
    with pylog.open(sys.argv[1], readonly=True) as log:
        r = log.topic("t")
        out["end"] = r.end_offset
        out["groups"] = log.groups()
        c = log.consumer("g", "t")
        out["position"] = c.position("t")
        out["polled"] = len(c.poll(max_records=10))
        try:
            c.commit()
        except pylog.ReadOnlyError:
            out["commit"] = "ReadOnlyError"
        try:
            r.append(b"x")
        except pylog.ReadOnlyError:
            out["append"] = "ReadOnlyError"
    print(json.dumps(out))
''')


@pytest.mark.parametrize("writer_running", [False, True])
def test_a_reader_on_a_read_only_mount(ro_mount, writer_running):
    """A reader process on a read-only bind mount, with and without a
    writer (this process) on the writable path."""
    src, ro = ro_mount
    w = pylog.open(src)
    t = w.topic("t", segment_bytes=4096)
    t.append_batch([b"a%d" % i for i in range(300)])
    c = w.consumer("g", "t")
    c.poll(max_records=100)
    c.commit()
    c.close()
    if writer_running:  # other processes see a position once durable
        t.append_batch([b"b%d" % i for i in range(50)])
        w.flush()
    else:
        w.close()
    with pytest.raises(OSError):
        open(ro / "probe", "w")  # the mount is read-only indeed
    p = subprocess.run([sys.executable, "-c", RO_READER_SRC, str(ro)],
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr.decode()
    out = json.loads(p.stdout)
    assert out == {"end": 350 if writer_running else 300,
                   "groups": {"g": {"t": 100}}, "position": 100,
                   "polled": 10, "commit": "ReadOnlyError",
                   "append": "ReadOnlyError"}
    if writer_running:
        w.close()
    # and in this process too (a shared catalog cannot be written from a
    # read-only mount either when no writer holds it)
    if not writer_running:
        with pylog.open(ro, readonly=True) as log:
            _writes_all_raise(log)


GROUP_SRC = textwrap.dedent('''
    import sys, time
    import pylog
    log = pylog.open(sys.argv[1], readonly=True)
    c = log.consumer("shared", "t")
    print("ready", flush=True)
    time.sleep(30)
''')


def test_two_processes_with_one_group_get_a_clear_error(tmp_path):
    path = tmp_path / "log"
    with pylog.open(path) as log:
        log.topic("t").append(b"x")
    p = spawn(GROUP_SRC, path, stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline() == b"ready\n"
        with pylog.open(path, readonly=True) as log:
            with pytest.raises(pylog.GroupInUseError, match="shared"):
                log.consumer("shared", "t")
            log.consumer("other", "t").close()  # others are free
        with pylog.open(path) as log:  # the writer's consumers too
            with pytest.raises(pylog.GroupInUseError):
                log.consumer("shared", "t")
    finally:
        p.kill()
        p.wait()
    with pylog.open(path, readonly=True) as log:  # freed when it died
        log.consumer("shared", "t").close()


def test_retention_under_a_reader_keeps_its_views_and_reports_a_gap(tmp_path):
    path = tmp_path / "log"
    w = pylog.open(path)
    t = w.topic("t", segment_bytes=4096, retention_bytes=20_000)
    big = [bytes([i % 251]) * 1500 for i in range(4)]
    t.append_batch(big)  # zero-copy values in the first segment
    r = pylog.open(path, readonly=True)
    rt = r.topic("t")
    c = r.consumer("slow", "t")
    first = c.poll(max_records=2)
    views = [x.value for x in first]
    assert all(isinstance(v, memoryview) for v in views)
    for i in range(200):  # retention deletes the first segments
        t.append(b"%d" % i * 300)
    assert t.start_offset > 4
    assert [bytes(v) for v in views] == big[:2]  # still readable
    got = c.poll(max_records=1000)
    assert c.gaps and c.gaps[0].reason == "retention"
    assert c.gaps[0].from_offset == 2
    assert got[0].offset == rt.start_offset == t.start_offset
    c.close()
    r.close()
    w.close()


def test_cross_process_wake_is_prompt(tmp_path):
    """A reader process blocked in poll wakes on another process's append
    (the figures are in bench/readers.py; here only that it does)."""
    path = tmp_path / "log"
    with pylog.open(path) as log:
        log.topic("t").append(b"first")
    src = textwrap.dedent('''
        import sys, time
        import pylog
        log = pylog.open(sys.argv[1], readonly=True)
        c = log.consumer("w", "t", start="latest")
        print("ready", flush=True)
        recs = c.poll(timeout=20)
        print(bytes(recs[0].value).decode(), flush=True)
    ''')
    p = spawn(src, path, stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline() == b"ready\n"
        with pylog.open(path) as log:
            log.topic("t").append(b"woken")
            assert p.stdout.readline() == b"woken\n"
        assert p.wait(timeout=30) == 0
    finally:
        p.kill()


COMMITTER_SRC = textwrap.dedent('''
    import sys
    import pylog
    with pylog.open(sys.argv[1], readonly=True) as log:
        c = log.consumer("remote", "t")
        n = 0
        while n < int(sys.argv[2]):
            n += len(c.poll(max_records=1000, timeout=5))
        c.commit()
        print(c.committed("t"), flush=True)
''')


def test_the_writer_honours_positions_another_process_committed(tmp_path):
    """retain_until_consumed: segments stay until a reader process's group
    commits past them, then go (the writer reads other processes'
    positions every second)."""
    path = tmp_path / "log"
    with pylog.open(path) as log:
        t = log.topic("t", segment_bytes=4096, retain_until_consumed=True)
        for i in range(300):
            t.append(b"%04d" % i * 25)
        assert t.start_offset == 0  # nobody consumed: nothing goes
        with pylog.open(path, readonly=True) as ro:  # registers the group
            ro.consumer("remote", "t", start="earliest").close()
        r = subprocess.run([sys.executable, "-c", COMMITTER_SRC, str(path),
                            "200"], capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr.decode()
        committed = int(r.stdout)
        assert committed >= 200
        deadline = time.monotonic() + 10
        while t.start_offset == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
            t.apply_retention()
        assert 0 < t.start_offset <= committed
        for i in range(50):  # and rolls keep honouring it
            t.append(b"x" * 100)
        assert t.start_offset <= committed
