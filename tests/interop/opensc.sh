#!/usr/bin/env bash
# Interop: OpenSC's PKCS#11 module (opensc-pkcs11.so) and Yubico's ykcs11 with pkcs11-tool
# against `tessera vcard serve` through the lab's pcscd + vpcd reader. The card is populated
# here with yubico-piv-tool: 9A ECCP256 and 9C RSA2048, each with a self-signed certificate.
# Run by pkg/scripts/test-all.sh; by hand:
#   bash pkg/scripts/pcsc-lab.sh up /tmp/lab && . /tmp/lab/env
#   TESSERA_BIN=$PWD/target/release/tessera LAB=/tmp/lab bash tests/interop/opensc.sh
set -uo pipefail
. "$(dirname "$0")/lib/common.bash"

PIN=123456
CARD="$LAB/opensc.card"
# module paths as the packages install them (dpkg -L), with Debian's amd64 paths as fallback
OPENSC_MOD=${OPENSC_MODULE:-$(dpkg -L opensc-pkcs11 2>/dev/null | grep -m1 '/opensc-pkcs11\.so$' || true)}
OPENSC_MOD=${OPENSC_MOD:-/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so}
YKCS11_MOD=${YKCS11_MODULE:-$(dpkg -L ykcs11 2>/dev/null | grep -m1 '/libykcs11\.so$' || true)}
YKCS11_MOD=${YKCS11_MOD:-/usr/lib/x86_64-linux-gnu/libykcs11.so}

Y() { yubico-piv-tool -r "$READER" "$@"; }
P() { pkcs11-tool --module "$OPENSC_MOD" "$@"; }
YK() { pkcs11-tool --module "$YKCS11_MOD" "$@"; }

check "OpenSC PKCS#11 module present ($OPENSC_MOD)" test -r "$OPENSC_MOD"
check "ykcs11 module present ($YKCS11_MOD)" test -r "$YKCS11_MOD"

rm -f "$CARD" "$CARD".*
expect_ok "tessera vcard init (serial 1000002)" "$TESSERA_BIN" vcard init "$CARD" --serial 1000002
start_card "$CARD" || exit 1

# ---- populate with yubico-piv-tool ---------------------------------------------------------
gate "yubico-piv-tool connects to the card (SELECT PIV answered)" Y -a version
populate() { # SLOT ALG
  local s=$1 alg=$2
  expect_grep "populate: generate $alg in $s" 'Successfully generated a new private key' \
    Y -a generate -s "$s" -A "$alg" -o "$WORK/pub$s.pem"
  selfsign "$s" "$alg" "$WORK/pub$s.pem" "/CN=Tessera OpenSC $s/" "$WORK/cert$s.pem"
  expect_grep "populate: import-certificate $s" 'Successfully imported a new certificate' \
    Y -a import-certificate -s "$s" -i "$WORK/cert$s.pem"
  # the verifying key comes from the certificate, as a relying party would take it
  openssl x509 -in "$WORK/cert$s.pem" -noout -pubkey >"$WORK/certpub$s.pem" 2>/dev/null
}
populate 9a ECCP256
populate 9c RSA2048
head -c 3000 /dev/urandom >"$WORK/data"

# ---- OpenSC ----------------------------------------------------------------------------------
expect_grep "opensc: -L shows the token in '$READER 00 00'" "token label" P -L
expect_grep "opensc: -L names the reader" "$READER 00 00" P -L
# objects_have WHAT REGEX...: $OUT (pkcs11-tool -O output, flattened to one line with single
# spaces) matches every REGEX; "[^;]*" stays inside one object (each header has a ';')
objects_have() {
  local what=$1 flat re missing=""
  shift
  flat="$(printf '%s\n' "$OUT" | tr '\n\t' '  ' | tr -s ' ') "
  for re in "$@"; do
    printf '%s' "$flat" | grep -Eq -- "$re" || missing="$missing /$re/"
  done
  if [ "$RC" -eq 0 ] && [ -z "$missing" ]; then ok "$what"; else notok "$what (exit $RC; missing:$missing)" "$OUT"; fi
}
CERT_9A='Certificate Object; type = X.509 cert label: (X.509 )?Certificate for PIV Authentication subject: DN: CN ?= ?Tessera OpenSC 9a [^;]*ID: 01 '
CERT_9C='Certificate Object; type = X.509 cert label: (X.509 )?Certificate for Digital Signature subject: DN: CN ?= ?Tessera OpenSC 9c [^;]*ID: 02 '
PUB_9A='Public Key Object; EC EC_POINT 256 bits [^;]*ID: 01 '
PUB_9C='Public Key Object; RSA 2048 bits [^;]*ID: 02 '
PRIV_9A='Private Key Object; EC [^;]*ID: 01 '
PRIV_9C='Private Key Object; RSA [^;]*ID: 02 '

