"""Completion callbacks' shared rules: which URLs are acceptable, where they may lead, and the signature.

The API checks a job's ``callback_url`` when it is submitted and the workers
check it again before every delivery (DNS can change in between): both
import this module, which needs neither Flask nor the workers' code.

The signature: ``Inferq-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`` keyed with
``INFERQ_WEBHOOK_SECRET``; a receiver recomputes it over the raw body and
compares in constant time (docs/api.md shows one in a few lines).
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import hmac
import ipaddress
import socket
import time
from collections.abc import Iterable
from typing import NamedTuple
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
RESOLVE_SECONDS = 2.0
"""Longest a submit waits for DNS to resolve a callback's host (then it is refused)."""

SIGNATURE_HEADER = "Inferq-Signature"
JOB_ID_HEADER = "Inferq-Job-Id"

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class InvalidCallbackUrl(ValueError):
    """Not an http(s) URL with a host: 400 invalid_callback_url."""


class CallbackNotAllowed(ValueError):
    """The URL leads (or may lead) somewhere callbacks must not go: 400 callback_url_not_allowed."""


class Unresolvable(CallbackNotAllowed):
    """The host did not resolve (now): refused at submit, retried at delivery."""


class Target(NamedTuple):
    """A parsed callback URL."""

    scheme: str
    host: str
    port: int
    path: str  # path and query, at least "/"
    netloc: str  # the Host header


def parse(url: object) -> Target:
    """Check the shape of a callback URL: http or https, a host, no credentials, no fragment."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise InvalidCallbackUrl(f"callback_url must be an http or https URL of at most {MAX_URL_LENGTH} characters")
    if any(ord(c) <= 0x20 or ord(c) >= 0x7f for c in url):
        raise InvalidCallbackUrl("callback_url has spaces, control or non-ASCII characters; percent-encode them")
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError as exc:
        raise InvalidCallbackUrl(f"callback_url is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidCallbackUrl("callback_url must use http or https")
    if not host:
        raise InvalidCallbackUrl("callback_url has no host")
    if parts.username is not None or parts.password is not None:
        raise InvalidCallbackUrl("callback_url must not carry credentials (user:password@)")
    if parts.fragment:
        raise InvalidCallbackUrl("callback_url must not have a #fragment")
    if port == 0:
        raise InvalidCallbackUrl("callback_url has port 0")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, host, port or (443 if parts.scheme == "https" else 80), path, parts.netloc)


def networks(cidrs: Iterable[str]) -> list[IpNetwork]:
    """INFERQ_WEBHOOK_ALLOWED_NETWORKS as networks (inferq.settings has checked they parse)."""
    return [ipaddress.ip_network(c, strict=False) for c in cidrs]


def blocked(ip: IpAddress, allowed: Iterable[IpNetwork]) -> bool:
    """True for an address a callback must not reach: anything not public (loopback, private, link-local,
    the metadata service's 169.254.169.254 and fd00:ec2::254, multicast, reserved ...) unless allowed."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip.version == net.version and ip in net for net in allowed):
        return False
    return not ip.is_global or ip.is_multicast


_resolver = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="inferq-resolve")


def resolve(host: str, port: int, timeout: float = RESOLVE_SECONDS) -> list[IpAddress]:
    """Every address host resolves to (a literal address is itself), within timeout."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    future = _resolver.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        raise Unresolvable(f"callback_url's host {host!r} did not resolve within {timeout:g}s") from None
    except (OSError, UnicodeError) as exc:
        raise Unresolvable(f"callback_url's host {host!r} does not resolve ({exc})") from None
    return sorted({ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}, key=str)


def check(url: object, allowed_cidrs: Iterable[str],
          timeout: float = RESOLVE_SECONDS) -> tuple[Target, list[IpAddress]]:
    """Parse url and resolve its host; raise unless every address it resolves to may be reached.

    Every address, not just one: a name resolving to a public and a private
    address would otherwise let a client choose which one is used.
    """
    target = parse(url)
    addresses = resolve(target.host, target.port, timeout)
    if not addresses:
        raise Unresolvable(f"callback_url's host {target.host!r} has no address")
    allowed = networks(allowed_cidrs)
    refused = [str(ip) for ip in addresses if blocked(ip, allowed)]
    if refused:
        raise CallbackNotAllowed(
            f"callback_url's host {target.host!r} resolves to {', '.join(refused)}: a loopback, private, "
            "link-local or metadata address; callbacks go to public addresses only, unless the network is "
            "listed in INFERQ_WEBHOOK_ALLOWED_NETWORKS")
    return target, addresses


def signature(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The Inferq-Signature header's value for body: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify(secret: str, body: bytes, header: str, tolerance: float = 300) -> bool:
    """A receiver's check: the header's HMAC matches body and its time is within tolerance seconds of now."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        t = int(fields["t"])
    except (KeyError, ValueError):
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return abs(time.time() - t) <= tolerance and hmac.compare_digest(expected, fields.get("v1", ""))
