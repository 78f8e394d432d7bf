"""Gateway workload "budgets": topics capped at a few MiB.

For each max_bytes (1, 2, 4 MiB), on_full policy and append shape (single
records, batches), in a fresh log opened with default options (plus any
--open-option), one child process (run by bench/edge.py):

  - creates the topic with only max_bytes and on_full given (and
    full_timeout_ms=100 for "block", so that a full topic costs 0.1 s per
    refused append instead of the default 10 s: nothing here frees room);
  - appends until on_full first acts (the first LogFullError for "reject"
    and "block"; the first record dropped for "drop_oldest"), and records
    the bytes the topic held just before: record bytes as stored (batch
    and record headers included: appended_bytes - dropped bytes of
    stats()) and value bytes, each as a fraction of max_bytes;
  - goes on appending until `factor` x max_bytes of values were offered
    ("reject"/"block": after_full more refused appends are enough),
    counting every exception by type, and the largest
    stats()["bytes_on_disk"] seen.

A topic that cannot be created is a result (the error), not a crash.
With segment_divisors containing k, the same cases run again with
segment_bytes = max_bytes / k given explicitly (0 or None: defaults only).
"""
import os
import shutil
import time

import children

VALUE_BYTES = 100


def _held(t):
    s = t.stats()
    rec = (s["appended_bytes"] - s["retention_dropped_bytes"]
           - s["full_dropped_bytes"])
    return rec, (s["end_offset"] - s["start_offset"]) * VALUE_BYTES, s


def one_case(pylog, d, max_bytes, on_full, batch, factor, opts,
             segment_bytes=None, after_full=10):
    out = {"max_bytes": max_bytes, "on_full": on_full, "batch": batch,
           "segment_bytes_given": segment_bytes}
    cfg = {"max_bytes": max_bytes, "on_full": on_full}
    if segment_bytes:
        cfg["segment_bytes"] = segment_bytes
    if on_full == "block":
        cfg["full_timeout_ms"] = 100
    value = b"v" * VALUE_BYTES
    vals = [value] * batch
    step = VALUE_BYTES * batch
    errors = {}
    try:
        log = pylog.open(d, **opts)
    except Exception as e:
        out["open_error"] = children.describe_error(e)
        return out
    try:
        try:
            t = log.topic("budget", **cfg)
        except Exception as e:
            out["create_error"] = children.describe_error(e)
            return out
        out["segment_bytes"] = t.config.get("segment_bytes")
        offered = refused_after = appends = 0
        first = None          # (record bytes, value bytes) before on_full acted
        peak_disk = 0
        t0 = time.perf_counter()
        while offered < factor * max_bytes:
            if first is None or appends % 256 == 0:
                rec, val, s = _held(t)
                peak_disk = max(peak_disk, s["bytes_on_disk"])
            offered += step
            appends += 1
            try:
                if batch == 1:
                    t.append(value)
                else:
                    t.append_batch(vals)
            except Exception as e:
                name = type(e).__name__
                errors[name] = errors.get(name, 0) + 1
                if not isinstance(e, pylog.PylogError):
                    out.setdefault("foreign_errors", []).append(
                        children.describe_error(e))
                if first is None:
                    first = (rec, val)
                    out["first_action"] = name
                    out["first_error"] = children.describe_error(e)
                if on_full != "drop_oldest":
                    refused_after += 1
                    if refused_after > after_full:
                        break
                continue
            if first is None and on_full == "drop_oldest":
                if t.stats()["full_dropped_records"] > 0:
                    first = (rec, val)
                    out["first_action"] = "dropped oldest"
        out["seconds"] = time.perf_counter() - t0
        rec2, val2, s = _held(t)
        peak_disk = max(peak_disk, s["bytes_on_disk"])
        out.update({"appends": appends, "offered_value_bytes": offered,
                    "errors": errors, "peak_bytes_on_disk": peak_disk,
                    "end": {k: s[k] for k in (
                        "start_offset", "end_offset", "segments",
                        "bytes_on_disk", "full_dropped_records",
                        "rejected_records")},
                    "held_record_bytes_end": rec2})
        if first is not None:
            out["held_record_bytes"], out["held_value_bytes"] = first
            out["usable_fraction"] = first[0] / max_bytes
            out["value_fraction"] = first[1] / max_bytes
        return out
    finally:
        try:
            log.close()
        except Exception as e:
            out["close_error"] = children.describe_error(e)


def child(p):
    import pylog
    out = []
    for div in p["segment_divisors"]:
        for mb in p["sizes_mib"]:
            seg = (mb << 20) // div if div else None
            for on_full in ("reject", "drop_oldest", "block"):
                for batch in p["batches"]:
                    d = os.path.join(p["dir"], f"b{mb}-{on_full}-{batch}")
                    try:
                        out.append(one_case(
                            pylog, d, mb << 20, on_full, batch, p["factor"],
                            p.get("open_options") or {}, seg,
                            p.get("after_full", 10)))
                    finally:
                        shutil.rmtree(d, ignore_errors=True)
    return {"cases": out, "value_bytes": VALUE_BYTES,
            "factor": p["factor"]}
