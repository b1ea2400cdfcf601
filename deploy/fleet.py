"""The worker fleet as one: which image each host runs, and taking the updated hosts back when one fails.

A rolling update replaces one host at a time; if host N fails its health
check, it rolls itself back (deploy.containers), and the hosts before it,
already on the new image, go back here to the image each ran before: the
fleet never stays mixed, and the run says which image all of it runs.
"""
from __future__ import annotations

from inferq.deploy import image as images
from inferq.deploy.connections import connect
from inferq.deploy.containers import Wait
from inferq.deploy.credentials import Secrets
from inferq.deploy.image import Archive, Image
from inferq.deploy.inventory import Host, Inventory
from inferq.deploy.layout import Report
from inferq.deploy.runtime import Runtime
from inferq.deploy.workers import deploy_worker


def running_image(runtime: Runtime, inventory: Inventory, host: Host) -> Image | None:
    """The image the host's workers run now (the newest of its image history), or None (none yet)."""
    with connect(inventory, host) as c:
        return runtime.workers(inventory, host).current(c)


def roll_back(runtime: Runtime, inventory: Inventory, secrets: Secrets, secrets_dir: str,
              updated: list[tuple[Host, Image | None]], scratch: str, wait: Wait, report: Report) -> str:
    """Put each updated host back on the image it ran before (newest first); what the fleet runs now, one line."""
    for host, before in reversed(updated):
        if before is None:
            continue  # nothing ran there before this update: nothing to go back to
        # The host kept the image (deploy.defaults.KEEP_IMAGES): nothing is shipped unless it lost it.
        archive = Archive(runtime.docker, before, scratch)
        deploy_worker(runtime, inventory, host, secrets, secrets_dir, before, archive, wait, report)
        report(f"{host.name}: rolled back to {before.tag} ({before.short})")
    return one_image(runtime, inventory)


def one_image(runtime: Runtime, inventory: Inventory) -> str:
    """One line: the image every worker container of the fleet runs, or the images it is split between."""
    found: dict[str, set[str]] = {}
    for host in inventory.workers:
        with connect(inventory, host) as c:
            for container in runtime.workers(inventory, host).status(c):
                tag = (container["tags"].split(",") or [""])[0] or "untagged"
                found.setdefault(container["image"] or "none", set()).add(f"{tag} on {host.name}")
    if len(found) == 1:
        image_id, where = next(iter(found.items()))
        tags = sorted({w.split(" on ")[0] for w in where})
        return f"fleet: every worker container runs {', '.join(tags)} ({images.plain_id(image_id)[:12]})"
    split = "; ".join(f"{i[:12]}: {', '.join(sorted(w))}" for i, w in sorted(found.items()))
    return f"fleet: MIXED, {len(found)} images ({split})" if found else "fleet: no worker containers"
