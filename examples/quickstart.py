"""pylog quickstart: append, read back by offset and by time, reopen.

    python examples/quickstart.py [DIR]
"""
import sys
import tempfile
import time

import pylog

path = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="pylog-")

with pylog.open(path, sync="interval", sync_interval_ms=200) as log:
    t = log.topic("sensors")
    before = int(time.time() * 1000)
    off = t.append(b"21.5", key=b"dev-7", headers={"unit": b"C"})
    first = t.append_batch([b"21.6", b"21.7", b"21.9"])
    print(f"appended offset {off}, then a batch from offset {first}")
    rec = t.get(off)
    print(f"get({off}) -> key={rec.key!r} value={bytes(rec.value)!r} "
          f"headers={rec.headers!r}")
    for rec in t.read(first):
        print(f"  offset {rec.offset} @ {rec.timestamp} ms: {bytes(rec.value)!r}")
    print("first offset at or after", before, "ms:", t.offset_for_time(before))
    log.flush()
    print("durable up to", t.durable_offset, "of", t.end_offset)

with pylog.open(path) as log:
    t = log.topic("sensors")
    print(f"reopened {path}: topics={log.topics()} "
          f"offsets [{t.start_offset}, {t.end_offset})")
