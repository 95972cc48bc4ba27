"""The delivery hand-off from librdkafka's threads to the event loop (pure logic, a real loop)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from barcode_pipeline.ingest.handoff import Handoff


def test_every_item_from_several_threads_runs_on_the_loop_once() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        handoff = Handoff(loop)
        seen: list[int] = []
        loop_thread = threading.get_ident()
        wrong_thread: list[int] = []
        per_thread, threads = 20_000, 3
        all_in = asyncio.Event()

        def record(n: int) -> None:
            if threading.get_ident() != loop_thread:
                wrong_thread.append(n)
            seen.append(n)
            if len(seen) == per_thread * threads:
                all_in.set()

        def produce(base: int) -> None:
            for i in range(per_thread):
                handoff.put(record, base + i)

        workers = [threading.Thread(target=produce, args=(t * per_thread,)) for t in range(threads)]
        for worker in workers:
            worker.start()
        await asyncio.wait_for(all_in.wait(), 30)
        for worker in workers:
            worker.join()
        await asyncio.sleep(0.05)  # a stray duplicate run would show up here
        assert sorted(seen) == list(range(per_thread * threads))
        assert wrong_thread == []

    asyncio.run(run())


def test_a_burst_wakes_the_loop_once_and_a_failing_item_strands_no_other() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        handoff = Handoff(loop)
        wakeups = 0
        original = loop.call_soon_threadsafe

        def counting(*args: Any) -> asyncio.Handle:
            nonlocal wakeups
            wakeups += 1
            return original(*args)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign,assignment]
        seen: list[int] = []

        def fail(_n: int) -> None:
            raise ValueError("boom")

        def burst() -> None:  # while the loop is busy elsewhere, as it is under load
            handoff.put(seen.append, 1)
            handoff.put(fail, 2)
            handoff.put(seen.append, 3)

        thread = threading.Thread(target=burst)
        thread.start()
        thread.join()  # blocks the loop meanwhile: the burst finds the drain still pending
        await asyncio.sleep(0.05)
        assert seen == [1, 3]
        assert wakeups == 1
        handoff.put(seen.append, 4)  # the flag was cleared: the next item wakes it again
        await asyncio.sleep(0.05)
        assert seen == [1, 3, 4] and wakeups == 2

    asyncio.run(run())
