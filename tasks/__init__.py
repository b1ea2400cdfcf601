"""inferq's workers: the inference task and what else a worker process does (the model is model/'s).

A worker runs ``celery -A inferq.tasks.app worker`` (the ``inferq-worker``
command). Only workers import this package: the API queues jobs by task name
(contract.py) and Flower needs only the app (celery_app.py). Importing the
package itself does nothing, so ``inferq-worker`` can check its settings
before anything reads them.
"""
