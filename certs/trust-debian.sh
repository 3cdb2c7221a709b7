#!/usr/bin/env bash
# Trust the aigw-proxy CA in the OS store on Debian/Ubuntu, then print the agents' environment lines.
# certs/trust-debian.sh --help for the options.
set -euo pipefail
ORIG_ARGS=$*
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "$0")/common.sh"

PREFIX=""
SCRIPT_USAGE="
Trust the aigw-proxy CA in the OS store on Debian/Ubuntu: the CA goes to /usr/local/share/ca-certificates and
update-ca-certificates adds it to /etc/ssl/certs/ca-certificates.crt (OpenSSL, curl, Python and Codex with
SSL_CERT_FILE; Java too when ca-certificates-java is installed). Needs root (sudo).

  --prefix DIR        a system root at DIR instead of /: DIR/usr/local/share/ca-certificates,
                      DIR/etc/ssl/certs/ca-certificates.crt, DIR/etc/ca-certificates.conf, ... (images, tests)"

handle_option() {
	case $1 in
	--prefix)
		need_value "$@"
		PREFIX=${2%/}
		SHIFT=2
		;;
	*) return 1 ;;
	esac
}

parse_args "$@"
need_cmd update-ca-certificates "install Debian's ca-certificates package (apt-get install ca-certificates)"
if [ -z "$PREFIX" ] && [ "$DRY_RUN" = 0 ] && [ "$(id -u)" != 0 ]; then
	die "the system store needs root: sudo $0 $ORIG_ARGS   (or --dry-run to see what it would do)"
fi
obtain_ca

local_dir=$PREFIX/usr/local/share/ca-certificates
etc_dir=$PREFIX/etc/ssl/certs
bundle=$etc_dir/ca-certificates.crt
target=$local_dir/$NAME.crt # update-ca-certificates takes only *.crt files (PEM inside)

put_file "$CA_ROOT" "$target"
if [ "$CHANGED" = 1 ] || ! bundle_has "$bundle" "$CA_ROOT"; then
	relocate=()
	if [ -n "$PREFIX" ]; then
		run mkdir -p "$etc_dir" "$PREFIX/usr/share/ca-certificates"
		[ -e "$PREFIX/etc/ca-certificates.conf" ] || run touch "$PREFIX/etc/ca-certificates.conf"
		relocate=(--certsconf "$PREFIX/etc/ca-certificates.conf" --certsdir "$PREFIX/usr/share/ca-certificates"
			--localcertsdir "$local_dir" --etccertsdir "$etc_dir" --hooksdir "$PREFIX/etc/ca-certificates/update.d")
	fi
	run update-ca-certificates ${relocate[@]+"${relocate[@]}"} >&2
	if [ "$DRY_RUN" = 0 ] && ! bundle_has "$bundle" "$CA_ROOT"; then
		die "update-ca-certificates ran, but $bundle does not hold the CA"
	fi
else
	say "already trusted: $bundle holds the CA"
fi
print_env "$target" "$bundle"
