#!/usr/bin/env bash
# Keep a copy of the aigw-proxy CA for Node (NODE_EXTRA_CA_CERTS) and print the agents' environment lines.
# certs/trust-node.sh --help for the options.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "$0")/common.sh"

OUT=""
SCRIPT_USAGE="
Write the aigw-proxy CA where NODE_EXTRA_CA_CERTS can point at it: Node adds it to its built-in roots (Claude
Code, Gemini CLI, Copilot CLI; OpenCode runs on Bun, which reads the same variable). No root needed.

  --out FILE          where the CA goes (default: \${XDG_CONFIG_HOME:-~/.config}/aigw-proxy/aigw-ca.pem)"

handle_option() {
	case $1 in
	--out)
		need_value "$@"
		OUT=$2
		SHIFT=2
		;;
	*) return 1 ;;
	esac
}

parse_args "$@"
obtain_ca
[ -n "$OUT" ] || OUT=$(user_config_dir)/aigw-ca.pem
put_file "$CA_ROOT" "$OUT"
print_env "$OUT" ""
