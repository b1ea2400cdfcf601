"""A lab of SSH hosts on this machine: network namespaces on a private bridge, each with its own sshd.

Layout: a "lan" namespace holds a bridge; every host namespace (orchestrator,
worker-1, worker-2, and "admin", where the Fabric commands run) is joined to
it by a veth pair and gets an address in SUBNET, which exists only inside
these namespaces. Each host's sshd runs in its own UTS namespace too, so a
host has its own hostname. The namespaces share this machine's filesystem.

Each host makes a host key of its own at "first boot" (ssh-keygen, as cloud-init
does on EC2) and prints the public half to its console in cloud-init's format
(console(name)); the cluster pins what the console shows, with the parser `up`
uses on GetConsoleOutput (deploy.host_keys.keys_in_console). No private key
leaves the host's own directory.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SUBNET = "10.231.0"
"""Private /24 of the lab; no route to it exists outside the lab's namespaces."""

ADMIN_ADDRESS = f"{SUBNET}.10"
SSHD = "/usr/sbin/sshd"


class LabUnavailable(RuntimeError):
    """This machine cannot host the lab (not root, no ip/sshd, namespaces refused)."""


def unavailable_reason() -> str | None:
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "network namespaces and sshd need root"
    missing = [tool for tool in ("ip", "unshare", "ssh-keygen") if not shutil.which(tool)]
    if not os.access(SSHD, os.X_OK):
        missing.append(SSHD)
    if missing:
        return f"missing {', '.join(missing)} (scripts/system-deps.sh installs iproute2 and openssh-server)"
    return None


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise LabUnavailable(f"{' '.join(args)}: {result.stderr.strip()}")
    return result


@dataclass(frozen=True)
class HostKey:
    """A host key a lab host made: its private key file (the host's alone) and the public key line."""

    path: Path
    public: str


def make_host_key(path: Path) -> HostKey:
    """ssh-keygen an ed25519 host key at path, as a host does at first boot."""
    path.unlink(missing_ok=True)
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path))
    return HostKey(path, " ".join(path.with_suffix(".pub").read_text().split()[:2]))


def console_lines(key: HostKey, hostname: str) -> list[str]:
    """What cloud-init's write-ssh-key-fingerprints prints to the console (through `logger -t ec2`)."""
    fingerprint = sh("ssh-keygen", "-l", "-f", str(key.path.with_suffix(".pub"))).stdout.strip()
    return [f"ec2: {line}" for line in [
        "", "#" * 61, "-----BEGIN SSH HOST KEY FINGERPRINTS-----", fingerprint,
        "-----END SSH HOST KEY FINGERPRINTS-----", "#" * 61, "-----BEGIN SSH HOST KEY KEYS-----",
        f"{key.public} root@{hostname}", "-----END SSH HOST KEY KEYS-----"]]


@dataclass
class LabHost:
    name: str
    address: str
    namespace: str


