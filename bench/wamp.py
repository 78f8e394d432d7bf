"""Write amplification: bytes written per byte appended, pylog and its peers.

Used by bench/edge.py (workload "wamp") and bench/compare.py (W10).

Each case runs in its own child process (bench/children.py): it creates
the store (pylog topic, SQLite table, LMDB environment) and closes it, calls
sync(2), reads its counters, reopens the store, appends `records` records
of 100 bytes at a steady pace over `seconds` (single records: one append,
one autocommit INSERT or one LMDB transaction per record; batches: 1,000
records per append_batch, transaction or putmulti), closes the store,
reads its counters, calls sync(2) again and reads the device's. The pace
stands for a gateway's sensors and gives sync="interval" its timer.

Two figures per case, both divided by the value bytes appended:

  process   /proc/self/io write_bytes of the child: bytes of page cache
            the process dirtied (write(2), pwritev(2) or stores into a
            shared file mapping), charged in whole pages (or whole large
            folios) when they become dirty; a page written back by an
            fsync and dirtied again counts again. It does not see the file
            system's own writes (journal, inodes).
  device    512-byte sectors the block device holding the directory wrote
            (/sys/dev/block/M:N/stat) from the first sync(2) to the one
            after close: data, journal and metadata, as the flash sees
            them, including everything else the machine wrote meanwhile
            (the "idle" case measures that: the same wait, nothing
            appended).

Stores and modes:
  pylog     sync="none", "interval" (default 1,000 ms), "always"
  SQLite    journal_mode=WAL with synchronous=FULL (a commit is durable)
            and NORMAL (durable at checkpoints)
  LMDB      sync=True (a commit is durable) and sync=False (nosync:
            metasync off too; durable when the OS writes it back)
"""
import os
import sqlite3
import struct
import time

import children
import procstat

VALUE_BYTES = 100
BATCH = 1000
TICK = 0.01               # the pace is kept in steps of 10 ms
KEY = struct.Struct(">Q").pack

# (key, label, store, mode); modes are the store's own words
CASES = [
    ("pylog.none", "pylog sync=none", "pylog", "none"),
    ("pylog.interval", "pylog sync=interval", "pylog", "interval"),
    ("pylog.always", "pylog sync=always", "pylog", "always"),
    ("sqlite.normal", "SQLite WAL NORMAL", "sqlite", "NORMAL"),
    ("sqlite.full", "SQLite WAL FULL", "sqlite", "FULL"),
    ("lmdb.nosync", "LMDB sync=False", "lmdb", False),
    ("lmdb.sync", "LMDB sync=True", "lmdb", True),
]
SHAPES = [("single", 1), ("batch", BATCH)]

# run() arguments of a full and a quick run (bench/edge.py, bench/compare.py)
FULL = {"records": {"single": 3000, "batch": 30_000}, "seconds": 3.0,
        "rounds": 3}
QUICK = {"records": {"single": 300, "batch": 3000}, "seconds": 0.3,
         "rounds": 1}


# ---- stores: setup(d) makes it; start(d) -> (append(i), close) -------------
def _pylog(mode, opts):
    import pylog

    def setup(d):
        with pylog.open(d, sync=mode, **opts) as log:
            log.topic("t")

    def start(d):
        log = pylog.open(d, sync=mode, **opts)
        t = log.topic("t")
        v = b"v" * VALUE_BYTES
        vals = [v] * BATCH
        return (lambda i: t.append(v)), (lambda i: t.append_batch(vals)), \
            log.close
    return setup, start


