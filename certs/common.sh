# shellcheck shell=bash disable=SC2034  # sets variables (CHANGED, CA_ROOT, ...) that the sourcing scripts read
# Shared by the certs/trust-*.sh scripts (sourced, not run): options, getting the proxy's CA, printing the
# agents' environment lines. Bash 3.2 compatible (macOS's /bin/bash): no associative arrays, no mapfile.
#
# A script sets SCRIPT_USAGE (its synopsis and own options) and may define handle_option (see parse_args),
# then calls: parse_args "$@"; obtain_ca; ...; print_env NODE_CA_FILE SSL_BUNDLE.

SCRIPT_NAME=$(basename "$0")
CERTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CA_ENDPOINT=/api/v2/aibridge/proxy/ca-cert.pem # public: the CA certificate, no token needed

NAME=aigw-proxy # file and keychain/keystore name of the installed CA
CA_FILE=""
ADMIN_URL=""
USE_EXPORT=0
DATA_DIR=""
PROXY_ADDR=""
PROXY_USER=""
PROXY_TOKEN=${AIGW_TOKEN:-}
DRY_RUN=0
SHIFT=1

die() {
	echo "error: $SCRIPT_NAME: $*" >&2
	exit 1
}

say() {
	echo "$*" >&2
}

# run CMD...: run it, or with --dry-run only say what would run.
run() {
	if [ "$DRY_RUN" = 1 ]; then
		say "would run: $*"
	else
		"$@"
	fi
}

need_cmd() { # need_cmd NAME HINT
	command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"
}

