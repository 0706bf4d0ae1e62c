"""The Lua scripts: each touches the two keys of one stream (one hash slot), atomically.

Errors a script raises start with a code the storage maps to the gateway's errors:
``SG_NOT_FOUND``, ``SG_EXISTS``, ``SG_CLOSED``, ``SG_GAP``. Numbers cross into Lua as
strings and back through ``tonumber``; offsets stay far below 2^53, so they are exact.
"""

from __future__ import annotations

__all__ = [
    "ABANDON",
    "APPEND",
    "CANCEL",
    "COMPACT",
    "CREATE",
    "FINISH",
    "PURGE",
    "READ",
    "RENEW",
    "STOP",
]

# KEYS: meta, log. ARGV: expire at (ms), created_at, flow, then the record's fields.
# A create whose reply was lost finds its own record on retry (same created_at and
# flow) and succeeds; anything else already there is a taken id.
CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then
  if redis.call('HGET', KEYS[1], 'created_at') == ARGV[2]
      and redis.call('HGET', KEYS[1], 'flow') == ARGV[3] then
    return 0
  end
  return redis.error_reply('SG_EXISTS stream exists')
end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
return 1
"""

# KEYS: meta, log. ARGV: first offset, chunk, chunk, ...
# The chunks the log already holds (a retry of a batch whose reply was lost) are
# skipped; the rest become one entry <length>-<count>. Returns the new length.
APPEND = """
local meta = redis.call('HMGET', KEYS[1], 'status', 'length')
if not meta[1] then return redis.error_reply('SG_NOT_FOUND stream not found') end
if meta[1] ~= 'open' then return redis.error_reply('SG_CLOSED stream is finished') end
local length = tonumber(meta[2])
local first = tonumber(ARGV[1])
local count = #ARGV - 1
if first > length then
  return redis.error_reply('SG_GAP append at ' .. first .. ' past the end ' .. length)
end
local skip = length - first
if skip >= count then return length end
local data = table.concat(ARGV, '\\n', 2 + skip, 1 + count)
redis.call('XADD', KEYS[2], length .. '-' .. (count - skip), 'd', data)
redis.call('HSET', KEYS[1], 'length', first + count)
if length == 0 then
  -- The first batch made the log: it expires with the record.
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
end
return first + count
"""

# KEYS: meta, log. ARGV: kind, payload, length, now, expires_at, expire at (ms).
# The terminal entry <length>-1 wakes blocking readers. A retry of a finish that
# already happened returns 0. A length other than the log's is refused: the log lost
# acknowledged batches (a crash without fsync), and a terminal would hide the hole.
FINISH = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return redis.error_reply('SG_NOT_FOUND stream not found') end
if status ~= 'open' then return 0 end
local stored = redis.call('HGET', KEYS[1], 'length')
if tonumber(stored) ~= tonumber(ARGV[3]) then
  return redis.error_reply('SG_GAP finish after ' .. ARGV[3] .. ' chunks, the log holds ' .. stored)
end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'tkind', ARGV[1], 'tpayload', ARGV[2],
  'length', ARGV[3], 'updated_at', ARGV[4], 'expires_at', ARGV[5])
redis.call('HDEL', KEYS[1], 'lease_until')
redis.call('XADD', KEYS[2], ARGV[3] .. '-1', 't', ARGV[1])
redis.call('PEXPIREAT', KEYS[1], ARGV[6])
redis.call('PEXPIREAT', KEYS[2], ARGV[6])
return 1
"""

# KEYS: meta, log. ARGV: kind, payload, now, expires_at, expire at (ms).
# A conditional FINISH: only an open stream whose lease lapsed before `now`, at the
# length the record holds (APPEND refuses a finished stream, so nothing lands after).
# Returns 1 when the end was recorded here, else 0.
ABANDON = """
local meta = redis.call('HMGET', KEYS[1], 'status', 'lease_until', 'length')
if meta[1] ~= 'open' then return 0 end
if not meta[2] or tonumber(meta[2]) >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'tkind', ARGV[1], 'tpayload', ARGV[2],
  'updated_at', ARGV[3], 'expires_at', ARGV[4])
redis.call('HDEL', KEYS[1], 'lease_until')
-- The end marker wakes blocking readers; a log that lost acknowledged batches (a
-- crash without fsync) may refuse its id, and the record alone then tells the end.
redis.pcall('XADD', KEYS[2], meta[3] .. '-1', 't', ARGV[1])
redis.call('PEXPIREAT', KEYS[1], ARGV[5])
redis.call('PEXPIREAT', KEYS[2], ARGV[5])
return 1
"""

