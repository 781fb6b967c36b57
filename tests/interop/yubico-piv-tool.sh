#!/usr/bin/env bash
# Interop: Debian's yubico-piv-tool (2.2.0) against `tessera vcard serve` through the lab's
# pcscd + vpcd reader. Run by pkg/scripts/test-all.sh; by hand:
#   bash pkg/scripts/pcsc-lab.sh up /tmp/lab && . /tmp/lab/env
#   TESSERA_BIN=$PWD/target/release/tessera LAB=/tmp/lab bash tests/interop/yubico-piv-tool.sh
#
# yubico-piv-tool -r NAME uses the first reader whose name contains NAME (case-insensitive)
# and holds a card: the lab's readers are "Yubico YubiKey Virtual 00 00" / "... 00 01".
set -uo pipefail
. "$(dirname "$0")/lib/common.bash"

PIN=123456
PUK=12345678
MGM_DEFAULT=010203040506070801020304050607080102030405060708
MGM_NEW=3f7a21c98e0b54d6a1c2e3f405162738495a6b7c8d9eafb0
CARD="$LAB/ykpt.card"

Y() { yubico-piv-tool -r "$READER" "$@"; }
tries_left() { # expect "PIN tries left: N" in status
  expect_grep "status reports PIN tries left: $1 ($2)" "PIN tries left:[[:space:]]+$1\$" Y -a status
}

rm -f "$CARD" "$CARD".*
expect_ok "tessera vcard init (serial 1000001)" "$TESSERA_BIN" vcard init "$CARD" --serial 1000001
start_card "$CARD" || exit 1

# ---- status, PIN -------------------------------------------------------------------------
gate "yubico-piv-tool connects to the card (SELECT PIV answered)" Y -a version
expect_grep "status shows serial 1000001" 'Serial Number:[[:space:]]+1000001' Y -a status
expect_grep "status shows a version" 'Version:[[:space:]]+[0-9]+\.[0-9]+\.[0-9]+' Y -a status
tries_left 3 "factory state"
expect_grep "version action answers" 'Application version [0-9]+\.[0-9]+\.[0-9]+ found' Y -a version
expect_grep "verify-pin with the factory PIN" 'Successfully verified PIN' Y -a verify-pin -P "$PIN"
expect_fail "verify-pin with a wrong PIN fails" Y -a verify-pin -P 654321
tries_left 2 "after one wrong PIN"
expect_grep "verify-pin with the right PIN after a wrong one" 'Successfully verified PIN' Y -a verify-pin -P "$PIN"
tries_left 3 "right PIN resets the counter"
expect_fail "wrong PIN 1/3" Y -a verify-pin -P 111111
expect_fail "wrong PIN 2/3" Y -a verify-pin -P 111112
tries_left 1 "after two wrong PINs"
expect_fail "wrong PIN 3/3" Y -a verify-pin -P 111113
tries_left 0 "after three wrong PINs"
expect_fail_grep "right PIN is refused once blocked" '[Bb]locked' Y -a verify-pin -P "$PIN"

# ---- PUK: unblock, change PIN, change PUK ----------------------------------------------
expect_grep "unblock-pin with the PUK" 'Successfully unblocked the pin code' \
  Y -a unblock-pin -P "$PUK" -N 111111
tries_left 3 "after unblock"
expect_grep "verify-pin with the PIN set by unblock" 'Successfully verified PIN' Y -a verify-pin -P 111111
expect_grep "change-pin 111111 -> 222222" 'Successfully changed the pin code' \
  Y -a change-pin -P 111111 -N 222222
expect_grep "verify-pin with the changed PIN" 'Successfully verified PIN' Y -a verify-pin -P 222222
expect_fail "the old PIN no longer verifies" Y -a verify-pin -P 111111
expect_grep "change-pin back to the factory PIN" 'Successfully changed the pin code' \
  Y -a change-pin -P 222222 -N "$PIN"
tries_left 3 "after change-pin"
expect_grep "change-puk 12345678 -> 87654321" 'Successfully changed the puk code' \
  Y -a change-puk -P "$PUK" -N 87654321
expect_fail_grep "the old PUK is refused (2 tries left)" '2 tries left' \
  Y -a change-puk -P "$PUK" -N "$PUK"
