-- How long the oldest entry no consumer has read yet has been waiting, over several streams.
-- KEYS: the streams; ARGV[1] = consumer group, ARGV[2] = cap on the count.
-- Returns {waiting (counted up to the cap, per stream), age in ms of the oldest waiting entry or -1}.
-- One call instead of three round trips per stream: a standby worker asks this every poll.
-- Counted from the group's last-delivered ID (XINFO's lag can be stale after an AOF restart).
-- Needs groups.lua.
local group, cap = ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local waiting, oldest = 0, -1
for _, stream in ipairs(KEYS) do
  if redis.call('EXISTS', stream) == 1 then
    local start = '-'
    for _, g in ipairs(group_positions(stream)) do
      if g.name == group then start = '(' .. g.last end
    end
    local items = redis.call('XRANGE', stream, start, '+', 'COUNT', cap)
    if #items > 0 then
      waiting = waiting + #items
      local ms = tonumber(string.match(items[1][1], '^(%d+)'))
      if now_ms - ms > oldest then oldest = now_ms - ms end
    end
  end
end
return {waiting, oldest}
