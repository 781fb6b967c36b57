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
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
OPENSC_MOD=${OPENSC_MODULE:-$(dpkg -L opensc-pkcs11 2>/dev/null | grep -m1 "/$multiarch/opensc-pkcs11.so\$" || true)}
OPENSC_MOD=${OPENSC_MOD:-/usr/lib/$multiarch/opensc-pkcs11.so}
YKCS11_MOD=${YKCS11_MODULE:-/usr/lib/$multiarch/libykcs11.so}

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
  expect_grep "populate: self-signed certificate for $s" 'Successfully generated a new self signed certificate' \
    Y -a verify-pin -P "$PIN" -a selfsign-certificate -s "$s" -S "/CN=Tessera OpenSC $s/" \
    -i "$WORK/pub$s.pem" -o "$WORK/cert$s.pem"
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
run P -O
OBJS=$OUT
if [ "$RC" -eq 0 ] &&
  printf '%s\n' "$OBJS" | tr '\n' ' ' | grep -Eq 'Certificate Object[^;]*;.*label:[[:space:]]+Certificate for PIV Authentication.*ID:[[:space:]]+01' &&
  printf '%s\n' "$OBJS" | tr '\n' ' ' | grep -Eq 'Certificate for Digital Signature.*ID:[[:space:]]+02'; then
  ok "opensc: -O lists the certificates 9A (ID 01) and 9C (ID 02)"
else
  notok "opensc: -O lists the certificates 9A (ID 01) and 9C (ID 02) (exit $RC)" "$OBJS"
fi
if printf '%s\n' "$OBJS" | grep -q 'Public Key Object; EC' && printf '%s\n' "$OBJS" | grep -q 'Public Key Object; RSA 2048'; then
  ok "opensc: -O lists the EC and RSA 2048 public keys"
else
  notok "opensc: -O lists the EC and RSA 2048 public keys" "$OBJS"
fi
run P -O --login --pin "$PIN"
if [ "$RC" -eq 0 ] && printf '%s\n' "$OUT" | grep -q 'Private Key Object; EC' &&
  printf '%s\n' "$OUT" | grep -q 'Private Key Object; RSA'; then
  ok "opensc: -O --login lists the EC and RSA private keys"
else
  notok "opensc: -O --login lists the EC and RSA private keys (exit $RC)" "$OUT"
fi

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
YOBJS=$(printf '%s\n' "$OUT" | tr '\n' ' ')
if [ "$RC" -eq 0 ] &&
  printf '%s' "$YOBJS" | grep -Eq 'Private Key Object; EC[^;]*label:[^;]*ID:[[:space:]]+01' &&
  printf '%s' "$YOBJS" | grep -Eq 'Private Key Object; RSA[^;]*label:[^;]*ID:[[:space:]]+02'; then
  ok "ykcs11: -O lists the EC private key (ID 01) and the RSA private key (ID 02)"
else
  notok "ykcs11: -O lists the EC private key (ID 01) and the RSA private key (ID 02) (exit $RC)" "$OUT"
fi
if [ "$RC" -eq 0 ] &&
  printf '%s' "$YOBJS" | grep -Eq 'Certificate Object[^;]*;.*ID:[[:space:]]+01' &&
  printf '%s' "$YOBJS" | grep -Eq 'Certificate Object[^;]*;.*ID:[[:space:]]+02'; then
  ok "ykcs11: -O lists the certificates (ID 01 and 02)"
else
  notok "ykcs11: -O lists the certificates (ID 01 and 02) (exit $RC)" "$OUT"
fi
rm -f "$WORK/yk-sig-ec.der"
expect_ok "ykcs11: login + sign ECDSA-SHA256 with ID 01" \
  YK --login --pin "$PIN" --sign --mechanism ECDSA-SHA256 --id 01 --signature-format openssl \
  -i "$WORK/data" -o "$WORK/yk-sig-ec.der"
expect_grep "ykcs11: ECDSA-SHA256 signature verifies with the certificate's key" 'Verified OK' \
  openssl dgst -sha256 -verify "$WORK/certpub9a.pem" -signature "$WORK/yk-sig-ec.der" "$WORK/data"

stop_card
