"""Persistence workers: Redis stream shards -> batched multi-row INSERTs -> XACK after COMMIT.

``batcher`` (when to write), ``entries`` (what is storable), ``storage`` (the DB write and the
center cache), ``recovery`` (heartbeats, takeover of dead workers' entries, idle claims, DLQ),
``retention`` (deleting acknowledged entries), ``service`` (the main loop) and ``commands``
(``barcode-pipeline worker --name NAME``).
"""
