#!/usr/bin/env python3
"""pylog side by side with its peers, in one process run.

    python bench/compare.py            # full run (several minutes)
    python bench/compare.py --quick    # CI smoke run, < 60 s
    python bench/compare.py --json     # machine-readable results on stdout

Peers: SQLite (stdlib sqlite3), LMDB (the lmdb package, a pylog
dependency), queuelib and persist-queue (``pip install -e ".[bench]"``) and
raw file I/O (os.write / os.fdatasync: the physical floor). A peer that is
not installed is reported as "skipped: not installed".

Method: each workload runs every implementation round-robin (the order
rotates every round), in a fresh temporary directory per implementation and
round, after one short warm-up round that also sizes each implementation's
run to a time budget. The table shows the median of the rounds and the ratio
pylog / peer of the medians (for rates: higher is better for pylog), with
the target and PASS/MISS where the project set one. Workloads 8 (reopen
after SIGKILL) and 9 (memory) run in child processes. Workloads that time
fsyncs (W5, W6) call os.sync() before every case so that writeback left by
earlier cases does not land in their timings. The load average at start
and end is printed: other processes on the machine skew the figures (the
interleaving keeps the ratios fairer than the absolute rates).

Workloads (100-byte values unless stated):
  W1 single-record append, no fsync      W2 batch append of 1,000 records
  W3 sequential read from the start      W4 random point reads by offset
  W5 durable append (fsync per append), 1 and 8 threads
  W6 64 KiB values, MB/s to disk          W7 consume-and-commit loop
  W8 reopen after SIGKILL with a big log W9 anonymous memory while appending
  W10 write amplification: bytes written per byte appended, single records
      and batches, every sync mode, next to SQLite and LMDB (bench/wamp.py;
      child processes, /proc/self/io and the block device's counters)
"""
import argparse
import gc
import json
import os
import platform
import random
import shutil
import signal
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

import lmdb

import wamp

try:
    import pylog
except ImportError:  # run from a checkout without an install
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    import pylog

try:
    import queuelib
except ImportError:
    queuelib = None
try:
    import persistqueue
except ImportError:
    persistqueue = None

VALUE = b"v" * 100
BIG = b"b" * 65536
KEY = struct.Struct(">Q").pack        # LMDB keys: big-endian u64
LEN = struct.Struct("<I")              # raw files: u32 length prefix
MAP_SIZE = 8 << 30                     # LMDB map (sparse)
MB = 1e6


# ---------------------------------------------------------------------------
# the harness
# ---------------------------------------------------------------------------
class Case:
    """One implementation of a workload.

    fn(dir, n) -> {metric: (count, seconds)}: sets up in dir (untimed) and
    times only the measured part. Sized cases (n_min given) are run once
    with n_min in the warm-up round, and from then on with the n that makes
    a round last about the time budget (at most n_max); fixed cases know
    their size and get n=None."""

    def __init__(self, key, label, fn, n_min=None, n_max=None, skip=None):
        self.key, self.label, self.fn = key, label, fn
        self.n_min, self.n_max, self.skip = n_min, n_max, skip
        self.n = None


class Harness:
    def __init__(self, args):
        self.args = args
        self.base = tempfile.mkdtemp(prefix="pylog-compare-", dir=args.dir)
        self.samples = {}       # metric -> [value per round]
        self.skipped = {}       # case key -> reason
        self.counts = {}        # metric -> records (or bytes) per round
        self.labels = {}        # case key -> label
        self.section_seconds = {}
        self._seq = 0

    def fresh_dir(self):
        self._seq += 1
        d = os.path.join(self.base, f"r{self._seq}")
        os.makedirs(d)
        return d

    def run_case(self, case, n, settle=False):
        if settle:      # let earlier writeback and discards finish first
            os.sync()
        d = self.fresh_dir()
        gc.collect()
        try:
            return case.fn(d, n)
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def interleave(self, cases, rounds, budget_factor=1.0, settle=False):
        """Warm-up (sizing) round, then rounds round-robin; rates are
        count/seconds per metric. settle: os.sync() before every case (for
        workloads that time fsyncs)."""
        live = []
        for c in cases:
            self.labels[c.key] = c.label
            if c.skip:
                self.skipped[c.key] = c.skip
            else:
                live.append(c)
        budget = self.args.budget * budget_factor
        for c in live:  # warm-up: small n, then size n to the budget
            if c.n_min is not None:
                res = self.run_case(c, c.n_min, settle)
                cnt, secs = next(iter(res.values()))
                rate = cnt / max(secs, 1e-9)
                n = int(rate * budget)
                if c.n_max:
                    n = min(n, c.n_max)
                c.n = max(c.n_min, n)
            else:
                self.run_case(c, None, settle)
            self.progress(f"  warm-up: {c.label} (n={c.n})")
        for r in range(rounds):
            k = r % len(live) if live else 0
            for c in live[k:] + live[:k]:
                for metric, (cnt, secs) in self.run_case(c, c.n,
                                                         settle).items():
                    self.samples.setdefault(metric, []).append(cnt / secs)
                    self.counts[metric] = cnt
                self.progress(f"  round {r + 1}/{rounds}: {c.label}")

    def section(self, name):
        """Start timing a workload section (the previous one ends)."""
        now = time.perf_counter()
        if getattr(self, "_sec", None):
            prev, t0 = self._sec
            self.section_seconds[prev] = round(now - t0, 1)
        self._sec = (name, now) if name else None
        if name:
            self.progress(name)

    def progress(self, msg):
        if self.args.verbose:
            print(msg, file=sys.stderr, flush=True)

    def median(self, metric):
        v = self.samples.get(metric)
        return statistics.median(v) if v else None

    def close(self):
        shutil.rmtree(self.base, ignore_errors=True)


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_threads(nthreads, work):
    """work(i) in nthreads threads started together; wall seconds."""
    bar = threading.Barrier(nthreads + 1)
    errs = []

    def body(i):
        bar.wait()
        try:
            work(i)
        except BaseException as e:  # reported after the join
            errs.append(e)

    ths = [threading.Thread(target=body, args=(i,)) for i in range(nthreads)]
    for th in ths:
        th.start()
    bar.wait()
    t0 = time.perf_counter()
    for th in ths:
        th.join()
    secs = time.perf_counter() - t0
    if errs:
        raise errs[0]
    return secs


