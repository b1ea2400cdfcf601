"""The API's TLS certificate: generated here once per cluster, its SHA-256 fingerprint pinned by every client.

Self-signed on purpose: the orchestrator has an address, not a domain name, so
no public CA would certify it, and a pinned fingerprint trusts exactly this
certificate and nothing else. The key (mode 600) stays in secrets/<cluster>/
and on the orchestrator; the certificate's fingerprint is all a client needs
(`fab submit` reads it here; the `inferq` CLI takes it as INFERQ_API_CERT_SHA256).
"""
from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

VALID_DAYS = 5 * 365
"""Lifetime of a certificate: clients pin its fingerprint, so expiry adds nothing but a forced re-pin."""


@dataclass(frozen=True)
class Certificate:
    """A PEM certificate and its private key."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def sha256(self) -> str:
        """The certificate's SHA-256 fingerprint, 64 hex digits (what clients pin)."""
        return fingerprint(self.cert_pem)

    def __repr__(self) -> str:  # never print the key
        return f"Certificate(sha256={self.sha256})"


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of a PEM certificate's DER bytes, as hex."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def paths(secrets_dir: str | os.PathLike, cluster: str) -> tuple[Path, Path]:
    """(certificate, key) files of a cluster's API."""
    base = Path(secrets_dir) / cluster
    return base / "api-tls.crt", base / "api-tls.key"


def generate(cluster: str, addresses: list[str]) -> Certificate:
    """A new P-256 key and a self-signed certificate naming the API's addresses."""
    from cryptography import x509

    key = _new_key()
    name = _name(f"inferq API ({cluster})")
    cert = (_builder(name, name, key, VALID_DAYS)
            .add_extension(_addresses(addresses), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    return _signed(cert, key, key)


def _new_key():
    """A new P-256 private key: every certificate here has one of its own."""
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject, issuer, key, days: int):
    """A certificate for key's public half, subject issued by issuer, valid from five minutes ago (clocks
    differ a little between hosts) for days."""
    from cryptography import x509

    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days)))


def _addresses(addresses: list[str]):
    """The subjectAltName naming these IP addresses (what TLS checks against the address dialled)."""
    from cryptography import x509

    return x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(a)) for a in sorted(set(addresses))])


def _signed(builder, key, signing_key) -> Certificate:
    """builder signed by signing_key, as PEM, with key (the certificate's own) unencrypted beside it."""
    from cryptography.hazmat.primitives import hashes, serialization

    cert = builder.sign(signing_key, hashes.SHA256())
    return Certificate(cert.public_bytes(serialization.Encoding.PEM),
                       key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))


def addresses_of(cert_pem: bytes) -> set[str]:
    """The IP addresses a certificate names."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(a) for a in names.get_values_for_type(x509.IPAddress)}


def load_or_create(secrets_dir: str | os.PathLike, cluster: str, addresses: list[str]) -> Certificate:
    """The cluster's certificate; a new one when there is none or it names other addresses (a replaced host)."""
    return _load_or_create_at(*paths(secrets_dir, cluster), cluster, addresses)


def load_or_create_for(secrets_dir: str | os.PathLike, cluster: str, host: str, addresses: list[str]) -> Certificate:
    """One orchestrator's own API certificate (the --ha layout: each orchestrator its own key, so a key taken
    from one host cannot pass for the other); a new one when there is none or it names other addresses."""
    return _load_or_create_at(*host_paths(secrets_dir, cluster, host), cluster, addresses)


def _load_or_create_at(cert_path: Path, key_path: Path, cluster: str, addresses: list[str]) -> Certificate:
    """The certificate kept at cert_path if it names these addresses, else a new one written there."""
    if cert_path.exists() and key_path.exists():
        found = Certificate(cert_path.read_bytes(), key_path.read_bytes())
        if addresses_of(found.cert_pem) == set(addresses):
            return found
    return _keep(generate(cluster, addresses), cert_path, key_path)


def load(secrets_dir: str | os.PathLike, cluster: str) -> Certificate | None:
    """The cluster's certificate, if `fab deploy` made one."""
    cert_path, key_path = paths(secrets_dir, cluster)
    if not cert_path.exists():
        return None
    return Certificate(cert_path.read_bytes(), key_path.read_bytes() if key_path.exists() else b"")


def host_paths(secrets_dir: str | os.PathLike, cluster: str, host: str) -> tuple[Path, Path]:
    """(certificate, key) files of one orchestrator's own API certificate, for a cluster whose orchestrators
    each have their own (api-<host>-tls.crt); without them, every orchestrator has the cluster's (paths())."""
    base = Path(secrets_dir) / cluster
    return base / f"api-{host}-tls.crt", base / f"api-{host}-tls.key"


