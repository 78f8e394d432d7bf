#!/usr/bin/env python3
"""pylog on a gateway: disk, descriptors, maps, memory and write amplification.

    python bench/edge.py                  # full run (about 6 minutes here;
                                          # ~20 GB of free disk for today's
                                          # core, which preallocates)
    python bench/edge.py --quick          # small sizes, for CI (< 1 min)
    python bench/edge.py --only topics,gets --json
    python bench/edge.py --open-option max_open_files=256   # to pylog.open

Workloads (each runnable alone with --only NAME):

  topics   1,000 and 10,000 topics of 100 records of 100 B, in a child
           process limited to 1,024 descriptors: allocated bytes while open,
           fds, maps, RSS, mapped bytes, reopen time, round-robin append
           rate (first round, warm) against one topic in the same run,
           read-back. Failures (EMFILE, DiskFullError, ...) are results.
  backlog  a 10 GiB backlog read from start to end in a child process
           (1,024 descriptors; again under RLIMIT_AS = 3 GiB): peak mapped
           bytes of the log's files, fds, maps, RSS before and after; then
           10 GiB over 1,000 topics, read under RLIMIT_AS = 3 GiB.
  budgets  max_bytes of 1, 2 and 4 MiB with default options and each
           on_full: the fraction of max_bytes that holds records when
           on_full first acts, and the errors raised.
  wamp     write amplification: bytes written per byte appended, single
           records and batches of 1,000, pylog sync none / interval /
           always next to SQLite (WAL FULL, NORMAL) and LMDB (sync,
           nosync); /proc/self/io write_bytes and the block device's
           sectors (see bench/wamp.py for what each counts).
  gets     random get on a freshly reopened log of 1,000,000 records
           written in batches of 1,000: us per get in the first pass and
           after it, interleaved with SQLite and LMDB point reads.

Every workload runs in child processes (bench/children.py); the parent
only prints. Targets are the ones set for the gateway work; they are shown
as PASS/MISS for information and never change the exit status, which is 1
only when the benchmark's own code failed (see bench/children.py). The load
average at start and end is printed: the machine may be shared. The device
figure of wamp counts every writer of the device: put --dir on a file
system of its own (a loop device) for a clean one.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import children
import compare
import wamp

WORKLOADS = ("topics", "backlog", "budgets", "wamp", "gets")
GiB, MiB, KiB = 1 << 30, 1 << 20, 1 << 10

FULL = {
    "topics": {"counts": [1000, 10000], "records": 100, "nofile": 1024},
    "backlog": {"total_bytes": 10 * GiB, "batch": 1000,
                "layouts": [{"topics": 1, "as_limits": [None, 3 * GiB]},
                            {"topics": 1000, "as_limits": [3 * GiB]}],
                "sample_every": 1_000_000},
    "budgets": {"sizes_mib": [1, 2, 4], "batches": [1, 100, 1000],
                "factor": 20, "segment_divisors": [0, 4], "after_full": 10},
    "wamp": wamp.FULL,
    "gets": {"records": 1_000_000, "gets": 100_000, "rounds": 5},
}
QUICK = {
    "topics": {"counts": [100, 400], "records": 20, "nofile": 256},
    "backlog": {"total_bytes": 256 * MiB, "batch": 1000,
                "layouts": [{"topics": 1, "as_limits": [None, 3 * GiB]},
                            {"topics": 50, "as_limits": [3 * GiB]}],
                "sample_every": 200_000},
    "budgets": {"sizes_mib": [1, 2, 4], "batches": [1, 100], "factor": 3,
                "segment_divisors": [0, 4], "after_full": 2},
    "wamp": wamp.QUICK,
    "gets": {"records": 200_000, "gets": 20_000, "rounds": 2},
}


def parse_value(v):
    if v.lower() in ("true", "false"):
        return v.lower() == "true"
    try:
        return int(v, 0)
    except ValueError:
        return v


def parse_options(items):
    out = {}
    for item in items or ():
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise SystemExit(f"--open-option takes KEY=VALUE, not {item!r}")
        out[k] = parse_value(v)
    return out


# ---------------------------------------------------------------------------
# workloads (parent side): each returns a JSON-able dict
# ---------------------------------------------------------------------------
def run_topics(cfg, args, progress):
    out = []
    for n in cfg["counts"]:
        d = tempfile.mkdtemp(prefix=f"topics{n}-", dir=args.dir)
        try:
            progress(f"topics: {n:,} topics")
            r = children.run_child("edge_topics", {
                "n_topics": n, "records": cfg["records"], "value_bytes": 100,
                "nofile": cfg["nofile"], "dir": d,
                "min_free_bytes": args.min_free_gib * GiB,
                "open_options": args.open_options}, timeout=3600)
        finally:
            shutil.rmtree(d, ignore_errors=True)
        r.setdefault("n_topics", n)
        out.append(r)
    return {"cases": out, "nofile": cfg["nofile"]}


def run_backlog(cfg, args, progress):
    return {"layouts": [run_backlog_layout(cfg, lay["topics"],
                                           lay["as_limits"], args, progress)
                        for lay in cfg["layouts"]]}


def run_backlog_layout(cfg, topics, as_limits, args, progress):
    d = tempfile.mkdtemp(prefix="backlog-", dir=args.dir)
    try:
        progress(f"backlog: writing {cfg['total_bytes'] / GiB:.2f} GiB "
                 f"over {topics} topic(s)")
        log = os.path.join(d, "log")
        w = children.run_child("edge_backlog", {
            "role": "writer", "dir": log, "total_bytes": cfg["total_bytes"],
            "value_bytes": 100, "batch": cfg["batch"],
            "topics": topics, "open_options": args.open_options},
            timeout=3600)
        readers = []
        if "failed" not in w:
            for lim in as_limits:
                progress(f"backlog: reading (RLIMIT_AS "
                         f"{lim / GiB if lim else 'unlimited'})")
                os.sync()
                r = children.run_child("edge_backlog", {
                    "role": "reader", "dir": log, "nofile": 1024,
                    "as_limit": lim, "sample_every": cfg["sample_every"],
                    "open_options": args.open_options}, timeout=3600)
                r["as_limit"] = lim
                readers.append(r)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return {"writer": w, "readers": readers, "total_bytes": cfg["total_bytes"],
            "topics": topics}


def one_child(name, module):
    """A runner that runs module's child(cfg) once, in a fresh directory."""
    def run(cfg, args, progress):
        d = tempfile.mkdtemp(prefix=f"{name}-", dir=args.dir)
        progress(name)
        try:
            return children.run_child(module, {
                "dir": d, "open_options": args.open_options, **cfg},
                timeout=3600)
        finally:
            shutil.rmtree(d, ignore_errors=True)
    return run


