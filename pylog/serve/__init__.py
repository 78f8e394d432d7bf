"""pylog serve: one log, its ingests and forwarders, from a TOML config
file, as a daemon (``pylog serve CONFIG.toml``).

    from pylog.serve import load, run
    cfg = load("gateway.toml")     # ConfigError naming the file and key
    run("gateway.toml")            # until SIGTERM or SIGINT; exit status

See _config.py for the file's shape, _daemon.py for the order of start
and stop, _status.py and _metrics.py for the status endpoint.
"""
from ._config import Config, ConfigError, load
from ._daemon import Daemon, run

__all__ = ["load", "run", "Config", "ConfigError", "Daemon"]
