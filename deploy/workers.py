"""A worker host: the workers' env file, then its workers as the runtime runs them (containers on AWS)."""
from __future__ import annotations

from inferq.deploy import config_files, tls
from inferq.deploy.connections import connect
from inferq.deploy.containers import Wait
from inferq.deploy.credentials import Secrets
from inferq.deploy.defaults import WORKER_UID
from inferq.deploy.files import put_if_changed
from inferq.deploy.image import Archive, Image
from inferq.deploy.inventory import Host, Inventory
from inferq.deploy.layout import Report
from inferq.deploy.runtime import Runtime


def deploy_worker(runtime: Runtime, inventory: Inventory, host: Host, secrets: Secrets, secrets_dir: str,
                  image: Image, archive: Archive, wait: Wait, report: Report) -> int:
    """Write the worker env, then start or roll the host's containers one at a time. Return changes made."""
    where = runtime.layout(inventory, host)
    with connect(inventory, host) as c:
        changes = runtime.prepare_worker(c, inventory, host)
        workers = runtime.workers(inventory, host)
        # Containers read it as the image's user (a compose secret keeps the file's owner and mode).
        env_changed = put_if_changed(c, config_files.worker_env(inventory, secrets),
                                     f"{where.remote_dir}/worker.env", "600", str(WORKER_UID))
        # The CA that signed Redis's certificate (a compose secret: /run/secrets/redis_ca in the containers).
        env_changed |= put_if_changed(c, tls.load_or_create_ca(secrets_dir, inventory.cluster).cert_pem,
                                      f"{where.remote_dir}/{config_files.WORKER_CA_FILE}", "644", str(WORKER_UID))
        changes += env_changed
        changes += workers.deploy(c, archive, image, env_changed, wait, report)
    report(f"{host.name}: workers deployed ({changes} change(s))")
    return changes