class Lab:
    """The namespaces, the bridge and the sshd processes; down() removes all of it."""

    def __init__(self, workdir: Path, names: list[str], host_env: dict[str, dict[str, str]] | None = None,
                 tag: str = ""):
        self.workdir = workdir
        # Per host: variables every SSH session there gets (sshd's SetEnv), e.g. its own container store.
        self.host_env = host_env or {}
        # tag: tells two labs of one test run apart (their namespaces and links are named after the prefix).
        self.prefix = f"iq{os.getpid() % 100000}{tag}"
        self.lan = f"{self.prefix}-lan"
        self.admin = f"{self.prefix}-admin"
        self.hosts = [LabHost(name, f"{SUBNET}.{11 + i}", f"{self.prefix}-{name}") for i, name in enumerate(names)]
        self.extra_hosts: list[LabHost] = []
        """Hosts added after up() (add_host): on the network, with no sshd."""
        self.namespaces: list[str] = []
        self.sshd: list[subprocess.Popen] = []
        self.key = workdir / "id_ed25519"
        self.host_keys: dict[str, HostKey] = {}

    def exec_prefix(self, namespace: str) -> list[str]:
        """Command prefix running something inside a namespace."""
        # nsenter, not `ip netns exec`: that one also remounts /sys in a mount namespace of
        # its own, which hides /sys/fs/cgroup, and then no container can start on the host.
        return ["nsenter", f"--net=/run/netns/{namespace}"]

    def on_host(self, name: str) -> list[str]:
        """Command prefix running something as a session on that host would: its namespace and its variables."""
        host = next(h for h in self.hosts + self.extra_hosts if h.name == name)
        return [*self.exec_prefix(host.namespace), "env", *(f"{k}={v}" for k, v in self.host_env.get(name, {}).items())]

    def _namespace(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh(*self.exec_prefix(name), "ip", "link", "set", "lo", "up")

    def _join(self, namespace: str, index: int, address: str) -> None:
        outside, inside = f"{self.prefix}v{index}", f"{self.prefix}p{index}"
        sh("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
        sh("ip", "link", "set", outside, "netns", self.lan)
        sh("ip", "link", "set", inside, "netns", namespace)
        sh(*self.exec_prefix(self.lan), "ip", "link", "set", outside, "master", "br0", "up")
        sh(*self.exec_prefix(namespace), "ip", "link", "set", inside, "name", "eth0")
        sh(*self.exec_prefix(namespace), "ip", "addr", "add", f"{address}/24", "dev", "eth0")
        sh(*self.exec_prefix(namespace), "ip", "link", "set", "eth0", "up")

    def up(self) -> Lab:
        """Create the network, the key, and an sshd per host; wait until each listens."""
        self._namespace(self.lan)
        sh(*self.exec_prefix(self.lan), "ip", "link", "add", "br0", "type", "bridge")
        sh(*self.exec_prefix(self.lan), "ip", "link", "set", "br0", "up")
        self._namespace(self.admin)
        self._join(self.admin, 0, ADMIN_ADDRESS)
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "inferq-lab", "-f", str(self.key))
        (self.workdir / "authorized_keys").write_text(self.key.with_suffix(".pub").read_text())
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
        for index, host in enumerate(self.hosts, start=1):
            self._namespace(host.namespace)
            self._join(host.namespace, index, host.address)
        for host in self.hosts:
            # First boot: the host makes its key and prints it to its console, as cloud-init does.
            self.host_keys[host.name] = make_host_key(self.workdir / f"host_key-{host.name}")
            self.console(host.name).write_text("\n".join(
                ["[    0.000000] Linux version 6.1.0 (a boot log)", *console_lines(self.host_keys[host.name],
                                                                                  host.name), "login:"]) + "\n")
            self.start_sshd(host.name, 22, self.host_keys[host.name])
        return self

    def add_host(self, name: str, env: dict[str, str] | None = None) -> LabHost:
        """One more host on the lab's network after up(): a namespace and an address, and no sshd (a host that
        nobody logs in to, as one an Auto Scaling group launches)."""
        index = len(self.hosts) + len(self.extra_hosts) + 1
        host = LabHost(name, f"{SUBNET}.{10 + index}", f"{self.prefix}-{name}")
        self._namespace(host.namespace)
        self._join(host.namespace, index, host.address)
        self.extra_hosts.append(host)
        self.host_env[name] = env or {}
        return host

    def console(self, name: str) -> Path:
        """The host's console log (what GetConsoleOutput would answer for an instance)."""
        return self.workdir / f"console-{name}.log"

    def start_sshd(self, name: str, port: int, key: HostKey) -> subprocess.Popen:
        """Start an sshd on host name's address and port with this host key; return once it listens."""
        host = next(h for h in self.hosts if h.name == name)
        process = self._start_sshd(host, port, key)
        self.sshd.append(process)
        self._wait_listening(host, process, port)
        return process

    def _start_sshd(self, host: LabHost, port: int, key: HostKey) -> subprocess.Popen:
        tag = f"{host.name}-{port}"
        key_file = key.path
        config = self.workdir / f"sshd-{tag}.conf"
        config.write_text("\n".join([
            f"ListenAddress {host.address}", f"Port {port}", f"HostKey {key_file}",
            f"PidFile {self.workdir / f'sshd-{tag}.pid'}",
            f"AuthorizedKeysFile {self.workdir / 'authorized_keys'}",
            "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "UsePAM no", "StrictModes no", "Subsystem sftp internal-sftp",
            *([f"SetEnv {' '.join(f'{k}={v}' for k, v in self.host_env[host.name].items())}"]
              if self.host_env.get(host.name) else []), "",
        ]))
        log = open(self.workdir / f"sshd-{tag}.log", "ab")
        # Its own UTS namespace: the host gets its own hostname, as a machine would.
        command = [*self.exec_prefix(host.namespace), "unshare", "--uts", "sh", "-c",
                   f"hostname {host.name} && exec {SSHD} -D -e -f {config}"]
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def sshd_log(self, name: str, port: int = 22) -> str:
        """What the sshd on host name's port logged (connections, authentications)."""
        return (self.workdir / f"sshd-{name}-{port}.log").read_text(errors="replace")

    def _wait_listening(self, host: LabHost, process: subprocess.Popen, port: int, timeout: float = 15) -> None:
        log = self.workdir / f"sshd-{host.name}-{port}.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise LabUnavailable(f"sshd for {host.name} exited: {log.read_text()[-500:]}")
            if "Server listening" in log.read_text(errors="replace"):
                return
            time.sleep(0.05)
        raise LabUnavailable(f"sshd for {host.name} not listening after {timeout}s")

    def down(self) -> None:
        """Kill every process in the lab's namespaces (sshd and what deploys started), then delete them."""
        for namespace in reversed(self.namespaces):
            for _ in range(50):
                pids = [int(p) for p in sh("ip", "netns", "pids", namespace, check=False).stdout.split()]
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.1)
        for process in self.sshd:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        for namespace in reversed(self.namespaces):
            sh("ip", "netns", "del", namespace, check=False)
        self.namespaces.clear()
