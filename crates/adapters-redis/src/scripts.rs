//! The store's Lua scripts: what must happen in one step on the server
//! (several keys written together, or a read and a write with nothing in
//! between) and in one round trip.

/// `put`: KEYS[1] the value's key, KEYS[2..] its index sets; ARGV[1] the
/// value, ARGV[2] its lifetime in milliseconds. Every index is checked
/// before anything is written, so a key of another type in an index's place
/// fails the call without writing half of it. An index's expiry only grows
/// (it must outlive every member); a set without one gets one, so no key is
/// left without an expiry. Answers 1.
pub const PUT: &str = r"
local ttl = tonumber(ARGV[2])
for i = 2, #KEYS do
  local kind = redis.call('TYPE', KEYS[i])['ok']
  if kind ~= 'set' and kind ~= 'none' then
    return redis.error_reply('WRONGTYPE an index is not a set')
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
for i = 2, #KEYS do
  redis.call('SADD', KEYS[i], KEYS[1])
  if redis.call('PTTL', KEYS[i]) < ttl then
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
end
return 1
";

/// `delete_if`: deletes KEYS[1] only while it holds ARGV[1] (a lease given
/// back by its holder, not by whoever took it after it expired). Answers
/// 1 when deleted, else 0.
pub const DELETE_IF: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// `delete_indexed`: deletes every key named in the set KEYS[1] (full key
/// names, prefix included), then the set. Answers how many keys existed:
/// members that expired on their own do not count.
pub const DELETE_INDEXED: &str = r"
local deleted = 0
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  deleted = deleted + redis.call('DEL', key)
end
redis.call('DEL', KEYS[1])
return deleted
";
