"""Readers in other processes (issue: pylog.open(path, readonly=True)).

    python3 bench/readers.py [--quick] [--json]

1. wake: a reader process blocks in Consumer.poll while a writer process
   appends one record every few milliseconds, stamped with
   CLOCK_MONOTONIC (shared by every process); the reader takes the delay
   from the stamp to the poll's return. Median and p99, and the CPU the
   waiting reader used (its user+system time over the run).
2. scan: a reader process reads the whole log from start to end, at
   least a second each round, while a writer process appends batches;
   side by side (interleaved rounds), the writer's own process reads the
   same records. Records per second, and the ratio.

No figure is asserted; see docs/PERFORMANCE.md for the results.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pylog  # noqa: E402

WAKE_READER = textwrap.dedent('''
    import json, resource, struct, sys, time
    import pylog
    path, n = sys.argv[1], int(sys.argv[2])
    log = pylog.open(path, readonly=True)
    c = log.consumer("wake", "w", start="latest")
    print("ready", flush=True)
    lat = []
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    while len(lat) < n:
        for r in c.poll(max_records=100, timeout=5):
            now = time.monotonic_ns()
            lat.append((now - struct.unpack("<q", bytes(r.value))[0]) / 1e6)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.monotonic() - t0
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    print(json.dumps({"lat": lat, "cpu_share": cpu / wall}), flush=True)
''')

SCAN_READER = textwrap.dedent('''
    import json, sys, time
    import pylog
    path, end = sys.argv[1], int(sys.argv[2])
    log = pylog.open(path, readonly=True)
    t = log.topic("s")
    t0 = time.perf_counter()
    n = 0
    for r in t.read(0, max_records=end):
        n += 1
    dt = time.perf_counter() - t0
    print(json.dumps({"records": n, "seconds": dt}), flush=True)
''')

WRITER = textwrap.dedent('''
    import sys, time
    import pylog
    path, topic, mode, seconds = sys.argv[1:5]
    log = pylog.open(path)
    t = log.topic(topic)
    stop = time.monotonic() + float(seconds)
    import struct
    print("ready", flush=True)
    while time.monotonic() < stop:
        if mode == "stamp":
            t.append(struct.pack("<q", time.monotonic_ns()))
            time.sleep(0.004)
        else:
            t.append_batch([b"x" * 100] * 1000)
            time.sleep(0.001)
    log.close()
''')


def wake(quick):
    n = 100 if quick else 500
    d = tempfile.mkdtemp(prefix="pylog-readers-")
    with pylog.open(d) as log:
        log.topic("w").append(b"\0" * 8)
    reader = subprocess.Popen([sys.executable, "-c", WAKE_READER, d, str(n)],
                              stdout=subprocess.PIPE, text=True)
    assert reader.stdout.readline().strip() == "ready"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, d, "w", "stamp",
                               str(n * 0.006 + 5)], stdout=subprocess.PIPE,
                              text=True)
    out = json.loads(reader.stdout.readline())
    writer.kill()
    writer.wait()
    reader.wait()
    lat = sorted(out["lat"])
    return {"samples": len(lat), "median_ms": statistics.median(lat),
            "p99_ms": lat[int(len(lat) * 0.99) - 1],
            "reader_cpu_share": out["cpu_share"]}


def scan(quick):
    d = tempfile.mkdtemp(prefix="pylog-readers-")
    batches = 300 if quick else 3000
    with pylog.open(d) as log:
        t = log.topic("s")
        for _ in range(batches):
            t.append_batch([b"x" * 100] * 1000)
        end = t.end_offset
    rounds = 2 if quick else 5
    writer = subprocess.Popen([sys.executable, "-c", WRITER, d, "s", "batch",
                               "600"], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "ready"
    own, other = [], []
    try:
        for _ in range(rounds):
            r = subprocess.run([sys.executable, "-c", SCAN_READER, d,
                                str(end)], capture_output=True, text=True)
            res = json.loads(r.stdout)
            other.append(res["records"] / res["seconds"])
            own.append(_own_rate(end))
    finally:
        writer.kill()
        writer.wait()
    return {"records": end, "rounds": rounds,
            "reader_process_rec_s": statistics.median(other),
            "in_process_rec_s": statistics.median(own),
            "ratio": statistics.median(other) / statistics.median(own)}


_OWN = {}


def _own_rate(end):
    """Records/s of Topic.read in the process that wrote them (a log of
    the same shape, written and read here)."""
    if "log" not in _OWN:
        d = tempfile.mkdtemp(prefix="pylog-readers-own-")
        log = pylog.open(d)
        t = log.topic("s")
        for _ in range(end // 1000):
            t.append_batch([b"x" * 100] * 1000)
        _OWN["log"], _OWN["t"] = log, t
    t = _OWN["t"]
    t0 = time.perf_counter()
    n = sum(1 for _ in t.read(0, max_records=end))
    return n / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    load0 = os.getloadavg()
    out = {"wake": wake(args.quick), "scan": scan(args.quick),
           "load": [load0, os.getloadavg()]}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    w, s = out["wake"], out["scan"]
    print(f"load average at start {load0[0]:.2f}, at end "
          f"{out['load'][1][0]:.2f}")
    print(f"wake: {w['samples']} appends in another process: median "
          f"{w['median_ms']:.2f} ms, p99 {w['p99_ms']:.2f} ms; the waiting "
          f"reader used {w['reader_cpu_share']:.1%} of a core")
    print(f"scan: {s['records']:,} records, {s['rounds']} interleaved rounds "
          f"while a writer appends: reader process "
          f"{s['reader_process_rec_s'] / 1e6:.2f} M rec/s, in-process "
          f"{s['in_process_rec_s'] / 1e6:.2f} M rec/s, ratio "
          f"{s['ratio']:.2f}x (target >= 0.8x)")


if __name__ == "__main__":
    main()
