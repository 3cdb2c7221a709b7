#!/usr/bin/env bash
# Make PostgreSQL's server binaries (`initdb`, `pg_ctl`, `postgres`) available for the test suite, which starts a
# throwaway cluster of its own (tests/support/postgres.py): Debian's `postgresql` package. Also installs Debian's
# `haproxy` (small) so tests/unit/test_deploy_scale.py can check deploy/haproxy/haproxy.cfg with `haproxy -c`.
#
# Installs only when missing and when it can (root + apt-get); otherwise says why and leaves the tests to skip
# (in CI, where CI=true, they fail instead of skipping). Prints the directory of the server binaries it found.
# Debian keeps them in /usr/lib/postgresql/<major>/bin, off PATH; the tests look there too.
set -euo pipefail

# A directory holding initdb + pg_ctl + postgres that really are PostgreSQL's (a stray `pg_ctl` on PATH may be a
# wrapper or a symlink elsewhere: resolve it and ask it its version).
pg_bindir() {
  local dir
  if [[ -n ${AIGW_TEST_PG_BINDIR:-} ]]; then
    printf '%s\n' "$AIGW_TEST_PG_BINDIR"
    return
  fi
  if command -v pg_ctl >/dev/null 2>&1; then
    dir=$(dirname "$(readlink -f "$(command -v pg_ctl)")")
    printf '%s\n' "$dir"
  fi
  # Newest major version first.
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -rV || true
}

find_pg() {
  local dir
  while read -r dir; do
    [[ -n $dir ]] || continue
    if [[ -x $dir/initdb && -x $dir/pg_ctl && -x $dir/postgres ]] \
       && "$dir/pg_ctl" --version 2>/dev/null | grep -q '(PostgreSQL)'; then
      printf '%s\n' "$dir"
      return 0
    fi
  done < <(pg_bindir)
  return 1
}

missing=()
find_pg >/dev/null || missing+=(postgresql)
command -v haproxy >/dev/null 2>&1 || [[ -x /usr/sbin/haproxy ]] || missing+=(haproxy)

if [[ ${#missing[@]} -gt 0 ]]; then
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "note: ${missing[*]} not found and cannot be installed here (needs root and apt-get);" \
         "the PostgreSQL tests (and the haproxy config check) will skip. Install Debian's ${missing[*]} to run them." >&2
    exit 0
  fi
  echo "Installing Debian's ${missing[*]} for the tests"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The packages would start a system-wide PostgreSQL (cluster "main" on 5432) and HAProxy; the tests start their
  # own, as an unprivileged user on free loopback ports. policy-rc.d keeps the package scripts from starting them.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
  fi
  trap 'if [[ $created_policy -eq 1 ]]; then rm -f "$policy"; fi' EXIT
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! bindir=$(find_pg); then
  echo "error: PostgreSQL was installed but initdb/pg_ctl/postgres are not in /usr/lib/postgresql/*/bin" >&2
  exit 1
fi
echo "PostgreSQL for the tests: $("$bindir/pg_ctl" --version | sed 's/^pg_ctl //') in $bindir"
