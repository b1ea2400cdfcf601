"""An orchestrator host: Redis (TLS only, one ACL user per role, AOF, private bind, a memory limit), the API and
Flower on loopback, and nginx, the one public port, in front of the API with TLS. With --ha there are two: each
runs a Redis data node and a Sentinel (deploy.replication), the API and the proxy; Flower runs on the first."""
from __future__ import annotations

from fabric import Connection

from inferq import commands
from inferq.deploy import config_files, proxy, replication, tls
from inferq.deploy.connections import root
from inferq.deploy.credentials import Secrets
from inferq.deploy.files import put_if_changed
from inferq.deploy.inventory import Host, Inventory
from inferq.deploy.layout import Layout, Report
from inferq.deploy.runtime import Runtime
from inferq.deploy.services import Service

ROLLED_BACK = ("orchestrator.env", "flower.env", "nginx.conf")
"""The files under etc/ that a failed smoke job puts back: the API's and Flower's settings, and the proxy's
(its body limit and timeouts follow the API's settings, so it changes with them)."""


def orchestrator_services(runtime: Runtime, inventory: Inventory, host: Host, where: Layout) -> list[Service]:
    """Redis, the API under gunicorn, Flower (loopback: reached through SSH; on the first orchestrator), the TLS
    proxy; with --ha a Sentinel too."""
    env = f"{where.remote_dir}/etc/orchestrator.env"
    flower_env = f"{where.remote_dir}/etc/flower.env"  # Flower logs in to Redis as its own user
    first = host == inventory.orchestrator
    # With a worker Auto Scaling group: the scaling signal, published with the orchestrator's instance profile
    # (from one orchestrator: two would publish every figure twice).
    group = inventory.autoscaling
    scaling = [Service("backlog-metrics", [f"{where.bin}/inferq-backlog-metrics", "--cluster", inventory.cluster,
                                           "--region", group["region"]], env, where.code,
                       user=runtime.user("backlog-metrics"))] if group and first else []
    return scaling + [
        replication.redis_service(runtime, inventory, where),
        *([replication.sentinel_service(runtime, where)] if inventory.ha else []),
        Service("api", commands.api(where.bin), env, where.code, user=runtime.user("api")),
        # Loopback only: Flower is reached through an SSH tunnel (docs/deploy.md).
        *([Service("flower", commands.flower(where.bin, "127.0.0.1", inventory.flower_port), flower_env, where.code,
                   user=runtime.user("flower"))] if first else []),
        # The master binds the public port and reads the key as root; its workers run as runtime.user("proxy").
        Service("proxy", [runtime.nginx, "-c", f"{where.remote_dir}/etc/nginx.conf", "-g", "daemon off;"], "",
                where.remote_dir, user="root"),
    ]


def write_tls(c: Connection, inventory: Inventory, host: Host, where: Layout, secrets_dir: str) -> bool:
    """The API's certificate (made here once) and its key on the host: the cluster's, or with --ha this
    orchestrator's own (clients pin each one's); True if either changed."""
    addresses = sorted({host.public_ip, host.private_ip})
    made = (tls.load_or_create_for(secrets_dir, inventory.cluster, host.name, addresses) if inventory.ha
            else tls.load_or_create(secrets_dir, inventory.cluster, addresses))
    key = put_if_changed(c, made.key_pem, f"{where.remote_dir}/etc/tls/api.key", "600")
    cert = put_if_changed(c, made.cert_pem, f"{where.remote_dir}/etc/tls/api.crt", "644")
    return key or cert


def write_proxy(c: Connection, runtime: Runtime, inventory: Inventory, where: Layout) -> bool:
    """nginx.conf, checked by nginx itself before anything restarts; True if it changed."""
    from inferq.settings import Api, load

    api = load(Api, inventory.env)  # the API's limits as the hosts will have them
    run_dir = f"{where.remote_dir}/run/proxy"
    root(c, f"install -d -m 700 -o {runtime.user('proxy')} {run_dir}")
    conf = proxy.nginx_conf(inventory, run_dir, f"{where.remote_dir}/etc/tls/api.crt",
                            f"{where.remote_dir}/etc/tls/api.key", runtime.user("proxy"), api.max_body_bytes,
                            api.max_wait_seconds)
    changed = put_if_changed(c, conf, f"{where.remote_dir}/etc/nginx.conf")
    # A configuration nginx rejects stops the deploy here, with the running proxy untouched.
    root(c, f"{runtime.nginx} -t -q -c {where.remote_dir}/etc/nginx.conf")
    return changed


