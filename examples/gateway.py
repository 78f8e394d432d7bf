"""An IoT gateway: sensors append readings to a pylog buffer on disk, and a
forwarder uploads them to an MQTT broker at least once, in order, across
uplink outages and restarts (the buffer resumes where the broker stopped).

    python examples/gateway.py BROKER_HOST[:PORT] [--dir DIR] [--seconds S]
"""
import argparse
import json
import random
import time

import pylog
from pylog.forward import MqttSink

ap = argparse.ArgumentParser(description="sensors -> pylog -> MQTT")
ap.add_argument("broker", help="HOST or HOST:PORT of the MQTT broker")
ap.add_argument("--dir", default="gateway-buffer", help="the buffer on disk")
ap.add_argument("--seconds", type=float, help="stop after S (default: Ctrl-C)")
args = ap.parse_args()
host, _, port = args.broker.partition(":")

with pylog.open(args.dir, sync="interval", sync_interval_ms=1000) as log:
    readings = log.topic("readings", max_bytes=64 << 20, on_full="drop_oldest")
    sink = MqttSink(host, int(port or 1883), topic="gw/{topic}/{key}")
    with log.forwarder("uplink", ["readings"], sink) as fw:
        stop = time.monotonic() + (args.seconds or float("inf"))
        try:
            while time.monotonic() < stop:
                for sensor in ("temp-1", "temp-2", "humidity"):
                    v = {"sensor": sensor, "value": round(random.gauss(21, 2), 2)}
                    readings.append(json.dumps(v), key=sensor)
                time.sleep(0.1)
        except KeyboardInterrupt:
            pass
        fw.flush(timeout=30)
        print(json.dumps(fw.stats()))
