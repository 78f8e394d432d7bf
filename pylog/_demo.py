"""``pylog demo``: the store-and-forward loop end to end, with a crash.

A gateway process (a child) runs a producer thread appending sensor readings
and an uploader that polls the topic, sends batches to a flaky uplink (a
local sink that is up for a second, then down for a second, and so on) and
commits only after a send succeeded. While the uplink is down the buffer on
disk grows; when it comes back the uploader drains it. In the middle of a
down phase the parent kills the gateway with SIGKILL and starts it again:
the second run finds the buffer where the first left it, keeps producing,
then drains. The parent then counts, from the log, the producer's
acknowledgements and the sink's contents: produced, uploaded, duplicated
(at-least-once delivery re-sends what was sent but not yet committed when the
process died) and lost (must be 0). Disk use is sampled against the topic's
max_bytes cap.
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
PHASE = 1.0      # seconds the uplink stays up, then down, then up, ...
REPORT = 0.25    # seconds between progress lines of the gateway
MARK = ".pylog-demo"  # only a directory holding this is ever wiped


def uplink_down(t0, now=None):
    """The uplink is up in [0, PHASE), down in [PHASE, 2 PHASE), ... after
    the demo started at t0 (wall clock, shared by every process)."""
    now = time.time() if now is None else now
    return int((now - t0) / PHASE) % 2 == 1


class FlakyUplink:
    """A sink that is down every other PHASE seconds."""

    def __init__(self, path, t0):
        self.f = open(path, "ab", buffering=0)
        self.t0 = t0

    def send(self, records):
        if uplink_down(self.t0):
            raise ConnectionError("uplink down")
        payload = b"".join(bytes(r.value) + b"\n" for r in records)
        self.f.write(payload)  # one write: the sink has it once it returns


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
    c = log.consumer("uploader", TOPIC)

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
        end = t.end_offset
        return (f"uplink {'DOWN' if uplink_down(t0) else 'up  '}  "
                f"produced {end:6d}  "
                f"buffered {end - (c.committed(TOPIC) or 0):5d} records  "
                f"disk {sample():8d} bytes")

    say(f"gateway pid {os.getpid()} starts: {t.end_offset} records in the "
        f"log, {t.end_offset - (c.committed(TOPIC) or 0)} of them not "
        "uploaded yet")
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
    prod.start()
    uplink = FlakyUplink(os.path.join(d, "sink.txt"), t0)
    pending = []
    last_report, was_down = 0.0, None
    while True:
        now = time.time()
        down = uplink_down(t0, now)
        if down != was_down or now - last_report >= REPORT:
            if down != was_down and was_down is not None:
                say("uplink goes DOWN: records pile up on disk" if down else
                    "uplink is back UP: the uploader drains the buffer")
            say(status())
            last_report, was_down = now, down
        if not pending and not prod.is_alive() and not sum(c.lag().values()):
            break
        if not pending:
            pending = c.poll(max_records=200, timeout=0.05)
        if pending:
            try:
                uplink.send(pending)
            except ConnectionError:
                time.sleep(0.05)
                continue
            c.commit()  # only after the sink has them: at-least-once
            pending = []
        sample()
    say(status())
    say("producer done and buffer drained: gateway exits")
    c.close()
    log.close()
    return 1 if errors else 0


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


def kill_time(seconds):
    """When to kill the first gateway: in the middle of the down phase
    closest to half the run, so the crash hits with a buffer on disk."""
    k = round((seconds / 2 - 1.5 * PHASE) / (2 * PHASE))
    return max(1.5 * PHASE, 1.5 * PHASE + 2 * PHASE * k)


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
          f"  its uploader sends them in batches to a sink that is up "
          f"{PHASE:g}s, down {PHASE:g}s, and so on,\n"
          f"  and commits only after a successful send; at "
          f"t={kill_at:g}s the gateway is killed\n"
          f"  with SIGKILL and restarted.", flush=True)
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
    print(f"*** t={time.time() - t0:.1f}s gateway killed with SIGKILL; "
          "restarting it ***", flush=True)
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
