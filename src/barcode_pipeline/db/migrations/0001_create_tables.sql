-- Core tables. Portable across MariaDB 10.6+ and MySQL 8: no MariaDB-only syntax.
-- utf8mb4_bin: identifiers and barcodes are compared byte for byte ("abc" and "ABC" are two
-- barcodes), which the UNIQUE indexes rely on. DATETIME(3) columns hold UTC (workers set the
-- session time zone to +00:00, so the CURRENT_TIMESTAMP(3) default is UTC too).
-- IF NOT EXISTS: DDL commits implicitly, so a half-applied file must be safe to run again.

CREATE TABLE IF NOT EXISTS barcodes (
    id                  BIGINT       NOT NULL AUTO_INCREMENT,
    internal_barcode_id VARCHAR(128) NOT NULL,
    scan_id             VARCHAR(64)  NOT NULL,
    original_barcode    VARCHAR(64)  NOT NULL,
    center_id           VARCHAR(64)  NOT NULL,
    device_id           VARCHAR(64)  NOT NULL,
    scan_time           DATETIME(3)  NOT NULL,
    processed_time      DATETIME(3)  NOT NULL,
    saved_time          DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    -- NULL under dedup policy "event"; the barcode under policy "barcode", so the first scan of a
    -- barcode wins in the database too (a UNIQUE index admits any number of NULLs).
    dedup_barcode       VARCHAR(64)  NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uk_barcodes_internal_barcode_id (internal_barcode_id),
    UNIQUE KEY uk_barcodes_dedup_barcode (dedup_barcode),
    KEY ix_barcodes_device_scan_time (device_id, scan_time),
    KEY ix_barcodes_saved_time (saved_time)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS device_center_mapping (
    id          BIGINT       NOT NULL AUTO_INCREMENT,
    device_id   VARCHAR(64)  NOT NULL,
    center_id   VARCHAR(64)  NOT NULL,
    center_name VARCHAR(128) NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uk_device_center_mapping_device_id (device_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The legacy synchronous baseline writes here: same shape as barcodes, so the two are comparable.
CREATE TABLE IF NOT EXISTS legacy_barcodes (
    id                  BIGINT       NOT NULL AUTO_INCREMENT,
    internal_barcode_id VARCHAR(128) NOT NULL,
    scan_id             VARCHAR(64)  NOT NULL,
    original_barcode    VARCHAR(64)  NOT NULL,
    center_id           VARCHAR(64)  NOT NULL,
    device_id           VARCHAR(64)  NOT NULL,
    scan_time           DATETIME(3)  NOT NULL,
    processed_time      DATETIME(3)  NOT NULL,
    saved_time          DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    dedup_barcode       VARCHAR(64)  NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uk_legacy_barcodes_internal_barcode_id (internal_barcode_id),
    UNIQUE KEY uk_legacy_barcodes_dedup_barcode (dedup_barcode),
    KEY ix_legacy_barcodes_device_scan_time (device_id, scan_time),
    KEY ix_legacy_barcodes_saved_time (saved_time)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
