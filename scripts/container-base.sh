#!/usr/bin/env bash
# A local stand-in for python:3.11-slim-bookworm, for machines that reach the
# Debian and PyPI mirrors but no container registry: debootstrap a minimal
# Debian 12, import it, and add Debian's Python 3.11 with a venv first on PATH.
# Prints the image name; builds only what is missing (idempotent).
#
#   scripts/container-base.sh            # -> localhost/inferq-python:3.11-bookworm
#   docker build --build-arg BASE=localhost/inferq-python:3.11-bookworm ...
set -euo pipefail

DEBIAN=localhost/debian-base:bookworm
PYTHON=localhost/inferq-python:3.11-bookworm
ENGINE=${ENGINE:-podman}

exists() { "$ENGINE" image exists "$1" 2>/dev/null; }

# The mirror apt uses here (a deb822 source or a one-line one), else Debian's own.
mirror() {
  local found
  found=$(grep -hoE '^URIs:\s*\S+' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)
  [ -n "$found" ] || found=$(grep -hoE '^deb\s+\S+debian/?\s' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -n1 || true)
  echo "${found:-http://deb.debian.org/debian}"
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if ! exists "$DEBIAN"; then
  echo "container-base: debootstrap bookworm from $(mirror)" >&2
  debootstrap --variant=minbase bookworm "$work/rootfs" "$(mirror)" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
  tar -C "$work/rootfs" -c . | "$ENGINE" import --change 'CMD ["/bin/bash"]' - "$DEBIAN" >/dev/null
  rm -rf "$work/rootfs"
fi

if ! exists "$PYTHON"; then
  mkdir -p "$work/context/ca"
  # This machine's TLS to the package mirrors may be re-signed by a local CA:
  # the image must trust what the host trusts, or pip fails with CERTIFICATE_VERIFY_FAILED.
  cp /usr/local/share/ca-certificates/*.crt "$work/context/ca/" 2>/dev/null || true
  cat >"$work/context/Dockerfile" <<EOF
FROM $DEBIAN
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
        python3 python3-venv ca-certificates passwd \\
    && rm -rf /var/lib/apt/lists/*
COPY ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates && python3 -m venv /usr/local/python
# As in python:3.11-slim: python and pip first on PATH, pip trusting the system's CAs.
ENV PATH=/usr/local/python/bin:\$PATH \\
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \\
    LANG=C.UTF-8
CMD ["python3"]
EOF
  echo "container-base: building $PYTHON" >&2
  "$ENGINE" build -q -t "$PYTHON" "$work/context" >/dev/null
fi
echo "$PYTHON"
