#!/usr/bin/env bash
# Trust the aigw-proxy CA in the macOS keychain, keep a copy and a CA bundle for the agents that do not read the
# keychain, then print their environment lines. certs/trust-macos.sh --help for the options.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "$0")/common.sh"

LOGIN=0
OUT_DIR=""
SCRIPT_USAGE="
Trust the aigw-proxy CA on macOS: \`security add-trusted-cert\` into the System keychain (asks for your password
through sudo; --login: your login keychain instead, no sudo), for Safari, curl and the apps that use the keychain.
Node-based agents and Codex do not read the keychain: the script also writes OUT_DIR/aigw-ca.pem (for
NODE_EXTRA_CA_CERTS) and OUT_DIR/ca-bundle.pem (/etc/ssl/cert.pem plus our CA, for SSL_CERT_FILE). Run it as
yourself, not with sudo.

  --login             trust it in your login keychain only (no sudo)
  --out-dir DIR       where the copy and the bundle go (default: \${XDG_CONFIG_HOME:-~/.config}/aigw-proxy)"

handle_option() {
	case $1 in
	--login) LOGIN=1 ;;
	--out-dir)
		need_value "$@"
		OUT_DIR=${2%/}
		SHIFT=2
		;;
	*) return 1 ;;
	esac
}

parse_args "$@"
need_cmd security "this script is for macOS (security(1) manages its keychains)"
obtain_ca
[ -n "$OUT_DIR" ] || OUT_DIR=$(user_config_dir)

if [ "$LOGIN" = 1 ]; then
	keychain=$HOME/Library/Keychains/login.keychain-db
	add=(security add-trusted-cert -r trustRoot -k "$keychain" "$CA_ROOT")
else
	keychain=/Library/Keychains/System.keychain
	add=(security add-trusted-cert -d -r trustRoot -k "$keychain" "$CA_ROOT")
	[ "$(id -u)" = 0 ] || add=(sudo "${add[@]}")
fi
sha1=$(openssl x509 -in "$CA_ROOT" -noout -fingerprint -sha1 | sed 's/^.*=//; s/://g')
if security find-certificate -a -Z "$keychain" 2>/dev/null | grep -qi "SHA-1 hash: *$sha1"; then
	say "already trusted: $keychain holds the CA"
else
	run "${add[@]}" || die "security add-trusted-cert failed (wrong password, or no admin rights? try --login)"
fi

put_file "$CA_ROOT" "$OUT_DIR/aigw-ca.pem"
base=$(system_bundle)
[ -n "$base" ] || die "no system CA bundle found (/etc/ssl/cert.pem) to build the SSL_CERT_FILE bundle from"
make_bundle "$base" "$OUT_DIR/ca-bundle.pem"
print_env "$OUT_DIR/aigw-ca.pem" "$OUT_DIR/ca-bundle.pem"
