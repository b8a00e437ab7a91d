"""The Lua scripts that make each layer operation one round trip.

Storage (``P`` is the layer's ``prefix``):

* ``P:<channel>``: a list per normal channel. Each entry is a 13-digit expiry in epoch
  milliseconds followed by the serialised message, so a reader drops stale entries without
  another round trip and a full channel can shed its expired head in the send script.
* ``P:<prefix>.<client>!``: the inbox list of one process; every ``!`` channel of that process
  shares it. Entries are expiry, the full channel name (or several, comma-separated, for a
  group_send to many channels of the process), one space, message.
* ``P:<prefix>.<client>!:backlog``: a hash counting, per ``!`` channel of that inbox, the
  messages sent to it and not yet received: those still in the inbox list plus those its
  reader has fetched into the process and no receive has taken yet. Senders check and raise
  it in the script that pushes (so capacity is exact whatever the reader is doing); the
  reading process lowers it as receives take messages (RELEASE, batched per event-loop tick)
  and as messages expire unread.
* ``P:group:<group>``: a sorted set of member channels scored by the time they joined.

Every key gets a TTL (``expiry`` for channels, ``group_expiry`` for groups), so what a dead
process leaves behind disappears by itself.
"""

from __future__ import annotations

import hashlib

__all__ = ["DELIVER", "GROUP_SEND", "POP", "PUSH_BACK", "RELEASE", "SEND", "SEND_MEMBER", "Script"]


class Script:
    """A Lua script and its SHA-1, for EVALSHA with a fallback to SCRIPT LOAD."""

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __repr__(self) -> str:
        return f"<Script {self.name} {self.sha[:8]}>"


# Drop expired entries from the head of list `key` (entries start with 13-digit expiry ms), and
# entries no towpath process wrote (no number there): a reader would drop them too. An inbox's
# entries name their channels (`expiry names data`): those leave its backlog hash.
_SHED = """
local function shed(key, now, backlog)
  while true do
    local head = redis.call('LINDEX', key, 0)
    if not head then return end
    local expiry = tonumber(string.sub(head, 1, 13))
    if expiry and expiry > now then return end
    redis.call('LPOP', key)
    local space = backlog and string.find(head, ' ', 14, true)
    if space then
      for name in string.gmatch(string.sub(head, 14, space - 1), '[^,]+') do
        if redis.call('HINCRBY', backlog, name, -1) <= 0 then redis.call('HDEL', backlog, name) end
      end
    end
  end
end
"""

# The backlog (queued and not yet received) of `!` channel `name`, from its inbox's hash.
_BACKLOG = """
local function backlog(hash, name)
  return tonumber(redis.call('HGET', hash, name) or 0)
end
"""

# Send one message: `list` is a normal channel's or the process inbox, `counts` (for a `!`
# channel) the inbox's backlog hash; then the entry, capacity of the list (for an inbox: of the
# whole inbox), ttl ms, now ms, the `!` channel's name ("" for a normal channel) and the `!`
# channel's own capacity. Returns 1 when queued, 0 when full.
_SEND_ONE = """
local function send_one(list, counts, entry, cap, ttl, now, name, own_cap)
  local hash = false
  if name ~= '' then
    hash = counts
    if redis.call('HINCRBY', hash, name, 1) > own_cap then
      redis.call('HINCRBY', hash, name, -1)
      return 0
    end
  end
  if redis.call('LLEN', list) >= cap then
    shed(list, now, hash)
    if redis.call('LLEN', list) >= cap then
      if hash and redis.call('HINCRBY', hash, name, -1) <= 0 then redis.call('HDEL', hash, name) end
      return 0
    end
  end
  redis.call('RPUSH', list, entry)
  redis.call('PEXPIRE', list, ttl)
  if hash then redis.call('PEXPIRE', hash, ttl) end
  return 1
end
"""

#: Send one message. KEYS: the list (a normal channel's, or the process inbox) and, for a ``!``
#: channel, the inbox's backlog hash (else the list again). ARGV: entry, capacity of the list
#: (for an inbox: of the whole inbox), ttl ms, now ms, the ``!`` channel's name ("" for a normal
#: channel), the ``!`` channel's own capacity. Returns 1 when queued, 0 when full.
SEND = Script(
    "send",
    _SHED
    + _SEND_ONE
    + """
return send_one(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]),
  ARGV[5], tonumber(ARGV[6]))
""",
)

#: A group_send's retry for one member it found full: SEND, if the channel is still a member of
#: the group, in one step (so a member discarded meanwhile is never sent to). KEYS: the group,
#: then SEND's keys. ARGV: the member, the oldest member score kept (older ones expired), then
#: SEND's arguments. Returns 1 when queued, 0 when full, -1 when not a member.
SEND_MEMBER = Script(
    "send_member",
    _SHED
    + _SEND_ONE
    + """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) < tonumber(ARGV[2]) then return -1 end
return send_one(KEYS[2], KEYS[3], ARGV[3], tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6]),
  ARGV[7], tonumber(ARGV[8]))
""",
)

