"""``pylog serve`` as a child process, for the serve and ingest crash
tests: start it on a config file, read its status endpoint, stop it with
SIGTERM or kill it with SIGKILL."""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

from peers import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {k: v for k, v in os.environ.items() if k != "PYLOG_DEBUG"}


def write_config(path, text):
    with open(path, "w") as f:
        f.write(text)
    return str(path)


class Serve:
    """One ``python -m pylog serve CONFIG`` process; stderr goes to a file
    (err_path) so that a chatty daemon never blocks on a pipe."""

    def __init__(self, config, status_port=None, err_path=None):
        self.config, self.status_port = str(config), status_port
        self.err_path = err_path or self.config + ".err"
        self.proc = None

    def start(self):
        self._err = open(self.err_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pylog", "serve", self.config],
            stdin=subprocess.DEVNULL, stdout=self._err, stderr=self._err,
            env=ENV, cwd=ROOT)
        return self

    def status(self, path="/", timeout=2.0):
        url = f"http://127.0.0.1:{self.status_port}{path}"
        with urllib.request.urlopen(url, timeout=timeout) as r:
            body = r.read()
            return json.loads(body) if path == "/" else body.decode()

    def try_status(self):
        try:
            return self.status()
        except OSError:
            return None

    def wait_status(self, cond, timeout=30.0):
        """The first status for which cond(status) is true, or None."""
        box = []

        def check():
            if self.proc.poll() is not None:
                raise AssertionError(f"pylog serve exited: {self.stderr()}")
            st = self.try_status()
            if st is not None and cond(st):
                box.append(st)
                return True
            return False
        return box[0] if wait_until(check, timeout, every=0.05) else None

    def terminate(self, timeout=60):
        """SIGTERM; the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._err.close()

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._err.close()

    def stderr(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


def now_ms():
    return time.time_ns() // 1_000_000
