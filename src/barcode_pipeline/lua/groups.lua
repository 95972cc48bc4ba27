-- Shared by the scripts that read consumer-group positions; lua_source() puts it in front of them.
-- group_positions(stream): {{name = ..., last = <last-delivered-id>}, ...} from XINFO GROUPS.
local function group_positions(stream)
  local out = {}
  for _, info in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local name, last
    for i = 1, #info, 2 do
      if info[i] == 'name' then name = info[i + 1] end
      if info[i] == 'last-delivered-id' then last = info[i + 1] end
    end
    out[#out + 1] = {name = name, last = last}
  end
  return out
end
