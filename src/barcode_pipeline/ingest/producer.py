"""Bridge between asyncio request handlers and the one confluent-kafka Producer of this process.

Why a bridge: ``Producer.produce`` is non-blocking but its delivery reports only arrive through
``poll()``. A background thread polls (the GIL is released while librdkafka waits) and hands each
report to the event loop with ``call_soon_threadsafe``, so a request awaits its own confirmation
without a flush per request and without blocking the loop. A batch request waits on one future for
all its scans: the poll thread counts their reports and wakes the loop once, when the last arrives.

Why a breaker: while Kafka is unreachable every write would wait the full produce timeout. Once a
write times out or a metadata probe fails, :meth:`KafkaBridge.send` fails at once instead; a
monitor thread keeps probing and lets traffic through again as soon as Kafka answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from barcode_pipeline import names
from barcode_pipeline.adapters.kafka import admin, ensure_topics, producer_config
from barcode_pipeline.config import Settings
from barcode_pipeline.domain import ScanEvent
from barcode_pipeline.errors import DeliveryError
from barcode_pipeline.ingest.metrics import IngestMetrics

log = logging.getLogger(__name__)


class RepeatFilter(logging.Filter):
    """Let an identical message through at most once per ``interval`` seconds.

    While a broker is down librdkafka reports every reconnect attempt (several per second), always
    with the same text; the bridge logs the state change itself, so the repeats are only noise.
    """

    def __init__(self, interval: float = 60.0, max_keys: int = 1000) -> None:
        super().__init__()
        self._interval = interval
        self._max_keys = max_keys
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = record.getMessage()
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            return False
        if len(self._last) >= self._max_keys:
            self._last.clear()
        self._last[key] = now
        return True


# librdkafka's own logs go here (forwarded from the poll thread) instead of raw stderr.
_librdkafka_log = logging.getLogger("barcode_pipeline.ingest.librdkafka")
_librdkafka_log.addFilter(RepeatFilter())


def describe(exc: BaseException) -> str:
    """The readable text of a Kafka error (``KafkaException`` wraps a ``KafkaError``)."""
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return str(exc.args[0].str())
    return str(exc)


class KafkaUnavailable(DeliveryError):
    """Kafka is known to be unreachable: fail fast rather than queue a write that would time out."""


class DeliveryTimeout(DeliveryError):
    """Kafka did not confirm the write within ``produce_timeout_s``."""


class QueueFull(DeliveryError):
    """The local producer queue is full (Kafka is slower than the incoming traffic)."""


def _settle(fut: asyncio.Future[None], err: KafkaError | None) -> None:
    """Runs on the event loop: complete a request's future unless its timeout already did."""
    if fut.done():
        return
    if err is None:
        fut.set_result(None)
    else:
        fut.set_exception(DeliveryError(f"Kafka rejected the write: {err.str()}", component="kafka"))


class _BatchWaiter:
    """One batch request's delivery state. ``ok`` and ``rejected`` are written on the poll thread
    only; ``expected`` on the loop only (see :meth:`KafkaBridge.send_many` for why that suffices)."""

    __slots__ = ("delivered", "expected", "fut", "ok", "rejected")

    def __init__(self, fut: asyncio.Future[None], size: int) -> None:
        self.fut = fut
        self.ok = bytearray(size)  # 1 where Kafka confirmed the scan at that index
        self.rejected = 0
        self.delivered = 0
        self.expected = size + 1  # never reached until the loop has produced the whole batch

    def complete(self) -> bool:
        return self.delivered >= self.expected


def _settle_batch(fut: asyncio.Future[None]) -> None:
    """Runs on the event loop: every produced scan of a batch has its report."""
    if not fut.done():
        fut.set_result(None)


def topic_problem(metadata: Any) -> str | None:
    """Why the event topic cannot take writes now (``None`` if it can), from cluster metadata."""
    topic = metadata.topics.get(names.TOPIC)
    if topic is None:
        return f"topic {names.TOPIC} does not exist"
    if topic.error is not None:
        return f"topic {names.TOPIC}: {topic.error}"
    if not topic.partitions:
        return f"topic {names.TOPIC} has no partitions"
    leaderless = sum(1 for p in topic.partitions.values() if p.leader < 0)
    if leaderless:
        return f"{leaderless} partition(s) of {names.TOPIC} have no leader"
    return None


