"""Gateway workload "gets": random point reads on a freshly reopened store.

One child process (run by bench/edge.py) writes n records of 100 bytes in
batches of 1,000 to pylog (one topic), SQLite (WAL, INTEGER PRIMARY KEY
0..n-1) and LMDB (big-endian u64 keys 0..n-1), and closes them. Then,
for each round, and in each round for every store in turn (the order
rotates), it reopens the store in the same process (the page cache stays
warm: it was just written) and reads:

  first   k random offsets, each get timed on its own: the first reads of
          a reopened store (for pylog: the first read of each batch
          verifies its checksum)
  warm    k other random offsets, each timed on its own (median, p99)
  warm-all k other random offsets timed as one loop: mean us per get
          without the timer's own cost, for the side-by-side ratio
  slow    the offsets of the warm pass slower than 4x its median, read
          three more times: how many are slow every time (a cost paid on
          every read of an offset, not once)

pylog: topic.get(offset).value; SQLite: SELECT v ... WHERE id = ?; LMDB:
txn.get(key) in one read transaction per pass. Every per-get time includes
two perf_counter_ns() calls; their cost (measured, "timer_ns") is not
subtracted.
"""
import os
import random
import sqlite3
import statistics
import struct
import time

KEY = struct.Struct(">Q").pack
VALUE = b"v" * 100
BATCH = 1000
SLOW = 4        # a get slower than 4x the warm median is "slow"
REPEAT = 3      # slow warm offsets are read again this many times


def _pylog_store(pylog, d, opts):
    def write(n):
        with pylog.open(d, **opts) as log:
            t = log.topic("t")
            vals = [VALUE] * BATCH
            for _ in range(n // BATCH):
                t.append_batch(vals)

    def reopen():
        log = pylog.open(d, **opts)
        t = log.topic("t")
        return (lambda o: t.get(o).value), None, log.close
    return write, reopen


def _sqlite_store(d):
    path = os.path.join(d, "db.sqlite")

    def connect():
        con = sqlite3.connect(path, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        return con

    def write(n):
        con = connect()
        con.execute("CREATE TABLE log(id INTEGER PRIMARY KEY, v BLOB)")
        for b in range(n // BATCH):
            con.execute("BEGIN")
            con.executemany("INSERT INTO log(id, v) VALUES (?, ?)",
                            ((i, VALUE) for i in range(b * BATCH,
                                                      (b + 1) * BATCH)))
            con.execute("COMMIT")
        con.close()

    def reopen():
        con = connect()
        ex = con.execute
        q = "SELECT v FROM log WHERE id = ?"
        return (lambda o: ex(q, (o,)).fetchone()[0]), None, con.close
    return write, reopen


def _lmdb_store(d):
    import lmdb
    path = os.path.join(d, "lmdb")

    def write(n):
        env = lmdb.open(path, map_size=4 << 30, sync=False, metasync=False)
        for b in range(n // BATCH):
            with env.begin(write=True) as txn:
                txn.cursor().putmulti(
                    [(KEY(i), VALUE) for i in range(b * BATCH,
                                                    (b + 1) * BATCH)],
                    append=True)
        env.close()

    def reopen():
        env = lmdb.open(path, map_size=4 << 30, readonly=True, lock=False)
        state = {}

        def begin():        # one read transaction per pass
            if "txn" in state:
                state["txn"].abort()
            state["txn"] = env.begin()
            state["get"] = state["txn"].get

        def close():
            if "txn" in state:
                state["txn"].abort()
            env.close()
        begin()
        return (lambda o: state["get"](KEY(o))), begin, close
    return write, reopen


def _timed_each(get, offs):
    ns = time.perf_counter_ns
    out = []
    app = out.append
    for o in offs:
        t0 = ns()
        get(o)
        app(ns() - t0)
    return out


def _summary(ns_list):
    s = sorted(ns_list)
    return {"median_us": s[len(s) // 2] / 1e3,
            "mean_us": sum(s) / len(s) / 1e3,
            "p99_us": s[int(len(s) * 0.99)] / 1e3,
            "max_us": s[-1] / 1e3}


def child(p):
    import pylog
    n, k, rounds = p["records"], p["gets"], p["rounds"]
    base = p["dir"]
    stores = {}
    setup = {}
    for name in ("pylog", "sqlite", "lmdb"):
        d = os.path.join(base, name)
        os.makedirs(d)
        if name == "pylog":
            write, reopen = _pylog_store(pylog, d, p.get("open_options") or {})
        elif name == "sqlite":
            write, reopen = _sqlite_store(d)
        else:
            write, reopen = _lmdb_store(d)
        t0 = time.perf_counter()
        write(n)
        setup[name] = time.perf_counter() - t0
        stores[name] = reopen
    ns = time.perf_counter_ns
    timer = statistics.median(-(ns() - ns()) for _ in range(10001))
    samples = {name: [] for name in stores}
    names = list(stores)
    rnd = random.Random(p.get("seed", 11))
    for r in range(rounds):
        offs = [[rnd.randrange(n) for _ in range(k)] for _ in range(3)]
        order = names[r % 3:] + names[:r % 3]
        for name in order:
            get, begin, close = stores[name]()
            first = _timed_each(get, offs[0])
            if begin:
                begin()
            warm = _timed_each(get, offs[1])
            if begin:
                begin()
            t0 = time.perf_counter()
            for o in offs[2]:
                get(o)
            whole = time.perf_counter() - t0
            # offsets slow in the warm pass: slow again on every re-read?
            med = sorted(warm)[len(warm) // 2]
            slow = [o for o, t in zip(offs[1], warm) if t > SLOW * med]
            again = [_timed_each(get, slow) for _ in range(REPEAT)]
            stuck = [min(ts) for ts in zip(*again)
                     if min(ts) > SLOW * med]
            close()
            samples[name].append({
                "first": _summary(first), "warm": _summary(warm),
                "warm_all_mean_us": whole / k * 1e6,
                "slow_in_warm": len(slow), "slow_every_time": len(stuck),
                "slow_every_time_median_us":
                    (sorted(stuck)[len(stuck) // 2] / 1e3 if stuck
                     else None)})
    out = {"records": n, "gets": k, "rounds": rounds, "timer_ns": timer,
           "setup_seconds": setup, "stores": {}}
    for name, ss in samples.items():
        agg = {}
        for fig in ("first", "warm"):
            for stat in ("median_us", "mean_us", "p99_us", "max_us"):
                vals = [s[fig][stat] for s in ss]
                agg[f"{fig}_{stat}"] = statistics.median(vals)
                agg[f"{fig}_{stat}_range"] = [min(vals), max(vals)]
        vals = [s["warm_all_mean_us"] for s in ss]
        agg["warm_all_mean_us"] = statistics.median(vals)
        agg["warm_all_mean_us_range"] = [min(vals), max(vals)]
        for fig in ("slow_in_warm", "slow_every_time"):
            agg[fig] = statistics.median(s[fig] for s in ss)
        us = [s["slow_every_time_median_us"] for s in ss
              if s["slow_every_time_median_us"] is not None]
        agg["slow_every_time_median_us"] = (statistics.median(us) if us
                                            else None)
        out["stores"][name] = agg
    return out
