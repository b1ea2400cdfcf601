"""Redis on its hosts: the single layout's one, and the --ha layout's three data nodes and three Sentinels
(inventory.data_hosts, inventory.sentinel_hosts).

The first orchestrator starts as the primary; the second orchestrator and the standby worker host (worker-1)
replicate it, and a Sentinel on each of the three hosts watches it. Why three copies when the design asks for
two: a job counts as accepted once a replica holds it (WAIT 1), so with two nodes, losing either would stop
every submit until it came back; with three, any one host can be lost and jobs are still accepted on two
nodes. Any of the three may be promoted (config_files.data_node_lines says why): clients find the primary
through the Sentinels wherever it is.

Which node is the primary is the Sentinels' to say once they run. A deploy asks them (current_primary) and
writes a node's role (``replicaof``) only when it writes that node's configuration anew: because the rendered
settings changed, or because the node does not follow the primary they name (a host back after a failover);
otherwise a node and the Sentinels keep what they agreed on. Which node is the primary is no setting, so the
deploy's copy of sentinel.conf names none: a failover alone restarts no Sentinel at the next deploy. Redis
and Sentinel rewrite their own files as roles change (Sentinel's CONFIG REWRITE, its own state), so the live
files sit in directories of theirs, and the deploy compares its rendering with the copy it wrote last (the ``.rendered``
file in etc/), never with the live file.
"""
from __future__ import annotations

import shlex
import time

from fabric import Connection

from inferq.deploy import config_files, tls
from inferq.deploy.connections import connect, memory_of, root
from inferq.deploy.credentials import Secrets
from inferq.deploy.errors import DeployError
from inferq.deploy.files import put_if_changed
from inferq.deploy.inventory import Host, Inventory
from inferq.deploy.layout import Layout, Report
from inferq.deploy.runtime import Runtime
from inferq.deploy.services import Service

SENTINEL_WAIT_SECONDS = 90
"""How long a deploy waits for every Sentinel to know both replicas and the other two Sentinels (a Sentinel
reads the primary's replicas from its INFO every 10 s)."""


def master_name(inventory: Inventory) -> str:
    """The name the Sentinels know the primary by (INFERQ_REDIS_MASTER_NAME of the inventory's env)."""
    from inferq.settings import RedisLink, load

    return load(RedisLink, inventory.env).master_name


def redis_data_dir(where: Layout) -> str:
    """A data node's directory: its AOF and, with --ha, its live redis.conf (Redis rewrites it)."""
    return f"{where.remote_dir}/redis"


def redis_conf_path(inventory: Inventory, where: Layout) -> str:
    """The redis.conf a data node runs with: etc/ in the single layout (only the deploy writes it), its data
    directory with --ha (Sentinel has Redis rewrite it when the node's role changes)."""
    return f"{redis_data_dir(where)}/redis.conf" if inventory.ha else f"{where.remote_dir}/etc/redis.conf"


def tls_dir(where: Layout) -> str:
    """Where a data host keeps Redis's certificate, its key and the cluster's CA (config_files.TLS_DIR)."""
    return f"{where.remote_dir}/{config_files.TLS_DIR}"


def sentinel_dir(where: Layout) -> str:
    """A Sentinel's own directory: its live configuration, and nothing else."""
    return f"{where.remote_dir}/sentinel"


def sentinel_conf_path(where: Layout) -> str:
    """A Sentinel's live configuration, in a directory of its own: Sentinel refuses to start unless it can
    rewrite it (it records there what it learns: replicas, the other Sentinels, the current primary)."""
    return f"{sentinel_dir(where)}/sentinel.conf"


def redis_service(runtime: Runtime, inventory: Inventory, where: Layout) -> Service:
    return Service("redis", [runtime.redis_server, redis_conf_path(inventory, where)], "", where.remote_dir,
                   user=runtime.user("redis"))


def sentinel_service(runtime: Runtime, where: Layout) -> Service:
    """A Sentinel: the same redis-server binary in sentinel mode."""
    return Service("sentinel", [runtime.redis_server, sentinel_conf_path(where), "--sentinel"], "",
                   where.remote_dir, user=runtime.user("redis"))


def standby_services(runtime: Runtime, inventory: Inventory, where: Layout) -> list[Service]:
    """What the standby worker host runs besides its workers: a Redis replica and a Sentinel."""
    return [redis_service(runtime, inventory, where), sentinel_service(runtime, where)]


PRIMARY_PLACEHOLDER = "0.0.0.0"
"""The primary's address in the deploy's own copy of sentinel.conf (etc/sentinel.conf.rendered): any address,
the same every time; the live file has the real one."""


