-- A scanner key's own rate limit, in scans per second across every ingest process and host
-- (auth/ratelimit.py). NULL: the default, BP_INGEST_KEY_RATE; 0: no limit. A large centre gets a
-- higher one than the default without raising it for every key.
ALTER TABLE scanner_keys ADD COLUMN scans_per_s INT UNSIGNED NULL;
