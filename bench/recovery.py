"""Open time after an unclean stop, and fdatasyncs per commit.

    python3 bench/recovery.py [--backlog-mib 1024] [--tail-mib 64] [--quick]

1. open: a child writes BACKLOG MiB to a topic (batches of 1,000 records
   of 100 B), makes it durable (flush), appends TAIL MiB more, and is
   killed with SIGKILL. The page cache is then dropped (as after a power
   cut: what is read comes from the disk; needs root, else it is said)
   and the log is opened again, timed: the open verifies what was not
   known durable (the tail), not the backlog. Then the same log is closed
   cleanly and opened again (nothing to verify).
2. commits: fdatasync and fsync calls (strace -f -c) of a loop of
   poll(500) + commit() over 1,000 commits, in sync "interval", "none" and
   "always".

No figure is asserted; see docs/PERFORMANCE.md for the results.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

WRITER = textwrap.dedent('''
    import os, signal, sys
    import pylog
    path, backlog, tail = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    log = pylog.open(path, sync="none")
    t = log.topic("t")
    batch = [b"x" * 100] * 1000
    per = 148 * 1000 + 48  # bytes of one such batch on disk
    for _ in range(backlog // per):
        t.append_batch(batch)
    log.flush()
    for _ in range(tail // per):
        t.append_batch(batch)
    print(t.end_offset, t.durable_offset, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
''')

OPEN = textwrap.dedent('''
    import sys, time
    t0 = time.perf_counter()
    import pylog
    t1 = time.perf_counter()
    log = pylog.open(sys.argv[1])
    t = log.topic("t")
    t2 = time.perf_counter()
    print(t2 - t1, t.end_offset, t.stats()["truncated_bytes"], flush=True)
    log.close()
''')

COMMITS = textwrap.dedent('''
    import sys
    import pylog
    path, sync, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    log = pylog.open(path, sync=sync, sync_interval_ms=1000)
    t = log.topic("t")
    c = log.consumer("g", "t")
    done = 0
    while done < n:
        t.append_batch([b"x" * 100] * 500)
        c.poll(max_records=500)
        c.commit()
        done += 1
    c.close()
    log.close()
''')


def drop_caches():
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def open_time(backlog_mib, tail_mib):
    d = tempfile.mkdtemp(prefix="pylog-recovery-")
    try:
        w = subprocess.run([sys.executable, "-c", WRITER, d,
                            str(backlog_mib << 20), str(tail_mib << 20)],
                           capture_output=True, text=True)
        end, durable = map(int, w.stdout.split())
        cold = drop_caches()
        r = subprocess.run([sys.executable, "-c", OPEN, d],
                           capture_output=True, text=True)
        secs, end2, cut = r.stdout.split()
        cold2 = drop_caches()
        r2 = subprocess.run([sys.executable, "-c", OPEN, d],
                            capture_output=True, text=True)
        secs2 = r2.stdout.split()[0]
        return {"backlog_mib": backlog_mib, "tail_mib": tail_mib,
                "end": end, "durable_before": durable,
                "end_after": int(end2), "cold_cache": cold and cold2,
                "unclean_open_s": float(secs), "clean_open_s": float(secs2)}
    finally:
        shutil.rmtree(d, ignore_errors=True)


def syncs(sync, n):
    d = tempfile.mkdtemp(prefix="pylog-commits-")
    try:
        r = subprocess.run(["strace", "-f", "-c", "-e",
                            "trace=fdatasync,fsync", sys.executable, "-c",
                            COMMITS, d, sync, str(n)],
                           capture_output=True, text=True)
        counts = {}
        for line in r.stderr.splitlines():
            m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?"
                         r"(fdatasync|fsync)$", line)
            if m:
                counts[m.group(2)] = int(m.group(1))
        return counts
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backlog-mib", type=int, default=1024)
    ap.add_argument("--tail-mib", type=int, default=64)
    ap.add_argument("--commits", type=int, default=1000)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.backlog_mib, args.tail_mib, args.commits = 64, 8, 100
    print(f"load average {os.getloadavg()[0]:.2f}")
    o = open_time(args.backlog_mib, args.tail_mib)
    print(f"open after SIGKILL, {o['backlog_mib']} MiB durable + "
          f"{o['tail_mib']} MiB not, page cache "
          f"{'dropped' if o['cold_cache'] else 'NOT dropped (not root)'}: "
          f"{o['unclean_open_s'] * 1000:.0f} ms (end {o['end_after']:,} of "
          f"{o['end']:,}); after a clean close: "
          f"{o['clean_open_s'] * 1000:.1f} ms")
    if shutil.which("strace") is None:
        print("commits: strace is not installed")
        return
    for sync in ("interval", "none", "always"):
        c = syncs(sync, args.commits)
        total = sum(c.values())
        print(f"commits: {args.commits} x (append_batch(500), poll(500), "
              f"commit()) in sync={sync!r}: {total} fsync/fdatasync calls "
              f"({c}), {total * 1000 / args.commits:.1f} per 1,000 commits")


if __name__ == "__main__":
    main()
