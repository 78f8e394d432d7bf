"""Run one benchmark function in a child process and bring its result back.

    result = run_child("edge_topics", params, timeout=600)

The child runs ``python bench/children.py MODULE`` with params (JSON) on
stdin, imports bench/MODULE.py, calls its ``child(params)`` and prints the
returned dict as JSON on stdout. The child applies its own resource limits
(``set_limits``), so the parent keeps its own.

A child that raises a pylog error, an OSError or MemoryError, is killed by
a signal (SIGBUS, SIGSEGV, the OOM killer) or times out gives a result
{"failed": ...} instead of an exception in the parent: a failure of the
code measured is a finding of the benchmark, not a crash of it. Any other
exception is a fault of the benchmark itself: its result also carries
"harness_error", which ``harness_errors`` finds, so that a run can fail
when its own code is broken (CI) without asserting any figure.
"""
import json
import os
import resource
import signal
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _pylog_root():
    """The directory holding the pylog package this process imports (an
    install, or the checkout's root when run without one), so that the
    children measure the same build."""
    try:
        import pylog
    except ImportError:
        return ROOT
    return os.path.dirname(os.path.dirname(os.path.abspath(pylog.__file__)))


def run_child(module, params, timeout):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (HERE, _pylog_root(), env.get("PYTHONPATH")) if p)
    try:
        p = subprocess.run([sys.executable, os.path.abspath(__file__), module],
                           input=json.dumps(params), capture_output=True,
                           text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"failed": f"timed out after {timeout} s"}
    if p.returncode < 0:
        sig = signal.Signals(-p.returncode).name
        return {"failed": f"killed by {sig}", "stderr": p.stderr[-2000:]}
    if p.returncode:
        return {"failed": f"exit status {p.returncode}",
                "harness_error": True, "stderr": p.stderr[-2000:]}
    try:
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"failed": "no result on stdout", "stdout": p.stdout[-2000:],
                "stderr": p.stderr[-2000:]}


def set_limits(nofile=None, address_space=None):
    """Lower this process's soft limits (the hard ones stay)."""
    out = {}
    if nofile:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        soft = nofile if hard == resource.RLIM_INFINITY else min(nofile, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        out["RLIMIT_NOFILE"] = soft
    if address_space:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        soft = (address_space if hard == resource.RLIM_INFINITY
                else min(address_space, hard))
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        out["RLIMIT_AS"] = soft
    return out


class relaxed_nofile:
    """Within the block the soft RLIMIT_NOFILE is the hard one: measuring
    (listing /proc/self/fd, reading /proc/self/maps, walking a directory)
    needs descriptors of its own, also when the code measured used up its
    limit. Measurements open and close their files inside the block."""

    def __enter__(self):
        self.saved = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE,
                           (self.saved[1], self.saved[1]))

    def __exit__(self, *exc):
        resource.setrlimit(resource.RLIMIT_NOFILE, self.saved)


def describe_error(exc):
    """An exception as a result: its type (with errno if any) and message."""
    out = {"error": type(exc).__name__, "message": str(exc)[:500]}
    if isinstance(exc, OSError) and exc.errno:
        import errno
        out["errno"] = errno.errorcode.get(exc.errno, exc.errno)
    return out


def harness_errors(result):
    """The child results inside result (nested dicts and lists) that
    failed through a fault of the benchmark's own code."""
    out = []
    if isinstance(result, dict):
        if result.get("harness_error"):
            out.append(result)
        for v in result.values():
            out += harness_errors(v)
    elif isinstance(result, list):
        for v in result:
            out += harness_errors(v)
    return out


def _main():
    module = sys.argv[1]
    params = json.loads(sys.stdin.read())
    sys.path.insert(0, HERE)
    mod = __import__(module)
    try:
        result = mod.child(params)
    except (OSError, MemoryError) as e:     # PylogIOError is an OSError
        result = {"failed": f"raised {type(e).__name__}",
                  **describe_error(e)}
    except Exception as e:
        import pylog
        if not isinstance(e, pylog.PylogError):
            raise       # the benchmark's own fault: exit status 1
        result = {"failed": f"raised {type(e).__name__}",
                  **describe_error(e)}
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    _main()
