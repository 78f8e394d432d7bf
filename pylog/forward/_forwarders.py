"""The forwarders of one Log (``log.forwarders``) and the budget they share.

    log.forwarders.max_bytes_per_s = 64_000   # all forwarders together
    log.forwarders["cloud"].stats()
    log.forwarders.stats()                    # {name: stats}

The log-wide budget is served by priority (see _budget.py): when the
forwarders together want more than max_bytes_per_s, the lowest priority
number sends first. Log.close() stops every running forwarder first.
"""
import threading

from .. import _errors as E
from ._budget import Budget


class Forwarders:
    """The forwarders of a Log, by name, and their shared bandwidth cap."""

    def __init__(self, log):
        self._log = log
        self._mu = threading.Lock()
        self._by_name = {}
        self.budget = Budget(None)

    @property
    def max_bytes_per_s(self):
        """Bytes per second (keys, values, headers) that all forwarders of
        the log may send together; None (the default): no cap."""
        return self.budget.rate

    @max_bytes_per_s.setter
    def max_bytes_per_s(self, value):
        self.budget.rate = value

    def __iter__(self):
        with self._mu:
            return iter(list(self._by_name.values()))

    def __len__(self):
        with self._mu:
            return len(self._by_name)

    def __contains__(self, name):
        with self._mu:
            return name in self._by_name

    def __getitem__(self, name):
        with self._mu:
            try:
                return self._by_name[name]
            except KeyError:
                raise E.GroupNotFoundError(
                    f"no forwarder {name!r} in log {self._log.path}") from None

    def stats(self):
        """{name: Forwarder.stats()} of every forwarder not closed."""
        return {fw.name: fw.stats() for fw in self}

    def __repr__(self):
        return (f"<pylog.forward.Forwarders {sorted(self._by_name)!r} "
                f"max_bytes_per_s={self.max_bytes_per_s!r}>")

    # ---- for Forwarder and Log ---------------------------------------------
    def _add(self, fw, open_consumer):
        with self._mu:
            if fw.name in self._by_name:
                raise E.GroupInUseError(
                    f"forwarder {fw.name!r} of log {self._log.path} exists "
                    "already; stop or close it first")
            fw._consumer = open_consumer()  # GroupInUseError for a consumer
            self._by_name[fw.name] = fw

    def _remove(self, fw):
        with self._mu:
            if self._by_name.get(fw.name) is fw:
                del self._by_name[fw.name]

    def _close_all(self):
        """Stop every forwarder (Log.close); errors are for their stats."""
        for fw in self:
            try:
                fw.close()
            except E.PylogError:
                pass
