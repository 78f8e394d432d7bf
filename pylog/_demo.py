"""``pylog demo``: the store-and-forward loop end to end, with a crash.

A gateway process (a child) runs a producer thread appending sensor readings
and a forwarder (pylog.forward) that uploads them in batches to a flaky
uplink: a local sink that is up for a second, then down for a second, and
so on, and whose acknowledgement takes a moment to come back after the data
arrived, as over a real network. While the uplink is down the buffer on
disk grows; when it comes back the forwarder drains it. At a random moment
the parent kills the gateway with SIGKILL and starts it again: the second
run finds the buffer where the first left it, keeps producing, then drains.
The parent then counts, from the log and the sink: produced, uploaded,
duplicated (a batch the uplink had received but whose acknowledgement the
kill cut off is sent again: at-least-once) and lost (must be 0). Disk use
is sampled against the topic's max_bytes cap.
"""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

TOPIC = "sensors"
CAP = 2 * 1024 * 1024
SEGMENT = 128 * 1024
PHASE = 1.0      # seconds the uplink stays up, then down, then up, ...
ACK_DELAY = 0.02  # seconds between the uplink receiving a batch and its ack
BATCH = 200      # records per upload at most
REPORT = 0.25    # seconds between progress lines of the gateway
MARK = ".pylog-demo"  # only a directory holding this is ever wiped


def uplink_down(t0, now=None):
    """The uplink is up in [0, PHASE), down in [PHASE, 2 PHASE), ... after
    the demo started at t0 (wall clock, shared by every process)."""
    now = time.time() if now is None else now
    return int((now - t0) / PHASE) % 2 == 1


class FlakyUplink:
    """A sink that is down every other PHASE seconds. A batch it takes is
    kept (one write) before its acknowledgement travels back."""

    def __init__(self, path, t0):
        self.f = open(path, "ab", buffering=0)
        self.t0 = t0

    def send(self, records):
        from .forward import RetryableError
        if uplink_down(self.t0):
            raise RetryableError("uplink down")
        self.f.write(b"".join(bytes(r.value) + b"\n" for r in records))
        time.sleep(ACK_DELAY)  # received upstream; the ack is on its way

    def close(self):
        self.f.close()


def _read_int(path):
    try:
        with open(path) as f:
            return int(f.read() or 0)
    except (OSError, ValueError):
        return 0


def child(args):
    import pylog
    d, t0 = args.dir, args.t0
    log = pylog.open(os.path.join(d, "log"), sync="interval",
                     sync_interval_ms=50)
    t = log.topic(TOPIC, segment_bytes=SEGMENT, max_bytes=CAP,
                  on_full="block", retain_until_consumed=True)
    acked = open(os.path.join(d, "acked.txt"), "ab", buffering=0)
    stop_at = t0 + args.seconds
    peak_path = os.path.join(d, "peak.txt")
    peak = _read_int(peak_path)  # the run before a crash counts too
    fw = log.forwarder("uploader", TOPIC,
                       FlakyUplink(os.path.join(d, "sink.txt"), t0),
                       batch_records=BATCH, linger_ms=20,
                       retry_backoff_ms=(20, 100))

    def say(msg):
        print(f"  t={time.time() - t0:4.1f}s  {msg}", flush=True)

    def sample():
        nonlocal peak
        disk = t.stats()["bytes_on_disk"]
        if disk > peak:
            peak = disk
            with open(peak_path + ".tmp", "w") as f:
                f.write(str(peak))
            os.replace(peak_path + ".tmp", peak_path)
        return disk

    def status():
        st = fw.stats()
        return (f"uplink {'DOWN' if uplink_down(t0) else 'up  '}  "
                f"produced {t.end_offset:6d}  "
                f"buffered {st['lag'][TOPIC]:5d} records  "
                f"disk {sample():8d} bytes  "
                f"forwarder {st['state']}")

    say(f"gateway pid {os.getpid()} starts: {t.end_offset} records in the "
        f"log, {fw.stats()['lag'][TOPIC]} of them not uploaded yet")
    errors = []

    def produce():
        try:
            while time.time() < stop_at:
                seq = t.end_offset  # the only appender: seq is the offset
                value = json.dumps({"id": seq, "sensor": f"s{seq % 8}",
                                    "celsius": 20 + (seq % 50) / 10}).encode()
                off = t.append(value, key=f"s{seq % 8}".encode())
                acked.write(b"%d\n" % off)
                if off != seq:
                    raise RuntimeError(f"appended id {seq} at offset {off}")
                time.sleep(0.0005)
        except Exception as exc:  # shown, and the parent counts from the log
            errors.append(exc)
            print(f"producer failed: {exc!r}", file=sys.stderr, flush=True)

    prod = threading.Thread(target=produce, daemon=True)
    fw.start()
    prod.start()
    was_down = None
    while prod.is_alive() or fw.stats()["lag"][TOPIC]:
        down = uplink_down(t0)
        if down != was_down and was_down is not None:
            say("uplink goes DOWN: records pile up on disk" if down else
                "uplink is back UP: the forwarder drains the buffer")
        say(status())
        was_down = down
        if fw.state == "failed":
            break
        time.sleep(REPORT)
    fw.stop()
    say(status())
    st = fw.stats()
    say(f"producer done and buffer drained: gateway exits ({st['batches']} "
        f"batches, {st['retries']} retries while the uplink was down)")
    log.close()
    return 1 if errors or st["state"] == "failed" else 0


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


