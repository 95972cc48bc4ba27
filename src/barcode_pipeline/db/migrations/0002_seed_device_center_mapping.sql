-- The three Seoul scanner PCs. The no-op ON DUPLICATE KEY UPDATE makes a re-run harmless and never
-- overwrites a mapping an operator has changed since.

INSERT INTO device_center_mapping (device_id, center_id, center_name) VALUES
    ('SEOUL-CENTER-PC-001', 'CENTER-1', 'Seoul Center 1'),
    ('SEOUL-CENTER-PC-002', 'CENTER-2', 'Seoul Center 2'),
    ('SEOUL-CENTER-PC-003', 'CENTER-3', 'Seoul Center 3')
ON DUPLICATE KEY UPDATE device_id = device_id;
