# Sourced by the scripts/ensure-*.sh: install Debian packages for the tests, once, without starting services.
# shellcheck shell=bash

# install_debian_packages WHAT PKG...: install PKG... with apt-get, or, where that cannot be done here (not root,
# no apt-get), say so naming WHAT would skip and return 1. The package scripts would start system-wide services
# (PostgreSQL on 5432, Prometheus, HAProxy); the tests start their own on free loopback ports, so policy-rc.d
# keeps the packages from starting theirs.
install_debian_packages() {
  local what=$1
  shift
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "note: $* not found and cannot be installed here (needs root and apt-get); $what will skip." \
         "Install Debian's $* to run them." >&2
    return 1
  fi
  echo "Installing Debian's $* for the tests"
  export DEBIAN_FRONTEND=noninteractive
  # One package-list update per day is plenty for a test machine; CI machines are fresh and update once.
  local stamp=/var/lib/apt/periodic/aigw-proxy-update-stamp
  if [[ -z $(find "$stamp" -mmin -1440 2>/dev/null) ]]; then
    apt-get update -qq && mkdir -p "$(dirname "$stamp")" && touch "$stamp"
  fi
  local policy=/usr/sbin/policy-rc.d created=0 status=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created=1
  fi
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null || status=$?
  if [[ $created -eq 1 ]]; then rm -f "$policy"; fi
  return "$status"
}
