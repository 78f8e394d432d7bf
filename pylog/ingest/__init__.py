"""pylog.ingest: records from MQTT and HTTP into topics, acknowledged only
once appended.

    from pylog.ingest import MqttSource, HttpSource

    src = log.ingest("sensors",
                     MqttSource("127.0.0.1", 1883, topics=["sensors/#"],
                                qos=1, client_id="gw-ingest"),
                     key="{mqtt_topic}", batch_records=500, linger_ms=20)
    with src:                       # start() ... stop()
        ...
        src.stats()

    http = log.ingest("events", HttpSource(host="127.0.0.1", port=8080))
    # POST /topics/events: one record (application/octet-stream) or NDJSON

MqttSource needs the mqtt extra (``pip install "pylog[mqtt]"``, paho-mqtt);
HttpSource only the standard library.
"""
from ._errors import IngestError
from ._http import HttpSource
from ._ingest import Ingest
from ._mqtt import MqttSource

__all__ = ["Ingest", "MqttSource", "HttpSource", "IngestError"]
