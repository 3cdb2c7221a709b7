#!/usr/bin/env bash
# Make `prometheus` and `promtool` available for tests/e2e/test_prometheus.py: Debian's `prometheus` package.
# Installs only when missing and when it can (root + apt-get); otherwise says why and leaves the tests to skip
# (in CI, where CI=true, that test fails instead of skipping).
set -euo pipefail
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  exit 0
fi
# shellcheck source-path=SCRIPTDIR source=lib/debian-packages.sh
source "$(dirname "$0")/lib/debian-packages.sh"
install_debian_packages "the Prometheus tests" prometheus || exit 0
command -v prometheus >/dev/null && command -v promtool >/dev/null