# Deliver to the `!` channels `names` (a list) of one inbox: the ones whose backlog is below
# their capacity (`caps[name]` or `cap`) get one entry naming them all. The names skipped as
# full are appended to `full`.
_DELIVER_INBOX = """
local function deliver_inbox(inbox, names, caps, cap, inbox_cap, entry_head, data, ttl, now, full)
  local hash = inbox .. ':backlog'
  local kept = {}
  for _, name in ipairs(names) do
    if backlog(hash, name) < (caps[name] or cap) then
      kept[#kept + 1] = name
    else
      full[#full + 1] = name
    end
  end
  if #kept == 0 then return end
  if redis.call('LLEN', inbox) >= inbox_cap then shed(inbox, now, hash) end
  if redis.call('LLEN', inbox) >= inbox_cap then
    for _, name in ipairs(kept) do full[#full + 1] = name end
    return
  end
  redis.call('RPUSH', inbox, entry_head .. table.concat(kept, ',') .. ' ' .. data)
  redis.call('PEXPIRE', inbox, ttl)
  for _, name in ipairs(kept) do redis.call('HINCRBY', hash, name, 1) end
  redis.call('PEXPIRE', hash, ttl)
end
"""

#: Deliver one message to many channels on this shard (group_send).
#: KEYS: one list per destination: a normal channel's, or a process inbox. ARGV: message,
#: expiry header, ttl ms, now ms, then per destination: its member names comma-joined with
#: ``=capacity`` after each (``""`` for a normal channel), and its capacity (of the list: the
#: channel's, or the whole inbox's). The members of one process get ONE inbox entry naming them
#: all (``name,name,... message``); its reader fans it out locally. Returns the members skipped
#: as full: a ``!`` channel by its name, a normal channel by its list's key (``prefix:name``).
DELIVER = Script(
    "deliver",
    _SHED
    + _BACKLOG
    + _DELIVER_INBOX
    + """
local data, header, ttl, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local full = {}
for d = 1, #KEYS do
  local list, members, cap = KEYS[d], ARGV[3 + 2 * d], tonumber(ARGV[4 + 2 * d])
  if members == '' then
    if redis.call('LLEN', list) >= cap then shed(list, now, false) end
    if redis.call('LLEN', list) < cap then
      redis.call('RPUSH', list, header .. data)
      redis.call('PEXPIRE', list, ttl)
    else
      full[#full + 1] = list
    end
  else
    local names, caps = {}, {}
    for name, limit in string.gmatch(members, '([^,=]+)=(%d+)') do
      names[#names + 1] = name
      caps[name] = tonumber(limit)
    end
    deliver_inbox(list, names, caps, 0, cap, header, data, ttl, now, full)
  end
end
return full
""",
)

#: group_send on a single server, in one step: drop expired members, read the members and
#: deliver to them, so that every member sees the group's messages in one order and a member
#: that joined before the script gets the message (what a WebSocket handback's cut relies on:
#: towpath/consumers/handback.py). KEYS[1]: the group. ARGV: message, expiry header, ttl ms,
#: now ms, the oldest member score kept, key prefix, inbox capacity, capacity of a channel,
#: then (channel, capacity) pairs overriding it. Members of one process share one inbox entry
#: (as DELIVER). Returns {how many members, the members skipped as full...}.
GROUP_SEND = Script(
    "group_send",
    _SHED
    + _BACKLOG
    + _DELIVER_INBOX
    + """
local data, header, ttl, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[5])
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local prefix, inbox_cap, cap = ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])
local caps = {}
for i = 9, #ARGV - 1, 2 do caps[ARGV[i]] = tonumber(ARGV[i + 1]) end
local inboxes, order, full = {}, {}, {0}
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
  else
    local list, limit = prefix .. ':' .. member, caps[member] or cap
    if redis.call('LLEN', list) >= limit then shed(list, now, false) end
    if redis.call('LLEN', list) < limit then
      redis.call('RPUSH', list, header .. data)
      redis.call('PEXPIRE', list, ttl)
    else
      full[#full + 1] = member
    end
  end
end
for _, inbox in ipairs(order) do
  deliver_inbox(inbox, inboxes[inbox], caps, cap, inbox_cap, header, data, ttl, now, full)
end
full[1] = #members
return full
""",
)

#: Messages of ``!`` channels taken by receives (or dropped unread) in the reading process:
#: lower their backlog. KEYS[1]: the inbox's backlog hash. ARGV: (name, count) pairs.
RELEASE = Script(
    "release",
    """
for i = 1, #ARGV - 1, 2 do
  if redis.call('HINCRBY', KEYS[1], ARGV[i], -tonumber(ARGV[i + 1])) <= 0 then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return 0
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

#: Put fetched-but-unreceived entries back at the head of their list (on close); for an inbox,
#: each entry names its one channel, whose backlog still counts it.
#: KEYS[1]: list. ARGV: entries in their original order. ARGV[#ARGV]: ttl ms.
PUSH_BACK = Script(
    "push_back",
    """
for i = #ARGV - 1, 1, -1 do redis.call('LPUSH', KEYS[1], ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[#ARGV])
return 0
""",
)