expect_grep "the new PUK works (change-puk to itself)" 'Successfully changed the puk code' \
  Y -a change-puk -P 87654321 -N 87654321
PUK=87654321

# ---- management key -----------------------------------------------------------------------
expect_grep "set-mgm-key to a new 3DES key (authenticated with the default key)" \
  'Successfully set new management key' Y --key="$MGM_DEFAULT" -a set-mgm-key -n "$MGM_NEW"
expect_fail_grep "the default management key is refused afterwards" 'Failed authentication' \
  Y --key="$MGM_DEFAULT" -a generate -s 9e -A ECCP256
K=(--key="$MGM_NEW")

# ---- key generation -----------------------------------------------------------------------
gen() { # SLOT ALG CURVE-OR-BITS-REGEX
  local s=$1 alg=$2 re=$3
  expect_grep "generate $alg in slot $s with the new management key" 'Successfully generated a new private key' \
    Y "${K[@]}" -a generate -s "$s" -A "$alg" -o "$WORK/pub$s.pem"
  expect_grep "slot $s public key is $alg" "$re" openssl pkey -pubin -in "$WORK/pub$s.pem" -noout -text
}
gen 9a ECCP256 'prime256v1'
gen 9c RSA2048 'Public-Key: \(2048 bit\)'
gen 9d ECCP384 'secp384r1'
gen 82 ECCP256 'prime256v1'

# ---- self-signed certificates, import, read back -------------------------------------------
cert_roundtrip() { # SLOT ALG PUBPEM
  local s=$1 alg=$2 pub=$3
  selfsign "$s" "$alg" "$pub" "/CN=Tessera interop $s/O=Tessera/" "$WORK/cert$s.pem"
  check "slot $s certificate carries the slot's public key" same_pubkey_cert_pub "$WORK/cert$s.pem" "$pub"
  expect_grep "slot $s certificate signature verifies (signed on the card)" ': OK$' \
    openssl verify -CAfile "$WORK/cert$s.pem" "$WORK/cert$s.pem"
  expect_grep "import-certificate into slot $s" 'Successfully imported a new certificate' \
    Y "${K[@]}" -a import-certificate -s "$s" -i "$WORK/cert$s.pem"
  openssl x509 -in "$WORK/cert$s.pem" -outform DER -out "$WORK/cert$s.der" 2>/dev/null
  rm -f "$WORK/read$s.der"
  expect_ok "read-certificate -s $s -K DER" Y -a read-certificate -s "$s" -K DER -o "$WORK/read$s.der"
  check "read-certificate -s $s returns the imported certificate byte for byte" \
    cmp "$WORK/cert$s.der" "$WORK/read$s.der"
}
cert_roundtrip 9a ECCP256 "$WORK/pub9a.pem"
cert_roundtrip 9c RSA2048 "$WORK/pub9c.pem"
cert_roundtrip 9d ECCP384 "$WORK/pub9d.pem"
cert_roundtrip 82 ECCP256 "$WORK/pub82.pem"
expect_grep "status lists the four certificates" \
  'Slot 9a:.*Slot 9c:.*Slot 9d:.*Slot 82:' sh -c "yubico-piv-tool -r '$READER' -a status | tr '\n' ' '"

# ---- signatures and decipher ------------------------------------------------------------------
expect_grep "test-signature slot 9a (ECCP256)" 'Successful ECDSA verification' \
  Y -a verify-pin -P "$PIN" -a test-signature -s 9a -i "$WORK/cert9a.pem"
expect_grep "test-signature slot 9c (RSA2048, PIN always)" 'Successful RSA verification' \
  Y -a verify-pin -P "$PIN" -a test-signature -s 9c -i "$WORK/cert9c.pem"
expect_grep "test-signature slot 82 (ECCP256, retired slot)" 'Successful ECDSA verification' \
  Y -a verify-pin -P "$PIN" -a test-signature -s 82 -i "$WORK/cert82.pem"
expect_grep "test-signature slot 9a, certificate on stdin" 'Successful ECDSA verification' \
  sh -c "yubico-piv-tool -r '$READER' -a verify-pin -P '$PIN' -a test-signature -s 9a < '$WORK/cert9a.pem'"
