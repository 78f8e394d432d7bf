"""pylog: an embedded, single-process log library -- SQLite for streams.

    import pylog
    with pylog.open("buffer/") as log:
        t = log.topic("sensors")
        off = t.append(b"21.5", key=b"dev-7")
        for rec in t.read(0):
            print(rec.offset, rec.value)
"""
from ._consumer import Consumer
from ._errors import (ClosedError, CorruptionError, DataLossError,
                      DiskFullError, FormatVersionError, GroupInUseError,
                      GroupNotFoundError,
                      InvalidConfigError, InvalidRecordError, InvalidTopicName,
                      Gap, LogFailedError, LogFullError, LogLockedError,
                      NotALogError, OffsetOutOfRangeError, PylogError,
                      PylogIOError, ReadOnlyError, RecordTooLargeError,
                      TopicNotFoundError)
from ._log import Log, open
from ._topic import Record, Topic

__version__ = "0.1.0"

__all__ = [
    "open", "Log", "Topic", "Record", "Consumer", "Gap",
    "PylogError", "InvalidTopicName", "InvalidConfigError",
    "InvalidRecordError", "RecordTooLargeError", "OffsetOutOfRangeError",
    "TopicNotFoundError", "GroupNotFoundError", "GroupInUseError",
    "ClosedError",
    "LogLockedError", "LogFullError", "DataLossError", "NotALogError",
    "ReadOnlyError",
    "FormatVersionError", "CorruptionError", "PylogIOError", "DiskFullError",
    "LogFailedError",
]
