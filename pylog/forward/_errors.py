"""Exceptions of the forwarders (all derive from :class:`pylog.PylogError`)::

    PylogError
    ├── RetryableError          a sink: not confirmed now; send again later
    ├── RejectedError           a sink: the upstream refused records for good
    ├── UpstreamError           the upstream cannot be reached (sink.check)
    └── ForwarderError          a forwarder cannot do what was asked
        └── ForwarderFailedError    ... because it failed (``error`` says why)

Sinks raise the first two from ``send(records)``; any other exception from
``send`` counts as a refusal for good too (see Forwarder).
"""
from .._errors import PylogError


class RetryableError(PylogError):
    """The upstream did not confirm the records (connection lost, timeout,
    overloaded): the forwarder backs off and sends them again.

    retry_after: seconds the upstream asked to wait (HTTP ``Retry-After``),
    or None. records: the records of the send still unconfirmed, in their
    order (every other one of the send is confirmed); None: all of them.
    """

    def __init__(self, message, *, retry_after=None, records=None):
        super().__init__(message)
        self.retry_after = retry_after
        self.records = records


class RejectedError(PylogError):
    """The upstream refused records for good (HTTP 4xx, a Kafka record too
    large or not authorized): they go to the dead-letter topic, or the
    forwarder stops.

    records: the records refused (every other one of the send is
    confirmed); None: the whole send. reasons: when given, one message per
    record of records (what the upstream said of each). isolate: the
    upstream refused these records as a whole because of some of them that
    the sink cannot name (HTTP 400 for one bad line of a batch): the
    forwarder sends them again in smaller parts to find those, so that
    only they are dead-lettered.
    """

    def __init__(self, message, *, records=None, reasons=None,
                 isolate=False):
        super().__init__(message)
        self.records = records
        self.reasons = reasons
        self.isolate = isolate


class UpstreamError(PylogError):
    """The upstream cannot be reached or refused the connection."""


class ForwarderError(PylogError):
    """A forwarder cannot do what was asked (start twice, stop twice, ...)."""


class ForwarderFailedError(ForwarderError):
    """The forwarder stopped on an error it cannot retry (``error``)."""

    def __init__(self, message, error=None):
        super().__init__(message)
        self.error = error
