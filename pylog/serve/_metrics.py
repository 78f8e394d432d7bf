"""The status of a running ``pylog serve`` as Prometheus metrics, in the
text exposition format (version 0.0.4): for each metric a ``# HELP`` and a
``# TYPE`` line, then ``name{label="value",...} number`` samples; label
values escape backslash, double quote and line feed, HELP text backslash
and line feed. Counters end in ``_total``; a state is one gauge per
possible state, 1 for the current one.
"""
from ..forward._forwarder import STATES as FORWARDER_STATES
from ..ingest._ingest import STATES as INGEST_STATES

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

INGEST_COUNTERS = (
    ("received", "records received from the source"),
    ("appended", "records appended to the topic"),
    ("acked", "records acknowledged to the source after their append"),
    ("rejected", "records refused for good (too large, malformed)"),
    ("dead_lettered", "metadata records written to the dead-letter topic"),
    ("dropped", "QoS 0 messages dropped while the topic was full"),
    ("deferred", "records answered 503 or 500 (the client sends again)"),
    ("full", "appends that found the topic or the disk full"),
    ("batches", "append_batch calls"),
)
FORWARD_COUNTERS = (
    ("sent_records", "records confirmed by the upstream"),
    ("sent_bytes", "bytes (keys, values, headers) confirmed upstream"),
    ("batches", "batches confirmed upstream"),
    ("retries", "sends retried after a retryable failure"),
    ("dead_lettered", "records refused upstream, sent to the dead-letter "
                      "topic"),
    ("gaps", "gaps retention cut into the backlog"),
)
TOPIC_COUNTERS = (
    ("appended_records", "records appended since the log was opened"),
    ("appended_bytes", "bytes appended since the log was opened"),
    ("retention_dropped_records", "records deleted by retention"),
    ("full_dropped_records", "records deleted by on_full=drop_oldest"),
    ("rejected_records", "records refused because the topic was full"),
)
TOPIC_GAUGES = (
    ("start_offset", "first offset retained"),
    ("end_offset", "next offset to be written"),
    ("durable_offset", "every offset below it survives a power cut"),
    ("segments", "segment files"),
    ("bytes_on_disk", "bytes of the topic's files"),
)


def _escape_label(v):
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace(
        "\n", "\\n")


def _escape_help(v):
    return v.replace("\\", "\\\\").replace("\n", "\\n")


def _number(v):
    if v is None:
        return "NaN"
    if isinstance(v, bool):
        return "1" if v else "0"
    return repr(v) if isinstance(v, float) else str(int(v))


class _Out:
    def __init__(self):
        self.lines = []

    def metric(self, name, kind, help_text, samples):
        """samples: [(labels dict, value)]; nothing if there is none."""
        if not samples:
            return
        self.lines.append(f"# HELP {name} {_escape_help(help_text)}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lab = ",".join(f'{k}="{_escape_label(v)}"'
                           for k, v in labels.items())
            self.lines.append(f"{name}{{{lab}}} {_number(value)}"
                              if lab else f"{name} {_number(value)}")


def render(status):
    """The exposition text of a status dict (as the JSON endpoint serves
    it: ingests, forwarders, topics by name)."""
    out = _Out()
    ingests = status.get("ingests", {})
    for field, text in INGEST_COUNTERS:
        out.metric(f"pylog_ingest_{field}_total", "counter", f"Ingest: {text}",
                   [({"ingest": n}, s[field]) for n, s in ingests.items()])
    out.metric("pylog_ingest_in_flight", "gauge",
               "Ingest: records received and not yet acknowledged",
               [({"ingest": n}, s["in_flight"]) for n, s in ingests.items()])
    out.metric("pylog_ingest_state", "gauge",
               "Ingest: 1 for its current state",
               [({"ingest": n, "state": st}, s["state"] == st)
                for n, s in ingests.items() for st in INGEST_STATES])
    fws = status.get("forwarders", {})
    for field, text in FORWARD_COUNTERS:
        out.metric(f"pylog_forwarder_{field}_total", "counter",
                   f"Forwarder: {text}",
                   [({"forwarder": n}, s[field]) for n, s in fws.items()])
    out.metric("pylog_forwarder_in_flight", "gauge",
               "Forwarder: records sent and not yet confirmed",
               [({"forwarder": n}, s["in_flight"]) for n, s in fws.items()])
    out.metric("pylog_forwarder_lag", "gauge",
               "Forwarder: records appended and not yet confirmed upstream",
               [({"forwarder": n, "topic": t}, lag) for n, s in fws.items()
                for t, lag in s["lag"].items()])
    out.metric("pylog_forwarder_last_success_timestamp_seconds", "gauge",
               "Forwarder: when the upstream last confirmed a batch",
               [({"forwarder": n}, s["last_success_ms"] / 1000.0)
                for n, s in fws.items() if s["last_success_ms"] is not None])
    out.metric("pylog_forwarder_state", "gauge",
               "Forwarder: 1 for its current state",
               [({"forwarder": n, "state": st}, s["state"] == st)
                for n, s in fws.items() for st in FORWARDER_STATES])
    topics = status.get("topics", {})
    for field, text in TOPIC_COUNTERS:
        out.metric(f"pylog_topic_{field}_total", "counter", f"Topic: {text}",
                   [({"topic": n}, s[field]) for n, s in topics.items()])
    for field, text in TOPIC_GAUGES:
        out.metric(f"pylog_topic_{field}", "gauge", f"Topic: {text}",
                   [({"topic": n}, s[field]) for n, s in topics.items()])
    return "\n".join(out.lines) + "\n"
