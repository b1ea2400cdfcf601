"""What the deploy writes on hosts, rendered without SSH; and fab's one-line errors."""
from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import pytest

from inferq.deploy import config_files, credentials, nodes
from inferq.deploy.inventory import Host, Inventory
from tests.ci import in_ci
from tests.deploy.conftest import ROOT, run_command


def lab_inventory() -> Inventory:
    return Inventory(cluster="c", key_file="k", hosts=[
        Host("orchestrator", "orchestrator", "198.51.100.1", "172.31.0.10"),
        Host("worker-2", "worker", "198.51.100.3", "172.31.0.12"),
        Host("worker-1", "worker", "198.51.100.2", "172.31.0.11"),
    ])


def test_secrets_are_generated_once_and_never_shown(tmp_path):
    made = credentials.load_or_create(tmp_path, "c")
    assert credentials.load_or_create(tmp_path, "c") == made
    assert made.redis_password not in repr(made) and made.api_key not in str(made)
    assert (tmp_path / "c" / "cluster-secrets.json").stat().st_mode & 0o777 == 0o600


def test_no_secret_starts_with_a_dash(tmp_path, monkeypatch):
    # One token_urlsafe in 64 starts with "-": as an API key, `inferq --api-key <it>` read it as an option
    # (the lab's TLS test failed so once). Here every other draw starts with one.
    draws = itertools.count()
    monkeypatch.setattr(credentials.secrets, "token_urlsafe",
                        lambda nbytes: "-dash" if next(draws) % 2 == 0 else f"s{nbytes}")
    made = credentials.load_or_create(tmp_path, "c")
    values = [v for k, v in vars(made).items() if k != "flower_user"]
    assert len(values) == 9 and all(v.startswith("s") for v in values), values


def test_workers_reach_redis_on_the_orchestrators_private_address_over_tls(tmp_path):
    from inferq import redis_acl

    made = credentials.load_or_create(tmp_path, "c")
    env = config_files.worker_env(lab_inventory(), made)
    assert f"REDIS_URL=rediss://inferq-worker:{made.worker_redis_password}@172.31.0.10:6379/0\n" in env
    assert "INFERQ_REDIS_CA_FILE=/run/secrets/redis_ca\n" in env
    assert "INFERQ_TORCH_THREADS=1\n" in env
    conf = config_files.redis_conf(lab_inventory(), lab_inventory().orchestrator, made, "/data", 2**30, "/o/etc/tls")
    lines = conf.splitlines()
    # Redis 7.0 binds its plain and TLS ports alike: no plain port, TLS on the private address and loopback.
    assert "bind 172.31.0.10 127.0.0.1" in lines and "port 0" in lines and "tls-port 6379" in lines
    assert "tls-ca-cert-file /o/etc/tls/redis-ca.crt" in lines and "tls-replication yes" in lines
    assert "maxmemory-policy noeviction" in lines and "maxmemory 1073741824" in lines
    # One user per role, from redis_acl (the rules the tests prove on a real Redis), passwords only hashed.
    for role, password in made.redis_passwords().items():
        assert redis_acl.roles()[role].line(password) in lines and password not in conf
    assert f"requirepass {made.redis_password}" in lines  # the admin's (the default user), for the operator
    assert "appendfsync always" in lines  # the default of INFERQ_REDIS_APPENDFSYNC
    everysec = config_files.redis_conf(lab_inventory(), lab_inventory().orchestrator, made, "/data", 2**30, "/t",
                                       "everysec")
    assert "appendfsync everysec\n" in everysec
    # The ACL follows the inventory's queue (INFERQ_QUEUE): its two lanes are the keys the roles may touch.
    inventory = lab_inventory()
    inventory.env = {"INFERQ_QUEUE": "jobs"}
    renamed = config_files.redis_conf(inventory, inventory.orchestrator, made, "/data", 2**30, "/t")
    assert " ~jobs ~jobs.bulk " in renamed and " ~inferq " not in renamed


def test_each_orchestrator_service_logs_in_as_its_own_user(tmp_path):
    made = credentials.load_or_create(tmp_path, "c")
    api = config_files.orchestrator_env(lab_inventory(), made, "/o/etc/tls")
    flower = config_files.flower_env(lab_inventory(), made, "/o/etc/tls")
    assert f"REDIS_URL=rediss://inferq-api:{made.api_redis_password}@172.31.0.10:6379/0\n" in api
    assert f"REDIS_URL=rediss://inferq-flower:{made.flower_redis_password}@172.31.0.10:6379/0\n" in flower
    for env in (api, flower):
        assert "INFERQ_REDIS_CA_FILE=/o/etc/tls/redis-ca.crt\n" in env and made.redis_password not in env
    assert "FLOWER_BASIC_AUTH" not in api and "INFERQ_API_KEYS" not in flower


