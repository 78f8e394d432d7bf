"""Upstream URLs of the command line (pylog/forward/_url.py)."""
import pytest

import pylog
from pylog.forward import HttpSink, KafkaSink, MqttSink, sink_from_url
from peers import http_client, kafka_client, mqtt_client  # noqa: F401
from pylog.forward._url import parse


def test_kafka_urls():
    assert parse("kafka://b1:9093,b2,[::1]:9000/up-{topic}?linger.ms=20") == (
        "kafka", {"config": {"bootstrap.servers": "b1:9093,b2:9092,[::1]:9000",
                             "linger.ms": "20"},
                  "topic": "up-{topic}"})
    assert parse("kafka://broker")[1]["topic"] == "{topic}"


def test_mqtt_urls():
    assert parse("mqtt://u%40x:p%3Aw@broker:1884/gw/{topic}/{key}?qos=2"
                 "&client_id=gw-7") == ("mqtt", {
                     "host": "broker", "port": 1884,
                     "topic": "gw/{topic}/{key}", "tls": None,
                     "username": "u@x", "password": "p:w", "qos": 2,
                     "client_id": "gw-7"})
    assert parse("mqtts://broker") == ("mqtts", {
        "host": "broker", "port": 8883, "topic": "gw/{topic}", "tls": True})
    assert parse("mqtt://[::1]/x")[1]["host"] == "::1"


def test_http_urls_are_kept_whole():
    url = "https://ingest.example:8443/v1/{topic}?token=abc"
    assert parse(url) == ("https", {"url": url})


@pytest.mark.parametrize("url, why", [
    ("broker:9092", "SCHEME://"),
    ("ftp://x/y", "unknown scheme 'ftp'"),
    ("kafka:///t", "no broker"),
    ("kafka://b:notaport/t", "bad port"),
    ("mqtt://b:70000/t", "bad port"),
    ("mqtt:///t", "no host"),
    ("mqtt://b/t?qos=0", "qos must be 1 or 2"),
    ("mqtt://b/t?retain=1", "unknown MQTT option 'retain'"),
    ("mqtt://b/t?qos=1&qos=2", "given twice"),
    (None, "SCHEME://"),
])
def test_bad_urls_say_what_is_wrong(url, why):
    with pytest.raises(pylog.InvalidConfigError, match="bad upstream URL") \
            as ei:
        parse(url)
    assert why in str(ei.value)


def test_sink_from_url_makes_the_sink(kafka_client, mqtt_client,  # noqa: F811
                                      http_client):  # noqa: F811
    k = sink_from_url("kafka://127.0.0.1:1/x-{topic}",
                      config={"client.id": "gw"})
    assert isinstance(k, KafkaSink) and k.template.text == "x-{topic}"
    assert k._conf["client.id"] == "gw"
    assert k._conf["bootstrap.servers"] == "127.0.0.1:1"
    k.close()
    m = sink_from_url("mqtts://broker/a/{topic}", qos=2)
    assert isinstance(m, MqttSink) and m.tls is True and m.qos == 2
    assert m.port == 8883
    h = sink_from_url("http://127.0.0.1:1/in", format="raw")
    assert isinstance(h, HttpSink) and h.format == "raw"
    with pytest.raises(pylog.InvalidConfigError,
                       match="No such configuration property"):
        sink_from_url("kafka://b/t?no.such.property=1")
