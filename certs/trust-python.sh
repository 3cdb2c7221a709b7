#!/usr/bin/env bash
# Build a CA bundle (the system's or certifi's CAs plus the aigw-proxy CA) for SSL_CERT_FILE / REQUESTS_CA_BUNDLE
# and print the agents' environment lines. certs/trust-python.sh --help for the options.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "$0")/common.sh"

OUT=""
BASE=""
CERTIFI=0
PYTHON=${PYTHON:-python3}
SCRIPT_USAGE="
Write a CA bundle of the system CAs plus the aigw-proxy CA, for the clients whose CA file replaces their default
store: Python (ssl, httpx and the anthropic/openai/google-genai SDKs via SSL_CERT_FILE, requests via
REQUESTS_CA_BUNDLE), Codex CLI, curl. No root needed.

  --out FILE          where the bundle goes (default: \${XDG_CONFIG_HOME:-~/.config}/aigw-proxy/ca-bundle.pem)
  --base FILE         the bundle to start from (default: the OS's, e.g. /etc/ssl/certs/ca-certificates.crt)
  --certifi           start from certifi's bundle instead (what requests and the SDKs use when nothing is set)
  --python PY         the Python whose certifi --certifi reads (default: \$PYTHON, else python3)"

handle_option() {
	case $1 in
	--out)
		need_value "$@"
		OUT=$2
		SHIFT=2
		;;
	--base)
		need_value "$@"
		BASE=$2
		SHIFT=2
		;;
	--certifi) CERTIFI=1 ;;
	--python)
		need_value "$@"
		PYTHON=$2
		SHIFT=2
		;;
	*) return 1 ;;
	esac
}

parse_args "$@"
[ -z "$BASE" ] || [ "$CERTIFI" = 0 ] || die "give --base or --certifi, not both"
obtain_ca
if [ "$CERTIFI" = 1 ]; then
	BASE=$("$PYTHON" -c 'import certifi; print(certifi.where())' 2>/dev/null) ||
		die "$PYTHON has no certifi (pip install certifi, or --python /path/to/venv/bin/python)"
elif [ -z "$BASE" ]; then
	BASE=$(system_bundle)
	if [ -z "$BASE" ]; then
		BASE=$("$PYTHON" -c 'import certifi; print(certifi.where())' 2>/dev/null) ||
			die "no system CA bundle found and $PYTHON has no certifi: pass --base FILE"
	fi
fi
[ -n "$OUT" ] || OUT=$(user_config_dir)/ca-bundle.pem
say "bundle: $BASE plus the CA"
make_bundle "$BASE" "$OUT"
print_env "" "$OUT"
