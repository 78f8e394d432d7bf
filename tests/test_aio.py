"""pylog.aio.AsyncConsumer: awaiting records without blocking the event
loop. The consumer's notifier writes an eventfd the loop watches, so a
ticker task keeps running while a poll waits, and an append from another
thread wakes the waiting coroutine.

pytest-asyncio is not a dependency: each test runs its coroutine with
asyncio.run.
"""
import asyncio
import threading
import time

import pytest

import pylog
from pylog.aio import AsyncConsumer


class Ticker:
    """A task that counts event-loop turns every few ms: if a poll blocked
    the loop, it would stop counting."""

    def __init__(self):
        self.ticks = 0
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self):
        while True:
            await asyncio.sleep(0.002)
            self.ticks += 1

    def stop(self):
        self.task.cancel()


def append_later(t, values, delay, gap=0.0):
    """Append values from another thread, starting after delay seconds."""
    def run():
        time.sleep(delay)
        for v in values:
            t.append(v)
            time.sleep(gap)
    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def test_await_poll_wakes_on_an_append_from_a_thread(tmp_path):
    async def main(log):
        t = log.topic("t")
        c = AsyncConsumer(log.consumer("g", "t"))
        ticker = Ticker()
        th = append_later(t, [b"hello"], 0.3)
        recs = await asyncio.wait_for(c.poll(timeout=30), 10)
        th.join()
        assert [bytes(r.value) for r in recs] == [b"hello"]
        assert ticker.ticks > 10, "the poll blocked the event loop"
        ticker.stop()
        return c

    with pylog.open(tmp_path) as log:
        c = asyncio.run(main(log))
        assert c.position("t") == 1  # attribute access goes to the consumer


def test_await_poll_times_out_with_nothing_and_the_loop_runs(tmp_path):
    async def main(log):
        log.topic("t")
        c = AsyncConsumer(log.consumer("g", "t"))
        ticker = Ticker()
        assert await c.poll(timeout=0.3) == []
        assert ticker.ticks > 10
        assert await c.poll(timeout=0) == []
        ticker.stop()

    with pylog.open(tmp_path) as log:
        asyncio.run(main(log))


def test_await_poll_returns_at_once_when_records_are_there(tmp_path):
    async def main(log):
        t = log.topic("t")
        t.append_batch([b"a", b"b", b"c"])
        c = AsyncConsumer(log.consumer("g", "t"))
        recs = await asyncio.wait_for(c.poll(timeout=None, max_records=2), 5)
        assert [r.offset for r in recs] == [0, 1]
        recs = await asyncio.wait_for(c.poll(timeout=None), 5)
        assert [r.offset for r in recs] == [2]
        c.commit()
        assert c.committed("t") == 3

    with pylog.open(tmp_path) as log:
        asyncio.run(main(log))


def test_async_for_yields_appends_from_a_thread_until_closed(tmp_path):
    N = 50

    async def main(log):
        t = log.topic("t")
        ticker = Ticker()
        got = []
        th = append_later(t, [b"%d" % i for i in range(N)], 0.05, 0.002)
        async with AsyncConsumer(log.consumer("g", "t")) as c:
            async for r in c:
                assert bytes(r.value) == b"%d" % r.offset
                got.append(r.offset)
                if len(got) == N:
                    c.close()  # ends the iteration
        th.join()
        assert got == list(range(N))
        assert ticker.ticks > 10
        ticker.stop()

    with pylog.open(tmp_path) as log:
        asyncio.run(asyncio.wait_for(main(log), 30))


def test_close_from_another_task_ends_a_waiting_iteration(tmp_path):
    async def main(log):
        log.topic("t")
        c = AsyncConsumer(log.consumer("g", "t"))
        got = []

        async def consume():
            async for r in c:
                got.append(r)

        task = asyncio.get_running_loop().create_task(consume())
        await asyncio.sleep(0.2)
        assert not task.done()
        c.close()
        await asyncio.wait_for(task, 5)  # ended, without an error
        assert got == []
        with pytest.raises(pylog.ClosedError):
            await c.poll()

    with pylog.open(tmp_path) as log:
        asyncio.run(main(log))


def test_close_from_a_thread_ends_a_waiting_poll(tmp_path):
    async def main(log):
        log.topic("t")
        c = AsyncConsumer(log.consumer("g", "t"))
        th = threading.Timer(0.2, c.close)
        th.start()
        assert await asyncio.wait_for(c.poll(timeout=30), 10) == []
        th.join()

    with pylog.open(tmp_path) as log:
        asyncio.run(main(log))


def test_two_async_consumers_of_different_groups_both_see_everything(tmp_path):
    N = 200

    async def main(log):
        t = log.topic("t")
        cs = [AsyncConsumer(log.consumer(g, "t")) for g in ("a", "b")]

        async def drain(c):
            out = []
            while len(out) < N:
                out.extend(r.offset for r in await c.poll(timeout=5))
            return out

        th = append_later(t, [b"x"] * N, 0.05, 0.0005)
        res = await asyncio.wait_for(asyncio.gather(*map(drain, cs)), 30)
        th.join()
        assert res == [list(range(N))] * 2

    with pylog.open(tmp_path) as log:
        asyncio.run(main(log))
