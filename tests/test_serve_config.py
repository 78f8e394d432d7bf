"""The config file of ``pylog serve`` (pylog/serve/_config.py): every kind
of mistake (unknown key, wrong type, bad value, bad URL, missing log path,
a topic that does not exist) is one line on stderr naming the file and the
key or URL, exit status 2, and nothing is created. examples/gateway.toml
is a valid config."""
import os
import subprocess
import sys

import pytest

from peers import kafka_client, mqtt_client  # noqa: F401
from pylog import _cli
from pylog.serve import load
from serving import ENV, ROOT

BASE = 'log = "{log}"\n{text}\n[topics.s]\n'
MQTT = """[[ingest]]
topic = "s"
source = "mqtt://127.0.0.1:1883"
topics = ["a/#"]
client_id = "gw"
"""
FORWARD = """[[forward]]
name = "up"
topics = ["s"]
to = "http://127.0.0.1:9/in"
"""

CASES = [
    # (config text after BASE, the key or URL named, words of the message)
    ("nope = 1\n", "nope", "unknown key"),
    ("[topics.s.x]\n", "topics.s.x", "unknown topic option"),
    ("[topics.t]\nmax_bytes = \"big\"\n", "topics.t.max_bytes", "int"),
    ("[topics.'a b']\n", "topics.a b", "invalid topic name"),
    (MQTT + "qoss = 1\n", "ingest[0].qoss", "unknown key"),
    (MQTT + "qos = \"1\"\n", "ingest[0].qos", "qos must be 0 or 1"),
    (MQTT + "qos = 2\n", "ingest[0].qos", "not supported"),
    (MQTT + "batch_records = 0\n", "ingest[0].batch_records", ">= 1"),
    (MQTT + "key = \"{nope}\"\n", "ingest[0].key", "unknown field"),
    (MQTT + "ack = \"never\"\n", "ingest[0].ack", "ack must be"),
    (MQTT.replace('["a/#"]', '"a/#/b"'), "ingest[0]",
     "invalid MQTT topic filter"),
    (MQTT.replace('client_id = "gw"\n', ""), "ingest[0]", "client_id"),
    (MQTT.replace("mqtt://127.0.0.1:1883", "mqtt://127.0.0.1:99999"),
     "ingest[0].source", "bad port"),
    (MQTT.replace("mqtt://127.0.0.1:1883", "ftp://h"), "ingest[0].source",
     "bad source URL 'ftp://h'"),
    (MQTT.replace("mqtt://127.0.0.1:1883", "mqtt://h/sensors"),
     "ingest[0].source", "no path"),
    (MQTT.replace('topic = "s"\n', ""), "ingest[0]", "topic is required"),
    (MQTT.replace('source = "mqtt://127.0.0.1:1883"\n', ""), "ingest[0]",
     "source is required"),
    ("[[ingest]]\ntopic = \"s\"\nsource = \"http://h:80\"\ntoken = 5\n",
     "ingest[0].token", "token must be"),
    ("[[ingest]]\ntopic = \"s\"\nsource = \"https://h:443\"\n",
     "ingest[0].source", "needs tls"),
    ("ingest = 3\n", "ingest", "array of tables"),
    (FORWARD + "priority = \"high\"\n", "forward[0].priority",
     "priority must be an int"),
    (FORWARD + "colour = 1\n", "forward[0].colour", "unknown key"),
    (FORWARD + "format = \"xml\"\n", "forward[0].format", "format must be"),
    (FORWARD + "retry_backoff_ms = [5]\n", "forward[0].retry_backoff_ms",
     "pair"),
    (FORWARD.replace("http://127.0.0.1:9/in", "kafka:/x"), "forward[0].to",
     "bad upstream URL 'kafka:/x'"),
    (FORWARD.replace("http://127.0.0.1:9/in", "mqtt://h:1/x?qos=7"),
     "forward[0].to", "qos must be 1 or 2"),
    (FORWARD.replace('topics = ["s"]', 'topics = ["t"]'),
     "forward[0].topics", "no topic 't'"),
    (FORWARD.replace('name = "up"\n', ""), "forward[0]", "name is required"),
    (FORWARD + FORWARD, "forward[1].name", "also the name"),
    ("[forwarders]\nmax_bytes_per_s = -1\n", "forwarders.max_bytes_per_s",
     "number > 0"),
    ("[status]\nlisten = 9100\n", "status.listen", "HOST:PORT"),
    ("[status]\nlisten = \"localhost\"\n", "status.listen", "no port"),
    ("[status]\nport = 1\n", "status.port", "unknown key"),
    ("[serve]\nflush_timeout = -1\n", "serve.flush_timeout", ">= 0"),
    ("sync = \"sometimes\"\n", "sync", "must be 'none'"),
    ("sync_interval_ms = 0\n", "sync_interval_ms", ">= 1"),
]