def ask_sentinels(c: Connection, inventory: Inventory, where: Layout, *command: str,
                  among: list[Host] | None = None) -> list[str] | None:
    """A Sentinel command's answer from the first Sentinel that answers (ask_one), of among (default: every
    Sentinel host); None if none answers (none runs yet)."""
    for host in inventory.sentinel_hosts if among is None else among:
        lines = ask_one(c, inventory, where, host, *command)
        if lines is not None:
            return lines
    return None


def current_primary(inventory: Inventory, runtime: Runtime) -> Host | None:
    """The data node the Sentinels call the primary, asked from the first orchestrator that answers; None when no
    Sentinel answers (the first deploy: the first orchestrator starts as the primary, starting_primary). The
    orchestrator in the single layout."""
    if not inventory.ha:
        return inventory.orchestrator
    for host in inventory.orchestrators:
        try:
            with connect(inventory, host) as c:
                answer = ask_sentinels(c, inventory, runtime.layout(inventory, host),
                                       "SENTINEL", "get-master-addr-by-name", master_name(inventory))
        except (DeployError, OSError):
            continue  # that orchestrator is away: ask from the other
        if answer:
            found = [h for h in inventory.data_hosts if h.private_ip == answer[0]]
            if not found:
                raise DeployError(f"the Sentinels say Redis's primary is {answer[0]}, which is none of the "
                                  f"cluster's data hosts ({', '.join(h.name for h in inventory.data_hosts)})")
            return found[0]
        break
    return None


def starting_primary(inventory: Inventory, named: Host | None) -> Host:
    """The node to follow: the one the Sentinels named, else (none answers) the first orchestrator."""
    return named or inventory.orchestrator


def write_redis_tls(c: Connection, runtime: Runtime, inventory: Inventory, host: Host, where: Layout,
                    secrets_dir: str) -> bool:
    """The cluster's CA (made here once, kept in secrets/<cluster>/) and this host's Redis certificate from it,
    naming its private address and loopback (the Sentinel there shows the same one); True if any changed."""
    ca = tls.load_or_create_ca(secrets_dir, inventory.cluster)
    # One Redis in the single layout keeps the certificate named "redis"; with --ha each data host has its own.
    name = f"redis-{host.name}" if inventory.ha else "redis"
    made = tls.load_or_issue(secrets_dir, inventory.cluster, name, sorted({host.private_ip, "127.0.0.1"}))
    where_tls = tls_dir(where)
    changed = put_if_changed(c, ca.cert_pem, f"{where_tls}/{config_files.REDIS_CA}", "644")
    changed |= put_if_changed(c, made.cert_pem, f"{where_tls}/{config_files.REDIS_CERT}", "644")
    changed |= put_if_changed(c, made.key_pem, f"{where_tls}/{config_files.REDIS_KEY}", "600", runtime.user("redis"))
    return changed


def write_live(c: Connection, rendered: str, rendered_path: str, live: str, live_text: str, user: str,
               force: bool = False) -> bool:
    """Write a configuration Redis or Sentinel rewrites. rendered (the settings, nothing a failover changes) goes
    to rendered_path, the deploy's own copy (mode 600: it holds passwords); when that changed, the live file is
    missing, or force, live_text goes to live (owned by user). True if the live file was written (the service
    must restart)."""
    changed = put_if_changed(c, rendered, rendered_path, "600")
    if not changed and not force and root(c, f"test -f {live}", warn=True).ok:
        return False
    root(c, f"install -d -m 700 -o {user} $(dirname {live})")
    put_if_changed(c, live_text, live, "600", user)
    return True


def write_data_node(c: Connection, runtime: Runtime, inventory: Inventory, host: Host, named: Host | None,
                    secrets: Secrets, where: Layout, memory_limit: int) -> bool:
    """An --ha data node's redis.conf: the single layout's (TLS only, the role users, AOF, the memory limit), the
    replication login, and, written anew, ``replicaof`` the current primary unless it is the primary (named by
    the Sentinels; None when none answers). True if Redis must restart.

    Written anew too when the Sentinels name a primary this node does not follow: a host back after a failover
    (its file, as it left it, says it is the primary) starts as a replica of the new primary, not as a second
    primary with what it held when it was lost until the Sentinels turn it round. A node the Sentinels turned
    into a replica has the line already: they make it rewrite its file. When no Sentinel answers, each node
    keeps the role its file has: the deploy cannot know better."""
    primary = starting_primary(inventory, named)
    base = config_files.redis_conf(inventory, host, secrets, redis_data_dir(where), memory_limit, tls_dir(where))
    rendered = base + "\n".join([*config_files.replication_login_lines(secrets),
                                 *config_files.data_node_lines(), ""])
    live = redis_conf_path(inventory, where)
    role = "" if host == primary else f"replicaof {primary.private_ip} {inventory.redis_port}"
    astray = named is not None and bool(role) and not root(c, f"grep -qxF {shlex.quote(role)} {live}", warn=True).ok
    return write_live(c, rendered, f"{where.remote_dir}/etc/redis.conf.rendered", live,
                      rendered + (f"{role}\n" if role else ""), runtime.user("redis"), force=astray)


