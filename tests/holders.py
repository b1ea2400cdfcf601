"""Which worker holds a job, read the way the workers record it (broker/holdings.py): for tests."""
from __future__ import annotations

from inferq.broker.wire import UNACKED_KEY
from inferq.contract import DELIVERIES_KEY, HOLDING_KEY


def holder(client, job_id: str) -> str | None:
    """The node name (name@host) of the worker holding the job, or None if it is not taken."""
    if not client.hexists(UNACKED_KEY, job_id):
        return None
    prefix = HOLDING_KEY.format("")
    for key in client.scan_iter(match=prefix + "*"):
        if client.sismember(key, job_id):
            return key.decode()[len(prefix):]
    return None


def deliveries(client, job_ids) -> dict[str, int]:
    """How often each job was taken (1 unless it was given back after its worker died)."""
    job_ids = list(job_ids)
    counts = client.mget([DELIVERIES_KEY.format(j) for j in job_ids]) if job_ids else []
    return {j: int(c or 1) for j, c in zip(job_ids, counts)}
