-- barcodes partitioned by the UTC day of scan_time (db/partitions.py creates and drops the days).
-- Every unique key of a partitioned table must contain the partitioning column: the primary key
-- becomes (id, scan_time) and the UNIQUE key (internal_barcode_id, scan_time). A redelivered scan
-- carries the same scan time as its first copy (the internal ID encodes it), so it still meets
-- that row. The UNIQUE key on dedup_barcode (the "barcode" policy's guard) cannot be global on a
-- partitioned table: that policy now claims each barcode in barcode_first_scans, and the index,
-- all NULL under the default policy, goes.
-- The partition list is filled in by the migration runner (migrate.DAILY_PARTITIONS): one a day from the oldest
-- scan in the table (today if empty) to a week ahead. On a filled table this ALTER copies every
-- row once (docs/capacity.md gives the time per million rows).
ALTER TABLE barcodes
    DROP PRIMARY KEY,
    ADD PRIMARY KEY (id, scan_time),
    DROP INDEX uk_barcodes_internal_barcode_id,
    ADD UNIQUE KEY uk_barcodes_internal_barcode_id (internal_barcode_id, scan_time),
    DROP INDEX uk_barcodes_dedup_barcode
    PARTITION BY RANGE COLUMNS (scan_time) ({{DAILY_PARTITIONS}});

-- Policy "barcode": the first scan of each barcode, claimed in the same transaction as its row.
CREATE TABLE IF NOT EXISTS barcode_first_scans (
    barcode             VARCHAR(64)  NOT NULL,
    internal_barcode_id VARCHAR(128) NOT NULL,
    scan_time           DATETIME(3)  NOT NULL,
    PRIMARY KEY (barcode),
    KEY ix_barcode_first_scans_scan_time (scan_time)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
