"""What a gateway runs out of: file descriptors, maps, disk, and what a
new user meets on the first day (csrc/fcache.c, csrc/append.c,
pylog/_log.py).

  - 10,000 topics created, appended to and read (and read again after a
    reopen) in a child process limited to 1,024 file descriptors: the
    descriptors and maps the log keeps stay within its limits, and each
    topic's files are its data plus at most one grow step (64 KiB).
  - A multi-segment log read under a 1 MiB map budget and 8 files:
    zero-copy views taken early stay correct while the reads evict their
    maps.
  - ``max_bytes`` of 1, 2 and 4 MiB with no other option, for each
    ``on_full``, under 20x the cap of appends (single records and
    batches): the topic's files never exceed the cap, at least 90% of it
    holds record bytes when on_full first acts, drop_oldest never refuses
    a batch smaller than the cap, reject and block refuse and write
    nothing.
  - Lifetime counters survive a clean close, and a SIGKILL within what the
    last checkpoint recorded.
  - Day-one defects: a consumer of a misspelt topic, opening a directory of
    other files or a regular file.
  - Errors name the file and are pylog errors: a LOCK that is a directory,
    a topics that is a file, a directory without write permission (as
    another user, and on a read-only bind mount), a commit on a full disk
    (a small tmpfs mounted by the test). Mounting needs root: without it
    these tests are skipped, and with CI set they fail.
"""
import contextlib
import errno
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

import childproc
import pylog
from conftest import SEG_HDR, batch_size, topic_dir

GROW_STEP = 64 << 10      # the most a topic's active file may run ahead
BLOCK = 4096
NOBODY = 65534


def roundup(n, k=BLOCK):
    return -(-n // k) * k


def allocated(path):
    return os.stat(path).st_blocks * 512


def need_root(what):
    """Skip (fail with CI set) a test that needs root to mount or setuid."""
    if os.geteuid() == 0:
        return
    msg = f"{what} needs root"
    if os.environ.get("CI"):
        pytest.fail(msg + " (CI is set)")
    pytest.skip(msg)


@contextlib.contextmanager
def tmpfs(size):
    """A tmpfs of `size` mounted on a new directory, unmounted after."""
    need_root("mounting a tmpfs")
    mnt = tempfile.mkdtemp(prefix="pylog-tmpfs-")
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}",
                        "tmpfs", mnt], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        os.rmdir(mnt)
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs: {exc}")
        pytest.skip(f"cannot mount a tmpfs: {exc}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", mnt], check=False)
        os.rmdir(mnt)


# ---- 10,000 topics under 1,024 descriptors ----------------------------------
N_TOPICS = 10_000
PER_TOPIC = 5


def small_value(i, j):
    return b"%d-%d:" % (i, j) + hashlib.blake2b(b"%d-%d" % (i, j),
                                                digest_size=24).digest()


def _fds():
    return len(os.listdir("/proc/self/fd"))


def child_topics(path):
    import resource
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
    out = {"fds": [], "stats": []}

    def sample(log):
        out["fds"].append(_fds())
        out["stats"].append(log.stats())

    names = [f"dev-{i:05d}" for i in range(N_TOPICS)]
    log = pylog.open(path)
    out["limits"] = [log.max_open_files, log.max_map_bytes]
    for i, name in enumerate(names):
        t = log.topic(name)
        assert t.append_batch([small_value(i, j)
                               for j in range(PER_TOPIC)]) == 0
        if i % 500 == 0:
            sample(log)
    sample(log)
    # Disk while the log is open: each topic's files against its data.
    worst, total_alloc, total_data = 0, 0, 0
    for i, name in enumerate(names):
        d = topic_dir(path, name)
        data = SEG_HDR + batch_size([(None, small_value(i, j), None)
                                     for j in range(PER_TOPIC)])
        alloc = sum(allocated(os.path.join(d, f)) for f in os.listdir(d))
        small = sum(roundup(os.path.getsize(os.path.join(d, f)))
                    for f in os.listdir(d) if not f.endswith(".log"))
        worst = max(worst, alloc - small - data)
        total_alloc += alloc
        total_data += data
    out["worst_log_overhead"] = worst
    out["total_alloc"], out["total_data"] = total_alloc, total_data

    def read_all(log, phase):
        bad = 0
        for i, name in enumerate(names):
            recs = list(log.topic(name).read(0))
            if [bytes(r.value) for r in recs] != [small_value(i, j)
                                                  for j in range(PER_TOPIC)]:
                bad += 1
            if i % 500 == 0:
                sample(log)
        sample(log)
        out[phase] = bad

    read_all(log, "bad_reads")
    log.close()
    log = pylog.open(path)
    read_all(log, "bad_reads_reopened")
    log.close()
    out["fds_closed"] = _fds()
    print(json.dumps(out))


