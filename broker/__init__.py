"""What inferq writes into Redis as Celery's broker, and how its workers take it.

- ``wire``: the formats of Celery and kombu that inferq writes or reads itself.
- ``scripts``: every Lua script, registered once, each key and argument named.
- ``transport``: the workers' kombu transport (imports kombu: workers only). Its
  take moves a message from its queue into the unacknowledged record in one step.
- ``qos``: its acknowledgements and give-backs.
- ``holdings``: what one worker process holds, its leases, and giving jobs back.
- ``wake``: the list idle workers wait on, and ringing it when a queue fills.

The API imports ``wire``, ``scripts`` and ``wake`` (no kombu, no Celery); the workers all of them.
"""
