"""The Lua scripts that make each layer operation one round trip.

Storage (``P`` is the layer's ``prefix``):

* ``P:<channel>``: a list per normal channel. Each entry is a 13-digit expiry in epoch
  milliseconds followed by the serialised message, so a reader drops stale entries without
  another round trip and a full channel can shed its expired head in the send script.
* ``P:<prefix>.<client>!``: the inbox list of one process; every ``!`` channel of that process
  shares it. Entries are expiry, full channel name, one space, message.
* ``P:<prefix>.<client>!:n``: a hash counting, per ``!`` channel, messages sent and not yet
  received by the application, so ``capacity`` holds per channel although the inbox is shared.
* ``P:group:<group>``: a sorted set of member channels scored by the time they joined.

Every key gets a TTL (``expiry`` for channels, ``group_expiry`` for groups), so what a dead
process leaves behind disappears by itself.
"""

from __future__ import annotations

import hashlib

__all__ = ["DECREMENT", "DELIVER", "GROUP_MEMBERS", "POP", "PUSH_BACK", "SEND", "Script"]


class Script:
    """A Lua script and its SHA-1, for EVALSHA with a fallback to SCRIPT LOAD."""

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __repr__(self) -> str:
        return f"<Script {self.name} {self.sha[:8]}>"


# Drop expired entries from the head of list `key` (entries start with 13-digit expiry ms).
_SHED = """
local function shed(key, now)
  while true do
    local head = redis.call('LINDEX', key, 0)
    if not head or tonumber(string.sub(head, 1, 13)) > now then return end
    redis.call('LPOP', key)
  end
end
"""

#: Send one message. KEYS: list (the channel, or the process inbox), counts hash (or the list
#: again for a normal channel). ARGV: entry, capacity, ttl ms, now ms, counter field ("" for a
#: normal channel). Returns 1 when queued, 0 when the channel is full.
SEND = Script(
    "send",
    _SHED
    + """
local cap = tonumber(ARGV[2])
local field = ARGV[5]
if field == '' then
  if redis.call('LLEN', KEYS[1]) >= cap then
    shed(KEYS[1], tonumber(ARGV[4]))
    if redis.call('LLEN', KEYS[1]) >= cap then return 0 end
  end
else
  if tonumber(redis.call('HGET', KEYS[2], field) or '0') >= cap then return 0 end
  redis.call('HINCRBY', KEYS[2], field, 1)
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
""",
)

#: Deliver one message to many channels on this shard (group_send, send_many).
#: KEYS: pairs of (list, counts hash) per member, as for SEND. ARGV: message, expiry header,
#: ttl ms, now ms, then per member: full channel name ("" for a normal channel), capacity.
#: Entries for the same inbox go out in one RPUSH. Returns the 1-based indexes of full members.
DELIVER = Script(
    "deliver",
    _SHED
    + """
local data, header, ttl, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local batches, order, full = {}, {}, {}
for i = 1, #KEYS / 2 do
  local list, counts = KEYS[2 * i - 1], KEYS[2 * i]
  local name, cap = ARGV[3 + 2 * i], tonumber(ARGV[4 + 2 * i])
  local ok = true
  if name == '' then
    local queued = #(batches[list] or {})
    if redis.call('LLEN', list) + queued >= cap then
      shed(list, now)
      ok = redis.call('LLEN', list) + queued < cap
    end
  else
    ok = tonumber(redis.call('HGET', counts, name) or '0') < cap
    if ok then
      redis.call('HINCRBY', counts, name, 1)
      redis.call('PEXPIRE', counts, ttl)
    end
  end
  if ok then
    if not batches[list] then batches[list] = {}; order[#order + 1] = list end
    local batch = batches[list]
    if name == '' then batch[#batch + 1] = header .. data
    else batch[#batch + 1] = header .. name .. ' ' .. data end
  else
    full[#full + 1] = i
  end
end
for _, list in ipairs(order) do
  local batch = batches[list]
  for start = 1, #batch, 1000 do
    redis.call('RPUSH', list, unpack(batch, start, math.min(start + 999, #batch)))
  end
  redis.call('PEXPIRE', list, ttl)
end
return full
""",
)

#: Take up to ARGV[1] entries from the lists in KEYS, in that order, without blocking.
#: Returns a flat list: key, entry, key, entry, ...
POP = Script(
    "pop",
    """
local out, want = {}, tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
  if want <= 0 then break end
  local items = redis.call('LRANGE', key, 0, want - 1)
  if #items > 0 then
    redis.call('LTRIM', key, #items, -1)
    for _, item in ipairs(items) do out[#out + 1] = key; out[#out + 1] = item end
    want = want - #items
  end
end
return out
""",
)

#: Received-by-the-application counts for ``!`` channels. KEYS[1]: counts hash.
#: ARGV: field, amount, field, amount, ...; fields at or below zero are removed.
DECREMENT = Script(
    "decrement",
    """
for i = 1, #ARGV, 2 do
  if redis.call('HINCRBY', KEYS[1], ARGV[i], -tonumber(ARGV[i + 1])) <= 0 then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return 0
""",
)

#: Group members: drop those older than group_expiry, return the rest.
#: KEYS[1]: group sorted set. ARGV: oldest score to keep (now - group_expiry).
GROUP_MEMBERS = Script(
    "group_members",
    """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
return redis.call('ZRANGE', KEYS[1], 0, -1)
""",
)

#: Put fetched-but-unreceived entries back at the head of their list (on close).
#: KEYS[1]: list. ARGV: entries in their original order. ARGV[#ARGV]: ttl ms.
PUSH_BACK = Script(
    "push_back",
    """
for i = #ARGV - 1, 1, -1 do redis.call('LPUSH', KEYS[1], ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[#ARGV])
return 0
""",
)
