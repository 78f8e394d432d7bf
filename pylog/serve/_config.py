"""The config file of ``pylog serve``: TOML, checked whole before anything
runs. Its shape::

    log = "/var/lib/gateway/buffer"      # required: the log directory
    sync = "interval"                    # pylog.open options by name

    [topics.sensors]                     # topic options by name
    max_bytes = 67108864

    [[ingest]]                           # any number
    topic = "sensors"                    # or a list (HTTP)
    source = "mqtt://127.0.0.1:1883"     # mqtt://, mqtts://, http://, https://
    topics = ["sensors/#"]               # then the source's options and
    key = "{mqtt_topic}"                 # log.ingest's, by name

    [[forward]]                          # any number
    name = "cloud"
    topics = ["sensors"]
    to = "kafka://broker:9092/{topic}"   # the URLs of pylog forward --to
    priority = 0                         # then log.forwarder's and the
                                         # sink's options, by name
    [forwarders]
    max_bytes_per_s = 64000              # the cap all forwarders share

    [status]
    listen = "127.0.0.1:9100"            # JSON at /, Prometheus at /metrics

    [serve]
    flush_timeout = 10.0                 # seconds forwarders get at stop

Every mistake is a ConfigError naming the file and the key (or the URL):
an unknown key, a wrong type or value, a bad URL, no ``log``. Sources and
sinks are made here (nothing connects until they start), so their own
checks run before the log is opened.
"""
import inspect
import sys
import urllib.parse

from .._errors import InvalidConfigError, PylogError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

OPEN_KEYS = ("sync", "sync_interval_ms")
INGEST_KEYS = ("topic", "source", "name", "key", "batch_records",
               "linger_ms", "dead_letter_topic", "ack")
FORWARD_KEYS = ("name", "topics", "to", "batch_records", "batch_bytes",
                "linger_ms", "priority", "max_bytes_per_s",
                "retry_backoff_ms", "max_retries", "dead_letter_topic",
                "start")
SECTIONS = ("topics", "ingest", "forward", "forwarders", "status", "serve")
DEFAULT_FLUSH_TIMEOUT = 10.0


class ConfigError(PylogError):
    """A mistake in the config file: the message names the file and key."""


class IngestSpec:
    """One [[ingest]]: what log.ingest gets."""

    def __init__(self, where, topic, source, options):
        self.where, self.topic, self.source = where, topic, source
        self.options = options


class ForwardSpec:
    """One [[forward]]: what log.forwarder gets."""

    def __init__(self, where, name, topics, sink, options):
        self.where, self.name, self.topics = where, name, topics
        self.sink, self.options = sink, options


