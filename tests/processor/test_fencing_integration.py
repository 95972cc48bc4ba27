"""A processor whose static membership is taken over recovers by itself (on the real broker).

Fencing makes librdkafka declare the consumer instance dead; before the fix the processor logged
the error and then consumed nothing, for good, while it looked alive.
"""

from __future__ import annotations

import threading
import time
import uuid

import redis
from confluent_kafka import Consumer

from barcode_pipeline import names
from barcode_pipeline.adapters import kafka as kafka_adapter
from barcode_pipeline.config import Settings
from barcode_pipeline.processor import metrics
from barcode_pipeline.processor.service import Processor
from tests.processor.test_processor_integration import (  # the module's fixture and helpers
    _entries_for,
    _group,
    _produce,
    _scan,
    pytestmark,
    settings,
)

__all__ = ["pytestmark", "settings"]


def _wait(done: object, what: str, timeout: float = 30.0) -> None:
    assert callable(done)
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        time.sleep(0.1)


def test_a_fenced_processor_replaces_its_consumer_and_goes_on(settings: Settings) -> None:
    device = f"T-{uuid.uuid4().hex[:8]}"
    group = _group("fenced", settings)
    instance = f"fence-{uuid.uuid4().hex[:8]}"
    r = redis.Redis.from_url(settings.redis.url, decode_responses=True)
    proc = Processor(settings, group=group, instance=instance)
    thread = threading.Thread(target=proc.run, daemon=True)
    thread.start()
    replaced_before = metrics.CONSUMER_REPLACEMENTS._value.get()
    rival: Consumer | None = None
    try:
        _produce(settings, [_scan(device, 1)])
        _wait(lambda: len(_entries_for(r, settings, device)) == 1, "the first scan in Redis")

        # A second consumer under the same instance name: the broker hands it the membership and
        # fences the processor's consumer at its next heartbeat or commit.
        rival = Consumer(kafka_adapter.consumer_config(settings, group, **{"group.instance.id": instance}))
        rival.subscribe([names.TOPIC])
        _wait(lambda: rival is not None and (rival.poll(0.2), bool(rival.assignment()))[1], "rival assigned")
        _produce(settings, [_scan(device, 2)])
        _wait(lambda: len(_entries_for(r, settings, device)) == 2, "a scan produced after the fencing")
        assert metrics.CONSUMER_REPLACEMENTS._value.get() > replaced_before
        assert thread.is_alive(), "one fencing must not stop the processor"
    finally:
        proc.stop()
        thread.join(15)
        if rival is not None:
            rival.close()
        r.close()


def test_a_consumer_that_delivers_nothing_while_records_wait_is_replaced(settings: Settings) -> None:
    """The symptom of a wedged consumer (no error, no records) is enough to replace it."""
    device = f"T-{uuid.uuid4().hex[:8]}"
    group = _group("wedged", settings)
    r = redis.Redis.from_url(settings.redis.url, decode_responses=True)
    proc = Processor(settings, group=group, instance=f"wedge-{uuid.uuid4().hex[:8]}")
    proc.wedged_after_s = 2.0
    thread = threading.Thread(target=proc.run, daemon=True)
    thread.start()
    replaced_before = metrics.CONSUMER_REPLACEMENTS._value.get()
    try:
        _produce(settings, [_scan(device, 1)])
        _wait(lambda: len(_entries_for(r, settings, device)) == 1, "the first scan in Redis")
        stuck = proc.consumer
        stuck.pause(stuck.assignment())  # alive, no error, and it will never deliver again
        _produce(settings, [_scan(device, 2)])
        _wait(lambda: len(_entries_for(r, settings, device)) == 2, "a scan produced after the wedge")
        assert proc.consumer is not stuck
        assert metrics.CONSUMER_REPLACEMENTS._value.get() > replaced_before
    finally:
        proc.stop()
        thread.join(15)
        r.close()
