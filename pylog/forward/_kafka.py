"""KafkaSink: records to Apache Kafka through confluent-kafka (librdkafka).

- The producer is idempotent with acks=all: librdkafka's own retries after
  a broker blip neither duplicate nor reorder records.
- message.timeout.ms is 0 (no limit) unless configured: a record never
  times out inside librdkafka, where a timeout could let later records of
  its partition through first. Instead ``send`` waits delivery_timeout
  seconds for the delivery reports, then purges what is still unconfirmed
  (in the queue or in flight) and raises RetryableError for it; the
  forwarder sends those records again, in order, after its backoff.
  Delivery reports of a partition arrive in order, so what is confirmed
  is a prefix of each partition and a retry keeps the order (a purged
  record the broker had written comes twice: at-least-once).
- Key, value, headers and timestamp carry over; the destination topic is
  the ``topic`` template (``{topic}`` is the pylog topic). The partitioner
  is murmur2_random, the Java client's, so a key lands where a Java
  producer would put it.
- A record the cluster refuses for good (too large, not authorized, an
  invalid record or topic) is reported with RejectedError, the others of
  the send being confirmed; a fatal producer error makes a new producer.
"""
import collections
import itertools
import logging
import operator
import threading
import time

from .._errors import InvalidConfigError
from .._records import kafka_args as _kafka_args
from ._errors import RejectedError, RetryableError, UpstreamError
from ._sink import Template, check_seconds, require

log = logging.getLogger("pylog.forward.kafka")

DEFAULTS = {
    "enable.idempotence": True,
    "acks": "all",
    "message.timeout.ms": 0,
    "partitioner": "murmur2_random",
    "linger.ms": 5,
    "delivery.report.only.error": True,  # see KafkaSink._send
}
# Errors that no retry can fix: the records go to the dead-letter topic.
REFUSED = (
    "MSG_SIZE_TOO_LARGE", "_MSG_SIZE_TOO_LARGE", "RECORD_LIST_TOO_LARGE",
    "INVALID_RECORD", "CORRUPT_MESSAGE", "INVALID_TIMESTAMP",
    "TOPIC_AUTHORIZATION_FAILED", "CLUSTER_AUTHORIZATION_FAILED",
    "TOPIC_EXCEPTION", "INVALID_TOPIC_EXCEPTION", "POLICY_VIOLATION",
    "_INVALID_ARG", "_INVALID_TYPE",
)
WAIT_SLICE_S = 0.2   # flush() slices: interrupt() is noticed this often


class _ClientLog:
    """librdkafka's log lines, to logger pylog.forward.kafka at DEBUG:
    during an outage it logs every failed connection, which the forwarder
    expects (its stats carry the last error)."""

    def log(self, level, fmt, *args):
        log.log(level if level >= logging.CRITICAL else logging.DEBUG,
                fmt, *args)


def _truthy(v):
    return v is True or str(v).lower() in ("true", "1")


