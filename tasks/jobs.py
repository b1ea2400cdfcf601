"""The inference task: unpack the message, take the jobs waiting behind it, run them in passes, report.

The task has one contract (contract.py): the name CLASSIFY_TASK, the message of
classify_message, and a state stored per job (tasks/results.py). INFERQ_BATCH_SIZE
only chooses how many texts a forward pass may hold: the jobs waiting behind the
delivered one join it while they fit (tasks/batching.py), a longer job runs in
several passes (tasks/passes.py); 1 turns batching off.
"""
from __future__ import annotations

import logging

import redis
from celery.exceptions import Ignore

from inferq import contract
from inferq.broker.holdings import holdings
from inferq.celery_app import app
from inferq.settings import Worker, current
from inferq.tasks import batching, clients, deliveries, passes, shutdown

log = logging.getLogger(__name__)


# ignore_result: the task stores every job's state itself, its own and its batch-mates', in one round
# trip (tasks/results.py); Celery storing it again would cost a read and a transaction per job.
@app.task(name=contract.CLASSIFY_TASK, bind=True, ignore_result=True)
def classify_job(self, texts: list[str], queued_at: float | None = None) -> contract.JobResult:
    """Classify a job's texts, with the jobs waiting behind it; the result says which model, which worker and when.

    queued_at: when the API accepted the job (for the latency metric, tasks/metrics.py).
    """
    settings = current(Worker)
    request = self.request
    mark = getattr(request, contract.CANCEL_HEADER, None)
    delivered = passes.Job(request.id, texts, queued_at, bool(getattr(request, contract.CALLBACK_HEADER, False)),
                           cancel_mark=mark.encode() if mark else None)
    lanes = list(contract.lane_queues(settings.redis.queue).values())
    delivery = int(getattr(request, contract.DELIVERY_HEADER, None) or 1)
    # With the jobs the take took behind this one (none for a redelivery: it runs alone).
    batch = passes.Batch([delivered, *map(passes.Job.of, batching.claim(request.id, lanes[0]))],
                         settings.delivery.batch_size, lambda room: _take(lanes[:1], room, settings.redis.result_ttl))
    try:
        deliveries.admit(request.id, delivery)
    except deliveries.PoisonJob as exc:
        batch.finish([delivered], [exc])
        raise
    try:
        shutdown.interrupt_if_leaving()
        outcome = batch.run()
    except BaseException:
        # Interrupted (SIGTERM gives the job back, tasks/shutdown.py) or broken before every result was
        # stored: Celery gives this job back; what the task took and did not finish goes back too, at once.
        holdings.give_back(clients.broker(), batch.unfinished())
        raise
    if isinstance(outcome, passes.Cancelled):
        raise Ignore()  # its cancelled state is stored: Celery stores nothing and acknowledges
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def _take(lanes: list[str], room: int, ttl: int) -> list[batching.TakenJob]:
    """The jobs waiting first in lanes that fit in room texts, taken; none if Redis does not answer."""
    try:
        return batching.take(clients.broker(), lanes, room, ttl)
    except redis.RedisError as exc:
        # If the take ran but its reply was lost, what it took is given back before the next take.
        holdings.out_of_step = True
        log.warning("could not take batch-mates (%s); running what this worker holds", exc)
        return []