def run_wamp(cfg, args, progress):
    return wamp.run(args.dir, cfg["records"], cfg["seconds"], cfg["rounds"],
                    args.open_options, progress)


RUNNERS = {"topics": run_topics, "backlog": run_backlog,
           "budgets": one_child("budgets", "edge_budgets"), "wamp": run_wamp,
           "gets": one_child("gets", "edge_gets")}


# ---------------------------------------------------------------------------
# the text report
# ---------------------------------------------------------------------------
def mib(b):
    return "-" if b is None else f"{b / MiB:,.1f} MiB"


def size(b):
    if b is None:
        return "-"
    if b >= GiB:
        return f"{b / GiB:,.2f} GiB"
    if b >= MiB:
        return f"{b / MiB:,.1f} MiB"
    return f"{b / KiB:,.0f} KiB"


def rate(r):
    if r is None:
        return "-"
    return f"{r / 1e6:.2f} M/s" if r >= 1e6 else f"{r / 1e3:.1f} k/s"


def verdict(ok):
    return "PASS" if ok else "MISS"


def failed_text(r):
    """What a failed child said: the error it raised, or its stderr."""
    return f"{r['failed']}: {r.get('message') or r.get('stderr', '')[-600:]}"


def failures_text(fs):
    return [f"      FAILED {f.get('phase', '')}"
            + (f" at topic {f['topic']:,}" if f.get("topic") is not None
               else "")
            + (f" round {f['round']}" if f.get("round") is not None else "")
            + f": {f.get('error')} {f.get('message', '')}" for f in fs]