def test_ten_thousand_topics_under_1024_descriptors(tmp_path):
    # fsync is what makes 10,000 topic creations slow on a disk; a tmpfs
    # keeps the test short and still counts allocated blocks.
    if os.geteuid() == 0:
        ctx = tmpfs("3g")
    else:
        ctx = contextlib.nullcontext(str(tmp_path))
    with ctx as root:
        found = childproc.run_json([__file__, "topics",
                                    os.path.join(root, "log")], timeout=900)
    max_files, max_map = found["limits"]
    assert found["bad_reads"] == 0 and found["bad_reads_reopened"] == 0
    for st in found["stats"]:
        assert st["open_files"] <= max_files, st
        assert st["map_bytes"] <= max_map, st
    # Descriptors: the cache's, and a few of the interpreter's.
    assert max(found["fds"]) <= max_files + 32, max(found["fds"])
    assert found["fds_closed"] <= 16, found["fds_closed"]
    # Disk follows the data: no preallocation beyond one grow step.
    assert found["worst_log_overhead"] <= GROW_STEP + BLOCK, found
    assert found["total_alloc"] <= found["total_data"] + N_TOPICS * (
        GROW_STEP + 4 * BLOCK), found


def test_write_windows_shrink_to_fit_every_topic_in_the_map_budget(tmp_path):
    # 200 topics under a 2 MiB map budget: a 64 KiB window each would need
    # 12.5 MiB, and round-robin appends would evict and remake a window
    # (and reopen a descriptor) on every append. Windows sized to a share
    # of the budget keep one mapped per topic.
    n, rounds, budget = 200, 20, 2 << 20
    with pylog.open(str(tmp_path / "log"), max_map_bytes=budget,
                    max_open_files=16) as log:
        topics = [log.topic(f"t{i}") for i in range(n)]
        for t in topics:
            t.append(b"first")
        made = log.stats()["maps_made"]
        for r in range(rounds):
            for i, t in enumerate(topics):
                t.append(b"%d/%d" % (i, r))
        st = log.stats()
        assert st["map_bytes"] <= budget and st["open_files"] <= 16, st
        # ~20 records of ~60 bytes fit the first 4 KiB window of each topic
        assert st["maps_made"] - made <= n // 10, st
        for i, t in enumerate(topics):
            assert [bytes(r.value) for r in t.read(1)] == [
                b"%d/%d" % (i, r) for r in range(rounds)]


# ---- zero-copy views held across map evictions ------------------------------
def big_value(i):
    h = hashlib.blake2b(b"big-%d" % i).digest()
    return h * (16 + h[0] % 100)   # 1 KiB to 7 KiB: zero-copy views


def mapped_bytes(root):
    """Bytes of the process's mappings of files below root."""
    total = 0
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5].strip().startswith(root + "/"):
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                total += hi - lo
    return total