class KafkaSink:
    """Send records to a Kafka cluster (``pip install "pylog[kafka]"``).

    config: librdkafka properties (bootstrap.servers, security, ...);
    topic: the destination, ``{topic}`` being the record's pylog topic;
    delivery_timeout: seconds a send waits for the cluster to confirm
    before it gives the rest back for a retry.
    """

    def __init__(self, config, topic="{topic}", *, delivery_timeout=30.0):
        self._ck = require("confluent_kafka", "kafka", "KafkaSink")
        if not isinstance(config, dict):
            raise TypeError(f"KafkaSink config must be a dict, not "
                            f"{type(config).__name__}")
        for k in config:
            if not isinstance(k, str):
                raise InvalidConfigError(
                    f"KafkaSink config keys must be str, not {k!r}")
        if not ("bootstrap.servers" in config
                or "test.mock.num.brokers" in config):
            raise InvalidConfigError(
                "KafkaSink config needs bootstrap.servers")
        conf = dict(DEFAULTS)
        conf.update(config)
        if not _truthy(conf["enable.idempotence"]):
            raise InvalidConfigError(
                "KafkaSink needs enable.idempotence=true: at-least-once in "
                "order relies on the idempotent producer")
        if str(conf["acks"]).lower() not in ("all", "-1"):
            raise InvalidConfigError(
                f"KafkaSink needs acks=all, not acks={conf['acks']!r}")
        check_seconds(delivery_timeout, "delivery_timeout")
        self.template = Template(topic, ("topic",), "KafkaSink topic")
        self.delivery_timeout = float(delivery_timeout)
        self._user_error_cb = conf.pop("error_cb", None)
        conf["error_cb"] = self._on_error
        # One delivery callback for the producer (not one per produce()
        # call); with delivery.report.only.error it hears of failures only.
        self._failed = []
        conf["on_delivery"] = self._on_delivery
        conf.setdefault("logger", _ClientLog())
        self._conf = conf
        self._dests = {}  # destination by pylog topic (the template's)
        self._interrupted = threading.Event()
        self._mu = threading.Lock()
        self.last_error = None
        self._producer = self._new_producer()  # validates every property

    def __repr__(self):
        return (f"<pylog.forward.KafkaSink "
                f"{self._conf.get('bootstrap.servers')!r} "
                f"topic={self.template!r}>")

    def _new_producer(self):
        try:
            return self._ck.Producer(self._conf)
        except (self._ck.KafkaException, TypeError, ValueError) as exc:
            err = exc.args[0] if exc.args else exc
            why = err.str() if hasattr(err, "str") else str(err)
            raise InvalidConfigError(f"KafkaSink config: {why}") from None

    def _on_delivery(self, err, msg):
        self._failed.append((err, msg))

    def _on_error(self, err):
        self.last_error = err
        if self._user_error_cb is not None:
            self._user_error_cb(err)

    # ---- the sink protocol -------------------------------------------------
    def check(self, timeout=10.0):
        """Raise UpstreamError unless the cluster answers within timeout."""
        try:
            md = self._producer.list_topics(timeout=timeout)
        except self._ck.KafkaException as exc:
            raise UpstreamError(
                f"cannot reach Kafka at {self._conf.get('bootstrap.servers')}"
                f": {exc.args[0].str()}") from None
        if not md.brokers:
            raise UpstreamError(
                f"Kafka at {self._conf.get('bootstrap.servers')} lists no "
                "brokers")

    def interrupt(self):
        self._interrupted.set()

    def close(self):
        with self._mu:
            p, self._producer = self._producer, None
        if p is not None:
            p.purge()
            p.flush(0)

    def _prepare(self, records):
        """The produce() arguments of records, all positional (topic, value,
        key, partition, callback, on_delivery, timestamp, headers): keyword
        arguments cost produce() about 0.4 us a record more. Built in C for
        Records (pylog._records.kafka_args), else by _prepare_py."""
        try:
            return _kafka_args(records, self._dests, self._dest_of)
        except TypeError:
            return self._prepare_py(records)

    def _dest_of(self, topic):
        return self.template.render(topic=topic)

    def _prepare_py(self, records):
        """_prepare in Python: the reference for kafka_args."""
        render, dests, out = self.template.render, {}, []
        put = out.append
        for r in records:
            dest = dests.get(r.topic)
            if dest is None:
                dest = dests[r.topic] = render(topic=r.topic)
            value = r.value  # values of 1 KiB and more are memoryviews
            if type(value) is not bytes:
                value = bytes(value)
            h = r.headers
            put((dest, value, r.key, -1, None, None, r.timestamp,
                 list(h) if h else None))
        return out

    def send(self, records):
        msgs = self._prepare(records)
        with self._mu:
            if self._producer is None:
                self._producer = self._new_producer()
            self._interrupted.clear()
            return self._send(self._producer, records, msgs)

    def _send(self, p, records, msgs):
        # Delivery reports come for failures only (delivery.report.only.
        # error): a record is confirmed once the queue is empty and no
        # report named it. A report names a message by its content.
        status = [True] * len(records)
        failed = self._failed = []
        produce = p.produce
        n = len(msgs)
        it = iter(msgs)
        while True:
            # produce() over the whole list in C (starmap drained by a
            # deque); an exception leaves `it` right after the record that
            # raised it, its index n - length_hint(it) - 1.
            try:
                collections.deque(itertools.starmap(produce, it), 0)
                break
            except BufferError:  # the local queue is full: let it drain
                i = n - operator.length_hint(it) - 1
                if not self._produce_one(p, msgs[i], status, i):
                    status[i:] = [None] * (n - i)  # interrupted: never sent
                    break
            except self._ck.KafkaException as exc:
                # e.g. larger than message.max.bytes
                status[n - operator.length_hint(it) - 1] = exc.args[0]
            except (TypeError, ValueError) as exc:
                status[n - operator.length_hint(it) - 1] = exc
        deadline = time.monotonic() + self.delivery_timeout
        purged = None
        while p.flush(WAIT_SLICE_S) > 0:
            if self._interrupted.is_set() or time.monotonic() >= deadline:
                # What is still out goes back to the forwarder; purging it
                # fires its delivery reports (_PURGE_*), so none comes later.
                purged = ("interrupted" if self._interrupted.is_set() else
                          f"not confirmed within {self.delivery_timeout:g}s")
                if self.last_error is not None:
                    purged += f" (last error: {self.last_error.str()})"
                p.purge()
                p.flush(0)
                break
        if failed:
            self._name_failures(msgs, status, failed)
        return self._outcome(p, records, status, purged)

    def _produce_one(self, p, args, status, i):
        """produce() one record, letting a full queue drain; False if
        interrupted before it was taken."""
        while not self._interrupted.is_set():
            try:
                p.produce(*args)
            except BufferError:
                p.poll(WAIT_SLICE_S)
                continue
            except self._ck.KafkaException as exc:
                status[i] = exc.args[0]
            except (TypeError, ValueError) as exc:
                status[i] = exc
            return True
        return False

    @staticmethod
    def _name_failures(msgs, status, failed):
        """Put each failure report on the record it is about (the first
        one not yet named with the same topic, key and value: records
        alike in all three are alike upstream too)."""
        where = {}
        for i, (dest, value, key, *_) in enumerate(msgs):
            if status[i] is True:
                where.setdefault((dest, key, value), []).append(i)
        for err, msg in failed:
            same = where.get((msg.topic(), msg.key(), msg.value()))
            if same:
                status[same.pop(0)] = err

    def _outcome(self, p, records, status, purged):
        if status.count(True) == len(status):  # all confirmed: no loop
            return
        retry, refused, reasons, fatal = [], [], [], None
        for r, st in zip(records, status):
            if st is True:
                continue
            if st is None:
                retry.append(r)
                continue
            name = getattr(st, "name", lambda: None)()
            if isinstance(st, self._ck.KafkaError) and st.fatal():
                fatal = st
                retry.append(r)
            elif name in REFUSED or not isinstance(st, self._ck.KafkaError):
                refused.append(r)
                reasons.append(st.str() if hasattr(st, "str") else str(st))
            else:
                retry.append(r)
        if fatal is not None:
            # The idempotent producer is unusable after a fatal error:
            # the next send makes a new one (a new producer id).
            log.warning("Kafka producer fatal error %s: making a new one",
                        fatal.str())
            self._producer = None
            p.purge()
            p.flush(0)
        if retry:
            why = fatal or next(
                (s for s in status if isinstance(s, self._ck.KafkaError)
                 and not s.name().startswith("_PURGE")), None)
            why = why.str() if why is not None else purged or "interrupted"
            # Refused records of the same send are sent again too (and
            # refused again): only a send's own outcome counts.
            again = {id(r) for r in retry + refused}
            raise RetryableError(
                f"Kafka did not confirm {len(retry)} of {len(records)} "
                f"record(s): {why}",
                records=[r for r in records if id(r) in again])
        if refused:
            raise RejectedError(
                f"Kafka refused {len(refused)} record(s): {reasons[0]}",
                records=refused, reasons=reasons)
