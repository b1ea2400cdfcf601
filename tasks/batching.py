"""Adaptive micro-batching: a worker runs what is already waiting for it as one forward pass.

Celery hands the worker one job (prefetch 1, so no worker holds jobs it is not
running). Before running it, the task takes the jobs waiting behind it in the
same queue, oldest first, while their texts and its own fit in
``INFERQ_BATCH_SIZE`` texts (one forward pass, tasks/inference.MAX_BATCH), in
one atomic Redis script, and classifies all of them together. A job never
waits behind a batch larger than that: a bulk job of B texts or more runs
alone. Nothing is waited for: a lone job finds the queue empty and starts at
once (one script call, well under a millisecond), and under load the batch
grows to whatever arrived while the previous one ran.

What holds, and how:

- Late acknowledgement. The script moves each taken message into kombu's
  unacknowledged hash and index in the same step as it leaves the queue (no
  window where Redis holds it nowhere), exactly as kombu stores what a worker
  consumes; each is acknowledged only after its result is stored. A worker
  that dies mid-batch leaves them unacknowledged: the visibility timeout gives
  them back, and a worker restarted under its name gives back at once every
  job marked running under that name (tasks/recovery.py).
- Per-job failure isolation. A job refused by its own checks fails alone; a
  forward pass that raises is retried job by job.
- Per-job delivery counts. The script marks each job delivered once; a job
  that was delivered before (its worker died under it) is never taken into a
  batch and a first job that is a redelivery takes no batch-mates: after a
  crash every job runs alone, so a poison job spends only its own deliveries.
- Flower sees every job: the batch-mates' received, started and succeeded (or
  failed) events are sent in one buffered publish per batch.
"""
from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import redis

from inferq import contract
from inferq.celery_app import app

log = logging.getLogger(__name__)

# One round trip when a job starts: count its delivery and mark it running, then,
# if this is its first delivery, take the jobs waiting behind it.
# KEYS: the queue, kombu's unacked hash and index. ARGV: how many texts to take at
# most, now, the deliveries and running key prefixes, this worker, the keys' TTL,
# the task, the started job's id, the texts header. The queue is a kombu list:
# LPUSH on publish, the oldest on the right.
_START = """
local count = redis.call('INCR', ARGV[3] .. ARGV[8])
redis.call('EXPIRE', ARGV[3] .. ARGV[8], ARGV[6])
redis.call('SET', ARGV[4] .. ARGV[8], ARGV[5], 'EX', ARGV[6])
local result, unacked, index = {count}, {}, {}
if count ~= 1 then return result end  -- a redelivery runs alone: it may have killed its last worker
local room = tonumber(ARGV[1])
while room > 0 do
  local raw = redis.call('RPOP', KEYS[1])
  if not raw then break end
  local ok, msg = pcall(cjson.decode, raw)
  local headers = ok and type(msg) == 'table' and msg.headers
  local props = ok and type(msg) == 'table' and msg.properties
  local id = type(headers) == 'table' and headers.id
  local tag = type(props) == 'table' and props.delivery_tag
  local texts = type(headers) == 'table' and tonumber(headers[ARGV[9]]) or 1
  -- Not a job of this task, too many texts for the room left, or delivered before:
  -- back at the head, for the worker's normal path.
  if type(id) ~= 'string' or type(tag) ~= 'string' or headers.task ~= ARGV[7] or texts > room
      or not redis.call('SET', ARGV[3] .. id, 1, 'NX', 'EX', ARGV[6]) then
    redis.call('RPUSH', KEYS[1], raw)
    break
  end
  room = room - texts
  local info = type(props.delivery_info) == 'table' and props.delivery_info or {}
  -- kombu's unacked entry: [message, exchange, routing key], the message as published.
  unacked[#unacked + 1] = tag
  unacked[#unacked + 1] = '[' .. raw .. ',' .. cjson.encode(info.exchange or '') .. ','
                          .. cjson.encode(info.routing_key or KEYS[1]) .. ']'
  index[#index + 1] = ARGV[2]
  index[#index + 1] = tag
  redis.call('SET', ARGV[4] .. id, ARGV[5], 'EX', ARGV[6])
  result[#result + 1] = raw
end
if #result > 1 then
  -- One command each for the whole batch, in the same atomic step as the pops.
  redis.call('HSET', KEYS[2], unpack(unacked))
  redis.call('ZADD', KEYS[3], unpack(index))
end
return result
"""


@dataclass
class TakenJob:
    """A waiting job this worker took into its batch."""

    job_id: str
    delivery_tag: str
    texts: list[str]
    queued_at: float | None
    message: dict[str, Any]
    raw: bytes
    queue: str


def _decode(raw: bytes, queue: str) -> TakenJob:
    message = json.loads(raw)
    body = message["body"]
    if message["properties"].get("body_encoding") == "base64":
        body = base64.b64decode(body)
    args, kwargs, _embed = json.loads(body)  # Celery's message protocol 2
    texts = args[0] if args else kwargs["texts"]
    return TakenJob(message["headers"]["id"], message["properties"]["delivery_tag"], texts,
                    (kwargs or {}).get("queued_at"), message, raw, queue)