# KEYS: meta, log. ARGV: lease_until, expires_at, expire at (ms).
# Returns -1 (not open: left alone), 0 (renewed) or 1 (renewed; cancel or stop
# requested).
RENEW = """
if redis.call('HGET', KEYS[1], 'status') ~= 'open' then return -1 end
redis.call('HSET', KEYS[1], 'lease_until', ARGV[1], 'expires_at', ARGV[2])
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
redis.call('PEXPIREAT', KEYS[2], ARGV[3])
if redis.call('HGET', KEYS[1], 'cancel') == '1' then return 1 end
if redis.call('HGET', KEYS[1], 'stop') == '1' then return 1 end
return 0
"""

# KEYS: meta. Returns 1 if the stop flag was set on an open stream, else 0.
STOP = """
if redis.call('HGET', KEYS[1], 'status') ~= 'open' then return 0 end
redis.call('HSET', KEYS[1], 'stop', '1')
return 1
"""

# KEYS: meta. Returns 1 if the cancel flag was set on an open stream, else 0.
CANCEL = """
if redis.call('HGET', KEYS[1], 'status') ~= 'open' then return 0 end
redis.call('HSET', KEYS[1], 'cancel', '1')
return 1
"""

# KEYS: meta, log. ARGV: length, entry count, entries joined by "\n".
# Only a finished stream at `length`, not compacted yet. The log is made anew (an
# entry id cannot go below the top one, even after XDEL): the entries as one batch
# <0>-<count>, the terminal entry again, and a marker <length>-2 {c: count} that wakes
# other processes' blocking reads (they drop the batches they hold). Every check comes
# before the first write, so the script does all of it or nothing.
COMPACT = """
local meta = redis.call('HMGET', KEYS[1], 'status', 'length', 'compacted', 'tkind')
if not meta[1] or meta[1] == 'open' or meta[3] then return 0 end
if tonumber(meta[2]) ~= tonumber(ARGV[1]) then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
redis.call('DEL', KEYS[2])
redis.call('XADD', KEYS[2], '0-' .. ARGV[2], 'd', ARGV[3])
redis.call('XADD', KEYS[2], ARGV[1] .. '-1', 't', meta[4] or meta[1])
redis.call('XADD', KEYS[2], ARGV[1] .. '-2', 'c', ARGV[2])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
redis.call('HSET', KEYS[1], 'compacted', ARGV[2])
return 1
"""

# KEYS: meta, log. ARGV: now. Deletes the stream unless a renewal moved its expiry
# past now. Returns 1 when it is gone (deleted here or expired by Redis), else 0.
PURGE = """
local expires = redis.call('HGET', KEYS[1], 'expires_at')
if expires and tonumber(expires) > tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
"""

# KEYS: log. ARGV: offset, limit. Returns [id, data, id, data, ...]: the batch holding
# the offset, then the following ones with no gap, until `limit` chunks are covered.
# Batches before the one holding the offset are never touched.
READ = """
local offset, want = tonumber(ARGV[1]), tonumber(ARGV[1]) + tonumber(ARGV[2])
local function batch(entry)
  local first, count = string.match(entry[1], '^(%d+)-(%d+)$')
  if entry[2][1] ~= 'd' then return nil end
  return tonumber(first), tonumber(count)
end
local head = redis.call('XREVRANGE', KEYS[1], ARGV[1], '-', 'COUNT', 1)[1]
if not head then return {} end
local first, count = batch(head)
if not first or first + count <= offset then return {} end
local out = {head[1], head[2][2]}
local covered = first + count
local start = offset + 1
while covered < want do
  local rows = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', 64)
  if #rows == 0 then return out end
  for _, row in ipairs(rows) do
    first, count = batch(row)
    if first ~= covered then return out end
    out[#out + 1] = row[1]
    out[#out + 1] = row[2][2]
    covered = first + count
    if covered >= want then return out end
  end
  start = '(' .. rows[#rows][1]
end
return out
"""
