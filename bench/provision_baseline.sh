#!/usr/bin/env bash
# Provision devices the way a shell script would, with pkcs11-tool and openssl only: the
# baseline bench/issue.py compares `devid device provision --batch` against.
#
# Per device, in sequence (what devid does for one device, one tool call at a time):
#   1. pkcs11-tool --keypairgen --key-type EC:prime256v1   key pair on the device token
#   2. openssl req -engine pkcs11 -keyform engine           CSR signed on the token (libp11)
#   3. openssl x509 -req -CA ... -CAkey ...                 certificate from the file CA key
#   4. cat                                                  chain.pem (certificate + issuer)
#   5. openssl x509 -outform DER                            DER for pkcs11-tool
#   6. pkcs11-tool --write-object --type cert --id ...      certificate beside the key
#
# Usage: provision_baseline.sh --token LABEL --ca-cert PEM --ca-key PEM --out DIR \
#            --count N [--prefix ID_PREFIX] [--module PATH] [--engine PATH]
# The user PIN comes from DEVID_PKCS11_PIN; SoftHSM's config from SOFTHSM2_CONF (both must be
# set). The script never prints the PIN; it does pass it to pkcs11-tool on the command line
# and inside the pkcs11: URI, as such scripts do (fine for a benchmark token, not for a real one).
set -euo pipefail

module=/usr/lib/softhsm/libsofthsm2.so
engine=/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so
prefix=shell
token="" ca_cert="" ca_key="" out="" count=""

usage() { echo "usage: $0 --token LABEL --ca-cert PEM --ca-key PEM --out DIR --count N" \
    "[--prefix P] [--module PATH] [--engine PATH]" >&2; exit 2; }

while (($#)); do
    case "$1" in
        --token) token=$2 ;;
        --ca-cert) ca_cert=$2 ;;
        --ca-key) ca_key=$2 ;;
        --out) out=$2 ;;
        --count) count=$2 ;;
        --prefix) prefix=$2 ;;
        --module) module=$2 ;;
        --engine) engine=$2 ;;
        *) usage ;;
    esac
    shift 2 || usage
done
[[ -n $token && -n $ca_cert && -n $ca_key && -n $out && $count =~ ^[0-9]+$ ]] || usage
: "${DEVID_PKCS11_PIN:?set DEVID_PKCS11_PIN to the token user PIN}"
: "${SOFTHSM2_CONF:?set SOFTHSM2_CONF to the SoftHSM2 config}"
for tool in pkcs11-tool openssl; do
    command -v "$tool" >/dev/null || { echo "$0: $tool not found (apt-get install" \
        "$([[ $tool == openssl ]] && echo openssl || echo opensc))" >&2; exit 3; }
done
[[ -f $engine ]] || { echo "$0: $engine not found (apt-get install libengine-pkcs11-openssl)" >&2; exit 3; }

pin=$DEVID_PKCS11_PIN
mkdir -p "$out"
conf=$out/openssl.cnf
cat >"$conf" <<EOF
openssl_conf = openssl_init

[openssl_init]
engines = engine_section

[engine_section]
pkcs11 = pkcs11_section

[pkcs11_section]
engine_id = pkcs11
dynamic_path = $engine
MODULE_PATH = $module
init = 0

[req]
distinguished_name = req_dn

[req_dn]
EOF
serial_file=$out/ca.srl
# The tools' chatter ("Engine pkcs11 set", "Certificate request self-signature ok") goes to a
# log; when a step fails, its tail is shown on the original stderr.
log=$out/baseline.log
exec 3>&2 2>"$log"
trap 'echo "$0: device ${device:-?}: a step failed; see $log:" >&3; tail -n 5 "$log" >&3' ERR
p11=(pkcs11-tool --module "$module" --token-label "$token" --login --pin "$pin")

for ((i = 0; i < count; i++)); do
    device=$prefix-$i
    printf -v id '%s%08x' b0 "$i"
    dir=$out/$device
    mkdir -p "$dir"
    printf '%s\n' \
        "[v3]" \
        "basicConstraints = critical, CA:FALSE" \
        "keyUsage = critical, digitalSignature" \
        "extendedKeyUsage = clientAuth" \
        "subjectKeyIdentifier = hash" \
        "authorityKeyIdentifier = keyid" \
        "subjectAltName = URI:urn:devid:$device, DNS:$device" >"$dir/ext.cnf"

    "${p11[@]}" --keypairgen --key-type EC:prime256v1 --id "$id" --label "device-$device" \
        --usage-sign >/dev/null
    # The engine config only for the step that uses the token: loaded globally, libp11 takes
    # over EC operations and `openssl x509` could no longer sign with the file CA key.
    OPENSSL_CONF=$conf openssl req -new -engine pkcs11 -keyform engine \
        -key "pkcs11:token=$token;object=device-$device;type=private;pin-value=$pin" \
        -subj "/CN=$device" -sha256 -out "$dir/csr.pem"
    openssl x509 -req -in "$dir/csr.pem" -CA "$ca_cert" -CAkey "$ca_key" \
        -CAserial "$serial_file" -CAcreateserial -days 365 -sha256 \
        -extfile "$dir/ext.cnf" -extensions v3 -out "$dir/cert.pem"
    cat "$dir/cert.pem" "$ca_cert" >"$dir/chain.pem"
    openssl x509 -in "$dir/cert.pem" -outform DER -out "$dir/cert.der"
    "${p11[@]}" --write-object "$dir/cert.der" --type cert --id "$id" \
        --label "device-$device" >/dev/null
done
echo "provisioned $count devices into $out"