def write_sentinel(c: Connection, runtime: Runtime, inventory: Inventory, primary: Host, secrets: Secrets,
                   where: Layout) -> bool:
    """A host's sentinel.conf: TLS only, watching the current primary as the sentinel user, with the inventory's
    Failover timings. True if the Sentinel must restart.

    Which node is the primary is not a setting: the deploy's copy names none, so a failover alone does not make
    the next deploy restart every Sentinel (and lose what they know: their ids, the epoch, the replicas). A
    Sentinel that was away learns the current primary from the others when it starts."""
    from inferq.settings import Failover, load

    timings = load(Failover, inventory.env)

    def render(primary_ip: str) -> str:
        return config_files.sentinel_conf(secrets, primary_ip, inventory.redis_port, inventory.sentinel_port,
                                          tls_dir(where), master_name(inventory), timings.quorum, timings.down_after,
                                          timings.failover_timeout)

    # `dir` is the live file's: Sentinel writes nothing else, but it must be a directory it owns.
    return write_live(c, render(PRIMARY_PLACEHOLDER), f"{where.remote_dir}/etc/sentinel.conf.rendered",
                      sentinel_conf_path(where), render(primary.private_ip) + f'dir "{sentinel_dir(where)}"\n',
                      runtime.user("redis"))


def configure(c: Connection, runtime: Runtime, inventory: Inventory, host: Host, named: Host | None,
              secrets: Secrets, secrets_dir: str, where: Layout) -> tuple[bool, bool, int]:
    """Redis's files on a data host: its directory, its TLS, its redis.conf (the single layout's, written by the
    deploy alone; with --ha a data node following the primary the Sentinels named, None when none answers) and
    with --ha its Sentinel's. Returns whether Redis and the Sentinel must restart, and Redis's memory limit in
    bytes."""
    root(c, f"install -d -m 700 -o {runtime.user('redis')} {redis_data_dir(where)}")
    limit = config_files.maxmemory(memory_of(c), inventory.redis_memory_fraction)
    tls_changed = write_redis_tls(c, runtime, inventory, host, where, secrets_dir)
    if not inventory.ha:
        conf = config_files.redis_conf(inventory, host, secrets, redis_data_dir(where), limit, tls_dir(where))
        changed = put_if_changed(c, conf, redis_conf_path(inventory, where), "600", runtime.user("redis"))
        return changed or tls_changed, False, limit
    redis_changed = write_data_node(c, runtime, inventory, host, named, secrets, where, limit)
    sentinel_changed = write_sentinel(c, runtime, inventory, starting_primary(inventory, named), secrets, where)
    return redis_changed or tls_changed, sentinel_changed or tls_changed, limit


def deploy_standby(runtime: Runtime, inventory: Inventory, primary: Host | None, secrets: Secrets,
                   secrets_dir: str, report: Report) -> int:
    """The standby worker host's Redis replica and Sentinel (--ha), following primary (current_primary). Return
    the changes made."""
    host = inventory.standby
    assert host is not None
    where = runtime.layout(inventory, host)
    with connect(inventory, host) as c:
        changes = runtime.prepare_data_node(c, inventory, host)
        redis_changed, sentinel_changed, _ = configure(c, runtime, inventory, host, primary, secrets, secrets_dir,
                                                       where)
        services = runtime.service_manager(where)
        for service, changed in zip(standby_services(runtime, inventory, where), (redis_changed, sentinel_changed)):
            outcome = services.ensure(c, service, changed)
            changes += (outcome != "unchanged") + changed
            report(f"{host.name}: {service.name} {outcome}")
    return changes


