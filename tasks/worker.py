"""Per-worker-process state: the loaded model, and the heartbeat /readyz reads, which also renews leases.

The model is loaded on ``worker_process_init``: the solo pool sends it in the
worker process before the consumer starts, prefork sends it in each child
after the fork. Either way the model lives in the process that uses it and
nothing forks after torch has started its threads.
"""
from __future__ import annotations

import gc
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field

from celery import signals

from inferq.broker.holdings import holdings
from inferq.contract import WORKERS_KEY, WorkerInfo
from inferq.model.loaded import LoadedModel, ModelUnavailable
from inferq.model.loader import load
from inferq.settings import Worker, current
from inferq.tasks import metrics

log = logging.getLogger(__name__)

WARMUP_TEXT = "warm up the model before the first job"

GC_SECONDS = 10.0
"""How often the heartbeat thread collects reference cycles in full. A job that fails leaves a cycle behind (Celery's
ExceptionInfo holds the traceback's frames and code positions: celery#8882), which Python's collector reaches only
in its rare full collections: worker memory grew 20% over 20,000 jobs of which 10% raised. Run on that thread,
the collection overlaps the forward pass, which releases the GIL."""



@dataclass
class _ProcessState:
    """What this worker process holds: its model, counters, name and heartbeat thread."""

    model: LoadedModel | None = None
    loads: int = 0
    jobs: int = 0
    hostname: str = field(default_factory=socket.gethostname)
    heartbeat: threading.Thread | None = None


_state = _ProcessState()
_heartbeat_stop = threading.Event()


def load_model() -> LoadedModel:
    """Load and warm the configured model in this process, counting loads."""
    from inferq.model.inference import classify

    settings = current(Worker)
    started = time.perf_counter()
    loaded = load(settings.model.name, settings.model.cache, settings.precision, settings.torch_threads)
    classify(loaded, [WARMUP_TEXT])  # first call pays one-off allocation costs
    _state.model = loaded
    _state.loads += 1
    log.info(
        "model %s (%s) loaded and warmed in %.2fs, pid %d, %d torch thread(s)",
        loaded.info["name"], settings.precision, time.perf_counter() - started,
        os.getpid(), settings.torch_threads,
    )
    if "warning" in loaded.info:
        log.warning("%s", loaded.info["warning"])
    return loaded


def current_model() -> LoadedModel:
    """The model of this process (loaded now if the pool sent no init signal)."""
    return _state.model or load_model()


def hostname() -> str:
    """This worker's Celery hostname (name@host) once it is ready, else the machine's."""
    return _state.hostname


def identity() -> WorkerInfo:
    """Who ran a job: the worker, its process and how often it loaded the model."""
    _state.jobs += 1
    return {"hostname": _state.hostname, "pid": os.getpid(), "model_loads": _state.loads, "jobs_done": _state.jobs}


@signals.worker_process_init.connect
def _load_on_process_init(**_):
    try:
        load_model()
    except ModelUnavailable as exc:
        log.critical("%s", exc)
        # A worker without a model must not consume jobs; SystemExit passes
        # through Celery's signal dispatch and stops the worker.
        raise SystemExit(3) from None


def _beat(hostname: str) -> None:
    import redis

    from inferq import redislink

    link = current(Worker).redis
    client = redislink.client(link, link.broker, socket_timeout=link.timeout, socket_connect_timeout=link.timeout)
    collected_at = time.monotonic()
    while not _heartbeat_stop.is_set():
        if time.monotonic() - collected_at >= GC_SECONDS:
            gc.collect()
            collected_at = time.monotonic()
        try:
            client.zadd(WORKERS_KEY, {hostname: time.time()})
            metrics.flush()
            # A thread of its own: the solo pool runs the job on the main thread, which may hold it for
            # longer than the visibility timeout; the leases of what it holds must not run out meanwhile.
            holdings.renew(client, link.result_ttl)
        except redis.RedisError as exc:
            log.warning("heartbeat to Redis failed: %s", exc)
        _heartbeat_stop.wait(link.heartbeat_seconds)
    metrics.flush()  # what this worker's last jobs counted
    try:
        client.zrem(WORKERS_KEY, hostname)
    except redis.RedisError:
        pass


@signals.celeryd_init.connect
def _name_holdings(sender=None, **_):
    # Sent with the node name before the worker connects: the takes record what they hold under it.
    if sender:
        holdings.holder = sender


@signals.worker_ready.connect
def _freeze_what_lasts(**_):
    # The model, the libraries and Celery's own objects live as long as the process: out of the collector's
    # reach from now on, so that a full collection only walks what jobs made since (milliseconds, not the
    # hundreds a collection of the whole heap takes).
    gc.collect()
    gc.freeze()


@signals.worker_ready.connect
def _start_heartbeat(sender=None, **_):
    # worker_ready fires once the consumer is running: from then on /readyz
    # may count this worker as consuming.
    hostname = getattr(sender, "hostname", None) or _state.hostname
    _state.hostname = hostname
    thread = threading.Thread(target=_beat, args=(hostname,), name="inferq-heartbeat", daemon=True)
    thread.start()
    _state.heartbeat = thread


@signals.worker_shutdown.connect
def _stop_heartbeat(**_):
    # Deregister at once, so /readyz stops counting a worker that is leaving.
    _heartbeat_stop.set()
    thread = _state.heartbeat
    if thread is not None:
        thread.join(timeout=current(Worker).redis.timeout + 0.5)