need_value() { # need_value OPTION [VALUE...]: the option must be followed by a value
	[ $# -ge 2 ] || die "$1 needs a value (see --help)"
}

usage() {
	cat <<EOF
usage: $SCRIPT_NAME [options]
$SCRIPT_USAGE

Where the CA comes from (default: the running proxy's admin listener, http://127.0.0.1:8889):
  --ca-file FILE      a PEM file (\`aigw-proxy ca export > FILE\` on the proxy host)
  --admin-url URL     a running proxy's admin listener: GET URL$CA_ENDPOINT (public)
  --export            run \`aigw-proxy ca export\` here (the CA in this machine's data dir; creates one if none)
  --data-dir DIR      with --export: the proxy's data dir

What the printed environment lines say:
  --proxy HOST:PORT   the proxy for HTTPS_PROXY (default: the admin URL's host, port 8888)
  --user NAME         the URL's user part, ignored by the proxy (default: your login name, \$SUDO_USER under sudo)
  --token TOKEN       your proxy token (default: \$AIGW_TOKEN, else a <token> placeholder)

  --name NAME         the installed CA file's name, the Java keystore alias (default: aigw-proxy)
  --dry-run           fetch and check the CA, say what would change, change nothing
  -h, --help          this help

The environment lines go to stdout (eval-able); everything else to stderr. Running it again is harmless.
EOF
}

# parse_args "$@": the shared options; a script's handle_option OPTION [VALUE...] handles its own (sets SHIFT to
# the number of words it used, returns 1 for an option it does not know).
parse_args() {
	while [ $# -gt 0 ]; do
		SHIFT=1
		case $1 in
		-h | --help)
			usage
			exit 0
			;;
		--ca-file)
			need_value "$@"
			CA_FILE=$2
			SHIFT=2
			;;
		--admin-url)
			need_value "$@"
			ADMIN_URL=${2%/}
			SHIFT=2
			;;
		--export) USE_EXPORT=1 ;;
		--data-dir)
			need_value "$@"
			DATA_DIR=$2
			SHIFT=2
			;;
		--proxy)
			need_value "$@"
			PROXY_ADDR=$2
			SHIFT=2
			;;
		--user)
			need_value "$@"
			PROXY_USER=$2
			SHIFT=2
			;;
		--token)
			need_value "$@"
			PROXY_TOKEN=$2
			SHIFT=2
			;;
		--name)
			need_value "$@"
			NAME=$2
			SHIFT=2
			;;
		--dry-run) DRY_RUN=1 ;;
		*)
			if ! declare -F handle_option >/dev/null || ! handle_option "$@"; then
				die "unknown option $1 (see --help)"
			fi
			;;
		esac
		shift "$SHIFT"
	done
	local sources=0
	[ -n "$CA_FILE" ] && sources=$((sources + 1))
	[ -n "$ADMIN_URL" ] && sources=$((sources + 1))
	[ "$USE_EXPORT" = 1 ] && sources=$((sources + 1))
	[ "$sources" -le 1 ] || die "give at most one of --ca-file, --admin-url, --export"
	[ -z "$DATA_DIR" ] || [ "$USE_EXPORT" = 1 ] || die "--data-dir goes with --export"
	case $NAME in
	"" | *[!A-Za-z0-9._-]*) die "--name must be letters, digits, '.', '_' or '-', not '$NAME'" ;;
	esac
	if [ -z "$PROXY_USER" ]; then
		PROXY_USER=${SUDO_USER:-$(id -un 2>/dev/null || true)}
		case $PROXY_USER in "" | *[!A-Za-z0-9._~-]*) PROXY_USER=user ;; esac
	fi
	case $PROXY_USER in *[!A-Za-z0-9._~-]*) die "--user must be letters, digits or . _ ~ - (it goes into a URL)" ;; esac
	case $PROXY_TOKEN in *[!A-Za-z0-9._~-]*) die "--token has characters a proxy token never has" ;; esac
	if [ -z "$PROXY_ADDR" ]; then
		local host=127.0.0.1
		if [ -n "$ADMIN_URL" ]; then
			host=${ADMIN_URL#*://}
			host=${host%%/*}
			case $host in
			\[*\]:*) host=${host%:*} ;; # [v6]:port
			\[*\]) ;;
			*:*) host=${host%:*} ;;
			esac
		fi
		PROXY_ADDR="$host:8888"
	fi
	WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/aigw-trust.XXXXXX")
	trap 'rm -rf "$WORKDIR"' EXIT
}

# fetch_url URL OUT: an HTTP GET straight to the proxy's admin listener (never through a proxy from the env).
fetch_url() {
	if command -v curl >/dev/null 2>&1; then
		curl -fsS --noproxy '*' --max-time 15 -o "$2" "$1"
	elif command -v wget >/dev/null 2>&1; then
		wget -q --no-proxy -T 15 -O "$2" "$1"
	elif command -v python3 >/dev/null 2>&1; then
		python3 - "$1" "$2" <<'EOF'
import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
with opener.open(sys.argv[1], timeout=15) as r, open(sys.argv[2], "wb") as f:
    f.write(r.read())
EOF
	else
		die "need curl, wget or python3 to fetch the CA from $1 (or pass --ca-file)"
	fi
}

# obtain_ca: get the CA, check it, and set CA_ROOT (a PEM file holding the one certificate to trust: the last
# one of the proxy's CA file, i.e. the root of its chain), CA_COUNT, CA_SUBJECT, CA_SHA256.
obtain_ca() {
	need_cmd openssl "install OpenSSL (Debian/Ubuntu: apt-get install openssl)"
	local raw=$WORKDIR/ca-download.pem origin
	if [ -n "$CA_FILE" ]; then
		origin=$CA_FILE
		if [ ! -f "$CA_FILE" ] || [ ! -r "$CA_FILE" ]; then
			die "cannot read --ca-file $CA_FILE"
		fi
		cp "$CA_FILE" "$raw"
	elif [ "$USE_EXPORT" = 1 ]; then
		local bin=${AIGW_PROXY:-}
		if [ -z "$bin" ]; then
			if command -v aigw-proxy >/dev/null 2>&1; then
				bin=aigw-proxy
			elif [ -x "$CERTS_DIR/../.venv/bin/aigw-proxy" ]; then
				bin=$CERTS_DIR/../.venv/bin/aigw-proxy
			else
				die "aigw-proxy not found on PATH (or set AIGW_PROXY=/path/to/aigw-proxy, or use --admin-url/--ca-file)"
			fi
		fi
		origin="$bin ca export"
		if [ -n "$DATA_DIR" ]; then
			"$bin" ca export --data-dir "$DATA_DIR" >"$raw" || die "\`$origin --data-dir $DATA_DIR\` failed"
		else
			"$bin" ca export >"$raw" || die "\`$origin\` failed"
		fi
	else
		local base=${ADMIN_URL:-http://127.0.0.1:8889}
		origin=$base$CA_ENDPOINT
		case $base in *.pem) origin=$base ;; esac
		fetch_url "$origin" "$raw" 2>"$WORKDIR/fetch.err" ||
			die "could not fetch the CA from $origin: $(tr '\n' ' ' <"$WORKDIR/fetch.err")
  Is the proxy running, and is that its admin listener (aigw-proxy run --admin-listen)? Or pass --ca-file FILE,
  or --export on the proxy's host."
	fi
	CA_COUNT=$(grep -c -- '-----BEGIN CERTIFICATE-----' "$raw" || true)
	[ "$CA_COUNT" -ge 1 ] || die "no PEM certificate in what $origin gave (expected -----BEGIN CERTIFICATE-----)"
	CA_ROOT=$WORKDIR/ca-root.pem
	awk '/-----BEGIN CERTIFICATE-----/ { buf = ""; inside = 1 }
	     inside { buf = buf $0 "\n" }
	     /-----END CERTIFICATE-----/ { last = buf; inside = 0 }
	     END { printf "%s", last }' "$raw" >"$WORKDIR/last.pem"
	openssl x509 -in "$WORKDIR/last.pem" -outform PEM -out "$CA_ROOT" 2>"$WORKDIR/x509.err" ||
		die "the certificate from $origin does not parse: $(head -1 "$WORKDIR/x509.err")"
	openssl x509 -in "$CA_ROOT" -noout -text | grep -q 'CA:TRUE' ||
		die "the certificate from $origin is not a CA (no BasicConstraints CA:TRUE); is it the proxy's CA?"
	openssl x509 -in "$CA_ROOT" -noout -checkend 0 >/dev/null || die "the CA from $origin has expired"
	CA_SUBJECT=$(openssl x509 -in "$CA_ROOT" -noout -subject | sed 's/^subject= *//')
	CA_SHA256=$(openssl x509 -in "$CA_ROOT" -noout -fingerprint -sha256 | sed 's/^.*=//')
	say "CA from $origin: $CA_SUBJECT (SHA-256 $CA_SHA256)"
	if [ "$CA_COUNT" -gt 1 ]; then
		say "  ($CA_COUNT certificates: trusting the last one, the root of the chain the proxy sends)"
	fi
}

# pem_body FILE: the base64 of a one-certificate PEM on one line, to find the certificate inside a bundle.
pem_body() {
	sed '/^-----/d' "$1" | tr -d '\r\n'
}

# bundle_has BUNDLE CERT: does the bundle hold this certificate (however its lines are wrapped)?
bundle_has() {
	[ -f "$1" ] || return 1
	tr -d '\r\n' <"$1" | grep -qF -- "$(pem_body "$2")"
}

# put_file SRC DEST: copy SRC to DEST (mode 0644, written via a temp file) unless DEST already holds the same
# bytes; sets CHANGED=1 when it wrote (or, with --dry-run, would write).
put_file() {
	CHANGED=0
	if [ -f "$2" ] && cmp -s "$1" "$2"; then
		say "unchanged: $2"
		return 0
	fi
	CHANGED=1
	if [ "$DRY_RUN" = 1 ]; then
		say "would write: $2"
		return 0
	fi
	local dir
	dir=$(dirname "$2")
	mkdir -p "$dir" 2>/dev/null || die "cannot create $dir (permission denied? run with sudo, or pick another path)"
	local tmp
	tmp=$(mktemp "$dir/.$NAME.XXXXXX" 2>/dev/null) || die "cannot write in $dir (permission denied? run with sudo)"
	cat "$1" >"$tmp"
	chmod 0644 "$tmp"
	mv -f "$tmp" "$2"
	say "wrote: $2"
}

# make_bundle BASE OUT: OUT = the CAs of BASE plus ours (ours only once: not added when BASE has it already).
make_bundle() {
	[ -r "$1" ] || die "cannot read the base bundle $1"
	local new=$WORKDIR/bundle.pem
	cat "$1" >"$new"
	[ -z "$(tail -c 1 "$1")" ] || echo >>"$new" # a last line without its newline
	if bundle_has "$1" "$CA_ROOT"; then
		say "$1 already holds the CA"
	else
		{
			echo "# $NAME: $CA_SUBJECT"
			cat "$CA_ROOT"
		} >>"$new"
	fi
	put_file "$new" "$2"
}

# system_bundle: the OS's own bundle of trusted CAs (empty if none is found).
system_bundle() {
	local f
	for f in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt /etc/ssl/ca-bundle.pem \
		/etc/ssl/cert.pem; do
		if [ -s "$f" ]; then
			echo "$f"
			return 0
		fi
	done
}

user_config_dir() {
	echo "${XDG_CONFIG_HOME:-$HOME/.config}/aigw-proxy"
}

# shq VALUE: VALUE single-quoted for a POSIX shell.
shq() {
	printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}

# print_env NODE_CA SSL_BUNDLE: the agents' environment lines on stdout. An empty argument means this script did
# not make that file; the line then says which script does.
print_env() {
	local node_ca=$1 bundle=$2 token=${PROXY_TOKEN:-<token>}
	if [ -z "$PROXY_TOKEN" ]; then
		say "note: HTTPS_PROXY below has a <token> placeholder: pass --token, or set AIGW_TOKEN"
		say "      (a token comes from \`aigw-proxy users add NAME\` on the proxy host)"
	fi
	echo "# aigw-proxy: trust $CA_SUBJECT (SHA-256 $CA_SHA256)"
	echo "# Environment for the agents: paste into your shell profile, or prefix a command with it."
	echo "export HTTPS_PROXY=$(shq "http://$PROXY_USER:$token@$PROXY_ADDR")"
	if [ -n "$node_ca" ]; then
		echo "# Claude Code, Gemini CLI, Copilot CLI (Node) and OpenCode (Bun): our CA on top of their built-in roots"
		echo "export NODE_EXTRA_CA_CERTS=$(shq "$node_ca")"
	else
		echo "# Claude Code, Gemini CLI, Copilot CLI, OpenCode: NODE_EXTRA_CA_CERTS=<our CA>: see certs/trust-node.sh"
	fi
	if [ -n "$bundle" ]; then
		echo "# Codex CLI (Rust), Python SDKs, curl: the system CAs plus ours (replaces their default store)"
		echo "export SSL_CERT_FILE=$(shq "$bundle")"
		echo "export REQUESTS_CA_BUNDLE=$(shq "$bundle")"
	else
		echo "# Codex CLI, Python SDKs, curl: SSL_CERT_FILE=<system CAs plus ours>: see certs/trust-python.sh"
	fi
}
