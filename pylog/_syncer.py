"""The log's syncer: one background thread per Log.

Every period (sync_interval_ms in sync mode "interval", the checkpoint
interval in "none") it fdatasyncs the topics that were appended to since
their last sync (the C call releases the GIL), then moves the consumer
positions committed meanwhile into the catalog (pylog/_pending.py): in
that order, so that a position is never durable before its records. In
"always" there is nothing to sync periodically: appends and commits are
durable when they return.

It also reads, every second, the positions other processes committed (a
reader's own groups), so that retention waits for them too.

An error is kept in ``last_error`` and retried next period; a failed
fdatasync has already made the topic refuse appends (LogFailedError).
"""
import threading
import time


class Syncer:
    """sync_period: seconds between sync rounds (None: none, sync
    "always"); floor_period: seconds between looks at the positions other
    processes committed (for retention)."""

    def __init__(self, log, sync_period, floor_period):
        self._log = log
        self.period = sync_period
        self.floor_period = floor_period
        self.last_error = None
        self.rounds = 0
        self._stop = threading.Event()
        self._th = threading.Thread(target=self._run, name="pylog-sync",
                                    daemon=True)
        self._th.start()

    def _run(self):
        now = time.monotonic()
        next_sync = None if self.period is None else now + self.period
        next_floor = now + self.floor_period
        while True:
            due = min(t for t in (next_sync, next_floor) if t is not None)
            if self._stop.wait(max(0.0, due - time.monotonic())):
                return
            now = time.monotonic()
            try:
                if next_sync is not None and now >= next_sync:
                    next_sync = now + self.period
                    self._log._sync_round()
                    self.rounds += 1
                if now >= next_floor:
                    next_floor = now + self.floor_period
                    self._log._refresh_floors()
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 - kept, retried
                self.last_error = exc

    def stop(self):
        self._stop.set()
        if self._th is not threading.current_thread():
            self._th.join()