_scripts: dict[int, Any] = {}


def _start_script(client: redis.Redis) -> Any:
    """The start script registered on client (EVALSHA, reloaded by redis-py if Redis lost it)."""
    if id(client) not in _scripts:
        _scripts[id(client)] = client.register_script(_START)
    return _scripts[id(client)]


def start(client: redis.Redis, job_id: str, queue: str, limit: int, worker: str,
          ttl: int) -> tuple[int, list[TakenJob]]:
    """Count job_id's delivery and mark it running on worker; on its first delivery, take the jobs waiting
    in queue, oldest first, as consumed and started by worker, while their texts fit in limit. Returns
    (its delivery count, them)."""
    count, *raws = _start_script(client)(keys=[queue, contract.UNACKED_KEY, contract.UNACKED_INDEX_KEY], args=[
        max(0, limit), time.time(), contract.DELIVERIES_KEY.format(""), contract.RUNNING_KEY.format(""), worker,
        ttl, contract.CLASSIFY_TASK, job_id, contract.TEXTS_HEADER])
    taken = []
    for raw in raws:
        try:
            taken.append(_decode(raw, queue))
        except (ValueError, LookupError, TypeError) as exc:
            # A malformed message with a valid id and tag: leave it unacknowledged
            # for the visibility timeout to give back rather than drop it.
            log.error("cannot read a taken message (%r); left for the visibility timeout", exc)
    return int(count), taken


def acknowledge(client: redis.Redis, jobs: list[TakenJob]) -> None:
    """Remove the jobs from kombu's unacknowledged hash and index (two commands for the whole batch)."""
    if not jobs:
        return
    tags = [job.delivery_tag for job in jobs]
    try:
        with client.pipeline(transaction=False) as pipe:
            pipe.hdel(contract.UNACKED_KEY, *tags)
            pipe.zrem(contract.UNACKED_INDEX_KEY, *tags)
            pipe.execute()
    except redis.RedisError as exc:
        # Their results are stored: at worst the visibility timeout gives them back
        # and they run again, stored once under the same ids (at-least-once).
        log.warning("could not acknowledge %d batched job(s): %s", len(jobs), exc)


def give_back(client: redis.Redis, jobs: list[TakenJob]) -> None:
    """Put taken jobs back at the head of their queue, unmarked, at once (the batch was interrupted).

    One transaction: each message is back in its queue and out of the
    unacknowledged index together, so none is lost or doubled. If Redis cannot
    be reached, they stay unacknowledged, and the visibility timeout or this
    worker's restart gives them back (tasks/recovery.py).
    """
    if not jobs:
        return
    try:
        with client.pipeline(transaction=True) as pipe:
            for job in reversed(jobs):  # the oldest ends up rightmost: taken first again
                pipe.rpush(job.queue, job.raw)
            pipe.hdel(contract.UNACKED_KEY, *(job.delivery_tag for job in jobs))
            pipe.zrem(contract.UNACKED_INDEX_KEY, *(job.delivery_tag for job in jobs))
            pipe.delete(*(contract.DELIVERIES_KEY.format(job.job_id) for job in jobs),
                        *(contract.RUNNING_KEY.format(job.job_id) for job in jobs))
            pipe.execute()
        log.warning("gave back %d batched job(s) to the queue", len(jobs))
    except redis.RedisError as exc:
        log.warning("could not give back %d batched job(s) (%s); they come back after the visibility timeout "
                    "or when this worker restarts", len(jobs), exc)


class Events:
    """Flower's view of the batch-mates: task events buffered, sent in one publish per batch.

    One dispatcher per worker process, on a connection of its own; after a
    failed publish it is dropped and made again for the next batch. Events are
    for watching: losing some never fails a job.
    """

    def __init__(self) -> None:
        self._dispatcher: Any = None

    def send(self, hostname: str, type_: str, job_id: str, **fields: Any) -> None:
        try:
            if self._dispatcher is None:
                self._dispatcher = app.events.Dispatcher(
                    app.connection_for_write(), hostname=hostname, buffer_group=("task",), buffer_limit=10_000)
            self._dispatcher.send(type_, uuid=job_id, **fields)
        except Exception as exc:
            self._drop(exc)

    def flush(self) -> None:
        if self._dispatcher is None:
            return
        try:
            self._dispatcher.flush()
        except Exception as exc:
            self._drop(exc)

    def _drop(self, exc: Exception) -> None:
        log.warning("could not send task events for batched jobs: %s", exc)
        dispatcher, self._dispatcher = self._dispatcher, None
        if dispatcher is not None:
            try:
                dispatcher.close()
                dispatcher.connection.release()
            except Exception:
                pass


events = Events()
