"""Small files the log keeps beside its data, and how errors of the file
system reach the user.

A *record file* holds one small document (JSON) that must survive any
crash whole or not at all: ``MAGIC(8) | u32 length | JSON | u64 XXH64`` of
everything before the checksum. It is written to ``NAME.tmp``, fsynced,
renamed over ``NAME`` and the directory fsynced, so that when the write
returns the new content is durable, and after a crash at any point the
file holds the old content or the new one (docs/FORMAT.md).

Every OSError raised here is turned into a :class:`PylogIOError` (or
:class:`DiskFullError` for ENOSPC, :class:`ReadOnlyError` for EROFS) that
names the file.
"""
import contextlib
import errno
import json
import os
import struct

import xxhash

from . import _errors as E

_HEAD = struct.Struct("<8sI")
_SUM = struct.Struct("<Q")


def io_error(exc, what):
    """The pylog exception for OSError exc met while doing `what`."""
    if isinstance(exc, E.PylogError):
        return exc
    err = getattr(exc, "errno", None) or errno.EIO
    msg = f"{what}: {exc.strerror or exc}" if isinstance(exc, OSError) \
        else f"{what}: {exc}"
    if err == errno.ENOSPC or err == errno.EDQUOT:
        return E.DiskFullError(err, msg)
    if err == errno.EROFS:
        return E.ReadOnlyError(err, msg)
    return E.PylogIOError(err, msg)


@contextlib.contextmanager
def wrap_os(what):
    """Turn an OSError inside the block into a pylog error about `what`."""
    try:
        yield
    except E.PylogError:
        raise
    except OSError as exc:
        raise io_error(exc, what) from exc


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def encode(magic, doc):
    body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    head = _HEAD.pack(magic, len(body)) + body
    return head + _SUM.pack(xxhash.xxh64_intdigest(head))


def decode(magic, data):
    """The document in data, or None if it is not a valid record file."""
    if len(data) < _HEAD.size + _SUM.size:
        return None
    m, n = _HEAD.unpack_from(data)
    end = _HEAD.size + n
    if m != magic or len(data) != end + _SUM.size:
        return None
    if _SUM.unpack_from(data, end)[0] != xxhash.xxh64_intdigest(data[:end]):
        return None
    try:
        return json.loads(data[_HEAD.size:end])
    except ValueError:
        return None


def write_record(path, magic, doc):
    """Write doc durably to path (tmp file, fsync, rename, fsync dir)."""
    tmp = path + ".tmp"
    data = encode(magic, doc)
    with wrap_os(f"cannot write {path}"):
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                     0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        fsync_dir(os.path.dirname(path))


def read_record(path, magic):
    """(doc, state): state is "ok", "missing" or "damaged" (doc None)."""
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except FileNotFoundError:
        return None, "missing"
    except IsADirectoryError:
        return None, "damaged"
    except OSError as exc:
        raise io_error(exc, f"cannot read {path}") from exc
    doc = decode(magic, data)
    return (doc, "ok") if doc is not None else (None, "damaged")
