#!/usr/bin/env python3
"""Ingest side by side with the bare clients, in one run; and the memory of
an idle ``pylog serve``.

    python bench/ingest.py            # full run (about a minute)
    python bench/ingest.py --quick    # a smoke run
    python bench/ingest.py --json     # machine-readable results on stdout

Needs the test extra (``pip install -e ".[test]"``) and mosquitto on PATH.

mqtt   MQTT ingest of 100-byte QoS 1 messages vs a bare paho subscriber
       (MQTT 5, paho's own acknowledgement after its callback, which only
       counts). The broker holds N messages for a fresh persistent session
       before the clock starts; the time runs from connect to the last
       message acknowledged (pylog: appended, then acknowledged). Both ask
       for the same Receive Maximum (1000). pylog: linger_ms=20 and
       batch_records=100 (the default) or 500, sync="none" or "interval"
       (1 s: no fsync per batch in either). The runs of a round rotate;
       medians.
http   HTTP ingest of NDJSON bodies of 500 records (100-byte JSON strings)
       from a client process (http.client, one kept-alive connection per
       client, 2 clients) vs the same server stack answering 200 without
       parsing or appending (the standard library's threading server):
       records/s.
rss    resident memory of ``pylog serve`` with one MQTT ingest and two
       forwarders (Kafka mock cluster and HTTP), idle for 3 s.
"""
import argparse
import http.client
import http.server
import json
import os
import signal
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

PAYLOAD = b"v" * 100
WINDOW = 1000
TARGETS = {"mqtt": 0.7, "rss_mib": 60}


def uptime():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# ---- MQTT ----------------------------------------------------------------------

def preload(broker, client_id, n):
    """Make a persistent session subscribed to bench/#, leave it, and have
    the broker queue n QoS 1 messages for it."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    import peers
    done = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=mqtt.MQTTv5)
    c.on_subscribe = lambda *a: done.set()
    c.on_connect = lambda cl, *a: cl.subscribe("bench/#", 1)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    c.connect("127.0.0.1", broker.port, clean_start=True, properties=props)
    c.loop_start()
    if not done.wait(10):
        raise RuntimeError("no SUBACK")
    c.disconnect()
    c.loop_stop()
    pub = peers.MqttPublisher(broker.port, max_inflight=1000)
    for i in range(0, n, 5000):
        pub.publish([(f"bench/{j % 10}", PAYLOAD)
                     for j in range(i, min(n, i + 5000))])
    pub.close()


def bare_subscriber(broker, client_id, n):
    """Seconds a paho subscriber takes to receive and acknowledge n queued
    messages."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    got, end = [0], [None]
    done = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=mqtt.MQTTv5)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = WINDOW

    def on_message(_c, _u, msg):
        got[0] += 1
        if got[0] == n:
            end[0] = time.time()
            done.set()
    c.on_message = on_message
    t0 = time.time()
    c.connect("127.0.0.1", broker.port, clean_start=False, properties=props)
    c.loop_start()
    if not done.wait(600):
        raise RuntimeError(f"bare subscriber got {got[0]} of {n}")
    dt = end[0] - t0
    time.sleep(0.05)  # the last PUBACK leaves after the callback returns
    c.disconnect()
    c.loop_stop()
    return dt


def pylog_ingest(broker, client_id, n, tmp, sync, batch):
    from pylog.ingest import MqttSource
    d = tempfile.mkdtemp(dir=tmp)
    with pylog.open(d, sync=sync) as log:
        src = MqttSource("127.0.0.1", broker.port, topics=["bench/#"],
                         client_id=client_id, max_inflight=WINDOW)
        ing = log.ingest("bench", src, key="{mqtt_topic}",
                         batch_records=batch, linger_ms=20)
        # The end is the last append (wall clock ms, as the ingest keeps
        # it); polling seldom keeps this thread from taking the GIL.
        t0 = time.time()
        ing.start()
        while ing.stats()["acked"] < n:
            time.sleep(0.05)
        dt = ing.stats()["last_append_ms"] / 1000.0 - t0
        ing.stop()
        assert log.topic("bench").end_offset == n
    return dt


