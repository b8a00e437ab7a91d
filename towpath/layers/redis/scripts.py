"""The Lua scripts that make each layer operation one round trip.

Storage (``P`` is the layer's ``prefix``):

* ``P:<channel>``: a list per normal channel. Each entry is a 13-digit expiry in epoch
  milliseconds followed by the serialised message, so a reader drops stale entries without
  another round trip and a full channel can shed its expired head in the send script.
* ``P:<prefix>.<client>!``: the inbox list of one process; every ``!`` channel of that process
  shares it. Entries are expiry, the full channel name (or several, comma-separated, for a
  group_send to many channels of the process), one space, message.
* ``P:<prefix>.<client>!:full``: a set of that process's ``!`` channels whose local backlog
  has reached ``capacity``. The reading process keeps it (it alone knows its backlog), and
  senders consult it, so a send to a full ``!`` channel costs no more than to any other.
* ``P:group:<group>``: a sorted set of member channels scored by the time they joined.

Every key gets a TTL (``expiry`` for channels, ``group_expiry`` for groups), so what a dead
process leaves behind disappears by itself.
"""

from __future__ import annotations

import hashlib

__all__ = ["DELIVER", "GROUP_SEND", "POP", "PUSH_BACK", "SEND", "Script"]


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

#: Send one message. KEYS: the list (a normal channel's, or the process inbox) and, for a ``!``
#: channel, the process's full set (else the list again). ARGV: entry, capacity (for an inbox:
#: of the whole inbox), ttl ms, now ms, the ``!`` channel's name ("" for a normal channel).
#: Returns 1 when queued, 0 when the channel is full.
SEND = Script(
    "send",
    _SHED
    + """
local cap = tonumber(ARGV[2])
if ARGV[5] ~= '' and redis.call('SISMEMBER', KEYS[2], ARGV[5]) == 1 then return 0 end
if redis.call('LLEN', KEYS[1]) >= cap then
  shed(KEYS[1], tonumber(ARGV[4]))
  if redis.call('LLEN', KEYS[1]) >= cap then return 0 end
end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
""",
)

#: Deliver one message to many channels on this shard (group_send).
#: KEYS: pairs of (list, full set) per destination: a normal channel's list (the full set is
#: the list again), or a process inbox with its full set. ARGV: message, expiry header, ttl ms,
#: now ms, then per destination: its member names comma-joined ("" for a normal channel), how
#: many members that is, and its capacity. The members of one process get ONE inbox entry
#: naming them all (``name,name,... message``); its reader fans it out locally. Returns how
#: many members were skipped as full.
DELIVER = Script(
    "deliver",
    _SHED
    + """
local data, header, ttl, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local skipped = 0
for d = 1, #KEYS / 2 do
  local list, fullset = KEYS[2 * d - 1], KEYS[2 * d]
  local names = ARGV[2 + 3 * d]
  local members, cap = tonumber(ARGV[3 + 3 * d]), tonumber(ARGV[4 + 3 * d])
  if names ~= '' then
    if redis.call('SCARD', fullset) > 0 then
      local kept, full = {}, {}
      for _, name in ipairs(redis.call('SMEMBERS', fullset)) do full[name] = true end
      for name in string.gmatch(names, '[^,]+') do
        if full[name] then skipped = skipped + 1 else kept[#kept + 1] = name end
      end
      members = #kept
      names = table.concat(kept, ',')
    end
  end
  if members > 0 then
    if redis.call('LLEN', list) >= cap then shed(list, now) end
    if redis.call('LLEN', list) < cap then
      if names == '' then redis.call('RPUSH', list, header .. data)
      else redis.call('RPUSH', list, header .. names .. ' ' .. data) end
      redis.call('PEXPIRE', list, ttl)
    else
      skipped = skipped + members
    end
  end
end
return skipped
""",
)

#: group_send on a single server, in one step: drop expired members, read the members and
#: deliver to them, so that every member sees the group's messages in one order and a member
#: that joined before the script gets the message (what a WebSocket handback's cut relies on:
#: towpath/consumers/handback.py). KEYS[1]: the group. ARGV: message, expiry header, ttl ms,
#: now ms, the oldest member score kept, key prefix, inbox capacity, capacity of a normal
#: channel, then (normal channel, capacity) pairs overriding it. Members of one process share
#: one inbox entry (as DELIVER). Returns how many members were skipped as full.
GROUP_SEND = Script(
    "group_send",
    _SHED
    + """
local data, header, ttl, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[5])
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local prefix, inbox_cap, normal_cap = ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])
local caps = {}
for i = 9, #ARGV - 1, 2 do caps[ARGV[i]] = tonumber(ARGV[i + 1]) end
local function push(list, cap, entry)
  if redis.call('LLEN', list) >= cap then shed(list, now) end
  if redis.call('LLEN', list) >= cap then return false end
  redis.call('RPUSH', list, entry)
  redis.call('PEXPIRE', list, ttl)
  return true
end
local inboxes, order, skipped = {}, {}, 0
for _, member in ipairs(members) do
  local bang = string.find(member, '!', 1, true)
  if bang then
    local inbox = prefix .. ':' .. string.sub(member, 1, bang)
    local names = inboxes[inbox]
    if not names then
      names = {}
      inboxes[inbox] = names
      order[#order + 1] = inbox
    end
    names[#names + 1] = member
  elseif not push(prefix .. ':' .. member, caps[member] or normal_cap, header .. data) then
    skipped = skipped + 1
  end
end
for _, inbox in ipairs(order) do
  local names = inboxes[inbox]
  local fullset = inbox .. ':full'
  if redis.call('SCARD', fullset) > 0 then
    local kept = {}
    for _, name in ipairs(names) do
      if redis.call('SISMEMBER', fullset, name) == 1 then skipped = skipped + 1
      else kept[#kept + 1] = name end
    end
    names = kept
  end
  if #names > 0 and not push(inbox, inbox_cap, header .. table.concat(names, ',') .. ' ' .. data)
  then skipped = skipped + #names end
end
return skipped
""",
)

#: Take up to ARGV[1] entries from the lists in KEYS without blocking: first an equal share
#: from each (so one busy channel cannot crowd out the others), then whatever is still wanted,
#: in KEYS order. Returns a flat list: key, entry, key, entry, ...
POP = Script(
    "pop",
    """
local out, want = {}, tonumber(ARGV[1])
local function take(key, count)
  if count <= 0 then return 0 end
  local items = redis.call('LRANGE', key, 0, count - 1)
  if #items > 0 then
    redis.call('LTRIM', key, #items, -1)
    for _, item in ipairs(items) do out[#out + 1] = key; out[#out + 1] = item end
  end
  return #items
end
local share = math.ceil(want / #KEYS)
for _, key in ipairs(KEYS) do want = want - take(key, math.min(share, want)) end
for _, key in ipairs(KEYS) do
  if want <= 0 then break end
  want = want - take(key, want)
end
return out
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