def test_redis_gets_a_share_of_the_hosts_memory_and_the_api_only_loopback(tmp_path):
    # A t3.small (2 GiB): 0.4 of it for Redis, the rest for the API, Flower, nginx and the AOF rewrite's fork.
    assert config_files.maxmemory(2 * 2**30, 0.4) == 858993459
    env = config_files.orchestrator_env(lab_inventory(), credentials.load_or_create(tmp_path, "c"), "/t")
    assert "INFERQ_API_BIND=127.0.0.1:5000\n" in env  # the world reaches it through the TLS proxy only


def test_the_proxy_configuration_is_one_nginx_accepts(tmp_path):
    import shutil
    import subprocess

    from inferq.deploy import proxy, tls

    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        if in_ci():
            pytest.fail("nginx missing (scripts/system-deps.sh installs it)")
        pytest.skip("nginx missing (Debian package nginx)")
    made = tls.generate("c", ["198.51.100.1", "172.31.0.10"])
    (tmp_path / "api.crt").write_bytes(made.cert_pem)
    (tmp_path / "api.key").write_bytes(made.key_pem)
    conf = proxy.nginx_conf(lab_inventory(), str(tmp_path), str(tmp_path / "api.crt"), str(tmp_path / "api.key"),
                            "root", 1024 * 1024, 30)
    (tmp_path / "nginx.conf").write_text(conf)
    checked = subprocess.run([nginx, "-t", "-q", "-c", str(tmp_path / "nginx.conf")], capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode == 0, checked.stderr
    assert "listen 443 ssl;" in conf and "server 127.0.0.1:5000;" in conf
    assert "proxy_read_timeout 60s;" in conf  # the longest ?wait= (30 s) and some
    assert f"client_max_body_size {1024 * 1024 + proxy.BODY_SLACK};" in conf


def test_secrets_from_before_the_worker_user_gain_one_and_keep_the_rest(tmp_path):
    made = credentials.load_or_create(tmp_path, "c")
    path = tmp_path / "c" / "cluster-secrets.json"
    newer = credentials.ADDED_LATER
    old = {k: v for k, v in json.loads(path.read_text()).items() if k not in newer}
    path.write_text(json.dumps(old))
    again = credentials.load_or_create(tmp_path, "c")
    assert again.redis_password == made.redis_password and again.worker_redis_password and again.webhook_secret
    assert all(again.redis_passwords().values())
    assert credentials.load_or_create(tmp_path, "c") == again
    assert path.stat().st_mode & 0o777 == 0o600
    assert nodes.worker_nodes(lab_inventory()) == [
        "worker@worker-1-w1", "worker@worker-1-w2", "worker@worker-2-w1", "worker@worker-2-w2"]


def test_env_files_refuse_values_their_readers_would_parse_differently():
    with pytest.raises(ValueError, match="INFERQ_MODEL"):
        config_files.env_file({"INFERQ_MODEL": "my model"})
    with pytest.raises(ValueError):
        config_files.env_file({"X": "a$b"})


def test_fab_without_an_inventory_says_what_to_run(tmp_path):
    result = run_command(f"fab -r deploy status --inventory {tmp_path}/none.json", {}, ROOT, check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == f"fab: no inventory at {tmp_path}/none.json: run `inferq-provision up` first"


def test_orchestrator_units_pass_systemd_analyze_verify(tmp_path):
    import shutil
    import subprocess
    import sys

    from inferq.deploy.layout import Layout
    from inferq.deploy.orchestrator import orchestrator_services
    from inferq.deploy.runtime import Runtime

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if in_ci():
            pytest.fail("systemd-analyze missing (scripts/system-deps.sh installs systemd)")
        pytest.skip("systemd-analyze missing (Debian package systemd)")
    inventory = lab_inventory()  # the AWS runtime's units: Redis as user redis, the API and Flower as inferq
    # Paths that exist here (this venv and checkout) stand in for /opt/inferq/venv and /opt/inferq/current.
    where = Layout(str(tmp_path), sys.prefix, str(ROOT))
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "orchestrator.env").write_text("")
    (tmp_path / "etc" / "flower.env").write_text("")
    units = []
    for service in orchestrator_services(Runtime(), inventory, inventory.orchestrator, where):
        units.append(tmp_path / f"inferq-{service.name}.service")
        units[-1].write_text(service.unit())
    result = subprocess.run([analyze, "verify", *map(str, units)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "ExecStart=/usr/bin/redis-server " in units[0].read_text()
    broken = tmp_path / "broken.service"
    broken.write_text(units[1].read_text().replace(f"{sys.prefix}/bin/gunicorn", "/nonexistent/gunicorn"))
    assert subprocess.run([analyze, "verify", str(broken)], capture_output=True, timeout=60).returncode != 0


def clone(tmp_path: Path) -> Path:
    """A clone of this checkout's HEAD (a repository the test may dirty)."""
    import subprocess

    target = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(target)], check=True, timeout=120)
    return target


def test_a_release_is_heads_tracked_files_named_by_their_hash(tmp_path):
    import io
    import tarfile

    from inferq.deploy import release

    repo = clone(tmp_path)
    made = release.package(repo)
    time.sleep(1.1)  # gzip's header holds a timestamp: a second later must change nothing
    # Untracked files never ship, whatever git ignores: a log, a .env, a file growing during the deploy.
    (repo / "stray.log").write_text("x" * 1000)
    (repo / "deploy" / "notes.txt").write_text("scratch")
    (repo / ".env").write_text("INFERQ_WEBHOOK_SECRET=oops\n")
    assert release.package(repo) == made  # same files, same bytes, same version
    names = tarfile.open(fileobj=io.BytesIO(made.data)).getnames()
    for needed in ("worker_image/Dockerfile", "docker-compose.yml", "constraints.txt", "setup.cfg", "deploy/remote.py"):
        assert needed in names
    assert not [n for n in names if n.startswith((".venv/", ".git/", "secrets/", "state/")) or n in (
        "stray.log", "deploy/notes.txt", ".env")]
    assert made.commit == subprocess_out(repo, "git", "rev-parse", "HEAD") and not made.dirty
    assert made.file("docker-compose.yml") == (repo / "docker-compose.yml").read_bytes()


def test_a_dirty_tree_is_refused_in_one_line_unless_allowed_and_then_marked(tmp_path):
    from inferq.deploy import release
    from inferq.deploy.errors import DeployError

    repo = clone(tmp_path)
    clean = release.package(repo)
    (repo / "README.md").write_text((repo / "README.md").read_text() + "\nan edit\n")
    (repo / "untracked.txt").write_text("never shipped")
    with pytest.raises(DeployError) as refused:
        release.package(repo)
    assert str(refused.value) == ("uncommitted changes to tracked files: README.md; a release is a commit: commit "
                                  "them, or pass --allow-dirty to ship the tracked files as they are, marked dirty")
    dirty = release.package(repo, allow_dirty=True)
    assert dirty.version.endswith("-dirty") and dirty.dirty == ("README.md",) and dirty.commit == clean.commit
    assert dirty.file("README.md").endswith(b"an edit\n")
    assert "untracked.txt" not in __import__("tarfile").open(fileobj=__import__("io").BytesIO(dirty.data)).getnames()
    assert dirty.describe() == f"release {dirty.version} (commit {clean.commit[:12]}, dirty: README.md)"
    assert subprocess_out(repo, "git", "stash", "list") == ""  # the stash commit made no ref, changed nothing
    assert (repo / "README.md").read_text().endswith("an edit\n")


def subprocess_out(repo: Path, *command: str) -> str:
    import subprocess

    return subprocess.run(command, cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


def test_the_webhook_secret_is_a_cluster_secret_and_the_inventory_may_not_hold_one(tmp_path):
    from inferq.deploy.errors import DeployError

    made = credentials.load_or_create(tmp_path, "c")
    assert len(made.webhook_secret) >= 32 and made.webhook_secret not in repr(made)
    for env in (config_files.orchestrator_env(lab_inventory(), made, "/t"),
                config_files.worker_env(lab_inventory(), made)):
        assert f"INFERQ_WEBHOOK_SECRET={made.webhook_secret}\n" in env
    inventory = lab_inventory()
    inventory.env = {"INFERQ_WEBHOOK_SECRET": "in-the-inventory"}
    with pytest.raises(DeployError, match=r"^the inventory's env sets INFERQ_WEBHOOK_SECRET: secrets come from"):
        config_files.worker_env(inventory, made)


def test_the_runtime_is_chosen_once_from_the_inventory():
    from inferq.deploy.containers import Containers
    from inferq.deploy.errors import DeployError
    from inferq.deploy.runtime import Runtime, load
    from tests.deploy.lab_runtime import LabRuntime

    aws = load(lab_inventory())
    assert type(aws) is Runtime and aws.docker == "docker" and aws.compose == "docker compose"
    inventory = lab_inventory()
    inventory.runtime = "tests.deploy.lab_runtime:LabRuntime"
    inventory.runtime_options = {"docker": "/usr/bin/docker", "keep_images": 2}
    lab = load(inventory)
    assert isinstance(lab, LabRuntime) and lab.docker == "/usr/bin/docker" and lab.keep_images == 2
    assert all(isinstance(lab.workers(inventory, host), Containers) for host in inventory.workers)
    inventory.runtime = "nowhere:Runtime"
    with pytest.raises(DeployError, match=r"^unknown runtime 'nowhere:Runtime'"):
        load(inventory)
    inventory.runtime, inventory.runtime_options = "docker", {"colour": "blue"}
    with pytest.raises(DeployError, match="does not take these runtime_options"):
        load(inventory)


def test_an_image_tag_names_the_release_and_its_build_arguments():
    from inferq.deploy.image import same, tag_for

    tag = tag_for("abc", {"MODEL": "offline:base"})
    assert tag == tag_for("abc", {"MODEL": "offline:base"}) and tag.startswith("inferq-worker:")
    assert tag != tag_for("abd", {"MODEL": "offline:base"}) != tag_for("abc", {"MODEL": "offline:tiny"})
    assert same("localhost/" + tag, tag) and not same(tag, tag_for("abd", {}))


def test_the_cluster_ca_signs_redis_certificates_kept_until_the_addresses_or_the_ca_change(tmp_path):
    from inferq.deploy import tls

    ca = tls.load_or_create_ca(tmp_path, "c")
    assert tls.load_or_create_ca(tmp_path, "c") == ca
    key = tls.ca_paths(tmp_path, "c")[1]
    assert key.stat().st_mode & 0o777 == 0o600
    made = tls.load_or_issue(tmp_path, "c", "redis", ["172.31.0.10", "127.0.0.1"])
    assert tls.signed_by(made.cert_pem, ca.cert_pem) and tls.addresses_of(made.cert_pem) == {"172.31.0.10",
                                                                                                "127.0.0.1"}
    assert tls.load_or_issue(tmp_path, "c", "redis", ["127.0.0.1", "172.31.0.10"]) == made  # kept
    moved = tls.load_or_issue(tmp_path, "c", "redis", ["172.31.0.99", "127.0.0.1"])  # a replaced host
    assert moved != made and tls.signed_by(moved.cert_pem, ca.cert_pem)
    assert not tls.signed_by(moved.cert_pem, tls.generate_ca("other").cert_pem)
    assert tls.server_paths(tmp_path, "c", "redis")[1].stat().st_mode & 0o777 == 0o600
    api = tls.load_or_create(tmp_path, "c", ["198.51.100.1"])
    tls.forget_ca(tmp_path, "c")  # `down`: the CA and what it signed go; the API's pinned certificate is tls.forget's
    assert not any(p.exists() for p in (*tls.ca_paths(tmp_path, "c"), *tls.server_paths(tmp_path, "c", "redis")))
    assert tls.load(tmp_path, "c") == api


def test_an_orchestrator_shows_its_own_api_certificate_if_one_is_kept_else_the_clusters(tmp_path):
    from inferq.deploy import tls

    cluster = tls.load_or_create(tmp_path, "c", ["198.51.100.1"])
    assert tls.load_for(tmp_path, "c", "orchestrator") == tls.load_for(tmp_path, "c", "orchestrator-2") == cluster
    own = tls.generate("c", ["198.51.100.2"])
    cert, key = tls.host_paths(tmp_path, "c", "orchestrator-2")
    cert.write_bytes(own.cert_pem)
    key.write_bytes(own.key_pem)
    assert tls.load_for(tmp_path, "c", "orchestrator-2") == own
    assert tls.load_for(tmp_path, "c", "orchestrator") == cluster
    tls.forget_ca(tmp_path, "c")  # the API's certificates are not the CA's to remove ...
    assert tls.load_for(tmp_path, "c", "orchestrator-2") == own
    tls.forget(tmp_path, "c")  # ... but tls.forget's, each host's too
    assert not cert.exists() and not key.exists() and tls.load(tmp_path, "c") is None


def ha_inventory(**env) -> Inventory:
    """The --ha layout: two orchestrators and two worker hosts (worker-1 is the standby)."""
    return Inventory(cluster="c", key_file="k", env=env, hosts=[
        Host("orchestrator-2", "orchestrator", "198.51.100.4", "172.31.0.20"),
        Host("orchestrator", "orchestrator", "198.51.100.1", "172.31.0.10"),
        Host("worker-2", "worker", "198.51.100.3", "172.31.0.12"),
        Host("worker-1", "worker", "198.51.100.2", "172.31.0.11"),
    ])


def test_ha_processes_find_the_primary_through_three_sentinels_and_wait_for_one_replica(tmp_path):
    made = credentials.load_or_create(tmp_path, "c")
    single = config_files.orchestrator_env(lab_inventory(), made, "/t")
    assert "INFERQ_REDIS_SENTINELS" not in single and not lab_inventory().ha and lab_inventory().standby is None
    inventory = ha_inventory()
    assert inventory.ha and inventory.orchestrator.name == "orchestrator" and inventory.standby.name == "worker-1"
    assert [h.name for h in inventory.data_hosts] == ["orchestrator", "orchestrator-2", "worker-1"]
    sentinels = "INFERQ_REDIS_SENTINELS=172.31.0.10:26379,172.31.0.20:26379,172.31.0.11:26379\n"
    for env in (config_files.orchestrator_env(inventory, made, "/t"), config_files.flower_env(inventory, made, "/t"),
                config_files.worker_env(inventory, made)):
        assert sentinels in env and "INFERQ_REDIS_MIN_REPLICAS=1\n" in env
    # The operator's env still decides: here, do not wait for a replica.
    assert "INFERQ_REDIS_MIN_REPLICAS=0\n" in config_files.worker_env(ha_inventory(INFERQ_REDIS_MIN_REPLICAS="0"), made)


def test_ha_needs_a_worker_host_for_the_third_sentinel():
    from inferq.deploy.errors import DeployError

    inventory = ha_inventory()
    inventory.hosts = [h for h in inventory.hosts if h.role == "orchestrator"]
    with pytest.raises(DeployError, match="at least one worker host"):
        assert inventory.data_hosts is None  # never reached: the layout is refused


def test_ha_orchestrators_each_run_a_sentinel_and_flower_runs_on_the_first(tmp_path):
    from inferq.deploy.layout import Layout
    from inferq.deploy.orchestrator import orchestrator_services
    from inferq.deploy.runtime import Runtime

    inventory = ha_inventory()
    where = Layout("/opt/inferq", "/opt/inferq/current/venv", "/opt/inferq/current")
    first, second = ([s.name for s in orchestrator_services(Runtime(), inventory, host, where)]
                     for host in inventory.orchestrators)
    assert first == ["redis", "sentinel", "api", "flower", "proxy"] and second == ["redis", "sentinel", "api", "proxy"]
    redis = orchestrator_services(Runtime(), inventory, inventory.orchestrator, where)[0]
    # Sentinel has Redis rewrite its file when its role changes: with --ha it lives in Redis's own directory.
    assert redis.command == ["/usr/bin/redis-server", "/opt/inferq/redis/redis.conf"]
    single = orchestrator_services(Runtime(), lab_inventory(), lab_inventory().orchestrator, where)
    assert [s.name for s in single] == ["redis", "api", "flower", "proxy"]
    assert single[0].command == ["/usr/bin/redis-server", "/opt/inferq/etc/redis.conf"]


def test_a_sentinel_conf_carries_the_failover_timings(tmp_path):
    made = credentials.load_or_create(tmp_path, "c")
    conf = config_files.sentinel_conf(made, "172.31.0.10", 6379, 26379, "/t", "inferq", 2, 2.5, 12).splitlines()
    assert {"sentinel monitor inferq 172.31.0.10 6379 2", "sentinel down-after-milliseconds inferq 2500",
            "sentinel failover-timeout inferq 12000", "port 0", "tls-port 26379"} <= set(conf)
    assert made.sentinel_redis_password in "\n".join(conf)
