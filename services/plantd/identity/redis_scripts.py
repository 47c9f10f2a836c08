"""The Lua scripts of the identity Redis store: each is one atomic step of the Store interface.

Redis runs a script alone (no other command interleaves), so a script is the Redis form of the
SQLite store's ``BEGIN IMMEDIATE`` transaction: of two replicas rotating the same refresh token
exactly one sees it live. Every key shares the prefix's hash tag (``plantd:{identity}:``), so on
Redis Cluster all of them live in one slot and scripts may touch keys they compute.

Numbers cross the boundary as strings formatted ``%.17g`` (Lua's ``tostring`` keeps only 14
significant digits, which would round a Unix time to 0.1 ms and drift a bucket).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    source: str

    @property
    def sha(self) -> str:
        return hashlib.sha1(self.source.encode()).hexdigest()  # noqa: S324 - Redis names scripts so


# KEYS: seq, zset, index1..indexN. ARGV: doc key prefix, doc, value1..valueN.
# -> new id, or -i when index i already holds the value (a unique name is taken).
CREATE: Final = Script(
    "create",
    """
for i = 3, #KEYS do
  if redis.call('HEXISTS', KEYS[i], ARGV[i]) == 1 then return -(i - 2) end
end
local id = redis.call('INCR', KEYS[1])
redis.call('SET', ARGV[1] .. id, ARGV[2])
redis.call('ZADD', KEYS[2], id, id)
for i = 3, #KEYS do redis.call('HSET', KEYS[i], ARGV[i], id) end
return id
""",
)

# KEYS: user doc, target doc, link set. ARGV: member, add (1) | remove (0).
# -> -1 no user, -2 no target, else how many members changed (0 | 1).
ASSIGN: Final = Script(
    "assign",
    """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('EXISTS', KEYS[2]) == 0 then return -2 end
if ARGV[2] == '1' then return redis.call('SADD', KEYS[3], ARGV[1]) end
return redis.call('SREM', KEYS[3], ARGV[1])
""",
)

# KEYS: old refresh hash. ARGV: prefix, new hash, now, new created, new expires, keep ms.
# -> {outcome, family, user_id, audience, created, expires} (outcome only for unknown).
ROTATE: Final = Script(
    "rotate",
    """
local p = ARGV[1]
local r = redis.call('HMGET', KEYS[1], 'family', 'user_id', 'audience', 'created', 'expires',
                     'rotated_to', 'revoked')
if not r[1] then return {'unknown'} end
local fam, uid = r[1], r[2]
local old = {r[1], r[2], r[3], r[4], r[5]}
local function revoke_family()
  for _, h in ipairs(redis.call('SMEMBERS', p .. 'fam:' .. fam)) do
    if redis.call('EXISTS', p .. 'rt:' .. h) == 1 then
      redis.call('HSET', p .. 'rt:' .. h, 'revoked', '1')
    end
  end
end
if r[6] then revoke_family(); return {'reused', unpack(old)} end
if r[7] == '1' then revoke_family(); return {'revoked', unpack(old)} end
if tonumber(r[5]) <= tonumber(ARGV[3]) then return {'expired', unpack(old)} end
redis.call('HSET', KEYS[1], 'rotated_to', ARGV[2])
local new = p .. 'rt:' .. ARGV[2]
redis.call('HSET', new, 'family', fam, 'user_id', uid, 'audience', r[3], 'created', ARGV[4],
           'expires', ARGV[5], 'revoked', '0')
redis.call('PEXPIRE', new, ARGV[6])
redis.call('SADD', p .. 'fam:' .. fam, ARGV[2])
redis.call('PEXPIRE', p .. 'fam:' .. fam, ARGV[6])
redis.call('SADD', p .. 'urt:' .. uid, ARGV[2])
redis.call('PEXPIRE', p .. 'urt:' .. uid, ARGV[6])
return {'rotated', unpack(old)}
""",
)

# KEYS: the user's refresh set. ARGV: prefix. -> tokens newly revoked.
REVOKE_USER: Final = Script(
    "revoke_user",
    """
local n = 0
for _, h in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local k = ARGV[1] .. 'rt:' .. h
  if redis.call('EXISTS', k) == 0 then
    redis.call('SREM', KEYS[1], h)
  elseif redis.call('HGET', k, 'revoked') ~= '1' then
    redis.call('HSET', k, 'revoked', '1')
    n = n + 1
  end
