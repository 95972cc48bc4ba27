-- Scanner API keys (issue 11). Only a SHA-256 digest of each key is stored: keys are 256-bit random
-- tokens, so a fast digest cannot be brute-forced and needs no salt or slow hash. A revoked key keeps
-- its row (revoked_at set), so its name stays taken and its use is logged as "revoked", not "unknown".
-- device_patterns: comma-separated glob patterns on deviceId (e.g. "SEOUL-CENTER-PC-*").
CREATE TABLE IF NOT EXISTS scanner_keys (
    id              BIGINT        NOT NULL AUTO_INCREMENT,
    name            VARCHAR(64)   NOT NULL,
    key_digest      CHAR(64)      NOT NULL,
    device_patterns VARCHAR(1024) NOT NULL,
    created_at      DATETIME(3)   NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    revoked_at      DATETIME(3)   NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uk_scanner_keys_name (name),
    UNIQUE KEY uk_scanner_keys_key_digest (key_digest)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
