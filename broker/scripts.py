"""Every Lua script inferq runs in Redis, in one place, each key and argument named on its own line.

A script runs atomically: no other client's command comes between its steps, and
Redis persists and replicates its writes as one transaction. That is what makes
the take below one step. Each script is sent by its SHA-1 (EVALSHA) and, when
Redis does not know it (restarted, or flushed its script cache), once in full
(EVAL, which caches it again): a script is never sent in full on every call.
Commands a script runs count in Redis's INFO commandstats like any other.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis


@dataclass(frozen=True)
class Script:
    """A Lua script with its KEYS and ARGV named (what the header of its source documents)."""

    name: str
    keys: tuple[str, ...]  # names of KEYS[1..]; a name ending in "..." takes every key left
    args: tuple[str, ...]  # names of ARGV[1..]
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())

    def _check(self, keys: Sequence[Any], args: Sequence[Any]) -> None:
        variadic = bool(self.keys) and self.keys[-1].endswith("...")
        fixed = len(self.keys) - variadic
        if len(keys) < fixed or (not variadic and len(keys) != fixed) or len(args) != len(self.args):
            raise TypeError(f"script {self.name} takes keys {self.keys} and args {self.args}; "
                            f"got {len(keys)} key(s) and {len(args)} arg(s)")

    def __call__(self, client: redis.Redis, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run it on client (EVALSHA; EVAL once if Redis lost it): its reply."""
        return self.piped(client, keys, args)[0]

    def piped(self, client: redis.Redis, keys: Sequence[Any], args: Sequence[Any],
              then: Callable[[Any], Any] = lambda pipe: None) -> list[Any]:
        """Run it first in one pipeline with what then(pipe) adds after it; the replies, the script's first. If
        Redis lost the script, the pipeline runs once more with it in full (EVALSHA failed: it wrote nothing)."""
        for full in (False, True):
            pipe = client.pipeline(transaction=False)
            pipe.execute_command(*self.command(keys, args, full=full))
            then(pipe)
            try:
                return pipe.execute()
            except redis.exceptions.NoScriptError:
                if full:
                    raise
        raise AssertionError("unreachable")

    def command(self, keys: Sequence[Any], args: Sequence[Any], full: bool = False) -> list[Any]:
        """The command's arguments, for a caller that sends and reads it itself (EVAL with the source if full)."""
        self._check(keys, args)
        return ["EVAL" if full else "EVALSHA", self.source if full else self.sha, len(keys), *keys, *args]