def kill_time(seconds, rnd=random):
    """When to kill the first gateway: any moment of the middle half of the
    run, uplink up or down, mid-batch or not."""
    return rnd.uniform(0.25 * seconds, 0.75 * seconds)


def _prepare(d):
    if os.path.exists(d):
        if not os.path.isdir(d) or (
                os.listdir(d) and not os.path.exists(os.path.join(d, MARK))):
            from ._errors import PylogError
            raise PylogError(f"{d} exists and is not a pylog demo directory; "
                             "not touching it (choose another --dir)")
        shutil.rmtree(d)
    os.makedirs(d)
    open(os.path.join(d, MARK), "w").close()


def main(args):
    if args.child:
        try:
            return child(args)
        except KeyboardInterrupt:
            return 130
    d = os.path.abspath(args.dir)
    _prepare(d)
    t0 = time.time()
    kill_at = kill_time(args.seconds)
    cmd = [sys.executable, "-m", "pylog", "demo", "--child", "run",
           "--dir", d, "--t0", repr(t0), "--seconds", repr(args.seconds)]
    print(f"demo in {d}\n"
          f"  a gateway appends sensor readings to topic {TOPIC!r} "
          f"(cap {CAP} bytes) for {args.seconds:g}s;\n"
          f"  its forwarder uploads them in batches of up to {BATCH} to an "
          f"uplink that is up {PHASE:g}s, down {PHASE:g}s, and so on,\n"
          f"  and commits a batch once the uplink acknowledged it; at a "
          f"random moment (t={kill_at:.2f}s)\n"
          f"  the gateway is killed with SIGKILL and restarted.", flush=True)
    p = subprocess.Popen(cmd)
    try:
        p.wait(timeout=max(0.0, t0 + kill_at - time.time()))
        print(f"gateway exited with status {p.returncode} before the kill",
              file=sys.stderr)
        return 1
    except subprocess.TimeoutExpired:
        pass
    p.send_signal(signal.SIGKILL)
    p.wait()
    print(f"*** t={time.time() - t0:.2f}s gateway killed with SIGKILL (uplink "
          f"{'down' if uplink_down(t0) else 'up'}); restarting it ***",
          flush=True)
    p = subprocess.run(cmd)
    if p.returncode != 0:
        print(f"gateway failed with status {p.returncode}", file=sys.stderr)
        return 1

    import pylog
    with pylog.open(os.path.join(d, "log")) as log:
        in_log = log.topic(TOPIC).end_offset  # offsets 0.. are the ids
    acked = set(_ids(os.path.join(d, "acked.txt")))
    produced = acked | set(range(in_log))
    sent = _ids(os.path.join(d, "sink.txt"))
    uploaded = set(sent)
    lost = produced - uploaded
    peak = _read_int(os.path.join(d, "peak.txt"))
    if len(produced) != len(acked):
        print(f"({len(produced) - len(acked)} record(s) were appended but the "
              "kill came before the producer saw the acknowledgement)")
    print(f"produced   {len(produced)}")
    print(f"uploaded   {len(uploaded)}")
    print(f"duplicated {len(sent) - len(uploaded)}")
    print(f"lost       {len(lost)}")
    print(f"disk       peak {peak} bytes of a {CAP}-byte cap")
    return 1 if lost or peak > CAP or not produced else 0