# ---------------------------------------------------------------------------
# implementations
# ---------------------------------------------------------------------------
def sqlite_open(d, sync="NORMAL", timeout=10.0):
    con = sqlite3.connect(os.path.join(d, "db.sqlite"), isolation_level=None,
                          check_same_thread=False, timeout=timeout)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(f"PRAGMA synchronous={sync}")
    con.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    con.execute("CREATE TABLE IF NOT EXISTS log(id INTEGER PRIMARY KEY, v BLOB)")
    return con


def lmdb_open(d, sync=False, **kw):
    return lmdb.open(os.path.join(d, "lmdb"), map_size=MAP_SIZE, sync=sync,
                     metasync=sync, **kw)


def raw_records(n, value=VALUE):
    return (LEN.pack(len(value)) + value) * n


# ---- W1 single-record append, no fsync ------------------------------------
def w1_pylog(d, n):
    with pylog.open(d, sync="none") as log:
        t = log.topic("t")

        def run():
            ap, v = t.append, VALUE
            for _ in range(n):
                ap(v)
        return {"w1.pylog": (n, timed(run))}


def w1_sqlite_txn(d, n):
    con = sqlite_open(d)

    def run():
        ex, p = con.execute, (VALUE,)
        for _ in range(n):
            ex("INSERT INTO log(v) VALUES (?)", p)  # autocommit: 1 txn each
    s = timed(run)
    con.close()
    return {"w1.sqlite_txn": (n, s)}


def w1_sqlite_one(d, n):
    con = sqlite_open(d)

    def run():
        ex, p = con.execute, (VALUE,)
        ex("BEGIN")
        for _ in range(n):
            ex("INSERT INTO log(v) VALUES (?)", p)
        ex("COMMIT")
    s = timed(run)
    con.close()
    return {"w1.sqlite_one": (n, s)}


def w1_lmdb_txn(d, n):
    env = lmdb_open(d)

    def run():
        begin, v = env.begin, VALUE
        for i in range(n):
            with begin(write=True) as txn:
                txn.put(KEY(i), v, append=True)
    s = timed(run)
    env.close()
    return {"w1.lmdb_txn": (n, s)}


def w1_lmdb_one(d, n):
    env = lmdb_open(d)

    def run():
        with env.begin(write=True) as txn:
            put, v = txn.put, VALUE
            for i in range(n):
                put(KEY(i), v, append=True)
    s = timed(run)
    env.close()
    return {"w1.lmdb_one": (n, s)}


def w1_queuelib(d, n):
    q = queuelib.FifoDiskQueue(os.path.join(d, "q"))

    def run():
        push, v = q.push, VALUE
        for _ in range(n):
            push(v)
    s = timed(run)
    q.close()
    return {"w1.queuelib": (n, s)}


def w1_pq_sqlite(d, n):
    q = persistqueue.SQLiteQueue(os.path.join(d, "q"), auto_commit=True)

    def run():
        put, v = q.put, VALUE
        for _ in range(n):
            put(v)
    s = timed(run)
    q.close()
    return {"w1.pq_sqlite": (n, s)}


def w1_pq_file(d, n):
    q = persistqueue.Queue(os.path.join(d, "q"), tempdir=d)

    def run():
        put, v = q.put, VALUE
        for _ in range(n):
            put(v)
    s = timed(run)
    q = None  # persist-queue closes its files when collected
    return {"w1.pq_file": (n, s)}


