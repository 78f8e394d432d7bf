"""Positions committed but not yet durable (sync modes "none" and
"interval"): ``DIR/pending``.

A committed position must never become durable before the records it
covers (a power cut would then leave the group past records that are
gone, or make new records take their offsets). In "none" and "interval" a
commit therefore does not write the catalog: it writes its positions into
this file with pwrite (so they survive a crash of the process) and the
log's syncer moves them into the catalog once the records they cover are
durable (at most a sync interval later). Nothing here is ever synced.

Each (group, topic) has a 64-byte slot, rewritten in place:

    0  4  magic "PLPD"          4  4  0
    8  8  u64 sequence number  16  8  u64 XXH64(group NUL topic)
   24  8  i64 position         32  8  u64 token: the checksum of the batch
   40 16  zero                             holding position - 1
   56  8  u64 XXH64 of bytes 0..56

At open, a slot that differs from the catalog (a commit may move a group
back) is trusted only if the batch before its position is still the same
(its checksum equals the token; 0 when it could not be read): a crash of
the process keeps it, a power cut that lost those records rejects it. A
slot whose group or topic was deleted is overwritten with position -1.
A rejected position still proves that its offsets existed: the topic's
next offset is raised past it (invariant 9 in csrc/topic.c).
"""
import os
import struct
import threading

import xxhash

from . import _files

SLOT = 64
_SLOT = struct.Struct("<4sIQQqQ16s")
_SUM = struct.Struct("<Q")


def key_hash(group, topic):
    return xxhash.xxh64_intdigest(group.encode() + b"\0" + topic.encode())


class Pending:
    def __init__(self, path):
        self.path = path
        self._fd = None
        self._mu = threading.Lock()
        self._slots = {}   # (group, topic) -> slot index
        self._seq = 0
        self.items = {}    # (group, topic) -> (position, token), not durable

    def load(self):
        """[(key hash, position, token)] of the valid slots, newest first
        per key."""
        try:
            with open(self.path, "rb") as f:
                data = f.read(64 << 20)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise _files.io_error(exc, f"cannot read {self.path}") from exc
        best = {}
        for off in range(0, len(data) - SLOT + 1, SLOT):
            s = data[off:off + SLOT]
            if s[:4] != b"PLPD" or _SUM.unpack_from(s, 56)[0] != \
                    xxhash.xxh64_intdigest(s[:56]):
                continue
            _, _, seq, kh, pos, token, _ = _SLOT.unpack_from(s)
            if kh not in best or best[kh][0] < seq:
                best[kh] = (seq, pos, token)
            self._seq = max(self._seq, seq)
        # a tombstone (position -1) is the newest word on its key
        return [(kh, pos, token) for kh, (_, pos, token) in best.items()
                if pos >= 0]

    def put(self, group, topic, position, token):
        """Record a position (survives a crash of the process)."""
        with self._mu:
            k = (group, topic)
            self.items[k] = (position, token)
            self._write(k, position, token)

    def get(self, group, topic):
        it = self.items.get((group, topic))
        return None if it is None else it[0]

    def take(self, durable):
        """Remove and return {(group, topic): position} of the positions
        whose records are durable: durable(topic) gives the topic's
        durable offset (or None if it cannot say)."""
        out = {}
        with self._mu:
            for (g, t), (pos, _) in list(self.items.items()):
                d = durable(t)
                if d is not None and pos <= d:
                    out[(g, t)] = pos
        return out

    def done(self, items):
        """The positions in items are in the catalog now."""
        with self._mu:
            for k, pos in items.items():
                cur = self.items.get(k)
                if cur is not None and cur[0] == pos:
                    del self.items[k]
            if not self.items:
                self._reset()

    def forget(self, pred, keys=()):
        """Drop pending positions whose (group, topic) matches pred, and
        write over their slots (and those of `keys`), so that a crash does
        not bring them back: a slot with position -1 is a tombstone."""
        with self._mu:
            for k in [k for k in self.items if pred(*k)]:
                del self.items[k]
            for k in list(self._slots):
                if pred(*k) or k in keys:
                    self._write(k, -1, 0)

    def _write(self, k, position, token):
        slot = self._slots.get(k)
        if slot is None:
            slot = self._slots[k] = len(self._slots)
        self._seq += 1
        body = _SLOT.pack(b"PLPD", 0, self._seq, key_hash(*k), position,
                          token, b"\0" * 16)
        data = body + _SUM.pack(xxhash.xxh64_intdigest(body))
        with _files.wrap_os(f"cannot write {self.path}"):
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT |
                                   os.O_CLOEXEC, 0o644)
            os.pwrite(self._fd, data, slot * SLOT)

    def _reset(self):
        """Empty the file: every position it held is in the catalog."""
        self._slots.clear()
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            except OSError:
                pass  # stale slots are only re-checked at the next open

    def close(self):
        with self._mu:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if not self.items:
                try:
                    os.unlink(self.path)
                except OSError:
                    pass
