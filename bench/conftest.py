"""Shared fixtures for the pytest-benchmark suite (run: see README)."""
import itertools
import os

import pytest

import pylog

VALUE = b"v" * 100  # the workload: 100-byte values


@pytest.fixture
def log(tmp_path):
    with pylog.open(tmp_path / "log", sync="none") as lg:
        yield lg


@pytest.fixture
def fresh_topic(log):
    """A factory of empty topics: each benchmark round appends to a new one
    and the previous is deleted, so rounds reuse the page cache they free
    instead of growing it."""
    names = (f"t{i}" for i in itertools.count())
    state = {}

    def make():
        if "name" in state:
            log.delete_topic(state["name"])
        state["name"] = next(names)
        return log.topic(state["name"])

    return make


def rate(benchmark, records):
    """Record records/s of the median round in the benchmark's extra_info."""
    stats = benchmark.stats.stats
    benchmark.extra_info["records"] = records
    benchmark.extra_info["records_per_s_median"] = round(records / stats.median)
    benchmark.extra_info["records_per_s_best"] = round(records / stats.min)


def pytest_report_header(config):
    return (f"pylog bench: cpus={os.cpu_count()} "
            f"value={len(VALUE)}B sync=none")
