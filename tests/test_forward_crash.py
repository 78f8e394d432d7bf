"""Crash cycles: a gateway process appends records and forwards them to a
real upstream (Kafka mock cluster, mosquitto, an HTTP server); it is killed
with SIGKILL at random moments, 20 times, while the upstream goes down and
up. After a last run that drains the log, every record of the log reached
the upstream (lost = 0), duplicates stay within one batch per kill (MQTT:
per kill or broker restart, see below) and, per key, records first arrive
in offset order."""
import collections
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pylog
from peers import (http_client, http_peer, kafka_mock, mosquitto,  # noqa: F401
                   MqttSubscriber)

CYCLES = 20
BATCH = 50
KEYS = 5

CHILD = textwrap.dedent("""
    import random, sys, time
    import pylog
    from pylog.forward import sink_from_url
    d, url, mode = sys.argv[1:4]
    opts = {"kafka": {"delivery_timeout": 30.0}, "mqtt": {"timeout": 5.0},
            "http": {"timeout": 5.0}}[url.split(":")[0]]
    log = pylog.open(d, sync="interval", sync_interval_ms=50)
    t = log.topic("s")
    fw = log.forwarder("up", "s", sink_from_url(url, **opts),
                       batch_records=%(batch)d, linger_ms=20,
                       retry_backoff_ms=(20, 300)).start()
    if mode == "drain":
        ok = fw.flush(120)
        fw.stop()
        log.close()
        print("drained" if ok else "NOT DRAINED", fw.stats(), flush=True)
        sys.exit(0 if ok else 1)
    rnd = random.Random()
    while True:  # until SIGKILL
        first, n = t.end_offset, rnd.randint(1, 20)
        t.append_batch([b"%%d" %% (first + i) for i in range(n)],
                       keys=[b"k%%d" %% ((first + i) %% %(keys)d)
                             for i in range(n)])
        time.sleep(0.005)
""") % {"batch": BATCH, "keys": KEYS}


def run_cycles(tmp_path, url, down, up, seed):
    """Kill the gateway CYCLES times, with outages; then drain. Returns
    (records in the log, kills, outages)."""
    script = tmp_path / "gateway.py"
    script.write_text(CHILD)
    d = str(tmp_path / "log")
    rnd = random.Random(seed)
    outages = 0
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for _ in range(CYCLES):
        p = subprocess.Popen([sys.executable, str(script), d, url, "run"],
                             env=env, stdout=subprocess.DEVNULL)
        life = rnd.uniform(0.5, 1.5)
        start = time.monotonic()
        if rnd.random() < 0.5:  # an outage during this run
            time.sleep(rnd.uniform(0.0, life * 0.7))
            down()
            outages += 1
            time.sleep(rnd.uniform(0.1, 0.4))
            if rnd.random() < 0.5:  # else the kill finds it down
                up()
        time.sleep(max(0.0, life - (time.monotonic() - start)))
        p.send_signal(signal.SIGKILL)
        assert p.wait(30) == -signal.SIGKILL, "the gateway ended by itself"
        up()
    p = subprocess.run([sys.executable, str(script), d, url, "drain"],
                       env=env, capture_output=True, timeout=300)
    assert p.returncode == 0, p.stdout.decode() + p.stderr.decode()[-3000:]
    with pylog.open(d) as log:
        end = log.topic("s").end_offset
        assert log.groups()["up"] == {"s": end}
    return end, CYCLES, outages


def check(arrivals, end, allowed_dups):
    """arrivals: (offset, key) in arrival order."""
    counts = collections.Counter(off for off, _ in arrivals)
    assert end > 1000, "the gateways appended too little to show anything"
    lost = set(range(end)) - set(counts)
    assert not lost, f"{len(lost)} record(s) lost, e.g. {sorted(lost)[:10]}"
    assert set(counts) == set(range(end))
    dups = sum(counts.values()) - end
    assert dups <= allowed_dups, (dups, allowed_dups)
    seen, last = set(), {}
    for off, key in arrivals:
        if off in seen:
            continue
        seen.add(off)
        assert key == b"k%d" % (off % KEYS)
        assert off > last.get(key, -1), (key, off, last[key])
        last[key] = off
    print(f"\n{end} records, {dups} duplicates")


class Toggle:
    """down()/up() that may be called again in the same state."""

    def __init__(self, down, up):
        self._down, self._up, self.is_down = down, up, False

    def down(self):
        if not self.is_down:
            self._down()
            self.is_down = True

    def up(self):
        if self.is_down:
            self._up()
            self.is_down = False


def test_kafka_survives_kills_and_broker_outages(tmp_path, kafka_mock):  # noqa: F811
    sw = Toggle(kafka_mock.down, kafka_mock.up)
    url = f"kafka://{kafka_mock.bootstrap}/up"
    end, kills, _ = run_cycles(tmp_path, url, sw.down, sw.up, seed=1)
    msgs = kafka_mock.consume(["up"], until=lambda out: len(out) >= end)
    # Outages are shorter than delivery_timeout: the idempotent producer
    # retries them without duplicates; only a kill re-sends.
    check([(int(m.value()), m.key()) for m in msgs], end, BATCH * kills)


def test_mqtt_survives_kills_and_broker_restarts(tmp_path, mosquitto):  # noqa: F811
    sub = MqttSubscriber(mosquitto.port, "gw/#")
    try:
        sw = Toggle(mosquitto.stop, mosquitto.start)
        url = f"mqtt://127.0.0.1:{mosquitto.port}/gw/{{topic}}"
        end, kills, outages = run_cycles(tmp_path, url, sw.down, sw.up,
                                         seed=2)
        sub.wait_for(end, 60)
        time.sleep(0.5)
        # A broker stopping may have taken a message whose PUBACK never
        # left: at-least-once sends it again, so restarts count too.
        check([(int(p["pylog-offset"]), p["pylog-key"].encode())
               for _, _, p in sub.messages], end, BATCH * (kills + outages))
    finally:
        sub.close()


def test_http_survives_kills_and_server_outages(tmp_path, http_peer):  # noqa: F811
    sw = Toggle(http_peer.down, http_peer.up)
    end, kills, _ = run_cycles(tmp_path, http_peer.url + "/in", sw.down,
                               sw.up, seed=3)
    check([(r["offset"], r["key"]) for r in http_peer.records], end,
          BATCH * kills)
