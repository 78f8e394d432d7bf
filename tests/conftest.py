"""Helpers shared by the test modules: the on-disk layout of docs/FORMAT.md
(csrc/segment.c), computed independently of the C core, and the power-cut
simulation layer (tests/crashsim), compiled once per session."""
import os
import struct
import threading
import time

import pytest
import xxhash

import crashsim


@pytest.fixture(scope="session")
def crashsim_lib(tmp_path_factory):
    """Path of the compiled power-cut simulation layer (crashsim.c)."""
    return crashsim.build(tmp_path_factory.mktemp("crashsim"))


SEG_HDR = 32     # segment header
BATCH_HDR = 48   # batch header
REC_HDR = 20     # record header


def now_ms():
    """Wall-clock ms, the clock the core stamps appends with."""
    return time.time_ns() // 1_000_000


def header_pairs(headers):
    """What Record.headers holds for the headers given to append."""
    if headers is None:
        return ()
    items = headers.items() if isinstance(headers, dict) else headers
    return tuple((k, None if v is None else bytes(v)) for k, v in items)


def headers_size(headers):
    """Bytes of the encoded header block: per header u16 key length, UTF-8
    key, i32 value length, value."""
    return sum(2 + len(k.encode("utf-8")) + 4 + (0 if v is None else len(v))
               for k, v in header_pairs(headers))


def record_size(key, value, headers):
    return (REC_HDR + (0 if key is None else len(key)) + len(value)
            + headers_size(headers))


def batch_size(records):
    """Bytes of a batch holding records [(key, value, headers), ...]."""
    return BATCH_HDR + sum(record_size(k, v, h) for k, v, h in records)


def topic_dir(log_dir, name):
    return os.path.join(os.fspath(log_dir), "topics", name)


def segment_files(log_dir, name):
    """Paths of the topic's segment files, in offset order."""
    d = topic_dir(log_dir, name)
    return sorted(os.path.join(d, f) for f in os.listdir(d)
                  if f.endswith(".log") and len(f) == 24)


def segment_base(path):
    return int(os.path.basename(path)[:20])


def set_segment_version(path, version):
    """Rewrite a segment header's format version with a valid checksum."""
    with open(path, "r+b") as f:
        h = bytearray(f.read(SEG_HDR))
        h[8:12] = struct.pack("<I", version)
        h[24:32] = struct.pack("<Q", xxhash.xxh64_intdigest(bytes(h[:24])))
        f.seek(0)
        f.write(h)


def tree(path):
    """Every file and directory below path, relative to it."""
    out = set()
    for root, dirs, files in os.walk(path):
        rel = os.path.relpath(root, path)
        out.update(os.path.join(rel, x) for x in dirs + files)
    return out


class Threads:
    """Run functions in threads; re-raise the first exception in join()."""

    def __init__(self):
        self.threads, self.errors = [], []

    def start(self, fn, *args):
        def run():
            try:
                fn(*args)
            except BaseException as exc:  # noqa: BLE001 - raised in join
                self.errors.append(exc)
        th = threading.Thread(target=run, daemon=True)
        th.start()
        self.threads.append(th)
        return th

    def join(self, threads=None, timeout=60):
        for th in threads or self.threads:
            th.join(timeout)
            assert not th.is_alive(), "a thread hangs"
        if self.errors:
            raise self.errors[0]