TAKE = Script(
    "take",
    keys=("unacked", "unacked_index", "holding", "wake", "malformed", "lanes..."),
    args=("now", "mode", "room", "task", "texts_header", "deliveries_prefix", "ttl", "cancel_prefix"),
    source="""
-- Take messages from the lanes into kombu's unacknowledged record, in one atomic step.
-- KEYS[1] unacked        kombu's hash: delivery tag -> [message, exchange, routing key]
-- KEYS[2] unacked_index  kombu's sorted set: delivery tag -> when taken (its lease; renewed while held)
-- KEYS[3] holding        this worker's set of the tags it holds (given back when it restarts under its name;
--                        the worker keeps it, and its expiry, with a placeholder member: broker/holdings.py)
-- KEYS[4] wake           the list idle workers block on (BRPOP); one element wakes one worker
-- KEYS[5] malformed      where a message that cannot be read is set aside (kept, never run, never dropped)
-- KEYS[6..] lanes        the queues, in the order they are served (interactive first); kombu's lists:
--                        LPUSH publishes, so the right end holds the oldest message
-- ARGV[1] now            unix seconds: the lease's start
-- ARGV[2] mode           'first': the oldest message of the first lane holding one, whatever its size, then
--                        batch-mates; 'mates': batch-mates only (a worker filling its next forward pass)
-- ARGV[3] room           texts a forward pass holds: the batch-mates' texts and the first message's fit in it
-- ARGV[4] task           the only task whose messages are taken as batch-mates (inferq.classify)
-- ARGV[5] texts_header   the header holding a message's text count (absent: one text)
-- ARGV[6] deliveries_prefix  key prefix + job id: how often a restored message was taken (the poison guard)
-- ARGV[7] ttl            seconds a restored message's deliveries count is kept
-- ARGV[8] cancel_prefix  key prefix + job id: a job's cancel mark, read for each classify job taken (the worker
--                        skips a job cancelled before it ran without another round trip)
-- Returns {deliveries of the first message (0: none taken), 1 if a lane still holds work else 0,
--          the lane of the first message ('' if none), message, ..., message, mark, ..., mark}: the messages
--          oldest first, then each one's cancel mark (nil: none).
local unacked, index, holding, wake, malformed = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now, first, room = ARGV[1], ARGV[2] == 'first', tonumber(ARGV[3])
local task, texts_header, deliveries, ttl = ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7])
local cancel_prefix = ARGV[8]

-- What the take reads of a message: kombu's envelope, Celery's headers and inferq's text count.
local function read(raw)
  local ok, msg = pcall(cjson.decode, raw)
  if not ok or type(msg) ~= 'table' then return nil end
  local headers, props = msg.headers, msg.properties
  if type(headers) ~= 'table' or type(props) ~= 'table' or type(props.delivery_tag) ~= 'string' then
    return nil
  end
  local info = type(props.delivery_info) == 'table' and props.delivery_info or {}
  return {tag = props.delivery_tag, id = headers.id, task = headers.task,
          texts = tonumber(headers[texts_header]) or 1, redelivered = headers.redelivered == true,
          exchange = info.exchange or '', routing_key = info.routing_key}
end

local fields, leases, tags, taken, aside, jobs = {}, {}, {}, {}, {}, {}
local function hold(raw, message, lane)
  jobs[#jobs + 1] = message.task == task and type(message.id) == 'string' and message.id or false
  -- kombu's unacked entry, the message exactly as it lay in its queue (what a give-back pushes again).
  fields[#fields + 1] = message.tag
  fields[#fields + 1] = '[' .. raw .. ',' .. cjson.encode(message.exchange) .. ','
                        .. cjson.encode(message.routing_key or lane) .. ']'
  leases[#leases + 1] = now
  leases[#leases + 1] = message.tag
  tags[#tags + 1] = message.tag
  taken[#taken + 1] = raw
end

-- Each lane is read once (its oldest messages, at most as many as could still be taken) and cut once
-- (LTRIM of the oldest n); every write comes before the first cut. At maxmemory Redis refuses a script's
-- first write that may grow memory and keeps what it did before: then nothing has left a lane.
local count, from = 0, ''
local cuts, more, unknown = {}, 0, {}
for i = 6, #KEYS do
  local wanted = (first and from == '') and (room > 0 and room or 1) or room  -- each message: a text at least
  if wanted <= 0 then unknown[i] = true
  else
    local items = redis.call('LRANGE', KEYS[i], -wanted, -1)
    local n, stop = 0, false
    for j = #items, 1, -1 do
      local raw = items[j]
      local message = read(raw)
      if not message then
        aside[#aside + 1] = raw
      elseif first and from == '' then
        hold(raw, message, KEYS[i])
        from, count = KEYS[i], 1
        if message.redelivered and type(message.id) == 'string' then
          -- Given back after its worker died: count this delivery (its first delivery wrote nothing).
          local key = deliveries .. message.id
          count = redis.call('INCR', key)
          if count == 1 then count = redis.call('INCR', key) end
          redis.call('EXPIRE', key, ttl)
        end
        -- Only a first delivery of a classify job takes batch-mates: a redelivery runs alone (it may have
        -- killed its last worker), and other tasks are not batched.
        if count == 1 and message.task == task then room = room - message.texts else room = 0 end
      elseif message.task == task and not message.redelivered and message.texts <= room then
        hold(raw, message, KEYS[i])
        room = room - message.texts
      else
        stop = true  -- it stays at the head of its lane, as does everything behind it: the lane keeps its order
      end
      if stop then break end
      n = n + 1
      if room <= 0 and from ~= '' or (not first and room <= 0) then break end
    end
    cuts[i] = n
    if n < #items then more = 1                      -- something read was left
    elseif #items == wanted then unknown[i] = true end -- read all it asked for: more may lie behind
    if stop then break end
  end
  if room <= 0 and (from ~= '' or not first) then
    for k = i + 1, #KEYS do unknown[k] = true end
    break
  end
end

if #taken == 0 and #aside == 0 then
  if first then redis.call('DEL', wake) end  -- nothing is queued: a wake-up now would find nothing
  return {0, 0, ''}
end
if #taken > 0 then
  redis.call('HSET', unacked, unpack(fields))
  redis.call('ZADD', index, unpack(leases))
  redis.call('SADD', holding, unpack(tags))
end
for _, raw in ipairs(aside) do redis.call('LPUSH', malformed, raw) end
for i, n in pairs(cuts) do
  if n > 0 then redis.call('LTRIM', KEYS[i], 0, -n - 1) end
end

-- The reply: the messages, then their cancel marks (one read for all of them).
local function reply(deliveries_count, work_left)
  local out, keys, at = {deliveries_count, work_left, from}, {}, {}
  for j, raw in ipairs(taken) do
    out[#out + 1] = raw
    if jobs[j] then
      keys[#keys + 1] = cancel_prefix .. jobs[j]
      at[#keys] = j
    end
  end
  local marks = {}
  for j = 1, #taken do marks[j] = false end
  if #keys > 0 then
    for k, mark in ipairs(redis.call('MGET', unpack(keys))) do marks[at[k]] = mark end
  end
  for j = 1, #taken do out[#out + 1] = marks[j] end
  return out
end
if not first then return reply(0, 0) end

for i = 6, #KEYS do
  if more == 1 then break end
  if unknown[i] and redis.call('LLEN', KEYS[i]) > 0 then more = 1 end
end
-- Work is left: make sure one more idle worker wakes (it passes the wake-up on in turn); none is left:
-- clear the wake-ups, which would find nothing.
if more == 1 then
  if redis.call('LLEN', wake) == 0 then redis.call('RPUSH', wake, 1) end
else
  redis.call('DEL', wake)
end
return reply(count, more)
""")


