"""What every sink shares: the sink protocol, optional client libraries,
record sizes and topic templates.

A sink is any object with ``send(records)``: it returns once every record
is safe upstream, raises RetryableError (send again later) or
RejectedError / anything else (refused for good). It is called from the
forwarder's thread only. Optional methods, used when present:

- ``check(timeout)``: raise UpstreamError if the upstream cannot be reached
  now (the command line calls it before it starts);
- ``interrupt()``: make a blocked ``send`` return soon by raising
  RetryableError (``Forwarder.stop`` calls it once its timeout is over);
- ``close()``: release connections (called once, when the forwarder stops);
- ``begin(records)``: send in two halves, returning ``finish()``, which
  returns or raises as ``send`` would; the forwarder calls it once,
  before any other call of the sink, having polled its next batch in
  between (HttpSink: begin writes the request, finish reads the answer);
- ``prepare(records)``: with begin, called in that gap on the next batch
  when it is full, before ``begin`` gets that same list (HttpSink: encodes
  its body). A hint: begin must work without it.
"""
import importlib
import string

from .._errors import InvalidConfigError
from .._records import weigh as _weigh


def require(module, extra, what):
    """Import an optional client library, or say which extra brings it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{what} needs the {module.split('.')[0]} package: "
            f'pip install "pylog[{extra}]"', name=module) from exc


def check_sink(sink):
    if not callable(getattr(sink, "send", None)):
        raise TypeError(
            f"a sink needs a send(records) method; {type(sink).__name__} "
            "has none (use KafkaSink, MqttSink, HttpSink or an object with "
            "send)")
    return sink


def check_known(options, known, what):
    """InvalidConfigError for keys of options not in known."""
    unknown = set(options) - set(known)
    if unknown:
        raise InvalidConfigError(
            f"unknown {what}(s) {sorted(unknown)} (known: "
            f"{', '.join(sorted(known))})")
    return options


def check_seconds(value, what):
    """A number of seconds > 0, or InvalidConfigError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not value > 0:
        raise InvalidConfigError(f"{what} must be a number > 0, not "
                                 f"{value!r}")
    return float(value)


def batch_bytes_py(records):
    """The bytes records weigh for budgets and stats: keys, values, header
    names and values. The reference for pylog._records.weigh (C), which
    batch_bytes uses for Records."""
    n = 0
    for r in records:
        n += len(r.value)
        k = r.key
        if k is not None:
            n += len(k)
        h = r.headers
        if h:
            for name, v in h:
                n += len(name) + (0 if v is None else len(v))
    return n


def batch_bytes(records):
    """The bytes records weigh (see batch_bytes_py): in C for Records, in
    Python for anything else."""
    try:
        return _weigh(records)
    except TypeError:
        return batch_bytes_py(records)


class Template:
    """A destination name such as ``gw/{topic}`` with the fields allowed."""

    def __init__(self, text, fields, what):
        if not isinstance(text, str) or not text:
            raise InvalidConfigError(f"{what} must be a non-empty str, not "
                                     f"{text!r}")
        used = set()
        try:
            for _, name, spec, conv in string.Formatter().parse(text):
                if name is None:
                    continue
                if name not in fields or spec or conv:
                    raise InvalidConfigError(
                        f"{what} {text!r}: unknown field {{{name}}} (known: "
                        + ", ".join("{" + f + "}" for f in fields) + ")")
                used.add(name)
        except ValueError as exc:
            raise InvalidConfigError(f"{what} {text!r}: {exc}") from None
        self.text = text
        self.fields = used
        self.static = None if used else text

    def render(self, **values):
        if self.static is not None:
            return self.static
        return self.text.format_map(values)

    def __repr__(self):
        return repr(self.text)
