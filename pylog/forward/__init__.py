"""pylog.forward: upload topics of a Log to Kafka, MQTT or HTTP, at least
once and in order.

    from pylog.forward import KafkaSink, MqttSink, HttpSink, RetryableError

    with log.forwarder("cloud", ["sensors", "alarms"],
                       MqttSink("broker.example", topic="gw/{topic}")) as fw:
        ...
        fw.flush(timeout=10.0)

Each sink's client library is an optional extra, imported when the sink is
made: ``pip install "pylog[kafka]"`` (confluent-kafka), ``"pylog[mqtt]"``
(paho-mqtt), ``"pylog[http]"`` (urllib3). Any object with ``send(records)``
is a sink too (see _sink.py for the protocol).
"""
from ._errors import (ForwarderError, ForwarderFailedError, RejectedError,
                      RetryableError, UpstreamError)
from ._forwarder import Forwarder
from ._forwarders import Forwarders
from ._http import HttpSink
from ._kafka import KafkaSink
from ._mqtt import MqttSink
from ._url import sink_from_url

__all__ = [
    "Forwarder", "Forwarders", "KafkaSink", "MqttSink", "HttpSink",
    "RetryableError", "RejectedError", "UpstreamError", "ForwarderError",
    "ForwarderFailedError", "sink_from_url",
]