def deploy_orchestrator(c: Connection, runtime: Runtime, inventory: Inventory, host: Host, primary: Host | None,
                        secrets: Secrets, secrets_dir: str, report: Report) -> int:
    """Configure Redis (with --ha: a data node following primary, replication.current_primary's, unless it is
    primary, and a Sentinel), the API, Flower and the proxy on host; start or restart what changed (a new
    release too). Return the changes made."""
    where = runtime.layout(inventory, host)
    prepared = runtime.prepare_orchestrator(c, inventory, host, where)
    conf_changed, sentinel_changed, limit = replication.configure(c, runtime, inventory, host, primary, secrets,
                                                                  secrets_dir, where)
    tls_dir = replication.tls_dir(where)
    env_changed = put_if_changed(c, config_files.orchestrator_env(inventory, secrets, tls_dir),
                                 f"{where.remote_dir}/etc/orchestrator.env", "600")
    env_changed |= put_if_changed(c, config_files.flower_env(inventory, secrets, tls_dir),
                                  f"{where.remote_dir}/etc/flower.env", "600")
    tls_changed = write_tls(c, inventory, host, where, secrets_dir)
    proxy_changed = write_proxy(c, runtime, inventory, where)
    changes = prepared + conf_changed + env_changed + tls_changed + proxy_changed + sentinel_changed
    if conf_changed:
        report(f"{host.name}: redis maxmemory {limit // 2**20} MiB ({inventory.redis_memory_fraction:g} of the "
               "host's memory)")
    services = runtime.service_manager(where)
    for service in orchestrator_services(runtime, inventory, host, where):
        # Each restarts only for its own inputs: Redis for its configuration, a Sentinel for its own, the proxy
        # for its own and the certificate, the API and Flower for their environment or a new release.
        inputs = {"redis": conf_changed, "sentinel": sentinel_changed, "proxy": tls_changed or proxy_changed}.get(
            service.name, env_changed or prepared > 0)
        outcome = services.ensure(c, service, inputs)
        changes += outcome != "unchanged"
        report(f"{host.name}: {service.name} {outcome}")
    return changes


def snapshot(c: Connection, runtime: Runtime, inventory: Inventory, host: Host) -> dict[str, str]:
    """Before a deploy changes an orchestrator: its current release, and copies of the files in ROLLED_BACK.

    What roll_back() returns to when the new release fails its smoke job.
    """
    where = runtime.layout(inventory, host)
    for name in ROLLED_BACK:
        path = f"{where.remote_dir}/etc/{name}"
        root(c, f"if test -f {path}; then cp -p {path} {path}.previous; else rm -f {path}.previous; fi")
    current = root(c, f"readlink -f {where.remote_dir}/current", warn=True).stdout.strip()
    return {"release": current if current.startswith(f"{where.remote_dir}/releases/") else ""}


def roll_back(c: Connection, runtime: Runtime, inventory: Inventory, host: Host, before: dict[str, str],
              report: Report) -> str:
    """Put host's API and Flower back on the release and env file they ran before, the proxy on its configuration.

    Return the release now current.
    """
    from inferq.deploy import release

    where = runtime.layout(inventory, host)
    if before["release"] and root(c, f"test -f {before['release']}/.installed", warn=True).ok:
        release.switch(c, where.remote_dir, before["release"])
    restored = []
    for name in ROLLED_BACK:
        path = f"{where.remote_dir}/etc/{name}"
        # Nothing to put back without a copy (a first deploy), nor when the deploy left the file as it was.
        if root(c, f"test -f {path}.previous && ! cmp -s {path}.previous {path}", warn=True).ok:
            root(c, f"cp -p {path}.previous {path}")
            restored.append(name)
    services = runtime.service_manager(where)
    for service in orchestrator_services(runtime, inventory, host, where):
        if service.name in ("api", "flower"):
            services.ensure(c, service, True)
        elif service.name == "proxy":
            services.ensure(c, service, "nginx.conf" in restored)
    now = root(c, f"readlink -f {where.remote_dir}/current", warn=True).stdout.strip().rsplit("/", 1)[-1]
    report(f"{host.name}: api and flower back on release {now or 'none'}"
           + ("; proxy back on its previous configuration" if "nginx.conf" in restored else ""))
    return now