MQTT_CASES = (("none", 100), ("none", 500), ("interval", 100))


def mqtt_case(broker, n, rounds, tmp, say):
    """Each round drains a fresh session with the bare subscriber and with
    each pylog case (sync, batch_records), the order rotated."""
    runs = [("paho", None, None)] + [("pylog", s, b) for s, b in MQTT_CASES]
    times = {r: [] for r in runs}
    for rnd in range(rounds):
        k = rnd % len(runs)
        for who, sync, batch in runs[k:] + runs[:k]:
            cid = f"bench-{who}-{sync}-{batch}-{rnd}"
            preload(broker, cid, n)
            times[(who, sync, batch)].append(
                pylog_ingest(broker, cid, n, tmp, sync, batch)
                if who == "pylog" else bare_subscriber(broker, cid, n))
    paho = n / statistics.median(times[runs[0]])
    say(f"  mqtt bare paho subscriber {paho:>9,.0f} msg/s")
    out = {"mqtt_bare_paho": {"messages": n, "rounds": rounds,
                              "mps": paho}}
    for run in runs[1:]:
        _, sync, batch = run
        rate = n / statistics.median(times[run])
        ratio = rate / paho
        ok = ratio >= TARGETS["mqtt"]
        out[f"mqtt_{sync}_batch{batch}"] = {
            "messages": n, "rounds": rounds, "sync": sync,
            "batch_records": batch, "pylog_mps": rate, "paho_mps": paho,
            "ratio": ratio, "target": TARGETS["mqtt"], "pass": ok}
        say(f"  mqtt ingest sync={sync:<8} batch_records={batch:<4} "
            f"{rate:>9,.0f} msg/s   ratio {ratio:5.2f}   target >= "
            f"{TARGETS['mqtt']}  {'PASS' if ok else 'MISS'}")
    return out


# ---- HTTP ----------------------------------------------------------------------

def body(n=500):
    line = json.dumps("x" * 98).encode()  # 100 bytes with its quotes
    return b"\n".join([line] * n) + b"\n"


def client_process(port, requests):
    """Post requests NDJSON bodies over one kept-alive connection, once
    the parent says go (a line on stdin)."""
    data = body()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.connect()
    hdr = {"Content-Type": "application/x-ndjson"}
    print("ready", flush=True)
    sys.stdin.readline()
    for _ in range(requests):
        c.request("POST", "/topics/bench", body=data, headers=hdr)
        r = c.getresponse()
        r.read()
        if r.status != 200:
            raise SystemExit(f"HTTP {r.status}")
    print(requests, flush=True)


def drive(port, requests, clients=2):
    """Seconds for clients processes (started and connected before the
    clock starts) to post requests bodies each."""
    ps = [subprocess.Popen([sys.executable, __file__, "--client", str(port),
                            str(requests)], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True)
          for _ in range(clients)]
    for p in ps:
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError("an HTTP client did not start")
    t0 = time.perf_counter()
    for p in ps:
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in ps:
        p.stdout.readline()
    dt = time.perf_counter() - t0
    for p in ps:
        p.stdin.close()
        if p.wait(600) != 0:
            raise RuntimeError("an HTTP client failed")
    return dt


