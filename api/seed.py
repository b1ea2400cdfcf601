"""Answers of the seed's route, ``POST /new_request``, in the shapes the seed's clients expect.

The seed's orchestrator answered 200 "Request received and enqueued", and its
model containers answered ``{"input_text", "probabilities": [...]}``; clients
written for it check ``status_code == 200`` and read those fields.
"""
from __future__ import annotations

from flask import jsonify, url_for

SEED_ACK = "Request received and enqueued"
"""What the seed's orchestrator answered; its clients may look for it."""


def acknowledgement(job_id: str, created: bool, status: str = "queued", error: dict | None = None):
    """200 with the seed's message, the job id and where to read the job."""
    body = jsonify(message=SEED_ACK, job_id=job_id, status=status,
                   status_url=url_for("jobs.get_job", job_id=job_id, _external=True),
                   **({"error": error} if error else {}))
    return _with_headers(body, job_id, created)


def container_result(job_id: str, text: str, result: dict, created: bool):
    """200 with a finished job in the seed's container shape: probabilities as a list in label order."""
    # The worker lists probabilities in the model's label order (id2label), and
    # JSON keeps that order: the list lines up with the model's labels.
    body = jsonify(input_text=text, probabilities=list(result["probabilities"].values()),
                   label=result["label"], job_id=job_id)
    return _with_headers(body, job_id, created)


def _with_headers(response, job_id: str, created: bool):
    # As POST /jobs answers: where the job is, and whether an Idempotency-Key replayed it.
    response.headers["Location"] = url_for("jobs.get_job", job_id=job_id)
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return response
