-- The duplicate guard keys on the scan's own identity: UNIQUE (device_id, scan_time, scan_id).
-- The internal ID is a pure function of those three and the configured zone
-- (DLV-{deviceId}-{yyMMdd}-{ULID}, ULID time = scanTime, random part = hash(deviceId, scanId)), so
-- within one zone two rows collide on this key exactly when their internal IDs are equal: the same
-- guard as 0005's, with three differences, all in its favour:
-- - the key no longer repeats the device ID and the day inside the internal ID: about 20 B less a
--   row, and a deviceId character costs 3 B instead of 4 (docs/capacity.md measures it);
-- - a change of BP_TIME_ZONE between a scan's deliveries no longer stores it twice;
-- - two scans whose 80-bit hashes collide are both kept instead of one being taken for the other.
-- Dropping and adding an index is done in place, partition by partition (no table copy).
ALTER TABLE barcodes
    DROP INDEX uk_barcodes_device_scan,
    ADD UNIQUE KEY uk_barcodes_device_scan_id (device_id, scan_time, scan_id);
