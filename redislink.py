"""Every Redis client inferq makes, made here: from the URL, or through Sentinel when Sentinels are set.

Without ``INFERQ_REDIS_SENTINELS`` a client is ``redis.Redis.from_url(url)``, as it always was. With them,
it is Sentinel's ``master_for``: each new connection asks the Sentinels where the primary is, and a
connection to a primary that was demoted (READONLY) or died fails with ConnectionError, which every
caller already treats as "Redis is away" (the API answers 503, a worker retries); the next connection
goes to the new primary. The URL still gives the user, the password and the database.

Celery's broker and result backend are not made here but by kombu and Celery from URLs: ``celery_url``
writes the URL they understand (``sentinel://...;sentinel://...``) and ``master_transport_options`` the
option naming the primary.

TLS: with a ``rediss://`` URL the Sentinels speak TLS too (a deployed cluster's Sentinels listen on a TLS port
only), checked against the same CA as the primary: ``sentinel_tls`` reads it from the URL's query, where
RedisLink.with_tls wrote the certificate check and INFERQ_REDIS_CA_FILE.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.retry import Retry
from redis.sentinel import Sentinel

from inferq.settings import RedisLink


def client(link: RedisLink, url: str, **options: Any) -> redis.Redis:
    """A client of the Redis at url, or of the primary the link's Sentinels name; options as redis.Redis's."""
    if not link.sentinels:
        return redis.Redis.from_url(url, **options)
    # Everything url says but where Redis is: user, password, database, and its query (the TLS check, the CA).
    # redis-py's parse_url names TLS as a connection class; Sentinel's pool wants ssl=True to pick its own.
    params = {key: value for key, value in parse_url(url).items() if key not in ("host", "port", "connection_class")}
    sentinel = Sentinel(link.sentinel_addresses, sentinel_kwargs=sentinel_kwargs(link, url))
    return sentinel.master_for(link.master_name, **{**params, **sentinel_tls(url), **options})


SENTINEL_TIMEOUT_SHARE = 1 / 3
"""A Sentinel's share of INFERQ_REDIS_TIMEOUT: a Sentinel answers from memory, within a LAN round trip, and up to
three are asked in turn for each new connection to the primary (0.5 s each by default)."""


def sentinel_kwargs(link: RedisLink, url: str) -> dict[str, Any]:
    """How every client asks a Sentinel where the primary is (redis-py's ``sentinel_kwargs``): url's TLS, and one
    try within a third of the link's timeout.

    The Sentinels are asked in turn, for every new connection to the primary until one answers: one that is
    gone (its host lost with the primary, say) must cost one timeout, not redis-py's default of four tries with
    backoff between them, which held a worker's event loop for minutes in the lab's failover test."""
    asking = link.timeout * SENTINEL_TIMEOUT_SHARE
    return {"socket_timeout": asking, "socket_connect_timeout": asking, "retry": Retry(NoBackoff(), 0),
            **sentinel_tls(url)}


def sentinel_tls(url: str) -> dict[str, Any]:
    """redis.Redis's TLS options for the Sentinels (and, through Sentinel, the primary) of url: ssl=True and
    url's ssl_* query options (ssl_cert_reqs, ssl_ca_certs: RedisLink.with_tls) for rediss://; {} otherwise.

    Without them redis-py's Sentinel speaks plain TCP to the Sentinels (sentinel_kwargs carry no TLS of their own),
    and ssl=True alone trusts only the system's CAs, which never signed the cluster's certificates."""
    params = parse_url(url)
    if not issubclass(params.get("connection_class", object), redis.SSLConnection):
        return {}
    return {"ssl": True, **{key: value for key, value in params.items() if key.startswith("ssl_")}}


def celery_url(link: RedisLink, url: str) -> str:
    """url as Celery's broker or backend URL: unchanged without Sentinels, else one ``sentinel://`` URL per
    Sentinel (with url's credentials and database), joined by ';' as kombu and Celery read them."""
    if not link.sentinels:
        return url
    parts = urlsplit(url)
    userinfo = ""
    if parts.username or parts.password:
        userinfo = f"{quote(unquote(parts.username or ''), safe='')}:{quote(unquote(parts.password or ''), safe='')}@"
    db = parts.path.lstrip("/") or "0"
    hosts = (f"[{host}]" if ":" in host else host for host, _ in link.sentinel_addresses)
    return ";".join(f"sentinel://{userinfo}{host}:{port}/{db}"
                    for host, (_, port) in zip(hosts, link.sentinel_addresses))


def worker_broker_url(link: RedisLink) -> str:
    """A worker's broker URL: celery_url's, but with Sentinels only the first one's.

    Given several URLs, kombu's Connection switches to the next after a failed connect and then takes the
    transport from that URL's scheme, replacing the workers' transport with kombu's own; with one URL it never
    switches. inferq's Sentinel channel reads every Sentinel from the transport option ``sentinels`` instead
    (broker/transport.py)."""
    return celery_url(link, link.broker).split(";")[0]


def master_transport_options(link: RedisLink, url: str) -> dict[str, Any]:
    """What kombu's and Celery's Sentinel transports need besides url (the broker's or the backend's): the
    primary's name (and, for the workers' transport, every Sentinel; kombu's own channel ignores that option and
    reads the URLs), and how to reach the Sentinels: kombu, Celery's backend and Flower's broker view all give
    ``sentinel_kwargs`` to redis-py's Sentinel as they are, so the Sentinels' TLS is here (the primary's is
    broker_use_ssl / redis_backend_use_ssl)."""
    if not link.sentinels:
        return {}
    return {"master_name": link.master_name, "sentinels": [list(address) for address in link.sentinel_addresses],
            "sentinel_kwargs": sentinel_kwargs(link, url)}
