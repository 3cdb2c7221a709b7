#!/usr/bin/env bash
# Make `prometheus` and `promtool` available for tests/e2e/test_prometheus.py: Debian's `prometheus` package.
# Installs only when missing and when it can (root + apt-get); otherwise says why and leaves the tests to skip
# (in CI, where CI=true, that test fails instead of skipping).
set -euo pipefail
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "note: prometheus/promtool not found and cannot be installed here (needs root and apt-get);" \
       "the Prometheus tests will skip. Install Debian's 'prometheus' package to run them." >&2
  exit 0
fi
echo "Installing Debian's prometheus package (prometheus + promtool) for the tests"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The package would start a system-wide Prometheus; the tests start their own on a free loopback port.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
fi
trap 'if [[ $created_policy -eq 1 ]]; then rm -f "$policy"; fi' EXIT
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
command -v prometheus >/dev/null && command -v promtool >/dev/null
