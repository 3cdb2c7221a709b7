#!/usr/bin/env bash
# Trust the aigw-proxy CA in the OS store on RHEL/Fedora/CentOS/Rocky/Alma, then print the agents' environment
# lines. certs/trust-rhel.sh --help for the options.
set -euo pipefail
ORIG_ARGS=$*
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "$0")/common.sh"

SCRIPT_USAGE="
Trust the aigw-proxy CA in the OS store on RHEL/Fedora: the CA goes to /etc/pki/ca-trust/source/anchors and
\`update-ca-trust extract\` adds it to /etc/pki/tls/certs/ca-bundle.crt and the Java/OpenSSL stores derived from
it (OpenSSL, curl, Python and Codex with SSL_CERT_FILE, Java). Needs root (sudo)."

parse_args "$@"
need_cmd update-ca-trust "install the ca-certificates package (dnf install ca-certificates)"
if [ "$DRY_RUN" = 0 ] && [ "$(id -u)" != 0 ]; then
	die "the system store needs root: sudo $0 $ORIG_ARGS   (or --dry-run to see what it would do)"
fi
obtain_ca

target=/etc/pki/ca-trust/source/anchors/$NAME.pem
bundle=/etc/pki/tls/certs/ca-bundle.crt

put_file "$CA_ROOT" "$target"
if [ "$CHANGED" = 1 ] || ! bundle_has "$bundle" "$CA_ROOT"; then
	run update-ca-trust extract >&2
	if [ "$DRY_RUN" = 0 ] && ! bundle_has "$bundle" "$CA_ROOT"; then
		die "update-ca-trust ran, but $bundle does not hold the CA"
	fi
else
	say "already trusted: $bundle holds the CA"
fi
print_env "$target" "$bundle"
