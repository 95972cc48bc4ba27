"""barcode-pipeline: asynchronous, exactly-once ingest of barcode scans.

scanner -> ingest (HTTP) -> Kafka -> processor -> Redis Streams -> workers -> MariaDB/MySQL
"""

__version__ = "0.1.0"