def render_topics(res, targets):
    lines = []
    for c in res["cases"]:
        n = c["n_topics"]
        lines.append(f"  {n:,} topics x {c.get('records_per_topic')} records "
                     f"of 100 B, RLIMIT_NOFILE {res['nofile']}")
        if "failed" in c:
            lines.append(f"      child failed: {failed_text(c)}")
            continue
        lines += failures_text(c["failures"])
        made = c["topics_created"]
        op = c["open"]
        data = c.get("data_bytes") or 0
        bound = data + 128 * KiB * made
        sb, sa = c["single_before"], c["single_after"]
        single = [s["rate"] for s in (sb, sa) if "rate" in s]
        single = sum(single) / len(single) if single else None
        by_dir = op.get("mapped_by_dir") or {}
        lines += [
            f"      created {made:,} topics in {c['create_seconds']:.2f} s; "
            f"appended {c['rounds_done']} rounds",
            f"      while open: allocated {size(op.get('allocated'))} for "
            f"{size(data)} of records ({size(op.get('apparent'))} apparent), "
            f"fds {op.get('fds')}, maps {op.get('maps')}, mapped "
            f"{size(op.get('mapped_bytes'))} from the log (segments "
            f"{size(by_dir.get('topics'))}, catalog "
            f"{size(by_dir.get('catalog'))}), RSS "
            f"{mib(op.get('VmRSS'))} (anon {mib(op.get('RssAnon'))}, file "
            f"{mib(op.get('RssFile'))})",
            f"      after close: allocated "
            f"{size(c['closed'].get('allocated'))}; reopen: pylog.open "
            f"{c.get('reopen_seconds', 0) * 1e3:.1f} ms, every topic "
            f"{c.get('reopen_topics_seconds', 0) * 1e3:.0f} ms, then fds "
            f"{c['reopened'].get('fds')}, maps {c['reopened'].get('maps')}, "
            f"RSS {mib(c['reopened'].get('VmRSS'))}",
            f"      round-robin appends: first round "
            f"{rate(c.get('first_round_rate'))}, warm "
            f"{rate(c.get('warm_rate'))}; one topic, warm: {rate(single)} "
            f"(before {rate(sb.get('rate'))}, after {rate(sa.get('rate'))}; "
            f"its first {n:,} appends {rate(sb.get('first_rate'))})",
            f"      read back {c.get('read_records', 0):,} records at "
            f"{rate(c.get('read_rate'))}; then fds "
            f"{c['after_read'].get('fds')}, maps "
            f"{c['after_read'].get('maps')}, RSS "
            f"{mib(c['after_read'].get('VmRSS'))}"]
        t = f"topics {n}: "
        targets.append((t + "no failure under RLIMIT_NOFILE",
                        not c["failures"]))
        if made and op.get("allocated") is not None:
            targets.append((t + f"allocated {size(op['allocated'])} <= "
                            f"records + 128 KiB/topic = {size(bound)}",
                            op["allocated"] <= bound and made == n))
        if single and c.get("warm_rate"):
            fr, wr = c["first_round_rate"] / single, c["warm_rate"] / single
            targets.append((t + f"first round {fr:.2f}x one warm topic "
                            ">= 0.2x", fr >= 0.2 and made == n))
            targets.append((t + f"warm {wr:.2f}x one warm topic >= 0.5x",
                            wr >= 0.5 and made == n))
        rss = c["reopened"].get("VmRSS")
        if n == 1000 and rss:
            targets.append((t + f"RSS with every topic open "
                            f"{mib(rss)} < 64 MiB",
                            rss < 64 * MiB and made == n))
    return lines


def render_backlog(res, targets):
    lines = []
    for lay in res.get("layouts", [res]):
        lines += render_backlog_layout(lay, targets)
    return lines