CANCEL = Script(
    "cancel",
    keys=("result", "unacked", "cancel_mark", "cancelled_counter"),
    args=("ttl", "revoked_state", "job_id"),
    source="""
-- Cancel a job, atomically against a worker taking it: the take puts the job in the unacknowledged
-- record before its worker reads the cancel mark, and whichever of the two comes second sees the other.
-- KEYS[1] result             the job's state (Celery's result key)
-- KEYS[2] unacked            kombu's hash of taken messages; a job's field is its id (the API's delivery tag)
-- KEYS[3] cancel_mark        the job's cancel mark: 'queued' or 'running'
-- KEYS[4] cancelled_counter  the jobs-cancelled metric
-- ARGV[1] ttl                seconds the mark and the state are kept
-- ARGV[2] revoked_state      the REVOKED state stored for a job cancelled while queued
-- ARGV[3] job_id             the job's id
-- Returns {'final', state} (it has a state already), {'marked', mark} (cancelled before),
--         {'running', ''} (a worker holds it: it discards the result) or {'queued', ''} (cancelled now).
local raw = redis.call('GET', KEYS[1])
if raw then return {'final', raw} end
local mark = redis.call('GET', KEYS[3])
if mark then return {'marked', mark} end
if redis.call('HEXISTS', KEYS[2], ARGV[3]) == 1 then
  redis.call('SET', KEYS[3], 'running', 'EX', ARGV[1])
  redis.call('INCR', KEYS[4])
  return {'running', ''}
end
redis.call('SET', KEYS[3], 'queued', 'EX', ARGV[1])
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[1])
redis.call('PUBLISH', KEYS[1], ARGV[2])
redis.call('INCR', KEYS[4])
return {'queued', ''}
""")


CLAIM_AND_QUEUE = Script(
    "claim_and_queue",
    keys=("claim", "queue", "wake"),
    args=("claim_value", "ttl", "message", "ring"),
    source="""
-- Claim a submit's Idempotency-Key for its job and queue the job's message, in one atomic step. A key is
-- claimed if and only if its job was queued: a retry that finds the claim (its first try's API died, or its
-- connection or Redis was lost, between two steps) never gets back a job nobody queued.
-- KEYS[1] claim        the key's claim (api/idempotency.py): {job_id, body fingerprint}
-- KEYS[2] queue        the job's lane (kombu's list: LPUSH publishes)
-- KEYS[3] wake         the list idle workers block on; one element wakes one
-- ARGV[1] claim_value  the claim to set
-- ARGV[2] ttl          seconds the claim is kept (the job's record's)
-- ARGV[3] message      the job's message
-- ARGV[4] ring         '1': ring the wake list too (the lane was likely empty)
-- Returns {1, the lane's depth with the job} when claimed and queued, {0, the claim that won} else.
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  return {0, redis.call('GET', KEYS[1])}
end
local depth = redis.call('LPUSH', KEYS[2], ARGV[3])
if ARGV[4] == '1' then redis.call('RPUSH', KEYS[3], 1) end
return {1, depth}
""")


WITHDRAW = Script(
    "withdraw",
    keys=("queue", "claim..."),
    args=("message", "release"),
    source="""
-- Take a refused job's message off its queue and release its Idempotency-Key claim, in one atomic step (the
-- claim never outlives a withdrawn message: see claim_and_queue).
-- KEYS[1] queue     the job's lane
-- KEYS[2] claim     the job's Idempotency-Key claim, if its submit had a key (absent: none)
-- ARGV[1] message   the job's message, as queued
-- ARGV[2] release   'always': release the claim whatever happened; 'withdrawn': only if the message was still
--                   queued (one a worker took runs, and a retry should get it)
-- Returns 1 if the message was taken off its queue, 0 if a worker had taken it.
local withdrawn = redis.call('LREM', KEYS[1], 1, ARGV[1])
if KEYS[2] and (withdrawn == 1 or ARGV[2] == 'always') then redis.call('DEL', KEYS[2]) end
return withdrawn
""")