# (the host library refuses a digest longer than the curve: SHA384 goes with P-384 only)
expect_grep "test-signature slot 9d (ECCP384, SHA384)" 'Successful ECDSA verification' \
  Y -a verify-pin -P "$PIN" -a test-signature -s 9d -H SHA384 -i "$WORK/cert9d.pem"
expect_grep "test-decipher slot 9d (ECDH P-384)" 'Successfully performed ECDH exchange with card' \
  Y -a verify-pin -P "$PIN" -a test-decipher -s 9d -i "$WORK/cert9d.pem"
expect_fail "test-signature slot 9a without the PIN is refused" \
  Y -a test-signature -s 9a -i "$WORK/cert9a.pem"

# ---- import-key from PEM (RSA and EC) -------------------------------------------------------
check "openssl genpkey RSA 2048 (PEM)" openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/rsa.pem"
check "openssl genpkey EC P-256 (PEM)" openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/ec.pem"
openssl pkey -in "$WORK/rsa.pem" -pubout -out "$WORK/pub83.pem" 2>/dev/null
openssl pkey -in "$WORK/ec.pem" -pubout -out "$WORK/pub9e.pem" 2>/dev/null
expect_grep "import-key RSA2048 PEM into slot 83" 'Successfully imported a new private key' \
  Y "${K[@]}" -a import-key -s 83 -i "$WORK/rsa.pem"
expect_grep "import-key EC P-256 PEM into slot 9e" 'Successfully imported a new private key' \
  Y "${K[@]}" -a import-key -s 9e -i "$WORK/ec.pem"
cert_roundtrip 83 RSA2048 "$WORK/pub83.pem"
cert_roundtrip 9e ECCP256 "$WORK/pub9e.pem"
expect_grep "test-signature slot 83 (imported RSA key)" 'Successful RSA verification' \
  Y -a verify-pin -P "$PIN" -a test-signature -s 83 -i "$WORK/cert83.pem"
expect_grep "test-signature slot 9e (imported EC key)" 'Successful ECDSA verification' \
  Y -a verify-pin -P "$PIN" -a test-signature -s 9e -i "$WORK/cert9e.pem"

# ---- the state survives a restart of the card server ------------------------------------------
stop_card
start_card "$CARD" || exit 1
rm -f "$WORK/again9c.der"
expect_ok "read-certificate -s 9c after a server restart" Y -a read-certificate -s 9c -K DER -o "$WORK/again9c.der"
check "certificate 9c unchanged after a server restart" cmp "$WORK/cert9c.der" "$WORK/again9c.der"
expect_grep "the new management key still holds after a restart" 'Successfully generated a new private key' \
  Y "${K[@]}" -a generate -s 84 -A ECCP256 -o "$WORK/pub84.pem"

# ---- block PIN and PUK, then reset ----------------------------------------------------------
for i in 1 2 3; do expect_fail "wrong PIN $i/3 before reset" Y -a verify-pin -P 99999$i; done
tries_left 0 "PIN blocked"
expect_fail "reset is refused while the PUK is not blocked" Y -a reset
for i in 1 2 3; do
  expect_fail "wrong PUK $i/3 (unblock-pin)" Y -a unblock-pin -P 0000000$i -N 123456
done
expect_fail_grep "the right PUK is refused once blocked" '[Bb]locked' Y -a unblock-pin -P "$PUK" -N 123456
expect_grep "reset with PIN and PUK blocked" 'Successfully reset the application' Y -a reset
expect_grep "factory PIN verifies after reset" 'Successfully verified PIN' Y -a verify-pin -P 123456
tries_left 3 "after reset"
run Y -a status
if [ "$RC" -eq 0 ] && ! printf '%s\n' "$OUT" | grep >/dev/null '^Slot '; then
  ok "status shows no certificates after reset"
else
  notok "status shows no certificates after reset (exit $RC)" "$OUT"
fi
expect_grep "factory PUK works after reset" 'Successfully changed the puk code' \
  Y -a change-puk -P 12345678 -N 12345678
expect_grep "factory management key works after reset" 'Successfully generated a new private key' \
  Y --key="$MGM_DEFAULT" -a generate -s 9a -A ECCP256 -o "$WORK/pub9a-after-reset.pem"
expect_fail "the changed management key is refused after reset" \
  Y --key="$MGM_NEW" -a generate -s 9a -A ECCP256 -o "$WORK/pub9a-after-reset2.pem"

stop_card