class _Bare(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 1 << 16

    def log_message(self, *a):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


def http_case(requests, rounds, tmp, say):
    from pylog.ingest import HttpSource
    import peers
    times = {"pylog": [], "bare": []}
    clients = 2
    for rnd in range(rounds):
        order = ["pylog", "bare"] if rnd % 2 == 0 else ["bare", "pylog"]
        for who in order:
            if who == "pylog":
                d = tempfile.mkdtemp(dir=tmp)
                with pylog.open(d) as log:
                    with log.ingest("bench", HttpSource(port=0)) as ing:
                        times[who].append(drive(ing.source.port, requests,
                                                clients))
                        assert ing.stats()["appended"] == \
                            clients * requests * 500
            else:
                port = peers.free_port()
                srv = http.server.ThreadingHTTPServer(("127.0.0.1", port),
                                                      _Bare)
                th = threading.Thread(target=srv.serve_forever, daemon=True)
                th.start()
                times[who].append(drive(port, requests, clients))
                srv.shutdown()
                srv.server_close()
    n = clients * requests * 500
    rate = {w: n / statistics.median(ts) for w, ts in times.items()}
    say(f"  http ndjson x500 pylog {rate['pylog']:>9,.0f} rec/s   bare "
        f"server {rate['bare']:>9,.0f} rec/s   ratio "
        f"{rate['pylog'] / rate['bare']:5.2f}")
    return {"http_ndjson": {"records": n, "rounds": rounds,
                            "pylog_rps": rate["pylog"],
                            "bare_server_rps": rate["bare"],
                            "ratio": rate["pylog"] / rate["bare"]}}


# ---- RSS -----------------------------------------------------------------------

def rss_case(broker, tmp, say):
    import peers
    mock = peers.KafkaMock()
    peer = peers.HttpPeer().start()
    status = peers.free_port()
    cfg = os.path.join(tmp, "idle.toml")
    with open(cfg, "w") as f:
        f.write(f"""
log = "{tmp}/idle-log"
sync = "interval"
[topics.sensors]
[topics.alarms]
[[ingest]]
topic = "sensors"
source = "mqtt://127.0.0.1:{broker.port}"
topics = ["sensors/#"]
client_id = "idle"
[[forward]]
name = "kafka"
topics = ["sensors", "alarms"]
to = "kafka://{mock.bootstrap}/{{topic}}"
[[forward]]
name = "http"
topics = ["alarms"]
to = "{peer.url}/in"
[status]
listen = "127.0.0.1:{status}"
""")
    p = subprocess.Popen([sys.executable, "-m", "pylog", "serve", cfg],
                         stderr=subprocess.DEVNULL)
    try:
        peers.wait_port(status, timeout=30)
        time.sleep(3)
        with open(f"/proc/{p.pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f)
        rss = int(fields["VmRSS"].split()[0]) / 1024
        hwm = int(fields["VmHWM"].split()[0]) / 1024
        threads = int(fields["Threads"])
    finally:
        p.terminate()
        p.wait(60)
        peer.close()
        mock.close()
    ok = rss < TARGETS["rss_mib"]
    say(f"  rss  pylog serve, 1 ingest + 2 forwarders, idle: {rss:.1f} MiB "
        f"(peak {hwm:.1f} MiB, {threads} threads)   target < "
        f"{TARGETS['rss_mib']} MiB  {'PASS' if ok else 'MISS'}")
    return {"rss_idle": {"rss_mib": rss, "peak_mib": hwm,
                         "threads": threads, "target_mib": TARGETS["rss_mib"],
                         "pass": ok}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--only", choices=["mqtt", "http", "rss"],
                    action="append", help="run these cases only")
    ap.add_argument("--client", nargs=2, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        return client_process(*args.client)
    import peers
    # SIGTERM unwinds like Ctrl-C, so that the broker is stopped too.
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    rounds = args.rounds or (1 if args.quick else 5)
    n_mqtt = 5_000 if args.quick else 30_000
    n_http = 20 if args.quick else 200
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json \
        else (lambda *a: print(*a, flush=True))
    tmp = tempfile.mkdtemp(prefix="pylog-bench-ingest-")
    load_start = uptime()
    say(f"load average at start: {load_start}  ({os.cpu_count()} cores)")
    os.makedirs(os.path.join(tmp, "mosquitto"))
    broker = peers.Mosquitto(os.path.join(tmp, "mosquitto")).start()
    results = {}
    try:
        want = args.only or ["mqtt", "http", "rss"]
        if "mqtt" in want:
            results.update(mqtt_case(broker, n_mqtt, rounds, tmp, say))
        if "http" in want:
            results.update(http_case(n_http, rounds, tmp, say))
        if "rss" in want:
            results.update(rss_case(broker, tmp, say))
    finally:
        broker.close()
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    load_end = uptime()
    say(f"load average at end: {load_end}")
    if args.json:
        json.dump({"load_start": load_start, "load_end": load_end,
                   "results": results}, sys.stdout, indent=2)
        print()


if __name__ == "__main__":
    sys.exit(main())
