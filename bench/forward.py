#!/usr/bin/env python3
"""Forwarders side by side with the client libraries they use, in one run.

    python bench/forward.py            # full run (about two minutes)
    python bench/forward.py --quick    # a smoke run
    python bench/forward.py --json     # machine-readable results on stdout

Needs the test extra (``pip install -e ".[test]"``), mosquitto on PATH and,
for the fdatasync count, strace.

Rates (records/s, 100-byte values with an 8-byte key), each pair run
alternately, the order swapped every round, the median of the rounds:

  kafka  a forwarder to librdkafka's mock cluster (3 brokers on loopback)
         vs confluent-kafka producing the same records from a Python list
         (idempotent, acks=all, the sink's settings) and flushing
  mqtt   a forwarder to mosquitto with QoS 1 vs a paho loop publishing the
         same messages (payload and user properties) with QoS 1 and
         waiting for every PUBACK, the same in-flight window
  http   a forwarder posting NDJSON batches of 500 vs posting the same
         batches, already encoded, with the same client (urllib3); the
         server is a separate process that reads each body and answers 200

The forwarder's time runs from start() to flush() returning: polling the
log, encoding, sending, waiting for the confirmations, committing. The
log is filled before the clock starts (sync="none").

fdatasyncs per 1,000 forwarded records: a child process appends records
one by one, about 4,000 a second (sync="interval", 1 s), while a
forwarder uploads them to a sink that returns at once; strace -f -c counts every fsync/fdatasync of the
process (appends, interval syncs, catalog commits). For comparison, the
uploader loop the forwarder replaces: poll() returning as soon as one
record is there, commit() after each poll.
"""
import argparse
import http.server
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

try:
    import pylog
except ImportError:  # run from a checkout without an install
    sys.path.insert(0, os.path.join(HERE, ".."))
    import pylog

VALUE = b"v" * 100
TARGETS = {"kafka": 0.5, "mqtt": 0.7, "http": 0.7}
BATCH = 500


def uptime():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def keys(n):
    return [b"dev-%04d" % (i % 1000) for i in range(n)]


def fill(d, topic, n):
    with pylog.open(d) as log:
        t = log.topic(topic)
        ks = keys(n)
        for i in range(0, n, 10_000):
            t.append_batch([VALUE] * min(10_000, n - i), keys=ks[i:i + 10_000])


def forward_case(tmp, tag, n, make_sink):
    """Seconds a forwarder takes from start() to flush() returning, for n
    records in a fresh log, to the sink make_sink() returns."""
    d = os.path.join(tmp, tag)
    fill(d, "s", n)
    sink = make_sink()
    try:
        with pylog.open(d) as log:
            fw = log.forwarder("bench", "s", sink, batch_records=BATCH)
            t0 = time.perf_counter()
            fw.start()
            if not fw.flush(600):
                raise RuntimeError(f"forwarder did not finish: {fw.stats()}")
            dt = time.perf_counter() - t0
            assert fw.stats()["sent_records"] == n, fw.stats()
            fw.stop()
        return dt
    finally:
        sink.close()
        shutil.rmtree(d)


def filled_records(tmp, tag, n):
    """The Records a forwarder would read from the same log."""
    d = os.path.join(tmp, tag)
    fill(d, "s", n)
    with pylog.open(d) as log:
        records = list(log.topic("s").read(0))
    shutil.rmtree(d)
    return records


# ---- Kafka ----------------------------------------------------------------------

def kafka_pair(mock, n, tmp):
    import confluent_kafka as ck

    from pylog.forward import KafkaSink
    from pylog.forward._kafka import DEFAULTS

    def make_sink(rnd):
        sink = KafkaSink({"bootstrap.servers": mock.bootstrap},
                         topic=f"bench-f{rnd}")
        sink.check(10)
        return sink

    def pylog_case(rnd):
        return forward_case(tmp, f"k{rnd}", n, lambda: make_sink(rnd))

    def peer_case(rnd):
        conf = {k: v for k, v in DEFAULTS.items()}
        conf.update({"bootstrap.servers": mock.bootstrap, "log_level": 0})
        p = ck.Producer(conf)
        p.list_topics(timeout=10)
        topic = f"bench-p{rnd}"
        records = list(zip(keys(n), [VALUE] * n))
        t0 = time.perf_counter()
        for k, v in records:
            while True:
                try:
                    p.produce(topic, v, k)
                    break
                except BufferError:
                    p.poll(0.05)
        left = p.flush(600)
        dt = time.perf_counter() - t0
        assert left == 0
        return dt

    return pylog_case, peer_case