def render_backlog_layout(res, targets):
    w = res["writer"]
    if "failed" in w:
        return [f"  writer failed: {failed_text(w)}"]
    lines = [f"  backlog: {w['records']:,} records of 100 B, "
             f"{size(w['record_bytes'])} in {w['segments']} segments over "
             f"{res['topics']:,} topic(s), written in {w['seconds']:.1f} s"]
    for r in res["readers"]:
        lim = r.get("as_limit")
        name = (f"{res['topics']:,} topic(s), "
                + (f"RLIMIT_AS {size(lim)}" if lim else "no RLIMIT_AS"))
        lines.append(f"  read from start to end, RLIMIT_NOFILE 1024, {name}")
        if "failed" in r:
            lines.append(f"      child failed: {failed_text(r)}")
            targets.append((f"backlog ({name}): read completes", False))
            continue
        pk, b = r["peak"], r.get("before_read", r["start"])
        a = r.get("after_read")
        if "error" in r:
            lines.append(f"      FAILED in {r['failed_phase']} after "
                         f"{r['records_read']:,} records and "
                         f"{r.get('topics_opened', 0):,} topics opened: "
                         f"{r['error']} {r.get('message', '')}")
        else:
            lines.append(f"      {r['records_read']:,} records in "
                         f"{r['read_seconds']:.1f} s ({rate(r['rate'])})")
        lines += [
            f"      peak: mapped {size(pk['mapped_segments'])} of segments "
            f"and indexes ({size(pk['mapped_bytes'])} of all the log's "
            f"files), fds {pk['fds']}, maps {pk['maps']}, RSS "
            f"{mib(pk['VmRSS'])} (file {mib(pk['RssFile'])})",
            f"      RSS before the read {mib(b.get('VmRSS'))}, after it "
            f"{mib(a.get('VmRSS')) if a else '-'}, after close "
            f"{mib(r['after_close'].get('VmRSS'))}"]
        t = f"backlog ({name}): "
        targets.append((t + "read completes", "error" not in r))
        if "error" in r:        # the peaks of a failed read prove nothing
            continue
        targets.append((t + f"peak mapped segments "
                        f"{size(pk['mapped_segments'])} <= 256 MiB",
                        pk["mapped_segments"] <= 256 * MiB))
        targets.append((t + f"peak fds {pk['fds']} < 1024", pk["fds"] < 1024))
        if a:
            grow = a["VmRSS"] - b["VmRSS"]
            targets.append((t + f"RSS after - before = {mib(grow)} "
                            "<= 300 MiB", grow <= 300 * MiB))
    return lines


def render_budgets(res, targets):
    if "failed" in res:
        return [f"  child failed: {failed_text(res)}"]
    lines = [f"  {'max_bytes':>9} {'segment_bytes':>13} {'on_full':<11} "
             f"{'batch':>5} {'usable':>7} {'values':>7} {'peak disk':>10}  "
             "errors (appends offered up to "
             f"{res['factor']}x max_bytes)"]
    refusals = {}
    by_size = {}    # max_bytes -> [defaults-only cases]
    groups = {}     # (max_bytes, segment_bytes) -> [cases]
    for c in res["cases"]:
        groups.setdefault((c["max_bytes"], c.get("segment_bytes_given")),
                          []).append(c)
    for c in res["cases"]:
        seg = c.get("segment_bytes_given")
        segtxt = size(seg) if seg else "default"
        head = (f"  {size(c['max_bytes']):>9} {segtxt:>13} {c['on_full']:<11} "
                f"{c['batch']:>5}")
        if not seg:
            by_size.setdefault(c["max_bytes"], []).append(c)
        err = c.get("open_error") or c.get("create_error")
        if err:
            k = refusals.setdefault(f"{err['error']}: {err['message']}",
                                    len(refusals) + 1)
            group = groups[(c["max_bytes"], seg)]
            same = all((g.get("open_error") or g.get("create_error")) == err
                       for g in group)
            if not same:
                lines.append(f"{head} refused ({k})")
            elif c is group[0]:     # one line for a group refused alike
                head = (f"  {size(c['max_bytes']):>9} {segtxt:>13} "
                        f"{'(all ' + str(len(group)) + ' cases)':<17}")
                lines.append(f"{head} refused ({k})")
            continue
        uf = c.get("usable_fraction")
        vf = c.get("value_fraction")
        errs = ", ".join(f"{k} x{v}" for k, v in c["errors"].items()) or "none"
        lines.append(f"{head} {'-' if uf is None else f'{uf:.1%}':>7} "
                     f"{'-' if vf is None else f'{vf:.1%}':>7} "
                     f"{size(c['peak_bytes_on_disk']):>10}  {errs}")
    for text, k in refusals.items():
        lines.append(f"  ({k}) {text}")
    lines.append("  usable: record bytes held (headers included) when "
                 "on_full first acted / max_bytes; values: value bytes "
                 "held / max_bytes")
    for mb, cs in by_size.items():
        name = f"budgets {size(mb)}, default options: "
        ok = [c for c in cs if not (c.get("open_error")
                                    or c.get("create_error"))]
        targets.append((name + f"accepted ({len(ok)} of {len(cs)} cases)",
                        len(ok) == len(cs)))
        fr = [c["usable_fraction"] for c in ok
              if c.get("usable_fraction") is not None]
        if fr:
            targets.append((name + f"usable >= 90% (lowest {min(fr):.1%})",
                            min(fr) >= 0.9))
        drops = [c for c in ok if c["on_full"] == "drop_oldest"]
        if drops:
            bad = sum(sum(c["errors"].values()) for c in drops)
            targets.append((name + f"drop_oldest raised {bad} errors",
                            bad == 0))
    return lines


