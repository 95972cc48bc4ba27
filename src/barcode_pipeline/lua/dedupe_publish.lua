-- Duplicate filter and publish, atomically, for a chunk of events in one call.
-- KEYS: per event P keys: the marker bucket (a hash), the stream of the event's shard and, when
-- P = 3, the event's legacy one-key marker (upgrade from releases before the hashes); then one
-- last key: the publish counter of the chunk's first shard.
-- ARGV[1] = W, the stream field/value arguments per event (2: one field, the scan as JSON),
-- ARGV[2] = P, keys per event (2 or 3),
-- ARGV[3..] = per event, in KEYS order: the marker field (a digest; '' = no marker, the scan is
-- older than the dedup window), the bucket's expiry (epoch s), then its W stream arguments.
-- Returns one number per event: 1 published, 0 duplicate (marker already present).
-- Atomicity matters: a marker without its entry would silently drop a scan, an entry without its
-- marker would let a redelivery publish it twice. A full Redis (maxmemory, noeviction) refuses the
-- first write of the call, so a refused call has written nothing; once it wrote, it completes.
-- The counter is bumped on every call, even when every event is a duplicate: the replication
-- stream is ordered, so a replica that acknowledges this write (WAIT) also holds every earlier
-- XADD, including those of a previous attempt at the same batch.
local width = tonumber(ARGV[1])
local per = tonumber(ARGV[2])
local stride = 2 + width
local out = {}
for e = 0, math.floor(#KEYS / per) - 1 do
  local k = e * per
  local a = 3 + e * stride
  local fresh = 1
  if per == 3 and redis.call('EXISTS', KEYS[k + 3]) == 1 then
    fresh = 0
  elseif ARGV[a] ~= '' then
    fresh = redis.call('HSETNX', KEYS[k + 1], ARGV[a], '')
    if fresh == 1 then
      redis.call('EXPIREAT', KEYS[k + 1], ARGV[a + 1])
    end
  end
  if fresh == 1 then
    redis.call('XADD', KEYS[k + 2], '*', unpack(ARGV, a + 2, a + 1 + width))
  end
  out[e + 1] = fresh
end
if #KEYS % per == 1 then
  redis.call('INCR', KEYS[#KEYS])
end
return out