# ---- MQTT -----------------------------------------------------------------------

def mqtt_pair(broker, n, tmp):
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from pylog.forward import MqttSink
    from pylog.forward._mqtt import user_properties

    def make_sink():
        sink = MqttSink("127.0.0.1", broker.port, topic="bench/{topic}")
        sink.check(10)
        return sink

    def pylog_case(rnd):
        return forward_case(tmp, f"m{rnd}", n, make_sink)

    def peer_case(rnd):
        # The same messages: the records as the forwarder reads them, so
        # that payloads and user properties are the same on the wire.
        records = filled_records(tmp, f"mp{rnd}", n)
        cv, acked = threading.Condition(), [0]

        def on_publish(_c, _u, _mid, _rc, _p):
            with cv:
                acked[0] += 1
                if acked[0] == n:
                    cv.notify_all()

        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        c.max_inflight_messages_set(1000)  # MqttSink's default
        c.max_queued_messages_set(0)
        c.on_publish = on_publish
        c.connect("127.0.0.1", broker.port)
        c.loop_start()
        t0 = time.perf_counter()
        for r in records:
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = user_properties(r)
            c.publish("bench/s", r.value, 1, properties=props)
        with cv:
            assert cv.wait_for(lambda: acked[0] == n, 600)
        dt = time.perf_counter() - t0
        c.disconnect()
        c.loop_stop()
        return dt

    return pylog_case, peer_case


# ---- HTTP -----------------------------------------------------------------------

def serve_http(port):
    """The bench's HTTP server (a child process): read, count, answer 200."""
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            body.count(b"\n")
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
    srv.daemon_threads = True
    print("ready", flush=True)
    srv.serve_forever()


def http_pair(url, n, tmp):
    import urllib3

    from pylog.forward import HttpSink
    from pylog.forward._http import ndjson

    def pylog_case(rnd):
        return forward_case(tmp, f"h{rnd}", n, lambda: HttpSink(url))

    def peer_case(rnd):
        recs = filled_records(tmp, f"hp{rnd}", n)
        bodies = [ndjson(recs[i:i + BATCH])
                  for i in range(0, n, BATCH)]
        pool = urllib3.PoolManager(maxsize=1, retries=False)
        hdrs = {"Content-Type": "application/x-ndjson"}
        t0 = time.perf_counter()
        for b in bodies:
            r = pool.request("POST", url, body=b, headers=hdrs,
                             redirect=False)
            assert r.status == 200
        dt = time.perf_counter() - t0
        pool.clear()
        return dt

    return pylog_case, peer_case


# ---- fdatasyncs -----------------------------------------------------------------

FSYNC_CHILD = r"""
import sys, threading, time
import pylog
d, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
class Null:
    def send(self, records):
        pass
log = pylog.open(d, sync="interval", sync_interval_ms=1000)
t = log.topic("s")
def produce():
    for i in range(n):
        t.append(b"v" * 100, key=b"dev-%d" % (i % 100))
        if i % 5 == 0:
            time.sleep(0.001)  # a sensor feed (~4,000 records/s), not a burst
th = threading.Thread(target=produce)
th.start()
if mode == "forwarder":
    with log.forwarder("up", "s", Null()) as fw:
        th.join()
        assert fw.flush(60)
        batches = fw.stats()["batches"]
else:  # the hand-written loop: poll() returns as soon as one record is there
    c = log.consumer("up", "s")
    batches = done = 0
    while done < n:
        recs = c.poll(max_records=500, timeout=1.0)
        if recs:
            Null().send(recs)
            c.commit()
            batches += 1
            done += len(recs)
    th.join()
log.close()
print(batches)
"""