def w1_raw(d, n):
    fd = os.open(os.path.join(d, "raw"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def run():
        w, p, v = os.write, LEN.pack, VALUE
        for _ in range(n):
            w(fd, p(len(v)) + v)
    s = timed(run)
    os.close(fd)
    return {"w1.raw": (n, s)}


# ---- W2 batch append of 1,000 ------------------------------------------------
BATCH = 1000


def w2_pylog(d, n):
    batches = max(1, n // BATCH)
    with pylog.open(d, sync="none") as log:
        t = log.topic("t")
        vals = [VALUE] * BATCH

        def run():
            ab = t.append_batch
            for _ in range(batches):
                ab(vals)
        return {"w2.pylog": (batches * BATCH, timed(run))}


def w2_sqlite(d, n):
    batches = max(1, n // BATCH)
    con = sqlite_open(d)
    params = [(VALUE,)] * BATCH

    def run():
        ex, em = con.execute, con.executemany
        for _ in range(batches):
            ex("BEGIN")
            em("INSERT INTO log(v) VALUES (?)", params)
            ex("COMMIT")
    s = timed(run)
    con.close()
    return {"w2.sqlite": (batches * BATCH, s)}


def w2_lmdb(d, n):
    batches = max(1, n // BATCH)
    env = lmdb_open(d)

    def run():
        v = VALUE
        for b in range(batches):
            base = b * BATCH
            with env.begin(write=True) as txn:
                txn.cursor().putmulti(
                    [(KEY(i), v) for i in range(base, base + BATCH)],
                    append=True)
    s = timed(run)
    env.close()
    return {"w2.lmdb": (batches * BATCH, s)}


def w2_raw(d, n):
    batches = max(1, n // BATCH)
    fd = os.open(os.path.join(d, "raw"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    vals = [VALUE] * BATCH

    def run():
        w, p = os.write, LEN.pack
        for _ in range(batches):  # frame the batch, one write per batch
            w(fd, b"".join([p(len(v)) + v for v in vals]))
    s = timed(run)
    os.close(fd)
    return {"w2.raw": (batches * BATCH, s)}


# ---- W3 sequential read + W4 random point reads (one population) -----------
def _offsets(n, count):
    rnd = random.Random(7)
    return [rnd.randrange(n) for _ in range(count)]


def w34_pylog(n, gets):
    def fn(d, _):
        with pylog.open(d, sync="none") as log:
            t = log.topic("t")
            vals = [VALUE] * BATCH
            for _ in range(n // BATCH):
                t.append_batch(vals)
        with pylog.open(d, sync="none") as log:   # read a reopened log
            t = log.topic("t")
            cnt = [0]

            def scan():
                c = 0
                for r in t.read(0):
                    r.value
                    c += 1
                cnt[0] = c
            s3 = timed(scan)
            assert cnt[0] == n, cnt
            offs = _offsets(n, gets)

            def get():
                g = t.get
                for o in offs:
                    g(o).value
            s4 = timed(get)
        return {"w3.pylog": (n, s3), "w4.pylog": (gets, s4)}
    return fn


def w34_sqlite(n, gets):
    def fn(d, _):
        con = sqlite_open(d)
        con.execute("BEGIN")
        con.executemany("INSERT INTO log(id, v) VALUES (?, ?)",
                        ((i, VALUE) for i in range(n)))
        con.execute("COMMIT")
        con.close()
        con = sqlite_open(d)
        cnt = [0]

        def scan():
            c = 0
            for _id, v in con.execute("SELECT id, v FROM log ORDER BY id"):
                c += 1
            cnt[0] = c
        s3 = timed(scan)
        assert cnt[0] == n, cnt
        offs = _offsets(n, gets)

        def get():
            ex = con.execute
            for o in offs:
                ex("SELECT v FROM log WHERE id = ?", (o,)).fetchone()[0]
        s4 = timed(get)
        con.close()
        return {"w3.sqlite": (n, s3), "w4.sqlite": (gets, s4)}
    return fn


def w34_lmdb(n, gets):
    def fn(d, _):
        env = lmdb_open(d)
        v = VALUE
        step = 100_000
        for base in range(0, n, step):
            with env.begin(write=True) as txn:
                txn.cursor().putmulti(
                    [(KEY(i), v) for i in range(base, min(n, base + step))],
                    append=True)
        env.close()
        env = lmdb_open(d)
        cnt = [0]

        def scan():
            c = 0
            with env.begin() as txn:
                for _k, _v in txn.cursor():
                    c += 1
            cnt[0] = c
        s3 = timed(scan)
        assert cnt[0] == n, cnt
        offs = _offsets(n, gets)

        def get():
            with env.begin() as txn:
                g = txn.get
                for o in offs:
                    g(KEY(o))
        s4 = timed(get)
        env.close()
        return {"w3.lmdb": (n, s3), "w4.lmdb": (gets, s4)}
    return fn


def w34_raw(n, gets):
    def fn(d, _):
        path = os.path.join(d, "raw")
        with open(path, "wb") as f:
            chunk = raw_records(10_000)
            for _ in range(n // 10_000):
                f.write(chunk)
            f.write(raw_records(n % 10_000))
        cnt = [0]

        def scan():
            c = 0
            unpack = LEN.unpack_from
            rest = b""
            with open(path, "rb", buffering=0) as f:
                while True:
                    chunk = f.read(1 << 20)
                    if not chunk:
                        break
                    buf = rest + chunk if rest else chunk
                    pos, end = 0, len(buf)
                    while pos + 4 <= end:
                        (ln,) = unpack(buf, pos)
                        if pos + 4 + ln > end:
                            break
                        buf[pos + 4:pos + 4 + ln]
                        c += 1
                        pos += 4 + ln
                    rest = buf[pos:]
            cnt[0] = c
        s3 = timed(scan)
        assert cnt[0] == n, cnt
        return {"w3.raw": (n, s3)}
    return fn


# ---- W5 durable append ---------------------------------------------------------
def w5_pylog(nthreads):
    def fn(d, n):
        per = max(1, n // nthreads)
        with pylog.open(d, sync="always") as log:
            t = log.topic("t")

            def work(_):
                ap, v = t.append, VALUE
                for _ in range(per):
                    ap(v)
            s = run_threads(nthreads, work)
            assert t.durable_offset == t.end_offset == per * nthreads
        return {f"w5.pylog.{nthreads}": (per * nthreads, s)}
    return fn


def w5_sqlite(nthreads):
    def fn(d, n):
        per = max(1, n // nthreads)
        sqlite_open(d, "FULL").close()
        cons = [sqlite_open(d, "FULL") for _ in range(nthreads)]

        def work(i):
            ex, p = cons[i].execute, (VALUE,)
            for _ in range(per):
                ex("INSERT INTO log(v) VALUES (?)", p)
        s = run_threads(nthreads, work)
        for c in cons:
            c.close()
        return {f"w5.sqlite.{nthreads}": (per * nthreads, s)}
    return fn


def w5_lmdb(nthreads):
    def fn(d, n):
        per = max(1, n // nthreads)
        env = lmdb_open(d, sync=True)
        nxt = [0]

        def work(_):
            begin, v = env.begin, VALUE
            for _ in range(per):
                with begin(write=True) as txn:  # writers serialize in LMDB
                    k = nxt[0]
                    nxt[0] = k + 1
                    txn.put(KEY(k), v, append=True)
        s = run_threads(nthreads, work)
        env.close()
        return {f"w5.lmdb.{nthreads}": (per * nthreads, s)}
    return fn


def w5_raw(nthreads):
    def fn(d, n):
        per = max(1, n // nthreads)
        fd = os.open(os.path.join(d, "raw"),
                     os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        rec = LEN.pack(len(VALUE)) + VALUE

        def work(_):
            w, sync = os.write, os.fdatasync
            for _ in range(per):
                w(fd, rec)
                sync(fd)
        s = run_threads(nthreads, work)
        os.close(fd)
        return {f"w5.raw.{nthreads}": (per * nthreads, s)}
    return fn


# ---- W6 64 KiB values, MB/s --------------------------------------------------
W6_BATCH = 16     # 1 MiB per append_batch


def w6_raw(total):
    def fn(d, _):
        n = total // len(BIG)
        fd = os.open(os.path.join(d, "raw"), os.O_WRONLY | os.O_CREAT)

        def run():
            w, v = os.write, BIG
            for _ in range(n):
                w(fd, v)
            os.fdatasync(fd)
        s = timed(run)
        os.close(fd)
        return {"w6.raw": (n * len(BIG) / MB, s)}
    return fn


def w6_pylog(total, batch):
    def fn(d, _):
        n = total // len(BIG)
        with pylog.open(d, sync="none") as log:
            t = log.topic("t")
            if batch:
                vals = [BIG] * W6_BATCH

                def run():
                    ab = t.append_batch
                    for _ in range(n // W6_BATCH):
                        ab(vals)
                    t.flush()
            else:
                def run():
                    ap, v = t.append, BIG
                    for _ in range(n):
                        ap(v)
                    t.flush()
            s = timed(run)
        return {f"w6.pylog{'_batch' if batch else ''}":
                (n * len(BIG) / MB, s)}
    return fn


# ---- W7 consume and commit -------------------------------------------------------
POLL = 500


def w7_pylog(n):
    def fn(d, _):
        with pylog.open(d, sync="none") as log:
            t = log.topic("t")
            vals = [VALUE] * BATCH
            for _ in range(n // BATCH):
                t.append_batch(vals)
        with pylog.open(d, sync="none") as log:
            c = log.consumer("g", "t")
            cnt = [0]

            def run():
                k = 0
                poll, commit = c.poll, c.commit
                while True:
                    recs = poll(POLL)
                    if not recs:
                        break
                    for r in recs:
                        r.value
                    k += len(recs)
                    commit()
                cnt[0] = k
            s = timed(run)
            assert cnt[0] == n and c.committed("t") == n
            c.close()
        return {"w7.pylog": (n, s)}
    return fn


def w7_sqlite(n):
    def fn(d, _):
        con = sqlite_open(d)
        con.execute("BEGIN")
        con.executemany("INSERT INTO log(id, v) VALUES (?, ?)",
                        ((i, VALUE) for i in range(n)))
        con.execute("COMMIT")
        con.close()
        con = sqlite_open(d)
        cnt = [0]

        def run():
            k = 0
            ex = con.execute
            while True:
                ex("BEGIN")
                rows = ex("SELECT id, v FROM log ORDER BY id LIMIT ?",
                          (POLL,)).fetchall()
                if not rows:
                    ex("COMMIT")
                    break
                for _id, v in rows:
                    pass
                k += len(rows)
                ex("DELETE FROM log WHERE id <= ?", (rows[-1][0],))
                ex("COMMIT")
            cnt[0] = k
        s = timed(run)
        assert cnt[0] == n
        con.close()
        return {"w7.sqlite": (n, s)}
    return fn


def w7_lmdb(n):
    def fn(d, _):
        env = lmdb_open(d, max_dbs=2)
        data = env.open_db(b"data")
        meta = env.open_db(b"meta")
        step = 100_000
        for base in range(0, n, step):
            with env.begin(write=True, db=data) as txn:
                txn.cursor(db=data).putmulti(
                    [(KEY(i), VALUE) for i in range(base, min(n, base + step))],
                    append=True)
        cnt = [0]

        def run():
            k = 0
            with env.begin(db=data) as rtxn:
                cur = rtxn.cursor(db=data)
                for key, _v in cur:
                    k += 1
                    if k % POLL == 0:
                        with env.begin(write=True) as w:
                            w.put(b"pos", key, db=meta)
            if k % POLL:
                with env.begin(write=True) as w:
                    w.put(b"pos", key, db=meta)
            cnt[0] = k
        s = timed(run)
        assert cnt[0] == n
        env.close()
        return {"w7.lmdb": (n, s)}
    return fn


def w7_pq_ack(n):
    def fn(d, _):
        q = persistqueue.SQLiteAckQueue(os.path.join(d, "q"),
                                        auto_commit=True)
        for _ in range(n):
            q.put(VALUE)
        cnt = [0]

        def run():
            k = 0
            get, ack = q.get, q.ack
            for _ in range(n):
                item = get(block=False)
                ack(item)
                k += 1
            cnt[0] = k
        s = timed(run)
        assert cnt[0] == n
        q = None  # persist-queue closes its files when collected
        return {"w7.pq_ack": (n, s)}
    return fn


def w7_pq_file(n):
    def fn(d, _):
        q = persistqueue.Queue(os.path.join(d, "q"), tempdir=d)
        for _ in range(n):
            q.put(VALUE)

        def run():
            get, done = q.get, q.task_done
            for _ in range(n):
                get(block=False)
                done()
        s = timed(run)
        assert q.qsize() == 0
        q = None  # persist-queue closes its files when collected
        return {"w7.pq_file": (n, s)}
    return fn


# ---- W8 reopen after SIGKILL ---------------------------------------------------
_W8_WRITER = r"""
import os, signal, sys
import pylog
d, target = sys.argv[1], int(sys.argv[2])
log = pylog.open(d, sync="none")
t = log.topic("t")
vals = [b"v" * 100] * 1000
while t.stats()["appended_bytes"] < target:   # record bytes (framing incl.)
    for _ in range(10):
        t.append_batch(vals)
for _ in range(123):        # a tail of single appends, then die mid-flight
    t.append(b"v" * 100)
sys.stdout.write(str(t.end_offset) + " " + str(t.stats()["appended_bytes"]))
sys.stdout.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""

_W8_OPENER = r"""
import json, sys, time
import pylog
d = sys.argv[1]
t0 = time.perf_counter()
log = pylog.open(d, sync="none")
t = log.topic("t")
end = t.end_offset
t.append(b"x")
s = time.perf_counter() - t0
segs = t.stats()["segments"]
log.close()
print(json.dumps({"seconds": s, "end_offset": end, "segments": segs}))
"""


def w8_case(h, size):
    d = h.fresh_dir()
    try:
        p = subprocess.run([sys.executable, "-c", _W8_WRITER, d, str(size)],
                           capture_output=True, text=True, timeout=600)
        if p.returncode != -signal.SIGKILL:
            raise RuntimeError(f"W8 writer: rc={p.returncode} {p.stderr}")
        acked, nbytes = map(int, p.stdout.split())
        q = subprocess.run([sys.executable, "-c", _W8_OPENER, d],
                           capture_output=True, text=True, timeout=600)
        if q.returncode:
            raise RuntimeError(f"W8 reopen failed: {q.stderr}")
        r = json.loads(q.stdout)
        return r["seconds"], nbytes, acked, r["end_offset"], r["segments"]
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ---- W9 memory -------------------------------------------------------------------
_W9_CHILD = r"""
import json, os, sys, threading, time
import pylog

def status():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("RssAnon", "RssFile", "RssShmem", "VmHWM", "VmRSS"):
                out[k] = int(v.split()[0]) * 1024
    return out

d, n = sys.argv[1], int(sys.argv[2])
log = pylog.open(d, sync="none")
t = log.topic("t")
v = b"v" * 100
ap = t.append
for _ in range(1000):        # warm the code paths before the baseline
    ap(v)
base = status()
peak = dict(base)
stop = threading.Event()

def sample():
    while not stop.is_set():
        s = status()
        for k in s:
            peak[k] = max(peak[k], s[k])
        time.sleep(0.005)

th = threading.Thread(target=sample, daemon=True)
th.start()
t0 = time.perf_counter()
for _ in range(n):
    ap(v)
secs = time.perf_counter() - t0
stop.set()
th.join()
end = status()
for k in end:
    peak[k] = max(peak[k], end[k])
print(json.dumps({"base": base, "peak": peak, "end": end, "seconds": secs,
                  "records": n, "bytes_on_disk": t.stats()["bytes_on_disk"]}))
log.close()
"""


def w9_run(h, n):
    d = h.fresh_dir()
    try:
        p = subprocess.run([sys.executable, "-c", _W9_CHILD, d, str(n)],
                           capture_output=True, text=True, timeout=1800)
        if p.returncode:
            raise RuntimeError(f"W9 child failed: {p.stderr}")
        return json.loads(p.stdout)
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------------------
# workloads, rows and targets
# ---------------------------------------------------------------------------
def need(mod, name):
    return None if mod is not None else f"skipped: {name} not installed"


def machine():
    info = {"python": platform.python_version(), "nproc": os.cpu_count(),
            "kernel": platform.release(), "machine": platform.machine(),
            "pylog": getattr(pylog, "__version__", "?"),
            "sqlite": sqlite3.sqlite_version, "lmdb": lmdb.__version__,
            "lmdb_lib": ".".join(map(str, lmdb.version())),
            "queuelib": getattr(queuelib, "__version__", None)
            if queuelib else None}
    try:
        from importlib.metadata import version
        info["persist-queue"] = version("persist-queue") if persistqueue else None
        if queuelib and not info["queuelib"]:
            info["queuelib"] = version("queuelib")
    except Exception:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    info["mem_total_gib"] = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return info


def disk_of(path):
    try:
        out = subprocess.run(["df", "-T", path], capture_output=True,
                             text=True).stdout.splitlines()[-1].split()
        dev, fstype = out[0], out[1]
        opts = ""
        with open("/proc/mounts") as f:
            for line in f:
                p = line.split()
                if p[0] == dev:
                    opts = p[3]
        rot = ""
        name = os.path.basename(os.path.realpath(dev)).rstrip("0123456789")
        try:
            with open(f"/sys/block/{name}/queue/rotational") as f:
                rot = "rotational" if f.read().strip() == "1" else "non-rotational"
        except OSError:
            pass
        return {"device": dev, "fstype": fstype, "mount_options": opts,
                "rotational": rot}
    except Exception as e:
        return {"error": str(e)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="short run (< 60 s), for CI smoke")
    ap.add_argument("--json", action="store_true",
                    help="machine-readable results on stdout")
    ap.add_argument("--dir", default=None,
                    help="where to make temporary directories (default: "
                    "the system temp dir)")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--only", default=None,
                    help="comma-separated workloads to run, e.g. W1,W5")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="progress on stderr")
    args = ap.parse_args(argv)
    q = args.quick
    rounds = args.rounds or (3 if q else 7)       # W1, W2, W5
    heavy_rounds = args.rounds or (3 if q else 5)  # W3/W4, W6, W7, W8
    args.budget = 0.08 if q else 0.4
    only = {w.strip().upper() for w in args.only.split(",")} if args.only else None

    def want(w):
        return only is None or w in only

    h = Harness(args)
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    nq, npq = need(queuelib, "queuelib"), need(persistqueue, "persist-queue")
    n_read = 200_000 if q else 1_000_000
    n_get = 20_000 if q else 100_000
    w6_total = (64 if q else 256) << 20
    n_consume = 100_000 if q else 1_000_000
    n_consume_pq = 1_000 if q else 10_000
    w8_sizes = [20 << 20, 100 << 20] if q else [100 << 20, 1 << 30]
    n_mem = 1_000_000 if q else 10_000_000
    notes = []
    wl = []   # (id, title, unit, rows); row = dict

    try:
        if want("W1"):
            h.section("W1")
            h.interleave([
                Case("w1.pylog", "pylog append (sync=none)", w1_pylog,
                     n_min=20_000),
                Case("w1.sqlite_txn", "SQLite WAL NORMAL, 1 txn/record",
                     w1_sqlite_txn, n_min=1000),
                Case("w1.sqlite_one", "SQLite WAL NORMAL, all in 1 txn",
                     w1_sqlite_one, n_min=5000),
                Case("w1.lmdb_txn", "LMDB sync=False, 1 txn/record",
                     w1_lmdb_txn, n_min=5000),
                Case("w1.lmdb_one", "LMDB sync=False, all in 1 txn",
                     w1_lmdb_one, n_min=20_000),
                Case("w1.queuelib", "queuelib FifoDiskQueue.push",
                     w1_queuelib, n_min=5000, skip=nq),
                Case("w1.pq_sqlite", "persist-queue SQLiteQueue.put",
                     w1_pq_sqlite, n_min=500, skip=npq),
                Case("w1.pq_file", "persist-queue Queue.put (file)",
                     w1_pq_file, n_min=500, skip=npq),
                Case("w1.raw", "raw os.write per record", w1_raw,
                     n_min=20_000),
            ], rounds)
            wl.append(("W1", "single-record append, 100 B, no fsync",
                       "rec/s", [
                           ("w1.pylog", None, None),
                           ("w1.sqlite_txn", "w1.pylog", 25),
                           ("w1.sqlite_one", "w1.pylog", None),
                           ("w1.lmdb_txn", "w1.pylog", 3),
                           ("w1.lmdb_one", "w1.pylog", 1),
                           ("w1.queuelib", "w1.pylog", None),
                           ("w1.pq_sqlite", "w1.pylog", None),
                           ("w1.pq_file", "w1.pylog", None),
                           ("w1.raw", "w1.pylog", None)]))

        if want("W2"):
            h.section("W2")
            # At most the same 2 M records (~250 MB) per round for every
            # implementation. Sized by rate alone, the fastest wrote 1.5 GB
            # per round, and on this VM memory the host has to back afresh
            # costs ~0.5 GB/s: rounds of the same build measured 10 or 25 M
            # records/s depending on whether the page cache they needed was
            # still backed (see docs/PERFORMANCE.md).
            cap = 2_000_000
            h.interleave([
                Case("w2.pylog", "pylog append_batch(1000)", w2_pylog,
                     n_min=100_000, n_max=cap),
                Case("w2.sqlite", "SQLite executemany, 1 txn/batch",
                     w2_sqlite, n_min=20_000, n_max=cap),
                Case("w2.lmdb", "LMDB putmulti, 1 txn/batch", w2_lmdb,
                     n_min=50_000, n_max=cap),
                Case("w2.raw", "raw: frame batch + 1 os.write", w2_raw,
                     n_min=100_000, n_max=cap),
            ], rounds)
            wl.append(("W2", "batch append of 1,000 records, no fsync",
                       "rec/s", [
                           ("w2.pylog", None, None),
                           ("w2.sqlite", "w2.pylog", 10),
                           ("w2.lmdb", "w2.pylog", 4),
                           ("w2.raw", "w2.pylog", None)]))

        if want("W3") or want("W4"):
            h.section("W3/W4")
            h.interleave([
                Case("w34.pylog", "pylog", w34_pylog(n_read, n_get)),
                Case("w34.sqlite", "SQLite", w34_sqlite(n_read, n_get)),
                Case("w34.lmdb", "LMDB", w34_lmdb(n_read, n_get)),
                Case("w34.raw", "raw", w34_raw(n_read, n_get)),
            ], heavy_rounds)
            wl.append(("W3", f"sequential read of {n_read:,} records from "
                       "offset 0 (reopened store, warm page cache)", "rec/s", [
                           ("w3.pylog", None, None, "pylog read(0), touch .value"),
                           ("w3.sqlite", "w3.pylog", None,
                            "SQLite SELECT ... ORDER BY id"),
                           ("w3.lmdb", "w3.pylog", 1, "LMDB cursor scan"),
                           ("w3.raw", "w3.pylog", None,
                            "raw file read + parse (1 MiB reads)")]))
            wl.append(("W4", f"random point reads by offset ({n_get:,} of "
                       f"{n_read:,})", "get/s", [
                           ("w4.pylog", None, None, "pylog get(offset)"),
                           ("w4.sqlite", "w4.pylog", None,
                            "SQLite SELECT by primary key"),
                           ("w4.lmdb", "w4.pylog", None,
                            "LMDB txn.get (one read txn)")]))

        if want("W5"):
            h.section("W5")
            cases = []
            for nt in (1, 8):
                cases += [
                    Case(f"w5.pylog.{nt}", f"pylog sync=always, {nt} thr",
                         w5_pylog(nt), n_min=200 * nt, n_max=100_000),
                    Case(f"w5.sqlite.{nt}", f"SQLite FULL autocommit, {nt} thr",
                         w5_sqlite(nt), n_min=200 * nt, n_max=100_000),
                    Case(f"w5.lmdb.{nt}", f"LMDB sync=True, txn/rec, {nt} thr",
                         w5_lmdb(nt), n_min=200 * nt, n_max=100_000),
                    Case(f"w5.raw.{nt}", f"raw write+fdatasync, {nt} thr",
                         w5_raw(nt), n_min=200 * nt, n_max=100_000),
                ]
            h.interleave(cases, rounds, budget_factor=2.5, settle=True)
            wl.append(("W5", "durable append, fdatasync per append", "rec/s", [
                ("w5.pylog.1", None, None),
                ("w5.sqlite.1", "w5.pylog.1", None),
                ("w5.lmdb.1", "w5.pylog.1", None),
                ("w5.raw.1", "w5.pylog.1", None),
                ("w5.pylog.8", None, None),
                ("w5.sqlite.8", "w5.pylog.8", 5),
                ("w5.lmdb.8", "w5.pylog.8", None),
                ("w5.raw.8", "w5.pylog.8", None),
                ("w5.pylog.8", "/w5.pylog.1", 4,
                 "pylog 8 thr / pylog 1 thr (group commit)"),
                ("w5.sqlite.1", "w5.pylog.8", None,
                 "SQLite FULL, 1 thr (ratio: pylog 8 thr)")]))

        if want("W6"):
            h.section("W6")
            h.interleave([
                Case("w6.raw", "raw os.write 64 KiB + 1 fdatasync",
                     w6_raw(w6_total)),
                Case("w6.pylog", "pylog append + flush()",
                     w6_pylog(w6_total, False)),
                Case("w6.pylog_batch", "pylog append_batch(16) + flush()",
                     w6_pylog(w6_total, True)),
            ], heavy_rounds, settle=True)
            wl.append(("W6", f"64 KiB values, {w6_total >> 20} MiB to disk "
                       "(one fdatasync at the end)", "MB/s", [
                           ("w6.raw", None, None),
                           ("w6.pylog", "/w6.raw", 0.8),
                           ("w6.pylog_batch", "/w6.raw", 0.8)]))

        if want("W7"):
            h.section("W7")
            h.interleave([
                Case("w7.pylog", "pylog consumer poll(500) + commit",
                     w7_pylog(n_consume)),
                Case("w7.sqlite", "SQLite SELECT LIMIT 500 + DELETE, commit",
                     w7_sqlite(n_consume)),
                Case("w7.lmdb", "LMDB cursor + position put every 500",
                     w7_lmdb(n_consume)),
                Case("w7.pq_ack", "persist-queue SQLiteAckQueue get+ack",
                     w7_pq_ack(n_consume_pq), skip=npq),
                Case("w7.pq_file", "persist-queue Queue get+task_done",
                     w7_pq_file(n_consume_pq), skip=npq),
            ], heavy_rounds)
            wl.append(("W7", f"consume-and-commit ({n_consume:,} records; "
                       f"persist-queue {n_consume_pq:,})", "rec/s", [
                           ("w7.pylog", None, None),
                           ("w7.sqlite", "w7.pylog", None),
                           ("w7.lmdb", "w7.pylog", None),
                           ("w7.pq_ack", "w7.pylog", None),
                           ("w7.pq_file", "w7.pylog", None)]))

        results = []
        for wid, title, unit, rows in wl:
            out_rows = []
            for row in rows:
                metric, ref, target = row[:3]
                label = row[3] if len(row) > 3 else h.labels.get(metric, metric)
                r = {"metric": metric, "label": label, "unit": unit}
                if metric in h.skipped:
                    r["skipped"] = h.skipped[metric]
                    out_rows.append(r)
                    continue
                med = h.median(metric)
                r["median"] = med
                r["rounds"] = h.samples.get(metric, [])
                r["per_round"] = h.counts.get(metric)
                if ref is not None and med:
                    # ratio = ref / metric (pylog / peer); a ref written
                    # "/x" means metric / x (pylog / baseline)
                    inv = ref.startswith("/")
                    refmed = h.median(ref.lstrip("/"))
                    if refmed:
                        num, den = ((metric, ref[1:]) if inv
                                    else (ref, metric))
                        r["ratio_of"] = f"{num} / {den}"
                        r["ratio"] = med / refmed if inv else refmed / med
                        if target is not None:
                            r["target"] = target
                            r["pass"] = r["ratio"] >= target
                out_rows.append(r)
            results.append({"id": wid, "title": title, "unit": unit,
                            "rows": out_rows})

        if want("W8"):
            h.section("W8")
            w8 = {s: [] for s in w8_sizes}
            recov = []
            for r in range(heavy_rounds):
                order = w8_sizes if r % 2 == 0 else w8_sizes[::-1]
                for size in order:
                    secs, nbytes, acked, end, segs = w8_case(h, size)
                    w8[size].append((secs, nbytes))
                    recov.append({"target_bytes": size, "bytes": nbytes,
                                  "segments": segs, "acked": acked,
                                  "reopened_end": end, "seconds": secs})
                    if end != acked:
                        notes.append(f"W8 BUG: killed writer acknowledged "
                                     f"{acked} records, reopened log has {end}")
                    h.progress(f"  round {r + 1}: {size >> 20} MiB "
                               f"{secs * 1e3:.1f} ms")
            rows = []
            small, big = w8_sizes[0], w8_sizes[-1]
            for size in w8_sizes:
                ms = statistics.median(s for s, _ in w8[size]) * 1e3
                rows.append({"metric": f"w8.{size >> 20}MiB",
                             "label": f"log of {size >> 20} MiB (median "
                                      f"{statistics.median(b for _, b in w8[size]) / 2**20:.0f} MiB appended)",
                             "unit": "ms", "median": ms,
                             "rounds": [s * 1e3 for s, _ in w8[size]]})
            ms_small, ms_big = rows[0]["median"], rows[-1]["median"]
            # "independent of size": the big log reopens within 1.5x (+5 ms)
            # of the small one, although it is 10x larger
            ok = ms_big <= 1.5 * ms_small + 5.0
            rows.append({"metric": "w8.growth",
                         "label": f"reopen {big >> 20} MiB / {small >> 20} MiB",
                         "unit": "x", "median": ms_big / ms_small,
                         "target_text": "<= 1.5x (+5 ms)", "pass": ok})
            results.append({"id": "W8", "title": "reopen after SIGKILL: "
                            "pylog.open() to first append returned (fresh "
                            "process, warm page cache)", "unit": "ms",
                            "rows": rows, "recovery": recov})

        if want("W9"):
            h.section("W9")
            m = w9_run(h, n_mem)
            anon = (m["peak"]["RssAnon"] - m["base"]["RssAnon"]) / 2**20
            fil = (m["peak"]["RssFile"] - m["base"]["RssFile"]) / 2**20
            rows = [
                {"metric": "w9.anon", "label": "RssAnon growth (peak - base)",
                 "unit": "MiB", "median": anon, "target_text": "< 50 MiB",
                 "pass": anon < 50},
                {"metric": "w9.file", "label": "RssFile growth (peak - base)",
                 "unit": "MiB", "median": fil},
                {"metric": "w9.hwm", "label": "VmHWM at end",
                 "unit": "MiB", "median": m["end"]["VmHWM"] / 2**20},
                {"metric": "w9.rate", "label": "append rate during the run",
                 "unit": "rec/s", "median": m["records"] / m["seconds"]},
            ]
            results.append({"id": "W9", "title": f"memory while appending "
                            f"{n_mem:,} records with append() (child process)",
                            "unit": "MiB", "rows": rows, "raw": m})
        if want("W10"):
            h.section("W10")
            res = wamp.run(h.base, **(wamp.QUICK if q else wamp.FULL),
                           progress=h.progress)
            rows = []
            summary = wamp.summarize(res)
            for r in summary["rows"]:
                rows.append({**r, "metric": f"w10.{r['case']}.{r['shape']}",
                             "label": f"{r['label']}, {r['shape']}",
                             "unit": "B/B",
                             "median": r.get("process_per_byte")})
            if summary["idle_device_bytes"] is not None:
                rows.append({"metric": "w10.idle", "unit": "KiB",
                             "label": "idle: device writes in the same wait",
                             "median": summary["idle_device_bytes"] / 1024})
            results.append({"id": "W10", "title": "write amplification: "
                            "bytes written per value byte appended (child "
                            "processes)", "unit": "B/B", "rows": rows,
                            "lines": wamp.render_lines(res), "raw": res})
        h.section(None)
    finally:
        h.close()

    total = time.perf_counter() - t_start
    targets = [{"workload": w["id"], "row": r["label"],
                "ratio_of": r.get("ratio_of", r["metric"]),
                "value": r.get("ratio", r.get("median")),
                "target": r.get("target", r.get("target_text")),
                "pass": r["pass"]}
               for w in results for r in w["rows"] if "pass" in r]
    doc = {"mode": "quick" if q else "full", "rounds": rounds,
           "heavy_rounds": heavy_rounds, "budget_s": args.budget,
           "seconds": round(total, 1),
           "section_seconds": h.section_seconds, "machine": machine(),
           "loadavg_start": [round(x, 2) for x in load_start],
           "loadavg_end": [round(x, 2) for x in os.getloadavg()],
           "disk": disk_of(args.dir or tempfile.gettempdir()),
           "workloads": results, "targets": targets, "notes": notes}
    if args.json:
        json.dump(doc, sys.stdout, indent=1)
        print()
    else:
        print(render(doc))
    return 0


# ---------------------------------------------------------------------------
# the human table
# ---------------------------------------------------------------------------
def fmt(v, unit):
    if v is None:
        return "-"
    if unit in ("rec/s", "get/s"):
        if v >= 1e6:
            return f"{v / 1e6:.2f} M"
        if v >= 1e3:
            return f"{v / 1e3:.1f} k"
        return f"{v:.0f}"
    if unit in ("x", "B/B"):
        return f"{v:.2f}"
    return f"{v:.1f}"


def render(doc):
    m, dk = doc["machine"], doc["disk"]
    out = [f"pylog compare ({doc['mode']}: {doc['rounds']} rounds, "
           f"{doc['heavy_rounds']} for W3-W8; medians; ratio = pylog / peer, "
           f"higher is better) in {doc['seconds']} s",
           f"machine: {m.get('nproc')} CPUs, {m.get('mem_total_gib')} GiB, "
           f"Linux {m.get('kernel')}, Python {m.get('python')}, "
           f"disk {dk.get('device')} {dk.get('fstype')} "
           f"{dk.get('rotational', '')} ({dk.get('mount_options', '')})",
           f"load average (1/5/15 min) at start {doc['loadavg_start']}, "
           f"at end {doc['loadavg_end']}",
           f"versions: SQLite {m.get('sqlite')}, py-lmdb {m.get('lmdb')} "
           f"(LMDB {m.get('lmdb_lib')}), queuelib {m.get('queuelib')}, "
           f"persist-queue {m.get('persist-queue')}", ""]
    w = 40
    passes = misses = 0
    for wl in doc["workloads"]:
        out.append(f"{wl['id']}  {wl['title']}")
        if "lines" in wl:       # a workload with a table of its own (W10)
            out += wl["lines"] + [""]
            continue
        out.append(f"    {'implementation':<{w}} {'median':>12} {'ratio':>8} "
                   f"{'target':>9}  result")
        for r in wl["rows"]:
            if "skipped" in r:
                out.append(f"    {r['label']:<{w}} {r['skipped']}")
                continue
            med = f"{fmt(r['median'], r['unit'])} {r['unit']}"
            ratio = f"{r['ratio']:.2f}x" if "ratio" in r else ""
            if r["unit"] == "x":
                med, ratio = "", f"{r['median']:.2f}x"
            tgt = (f">= {r['target']:g}x" if "target" in r
                   else r.get("target_text", ""))
            res = ""
            if "pass" in r:
                res = "PASS" if r["pass"] else "MISS"
                passes += r["pass"]
                misses += not r["pass"]
            out.append(f"    {r['label']:<{w}} {med:>12} {ratio:>8} "
                       f"{tgt:>9}  {res}")
        out.append("")
    out.append("seconds per workload: " + ", ".join(
        f"{k} {v}" for k, v in doc.get("section_seconds", {}).items()))
    out.append(f"targets: {passes} PASS, {misses} MISS")
    for t in doc["targets"]:
        if not t["pass"]:
            tgt = t["target"]
            tgt = tgt if isinstance(tgt, str) else f">= {tgt:g}x"
            out.append(f"  MISS {t['workload']} {t['row']}: "
                       f"{t['value']:.2f} (target {tgt})")
    for n in doc["notes"]:
        out.append(f"NOTE: {n}")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
