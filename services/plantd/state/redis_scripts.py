"""Lua that runs a whole batch of state operations as ONE Redis command.

Why one command: the Python side pays per command (packing, a reply to parse, an await), not
per key; a batch of 100 requests as one EVALSHA costs about what one request does. Each
operation is atomic (the whole script is), and every key it touches is declared in KEYS.

Layout under the prefix P (default ``plantd:``), for scope S:

* ``P scopes`` (set)  - the scope index
* ``P revs``   (hash) - S -> last revision; outlives the scope so revisions never repeat
* ``P ttl``    (zset) - S -> earliest expiry in S (ms), for the sweeper
* ``P s:S:d``  (hash) - key -> value (the scope's data, readable with HGETALL)
* ``P s:S:v``  (hash) - key -> version (the revision of its last write)
* ``P s:S:x``  (zset) - key -> expiry (ms since the epoch)
* ``P s:S:log`` (stream) - change history: one entry per write operation, id
  ``<last revision>-0``, fields ``o`` op, ``n`` revisions taken, ``t`` time, then ``k`` key
  (and ``v`` value for set) per key, in revision order; entries whose last revision is older
  than the newest ``history`` revisions are trimmed (XADD MINID). One entry per operation, not
  per key: an XADD costs about as much as the rest of a write.

BATCH: KEYS = scopes, revs, ttl, then d, v, x, log for each scope slot 1..n.
ARGV = history, max_reply_bytes, max_batch_reply_bytes, max_value_bytes, max_request_bytes,
then per operation: opcode, slot (0: none), scope, argc, argc arguments.
Reply: one entry per operation, shaped as documented at each op below. The time comes from
Redis (TIME), once per batch, so every worker shares one clock. Numbers are formatted with %d:
Lua would print large doubles as 1.7e+12.

Read budget: the reads that return values (get, snapshot, changes) count the bytes of the keys
and values they would return and stop before returning more than ``min(max_reply_bytes, what
is left of max_batch_reply_bytes for this batch)``: a get or snapshot over it answers
``{'TOO_LARGE', size, room}`` (room: what was left of the batch budget) without reading the
values; changes-since ends its page there (``more``). Sizes come from HSTRLEN, and only when
the worst case (every value at max_value_bytes) would not fit: a 10-key get of small values
never probes (the common path stays one HMGET).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

OP_GET: Final = "g"
OP_SET: Final = "s"
OP_DELETE: Final = "d"
OP_CREATE_SCOPE: Final = "c"
OP_DELETE_SCOPE: Final = "r"
OP_READ_ALL: Final = "a"
OP_CHANGES: Final = "h"
OP_SCOPES: Final = "l"
OP_EXISTS: Final = "e"

_PRELUDE = """
local function s(n) return string.format('%d', n) end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- one history entry for revisions last-n+1..last; fields = {'k', key, ['v', value], ...}
local function log(stream, history, last, n, op, fields, now)
  local minid = last - tonumber(history) + 1
  if minid < 1 then minid = 1 end
  redis.call('XADD', stream, 'MINID', s(minid), s(last) .. '-0',
             'o', op, 'n', s(n), 't', s(now), unpack(fields))
end
-- K (one per scope slot, reused by every op of the batch on that scope) caches whether the
-- scope exists and whether it has TTLs; the ops that change either update the cache.
local function scope_exists(K)
  if K.exists == nil then K.exists = redis.call('SISMEMBER', K.scopes, K.scope) == 1 end
  return K.exists
end
local function has_x(K)
  if K.hasx == nil then K.hasx = redis.call('EXISTS', K.x) == 1 end
  return K.hasx
end
-- B: the read budget of this batch (see the module docstring); B.room shrinks as reads spend.
local function budget_limit(B)
  if B.room < B.per_reply then return B.room end
  return B.per_reply
