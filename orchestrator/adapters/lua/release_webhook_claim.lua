-- Drop a webhook delivery's claim, if it is still this delivery's.
--
-- KEYS[1]  the receipt key ('certfleet:webhook:{webhook-id}').
-- ARGV[1]  the claim token this delivery set ('claim:' and 16 hex digits).
-- Returns 1 when the claim was dropped, 0 when the key holds something else (an
-- answer, another delivery's claim) or nothing.
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
