"""The Lua scripts of ``RedisStore``: every transition that touches more than one key is one of
these, run with EVALSHA, its keys passed as KEYS (so it runs on Redis Cluster when the prefix is a
hash tag such as ``{tf}``: every key then lives in one slot).

An instance is a hash (fields below); its log and inbox are lists; the indexes are sorted sets
and one hash of counts. No script parses a record: the log entries are packed by Python (one
entry per version, the create's first, so the log entries after version N start at index N: the
version, then each record with a 4-byte length prefix) and the
inbox entries carry a 16-byte token before the signal record.

News for watchers (``RedisStore.watch``): the create (of a new instance), signal and release
scripts, and a commit that finishes the instance or leaves it suspended and due at or before its
``updated_at``, ``PUBLISH`` the instance id on the channel passed as their last argument (a
channel is no key: publishing from a script is allowed on Redis Cluster too).

Optional arguments are passed as ``""`` for None and ``"=" .. value`` otherwise. Floats are
written as Python's ``repr`` (exact) or, when a script computes one, with ``%.17g`` (exact too).

The fields of an instance hash: ``wf`` workflow, ``plan`` plan hash, ``st`` status, ``ver``
version, ``cat``/``uat`` created/updated at, ``due``, ``own``, ``until`` (absent: None), ``err``
(absent: None), ``hdr`` header, ``seq`` creation number, ``tok`` the last commit's token, ``ctok``
the create's token, ``ltok`` the token of the claim that took the lease.
"""

from __future__ import annotations

__all__ = ["SCRIPTS"]

#: Shared by every script: decoding optional arguments, the index upkeep, the lease check.
_PRELUDE = r"""
local FIELDS = {'st', 'wf', 'plan', 'ver', 'cat', 'uat', 'due', 'own', 'until', 'err'}
local function opt(a) if a == '' then return nil end return string.sub(a, 2) end
local function num(x) if x == nil or x == false then return nil end return tonumber(x) end
local function fmt(x) return string.format('%.17g', x) end
local function finished(st) return st == 'completed' or st == 'failed' or st == 'cancelled' end
local function server_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
-- keys of the indexes: pend (pending, unleased; score due or updated), susp (suspended,
-- unleased, with a due time; score due), lease (unfinished, with an owner; score lease_until),
-- fin (finished; score updated)
local function slot(ix, st, owner, due, upd, untl)
  if finished(st) then return {ix.fin, upd} end
  if owner then return {ix.lease, untl or '-inf'} end
  if st == 'pending' then return {ix.pend, due or upd} end
  if st == 'suspended' and due then return {ix.susp, due} end
  return {false, false}
end
-- moves the instance to the index its new state belongs in (old: its slot before, or nil for
-- a new instance); a commit that leaves it where it was touches no index
local function reindex(ix, id, old, st, owner, due, upd, untl)
  local new = slot(ix, st, owner, due, upd, untl)
  if old and old[1] == new[1] and old[2] == new[2] then return end
  if old and old[1] and old[1] ~= new[1] then redis.call('ZREM', old[1], id) end
  if new[1] then redis.call('ZADD', new[1], new[2], id) end
end
local function count(counts, wf, st, by)
  local f = wf .. '\0' .. st
  local n = redis.call('HINCRBY', counts, f, by)
  if n <= 0 then redis.call('HDEL', counts, f) end
end
local function meta(key) return redis.call('HMGET', key, unpack(FIELDS)) end
-- nil when the lease check passes, else the live holder (false when there is none)
local function lease_fail(owner, holder, untl, now)
  local live = holder and untl and tonumber(untl) > now
  local ok
  if owner then ok = (holder == owner and live) else ok = (not holder) or (not live) end
  if ok then return nil end
  if live then return holder end
  return false
end
"""

_CHECK = r"""
-- KEYS: meta; ARGV: version, marker
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'none' then
  redis.call('HSET', KEYS[1], 'schema', ARGV[1], 'marker', ARGV[2])
  return {'new', ARGV[1]}
end
if t ~= 'hash' then return {'foreign', t} end
local m = redis.call('HMGET', KEYS[1], 'schema', 'marker')
if m[2] ~= ARGV[2] or not m[1] then return {'foreign', 'hash'} end
return {'ok', m[1]}
"""