def test_zero_copy_views_survive_map_eviction(tmp_path):
    path = str(tmp_path / "log")
    n = 4000
    with pylog.open(path) as log:
        t = log.topic("t", segment_bytes=256 << 10)
        for off in range(0, n, 8):
            t.append_batch([big_value(off + k) for k in range(8)])
    budget, files = 1 << 20, 8
    with pylog.open(path, max_map_bytes=budget, max_open_files=files) as log:
        t = log.topic("t")
        assert len(os.listdir(topic_dir(path, "t"))) > 2 * 40

        def within_limits():
            st = log.stats()
            assert st["open_files"] <= files, st
            assert st["map_bytes"] <= budget, st

        held = [t.get(off) for off in range(0, n, 97)]  # across segments
        assert all(isinstance(r.value, memoryview) for r in held)
        within_limits()
        evictions = log.stats()["evictions"]
        for rec in t.read(0):
            assert bytes(rec.value) == big_value(rec.offset)
            if rec.offset % 100 == 0:
                within_limits()
        rnd = random.Random(5)
        for k in range(2000):
            off = rnd.randrange(n)
            assert bytes(t.get(off).value) == big_value(off)
            if k % 100 == 0:
                within_limits()
        # appends to the active segment while the views are held
        for off in range(n, n + 200, 4):
            t.append_batch([big_value(off + k) for k in range(4)])
        assert log.stats()["evictions"] > evictions + 40
        for rec in held:
            assert bytes(rec.value) == big_value(rec.offset), rec.offset
        views = [r.value for r in held]
        del held, rec
        for v in views[::3]:
            assert len(bytes(v)) > 1000
        del views, v
        within_limits()
        # Without views, what stays mapped is about the budget.
        assert mapped_bytes(os.path.join(path, "topics")) <= 2 * budget


# ---- small budgets with default options -------------------------------------
POOL = random.Random(99).randbytes(1 << 20)


def payload(rnd, lo, hi):
    n = rnd.randint(lo, hi)
    at = rnd.randrange(len(POOL) - n)
    return POOL[at:at + n]


def disk_bytes(d):
    with os.scandir(d) as it:
        return sum(e.stat().st_size for e in it
                   if e.name.endswith((".log", ".idx")))


