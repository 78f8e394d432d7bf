"""``pylog demo``: the store-and-forward loop end to end, with a crash.

A gateway process (a child) runs a producer thread appending sensor readings
and an uploader that polls the topic, sends batches to a flaky uplink (a
local sink that goes down every few hundred milliseconds) and commits only
after a send succeeded. Part-way through, the parent kills the gateway with
SIGKILL and starts it again; the second run keeps producing, then drains the
buffer. The parent then counts, from the producer's acknowledgements and the
sink's contents: produced, uploaded, duplicated (at-least-once delivery
re-sends what was sent but not yet committed when the process died) and lost
(must be 0). Disk use is sampled against the topic's max_bytes cap.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

TOPIC = "sensors"
CAP = 2 * 1024 * 1024
SEGMENT = 128 * 1024


class FlakyUplink:
    """A sink that is down for 300 ms out of every 1000 ms."""

    def __init__(self, path):
        self.f = open(path, "ab", buffering=0)

    def send(self, records):
        if (time.monotonic() * 1000) % 1000 < 300:
            raise ConnectionError("uplink down")
        payload = b"".join(bytes(r.value) + b"\n" for r in records)
        self.f.write(payload)  # one write: the sink has it once it returns


def child(args):
    import pylog
    d = args.dir
    log = pylog.open(os.path.join(d, "log"), sync="interval",
                     sync_interval_ms=50)
    t = log.topic(TOPIC, segment_bytes=SEGMENT, max_bytes=CAP,
                  on_full="block", retain_until_consumed=True)
    acked = open(os.path.join(d, "acked.txt"), "ab", buffering=0)
    stop_at = time.monotonic() + args.seconds
    peak = [0]

    def produce():
        while time.monotonic() < stop_at:
            seq = t.end_offset
            value = json.dumps({"id": seq, "sensor": f"s{seq % 8}",
                                "celsius": 20 + (seq % 50) / 10}).encode()
            off = t.append(value, key=f"s{seq % 8}".encode())
            acked.write(b"%d\n" % off)
            time.sleep(0.0005)

    prod = threading.Thread(target=produce, daemon=True)
    prod.start()
    uplink = FlakyUplink(os.path.join(d, "sink.txt"))
    c = log.consumer("uploader", TOPIC)
    pending = []
    while prod.is_alive() or pending or sum(c.lag().values()):
        if not pending:
            pending = c.poll(max_records=200, timeout=0.1)
        if pending:
            try:
                uplink.send(pending)
            except ConnectionError:
                time.sleep(0.05)
                continue
            c.commit()
            pending = []
        peak[0] = max(peak[0], t.stats()["bytes_on_disk"])
        with open(os.path.join(d, "peak.txt"), "w") as f:
            f.write(str(peak[0]))
    c.close()
    log.close()


def _ids(path):
    out = []
    if os.path.exists(path):
        with open(path, "rb") as f:
            for line in f:
                line = line.strip()
                if line.startswith(b"{"):
                    try:
                        out.append(json.loads(line)["id"])
                    except ValueError:
                        pass  # a line cut by the kill
                elif line.isdigit():
                    out.append(int(line))
    return out


def main(args):
    if args.child:
        child(args)
        return 0
    d = os.path.abspath(args.dir)
    if os.path.exists(d):
        shutil.rmtree(d)
    os.makedirs(d)
    cmd = [sys.executable, "-m", "pylog", "demo", "--child", "run", "--dir", d]
    first = args.seconds * 0.5
    print(f"demo in {d}: gateway runs {first:.1f}s, is killed, restarts")
    p = subprocess.Popen(cmd + ["--seconds", str(args.seconds)])
    time.sleep(first)
    p.send_signal(signal.SIGKILL)
    p.wait()
    print("gateway killed with SIGKILL; restarting")
    p = subprocess.run(cmd + ["--seconds", str(args.seconds - first)])
    if p.returncode != 0:
        print(f"gateway failed with status {p.returncode}", file=sys.stderr)
        return 1
    acked = set(_ids(os.path.join(d, "acked.txt")))
    sent = _ids(os.path.join(d, "sink.txt"))
    uploaded = set(sent)
    lost = acked - uploaded
    with open(os.path.join(d, "peak.txt")) as f:
        peak = int(f.read() or 0)
    print(f"produced   {len(acked)}")
    print(f"uploaded   {len(uploaded)}")
    print(f"duplicated {len(sent) - len(uploaded)}")
    print(f"lost       {len(lost)}")
    print(f"disk       peak {peak} bytes of a {CAP}-byte cap")
    return 1 if lost or peak > CAP else 0