end
return n
""",
)

# KEYS: not_before hash, not_before zset. ARGV: subject, ts. -> the stored value (never lower).
BUMP: Final = Script(
    "bump",
    """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and tonumber(cur) >= tonumber(ARGV[2]) then return cur end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return ARGV[2]
""",
)

# plantd.identity.throttle.take in Lua. KEYS: bucket. ARGV: capacity, rate, now, cost.
# -> {allowed 1|0, retry_after}. The key expires once it would be full again anyway, so
# per-source buckets of sources that went away cost no memory.
TAKE: Final = Script(
    "take",
    """
local cap, rate, now, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
                             tonumber(ARGV[4])
local r = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens, updated = cap, now
if r[1] then tokens, updated = tonumber(r[1]), tonumber(r[2]) end
local level = math.min(cap, tokens + math.max(0, now - updated) * rate)
local ok, retry = 0, (cost - level) / rate
if level >= cost then ok, level, retry = 1, level - cost, 0 end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', level),
           'updated', string.format('%.17g', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(((cap - level) / rate + 1) * 1000))
return {ok, string.format('%.17g', retry)}
""",
)

# KEYS: failures hash. ARGV: now. -> the new count.
FAIL: Final = Script(
    "fail",
    """
local n = redis.call('HINCRBY', KEYS[1], 'count', 1)
redis.call('HSET', KEYS[1], 'last', ARGV[1])
return n
""",
)

# plantd.identity.throttle.Backoff.wait, then count the attempt. KEYS: failures hash.
# ARGV: now, free_failures, base_s, max_s, max_failures, critical (1|0).
# -> '0' (counted in advance), the seconds to wait, or 'inf' (locked; nothing changed).
BEGIN: Final = Script(
    "begin",
    """
local now = tonumber(ARGV[1])
local r = redis.call('HMGET', KEYS[1], 'count', 'last')
local count, last = tonumber(r[1] or '0'), tonumber(r[2] or '0')
local free, base, maxs, maxf = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]),
                               tonumber(ARGV[5])
if count >= maxf and ARGV[6] ~= '1' then return 'inf' end
local delay = 0
if count - free >= 0 then delay = math.min(maxs, base * 2 ^ math.min(count - free, 30)) end
local wait = last + delay - now
if wait > 0 then return string.format('%.17g', wait) end
redis.call('HINCRBY', KEYS[1], 'count', 1)
redis.call('HSET', KEYS[1], 'last', ARGV[1])
return '0'
""",
)

# KEYS: totp hash. ARGV: user id, step. -> 1 accepted, 0 replay (same or older step).
TOTP: Final = Script(
    "totp",
    """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and tonumber(cur) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
""",
)

# KEYS: module doc, modules zset, key index. ARGV: name, public key, doc, max modules.
# -> 0 ok, 1 name taken, 2 key taken, 3 full.
ADD_MODULE: Final = Script(
    "add_module",
    """
if redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
if redis.call('HEXISTS', KEYS[3], ARGV[2]) == 1 then return 2 end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return 3 end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[1])
return 0
""",
)

# KEYS: module doc, modules zset, key index. ARGV: name, public key. -> the doc or nil.
DELETE_MODULE: Final = Script(
    "delete_module",
    """
local doc = redis.call('GET', KEYS[1])
if not doc then return false end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('HGET', KEYS[3], ARGV[2]) == ARGV[1] then redis.call('HDEL', KEYS[3], ARGV[2]) end
return doc
""",
)

# KEYS: join zset (hash -> expiry), token key. ARGV: now, expires, grant, max live, ttl ms.
# -> 0 ok, 1 too many outstanding.
ADD_JOIN: Final = Script(
    "add_join",
    """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 1 end
redis.call('ZADD', KEYS[1], ARGV[2], KEYS[2])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[5])
return 0
""",
)

# KEYS: join zset, token key. ARGV: now. -> the grant (once), or nil.
TAKE_JOIN: Final = Script(
    "take_join",
    """
local grant = redis.call('GET', KEYS[2])
local exp = redis.call('ZSCORE', KEYS[1], KEYS[2])
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], KEYS[2])
if not grant or not exp or tonumber(exp) <= tonumber(ARGV[1]) then return false end
return grant
""",
)

SCRIPTS: Final = (
    CREATE,
    ASSIGN,
    ROTATE,
    REVOKE_USER,
    BUMP,
    TAKE,
    FAIL,
    BEGIN,
    TOTP,
    ADD_MODULE,
    DELETE_MODULE,
    ADD_JOIN,
    TAKE_JOIN,
)
