"""What ingest sources share: record keys from templates, the size a record
takes against max_record_bytes, and the checks of their options.

A source turns what it receives into (value, key, headers) triples:

- MQTT: the payload is the value; the headers are ``mqtt.topic`` (the MQTT
  topic) and the message's MQTT 5 user properties, in their order, each
  under its own name; the key is the ``key`` template given to
  ``log.ingest`` (``{mqtt_topic}``, ``{client_id}``, ``{topic}``).
- HTTP: the body (or each NDJSON line) is the value; ``X-Pylog-Key`` is the
  key (else the template: ``{client_id}``, ``{topic}``); every other
  ``X-Pylog-NAME`` request header is the header ``name`` (lower case).
"""
from .._errors import InvalidConfigError, RecordTooLargeError
from ..forward._sink import Template

MQTT_TOPIC_HEADER = "mqtt.topic"


class KeyTemplate:
    """A record key from a template such as ``{mqtt_topic}``; None: no key.

    fields: the names a source knows. A template that is exactly one field
    gives that field's bytes as they came (an MQTT topic is not decoded and
    encoded again for each message)."""

    def __init__(self, text, fields):
        self.text = text
        if text is None:
            self.kind, self.value = "none", None
            return
        t = Template(text, fields, "key")
        if t.static is not None:
            self.kind, self.value = "static", t.static.encode("utf-8")
        elif text in ("{" + f + "}" for f in fields):
            self.kind, self.value = "field", text[1:-1]
        else:
            self.kind, self.value = "format", t
        self.fields = t.fields

    def uses(self, field):
        return self.kind != "none" and field in self.fields

    def render(self, values):
        """The key (bytes or None) for a message; values maps each field
        the template uses to bytes or str."""
        kind = self.kind
        if kind == "field":
            v = values[self.value]
            return v.encode("utf-8") if isinstance(v, str) else bytes(v)
        if kind == "static" or kind == "none":
            return self.value
        text = {f: (v.decode("utf-8", "replace") if isinstance(v, bytes)
                    else v) for f, v in values.items()}
        return self.value.render(**text).encode("utf-8")

    def __repr__(self):
        return repr(self.text)


def record_size(value, key, headers):
    """The bytes a record counts against max_record_bytes: key, value and
    the encoded header block (per header 2 + name + 4 + value bytes)."""
    n = len(value) + (0 if key is None else len(key))
    for name, v in headers or ():
        n += 6 + len(name.encode("utf-8")) + (0 if v is None else len(v))
    return n


def too_large(size, limit, topic):
    return RecordTooLargeError(
        f"a record of {size} bytes (key, value and headers) exceeds "
        f"max_record_bytes={limit} of topic {topic!r}")


def check_int(value, what, low=1, high=None):
    if isinstance(value, bool) or not isinstance(value, int) or value < low \
            or (high is not None and value > high):
        span = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise InvalidConfigError(f"{what} must be an int {span}, not "
                                 f"{value!r}")
    return value


def check_str(value, what, none=True):
    if value is None and none:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidConfigError(
            f"{what} must be a non-empty str{' or None' if none else ''}, "
            f"not {value!r}")
    return value


def check_port(value, zero=False):
    """A TCP port; with zero, 0 too (listen on a port the system picks)."""
    return check_int(value, "port", 0 if zero else 1, 65535)
