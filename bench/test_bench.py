"""Hot-path benchmarks (pytest-benchmark). Each test appends/reads a fixed
number of records per round; the records/s of the median round is stored in
extra_info and printed by bench/report.py. Targets (docs/PERFORMANCE.md):
append >= 1M/s, append_batch(1000) >= 5M/s, read >= 2M/s, get <= 3 us."""
import random

from conftest import VALUE, rate

N_APPEND = 200_000
N_BATCH = 1_000
BATCHES = 1_000          # 1M records per round
N_READ = 1_000_000
N_GET = 100_000


def test_append_one_record_per_call(benchmark, fresh_topic):
    def run(t):
        ap = t.append
        v = VALUE
        for _ in range(N_APPEND):
            ap(v)

    benchmark.pedantic(run, setup=lambda: ((fresh_topic(),), {}), rounds=7,
                       warmup_rounds=1)
    rate(benchmark, N_APPEND)


def test_append_batch_of_1000(benchmark, fresh_topic):
    batch = [VALUE] * N_BATCH

    def run(t):
        ab = t.append_batch
        for _ in range(BATCHES):
            ab(batch)

    benchmark.pedantic(run, setup=lambda: ((fresh_topic(),), {}), rounds=7,
                       warmup_rounds=1)
    rate(benchmark, N_BATCH * BATCHES)


def test_sequential_read(benchmark, log):
    t = log.topic("r")
    for _ in range(N_READ // 1000):
        t.append_batch([VALUE] * 1000)

    def run():
        n = 0
        for _ in t.read(0):
            n += 1
        assert n == N_READ

    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    rate(benchmark, N_READ)


def test_sequential_read_single_appends(benchmark, log):
    t = log.topic("r1")
    ap = t.append
    for _ in range(N_READ // 2):
        ap(VALUE)

    def run():
        n = 0
        for _ in t.read(0):
            n += 1
        assert n == N_READ // 2

    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    rate(benchmark, N_READ // 2)


def _get_bench(benchmark, t):
    rnd = random.Random(7)
    offsets = [rnd.randrange(t.end_offset) for _ in range(N_GET)]

    def run():
        g = t.get
        for o in offsets:
            g(o)

    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    rate(benchmark, N_GET)
    benchmark.extra_info["us_per_get_median"] = round(
        benchmark.stats.stats.median / N_GET * 1e6, 3)


def test_get_random_offset_single_appends(benchmark, log):
    t = log.topic("g1")
    ap = t.append
    for _ in range(1_000_000):
        ap(VALUE)
    _get_bench(benchmark, t)


def test_get_random_offset_batches(benchmark, log):
    t = log.topic("g2")
    for _ in range(1_000):
        t.append_batch([VALUE] * 1000)
    _get_bench(benchmark, t)


N_CONSUME = 1_000_000


def test_poll_and_commit_every_500(benchmark, log):
    """Consume with poll(max_records=500) and commit after every poll."""
    t = log.topic("c")
    for _ in range(N_CONSUME // 1000):
        t.append_batch([VALUE] * 1000)
    c = log.consumer("bench", "c")

    def run():
        c.seek_to_beginning()
        n = 0
        while True:
            recs = c.poll(max_records=500)
            if not recs:
                break
            n += len(recs)
            c.commit()
        assert n == N_CONSUME

    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    rate(benchmark, N_CONSUME)
    c.close()


def test_blocked_poll_wakes_on_append(benchmark, log):
    """Latency from an append in one thread to a blocked poll returning in
    another; extra_info has the median and p99 in microseconds."""
    import statistics
    import threading
    import time

    t = log.topic("w")
    c = log.consumer("waker", "w", start="latest")
    n = 300
    lat = []

    def run():
        lat.clear()
        stamps = []
        ready = threading.Event()

        def producer():
            for _ in range(n):
                ready.wait()
                ready.clear()
                time.sleep(0.0005)  # let the consumer block first
                stamps.append(time.perf_counter())
                t.append(VALUE)

        th = threading.Thread(target=producer)
        th.start()
        for _ in range(n):
            ready.set()
            recs = c.poll(max_records=1, timeout=5.0)
            lat.append(time.perf_counter())
            assert len(recs) == 1
        th.join()
        for i in range(n):
            lat[i] -= stamps[i]

    benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    lat.sort()
    benchmark.extra_info["wake_us_median"] = round(statistics.median(lat) * 1e6, 1)
    benchmark.extra_info["wake_us_p99"] = round(lat[int(len(lat) * 0.99)] * 1e6, 1)
    c.close()
