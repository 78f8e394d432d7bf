"""``pylog DIR forward`` (pylog/_cli.py) and examples/gateway.py, run as
child processes against real peers (tests/peers.py)."""
import json
import os
import signal
import subprocess
import sys

import pylog
from peers import (MqttSubscriber, http_client, http_peer,  # noqa: F401
                   kafka_client, kafka_mock, mosquitto, mqtt_client,
                   wait_until)
from test_cli import ENV, TIMEOUT, cli, on_pty

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_log(d, n=1000, topics=("s",)):
    with pylog.open(d) as log:
        for name in topics:
            log.topic(name).append_batch([b"v%d" % i for i in range(n)],
                                         keys=[b"k"] * n)
    return str(d)


def one_line_error(p, status, text):
    err = p.stderr.decode()
    assert p.returncode == status, err
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("pylog"), err
    assert text in err, err


def test_forward_drains_to_http(tmp_path, http_peer):  # noqa: F811
    d = make_log(tmp_path / "log", topics=("s", "a"))
    p = cli(d, "forward", "--to", http_peer.url + "/in/{topic}", "s", "a",
            "--group", "cloud", "--drain", "--batch-records", "300",
            "-H", "Authorization: Bearer t0k")
    assert p.returncode == 0, p.stderr.decode()
    assert "forwarded 2000 records" in p.stderr.decode()
    assert len(http_peer.records) == 2000
    assert {r["path"] for r in http_peer.records} == {"/in/s", "/in/a"}
    assert http_peer.requests[0][1]["Authorization"] == "Bearer t0k"
    assert max(len(b.splitlines()) for _, _, b in http_peer.requests) == 300
    with pylog.open(d) as log:
        assert log.groups() == {"cloud": {"s": 1000, "a": 1000}}


def test_forward_drains_to_kafka_and_mqtt(tmp_path, kafka_mock,  # noqa: F811
                                          mosquitto):  # noqa: F811
    d = make_log(tmp_path / "log")
    p = cli(d, "forward", "--to", f"kafka://{kafka_mock.bootstrap}/up",
            "s", "--drain", "-X", "linger.ms=1")
    assert p.returncode == 0, p.stderr.decode()
    assert len(kafka_mock.consume(["up"], until=lambda o: len(o) >= 1000)) \
        == 1000
    sub = MqttSubscriber(mosquitto.port, "gw/#")
    try:
        p = cli(d, "forward", "--to",
                f"mqtt://127.0.0.1:{mosquitto.port}/gw/{{topic}}", "s",
                "--group", "m", "--drain", "--qos", "2")
        assert p.returncode == 0, p.stderr.decode()
        assert sub.wait_for(1000, 30)
    finally:
        sub.close()


def test_bad_urls_and_options_are_one_line_usage_errors(
        tmp_path, kafka_client, mqtt_client, http_client):  # noqa: F811
    d = make_log(tmp_path / "log", n=1)
    for args, text in [
        (["--to", "ftp://x/y"], "unknown scheme 'ftp'"),
        (["--to", "kafka://"], "no broker"),
        (["--to", "mqtt://h:99999/x"], "bad port"),
        (["--to", "kafka://h/x", "-X", "no.such.prop=1"],
         "No such configuration property"),
        (["--to", "kafka://h/x", "-X", "linger.ms"], "PROPERTY=VALUE"),
        (["--to", "mqtt://h/x", "-H", "A: b"], "-H does not apply"),
        (["--to", "http://h/x", "--qos", "2"], "--qos does not apply"),
        (["--to", "kafka://h/x", "--format", "raw"], "--format does not"),
        (["--to", "http://h/x", "-H", "nocolon"], "'Name: value'"),
    ]:
        one_line_error(cli(d, "forward", "s", *args), 2, text)


def test_unreachable_upstreams_and_missing_topics_are_one_line_errors(
        tmp_path, kafka_client, mqtt_client, http_client):  # noqa: F811
    d = make_log(tmp_path / "log", n=1)
    for url, text in [
        ("kafka://127.0.0.1:9/t", "cannot reach Kafka at 127.0.0.1:9"),
        ("mqtt://127.0.0.1:9/t", "cannot connect to mqtt://127.0.0.1:9"),
        ("http://127.0.0.1:9/t", "cannot reach http://127.0.0.1:9"),
    ]:
        one_line_error(cli(d, "forward", "--to", url, "s", "--timeout", "1"),
                       1, text)
    one_line_error(cli(d, "forward", "--to", "http://127.0.0.1:9/", "nope"),
                   1, "no topic 'nope'")
    with pylog.open(d) as log:
        assert log.groups() == {} and log.topics() == ["s"]


