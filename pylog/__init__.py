"""pylog: an embedded, single-process log library -- SQLite for streams.

    import pylog
    with pylog.open("buffer/") as log:
        t = log.topic("sensors")
        off = t.append(b"21.5", key=b"dev-7")
        for rec in t.read(0):
            print(rec.offset, rec.value)
"""
from ._errors import (ClosedError, CorruptionError, DiskFullError,
                      FormatVersionError, InvalidConfigError,
                      InvalidRecordError, InvalidTopicName, LogFailedError,
                      LogLockedError, OffsetOutOfRangeError, PylogError,
                      PylogIOError, RecordTooLargeError, TopicNotFoundError)
from ._log import Log, open
from ._topic import Record, Topic

__version__ = "0.1.0"

__all__ = [
    "open", "Log", "Topic", "Record",
    "PylogError", "InvalidTopicName", "InvalidConfigError",
    "InvalidRecordError", "RecordTooLargeError", "OffsetOutOfRangeError",
    "TopicNotFoundError", "ClosedError", "LogLockedError",
    "FormatVersionError", "CorruptionError", "PylogIOError", "DiskFullError",
    "LogFailedError",
]
