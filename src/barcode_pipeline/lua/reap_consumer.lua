-- Forget a dead consumer of a stream group, atomically, only if it is still dead and owns nothing.
-- Without the re-check, a worker restarting between the caller's XINFO and the DELCONSUMER would
-- lose the entries it had just read.
-- KEYS[1] stream, KEYS[2] the consumer's heartbeat key; ARGV[1] group, ARGV[2] consumer.
-- Returns -1 when the consumer is alive again or owns entries, else DELCONSUMER's reply.
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return -1 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
