"""The message the API pushes itself is the one Celery's send_task would have sent, so a Celery upgrade that
changes its message shows up here (every end-to-end test has a real worker run it)."""
from __future__ import annotations

import base64
import json
import time

from celery import Celery

from inferq import contract


def _decode(raw: bytes) -> tuple[dict, list]:
    message = json.loads(raw)
    return message, json.loads(base64.b64decode(message["body"]))


def test_the_envelope_matches_what_send_task_writes(redis_server, redis_client):
    queue, texts, queued_at = "inferq-envelope-test", ["first text", "second"], time.time()
    app = Celery("envelope-test", broker=redis_server.url, backend=redis_server.url)
    app.conf.update(task_serializer="json", accept_content=["json"])
    try:
        app.send_task(contract.CLASSIFY_TASK, task_id="a" * 32, queue=queue, ignore_result=True,
                      **contract.classify_message(texts, queued_at))
    finally:
        app.close()
    redis_client.lpush(queue, contract.classify_envelope("b" * 32, texts, queued_at, queue))
    # LPUSH puts the newest at the left: ours first, then send_task's.
    ours, theirs = _decode(redis_client.lpop(queue)), _decode(redis_client.lpop(queue))
    (our_message, our_body), (celery_message, celery_body) = ours, theirs
    assert our_body == celery_body  # args, kwargs and the embed, exactly
    assert set(our_message) == set(celery_message)
    assert set(our_message["headers"]) == set(celery_message["headers"]) | {contract.TEXTS_HEADER}
    assert our_message["headers"][contract.TEXTS_HEADER] == len(texts)
    # reply_to names a result consumer of send_task's own: the API waits its own way.
    assert set(our_message["properties"]) == set(celery_message["properties"]) - {"reply_to"}
    for key in ("content-type", "content-encoding"):
        assert our_message[key] == celery_message[key]
    for key in ("task", "lang", "retries", "timelimit", "ignore_result", "argsrepr", "kwargsrepr"):
        assert our_message["headers"][key] == celery_message["headers"][key], key
    assert our_message["headers"]["id"] == our_message["headers"]["root_id"] == "b" * 32
    for key in ("delivery_info", "priority", "body_encoding", "delivery_mode"):
        assert our_message["properties"][key] == celery_message["properties"][key], key
