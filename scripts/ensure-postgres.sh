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
  # shellcheck source-path=SCRIPTDIR source=lib/debian-packages.sh
  source "$(dirname "$0")/lib/debian-packages.sh"
  install_debian_packages "the PostgreSQL tests (and the haproxy config check)" "${missing[@]}" || exit 0
fi

if ! bindir=$(find_pg); then
  echo "error: PostgreSQL was installed but initdb/pg_ctl/postgres are not in /usr/lib/postgresql/*/bin" >&2
  exit 1
fi
echo "PostgreSQL for the tests: $("$bindir/pg_ctl" --version | sed 's/^pg_ctl //') in $bindir"
