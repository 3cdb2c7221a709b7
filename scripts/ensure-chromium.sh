#!/usr/bin/env bash
# Make a headless browser available for tests/console (the web console in a real browser): Debian's `chromium`
# package, driven by Playwright's Python client pointed at /usr/bin/chromium (Playwright never downloads one).
# Installs only when missing and when it can (root + apt-get); otherwise says why and leaves the tests to skip
# (in CI, where CI=true, those tests fail instead of skipping).
set -euo pipefail
if [[ -x ${AIGW_CHROMIUM:-/usr/bin/chromium} ]]; then
  exit 0
fi
# shellcheck source-path=SCRIPTDIR source=lib/debian-packages.sh
source "$(dirname "$0")/lib/debian-packages.sh"
install_debian_packages "the web console's browser tests" chromium fonts-dejavu-core || exit 0
[[ -x /usr/bin/chromium ]]