_CREATE = r"""
-- KEYS: inst, log, created, seq, pend, susp, lease, fin, counts
-- ARGV: token, st, wf, plan, cat, uat, due?, own?, until?, err?, header, log entry, id, channel
local ix = {pend = KEYS[5], susp = KEYS[6], lease = KEYS[7], fin = KEYS[8]}
if redis.call('EXISTS', KEYS[1]) == 1 then
  local m = meta(KEYS[1])
  local rest = redis.call('HMGET', KEYS[1], 'hdr', 'ctok')
  if rest[2] == ARGV[1] then return {'mine'} end
  return {'exists', m, rest[1]}
end
local id = ARGV[13]
local seq = redis.call('INCR', KEYS[4])
local due, own, untl, err = opt(ARGV[7]), opt(ARGV[8]), opt(ARGV[9]), opt(ARGV[10])
redis.call('HSET', KEYS[1], 'st', ARGV[2], 'wf', ARGV[3], 'plan', ARGV[4], 'ver', '1',
  'cat', ARGV[5], 'uat', ARGV[6], 'hdr', ARGV[11], 'seq', seq, 'ctok', ARGV[1], 'tok', '')
if due then redis.call('HSET', KEYS[1], 'due', due) end
if own then redis.call('HSET', KEYS[1], 'own', own) end
if untl then redis.call('HSET', KEYS[1], 'until', untl) end
if err then redis.call('HSET', KEYS[1], 'err', err) end
redis.call('DEL', KEYS[2])
redis.call('RPUSH', KEYS[2], ARGV[12])
redis.call('ZADD', KEYS[3], seq, id)
reindex(ix, id, nil, ARGV[2], own, due, ARGV[6], untl)
count(KEYS[9], ARGV[3], ARGV[2], 1)
redis.call('PUBLISH', ARGV[14], id)
return {'created'}
"""

_COMMIT = r"""
-- KEYS: inst, log, inbox, pend, susp, lease, fin, counts
-- ARGV: token, expected, st, uat, due?, header?, log entry, seen, owner?, err?, clock, id, channel
local ix = {pend = KEYS[4], susp = KEYS[5], lease = KEYS[6], fin = KEYS[7]}
local m = redis.call('HMGET', KEYS[1], 'st', 'wf', 'ver', 'own', 'until', 'tok', 'due', 'uat')
if not m[1] then return {'unknown'} end
if m[6] == ARGV[1] then return {'ok'} end -- this very commit, sent again: it applied
local owner = opt(ARGV[9])
local now
if ARGV[11] == 'server' then now = server_now() else now = tonumber(ARGV[4]) end
local holder = lease_fail(owner, m[4], m[5], now)
if holder ~= nil then return {'lease', holder} end
if m[3] ~= ARGV[2] then return {'conflict', m[3]} end
local st, upd = ARGV[3], ARGV[4]
local due = opt(ARGV[5])
if st == 'suspended' and redis.call('LLEN', KEYS[3]) > tonumber(ARGV[8]) then
  if due == nil or tonumber(upd) < tonumber(due) then due = upd end
end
local own, untl = m[4], m[5]
if owner == nil or finished(st) then own, untl = nil, nil end
local ver = tonumber(m[3]) + 1
local set = {'st', st, 'ver', ver, 'uat', upd, 'tok', ARGV[1]}
local gone = {}
if due then set[#set + 1] = 'due'; set[#set + 1] = due else gone[#gone + 1] = 'due' end
if not own then gone[#gone + 1] = 'own'; gone[#gone + 1] = 'until' end
local err = opt(ARGV[10])
if err then set[#set + 1] = 'err'; set[#set + 1] = err else gone[#gone + 1] = 'err' end
local hdr = opt(ARGV[6])
if hdr then set[#set + 1] = 'hdr'; set[#set + 1] = hdr end
redis.call('HSET', KEYS[1], unpack(set))
if #gone > 0 then redis.call('HDEL', KEYS[1], unpack(gone)) end
redis.call('RPUSH', KEYS[2], ARGV[7])
reindex(ix, ARGV[12], slot(ix, m[1], m[4], m[7], m[8], m[5]), st, own, due, upd, untl)
if st ~= m[1] then
  count(KEYS[8], m[2], m[1], -1)
  count(KEYS[8], m[2], st, 1)
end
if finished(st) or (st == 'suspended' and due and tonumber(due) <= tonumber(upd)) then
  redis.call('PUBLISH', ARGV[13], ARGV[12])
end
return {'ok'}
"""

