"""The log's syncer: one background thread per Log.

Every period (sync_interval_ms in sync mode "interval", the checkpoint
interval in "none") it fdatasyncs the topics that were appended to since
their last sync (the C call releases the GIL), then moves the consumer
positions committed meanwhile into the catalog (pylog/_pending.py): in
that order, so that a position is never durable before its records. In
"always" there is nothing to sync periodically: appends and commits are
durable when they return.

An error is kept in ``last_error`` and retried next period; a failed
fdatasync has already made the topic refuse appends (LogFailedError).
"""
import threading


class Syncer:
    def __init__(self, log, period_s):
        self._log = log
        self.period = period_s
        self.last_error = None
        self.rounds = 0
        self._stop = threading.Event()
        self._th = threading.Thread(target=self._run, name="pylog-sync",
                                    daemon=True)
        self._th.start()

    def _run(self):
        while not self._stop.wait(self.period):
            try:
                self._log._sync_round()
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 - kept, retried
                self.last_error = exc
            self.rounds += 1

    def stop(self):
        self._stop.set()
        if self._th is not threading.current_thread():
            self._th.join()
