"""Exceptions raised by pylog.

Every exception derives from :class:`PylogError`; where a builtin fits, the
class inherits it too, so ``except ValueError`` keeps working::

    PylogError
    ├── InvalidTopicName          (ValueError)   name not [A-Za-z0-9._-]{1,249}
    ├── InvalidConfigError        (ValueError)   bad option or option value
    ├── InvalidRecordError        (TypeError)    value/key/headers of a wrong type
    ├── RecordTooLargeError       (ValueError)   over max_record_bytes
    ├── OffsetOutOfRangeError     (IndexError)   offset < start_offset or >= end_offset
    ├── TopicNotFoundError        (KeyError)     delete of a topic that does not exist
    ├── GroupNotFoundError        (KeyError)     delete of a group that does not exist
    ├── GroupInUseError                          the group has an open consumer already
    ├── ClosedError               (ValueError)   use of a closed Log or Topic
    ├── LogLockedError            (OSError)      the directory is open elsewhere
    ├── FormatVersionError                       files written by another format version
    ├── CorruptionError                          a checksum or structure check failed
    ├── LogFullError                             max_bytes reached (on_full reject/block)
    ├── DataLossError                            records were removed unread or lost
    ├── NotALogError                             the path holds something that is not a log
    └── PylogIOError              (OSError)      the OS refused a file operation
        ├── DiskFullError                        ... with ENOSPC
        ├── ReadOnlyError                        a write through a read-only log (or EROFS)
        └── LogFailedError                       an fsync failed earlier: reopen the log

Messages name the topic, the offset and the file involved.
"""


from collections import namedtuple


class PylogError(Exception):
    """Base class of every pylog error."""


Gap = namedtuple("Gap", "topic from_offset to_offset reason",
                 defaults=("retention",))
Gap.__doc__ = (
    "Records [from_offset, to_offset) of topic are gone. reason: "
    "'retention' (removed by retention or the max_bytes cap before they "
    "were read), 'lost' (lost to a power cut or a file removed by hand), "
    "or 'position lost' (the catalog lost the group's position: it "
    "restarted at to_offset per its start policy; records from "
    "from_offset may come again or, with start='latest', be skipped).")


class InvalidTopicName(PylogError, ValueError):
    pass


class InvalidConfigError(PylogError, ValueError):
    pass


class InvalidRecordError(PylogError, TypeError):
    pass


class RecordTooLargeError(PylogError, ValueError):
    pass


class OffsetOutOfRangeError(PylogError, IndexError):
    pass


class TopicNotFoundError(PylogError, KeyError):
    def __str__(self):  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class GroupNotFoundError(TopicNotFoundError):
    pass


class GroupInUseError(PylogError):
    """A consumer group is used by one consumer (or forwarder) at a time."""


class ClosedError(PylogError, ValueError):
    pass


class LogLockedError(PylogError, OSError):
    pass


class FormatVersionError(PylogError):
    pass


class CorruptionError(PylogError):
    pass


class LogFullError(PylogError):
    pass


class DataLossError(PylogError):
    """Records are gone: a consumer with on_gap="raise" met a gap, or a read
    met a lost range (a power cut or a file removed by hand); ``gap`` says
    what (topic, from_offset, to_offset, reason)."""

    def __init__(self, message, gap=None):
        super().__init__(message)
        self.gap = gap


class NotALogError(PylogError):
    """pylog.open() of a path that holds something other than a pylog log
    (a regular file, a directory of other files); nothing was changed."""


class PylogIOError(PylogError, OSError):
    pass


class ReadOnlyError(PylogIOError):
    """A write through a log opened with readonly=True, or on a read-only
    file system."""


class DiskFullError(PylogIOError):
    pass


class LogFailedError(PylogIOError):
    pass
