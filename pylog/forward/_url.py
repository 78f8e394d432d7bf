"""Sinks from URLs, for the command line (``pylog DIR forward --to URL``).

    kafka://HOST[:PORT][,HOST[:PORT]...][/TOPIC][?librdkafka.property=value&...]
    mqtt://[USER[:PASSWORD]@]HOST[:PORT][/TOPIC][?qos=1|2&client_id=ID]
    mqtts://...                        the same over TLS (port 8883)
    http://HOST[:PORT]/PATH[?QUERY]    POST NDJSON batches to that URL
    https://...

TOPIC (and an HTTP path) may use ``{topic}`` (and for MQTT ``{key}``); the
defaults are ``{topic}`` for Kafka and ``gw/{topic}`` for MQTT. Ports
default to 9092, 1883, 8883.
"""
import urllib.parse

from .._errors import InvalidConfigError

SCHEMES = ("kafka", "mqtt", "mqtts", "http", "https")
MQTT_QUERY = ("qos", "client_id")


def _bad(url, why):
    return InvalidConfigError(f"bad upstream URL {url!r}: {why}")


def _hostport(url, text, default):
    parts = urllib.parse.urlsplit("//" + text)
    try:
        port = parts.port
    except ValueError:
        raise _bad(url, f"bad port in {text!r}") from None
    if not parts.hostname:
        raise _bad(url, "no host")
    return parts.hostname, port or default


def _query(url, query):
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True,
                                       strict_parsing=bool(query))
    except ValueError:
        raise _bad(url, f"bad query {query!r}") from None
    out = {}
    for k, v in pairs:
        if k in out:
            raise _bad(url, f"{k} is given twice")
        out[k] = v
    return out


def parse(url):
    """(scheme, fields) of an upstream URL; InvalidConfigError if bad."""
    if not isinstance(url, str) or "://" not in url:
        raise _bad(url, "expected SCHEME://..., with SCHEME one of "
                        + ", ".join(SCHEMES))
    scheme, rest = url.split("://", 1)
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise _bad(url, f"unknown scheme {scheme!r} (use "
                        + ", ".join(s + "://" for s in SCHEMES) + ")")
    if scheme in ("http", "https"):
        return scheme, {"url": url}
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    path = urllib.parse.unquote(path)
    opts = _query(url, query)
    if scheme == "kafka":
        if not netloc:
            raise _bad(url, "no broker")
        servers = []
        for hp in netloc.split(","):
            host, port = _hostport(url, hp, 9092)
            host = f"[{host}]" if ":" in host else host
            servers.append(f"{host}:{port}")
        return scheme, {"config": {"bootstrap.servers": ",".join(servers),
                                   **opts},
                        "topic": path or "{topic}"}
    userinfo, at, hostport = netloc.rpartition("@")
    host, port = _hostport(url, hostport, 8883 if scheme == "mqtts" else 1883)
    fields = {"host": host, "port": port, "topic": path or "gw/{topic}",
              "tls": True if scheme == "mqtts" else None}
    if at:
        user, colon, password = userinfo.partition(":")
        fields["username"] = urllib.parse.unquote(user)
        if colon:
            fields["password"] = urllib.parse.unquote(password)
    for k, v in opts.items():
        if k not in MQTT_QUERY:
            raise _bad(url, f"unknown MQTT option {k!r} (known: "
                            + ", ".join(MQTT_QUERY) + ")")
        if k == "qos":
            if v not in ("1", "2"):
                raise _bad(url, f"qos must be 1 or 2, not {v!r}")
            v = int(v)
        fields[k] = v
    return scheme, fields


def sink_from_url(url, **options):
    """The sink an upstream URL names. options go to the sink's
    constructor (Kafka: ``config`` entries are merged)."""
    scheme, fields = parse(url)
    if scheme == "kafka":
        from ._kafka import KafkaSink
        config = {**fields["config"], **options.pop("config", {})}
        return KafkaSink(config, fields["topic"], **options)
    if scheme in ("mqtt", "mqtts"):
        from ._mqtt import MqttSink
        return MqttSink(**{**fields, **options})
    from ._http import HttpSink
    return HttpSink(fields["url"], **options)