_LOAD = r"""
-- KEYS: inst, log, inbox; ARGV: what ('load': everything, 'get': no log nor inbox)
local m = meta(KEYS[1])
if not m[1] then return false end
local hdr = redis.call('HGET', KEYS[1], 'hdr')
if ARGV[1] == 'get' then return {m, hdr} end
return {m, hdr, redis.call('LRANGE', KEYS[2], 0, -1), redis.call('LRANGE', KEYS[3], 0, -1)}
"""

_DELETE = r"""
-- KEYS: inst, log, inbox, created, pend, susp, lease, fin, counts; ARGV: id
local m = redis.call('HMGET', KEYS[1], 'st', 'wf')
if not m[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
for i = 4, 8 do redis.call('ZREM', KEYS[i], ARGV[1]) end
count(KEYS[9], m[2], m[1], -1)
return 1
"""

_PURGE = r"""
-- KEYS: created, pend, susp, lease, fin, counts, then inst, log, inbox per candidate
-- ARGV: before, nstatuses, statuses..., then the candidates' ids
local before = tonumber(ARGV[1])
local ns = tonumber(ARGV[2])
local want = {}
for i = 1, ns do want[ARGV[2 + i]] = true end
local n = 0
local c = 0
for k = 7, #KEYS, 3 do
  local id = ARGV[3 + ns + c]
  c = c + 1
  local m = redis.call('HMGET', KEYS[k], 'st', 'wf', 'uat')
  if m[1] and finished(m[1]) and (ns == 0 or want[m[1]]) and tonumber(m[3]) < before then
    redis.call('DEL', KEYS[k], KEYS[k + 1], KEYS[k + 2])
    for i = 1, 5 do redis.call('ZREM', KEYS[i], id) end
    count(KEYS[6], m[2], m[1], -1)
    n = n + 1
  end
end
return n
"""

_SIGNAL = r"""
-- KEYS: inst, inbox, pend, susp, lease, fin; ARGV: entry (token .. record), now, again, id,
-- channel
local ix = {pend = KEYS[3], susp = KEYS[4], lease = KEYS[5], fin = KEYS[6]}
local m = redis.call('HMGET', KEYS[1], 'st', 'own', 'due', 'uat', 'until')
if not m[1] then return {'unknown'} end
if ARGV[3] == '1' then -- sent again after a lost reply: was it appended?
  local tok = string.sub(ARGV[1], 1, 16)
  local all = redis.call('LRANGE', KEYS[2], 0, -1)
  for i = #all, 1, -1 do
    if string.sub(all[i], 1, 16) == tok then return {'ok', i} end
  end
end
if finished(m[1]) then return {'finished', m[1]} end
local n = redis.call('RPUSH', KEYS[2], ARGV[1])
local due = ARGV[2]
if m[3] and tonumber(m[3]) <= tonumber(due) then due = m[3] end
redis.call('HSET', KEYS[1], 'due', due)
reindex(ix, ARGV[4], slot(ix, m[1], m[2], m[3], m[4], m[5]), m[1], m[2], due, m[4], m[5])
redis.call('PUBLISH', ARGV[5], ARGV[4])
return {'ok', n}
"""

_CANDIDATES = r"""
-- KEYS: pend, susp, lease; ARGV: now (due times; '' = the lease clock's), lease now ('' = the server's), window
-- ('' = all), pend window ('' = all, '-': none); returns the lease clock's now and the ids
local lnow
if ARGV[2] == '' then lnow = server_now() else lnow = tonumber(ARGV[2]) end
local dnow = ARGV[1]
if dnow == '' then dnow = fmt(lnow) end
local lim = {}
if ARGV[3] ~= '' then lim = {'LIMIT', 0, tonumber(ARGV[3])} end
local pend
if ARGV[4] == '-' then
  pend = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', dnow, unpack(lim))
elseif ARGV[4] == '' then
  pend = redis.call('ZRANGE', KEYS[1], 0, -1)
else
  pend = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[4]) - 1)
end
return {fmt(lnow), pend,
  redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', dnow, unpack(lim)),
  redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', fmt(lnow), unpack(lim))}
"""

