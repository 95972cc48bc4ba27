-- Move one dead letter back to its shard stream: delete it from the DLQ and re-add its original
-- fields, atomically, so a second replay of the same entry finds nothing to delete and adds nothing.
-- KEYS[1] the DLQ stream, KEYS[2] the shard stream; ARGV[1] the DLQ entry id, ARGV[2..] field/value pairs.
-- Returns the new entry id, or false when the entry was already gone.
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return false end
return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
