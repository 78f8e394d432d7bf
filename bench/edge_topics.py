"""Gateway workload "topics": many topics under a 1,024-descriptor limit.

One child process per topic count (run by bench/edge.py). It lowers its
RLIMIT_NOFILE, then:

  1. single  appends n_topics * records records (at least 100,000) to
             one fresh topic of a separate log, timed in chunks of n_topics
             appends: its median chunk after the first is the reference
             rate of the same run (measured again at the end; the two are
             averaged)
  2. create  opens the log and creates n_topics topics
  3. append  `records` rounds, each appending one record to every topic
             in turn; round 1 is each topic's first append ("first
             round"), the median round of the others is "warm"
  4. while open: allocated bytes of the log directory (st_blocks * 512),
             fds, maps, bytes mapped from the log's files, RSS
  5. close, then reopen: pylog.open() and opening every topic, timed
  6. read    every topic from offset 0, checking the record count
  7. single  the reference rate again

A failure (EMFILE, ENOMEM, DiskFullError, ...) ends its phase and is
recorded with the topic and round it hit; the phases after it run with the
topics that exist. Creating topics stops early, as a recorded failure, if
the file system's free space falls below min_free_bytes: today's core
preallocates 16 MiB per topic, and the machine is shared.
"""
import os
import statistics
import time

import children
import procstat

SINGLE_MIN = 100_000    # appends of the one-topic reference, at least


def _value(n):
    return b"v" * n


def _free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def measure(logdir, disk=False):
    """snapshot (and allocated bytes if disk) with descriptors to spare."""
    with children.relaxed_nofile():
        out = procstat.snapshot(logdir)
        if disk:
            out.update(procstat.allocated(logdir))
        return out


def single_rate(pylog, d, n, chunk, value, opts):
    """One fresh topic of a fresh log: n appends timed in chunks of `chunk`
    (one chunk per round of the round-robin run); "rate" is the median
    chunk after the first, "first_rate" the first chunk."""
    try:
        with pylog.open(d, **opts) as log:
            t = log.topic("solo")
            ap = t.append
            secs = []
            for _ in range(max(2, n // chunk)):
                t0 = time.perf_counter()
                for _ in range(chunk):
                    ap(value)
                secs.append(time.perf_counter() - t0)
            log.delete_topic("solo")
        return {"records": len(secs) * chunk, "chunk": chunk,
                "first_rate": chunk / secs[0],
                "rate": statistics.median(chunk / s for s in secs[1:])}
    except Exception as e:      # reported, not raised: see module doc
        return children.describe_error(e)


def child(p):
    import pylog
    n_topics, records = p["n_topics"], p["records"]
    value = _value(p["value_bytes"])
    opts = p.get("open_options") or {}
    base = p["dir"]
    logdir = os.path.join(base, "log")
    out = {"n_topics": n_topics, "records_per_topic": records,
           "value_bytes": len(value), "open_options": opts,
           "limits": children.set_limits(nofile=p.get("nofile")),
           "imported": measure(None)}
    failures = out["failures"] = []

    def fail(phase, exc, **where):
        f = {"phase": phase, **where, **children.describe_error(exc)}
        failures.append(f)

    n_single = max(n_topics * records, SINGLE_MIN)
    out["single_before"] = single_rate(pylog, os.path.join(base, "single"),
                                       n_single, n_topics, value, opts)

    # ---- create ----------------------------------------------------------
    names = [f"t{i:05d}" for i in range(n_topics)]
    topics = []
    log = None
    t0 = time.perf_counter()
    try:
        log = pylog.open(logdir, **opts)
        for i, name in enumerate(names):
            if i % 64 == 0 and _free_bytes(base) < p["min_free_bytes"]:
                failures.append({
                    "phase": "create", "topic": i,
                    "error": "StoppedByBenchmark",
                    "message": f"free space of {base} fell below "
                               f"{p['min_free_bytes'] >> 30} GiB"})
                break
            topics.append(log.topic(name))
    except Exception as e:
        fail("create", e, topic=len(topics))
    out["create_seconds"] = time.perf_counter() - t0
    out["topics_created"] = len(topics)
    out["after_create"] = measure(logdir, disk=True)

    # ---- append rounds ---------------------------------------------------
    rounds = []
    i = 0
    if topics:
        try:
            for r in range(records):
                aps = [t.append for t in topics]
                t0 = time.perf_counter()
                for i, ap in enumerate(aps):
                    ap(value)
                rounds.append(time.perf_counter() - t0)
        except Exception as e:
            fail("append", e, round=len(rounds), topic=i)
    k = len(topics)
    out["rounds_done"] = len(rounds)
    if rounds:
        out["first_round_rate"] = k / rounds[0]
    if len(rounds) > 1:
        out["warm_rate"] = statistics.median(k / s for s in rounds[1:])
        out["mean_rate"] = k * len(rounds) / sum(rounds)

    # ---- while open --------------------------------------------------------
    out["open"] = measure(logdir, disk=True)
    data = 0
    try:
        for t in topics:
            data += t.stats()["appended_bytes"]
    except Exception as e:
        fail("stats", e)
    out["data_bytes"] = data        # record bytes as framed on disk

    # ---- close, reopen -------------------------------------------------------
    try:
        t0 = time.perf_counter()
        if log is not None:
            log.close()
        out["close_seconds"] = time.perf_counter() - t0
    except Exception as e:
        fail("close", e)
    topics = []
    log = None
    out["closed"] = measure(logdir, disk=True)
    created = out["topics_created"]
    try:
        t0 = time.perf_counter()
        log = pylog.open(logdir, **opts)
        out["reopen_seconds"] = time.perf_counter() - t0
        for name in names[:created]:
            topics.append(log.topic(name))
        out["reopen_topics_seconds"] = time.perf_counter() - t0
    except Exception as e:
        fail("reopen", e, topic=len(topics))
    out["reopened"] = measure(logdir, disk=True)

    # ---- read everything back ------------------------------------------------
    got = i = 0
    try:
        t0 = time.perf_counter()
        for i, t in enumerate(topics):
            c = 0
            for rec in t.read(0):
                c += 1
            got += c
        secs = time.perf_counter() - t0
        out["read_records"] = got
        out["read_rate"] = got / secs if secs else None
        expect = len(topics) * out["rounds_done"]
        if got < expect:
            failures.append({"phase": "read", "error": "MissingRecords",
                             "message": f"read {got} records, expected at "
                                        f"least {expect}"})
    except Exception as e:
        fail("read", e, topic=i, records=got)
    out["after_read"] = measure(logdir)
    try:
        if log is not None:
            log.close()
    except Exception as e:
        fail("close", e)
    topics = log = None

    out["single_after"] = single_rate(pylog, os.path.join(base, "single"),
                                      n_single, n_topics, value, opts)
    return out