_CLAIM = r"""
-- KEYS: pend, susp, lease, fin, then one instance hash per candidate
-- ARGV: owner, lease, now ('' = the server's), limit, nplans, plans..., candidate ids, token
local ix = {pend = KEYS[1], susp = KEYS[2], lease = KEYS[3], fin = KEYS[4]}
local now
if ARGV[3] == '' then now = server_now() else now = tonumber(ARGV[3]) end
local limit = tonumber(ARGV[4])
local np = tonumber(ARGV[5])
local plans = {}
for i = 1, np do plans[ARGV[5 + i]] = true end
local hits = {}
local mine = {}
for k = 5, #KEYS do
  local m = redis.call('HMGET', KEYS[k], 'st', 'plan', 'own', 'until', 'due', 'uat', 'seq', 'ltok')
  local st = m[1]
  if m[8] == ARGV[6 + np + #KEYS - 4] and m[3] == ARGV[1] then
    -- this very claim, sent again after a lost reply: it is ours already
    mine[#mine + 1] = {ARGV[5 + np + k - 4], meta(KEYS[k])}
  elseif st and not finished(st) and plans[m[2]] then
    local ok
    if m[3] then
      ok = (not m[4]) or tonumber(m[4]) <= now
    else
      ok = st == 'pending' or (st == 'suspended' and m[5] and tonumber(m[5]) <= now)
    end
    if ok then
      local order = tonumber(m[5] or m[6])
      hits[#hits + 1] = {o = order, s = tonumber(m[7]), k = KEYS[k], id = ARGV[5 + np + k - 4],
        st = st, due = m[5], upd = m[6], own = m[3], untl = m[4]}
    end
  end
end
table.sort(hits, function(a, b) if a.o ~= b.o then return a.o < b.o end return a.s < b.s end)
local untl = fmt(now + tonumber(ARGV[2]))
local out = mine
for i = 1, math.min(limit - #mine, #hits) do
  local h = hits[i]
  redis.call('HSET', h.k, 'own', ARGV[1], 'until', untl, 'ltok', ARGV[6 + np + #KEYS - 4])
  reindex(ix, h.id, slot(ix, h.st, h.own, h.due, h.upd, h.untl), h.st, ARGV[1], h.due, h.upd, untl)
  out[#out + 1] = {h.id, meta(h.k)}
end
return out
"""

_EXTEND = r"""
-- KEYS: inst, lease; ARGV: owner, lease, now ('' = the server's), id
local m = redis.call('HMGET', KEYS[1], 'st', 'own', 'until')
if not m[1] then return {'unknown'} end
local now
if ARGV[3] == '' then now = server_now() else now = tonumber(ARGV[3]) end
local holder = lease_fail(ARGV[1], m[2], m[3], now)
if holder ~= nil then return {'lease', holder} end
local untl = fmt(now + tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'until', untl)
if not finished(m[1]) then redis.call('ZADD', KEYS[2], untl, ARGV[4]) end
return {'ok', untl}
"""

_RELEASE = r"""
-- KEYS: inst, pend, susp, lease, fin; ARGV: owner, id, channel
local ix = {pend = KEYS[2], susp = KEYS[3], lease = KEYS[4], fin = KEYS[5]}
local m = redis.call('HMGET', KEYS[1], 'st', 'own', 'due', 'uat', 'until')
if not m[1] then return {'unknown'} end
if m[2] ~= ARGV[1] then return {'no'} end
redis.call('HDEL', KEYS[1], 'own', 'until')
reindex(ix, ARGV[2], slot(ix, m[1], m[2], m[3], m[4], m[5]), m[1], nil, m[3], m[4], nil)
redis.call('PUBLISH', ARGV[3], ARGV[2])
return {'yes'}
"""

#: Script name -> its Lua source (the prelude included).
SCRIPTS: dict[str, str] = {
    "check": _CHECK,
    **{
        name: _PRELUDE + body
        for name, body in {
            "create": _CREATE,
            "commit": _COMMIT,
            "load": _LOAD,
            "delete": _DELETE,
            "purge": _PURGE,
            "signal": _SIGNAL,
            "candidates": _CANDIDATES,
            "claim": _CLAIM,
            "extend": _EXTEND,
            "release": _RELEASE,
        }.items()
    },
}