class KafkaBridge:
    """One shared idempotent producer (acks=all) behind ``await send(event)``.

    Thread model: ``send``/``send_many`` run on the event loop; delivery callbacks and librdkafka
    logs on the poll thread; reachability probes (and topic creation) on the monitor thread. The
    shared state is a few attributes whose single assignments are atomic under the GIL.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        metrics: IngestMetrics | None = None,
        producer_overrides: dict[str, Any] | None = None,
        down_probe_interval_s: float = 0.5,
        up_probe_interval_s: float = 5.0,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._overrides = dict(producer_overrides or {})
        self._timeout = settings.kafka.produce_timeout_s
        # A probe answers "reachable now?": it must not take as long as a produce timeout.
        self._probe_timeout = min(settings.kafka.produce_timeout_s, 1.0)
        self._down_interval = down_probe_interval_s
        self._up_interval = up_probe_interval_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._producer: Producer | None = None
        self._available = False
        self._reason = "not connected yet"
        self._fatal = False
        self._last_second_opinion = 0.0  # monotonic; see _producer_wedged
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []

    # ----- state -----

    @property
    def available(self) -> bool:
        """Kafka answered the last probe (or confirmed a write since) and the topic has leaders."""
        return self._available

    @property
    def reason(self) -> str:
        """Why the bridge is unavailable (empty when available)."""
        return "" if self._available else self._reason

    def _mark_up(self) -> None:
        if not self._available:
            self._available = True
            log.info("Kafka is reachable; accepting scans")

    def _mark_down(self, reason: str) -> None:
        was_available = self._available
        self._reason = reason
        self._available = False
        if was_available:
            log.warning("Kafka unavailable (%s); answering 503 until it is reachable again", reason)
            self._wake.set()

    # ----- lifecycle -----

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Create the producer, start the threads and probe once (blocking, up to ~1 s if Kafka is down).

        Probing here means a healthy service is ready before its first request; an unreachable Kafka
        does not stop start-up: the service answers 503 and recovers when Kafka appears.
        """
        if self._producer is not None:
            raise RuntimeError("KafkaBridge already started")
        self._loop = loop
        self._producer = self._new_producer()
        self._probe()
        if not self._available:
            log.warning("Kafka not ready at start-up (%s); will keep probing", self._reason)
        for name, target in (("kafka-poll", self._poll_loop), ("kafka-monitor", self._monitor_loop)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        """Stop the threads and flush what is still queued (in-flight requests finished before this)."""
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=self._probe_timeout + 2)
        self._threads.clear()
        producer, self._producer = self._producer, None
        self._available = False
        self._reason = "shut down"
        if producer is None:
            return
        remaining = producer.flush(self._timeout)
        if remaining:
            log.warning("%d message(s) still unconfirmed after flushing for %.1fs", remaining, self._timeout)

    def _new_producer(self) -> Producer:
        conf = producer_config(
            self._settings,
            error_cb=self._on_error,
            logger=_librdkafka_log,
        )
        conf.update(self._overrides)
        return Producer(conf)

    # ----- hot path (event loop) -----

    def _require_producer(self) -> tuple[Producer, asyncio.AbstractEventLoop]:
        producer, loop = self._producer, self._loop
        if producer is None or loop is None:
            raise KafkaUnavailable("the Kafka producer is not running", component="kafka")
        return producer, loop

    def _unavailable(self, count: int) -> KafkaUnavailable:
        if self._metrics is not None:
            self._metrics.delivery_failed("unavailable", count)
        return KafkaUnavailable(self._reason, component="kafka")

    async def send(self, event: ScanEvent) -> None:
        """Produce one event and return once Kafka confirmed it; raise ``DeliveryError`` otherwise."""
        if not self._available:
            raise self._unavailable(1)
        producer, loop = self._require_producer()
        fut: asyncio.Future[None] = loop.create_future()
        started = time.perf_counter()
        try:
            producer.produce(
                names.TOPIC,
                event.to_kafka_value(),
                event.kafka_key,
                on_delivery=partial(self._on_delivery, fut),
            )
        except BufferError as exc:
            self._count_failure("queue_full")
            raise QueueFull("the Kafka producer queue is full", component="kafka") from exc
        except KafkaException as exc:
            self._count_failure("rejected")
            raise DeliveryError(f"produce failed: {describe(exc)}", component="kafka") from exc
        timer = loop.call_at(loop.time() + self._timeout, self._expire, fut)
        try:
            await fut
        except DeliveryTimeout:
            self._count_failure("timeout")
            raise
        except DeliveryError:
            self._count_failure("rejected")
            raise
        finally:
            timer.cancel()
        if self._metrics is not None:
            self._metrics.produce_seconds.observe(time.perf_counter() - started)

    async def send_many(self, events: Sequence[ScanEvent]) -> list[int]:
        """Produce a batch; return the indices Kafka did not confirm within one shared timeout.

        Raises ``KafkaUnavailable`` before producing anything if Kafka is known to be down.

        The poll thread counts the batch's reports and settles its one future when the last one
        arrives. It cannot know how many scans were produced until the loop has finished producing
        (a full queue stops early), so the loop sets ``expected`` afterwards and then checks the
        count itself: whichever side comes second sees the other's write.
        """
        if not events:
            return []
        if not self._available:
            raise self._unavailable(len(events))
        producer, loop = self._require_producer()
        started = time.perf_counter()
        waiter = _BatchWaiter(loop.create_future(), len(events))
        produced = 0
        for index, event in enumerate(events):
            try:
                producer.produce(
                    names.TOPIC,
                    event.to_kafka_value(),
                    event.kafka_key,
                    on_delivery=partial(self._on_batch_delivery, waiter, index),
                )
            except BufferError:
                self._count_failure("queue_full", len(events) - index)
                break
            except KafkaException:
                self._count_failure("rejected")
                continue
            produced += 1
        if not produced:
            return list(range(len(events)))
        waiter.expected = produced
        if waiter.complete():
            _settle_batch(waiter.fut)
        done, _ = await asyncio.wait({waiter.fut}, timeout=self._timeout)
        # After a timeout a late report may still land in ``ok``: the scan is then counted as
        # failed although Kafka has it, and its resend is absorbed by the duplicate filter.
        confirmed = bytes(waiter.ok)
        failed = [index for index, ok in enumerate(confirmed) if not ok]
        if not done:
            waiter.fut.cancel()
            unreported = produced - waiter.delivered
            self._mark_down(f"Kafka did not confirm {unreported} write(s) within {self._timeout:g}s")
            self._count_failure("timeout", max(0, unreported))
        if waiter.rejected:
            self._count_failure("rejected", waiter.rejected)
        if self._metrics is not None and len(failed) < len(events):
            self._metrics.produce_seconds.observe(time.perf_counter() - started)
        return failed

    def _expire(self, fut: asyncio.Future[None]) -> None:
        """Event-loop timer: the write was not confirmed in time."""
        if fut.done():
            return
        fut.set_exception(
            DeliveryTimeout(f"Kafka did not confirm the write within {self._timeout:g}s", component="kafka")
        )
        self._mark_down(f"a write was not confirmed within {self._timeout:g}s")

    def _count_failure(self, reason: str, count: int = 1) -> None:
        if self._metrics is not None:
            self._metrics.delivery_failed(reason, count)

    # ----- poll thread -----

    def _on_delivery(self, fut: asyncio.Future[None], err: KafkaError | None, msg: Message) -> None:
        loop = self._loop
        if loop is None:
            return
        self._observe_delivery(err, msg)
        # RuntimeError: the loop closed during shutdown, so nobody awaits this future any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, fut, err)

    def _on_batch_delivery(
        self, waiter: _BatchWaiter, index: int, err: KafkaError | None, msg: Message
    ) -> None:
        loop = self._loop
        if loop is None:
            return
        self._observe_delivery(err, msg)
        if err is None:
            waiter.ok[index] = 1
        else:
            waiter.rejected += 1
        waiter.delivered += 1
        if waiter.complete():
            with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
                loop.call_soon_threadsafe(_settle_batch, waiter.fut)

    def _observe_delivery(self, err: KafkaError | None, msg: Message) -> None:
        """Poll thread: the delivery metric, and what a report says about Kafka's reachability."""
        if err is None:
            latency = msg.latency()
            if self._metrics is not None and latency is not None:
                self._metrics.kafka_delivery_seconds.observe(latency)
            if not self._available and not self._stop.is_set():
                self._mark_up()  # a confirmed write is the best evidence Kafka is back
        elif err.code() == KafkaError._MSG_TIMED_OUT:
            self._mark_down(f"librdkafka gave up on a write: {err.str()}")

    def _on_error(self, err: KafkaError) -> None:
        """librdkafka's error callback: most errors are transient and retried internally."""
        if err.fatal():
            log.error("fatal Kafka producer error, replacing the producer: %s", err.str())
            self._fatal = True
            self._mark_down(f"fatal producer error: {err.str()}")
            self._wake.set()
        elif err.code() == KafkaError._ALL_BROKERS_DOWN:
            if self._available:
                log.warning("all Kafka brokers are down: %s", err.str())
            self._wake.set()  # let the monitor confirm with a probe (an idle disconnect also says this)
        else:
            log.debug("Kafka client error: %s", err.str())

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            producer = self._producer
            if producer is None:
                return
            try:
                producer.poll(0.2)
            except Exception:  # a callback raised: keep serving the other requests
                log.exception("error while polling the Kafka producer")

    # ----- monitor thread -----

    def _monitor_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._up_interval if self._available else self._down_interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                if self._fatal:
                    self._replace_producer()
                self._probe()
            except Exception:
                log.exception("Kafka monitor iteration failed")
                self._mark_down("monitor error")

    def _probe(self) -> None:
        """Ask the cluster for metadata through the producer's own connections; create topics if absent."""
        producer = self._producer
        if producer is None:
            return
        try:
            metadata = producer.list_topics(timeout=self._probe_timeout)
            if not {names.TOPIC, names.DLT_TOPIC} <= set(metadata.topics):
                ensure_topics(self._settings, timeout=max(self._probe_timeout, 5.0))
                metadata = producer.list_topics(timeout=self._probe_timeout)
        except (KafkaException, DeliveryError) as exc:
            self._mark_down(f"Kafka unreachable: {describe(exc)}")
            if self._producer_wedged():
                log.warning("Kafka answers a new client but not this producer; replacing the producer")
                self._fatal = True
                self._wake.set()
            return
        problem = topic_problem(metadata)
        if problem is None:
            self._mark_up()
        else:
            self._mark_down(problem)

    def _producer_wedged(self, every_s: float = 2.0) -> bool:
        """Ask a fresh client whether Kafka is really down (at most every ``every_s`` seconds).

        After a mix of broker kills, pauses and clean restarts, one ingest process's producer was
        seen failing every metadata request with "broker transport failure" for good, while the
        broker was up and its sibling process had reconnected (``chaos nemesis``, seed 1). A
        producer that cannot see a broker a new client sees is beyond waiting for: replace it.
        """
        now = time.monotonic()
        if now - self._last_second_opinion < every_s:
            return False
        self._last_second_opinion = now
        try:
            metadata = admin(self._settings).list_topics(timeout=self._probe_timeout)
        except KafkaException:
            return False  # Kafka is down for everyone: keep waiting for it
        return bool(metadata.brokers) and topic_problem(metadata) is None

    def _replace_producer(self) -> None:
        """After a fatal (idempotence) error the producer is unusable: fail its queue, start a new one."""
        old = self._producer
        self._producer = self._new_producer()
        self._fatal = False
        if old is not None:
            old.purge()
            old.flush(0)  # delivers the purge errors, so the waiting requests get their 503 now
