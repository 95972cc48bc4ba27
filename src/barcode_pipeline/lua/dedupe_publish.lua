-- Duplicate filter and publish, atomically, for a chunk of events in one call.
-- KEYS: per event two keys, (dedup marker, stream of the event's shard), then one last key: the
-- publish counter of the chunk's first shard.
-- ARGV[1] = marker TTL in seconds, ARGV[2] = W, the number of field/value arguments per event (2: the
-- processor writes one field, the scan as JSON),
-- ARGV[3..] = the events' stream fields, W per event, in KEYS order.
-- Returns one number per event: 1 published, 0 duplicate (marker already present).
-- Atomicity matters: a marker without its entry would silently drop a scan, an entry
-- without its marker would let a redelivery publish it twice.
-- The counter is bumped on every call, even when every event is a duplicate: the replication
-- stream is ordered, so a replica that acknowledges this write (WAIT) also holds every earlier
-- XADD, including those of a previous attempt at the same batch.
local ttl = ARGV[1]
local width = tonumber(ARGV[2])
local out = {}
for e = 0, math.floor(#KEYS / 2) - 1 do
  if redis.call('SET', KEYS[2 * e + 1], '1', 'NX', 'EX', ttl) then
    local first = 3 + e * width
    redis.call('XADD', KEYS[2 * e + 2], '*', unpack(ARGV, first, first + width - 1))
    out[e + 1] = 1
  else
    out[e + 1] = 0
  end
end
if #KEYS % 2 == 1 then
  redis.call('INCR', KEYS[#KEYS])
end
return out
