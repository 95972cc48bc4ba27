-- Delete the entries of each stream that every consumer group has read and acknowledged, once
-- they are older than a retention age.
-- KEYS: the streams; ARGV[1] = '~' (whole radix-tree nodes only: cheap, the normal case) or '=';
-- ARGV[2] = retention in ms (acked entries younger than this stay, for inspection).
-- Returns the number of entries deleted.
-- The bound per stream is the lowest, over its groups, of the oldest pending ID and the ID right
-- after the last delivered one: everything below it was delivered and acked, so no worker needs
-- it again. It is lowered further to now - retention. A stream without any group is left alone
-- (nobody has read it). One call, so the bound cannot go stale between reading it and trimming.
-- Needs groups.lua.
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function lower(a, b)
  if a == nil then return b end
  local ams, aseq = parse(a)
  local bms, bseq = parse(b)
  if bms < ams or (bms == ams and bseq < aseq) then return b end
  return a
end
local age_bound = nil
if tonumber(ARGV[2]) > 0 then
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  age_bound = string.format('%d', math.max(0, now_ms - tonumber(ARGV[2]))) .. '-0'
end
local deleted = 0
for _, stream in ipairs(KEYS) do
  if redis.call('EXISTS', stream) == 1 then
    local bound = nil
    for _, g in ipairs(group_positions(stream)) do
      local ms, seq = string.match(g.last, '^(%d+)-(%d+)$')
      bound = lower(bound, ms .. '-' .. string.format('%d', tonumber(seq) + 1))
      local pending = redis.call('XPENDING', stream, g.name)
      if tonumber(pending[1]) > 0 then bound = lower(bound, pending[2]) end
    end
    if bound ~= nil then
      if age_bound ~= nil then bound = lower(bound, age_bound) end
      deleted = deleted + redis.call('XTRIM', stream, 'MINID', ARGV[1], bound)
    end
  end
end
return deleted
