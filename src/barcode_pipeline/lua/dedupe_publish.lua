-- Duplicate filter and publish in one atomic step.
-- KEYS[1] = dedup marker key, KEYS[2] = stream of the event's shard
-- ARGV[1] = marker TTL in seconds, ARGV[2..] = stream entry field/value pairs
-- Returns the new entry id, or false when the marker already existed (a duplicate).
-- Atomicity matters: a marker without its entry would silently drop a scan, an entry
-- without its marker would let a redelivery publish it twice.
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
end
return false
