"""Fabric tasks for an inferq cluster: ``fab -r deploy <task> [--inventory ...]``.

    fab -r deploy deploy     # configure everything, build and ship the worker image, wait for the workers, smoke job
    fab -r deploy status     # the API's address and certificate, workers online, queue depth, containers per host
    fab -r deploy submit --text "what a lovely day"   # through the public API: TLS, the certificate pinned; every
                                                      # orchestrator's address, the next when one does not answer
    fab -r deploy logs [--lines 50]
    fab -r deploy update [--image TAG]   # orchestrator, then one worker host and one container at a time
    deploy and update: --allow-dirty (ship uncommitted changes, marked dirty), --break-lock (a dead deploy's lock)

The work is in deploy.operations; these wrappers parse options and print. Every
SSH connection checks the host's key against the known_hosts file beside the
inventory; a torn-down cluster's inventory is refused.
"""
import json

from invoke import Exit, task

from inferq.deploy import credentials, defaults, operations
from inferq.deploy import inventory as inv
from inferq.deploy import logs as deploy_logs
from inferq.deploy.errors import DeployError

HELP = {"inventory": f"inventory file (default {defaults.INVENTORY})",
        "secrets": f"local secrets directory (default {defaults.SECRETS_DIR})"}

SHIP_HELP = {**HELP,
             "allow-dirty": "ship the tracked files as they are, uncommitted changes included (the release is "
                            "marked dirty; untracked files never ship)",
             "break-lock": "remove another deploy's lock first (one that died and left it), saying whose it was"}


def _load(inventory, secrets_dir):
    cluster = inv.read_ready(inventory)
    return cluster, credentials.load_or_create(secrets_dir, cluster.cluster)


def _run(action):
    """Run a task's action; every failure ends as one line on stderr, exit status 1."""
    from fabric.runners import Result as RemoteResult
    from invoke.exceptions import UnexpectedExit
    from paramiko import SSHException

    deploy_logs.to_stdout()  # retries are reported as they happen, on stdout with the progress
    try:
        return action()
    except DeployError as exc:
        raise Exit(f"fab: {exc}", code=1) from None
    except UnexpectedExit as exc:
        # Commands never carry secrets (they travel in files), so naming the command is safe.
        result = exc.result
        last = (result.stderr.strip().splitlines() or result.stdout.strip().splitlines() or [""])[-1]
        # Every command runs over a Connection (fabric's Result names it); a local one would have no host.
        where = f"on {result.connection.host}: " if isinstance(result, RemoteResult) else ""
        raise Exit(f"fab: {where}`{result.command}` exited {result.exited}: {last}", code=1) from None
    except (OSError, SSHException) as exc:
        raise Exit(f"fab: SSH failed: {exc}; check the inventory's addresses and the admin CIDR", code=1) from None


@task(help=SHIP_HELP)
def deploy(c, inventory=defaults.INVENTORY, secrets=defaults.SECRETS_DIR, allow_dirty=False, break_lock=False):
    """Configure the orchestrator; build the worker image once and run it on every worker host; smoke job."""
    def action():
        cluster, made = _load(inventory, secrets)
        operations.deploy(cluster, made, secrets, print, allow_dirty=allow_dirty, break_lock=break_lock)
    _run(action)


@task(help=HELP)
def status(c, inventory=defaults.INVENTORY, secrets=defaults.SECRETS_DIR):
    """The API's address and certificate, workers online, queue depth, each worker host's containers and images."""
    _run(lambda: operations.status(inv.read_ready(inventory), secrets, print))


@task(help={**HELP, "lines": "lines per service (default 50)"})
def logs(c, inventory=defaults.INVENTORY, secrets=defaults.SECRETS_DIR, lines=50):
    """The last log lines of every service on every host."""
    _run(lambda: operations.logs(inv.read_ready(inventory), int(lines), print))


@task(help={**SHIP_HELP, "image": "roll out this image, already built here, instead of building the release's "
                                 "(to go back to an earlier one, say)"})
def update(c, inventory=defaults.INVENTORY, secrets=defaults.SECRETS_DIR, image=None, allow_dirty=False,
           break_lock=False):
    """Update the orchestrator (smoke job, else back), then the workers one host at a time; on a failure the whole
    fleet goes back to the image it ran."""
    def action():
        cluster, made = _load(inventory, secrets)
        operations.rolling_update(cluster, made, secrets, print, image_tag=image, allow_dirty=allow_dirty,
                                  break_lock=break_lock)
    _run(action)


@task(help={**HELP, "text": "the text to classify"})
def submit(c, text, inventory=defaults.INVENTORY, secrets=defaults.SECRETS_DIR):
    """Submit one text to the cluster's API and print the finished job (every orchestrator's address, each with its
    pinned certificate, the next tried when one does not answer)."""
    def action():
        cluster, made = _load(inventory, secrets)
        print(json.dumps(operations.submit(cluster, made, secrets, text), indent=2))
    _run(action)