def render_gets(res, targets):
    if "failed" in res:
        return [f"  child failed: {failed_text(res)}"]
    st = res["stores"]
    lines = [f"  {res['records']:,} records (batches of 1,000), "
             f"{res['gets']:,} random gets per pass, {res['rounds']} rounds "
             f"(medians of rounds; timer {res['timer_ns']:.0f} ns per get "
             "included in per-get figures)",
             f"  {'store':<8} {'first: median':>14} {'mean':>7} {'p99':>7}"
             f" {'warm: median':>13} {'p99':>7} {'warm loop mean':>15}"
             f" {'ratio first':>12} {'ratio warm':>11}"]
    py = st["pylog"]
    for name in ("pylog", "sqlite", "lmdb"):
        s = st[name]
        rf = s["first_mean_us"] / py["first_mean_us"]
        rw = s["warm_all_mean_us"] / py["warm_all_mean_us"]
        ratio = "" if name == "pylog" else f"{rf:>11.2f}x {rw:>10.2f}x"
        lines.append(f"  {name:<8} {s['first_median_us']:>11.2f} us "
                     f"{s['first_mean_us']:>7.2f} {s['first_p99_us']:>7.2f}"
                     f" {s['warm_median_us']:>10.2f} us {s['warm_p99_us']:>7.2f}"
                     f" {s['warm_all_mean_us']:>12.2f} us {ratio}")
    lines.append("  ratio = peer us / pylog us (pylog gets per second / "
                 "the peer's; higher is better for pylog)")
    for name in ("pylog", "sqlite", "lmdb"):
        s = st[name]
        if "slow_in_warm" not in s:
            continue
        us = s["slow_every_time_median_us"]
        lines.append(f"  {name}: {s['slow_in_warm']:,.0f} gets of the warm "
                     f"pass took > 4x its median; {s['slow_every_time']:,.0f}"
                     f" of those offsets stayed that slow on 3 more reads"
                     + (f" (median {us:.1f} us)" if us else ""))
    targets.append((f"gets: warm median {py['warm_median_us']:.2f} us "
                    "<= 3 us", py["warm_median_us"] <= 3))
    for name, want in (("sqlite", 1.0), ("lmdb", 0.5)):
        r = st[name]["warm_all_mean_us"] / py["warm_all_mean_us"]
        targets.append((f"gets: {r:.2f}x {name} >= {want}x", r >= want))
    return lines


def render_wamp(res, targets):
    return wamp.render_lines(res)


RENDER = {"topics": render_topics, "backlog": render_backlog,
          "budgets": render_budgets, "wamp": render_wamp,
          "gets": render_gets}
TITLES = {
    "topics": "many topics under a descriptor limit",
    "backlog": "reading a large backlog",
    "budgets": "tiny budgets (max_bytes), default options",
    "wamp": "write amplification: bytes written per value byte appended",
    "gets": "random get on a freshly reopened log, side by side",
}


