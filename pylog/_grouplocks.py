"""One consumer per group, across processes.

A consumer (or forwarder) holds an exclusive, non-blocking flock on
``DIR/locks/G`` (G: the group name in hex) for as long as it is open, so
that a second one in any process gets GroupInUseError; the kernel releases
the lock when the process dies. Where the directory cannot be written (a
read-only mount) and the lock file does not exist, nothing can commit a
position anyway, and no lock is taken.
"""
import errno
import fcntl
import os

from . import _errors as E


class GroupLocks:
    def __init__(self, root):
        self.dir = os.path.join(root, "locks")
        self._fds = {}

    def _path(self, group):
        return os.path.join(self.dir, group.encode().hex())

    def acquire(self, group, log_path):
        path = self._path(group)
        fd = None
        try:
            os.makedirs(self.dir, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise E.PylogIOError(exc.errno, f"cannot open group lock "
                                     f"{path}: {exc.strerror}") from exc
            try:  # flock needs no write access to a file that exists
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise E.GroupInUseError(
                f"consumer group {group!r} of log {log_path} is in use by "
                "another consumer (in this or another process)") from None
        except OSError as exc:
            os.close(fd)
            raise E.PylogIOError(exc.errno, f"cannot lock {path}: "
                                 f"{exc.strerror}") from exc
        self._fds[group] = fd

    def release(self, group):
        fd = self._fds.pop(group, None)
        if fd is not None:
            os.close(fd)  # drops the lock

    def release_all(self):
        for g in list(self._fds):
            self.release(g)