run P -O
objects_have "opensc: -O lists the certificates 9A (ID 01) and 9C (ID 02)" "$CERT_9A" "$CERT_9C"
objects_have "opensc: -O lists the public keys 9A (EC P-256, ID 01) and 9C (RSA 2048, ID 02)" "$PUB_9A" "$PUB_9C"
run P -O --login --pin "$PIN"
objects_have "opensc: -O --login lists the private keys 9A (EC, ID 01) and 9C (RSA, ID 02)" "$PRIV_9A" "$PRIV_9C"

rm -f "$WORK/sig-ec.der" "$WORK/sig-rsa.bin"
expect_ok "opensc: login + sign ECDSA-SHA256 with 9A (ID 01)" \
  P --login --pin "$PIN" --sign --mechanism ECDSA-SHA256 --id 01 --signature-format openssl \
  -i "$WORK/data" -o "$WORK/sig-ec.der"
expect_grep "opensc: ECDSA-SHA256 signature verifies with the certificate's key" 'Verified OK' \
  openssl dgst -sha256 -verify "$WORK/certpub9a.pem" -signature "$WORK/sig-ec.der" "$WORK/data"
expect_ok "opensc: login + sign SHA256-RSA-PKCS with 9C (ID 02, context-specific login)" \
  P --login --pin "$PIN" --sign --mechanism SHA256-RSA-PKCS --id 02 \
  -i "$WORK/data" -o "$WORK/sig-rsa.bin"
expect_grep "opensc: SHA256-RSA-PKCS signature verifies with the certificate's key" 'Verified OK' \
  openssl dgst -sha256 -verify "$WORK/certpub9c.pem" -signature "$WORK/sig-rsa.bin" "$WORK/data"
expect_fail "opensc: signing with a wrong PIN fails" \
  P --login --pin 654321 --sign --mechanism ECDSA-SHA256 --id 01 -i "$WORK/data" -o "$WORK/sig-bad.der"
expect_grep "the wrong PIN through OpenSC spent exactly one try (status: 2 left)" \
  'PIN tries left:[[:space:]]+2$' Y -a status
expect_grep "a right PIN resets the counter" 'Successfully verified PIN' Y -a verify-pin -P "$PIN"

# ---- ykcs11 ----------------------------------------------------------------------------------
run YK -O --login --pin "$PIN"
objects_have "ykcs11: -O lists the certificates 9A (ID 01) and 9C (ID 02)" "$CERT_9A" "$CERT_9C"
objects_have "ykcs11: -O lists the public keys (ID 01, 02)" "$PUB_9A" "$PUB_9C"
objects_have "ykcs11: -O lists the private keys (EC ID 01, RSA ID 02)" "$PRIV_9A" "$PRIV_9C"
rm -f "$WORK/yk-sig-ec.der"
expect_ok "ykcs11: login + sign ECDSA-SHA256 with ID 01" \
  YK --login --pin "$PIN" --sign --mechanism ECDSA-SHA256 --id 01 --signature-format openssl \
  -i "$WORK/data" -o "$WORK/yk-sig-ec.der"
expect_grep "ykcs11: ECDSA-SHA256 signature verifies with the certificate's key" 'Verified OK' \
  openssl dgst -sha256 -verify "$WORK/certpub9a.pem" -signature "$WORK/yk-sig-ec.der" "$WORK/data"

stop_card