end
-- Would the keys and values of `keys` in hash h pass lim? The worst case (every value at
-- maxval) is summed first: when it fits, nothing is probed (the common path); otherwise
-- HSTRLEN per key, stopping at the first past lim. -> the size found when over lim, else nil
local function over(h, keys, lim, maxval)
  local size = 0
  for i = 1, #keys do size = size + #keys[i] end
  if size + #keys * maxval <= lim then return nil end
  size = 0
  for i = 1, #keys do
    local n = redis.call('HSTRLEN', h, keys[i])
    if n > 0 then size = size + #keys[i] + n end
    if size > lim then return size end
  end
  return nil
end
-- The bytes of the keys whose value was read (false: absent) and of those values.
local function read_size(keys, vals)
  local size = 0
  for i = 1, #keys do
    if vals[i] then size = size + #keys[i] + #vals[i] end
  end
  return size
end
-- HMGET/ZMSCORE of many fields, in chunks: Lua's unpack refuses more than ~8000 values.
local function mget(cmd, h, keys)
  if #keys <= 1000 then return redis.call(cmd, h, unpack(keys)) end
  local out = {}
  for i = 1, #keys, 1000 do
    local part = redis.call(cmd, h, unpack(keys, i, math.min(i + 999, #keys)))
    for j = 1, #part do out[#out + 1] = part[j] end
  end
  return out
end
-- the live version of key (0 when absent or expired)
local function live_version(K, key, now)
  local v = redis.call('HGET', K.v, key)
  if not v then return 0 end
  local e = redis.call('ZSCORE', K.x, key)
  if e and tonumber(e) <= now then return 0 end
  return tonumber(v)
end
"""

# a = keys  ->  0 (no scope) | {'TOO_LARGE', size, room} | {values, versions, expiries}
_GET = """
local function op_get(K, scope, a, now, maxlen, B)
  if not scope_exists(K) then return 0 end
  local lim = budget_limit(B)
  local exps = {}
  local live = a
  if has_x(K) then
    exps = mget('ZMSCORE', K.x, a)
    live = {}
    for i = 1, #a do
      if not (exps[i] and tonumber(exps[i]) <= now) then live[#live + 1] = a[i] end
    end
  end
  local big = over(K.d, live, lim, B.maxval)
  if big then return {'TOO_LARGE', s(big), s(B.room)} end
  local vals = mget('HMGET', K.d, a)
  local vers = mget('HMGET', K.v, a)
  if #live < #a then
    for i = 1, #a do
      if exps[i] and tonumber(exps[i]) <= now then vals[i] = false; vers[i] = false end
    end
  end
  -- counted again as read: a value stored before max_value_bytes was lowered may be larger
  local size = read_size(a, vals)
  if size > lim then return {'TOO_LARGE', s(size), s(B.room)} end
  B.room = B.room - size
  return {vals, vers, exps}
end
"""

# a = create(0|1), then per item: key, value, ttl_ms|'', if_version|''
#   -> {'SCOPE_NOT_FOUND'} | {'CONFLICT', {key, expected, actual, ...}}
#      | {'OK', first_revision, now, created(0|1)}
_SET = """
local function op_set(K, scope, a, now, maxlen, B)
  local exists = scope_exists(K)
  if not exists and a[1] ~= '1' then return {'SCOPE_NOT_FOUND'} end
  local n = (#a - 1) / 4
  local lost = {}
  for i = 0, n - 1 do
    local b = 2 + i * 4
    if a[b + 3] ~= '' then
      local cur = 0
      if exists then cur = live_version(K, a[b], now) end
      if cur ~= tonumber(a[b + 3]) then
        lost[#lost + 1] = a[b]; lost[#lost + 1] = a[b + 3]; lost[#lost + 1] = s(cur)
      end
    end
  end
  if #lost > 0 then return {'CONFLICT', lost} end
  local created = 0
  if not exists then
    redis.call('SADD', K.scopes, scope)
    K.exists = true
    created = 1
    local r = redis.call('HINCRBY', K.revs, scope, 1)
    log(K.log, maxlen, r, 1, 'create-scope', {}, now)
  end
  local first = redis.call('HINCRBY', K.revs, scope, n) - n + 1
  local x = has_x(K)
  local dargs, vargs, largs = {}, {}, {}
  local minexp = nil
  for i = 0, n - 1 do
    local b = 2 + i * 4
    local key, val, ttl = a[b], a[b + 1], a[b + 2]
    local r = first + i
    dargs[#dargs + 1] = key; dargs[#dargs + 1] = val
    vargs[#vargs + 1] = key; vargs[#vargs + 1] = s(r)
    if ttl ~= '' then
      local exp = now + tonumber(ttl)
      redis.call('ZADD', K.x, s(exp), key)
      x = true
      K.hasx = true
      if minexp == nil or exp < minexp then minexp = exp end
    elseif x then
      redis.call('ZREM', K.x, key)
    end
    largs[#largs + 1] = 'k'; largs[#largs + 1] = key
    largs[#largs + 1] = 'v'; largs[#largs + 1] = val
  end
  log(K.log, maxlen, first + n - 1, n, 'set', largs, now)
  redis.call('HSET', K.d, unpack(dargs))
  redis.call('HSET', K.v, unpack(vargs))
  if minexp then redis.call('ZADD', K.ttl, 'LT', s(minexp), scope) end
  return {'OK', first, s(now), created}
end
"""

# a = per item: key, if_version|''
#   -> {'SCOPE_NOT_FOUND'} | {'CONFLICT', {...}} | {'OK', {found 0|1...}, revision, now}
_DELETE = """
local function op_delete(K, scope, a, now, maxlen, B)
  if not scope_exists(K) then return {'SCOPE_NOT_FOUND'} end
  local n = #a / 2
  local live = {}
  local lost = {}
  for i = 0, n - 1 do
    local key, ifv = a[1 + i * 2], a[2 + i * 2]
    if live[key] == nil then live[key] = live_version(K, key, now) end
    if ifv ~= '' and live[key] ~= tonumber(ifv) then
      lost[#lost + 1] = key; lost[#lost + 1] = ifv; lost[#lost + 1] = s(live[key])
    end
  end
  if #lost > 0 then return {'CONFLICT', lost} end
  local found, gone, seen = {}, {}, {}
  for i = 0, n - 1 do
    local key = a[1 + i * 2]
    if live[key] > 0 then
      found[i + 1] = 1
      if not seen[key] then seen[key] = true; gone[#gone + 1] = key end
    else
      found[i + 1] = 0
    end
  end
  local rev
  if #gone > 0 then
    redis.call('HDEL', K.d, unpack(gone))
    redis.call('HDEL', K.v, unpack(gone))
    if has_x(K) then redis.call('ZREM', K.x, unpack(gone)) end
    local first = redis.call('HINCRBY', K.revs, scope, #gone) - #gone + 1
    local largs = {}
    for j = 1, #gone do largs[#largs + 1] = 'k'; largs[#largs + 1] = gone[j] end
    rev = first + #gone - 1
    log(K.log, maxlen, rev, #gone, 'delete', largs, now)
  else
    rev = tonumber(redis.call('HGET', K.revs, scope) or '0')
  end
  return {'OK', found, rev, s(now)}
end
"""

# -> {'SCOPE_EXISTS'} | {'OK', revision, now}
_CREATE_SCOPE = """
local function op_create_scope(K, scope, a, now, maxlen, B)
  if redis.call('SADD', K.scopes, scope) == 0 then return {'SCOPE_EXISTS'} end
  K.exists = true
  local r = redis.call('HINCRBY', K.revs, scope, 1)
  log(K.log, maxlen, r, 1, 'create-scope', {}, now)
  return {'OK', r, s(now)}
end
"""

# -> {'SCOPE_NOT_FOUND'} | {'OK', revision, now}
_DELETE_SCOPE = """
local function op_delete_scope(K, scope, a, now, maxlen, B)
  if redis.call('SREM', K.scopes, scope) == 0 then return {'SCOPE_NOT_FOUND'} end
  K.exists = false
  K.hasx = false
  redis.call('UNLINK', K.d, K.v, K.x)
  redis.call('ZREM', K.ttl, scope)
  local r = redis.call('HINCRBY', K.revs, scope, 1)
  log(K.log, maxlen, r, 1, 'delete-scope', {}, now)
  return {'OK', r, s(now)}
end
"""

# a = with_values(0|1), limit (the page size)
#   -> {'SCOPE_NOT_FOUND'} | {'OK', expired_keys, revision, keys}
#      | {'TOO_LARGE', size, room}
#      | {'OK', revision, truncated(0|1), keys, values, versions, expiries}: the page, the
#        first `limit` live keys (in Lua's string order, which is byte order under the C
#        locale that redis-server runs with unless its environment sets LC_COLLATE), unsorted
#        when the scope holds no more than `limit`
_READ_ALL = """
local function op_read_all(K, scope, a, now, maxlen, B)
  if not scope_exists(K) then return {'SCOPE_NOT_FOUND'} end
  local expired = {}
  local x = has_x(K)
  if x then
    expired = redis.call('ZRANGEBYSCORE', K.x, '-inf', s(now))
  end
  local rev = tonumber(redis.call('HGET', K.revs, scope) or '0')
  if a[1] == '0' then return {'OK', expired, rev, redis.call('HKEYS', K.d)} end
  local page = redis.call('HKEYS', K.d)
  if #expired > 0 then
    local gone = {}
    for i = 1, #expired do gone[expired[i]] = true end
    local keep = {}
    for i = 1, #page do
      if not gone[page[i]] then keep[#keep + 1] = page[i] end
    end
    page = keep
  end
  local limit, truncated = tonumber(a[2]), 0
  if #page > limit then
    table.sort(page)
    for i = #page, limit + 1, -1 do page[i] = nil end
    truncated = 1
  end
  local lim = budget_limit(B)
  local big = over(K.d, page, lim, B.maxval)
  if big then return {'TOO_LARGE', s(big), s(B.room)} end
  if #page == 0 then return {'OK', rev, truncated, {}, {}, {}, {}} end
  local vals = mget('HMGET', K.d, page)
  local size = read_size(page, vals)
  if size > lim then return {'TOO_LARGE', s(size), s(B.room)} end
  B.room = B.room - size
  local exps = {}
  if x then exps = mget('ZMSCORE', K.x, page) end
  return {'OK', rev, truncated, page, vals, mget('HMGET', K.v, page), exps}
end
"""

# a = since, limit  -> {current, oldest, entries, more(0|1)}: the changes after `since`, at
# most `limit` of them, ending where the next change would pass the read budget (more = 1;
# the first change always comes, so paging moves on past one change larger than the budget).
# An entry cut at either end is returned rebuilt with the changes kept (its id the last one
# kept, `n` their count), so the page holds exactly what the embedded store's would.
# The log is read in chunks of at most 4 x budget / max_request_bytes entries (an entry holds
# one request's writes, so max_request_bytes bounds it): XRANGE COUNT <limit> could copy
# 1000 x 8 MiB into the script before a byte of it was counted.
_CHANGES = """
local function op_changes(K, scope, a, now, maxlen, B)
  local cur = tonumber(redis.call('HGET', K.revs, scope) or '0')
  local head = redis.call('XRANGE', K.log, '-', '+', 'COUNT', 1)
  local oldest = 0
  if #head > 0 then
    oldest = tonumber(string.match(head[1][1], '^(%d+)')) - tonumber(head[1][2][4]) + 1
  end
  local since, limit = tonumber(a[1]), tonumber(a[2])
  if since >= cur then return {cur, oldest, {}, 0} end
  local lim = budget_limit(B)
  local chunk = math.max(1, math.min(limit, 512, math.floor(4 * lim / B.maxentry)))
  local out, count, size, more, done = {}, 0, 0, 0, false
  local start = s(since + 1) .. '-0'
  while not done do
    local entries = redis.call('XRANGE', K.log, start, '+', 'COUNT', chunk)
    local last = since
    for i = 1, #entries do
      local f = entries[i][2]
      local n = tonumber(f[4])
      last = tonumber(string.match(entries[i][1], '^(%d+)'))
      local first, w = last - n + 1, 2  -- w: fields per change ('k', key[, 'v', value])
      if f[2] == 'set' then w = 4 end
      local keep, kept, upto = {'o', f[2], 'n', '', 't', f[6]}, 0, 0
      for rev = math.max(first, since + 1), last do
        local b = 7 + (rev - first) * w
        local c = 0
        if f[b] then  -- scope operations have no key fields
          c = #f[b + 1]
          if w == 4 then c = c + #f[b + 3] end
        end
        if count > 0 and size + c > lim then more = 1; done = true; break end
        size = size + c; count = count + 1; kept = kept + 1; upto = rev
        for q = b, b + w - 1 do
          if f[q] then keep[#keep + 1] = f[q] end
        end
        if count >= limit then done = true; break end
      end
      if kept == n then
        out[#out + 1] = entries[i]
      elseif kept > 0 then
        keep[4] = s(kept)
        out[#out + 1] = {s(upto) .. '-0', keep}
      end
      if done then break end
    end
    if #entries < chunk then break end  -- the end of the log
    start = s(last + 1) .. '-0'
  end
  B.room = B.room - size
  return {cur, oldest, out, more}
end
"""

_BATCH = """
local ops = {g = op_get, s = op_set, d = op_delete, c = op_create_scope,
             r = op_delete_scope, a = op_read_all, h = op_changes}
local maxlen = ARGV[1]  -- the history length in revisions
local B = {per_reply = tonumber(ARGV[2]), room = tonumber(ARGV[3]), maxval = tonumber(ARGV[4]),
           maxentry = tonumber(ARGV[5])}
local now = now_ms()
local out = {}
local slots = {}
local i = 6
while i <= #ARGV do
  local code, slot, scope, argc = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], tonumber(ARGV[i + 3])
  local a = {}
  for j = 1, argc do a[j] = ARGV[i + 3 + j] end
  i = i + 4 + argc
  if code == 'l' then
    out[#out + 1] = redis.call('SMEMBERS', KEYS[1])
  elseif code == 'e' then
    out[#out + 1] = redis.call('SISMEMBER', KEYS[1], scope)
  else
    local K = slots[slot]
    if K == nil then
      local b = 3 + (slot - 1) * 4
      K = {scope = scope, scopes = KEYS[1], revs = KEYS[2], ttl = KEYS[3],
           d = KEYS[b + 1], v = KEYS[b + 2], x = KEYS[b + 3], log = KEYS[b + 4]}
      slots[slot] = K
    end
    out[#out + 1] = ops[code](K, scope, a, now, maxlen, B)
  end
end
return out
"""

# KEYS = scopes, revs, ttl, d, v, x, log of one scope; ARGV = scope, maxlen, limit
#   -> {expired_keys, first_revision, now}
_SWEEP = """
local scope, maxlen = ARGV[1], ARGV[2]
local K = {revs = KEYS[2], ttl = KEYS[3], d = KEYS[4], v = KEYS[5], x = KEYS[6], log = KEYS[7]}
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', K.x, '-inf', s(now), 'LIMIT', 0, tonumber(ARGV[3]))
local first = 0
if #due > 0 then
  redis.call('HDEL', K.d, unpack(due))
  redis.call('HDEL', K.v, unpack(due))
  redis.call('ZREM', K.x, unpack(due))
  first = redis.call('HINCRBY', K.revs, scope, #due) - #due + 1
  local largs = {}
  for j = 1, #due do largs[#largs + 1] = 'k'; largs[#largs + 1] = due[j] end
  log(K.log, maxlen, first + #due - 1, #due, 'expire', largs, now)
end
local nxt = redis.call('ZRANGE', K.x, 0, 0, 'WITHSCORES')
if #nxt == 0 then redis.call('ZREM', K.ttl, scope)
else redis.call('ZADD', K.ttl, nxt[2], scope) end
return {due, first, s(now)}
"""


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    source: str
    sha: str


def _script(name: str, *parts: str) -> Script:
    source = _PRELUDE + "".join(parts)
    return Script(name, source, hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest())


BATCH = _script(
    "batch", _GET, _SET, _DELETE, _CREATE_SCOPE, _DELETE_SCOPE, _READ_ALL, _CHANGES, _BATCH
)
SWEEP = _script("sweep", _SWEEP)
SCRIPTS: Final = (BATCH, SWEEP)