def _sqlite(mode, opts):
    def connect(d):
        con = sqlite3.connect(os.path.join(d, "db.sqlite"),
                              isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute(f"PRAGMA synchronous={mode}")
        return con

    def setup(d):
        con = connect(d)
        con.execute("CREATE TABLE log(id INTEGER PRIMARY KEY, v BLOB)")
        con.close()

    def start(d):
        con = connect(d)
        p = (b"v" * VALUE_BYTES,)
        rows = [p] * BATCH
        ins = "INSERT INTO log(v) VALUES (?)"

        def one(i):
            con.execute(ins, p)

        def batch(i):
            con.execute("BEGIN")
            con.executemany(ins, rows)
            con.execute("COMMIT")
        return one, batch, con.close
    return setup, start


def _lmdb(mode, opts):
    import lmdb

    def env_open(d):
        return lmdb.open(os.path.join(d, "lmdb"), map_size=1 << 30,
                         sync=mode, metasync=mode)

    def setup(d):
        env_open(d).close()

    def start(d):
        env = env_open(d)
        v = b"v" * VALUE_BYTES

        def one(i):
            with env.begin(write=True) as txn:
                txn.put(KEY(i), v, append=True)

        def batch(i):
            base = i * BATCH
            with env.begin(write=True) as txn:
                txn.cursor().putmulti(
                    [(KEY(k), v) for k in range(base, base + BATCH)],
                    append=True)
        return one, batch, env.close
    return setup, start


STORES = {"pylog": _pylog, "sqlite": _sqlite, "lmdb": _lmdb}


def paced(calls, seconds, fn):
    """fn(0), fn(1), ... fn(calls - 1) spread evenly over seconds."""
    ticks = max(1, int(seconds / TICK))
    t0 = time.perf_counter()
    done = 0
    for k in range(1, ticks + 1):
        target = calls * k // ticks
        while done < target:
            fn(done)
            done += 1
        delay = t0 + k * TICK - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    return time.perf_counter() - t0


def child(p):
    d = p["dir"]
    sysdir, devname = procstat.device_of(d)
    out = {"case": p["case"], "shape": p["shape"], "device": devname}
    if p["case"] == "idle":
        os.sync()
        dev0 = procstat.sectors_written(sysdir)
        time.sleep(p["seconds"])
        os.sync()
        dev1 = procstat.sectors_written(sysdir)
        out["device_bytes"] = (None if dev0 is None
                               else (dev1 - dev0) * procstat.SECTOR)
        return out
    _key, _label, store, mode = next(c for c in CASES if c[0] == p["case"])
    setup, start = STORES[store](mode, p.get("open_options") or {})
    per_call = dict(SHAPES)[p["shape"]]
    calls = max(1, p["records"] // per_call)
    try:
        setup(d)
        os.sync()
        dev0 = procstat.sectors_written(sysdir)
        io0 = procstat.io()
        t0 = time.perf_counter()
        one, batch, close = start(d)
        fn = one if per_call == 1 else batch
        out["append_seconds"] = paced(calls, p["seconds"], fn)
        close()
        out["seconds"] = time.perf_counter() - t0
        io1 = procstat.io()
        os.sync()
        dev1 = procstat.sectors_written(sysdir)
    except Exception as e:
        out.update(children.describe_error(e))
        return out
    value_bytes = calls * per_call * VALUE_BYTES
    out.update({
        "records": calls * per_call, "value_bytes": value_bytes,
        "device_bytes": (None if dev0 is None
                         else (dev1 - dev0) * procstat.SECTOR)})
    if io0 is None or io1 is None:      # a kernel without task I/O stats
        out.update({"error": "NoProcIo", "message": "/proc/self/io is not "
                    "readable here"})
        return out
    for k in ("write_bytes", "cancelled_write_bytes", "wchar"):
        out[k] = io1[k] - io0[k]
    out["process_per_byte"] = out["write_bytes"] / value_bytes
    if out["device_bytes"] is not None:
        out["device_per_byte"] = out["device_bytes"] / value_bytes
    return out


# ---- the parent side ------------------------------------------------------------
def run(base_dir, records, seconds, rounds, open_options=None,
        progress=None):
    """Every case x shape, `rounds` times round-robin (the order rotates),
    each in a fresh directory and child process; plus one idle case per
    round. Returns {"cases": [...], "idle": [...]} with every sample.
    Raises RuntimeError if a child failed through a fault of this code
    (bench/children.py); failures of the stores are samples."""
    import shutil
    import tempfile
    todo = [(c[0], s[0]) for s in SHAPES for c in CASES]
    samples = {k: [] for k in todo}
    idle = []
    for r in range(rounds):
        k = (r * 3) % len(todo)
        for case, shape in todo[k:] + todo[:k] + [("idle", None)]:
            d = tempfile.mkdtemp(prefix="wamp-", dir=base_dir)
            try:
                res = children.run_child("wamp", {
                    "case": case, "shape": shape, "dir": d,
                    "records": records[shape] if shape else 0,
                    "seconds": seconds,
                    "open_options": open_options or {}}, timeout=600)
            finally:
                shutil.rmtree(d, ignore_errors=True)
            (idle if case == "idle" else samples[(case, shape)]).append(res)
            if progress:
                progress(f"  wamp round {r + 1}/{rounds}: {case} {shape}")
    broken = children.harness_errors([samples[k] for k in todo] + idle)
    if broken:
        raise RuntimeError(f"wamp child failed: {broken[0]['failed']}\n"
                           f"{broken[0].get('stderr', '')}")
    out = []
    for case, shape in todo:
        label = next(c[1] for c in CASES if c[0] == case)
        out.append({"case": case, "shape": shape, "label": label,
                    "samples": samples[(case, shape)]})
    return {"cases": out, "idle": idle, "records": records,
            "seconds": seconds, "rounds": rounds,
            "value_bytes": VALUE_BYTES, "batch": BATCH}


def _median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


def summarize(res):
    """Per case: median and range of both figures over the rounds."""
    rows = []
    for c in res["cases"]:
        ok = [s for s in c["samples"] if "process_per_byte" in s]
        bad = [s for s in c["samples"] if "process_per_byte" not in s]
        row = {"case": c["case"], "shape": c["shape"], "label": c["label"]}
        for fig in ("process_per_byte", "device_per_byte"):
            vals = [s.get(fig) for s in ok if s.get(fig) is not None]
            if vals:
                row[fig] = _median(vals)
                row[fig + "_range"] = [min(vals), max(vals)]
        if ok:
            row["records"] = ok[0]["records"]
            row["device"] = ok[0].get("device")
        if bad:
            row["failures"] = [{k: s.get(k) for k in
                                ("error", "message", "failed")} for s in bad]
        rows.append(row)
    idle = [s.get("device_bytes") for s in res["idle"]]
    return {"rows": rows,
            "idle_device_bytes": _median(idle),
            "idle_device_bytes_range": ([min(i for i in idle if i is not None),
                                         max(i for i in idle if i is not None)]
                                        if any(i is not None for i in idle)
                                        else None)}


def render_lines(res):
    """The table, as lines of text."""
    s = summarize(res)
    shape_txt = {"single": "single records (1 per append/txn)",
                 "batch": f"batches of {res['batch']:,}"}
    lines = [f"    {'store and mode':<26} {'shape':<8} {'records':>8} "
             f"{'process B/B':>12} {'device B/B':>11}  (median [min-max] "
             f"of {res['rounds']})"]
    for r in s["rows"]:
        if "process_per_byte" not in r:
            f = (r.get("failures") or [{}])[0]
            lines.append(f"    {r['label']:<26} {r['shape']:<8} failed: "
                         f"{f.get('error') or f.get('failed')} "
                         f"{f.get('message') or ''}")
            continue
        pr, dr = r["process_per_byte_range"], r.get("device_per_byte_range")
        dev = (f"{r['device_per_byte']:>11.2f}  [{dr[0]:.2f}-{dr[1]:.2f}]"
               if dr else f"{'-':>11}")
        lines.append(f"    {r['label']:<26} {r['shape']:<8} "
                     f"{r['records']:>8,} {r['process_per_byte']:>12.2f}"
                     f"  [{pr[0]:.2f}-{pr[1]:.2f}] {dev}")
    idle = s["idle_device_bytes"]
    rng = s["idle_device_bytes_range"]
    lines.append(f"    idle: the device wrote {idle / 1024:.0f} KiB "
                 f"[{rng[0] / 1024:.0f}-{rng[1] / 1024:.0f}] in "
                 f"{res['seconds']} s with nothing appended"
                 if idle is not None else "    idle: no block device")
    lines.append(f"    records of {res['value_bytes']} B paced over "
                 f"{res['seconds']} s; {shape_txt['single']}; "
                 f"{shape_txt['batch']}")
    lines.append("    process: /proc/self/io write_bytes (page cache "
                 "dirtied by the process, recounted when redirtied after "
                 "writeback)")
    lines.append("    device: sectors the block device wrote, sync(2) to "
                 "sync(2) after close (journal, metadata and other writers "
                 "included)")
    return lines