def render(doc):
    m, dk = doc["machine"], doc["disk"]
    out = [f"pylog edge ({doc['mode']}) in {doc['seconds']} s; "
           f"open options {doc['open_options'] or 'none'}",
           f"machine: {m.get('nproc')} CPUs, {m.get('mem_total_gib')} GiB, "
           f"Linux {m.get('kernel')}, Python {m.get('python')}, disk "
           f"{dk.get('device')} {dk.get('fstype')} ({dk.get('mount_options')})",
           f"load average (1/5/15 min) at start {doc['loadavg_start']}, at "
           f"end {doc['loadavg_end']}",
           f"versions: SQLite {m.get('sqlite')}, py-lmdb {m.get('lmdb')} "
           f"(LMDB {m.get('lmdb_lib')})", ""]
    targets = []
    for name in WORKLOADS:
        if name not in doc["workloads"]:
            continue
        res = doc["workloads"][name]
        out.append(f"{name}: {TITLES[name]} "
                   f"({doc['section_seconds'][name]} s)")
        if "failed" in res and name not in ("budgets", "gets"):
            out.append(f"  failed: {failed_text(res)}")
        else:
            out += RENDER[name](res, targets)
        out.append("")
    if targets:
        out.append("targets (for information; they do not set the exit "
                   "status):")
        for text, ok in targets:
            out.append(f"  {verdict(ok)}  {text}")
        out.append(f"  {sum(ok for _, ok in targets)} PASS, "
                   f"{sum(not ok for _, ok in targets)} MISS")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="small sizes, for CI (well under a minute)")
    ap.add_argument("--json", action="store_true",
                    help="machine-readable results on stdout")
    ap.add_argument("--only", default=None,
                    help="comma-separated workloads: " + ",".join(WORKLOADS))
    ap.add_argument("--dir", default=None,
                    help="where to make temporary directories (default: the "
                    "system temp dir)")
    ap.add_argument("--open-option", action="append", default=[],
                    metavar="KEY=VALUE",
                    help="passed to every pylog.open (repeatable); integers "
                    "and true/false are converted")
    ap.add_argument("--min-free-gib", type=float, default=8.0,
                    help="topics: stop creating topics when the file system "
                    "has less free space than this (default 8)")
    ap.add_argument("--backlog-gib", type=float, default=None,
                    help="backlog size (default 10, --quick 0.25)")
    ap.add_argument("--backlog-topics", type=int, default=None,
                    help="spread the backlog over this many topics only "
                    "(default: 1 topic, then 1,000 under RLIMIT_AS; --quick "
                    "50)")
    ap.add_argument("--topics", default=None,
                    help="comma-separated topic counts (1000,10000)")
    ap.add_argument("--render", metavar="FILE", default=None,
                    help="print the text report of an earlier --json run")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="progress on stderr")
    args = ap.parse_args(argv)
    if args.render:
        with open(args.render) as f:
            print(render(json.load(f)))
        return 0
    args.open_options = parse_options(args.open_option)
    only = WORKLOADS
    if args.only:
        only = tuple(w.strip() for w in args.only.split(","))
        bad = [w for w in only if w not in WORKLOADS]
        if bad:
            ap.error(f"unknown workload(s) {', '.join(bad)}; known: "
                     f"{', '.join(WORKLOADS)}")
    cfg = json.loads(json.dumps(QUICK if args.quick else FULL))
    if args.backlog_gib:
        cfg["backlog"]["total_bytes"] = int(args.backlog_gib * GiB)
    if args.backlog_topics:
        cfg["backlog"]["layouts"] = [{"topics": args.backlog_topics,
                                      "as_limits": [None, 3 * GiB]}]
    if args.topics:
        cfg["topics"]["counts"] = [int(x) for x in args.topics.split(",")]

    def progress(msg):
        if args.verbose:
            print(msg, file=sys.stderr, flush=True)

    if args.dir:
        os.makedirs(args.dir, exist_ok=True)
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    uptime_start = _uptime()
    results, secs = {}, {}
    for name in WORKLOADS:
        if name not in only:
            continue
        t0 = time.perf_counter()
        results[name] = RUNNERS[name](cfg[name], args, progress)
        secs[name] = round(time.perf_counter() - t0, 1)
    doc = {"mode": "quick" if args.quick else "full",
           "seconds": round(time.perf_counter() - t_start, 1),
           "section_seconds": secs, "config": cfg,
           "open_options": args.open_options,
           "machine": compare.machine(),
           "disk": compare.disk_of(args.dir or tempfile.gettempdir()),
           "loadavg_start": [round(x, 2) for x in load_start],
           "loadavg_end": [round(x, 2) for x in os.getloadavg()],
           "uptime_start": uptime_start, "uptime_end": _uptime(),
           "workloads": results}
    if args.json:
        json.dump(doc, sys.stdout, indent=1)
        print()
    else:
        print(render(doc))
    broken = children.harness_errors(results)
    for b in broken:
        print(f"benchmark error: {b['failed']}\n{b.get('stderr', '')}",
              file=sys.stderr)
    return 1 if broken else 0


def _uptime():
    try:
        return subprocess.run(["uptime"], capture_output=True,
                              text=True).stdout.strip()
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(main())
