#!/usr/bin/env bash
# Make the CA that every aigw-proxy replica signs with, once, for deploy/compose-replicas.yml or the Kubernetes
# Secret (deploy/kubernetes/): every replica must present certificates from the same CA, the one clients trust.
#   bash deploy/ca/make-ca.sh [DIR]      # writes DIR/aigw-ca.pem (certificate) and DIR/aigw-ca-key.pem (key)
# DIR defaults to this directory (its .gitignore keeps the key out of git). Each replica imports the pair at start
# with `aigw-proxy ca init --cert … --key …`; give clients aigw-ca.pem to trust. RSA-2048 like the CA that
# aigw-proxy generates itself (the leaves it issues use the CA's key type). Strict TLS clients (Python 3.13's
# default context) need a critical basicConstraints, keyUsage and a subject key identifier: all set here.
set -euo pipefail
dir=${1:-$(dirname "$0")}
mkdir -p "$dir"
if [[ -e $dir/aigw-ca-key.pem ]]; then
  echo "error: $dir/aigw-ca-key.pem exists; remove it first to make a new CA (clients then must trust the new one)" >&2
  exit 1
fi
umask 077
openssl req -x509 -new -noenc -newkey rsa:2048 -sha256 -days 3650 \
  -subj "/O=aigw-proxy/CN=${AIGW_CA_NAME:-aigw-proxy replicas CA}" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -addext "subjectKeyIdentifier=hash" \
  -keyout "$dir/aigw-ca-key.pem" -out "$dir/aigw-ca.pem" 2>/dev/null
chmod 644 "$dir/aigw-ca.pem"
echo "wrote $dir/aigw-ca.pem (give it to clients) and $dir/aigw-ca-key.pem (secret)"