class Config:
    """A checked config file."""

    def __init__(self, path):
        self.path = path
        self.log = None
        self.open_options = {}
        self.topics = {}       # name -> topic options
        self.ingests = []      # IngestSpec
        self.forwards = []     # ForwardSpec
        self.max_bytes_per_s = None
        self.status = None     # (host, port) or None
        self.flush_timeout = DEFAULT_FLUSH_TIMEOUT

    def error(self, key, message):
        return ConfigError(f"{self.path}: {key}: {message}")

    def close(self):
        """Release the sinks and sources made (after an error)."""
        for f in self.forwards:
            close = getattr(f.sink, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:  # noqa: BLE001 - nothing ran yet
                    pass


def _params(cls, skip):
    """The option names cls's constructor takes, except skip."""
    return [p for p in inspect.signature(cls.__init__).parameters
            if p not in ("self",) + tuple(skip)]


def _type_name(v):
    return {str: "a string", int: "an integer", float: "a number",
            bool: "a boolean", list: "an array", dict: "a table"}.get(
                type(v), type(v).__name__)


def _table(cfg, value, key):
    if not isinstance(value, dict):
        raise cfg.error(key, f"must be a table, not {_type_name(value)}")
    return value


def _unknown(cfg, key, table, known):
    extra = sorted(set(table) - set(known))
    if extra:
        raise cfg.error(f"{key}.{extra[0]}",
                        f"unknown key (known: {', '.join(sorted(known))})")


def _required(cfg, key, table, name, types, what):
    if name not in table:
        raise cfg.error(key, f"{name} is required ({what})")
    v = table[name]
    if not isinstance(v, types) or isinstance(v, bool):
        raise cfg.error(f"{key}.{name}", f"must be {what}, not "
                                         f"{_type_name(v)} {v!r}")
    return v


def _names(cfg, key, v):
    """A str or a list of str."""
    if isinstance(v, str):
        return v
    if isinstance(v, list) and v and all(isinstance(x, str) for x in v):
        return v
    raise cfg.error(key, f"must be a topic name or an array of names, not "
                         f"{_type_name(v)} {v!r}")


def _wrap(cfg, key, fn, *args, **kw):
    """fn(...), with its InvalidConfigError/TypeError/ValueError as a
    ConfigError for key."""
    try:
        return fn(*args, **kw)
    except ConfigError:
        raise
    except ImportError as exc:
        raise cfg.error(key, str(exc)) from None
    except (InvalidConfigError, TypeError, ValueError) as exc:
        raise cfg.error(key, str(exc)) from None


def _hostport(cfg, key, text, default=None):
    parts = urllib.parse.urlsplit("//" + text)
    try:
        port = parts.port
    except ValueError:
        raise cfg.error(key, f"bad port in {text!r}") from None
    if not parts.hostname or parts.path or parts.query or parts.username:
        raise cfg.error(key, f"expected HOST:PORT, not {text!r}")
    if port is None and default is None:
        raise cfg.error(key, f"expected HOST:PORT, not {text!r} (no port)")
    return parts.hostname, port if port is not None else default


def _source(cfg, key, url, options):
    """An MqttSource or HttpSource from a source URL and its options."""
    from ..ingest import HttpSource, MqttSource
    bad = f"bad source URL {url!r}: "
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("mqtt", "mqtts", "http", "https"):
        raise cfg.error(key, bad + "expected mqtt://, mqtts://, http:// or "
                                   "https://HOST:PORT")
    parts = urllib.parse.urlsplit(url)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise cfg.error(key, bad + "no path or query (the MQTT topic "
                                   "filters go in topics = [...], the HTTP "
                                   "path is /topics/NAME)")
    try:
        port = parts.port
    except ValueError:
        raise cfg.error(key, bad + "bad port") from None
    if not parts.hostname:
        raise cfg.error(key, bad + "no host")
    mqtt = scheme.startswith("mqtt")
    default = {"mqtt": 1883, "mqtts": 8883, "http": 80, "https": 443}[scheme]
    fields = {"host": parts.hostname,
              "port": default if port is None else port}
    if parts.username is not None:
        if not mqtt:
            raise cfg.error(key, bad + "no user in an HTTP source URL (use "
                                       "token = ...)")
        fields["username"] = urllib.parse.unquote(parts.username)
        if parts.password is not None:
            fields["password"] = urllib.parse.unquote(parts.password)
    cls = MqttSource if mqtt else HttpSource
    if scheme == "mqtts" and "tls" not in options:
        fields["tls"] = True
    if scheme == "https" and "tls" not in options:
        raise cfg.error(key, "an https:// source needs tls = {certfile = "
                             "..., keyfile = ...}")
    if scheme == "http" and "tls" in options:
        raise cfg.error(key, "tls is given: use an https:// source URL")
    return cls, fields


def _ingest(cfg, i, entry):
    key = f"ingest[{i}]"
    entry = _table(cfg, entry, key)
    url = _required(cfg, key, entry, "source", str, "a URL such as "
                    "mqtt://127.0.0.1:1883 or http://127.0.0.1:8080")
    topic = _names(cfg, f"{key}.topic", entry.get("topic")) \
        if "topic" in entry else None
    if topic is None:
        raise cfg.error(key, "topic is required (the topic to append to)")
    rest = {k: v for k, v in entry.items() if k not in ("source", "topic")}
    cls, fields = _source(cfg, f"{key}.source", url, rest)
    src_keys = _params(cls, ("host", "port"))
    _unknown(cfg, key, rest, set(src_keys) | set(INGEST_KEYS) - {
        "topic", "source"})
    src_opts = {k: v for k, v in rest.items() if k in src_keys}
    ing_opts = {k: v for k, v in rest.items() if k not in src_keys}
    source = _checked(cfg, key, rest, cls, {**fields, **src_opts})
    from ..ingest._ingest import check_options
    _checked(cfg, key, rest, lambda **kw: check_options(topic, source, **kw),
             ing_opts)
    return IngestSpec(key, topic, source, ing_opts)


def _checked(cfg, key, table, fn, kwargs):
    """fn(**kwargs); a ConfigError naming the key the message is about
    when one of table's keys is named first in it, else the table."""
    try:
        return fn(**kwargs)
    except ImportError as exc:
        raise cfg.error(key, str(exc)) from None
    except (InvalidConfigError, TypeError, ValueError) as exc:
        msg = str(exc)
        named = [k for k in table if msg.startswith(k + " ")
                 or msg.startswith(k + "=")]
        raise cfg.error(f"{key}.{named[0]}" if named else key,
                        msg) from None


def _forward(cfg, i, entry):
    from ..forward import _url
    key = f"forward[{i}]"
    entry = _table(cfg, entry, key)
    name = _required(cfg, key, entry, "name", str, "a string: the "
                     "forwarder's name, its consumer group")
    if "topics" not in entry:
        raise cfg.error(key, "topics is required (the topics to forward)")
    topics = _names(cfg, f"{key}.topics", entry["topics"])
    url = _required(cfg, key, entry, "to", str, "an upstream URL such as "
                    "kafka://HOST:9092/{topic}")
    try:
        scheme, _ = _url.parse(url)
    except InvalidConfigError as exc:
        raise cfg.error(f"{key}.to", str(exc)) from None
    from ..forward import HttpSink, KafkaSink, MqttSink
    cls = {"kafka": KafkaSink, "mqtt": MqttSink, "mqtts": MqttSink,
           "http": HttpSink, "https": HttpSink}[scheme]
    sink_keys = set(_params(cls, ("host", "port", "topic", "url")))
    rest = {k: v for k, v in entry.items() if k not in ("name", "topics",
                                                         "to")}
    _unknown(cfg, key, rest, sink_keys | set(FORWARD_KEYS) - {
        "name", "topics", "to"})
    sink_opts = {k: v for k, v in rest.items() if k in sink_keys}
    fw_opts = {k: v for k, v in rest.items() if k not in sink_keys}
    if "retry_backoff_ms" in fw_opts and isinstance(
            fw_opts["retry_backoff_ms"], list):
        fw_opts["retry_backoff_ms"] = tuple(fw_opts["retry_backoff_ms"])
    sink = _checked(cfg, key, rest, lambda **kw: _url.sink_from_url(
        url, **kw), sink_opts)
    from ..forward._forwarder import check_options
    try:
        _checked(cfg, key, rest, lambda **kw: check_options(
            name, topics, sink, **kw), fw_opts)
    except BaseException:
        sink.close()
        raise
    return ForwardSpec(key, name, topics, sink, fw_opts)


def _top(cfg, data):
    from .._log import TOPIC_DEFAULTS, check_config
    known = ("log",) + OPEN_KEYS + tuple(TOPIC_DEFAULTS) + SECTIONS
    _unknown_top = sorted(set(data) - set(known))
    if _unknown_top:
        raise cfg.error(_unknown_top[0], "unknown key (known: log, "
                        "pylog.open options " + ", ".join(
                            OPEN_KEYS + tuple(sorted(TOPIC_DEFAULTS)))
                        + ", and the tables " + ", ".join(SECTIONS) + ")")
    if "log" not in data:
        raise cfg.error("log", "required: the log directory, such as "
                               "log = \"/var/lib/gateway/buffer\"")
    if not isinstance(data["log"], str) or not data["log"]:
        raise cfg.error("log", f"must be a directory path, not "
                               f"{_type_name(data['log'])} {data['log']!r}")
    cfg.log = data["log"]
    opts = {k: v for k, v in data.items()
            if k in OPEN_KEYS or k in TOPIC_DEFAULTS}
    if "sync" in opts and opts["sync"] not in ("none", "interval", "always"):
        raise cfg.error("sync", f"must be 'none', 'interval' or 'always', "
                                f"not {opts['sync']!r}")
    si = opts.get("sync_interval_ms", 1)
    if isinstance(si, bool) or not isinstance(si, int) or si < 1:
        raise cfg.error("sync_interval_ms", f"must be an integer >= 1, not "
                                            f"{si!r}")
    defaults = {k: v for k, v in opts.items() if k in TOPIC_DEFAULTS}
    for k, v in defaults.items():
        _wrap(cfg, k, check_config, {k: v})
    cfg.open_options = opts
    for name, topt in _table(cfg, data.get("topics", {}), "topics").items():
        from .._log import check_topic_name
        _wrap(cfg, f"topics.{name}", check_topic_name, name)
        topt = _table(cfg, topt, f"topics.{name}")
        for k, v in topt.items():
            _wrap(cfg, f"topics.{name}.{k}", check_config, {k: v})
        cfg.topics[name] = topt


def _sections(cfg, data):
    fws = _table(cfg, data.get("forwarders", {}), "forwarders")
    _unknown(cfg, "forwarders", fws, ("max_bytes_per_s",))
    if "max_bytes_per_s" in fws:
        from ..forward._budget import check_rate
        cfg.max_bytes_per_s = _wrap(cfg, "forwarders.max_bytes_per_s",
                                    check_rate, fws["max_bytes_per_s"])
    status = _table(cfg, data.get("status", {}), "status")
    _unknown(cfg, "status", status, ("listen",))
    if "listen" in status:
        v = status["listen"]
        if not isinstance(v, str):
            raise cfg.error("status.listen", f"must be \"HOST:PORT\", not "
                                             f"{_type_name(v)} {v!r}")
        cfg.status = _hostport(cfg, "status.listen", v)
    serve = _table(cfg, data.get("serve", {}), "serve")
    _unknown(cfg, "serve", serve, ("flush_timeout",))
    if "flush_timeout" in serve:
        v = serve["flush_timeout"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise cfg.error("serve.flush_timeout",
                            f"must be seconds >= 0, not {v!r}")
        cfg.flush_timeout = float(v)


def _array(cfg, data, name):
    v = data.get(name, [])
    if not isinstance(v, list):
        raise cfg.error(name, f"must be an array of tables ([[{name}]]), "
                              f"not {_type_name(v)}")
    return v


def load(path):
    """The checked Config of the file at path; ConfigError if it has a
    mistake (the message names the file and the key)."""
    cfg = Config(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        _top(cfg, data)
        _sections(cfg, data)
        for i, entry in enumerate(_array(cfg, data, "ingest")):
            cfg.ingests.append(_ingest(cfg, i, entry))
        for i, entry in enumerate(_array(cfg, data, "forward")):
            cfg.forwards.append(_forward(cfg, i, entry))
        _unique(cfg)
        _forwarded_topics(cfg)
    except BaseException:
        cfg.close()
        raise
    return cfg


def _unique(cfg):
    names = {}
    for spec in cfg.ingests:
        topics = spec.topic if isinstance(spec.topic, list) else [spec.topic]
        name = spec.options.get("name") or \
            f"{topics[0]}-{spec.source.scheme}"
        if name in names:
            raise cfg.error(f"{spec.where}.name", f"ingest name {name!r} is "
                            f"also the name of {names[name]}: give each "
                            "[[ingest]] its own name")
        names[name] = spec.where
    seen = {}
    for spec in cfg.forwards:
        if spec.name in seen:
            raise cfg.error(f"{spec.where}.name", f"forwarder name "
                            f"{spec.name!r} is also the name of "
                            f"{seen[spec.name]}")
        seen[spec.name] = spec.where


def _forwarded_topics(cfg):
    """Every forwarded topic must be declared, ingested into, or (checked
    once the log is open) in the log: a log that does not exist yet has
    none."""
    import os
    known = set(cfg.topics)
    for spec in cfg.ingests:
        known.update([spec.topic] if isinstance(spec.topic, str)
                     else spec.topic)
    if os.path.isdir(os.path.join(cfg.log, "catalog")):
        return
    for spec in cfg.forwards:
        for t in [spec.topics] if isinstance(spec.topics, str) \
                else spec.topics:
            if t not in known:
                raise cfg.error(
                    f"{spec.where}.topics",
                    f"no topic {t!r}: declare it ([topics.{t}]) or ingest "
                    f"into it (the log {cfg.log} does not exist yet)")