def count_fsyncs(n, mode, tmp):
    """(fsync + fdatasync calls, batches) of the child run under strace."""
    d = os.path.join(tmp, f"fs-{mode}")
    script = os.path.join(tmp, "fsync_child.py")
    with open(script, "w") as f:
        f.write(FSYNC_CHILD)
    out = os.path.join(tmp, f"strace-{mode}.txt")
    p = subprocess.run(["strace", "-f", "-c", "-o", out,
                        "-e", "trace=fsync,fdatasync,msync,sync_file_range",
                        sys.executable, script, d, str(n), mode],
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-2000:])
    calls = 0
    with open(out) as f:
        for line in f:
            m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?"
                         r"(fsync|fdatasync|msync|sync_file_range)\s*$", line)
            if m:
                calls += int(m.group(1))
    shutil.rmtree(d, ignore_errors=True)
    return calls, int(p.stdout.split()[-1])


# ---- the run --------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--records", type=int, help="records per case")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--only", choices=["kafka", "mqtt", "http"],
                    action="append", help="run these pairs only")
    ap.add_argument("--no-fsync", action="store_true",
                    help="skip the fdatasync count")
    ap.add_argument("--serve-http", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_http:
        return serve_http(args.serve_http)
    import peers
    n_rounds = args.rounds or (2 if args.quick else 5)
    sizes = {"kafka": 100_000, "mqtt": 20_000, "http": 100_000}
    if args.quick:
        sizes = {k: v // 10 for k, v in sizes.items()}
    if args.records:
        sizes = dict.fromkeys(sizes, args.records)
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json \
        else (lambda *a: print(*a, flush=True))
    tmp = tempfile.mkdtemp(prefix="pylog-bench-forward-")
    load_start = uptime()
    say(f"load average at start: {load_start}  ({os.cpu_count()} cores)")
    mock = peers.KafkaMock()
    os.makedirs(os.path.join(tmp, "mosquitto"))
    broker = peers.Mosquitto(os.path.join(tmp, "mosquitto")).start()
    port = peers.free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve-http",
                               str(port)], stdout=subprocess.PIPE, text=True)
    assert server.stdout.readline().strip() == "ready"
    results = {}
    try:
        pairs = {
            "kafka": kafka_pair(mock, sizes["kafka"], tmp),
            "mqtt": mqtt_pair(broker, sizes["mqtt"], tmp),
            "http": http_pair(f"http://127.0.0.1:{port}/in", sizes["http"],
                              tmp),
        }
        for name, (mine, peer) in pairs.items():
            if args.only and name not in args.only:
                continue
            n = sizes[name]
            times = {"pylog": [], "peer": []}
            mine(-1)  # warm-up: connections, topic creation, imports
            peer(-1)
            for rnd in range(n_rounds):
                order = [("pylog", mine), ("peer", peer)]
                if rnd % 2:
                    order.reverse()
                for who, fn in order:
                    times[who].append(fn(rnd))
            rate = {w: n / statistics.median(ts) for w, ts in times.items()}
            ratio = rate["pylog"] / rate["peer"]
            results[name] = {"records": n, "rounds": n_rounds,
                             "pylog_rps": rate["pylog"],
                             "peer_rps": rate["peer"], "ratio": ratio,
                             "target": TARGETS[name],
                             "pass": ratio >= TARGETS[name]}
            say(f"  {name:<6} pylog {rate['pylog']:>10,.0f} rec/s   peer "
                f"{rate['peer']:>10,.0f} rec/s   ratio {ratio:5.2f}   "
                f"target >= {TARGETS[name]}  "
                f"{'PASS' if ratio >= TARGETS[name] else 'MISS'}")
    finally:
        server.terminate()
        server.wait()
        broker.close()
        mock.close()
    if args.no_fsync:
        pass
    elif shutil.which("strace"):
        n = 4_000 if args.quick else 20_000
        for mode in ("forwarder", "poll-commit"):
            calls, batches = count_fsyncs(n, mode, tmp)
            results[f"fsyncs_{mode}"] = {
                "records": n, "calls": calls, "batches": batches,
                "per_1000_records": calls * 1000 / n,
                "records_per_batch": n / batches}
            say(f"  {mode:<11} {calls * 1000 / n:7.1f} fsync/fdatasync per "
                f"1,000 records  ({calls} for {n} records, {batches} "
                f"batches of {n / batches:.1f} records on average)")
    else:
        say("  strace not found: no fdatasync count")
    load_end = uptime()
    say(f"load average at end: {load_end}")
    shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        json.dump({"load_start": load_start, "load_end": load_end,
                   "results": results}, sys.stdout, indent=2)
        print()


if __name__ == "__main__":
    sys.exit(main())
