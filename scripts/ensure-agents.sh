#!/usr/bin/env bash
# Install the real coding agents tests/agents/ runs through the proxy (Claude Code, Codex, Gemini CLI, Copilot CLI,
# OpenCode), at the versions pinned in tests/agents/package-lock.json, into a cache outside the repo:
#   ${AIGW_TEST_AGENTS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/aigw-proxy/agents}
# `npm ci` runs only when the lockfile changed since the last install (a stamp file holds its hash).
# Install scripts are not run (--ignore-scripts: gemini-cli's optional node-pty would compile); only the two that
# put a native binary in place of its launcher stub (Claude Code, OpenCode) are run, explicitly.
# Without npm the agent tests skip with a loud message; in CI (CI=true) a missing agent fails instead.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
src="$repo/tests/agents"
dest="${AIGW_TEST_AGENTS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/aigw-proxy/agents}"
bins=(claude codex gemini copilot opencode)

if ! command -v npm >/dev/null 2>&1; then
  echo "##########################################################################################" >&2
  echo "# npm not found: the real-agent tests (tests/agents) cannot install Claude Code, Codex," >&2
  echo "# Gemini CLI, Copilot CLI and OpenCode, and will SKIP. Install Node.js >= 20 with npm." >&2
  echo "##########################################################################################" >&2
  if [[ "${CI:-}" == "true" ]]; then exit 1; fi
  exit 0
fi

want=$(cat "$src/package.json" "$src/package-lock.json" | sha256sum | cut -d' ' -f1)
stamp="$dest/.installed-lock-sha256"
installed() {
  [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] || return 1
  for b in "${bins[@]}"; do [[ -x "$dest/node_modules/.bin/$b" ]] || return 1; done
}

mkdir -p "$dest"
exec 9>"$dest/.lock"
flock 9  # one install at a time (parallel `make test` runs share the cache)
if installed; then exit 0; fi

echo "Installing the pinned agents into $dest (npm ci; a few minutes the first time)"
rm -f "$stamp"
cp "$src/package.json" "$src/package-lock.json" "$dest/"
(cd "$dest" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
(cd "$dest/node_modules/@anthropic-ai/claude-code" && node install.cjs)
(cd "$dest/node_modules/opencode-ai" && node postinstall.mjs)
for b in "${bins[@]}"; do
  if ! version=$("$dest/node_modules/.bin/$b" --version 2>&1 | head -1); then
    echo "error: $b was installed but does not run: $version" >&2
    exit 1
  fi
  echo "  $b: $version"
done
echo "$want" >"$stamp"