@pytest.mark.parametrize("mode", ["single", "batch"])
@pytest.mark.parametrize("on_full", ["drop_oldest", "reject", "block"])
@pytest.mark.parametrize("cap_mib", [1, 2, 4])
def test_small_budget_with_default_options(tmp_path, cap_mib, on_full, mode):
    cap = cap_mib << 20
    rnd = random.Random(f"{cap_mib}-{on_full}-{mode}")
    extra = {"full_timeout_ms": 20} if on_full == "block" else {}
    with pylog.open(tmp_path / "log") as log:
        t = log.topic("s", max_bytes=cap, on_full=on_full, **extra)
        d = topic_dir(tmp_path / "log", "s")
        values = {}                  # offset -> value, of what is held
        lowest = 0                   # the lowest offset in values
        attempted = on_disk = 0      # record bytes: tried, held now
        acted = None                 # record bytes held when on_full acted
        refusals = 0
        while attempted < 20 * cap and refusals < (
                10 if on_full == "block" else 200):
            if mode == "single":
                vals = [payload(rnd, 1000, 12000)]
            elif acted is not None and rnd.random() < 0.04:
                # a batch up to 90% of the cap, once on_full has acted
                size = rnd.randint(cap // 4, cap * 9 // 10)
                vals = [payload(rnd, 3000, 5000) for _ in range(size // 4000)]
            else:
                vals = [payload(rnd, 200, 8000)
                        for _ in range(rnd.randint(1, 16))]
            size = sum(map(len, vals))
            attempted += size
            end, before = t.end_offset, disk_bytes(d)
            st = t.stats()
            try:
                if len(vals) == 1 and mode == "single":
                    first = t.append(vals[0])
                else:
                    first = t.append_batch(vals)
            except pylog.LogFullError:
                assert on_full != "drop_oldest", (
                    f"drop_oldest refused a batch of {size} bytes "
                    f"under a cap of {cap}")
                # Nothing written, and the refusal counted.
                assert t.end_offset == end and disk_bytes(d) == before
                assert t.stats()["rejected_records"] == \
                    st["rejected_records"] + len(vals)
                if acted is None:
                    acted = on_disk
                    assert on_disk + size >= 0.9 * cap, (on_disk, size, cap)
                refusals += 1
                continue
            assert first == end
            for k, v in enumerate(vals):
                values[first + k] = v
            if acted is None and t.stats()["full_dropped_records"] > 0:
                acted = on_disk
                assert on_disk + size >= 0.9 * cap, (on_disk, size, cap)
            on_disk += size
            start = t.start_offset
            while lowest < start:   # dropped by on_full
                on_disk -= len(values.pop(lowest))
                lowest += 1
            assert disk_bytes(d) <= cap, (disk_bytes(d), cap)
        assert acted is not None, "on_full never acted under 20x the cap"
        # What is kept is the newest records, intact and dense.
        start, end = t.start_offset, t.end_offset
        assert [bytes(r.value) for r in t.read(start)] == [
            values[o] for o in range(start, end)]
        st = t.stats()
        if on_full == "drop_oldest":
            assert st["full_dropped_records"] == start > 0
        else:
            assert start == 0 and refusals > 0


# ---- lifetime counters ------------------------------------------------------
COUNTERS = ["appended_records", "appended_bytes", "retention_dropped_records",
            "retention_dropped_bytes", "full_dropped_records",
            "full_dropped_bytes", "rejected_records"]


class Workload:
    """Appends that move every counter: retention, on_full drops, on_full
    refusals, records too large (single and in a batch)."""

    def __init__(self, log, seed):
        self.rnd = random.Random(seed)
        self.ret = log.topic("ret", segment_bytes=4096, retention_bytes=8192)
        self.full = log.topic("full", max_bytes=64 << 10,
                              on_full="drop_oldest")
        self.rej = log.topic("rej", max_bytes=64 << 10, on_full="reject",
                             max_record_bytes=4000)
        self.topics = [self.ret, self.full, self.rej]
        self.rejected = 0   # records refused, by count of the calls

    def run(self, rounds):
        rnd = self.rnd
        for _ in range(rounds):
            for t in (self.ret, self.full):
                t.append_batch([payload(rnd, 50, 900)
                                for _ in range(rnd.randint(1, 8))])
            vals = [payload(rnd, 50, 900) for _ in range(rnd.randint(1, 4))]
            if rnd.random() < 0.2:
                vals[-1] = payload(rnd, 4500, 6000)  # too large
            try:
                if len(vals) == 1:
                    self.rej.append(vals[0])
                else:
                    self.rej.append_batch(vals)
            except (pylog.LogFullError, pylog.RecordTooLargeError):
                self.rejected += len(vals)

    def counters(self):
        return {t.name: {k: t.stats()[k] for k in COUNTERS + [
            "start_offset", "end_offset"]} for t in self.topics}


def check_counters(c):
    ret = c["ret"]
    assert ret["retention_dropped_records"] == ret["start_offset"] > 0
    assert c["full"]["full_dropped_records"] == c["full"]["start_offset"] > 0
    assert c["rej"]["rejected_records"] > 0
    for name, v in c.items():
        assert v["appended_records"] == v["end_offset"], name


def test_lifetime_counters_survive_a_clean_close(tmp_path):
    path = tmp_path / "log"
    with pylog.open(path, sync="none") as log:
        w = Workload(log, 1)
        w.run(400)
        before = w.counters()
        check_counters(before)
        assert before["rej"]["rejected_records"] == w.rejected
    with pylog.open(path, sync="none") as log:
        w2 = Workload(log, 2)
        assert w2.counters() == before
        w2.run(100)
        after = w2.counters()
        check_counters(after)
        assert after["rej"]["rejected_records"] == w.rejected + w2.rejected
        for name in before:
            for k in COUNTERS:
                assert after[name][k] >= before[name][k], (name, k)
            assert after[name]["appended_records"] > \
                before[name]["appended_records"]


def child_counters(path):
    log = pylog.open(path, sync="none", checkpoint_interval_ms=50)
    w = Workload(log, 3)
    w.run(300)
    deadline = time.monotonic() + 20
    while any(t.durable_offset < t.end_offset for t in w.topics):
        assert time.monotonic() < deadline, "no periodic checkpoint"
        time.sleep(0.01)
    time.sleep(0.3)  # the round that raised durable wrote its checkpoint
    checkpointed = w.counters()
    w.run(100)
    print(json.dumps({"checkpointed": checkpointed, "last": w.counters()}),
          flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def test_lifetime_counters_survive_sigkill(tmp_path):
    path = str(tmp_path / "log")
    doc = childproc.build([__file__, "counters", path], killed=True)
    low, high = doc["checkpointed"], doc["last"]
    check_counters(low)
    with pylog.open(path, sync="none") as log:
        found = {t: {k: log.topic(t).stats()[k] for k in COUNTERS}
                 for t in low}
    for name in low:
        for k in COUNTERS:
            assert low[name][k] <= found[name][k] <= high[name][k], (
                name, k, low[name][k], found[name][k], high[name][k])


# ---- day-one defects --------------------------------------------------------
def snapshot(root):
    """Every path below root with its type, size and content digest."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            digest = None
            if os.path.isfile(p):
                with open(p, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            out[os.path.relpath(p, root)] = (st.st_mode, st.st_size, digest)
    return out


def test_consumer_of_a_misspelt_topic_raises_and_creates_nothing(tmp_path):
    with pylog.open(tmp_path / "log") as log:
        log.topic("sensors").append(b"x")
        before = snapshot(tmp_path / "log")
        with pytest.raises(pylog.TopicNotFoundError) as ei:
            log.consumer("up", "sensros")
        assert "sensros" in str(ei.value)
        with pytest.raises(pylog.TopicNotFoundError):
            log.consumer("up", ["sensors", "sensros"])
        assert log.topics() == ["sensors"]
        assert log.groups() == {}
        assert not os.path.exists(topic_dir(tmp_path / "log", "sensros"))
        assert snapshot(tmp_path / "log") == before
        c = log.consumer("up", "sensros", create=True)
        assert log.topics() == ["sensors", "sensros"]
        assert c.poll(timeout=0) == []
        c.close()


def test_open_refuses_a_directory_of_other_files(tmp_path):
    d = tmp_path / "photos"
    (d / "2024").mkdir(parents=True)
    (d / "notes.txt").write_bytes(b"mine\n")
    (d / "2024" / "a.jpg").write_bytes(os.urandom(1000))
    before = snapshot(d)
    with pytest.raises(pylog.NotALogError) as ei:
        pylog.open(d)
    assert str(d) in str(ei.value)
    assert snapshot(d) == before
    # A file named like one of pylog's does not make it a log.
    (d / "LOCK").write_bytes(b"")
    before = snapshot(d)
    with pytest.raises(pylog.NotALogError):
        pylog.open(d)
    assert snapshot(d) == before


def test_open_refuses_a_regular_file(tmp_path):
    f = tmp_path / "data.bin"
    f.write_bytes(b"not a log")
    for target in (f, f / "sub"):
        with pytest.raises(pylog.NotALogError) as ei:
            pylog.open(target)
        assert str(f) in str(ei.value)
    assert f.read_bytes() == b"not a log"
    assert sorted(os.listdir(tmp_path)) == ["data.bin"]


# ---- errors name the file and are pylog errors ------------------------------
def assert_names_file(exc, path):
    assert isinstance(exc, pylog.PylogError), type(exc).__mro__
    assert type(exc).__module__.startswith("pylog"), type(exc)
    assert os.fspath(path) in str(exc), str(exc)


def make_log(path):
    with pylog.open(path) as log:
        log.topic("t").append(b"x")
        c = log.consumer("g", "t")
        c.commit()
        c.close()


def test_lock_that_is_a_directory(tmp_path):
    path = tmp_path / "log"
    make_log(path)
    os.unlink(path / "LOCK")
    os.mkdir(path / "LOCK")
    with pytest.raises(Exception) as ei:
        pylog.open(path)
    assert_names_file(ei.value, path / "LOCK")


def test_topics_that_is_a_regular_file(tmp_path):
    path = tmp_path / "log"
    make_log(path)
    shutil.rmtree(path / "topics")
    (path / "topics").write_bytes(b"")
    with pytest.raises(Exception) as ei:
        pylog.open(path)
    assert_names_file(ei.value, path / "topics")
    assert (path / "topics").read_bytes() == b""


@pytest.fixture
def shared_dir():
    """A directory another user can reach (tmp_path's parents are 0700)."""
    d = tempfile.mkdtemp(prefix="pylog-perm-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def child_as_nobody(targets):
    out = {}
    # Everything pylog imports is loaded while still root.
    with tempfile.TemporaryDirectory() as scratch:
        make_log(os.path.join(scratch, "warm"))
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    for target in targets:
        try:
            pylog.open(target).close()
            out[target] = None
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            out[target] = [[c.__name__ for c in type(exc).__mro__],
                           type(exc).__module__, str(exc)]
    print(json.dumps(out))


def test_log_directory_without_write_permission(shared_dir):
    need_root("setuid to another user")
    existing = os.path.join(shared_dir, "log")
    make_log(existing)
    empty = os.path.join(shared_dir, "empty")
    os.mkdir(empty)
    missing = os.path.join(shared_dir, "new")
    for p in (existing, empty):
        os.chmod(p, 0o755)
    os.chmod(shared_dir, 0o755)
    before = snapshot(shared_dir)
    found = childproc.run_json([__file__, "nobody", existing, empty,
                                missing])
    for target, where in ((existing, os.path.join(existing, "LOCK")),
                          (empty, empty), (missing, missing)):
        got = found[target]
        assert got is not None, f"{target} opened without write permission"
        mro, module, msg = got
        assert "PylogError" in mro and module.startswith("pylog"), got
        assert where in msg, got
    assert snapshot(shared_dir) == before


def test_log_on_a_read_only_bind_mount(tmp_path):
    need_root("a bind mount")
    src, mnt = tmp_path / "src", tmp_path / "ro"
    make_log(src)
    mnt.mkdir()
    try:
        subprocess.run(["mount", "--bind", str(src), str(mnt)], check=True,
                       capture_output=True)
    except subprocess.CalledProcessError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"cannot bind mount: {exc.stderr!r}")
        pytest.skip(f"cannot bind mount: {exc.stderr!r}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mnt)],
                       check=True, capture_output=True)
        with pytest.raises(Exception) as ei:
            pylog.open(mnt)
        assert_names_file(ei.value, mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(root):
    """Write a file until the file system is full."""
    fd = os.open(os.path.join(root, "filler"), os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * BLOCK)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)


@pytest.mark.parametrize("sync", ["none", "interval", "always"])
def test_commit_on_a_full_disk(sync):
    with tmpfs("4m") as root:
        path = os.path.join(root, "log")
        log = pylog.open(path, sync=sync)
        try:
            topics = [log.topic(f"t{i}") for i in range(20)]
            for t in topics:
                t.append_batch([b"x" * 100] * 10)
            c = log.consumer("g", [t.name for t in topics])
            log.flush()   # nothing pending: the next commit needs room
            fill(root)
            refused = None
            for k in range(1, 11):
                try:
                    c.commit({t.name: k for t in topics})
                except Exception as exc:  # noqa: BLE001 - checked below
                    refused = exc
                    break
            if sync != "always":
                # The commit has nowhere to go: a clear error, naming it.
                assert isinstance(refused, pylog.DiskFullError), refused
            if refused is not None:
                assert_names_file(refused, path)
            # Room again: commits work and survive a reopen.
            os.unlink(os.path.join(root, "filler"))
            c.commit({t.name: 10 for t in topics})
            c.close()
        finally:
            log.close()
        with pylog.open(path) as log:
            assert log.groups() == {"g": {f"t{i}": 10 for i in range(20)}}


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "topics":
        child_topics(sys.argv[2])
    elif what == "counters":
        child_counters(sys.argv[2])
    elif what == "nobody":
        child_as_nobody(sys.argv[2:])
