"""redislink.py: every Redis client from the link, the URL's Redis or Sentinel's primary; the Sentinel settings."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis
from redis.sentinel import SentinelConnectionPool

from inferq import redislink
from inferq.settings import ConfigError, Failover, RedisLink, load
from inferq.stack.sentinel import ReplicatedRedis

BIN = Path(sys.executable).parent


def test_without_sentinels_a_client_is_the_urls_redis_as_before(redis_server):
    link = load(RedisLink, {"REDIS_URL": redis_server.url})
    client = redislink.client(link, link.backend, socket_timeout=1)
    assert not isinstance(client.connection_pool, SentinelConnectionPool)
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["port"], kwargs["password"]) == (redis_server.port, redis_server.password)
    assert kwargs["socket_timeout"] == 1
    assert client.ping()
    assert redislink.celery_url(link, link.broker) == redis_server.url
    assert redislink.master_transport_options(link, link.broker) == {}
    assert link.replicas_to_wait == 0  # a lone Redis has no replica to wait for, whatever MIN_REPLICAS says


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    timings = load(Failover, {"INFERQ_SENTINEL_DOWN_AFTER_SECONDS": "1.5"})
    started = ReplicatedRedis(tmp_path_factory.mktemp("replicated"), timings).start()
    yield started
    started.stop()


def test_with_sentinels_a_client_reaches_the_primary_they_name_with_the_urls_password_and_db(group):
    link = load(RedisLink, {**group.env(), "REDIS_URL": f"redis://:{group.password}@nowhere.invalid:1/3"})
    client = redislink.client(link, link.backend, socket_timeout=1)
    assert isinstance(client.connection_pool, SentinelConnectionPool)
    client.set("redislink-test", "x")
    node = group.current_primary()
    assert redis.Redis(host=node.bind, port=node.port, password=node.password, db=3).get("redislink-test") == b"x"
    assert client.wait(1, 1000) == 1  # the replica holds it
    assert link.replicas_to_wait == 1


def test_with_sentinels_a_wrong_password_is_refused_by_the_primary(group):
    link = load(RedisLink, {**group.env(), "REDIS_URL": "redis://:wrong@x:1/0"})
    with pytest.raises(redis.AuthenticationError):
        redislink.client(link, link.backend, socket_timeout=1).ping()


def test_celery_gets_one_sentinel_url_per_sentinel_with_the_credentials_and_db():
    link = load(RedisLink, {"REDIS_URL": "redis://user:p%40ss@ignored:6379/2",
                            "INFERQ_REDIS_SENTINELS": "10.0.0.1:26379, [::1]:26380",
                            "INFERQ_REDIS_MASTER_NAME": "main"})
    assert redislink.celery_url(link, link.broker) == (
        "sentinel://user:p%40ss@10.0.0.1:26379/2;sentinel://user:p%40ss@[::1]:26380/2")
    options = redislink.master_transport_options(link, link.broker)
    assert options["master_name"] == "main"
    assert "ssl" not in options["sentinel_kwargs"]  # redis://: plain Sentinels, as before
    assert link.sentinel_addresses == [("10.0.0.1", 26379), ("::1", 26380)]


def test_with_rediss_the_sentinels_speak_tls_checked_against_the_cluster_ca():
    """The Sentinels of a TLS cluster listen on TLS only: every Sentinel client gets the primary's TLS check (the
    Sentinel + TLS run itself: tests/security/test_sentinel_tls.py)."""
    link = load(RedisLink, {"REDIS_URL": "rediss://inferq-api:pw@ignored:6379/0", "INFERQ_REDIS_CA_FILE": "/ca.pem",
                            "INFERQ_REDIS_SENTINELS": "10.0.0.1:26379"})
    tls = {"ssl": True, "ssl_cert_reqs": "required", "ssl_ca_certs": "/ca.pem"}
    assert redislink.sentinel_tls(link.broker) == tls
    asking = redislink.master_transport_options(link, link.backend)["sentinel_kwargs"]
    assert {k: v for k, v in asking.items() if k != "retry"} == {
        "socket_timeout": link.timeout / 3, "socket_connect_timeout": link.timeout / 3, **tls}
    # One try per Sentinel: a Sentinel that is gone costs one timeout, not redis-py's four tries with backoff.
    assert asking["retry"].get_retries() == 0
    client = redislink.client(link, link.broker)
    sentinel = client.connection_pool.sentinel_manager.sentinels[0].connection_pool.connection_kwargs
    primary = client.connection_pool.connection_kwargs
    for kwargs in (sentinel, primary):
        assert (kwargs["ssl_cert_reqs"], kwargs["ssl_ca_certs"]) == ("required", "/ca.pem"), kwargs
    assert sentinel["password"] is None and primary["username"] == "inferq-api"  # the Sentinels take no password
    assert redislink.sentinel_tls("redis://h:1/0") == {}


@pytest.mark.parametrize("env,fragment", [
    ({"INFERQ_REDIS_SENTINELS": "10.0.0.1"}, "INFERQ_REDIS_SENTINELS: '10.0.0.1' is not host:port"),
    ({"INFERQ_REDIS_SENTINELS": "h:26379,h:port"}, "INFERQ_REDIS_SENTINELS: 'h:port' is not host:port"),
    ({"INFERQ_REDIS_SENTINELS": ":26379"}, "is not host:port"),
    ({"INFERQ_REDIS_SENTINELS": "h:70000"}, "is not host:port"),
    ({"INFERQ_REDIS_SENTINELS": "h:1", "INFERQ_REDIS_REPLICA_TIMEOUT": "2"},
     "INFERQ_REDIS_REPLICA_TIMEOUT=2 must be less than INFERQ_REDIS_TIMEOUT=1.5"),
    ({"INFERQ_REDIS_MIN_REPLICAS": "-1"}, "at least 0"),
])
def test_bad_sentinel_settings_are_refused(env, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load(RedisLink, env)


def test_a_quorum_past_the_sentinels_inferq_runs_is_refused():
    with pytest.raises(ConfigError, match="INFERQ_SENTINEL_QUORUM=4 is more than the 3 Sentinels"):
        load(Failover, {"INFERQ_SENTINEL_QUORUM": "4"})


@pytest.mark.parametrize("seconds", ["1", "0.5"])
def test_a_down_after_within_sentinels_ping_period_is_refused(seconds):
    """It would call a primary the Sentinels have just promoted down, and fail over again."""
    with pytest.raises(ConfigError, match=f"INFERQ_SENTINEL_DOWN_AFTER_SECONDS={seconds} is too short.*1.5 or more"):
        load(Failover, {"INFERQ_SENTINEL_DOWN_AFTER_SECONDS": seconds})
    assert load(Failover, {"INFERQ_SENTINEL_DOWN_AFTER_SECONDS": "1.5"}).down_after == 1.5


def test_the_api_refuses_to_start_with_a_bad_sentinel_address_in_one_line():
    done = subprocess.run([str(BIN / "gunicorn"), "-c", "python:inferq.api.gunicorn_conf", "--check-config",
                           "inferq.api:create_app()"],
                          env={"PATH": "/usr/bin:/bin", "INFERQ_REDIS_SENTINELS": "127.0.0.1:26379,sentinel-b"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "inferq: invalid configuration: INFERQ_REDIS_SENTINELS: 'sentinel-b' is not host:port" in done.stderr
    assert "Traceback" not in done.stderr
