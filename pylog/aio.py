"""asyncio interface: await records without blocking the event loop.

    from pylog.aio import AsyncConsumer

    async with AsyncConsumer(log.consumer("uploader", "sensors")) as c:
        async for rec in c:
            ...
        batch = await c.poll(max_records=500, timeout=1.0)

Waiting uses the consumer's notifier: the C core writes to an eventfd when
a watched topic gets an append while a coroutine waits, and the event loop
watches that fd (loop.add_reader). No thread and no polling loop.
Reading itself is a short non-blocking call into the C core.
"""
import asyncio

from ._errors import ClosedError

__all__ = ["AsyncConsumer"]


class AsyncConsumer:
    def __init__(self, consumer):
        self.consumer = consumer
        self._buf = []  # records polled, not yet yielded (reversed)

    def __getattr__(self, name):  # commit, seek, position, lag, gaps, ...
        return getattr(self.consumer, name)

    async def poll(self, max_records=500, max_bytes=None, timeout=0.0):
        """Like Consumer.poll, awaiting up to timeout seconds (None: no
        limit) for records instead of blocking."""
        c = self.consumer
        n = c._notifier
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        c._check_open()  # a poll of a closed consumer raises, as in Consumer
        while True:
            seen = n.seq()
            try:
                recs = c.poll(max_records, max_bytes, 0.0)
            except ClosedError:
                if c._closed:  # closed (maybe by another thread) while
                    return []  # this coroutine waited: no records
                raise
            if recs:
                return recs
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return []
            woken = loop.create_future()
            fd = n.arm()
            loop.add_reader(fd, lambda: woken.done() or woken.set_result(None))
            try:
                if n.seq() == seen and not c._closed:  # no append since
                    await asyncio.wait_for(woken, remaining)
            except asyncio.TimeoutError:
                return []
            finally:
                loop.remove_reader(fd)
                n.disarm()

    def __aiter__(self):
        return self

    async def __anext__(self):
        while True:
            if self.consumer._closed:
                raise StopAsyncIteration
            if not self._buf:
                self._buf = list(reversed(await self.poll(timeout=1.0)))
                continue
            return self._buf.pop()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        self.consumer.close()