def load_for(secrets_dir: str | os.PathLike, cluster: str, host: str) -> Certificate | None:
    """The API certificate the orchestrator named host shows: its own if one is kept, else the cluster's."""
    cert_path, key_path = host_paths(secrets_dir, cluster, host)
    if cert_path.exists():
        return Certificate(cert_path.read_bytes(), key_path.read_bytes() if key_path.exists() else b"")
    return load(secrets_dir, cluster)


def forget(secrets_dir: str | os.PathLike, cluster: str) -> None:
    """Remove the cluster's certificate and key, and any orchestrator's own (after teardown)."""
    for path in [*paths(secrets_dir, cluster), *(Path(secrets_dir) / cluster).glob("api-*-tls.*")]:
        path.unlink(missing_ok=True)


def _keep(made: Certificate, cert_path: Path, key_path: Path) -> Certificate:
    """Write made's key (mode 600) and certificate in the secrets folder (mode 700); return made."""
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(cert_path.parent, 0o700)
    _write(key_path, made.key_pem, 0o600)
    _write(cert_path, made.cert_pem, 0o644)
    return made


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write a file with mode from its first byte, replacing any older one whole."""
    partial = path.with_suffix(path.suffix + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(partial, path)


# --- the cluster's own CA, for Redis's TLS between hosts ---

CA_VALID_DAYS = 10 * 365
"""Lifetime of the cluster's CA: longer than any certificate it signs."""


def ca_paths(secrets_dir: str | os.PathLike, cluster: str) -> tuple[Path, Path]:
    """(certificate, key) files of a cluster's CA."""
    base = Path(secrets_dir) / cluster
    return base / "cluster-ca.crt", base / "cluster-ca.key"


def generate_ca(cluster: str) -> Certificate:
    """A new P-256 key and a self-signed CA certificate that may sign server certificates only (path length 0)."""
    from cryptography import x509

    key = _new_key()
    name = _name(f"inferq cluster CA ({cluster})")
    cert = (_builder(name, name, key, CA_VALID_DAYS)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    return _signed(cert, key, key)


def issue(ca: Certificate, common_name: str, addresses: list[str]) -> Certificate:
    """A new P-256 key and a certificate signed by ca naming addresses: a server's (Redis, a sentinel), which
    may also authenticate as a client (a replica to its primary)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID

    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    key = _new_key()
    cert = (_builder(_name(common_name), ca_cert.subject, key, VALID_DAYS)
            .add_extension(_addresses(addresses), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),  # type: ignore[arg-type]
                           critical=False))
    return _signed(cert, key, ca_key)


def signed_by(cert_pem: bytes, ca_pem: bytes) -> bool:
    """Whether cert_pem was issued by the CA of ca_pem (its signature verifies with the CA's key)."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    cert, ca = x509.load_pem_x509_certificate(cert_pem), x509.load_pem_x509_certificate(ca_pem)
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def load_or_create_ca(secrets_dir: str | os.PathLike, cluster: str) -> Certificate:
    """The cluster's CA, made on first use and kept (key mode 600) in secrets/<cluster>/ until `down`."""
    cert_path, key_path = ca_paths(secrets_dir, cluster)
    if cert_path.exists() and key_path.exists():
        return Certificate(cert_path.read_bytes(), key_path.read_bytes())
    return _keep(generate_ca(cluster), cert_path, key_path)


def server_paths(secrets_dir: str | os.PathLike, cluster: str, name: str) -> tuple[Path, Path]:
    """(certificate, key) files of a server the CA certified (name: "redis", "sentinel-<host>" ...)."""
    base = Path(secrets_dir) / cluster
    return base / f"{name}-tls.crt", base / f"{name}-tls.key"


def load_or_issue(secrets_dir: str | os.PathLike, cluster: str, name: str, addresses: list[str]) -> Certificate:
    """A server's certificate from the cluster's CA: the one kept, unless it names other addresses or another
    CA signed it (a replaced host, a CA made again), then a new one."""
    ca = load_or_create_ca(secrets_dir, cluster)
    cert_path, key_path = server_paths(secrets_dir, cluster, name)
    if cert_path.exists() and key_path.exists():
        found = Certificate(cert_path.read_bytes(), key_path.read_bytes())
        if addresses_of(found.cert_pem) == set(addresses) and signed_by(found.cert_pem, ca.cert_pem):
            return found
    return _keep(issue(ca, f"inferq {name} ({cluster})", addresses), cert_path, key_path)


def forget_ca(secrets_dir: str | os.PathLike, cluster: str) -> None:
    """Remove the cluster's CA and every certificate it issued (after teardown)."""
    for path in ca_paths(secrets_dir, cluster):
        path.unlink(missing_ok=True)
    for path in (Path(secrets_dir) / cluster).glob("*-tls.*"):
        if not path.name.startswith("api-"):  # the API's certificates, the cluster's and each host's: forget()'s
            path.unlink(missing_ok=True)
