#!/usr/bin/env bash
# The container engine the worker-image tests run on: podman (with a `docker`
# command in front of it), installed and configured when missing. Idempotent.
#
# Two of podman's defaults fail on hosts like ours (docs/deploy.md, "The worker image"):
# crun may not raise RLIMIT_NOFILE, and crun refuses cgroups in hybrid mode; and
# podman builds drop HEALTHCHECK unless told to use Docker's image format. One
# containers.conf fixes all three (runc, cgroupfs, limits within the hard ones,
# BUILDAH_FORMAT=docker). It is written only where there is none, or where it is ours.
set -euo pipefail

CONF=/etc/containers/containers.conf
MARK="# written by inferq scripts/container-engine.sh"
# Each entry: a command to look for, then the Debian package that provides it.
NEEDED=(
  "podman podman"
  "buildah buildah"
  "runc runc"
  "crun crun"
  "fuse-overlayfs fuse-overlayfs"
  "debootstrap debootstrap"
  "iptables iptables"
  "zstd zstd"
  "/usr/libexec/podman/catatonit catatonit"
  "/usr/bin/docker podman-docker"
)

missing=()
for entry in "${NEEDED[@]}"; do
  read -r cmd pkg <<<"$entry"
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "container-engine: missing ${missing[*]}; install them (Debian: apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "container-engine: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# A container may be given no more than the hard limits of this process; and
# podman lowers its own process limit to 32768 as it starts, so no more than that.
nofile=$(ulimit -Hn)
nproc=$(ulimit -Hu)
[ "$nofile" = unlimited ] && nofile=1048576
{ [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; } && nproc=32768
wanted="$MARK
[containers]
default_ulimits = [\"nofile=${nofile}:${nofile}\", \"nproc=${nproc}:${nproc}\"]

[engine]
# Builds in Docker's image format: the OCI format has no HEALTHCHECK, and podman drops it.
env = [\"BUILDAH_FORMAT=docker\"]
runtime = \"runc\"
cgroup_manager = \"cgroupfs\"
events_logger = \"file\"
"
if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
  echo "container-engine: $CONF exists and is not ours; leaving it. If podman fails with" \
       "'setrlimit' or 'cgroups in hybrid mode', give it: runtime=\"runc\", cgroup_manager=\"cgroupfs\"," \
       "default_ulimits within 'ulimit -H'" >&2
elif [ "$(cat "$CONF" 2>/dev/null)" != "$(printf '%s' "$wanted")" ]; then
  install -d /etc/containers
  printf '%s' "$wanted" >"$CONF"
  echo "container-engine: wrote $CONF"
fi

# podman-docker prints a notice on every call unless this file exists.
[ -e /etc/containers/nodocker ] || touch /etc/containers/nodocker

# Prove it runs: an engine that installs but cannot start a container is a failure here, not later.
if ! out=$(podman info --format '{{.Host.OCIRuntime.Name}} {{.Host.CgroupManager}}' 2>&1); then
  echo "container-engine: podman does not run: $out" >&2
  exit 1
fi
