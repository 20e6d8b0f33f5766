#!/usr/bin/env bash
# Makes throwaway TLS certificates for tests and demos in DIR (default: a new temporary
# directory, printed):
#   ca.pem / ca.key                a certificate authority
#   server.pem / server.key        localhost, example.test, 127.0.0.1, ::1 — signed by the CA
#   other.pem / other.key          other.test (a second name, for SNI) — signed by the CA
#   client.pem / client.key        a client certificate (CN gnet-client) — signed by the CA
#   expired.pem / expired.key      localhost, valid only in January 2020 — signed by the CA
#   selfsigned.pem / selfsigned.key  localhost, self-signed (`openssl req -x509`)
#   server-encrypted.key           server.key encrypted (AES-256) with the passphrase in
#                                  server-encrypted.pass
# Keys are EC P-256, unencrypted but for server-encrypted.key. Never use these outside tests.
set -euo pipefail
dir=${1:-$(mktemp -d /tmp/gnet-tls.XXXXXX)}
mkdir -p "$dir"
cd "$dir"
quiet() { "$@" >/dev/null 2>&1 || { echo "tls-certs: failed: $*" >&2; "$@"; exit 1; }; }
key() { quiet openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }

key ca.key
quiet openssl req -x509 -new -key ca.key -subj "/CN=gnet test CA" -days 3650 -out ca.pem \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"

# sign NAME SUBJECT SAN [EXTRA openssl-x509 args...]
sign() {
    local name=$1 subject=$2 san=$3
    shift 3
    key "$name.key"
    quiet openssl req -new -key "$name.key" -subj "$subject" -out "$name.csr"
    printf 'basicConstraints=CA:FALSE\n%s\n' "$san" >"$name.ext"
    quiet openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
        -extfile "$name.ext" -out "$name.pem" "$@"
    rm -f "$name.csr" "$name.ext"
}
sign server "/CN=localhost" "subjectAltName=DNS:localhost,DNS:example.test,IP:127.0.0.1,IP:::1"
sign other "/CN=other.test" "subjectAltName=DNS:other.test"
sign client "/CN=gnet-client" "extendedKeyUsage=clientAuth"

# Expired: `openssl ca` takes explicit dates (x509 -req does not, in OpenSSL 3.0).
key expired.key
quiet openssl req -new -key expired.key -subj "/CN=localhost" -out expired.csr
mkdir -p ca-db
: >ca-db/index.txt
printf '[ca]\ndefault_ca=test\n[test]\ndatabase=ca-db/index.txt\nnew_certs_dir=ca-db\nserial=ca-db/serial\ndefault_md=sha256\npolicy=any\ncopy_extensions=none\nx509_extensions=ext\n[any]\ncommonName=supplied\n[ext]\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n' >ca.cnf
echo 1000 >ca-db/serial
quiet openssl ca -batch -config ca.cnf -cert ca.pem -keyfile ca.key -in expired.csr -out expired.pem \
    -startdate 20200101000000Z -enddate 20200201000000Z -notext
rm -rf expired.csr ca.cnf ca-db ca.srl

key selfsigned.key
quiet openssl req -x509 -new -key selfsigned.key -subj "/CN=localhost" -days 825 -out selfsigned.pem \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1"
printf 'gnet-test-passphrase' >server-encrypted.pass
quiet openssl pkey -in server.key -aes256 -passout file:server-encrypted.pass -out server-encrypted.key
echo "$dir"
