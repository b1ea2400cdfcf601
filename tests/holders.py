"""Which worker holds a job, read the way the workers record it (broker/holdings.py): for tests."""
from __future__ import annotations

from pathlib import Path

from inferq.broker.wire import UNACKED_KEY
from inferq.contract import DELIVERIES_KEY, HOLDING_KEY, JOB_KEY, MALFORMED_KEY
from inferq.jobview import read_state


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


def whereabouts(client, job_id: str, lanes: list[str]) -> dict:
    """Where a job lies in Redis, every place a message can be: for explaining a job a test found lost."""
    queued = [lane for lane in lanes if any(job_id.encode() in raw for raw in client.lrange(lane, 0, -1))]
    malformed = any(job_id.encode() in raw for raw in client.lrange(MALFORMED_KEY, 0, -1))
    return {"record": client.exists(JOB_KEY.format(job_id)) == 1, "state": read_state(client, job_id).get("status"),
            "queued_in": queued, "unacked": client.hexists(UNACKED_KEY, job_id), "holder": holder(client, job_id),
            "deliveries": client.get(DELIVERIES_KEY.format(job_id)), "malformed": malformed}


def lines_naming(paths, text: str, limit: int, root: Path) -> list[str]:
    """Each file's first `limit` lines containing text, prefixed with the file's path from root: a lost job's
    trail in the processes' logs, for a test's own output (CI keeps nothing else)."""
    found = []
    for path in paths:
        named = [line for line in path.read_text(errors="replace").splitlines() if text in line]
        found += [f"  {path.relative_to(root)}: {line[:300]}" for line in named[:limit]]
    return found
