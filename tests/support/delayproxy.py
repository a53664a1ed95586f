"""A TCP proxy that makes a loopback link look like a slow, lossy network, for tests.

    with DelayProxy(broker.host, broker.port, rtt_s=0.3, loss=0.02, seed=1) as proxy:
        client.connect(proxy.host, proxy.port)

Every chunk of bytes is held for half the round trip in each direction (plus, with jitter_s,
a uniform extra of up to jitter_s), so a request's answer arrives one `rtt_s` after it left.
Opening a connection costs half a round trip too: the proxy dials the target only after the
SYN's one-way delay, and when the target refuses, the client's socket is closed after that
delay (the client sees the connection end, as through a NAT or a real proxy).

Loss: TCP never loses bytes, it resends them. What a lost segment costs an application is
the sender's retransmission timeout, so loss is emulated as delay: a chunk of n segments
(1448 bytes each) is hit with probability 1 - (1 - loss) ** n, and a hit chunk is held for an
extra retransmission timeout drawn from `rto_s` (200 ms to 1 s by default, Linux's minimum
RTO and a typical backed-off one). Bytes stay in order, so a held chunk holds up the ones
behind it (head-of-line blocking, as in TCP). The draws come from random.Random(seed), so a
test with a seed sees the same delays each run (given the same chunking).

`connections` counts the connections the proxy accepted (each one a client's attempt) and
`accepted_at` holds their time.monotonic() times; the proxy runs on its own thread with an asyncio loop, on a port from free_port().
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time

from tests.support.services import free_port

_SEGMENT = 1448  # bytes in one TCP segment on a 1500-byte MTU path
_CHUNK = 65536


class DelayProxy:
    """127.0.0.1:`port` -> target, with delay, jitter and loss-as-retransmission-delay."""

    def __init__(self, target_host: str, target_port: int, *, rtt_s: float = 0.1,
                 jitter_s: float = 0.0, loss: float = 0.0, rto_s: tuple = (0.2, 1.0),
                 seed: int | None = None):
        if rtt_s < 0 or jitter_s < 0 or not 0 <= loss < 1:
            raise ValueError("rtt_s and jitter_s must be >= 0 and loss in [0, 1).")
        self.target = (target_host, target_port)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.one_way_s = rtt_s / 2
        self.jitter_s = jitter_s
        self.loss = loss
        self.rto_s = rto_s
        self.rng = random.Random(seed)
        self.connections = 0
        self.accepted_at: list[float] = []
        self.retransmits = 0  # chunks held for a retransmission timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        self._writers: set = set()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> DelayProxy:
        self._thread = threading.Thread(target=self._run, name="delayproxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            raise RuntimeError(f"the delay proxy did not start: {self._error}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._accept, self.host, self.port))
        except OSError as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            for w in list(self._writers):
                w.transport.abort()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    # -- the link -------------------------------------------------------------------------

    def _delay(self, nbytes: int) -> float:
        """One chunk's one-way delay: propagation, jitter, and a retransmission timeout if
        one of its segments was lost."""
        d = self.one_way_s
        if self.jitter_s:
            d += self.rng.uniform(0, self.jitter_s)
        if self.loss:
            segments = max(1, math.ceil(nbytes / _SEGMENT))
            if self.rng.random() < 1 - (1 - self.loss) ** segments:
                d += self.rng.uniform(*self.rto_s)
                self.retransmits += 1
        return d

    async def _accept(self, reader, writer) -> None:
        self.connections += 1
        self.accepted_at.append(time.monotonic())
        self._writers.add(writer)
        up_writer = None
        try:
            await asyncio.sleep(self.one_way_s)  # the SYN's trip to the target
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                return  # target refused: the client's connection ends
            self._writers.add(up_writer)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer),
                                 return_exceptions=True)
        except asyncio.CancelledError:
            pass  # the proxy is stopping: end quietly (asyncio logs a cancelled handler)
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    self._writers.discard(w)
                    w.close()

    async def _pipe(self, reader, writer) -> None:
        """Carry one direction: a reader stamps each chunk with the time it is due, a writer
        sends it then, in order. At end of stream the other side is closed (after the delay)."""
        queue: asyncio.Queue = asyncio.Queue()

        async def read() -> None:
            last_due = 0.0
            try:
                while True:
                    data = await reader.read(_CHUNK)
                    due = max(last_due, time.monotonic() + self._delay(len(data)))
                    last_due = due
                    await queue.put((due, data))
                    if not data:
                        return
            except (OSError, asyncio.IncompleteReadError):
                await queue.put((last_due, b""))

        async def write() -> None:
            while True:
                due, data = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()

        reading = asyncio.ensure_future(read())
        try:
            await write()
        except OSError:
            writer.close()
        finally:
            reading.cancel()
