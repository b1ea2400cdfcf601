"""The worker node-name scheme and the worker's command line, written once for every runtime.

A worker host runs ``containers_per_worker`` workers, named like the services
of docker-compose.yml (worker-1, worker-2 ...). Each has the hostname
``<host>-w<i>`` (compose: ``hostname: ${INFERQ_HOST}-w<i>``), so its Celery node
name, ``worker@%h`` in the image's command, is ``worker@<host>-w<i>``: unique in
the cluster, and the name the deploy waits for in a Celery ping.
"""
from __future__ import annotations

from inferq import commands
from inferq.deploy.inventory import Host, Inventory

NODE = "worker@%h"
"""A container worker's Celery node name (%h: its hostname, <host>-w<i>)."""

WORKER_COMMAND = commands.worker(NODE)
"""The worker image's CMD, and every other runtime's worker command."""


def service(index: int) -> str:
    """The compose service (and process-runtime service) name of a host's index-th worker."""
    return f"worker-{index}"


def hostname(host: Host, index: int) -> str:
    """The hostname of a host's index-th worker (its container's hostname)."""
    return f"{host.name}-w{index}"


def node(host: Host, index: int) -> str:
    """The Celery node name of a host's index-th worker."""
    return NODE.replace("%h", hostname(host, index))


def host_nodes(inventory: Inventory, host: Host) -> list[str]:
    """Celery node names of one worker host's workers, in service order."""
    return [node(host, i) for i in range(1, inventory.containers_per_worker + 1)]


def worker_nodes(inventory: Inventory) -> list[str]:
    """Celery node names of every worker of the cluster."""
    return [name for host in inventory.workers for name in host_nodes(inventory, host)]


def worker_command(bin_dir: str, host: Host, index: int) -> list[str]:
    """The worker command with the node name spelled out, for a runtime that runs it outside a container."""
    return commands.worker(node(host, index), bin_dir)
