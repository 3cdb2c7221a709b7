#!/usr/bin/env bash
# Trust the aigw-proxy CA in a Java keystore (keytool), then print the agents' environment lines.
# certs/trust-java.sh --help for the options.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "$0")/common.sh"

KEYSTORE=""
STOREPASS=${AIGW_KEYSTORE_PASS:-changeit}
SCRIPT_USAGE="
Import the aigw-proxy CA into a Java keystore with keytool (alias = --name), for JVM tools (IDEs, Gradle, Maven)
that go through the proxy. Default: the JDK's own cacerts (keytool -cacerts, Java 9+; often needs sudo). On
Debian/Ubuntu with ca-certificates-java, trust-debian.sh already feeds /etc/ssl/certs/java/cacerts.

  --keystore FILE     this keystore instead (created if missing)
  --storepass PASS    its password (default: \$AIGW_KEYSTORE_PASS, else changeit)"

handle_option() {
	case $1 in
	--keystore)
		need_value "$@"
		KEYSTORE=$2
		SHIFT=2
		;;
	--storepass)
		need_value "$@"
		STOREPASS=$2
		SHIFT=2
		;;
	*) return 1 ;;
	esac
}

parse_args "$@"
export AIGW_KEYSTORE_PASS=$STOREPASS # keytool reads it from there (-storepass:env), not from its command line
keytool=keytool
if [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/keytool" ]; then
	keytool=$JAVA_HOME/bin/keytool
fi
need_cmd "$keytool" "no Java here (install a JDK or set JAVA_HOME); the agents are not Java: see the other certs/ scripts"
obtain_ca

if [ -n "$KEYSTORE" ]; then
	store=(-keystore "$KEYSTORE")
	where=$KEYSTORE
else
	store=(-cacerts)
	where="the JDK's cacerts"
fi
if "$keytool" -exportcert -rfc -alias "$NAME" "${store[@]}" -storepass:env AIGW_KEYSTORE_PASS >"$WORKDIR/have.pem" 2>/dev/null; then
	if openssl x509 -in "$WORKDIR/have.pem" -outform PEM 2>/dev/null | cmp -s - "$CA_ROOT"; then
		say "already trusted: $where holds the CA as '$NAME'"
		print_env "" ""
		exit 0
	fi
	say "$where holds another certificate as '$NAME' (an older CA?): replacing it"
	run "$keytool" -delete -alias "$NAME" "${store[@]}" -storepass:env AIGW_KEYSTORE_PASS >&2 ||
		die "keytool could not update $where (permission denied? run with sudo, or pass --keystore)"
fi
run "$keytool" -importcert -noprompt -trustcacerts -alias "$NAME" -file "$CA_ROOT" "${store[@]}" \
	-storepass:env AIGW_KEYSTORE_PASS >&2 ||
	die "keytool could not import into $where (permission denied? wrong --storepass? run with sudo, or pass --keystore)"
print_env "" ""