def sentinels_agree(c: Connection, inventory: Inventory, where: Layout) -> str | None:
    """None once every Sentinel knows the primary, both replicas and the other two Sentinels, and they can
    authorize a failover; else what is still missing."""
    name = master_name(inventory)
    wanted = len(inventory.data_hosts) - 1
    for host in inventory.sentinel_hosts:
        answer = ask_one(c, inventory, where, host, "SENTINEL", "MASTER", name)
        if answer is None:
            return f"the Sentinel on {host.name} does not answer"
        state = dict(zip(answer[::2], answer[1::2]))
        if int(state.get("num-slaves", 0)) < wanted:
            return f"the Sentinel on {host.name} knows {state.get('num-slaves', 0)} of {wanted} replicas"
        if int(state.get("num-other-sentinels", 0)) < len(inventory.sentinel_hosts) - 1:
            return f"the Sentinel on {host.name} knows {state.get('num-other-sentinels', 0)} other Sentinels"
    quorum = ask_sentinels(c, inventory, where, "SENTINEL", "CKQUORUM", name)
    if not quorum or not quorum[0].startswith("OK"):
        return f"no quorum: {' '.join(quorum or ['no answer'])}"
    return None


def ask_one(c: Connection, inventory: Inventory, where: Layout, host: Host, *command: str) -> list[str] | None:
    """One Sentinel's answer to a command (redis-cli --raw, one line per element), asked from the host c is on
    with the cluster's CA there; None if it does not answer, answers an error, or the CA is not there yet."""
    ca = f"{tls_dir(where)}/{config_files.REDIS_CA}"
    asked = root(c, f"test -f {ca} && timeout 5 redis-cli --tls --cacert {ca} -h {host.private_ip} "
                    f"-p {inventory.sentinel_port} --raw {shlex.join(command)}", warn=True)
    lines = asked.stdout.strip().splitlines()
    return lines if asked.ok and lines and not lines[0].startswith(("ERR", "IDONTKNOW")) else None


def wait_for_sentinels(inventory: Inventory, runtime: Runtime, report: Report,
                       timeout: float = SENTINEL_WAIT_SECONDS) -> None:
    """Wait until the Sentinels could replace a lost primary (sentinels_agree), asked from the first
    orchestrator; DeployError after timeout."""
    host = inventory.orchestrator
    where = runtime.layout(inventory, host)
    deadline = time.monotonic() + timeout
    with connect(inventory, host) as c:
        while True:
            missing = sentinels_agree(c, inventory, where)
            if missing is None:
                report(f"redis: {len(inventory.sentinel_hosts)} Sentinels watch the primary and "
                       f"{len(inventory.data_hosts) - 1} replicas")
                return
            if time.monotonic() > deadline:
                raise DeployError(f"the Sentinels are not ready after {timeout:.0f}s: {missing}; see "
                                  "`fab -r deploy logs`")
            time.sleep(2)


def replication_status(inventory: Inventory, runtime: Runtime, c: Connection, host: Host) -> dict:
    """What the Sentinels say, asked from host (an orchestrator that answers): the primary, each replica's
    link, and how many Sentinels answer."""
    where = runtime.layout(inventory, host)
    name = master_name(inventory)
    # Those that answer a PING first: a Sentinel on a host that is gone then costs one timeout, not three.
    answered = [h for h in inventory.sentinel_hosts if ask_one(c, inventory, where, h, "PING") == ["PONG"]]
    primary = ask_sentinels(c, inventory, where, "SENTINEL", "get-master-addr-by-name", name, among=answered)
    names = {h.private_ip: h.name for h in inventory.data_hosts}
    replicas = {}
    lines = ask_sentinels(c, inventory, where, "SENTINEL", "REPLICAS", name, among=answered) or []
    # --raw prints each replica's field/value pairs one per line, replicas one after the other: split on "name".
    fields: list[list[str]] = []
    for line in lines:
        if line == "name" and (not fields or len(fields[-1]) % 2 == 0):
            fields.append([])
        if fields:
            fields[-1].append(line)
    for replica in fields:
        state = dict(zip(replica[::2], replica[1::2]))
        ip = state.get("ip", "")
        replicas[names.get(ip, ip)] = "up" if state.get("master-link-status") == "ok" and "down" not in \
            state.get("flags", "") else f"down ({state.get('flags', '?')})"
    return {"primary": names.get(primary[0], primary[0]) if primary else None, "replicas": replicas,
            "sentinels": [h.name for h in answered]}


def status_line(found: dict, inventory: Inventory) -> str:
    """replication_status as one line."""
    replicas = ", ".join(f"{name} {link}" for name, link in sorted(found["replicas"].items())) or "none"
    return (f"redis: primary {found['primary'] or 'unknown (no Sentinel answers)'}; replicas: {replicas}; "
            f"Sentinels answering: {len(found['sentinels'])} of {len(inventory.sentinel_hosts)}")