def test_a_refusal_without_dead_letter_topic_exits_with_the_error(
        tmp_path, http_peer):  # noqa: F811
    d = make_log(tmp_path / "log", n=10)
    http_peer.schedule.extend([403] * 5)
    p = cli(d, "forward", "--to", http_peer.url, "s", "--drain")
    one_line_error(p, 1, "HTTP 403")
    p = cli(d, "forward", "--to", http_peer.url, "s", "--drain",
            "--dead-letter-topic", "dead")
    assert p.returncode == 0, p.stderr.decode()
    assert "0 retries, 10 dead-lettered" in p.stderr.decode()
    with pylog.open(d) as log:
        assert log.topic("dead").end_offset == 10


def test_ctrl_c_stops_and_commits_what_was_confirmed(tmp_path,
                                                     http_peer):  # noqa: F811
    """Started with the upstream down (--no-check), it retries; Ctrl-C
    stops it with status 130 and nothing committed; with the upstream up,
    a live run forwards and Ctrl-C leaves everything committed."""
    d = make_log(tmp_path / "log", n=100)
    http_peer.down()
    p = subprocess.Popen([sys.executable, "-m", "pylog", d, "forward",
                          "--to", http_peer.url, "s", "--no-check"],
                         stderr=subprocess.PIPE, env=ENV)
    err = b""
    while b"backoff" not in err:  # not a terminal: state changes, one a line
        line = p.stderr.readline()
        assert line, "the forwarder never backed off"
        err += line
    p.send_signal(signal.SIGINT)
    err += p.stderr.read()
    assert p.wait(TIMEOUT) == 130, err
    assert b"Traceback" not in err and b"forwarded 0 records" in err
    with pylog.open(d) as log:
        assert log.groups() == {"forward": {"s": 0}}
    http_peer.up()
    p = subprocess.Popen([sys.executable, "-m", "pylog", d, "forward",
                          "--to", http_peer.url, "s"],
                         stderr=subprocess.PIPE, env=ENV)
    assert wait_until(lambda: len(http_peer.records) == 100, 30)
    p.send_signal(signal.SIGINT)
    err = p.stderr.read()
    assert p.wait(TIMEOUT) == 130, err
    assert b"forwarded 100 records" in err
    with pylog.open(d) as log:
        assert log.groups() == {"forward": {"s": 100}}


def test_a_terminal_shows_a_live_status_line(tmp_path,
                                             http_peer):  # noqa: F811
    d = make_log(tmp_path / "log", n=700)
    rc, shown = on_pty([d, "forward", "--to", http_peer.url, "s",
                        "--drain"])
    assert rc == 0, shown
    assert b"\r" in shown and b"\x1b[K" in shown
    assert b"forward forward -> " + http_peer.url.encode() in shown
    assert b"sent 700" in shown and b"lag 0" in shown
    assert b"forwarded 700 records" in shown


def test_the_gateway_example(tmp_path, mosquitto):  # noqa: F811
    sub = MqttSubscriber(mosquitto.port, "gw/#")
    try:
        p = subprocess.run(
            [sys.executable, os.path.join(ROOT, "examples", "gateway.py"),
             f"127.0.0.1:{mosquitto.port}", "--dir", str(tmp_path / "buf"),
             "--seconds", "1"], capture_output=True, timeout=TIMEOUT,
            env=ENV)
        assert p.returncode == 0, p.stderr.decode()
        stats = json.loads(p.stdout.decode().splitlines()[-1])
        assert stats["lag"] == {"readings": 0} and stats["retries"] == 0
        n = stats["sent_records"]
        assert n >= 3 and n % 3 == 0
        assert sub.wait_for(n, 30)
        topics = {m[0] for m in sub.messages}
        assert topics == {"gw/readings/temp-1", "gw/readings/temp-2",
                          "gw/readings/humidity"}
        assert all(json.loads(m[1])["sensor"] == m[0].rsplit("/", 1)[1]
                   for m in sub.messages)
        with open(os.path.join(ROOT, "examples", "gateway.py")) as f:
            assert len(f.read().splitlines()) < 40
    finally:
        sub.close()


def test_the_demo_kills_at_a_random_moment_up_or_down():
    """pylog demo used to kill in the middle of a down phase, so its
    "duplicated 0" was built in; now any moment of the middle half."""
    import random

    from pylog import _demo
    rnd = random.Random(7)
    moments = [_demo.kill_time(6.0, rnd) for _ in range(400)]
    assert 1.5 <= min(moments) and max(moments) <= 4.5
    phases = {_demo.uplink_down(0.0, m) for m in moments}
    assert phases == {True, False}
    assert len({round(m, 3) for m in moments}) > 300