def run(argv, capsys):
    rc = _cli.main(argv)
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("text, key, words", CASES)
def test_a_mistake_is_one_line_naming_file_and_key_and_exit_2(
        tmp_path, capsys, mqtt_client, text, key, words):  # noqa: F811
    log = tmp_path / "log"
    path = tmp_path / "gw.toml"
    path.write_text(BASE.format(log=log, text=text))
    rc, err = run(["serve", str(path)], capsys)
    assert rc == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"pylog: error: {path}: {key}: "), err
    assert words in err, err
    assert not log.exists()  # nothing was created


@pytest.mark.parametrize("text, words", [
    ("sync = \"none\"\n", "log: required"),
    ("log = 3\n", "log: must be a directory path"),
    ("log = \"/tmp/x\"\nlog = \"/tmp/y\"\n", "not valid TOML"),
    ("log = \"/tmp/x\"\n[[ingest]\n", "not valid TOML"),
])
def test_no_log_or_no_toml_is_one_line_and_exit_2(tmp_path, capsys, text,
                                                  words):
    path = tmp_path / "gw.toml"
    path.write_text(text)
    rc, err = run(["serve", str(path)], capsys)
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith(f"pylog: error: {path}: ") and words in err, err


def test_a_missing_file_is_one_line_and_exit_2(tmp_path, capsys):
    rc, err = run(["serve", str(tmp_path / "none.toml")], capsys)
    assert rc == 2 and "none.toml: No such file" in err


def test_the_real_command_exits_2_with_one_line(tmp_path):
    path = tmp_path / "gw.toml"
    path.write_text(f'log = "{tmp_path}/log"\nlogg = 1\n')
    p = subprocess.run([sys.executable, "-m", "pylog", "serve", str(path)],
                       capture_output=True, timeout=60, env=ENV)
    assert p.returncode == 2
    assert p.stderr.decode() == (f"pylog: error: {path}: logg: unknown key "
                                 "(known: log, pylog.open options sync, "
                                 "sync_interval_ms, full_timeout_ms, "
                                 "index_interval_bytes, max_bytes, "
                                 "max_record_bytes, on_full, "
                                 "retain_until_consumed, retention_bytes, "
                                 "retention_ms, segment_bytes, and the "
                                 "tables topics, ingest, forward, "
                                 "forwarders, status, serve)\n")


def test_a_forwarded_topic_missing_from_an_existing_log_is_exit_2(
        tmp_path, capsys):
    import pylog
    with pylog.open(tmp_path / "log") as log:
        log.topic("s")
    path = tmp_path / "gw.toml"
    path.write_text(f'log = "{tmp_path}/log"\n' + FORWARD.replace(
        '["s"]', '["s", "t"]'))
    rc, err = run(["serve", str(path)], capsys)
    assert rc == 2 and err.count("\n") == 1, err
    assert "forward[0].topics: no topic 't' in log" in err


def test_the_example_gateway_is_valid(tmp_path, capsys, kafka_client,  # noqa: F811
                                      mqtt_client):  # noqa: F811
    path = os.path.join(ROOT, "examples", "gateway.toml")
    rc, err = run(["serve", "--check", path], capsys)
    assert rc == 0, err
    cfg = load(path)
    try:
        import pylog
        with pylog.open(tmp_path, **cfg.open_options) as log:
            for name, opts in cfg.topics.items():
                log.topic(name, **opts)  # the core takes the budget
        assert [i.topic for i in cfg.ingests] == ["sensors", "alarms"]
        assert sum(t["max_bytes"] for t in cfg.topics.values()) == 64 << 20
        assert [f.options.get("priority") for f in cfg.forwards] == [0, 1]
        assert cfg.max_bytes_per_s and cfg.status == ("127.0.0.1", 9100)
    finally:
        cfg.close()


def test_a_log_directory_called_serve_still_works(tmp_path, capsys,
                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    import pylog
    with pylog.open("serve") as log:
        log.topic("x")
    rc = _cli.main(["serve", "topics"])
    out = capsys.readouterr().out
    assert rc == 0 and "\nx\t0\t0\n" in out
