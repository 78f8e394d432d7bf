"""Gateway workload "backlog": read a large backlog from start to end.

Two kinds of child process (run by bench/edge.py):

  writer  appends batches of records round-robin over `topics` topics until
          their record bytes reach total_bytes, then closes the log. No
          limits: it only makes the backlog.
  reader  lowers RLIMIT_NOFILE (and RLIMIT_AS when asked: a 32-bit
          gateway has about 3 GiB of address space), opens the log and
          every topic, reads each topic from offset 0 to its end, touching
          every value, and samples while it reads: open fds, maps, bytes
          mapped from the log's files (all, and from topics/: the
          segments and indexes) and RSS (peaks are reported). RSS is
          taken before the read (log and topics open), after it (still
          open) and after close.

A reader failure (ENOMEM from mmap under RLIMIT_AS, EMFILE, ...) is
reported with how many records had been read.
"""
import gc
import os
import time

import children
import procstat


def writer(p):
    import pylog
    d, total = p["dir"], p["total_bytes"]
    vals = [b"v" * p["value_bytes"]] * p["batch"]
    opts = p.get("open_options") or {}
    t0 = time.perf_counter()
    written = records = 0
    with pylog.open(d, **opts) as log:
        topics = [log.topic(f"b{i:04d}") for i in range(p["topics"])]
        while written < total:
            for t in topics:
                t.append_batch(vals)
                records += len(vals)
            written = sum(t.stats()["appended_bytes"] for t in topics)
        segments = sum(t.stats()["segments"] for t in topics)
    return {"records": records, "record_bytes": written,
            "segments": segments, "seconds": time.perf_counter() - t0}


def reader(p):
    import pylog
    d = p["dir"]
    opts = p.get("open_options") or {}
    every = p["sample_every"]
    out = {"limits": children.set_limits(nofile=p.get("nofile"),
                                         address_space=p.get("as_limit"))}
    prefix = os.path.join(os.path.abspath(d), "")

    def measure():
        with children.relaxed_nofile():
            return procstat.snapshot(prefix)

    peak = {"fds": 0, "maps": 0, "mapped_bytes": 0, "mapped_segments": 0,
            "VmRSS": 0, "RssFile": 0, "RssAnon": 0}

    def sample():
        s = measure()
        s["mapped_segments"] = (s.get("mapped_by_dir") or {}).get("topics", 0)
        for k in peak:
            if s.get(k) is not None:
                peak[k] = max(peak[k], s[k])
        return s

    out["start"] = sample()
    log = None
    topics = []
    read = 0
    try:
        t0 = time.perf_counter()
        log = pylog.open(d, **opts)
        for name in log.topics():
            topics.append(log.topic(name))
        out["open_seconds"] = time.perf_counter() - t0
        out["before_read"] = sample()
        t0 = time.perf_counter()
        nbytes = 0
        nxt = every
        for t in topics:
            for rec in t.read(0):
                nbytes += len(rec.value)
                read += 1
                if read >= nxt:
                    sample()
                    nxt += every
        out["read_seconds"] = time.perf_counter() - t0
        out["rate"] = read / out["read_seconds"]
        out["value_bytes_read"] = nbytes
        rec = None
        gc.collect()
        out["after_read"] = sample()
    except Exception as e:
        out["failed_phase"] = "open" if "before_read" not in out else "read"
        out.update(children.describe_error(e))
        out["at_failure"] = sample()
    out["records_read"] = read
    out["topics_opened"] = len(topics)
    try:
        if log is not None:
            log.close()
    except Exception as e:
        out["close_error"] = children.describe_error(e)
    topics = log = None
    gc.collect()
    out["after_close"] = measure()
    out["peak"] = peak
    return out


def child(p):
    return writer(p) if p["role"] == "writer" else reader(p)
