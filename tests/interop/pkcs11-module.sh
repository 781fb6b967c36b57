#!/usr/bin/env bash
# Interop: OpenSC's pkcs11-tool driving libtessera_pkcs11.so against `tessera vcard serve`
# through the lab's pcscd + vpcd reader: slots, mechanisms, key generation (RSA 2048, P-256,
# P-384), certificates issued by a test CA and written through the module, every signature
# mechanism pkcs11-tool offers (each signature verified by openssl with the certificate's
# key), RSA decryption (PKCS#1 v1.5, OAEP, raw), ECDH, PIN change, PUK change, unblock with
# the PUK as SO PIN, and the CKA_IDs/labels beside OpenSC's own module on the same card.
# Run by pkg/scripts/test-all.sh; by hand:
#   bash pkg/scripts/pcsc-lab.sh up /tmp/lab && . /tmp/lab/env
#   TESSERA_BIN=$PWD/target/release/tessera LAB=/tmp/lab bash tests/interop/pkcs11-module.sh
set -uo pipefail
. "$(dirname "$0")/lib/common.bash"
# This script exercises the opt-in card-auth-token setting: each card's card-authentication key
# (9E) on a login-free token of its own, which Firefox needs for TLS with 9E without a PIN.
export TESSERA_CARD_AUTH_TOKEN=1
. "$(dirname "$0")/lib/p11.bash"

PIN=123456
PUK=12345678
SERIAL=1000003
LABEL="Tessera PIV #$SERIAL"
CARD="$LAB/pkcs11-module.card"
D=$WORK

p11_module_checks
check "OpenSC PKCS#11 module present ($OPENSC_MOD)" test -r "$OPENSC_MOD"

rm -f "$CARD" "$CARD".*
expect_ok "tessera vcard init (serial $SERIAL)" "$TESSERA_BIN" vcard init "$CARD" --serial "$SERIAL"
start_card "$CARD" || exit 1

# ---- slots and mechanisms ------------------------------------------------------------------
gate "-L shows the token '$LABEL'" T -L
expect_grep "-L: token label is '$LABEL'" "token label +: $LABEL\$" T -L
expect_grep "-L: the token sits in the lab reader '$READER 00 00'" "Slot 0 \(0x0\): $READER 00 00" T -L
expect_grep "-L: serial number $SERIAL" "serial num +: $SERIAL\$" T -L
expect_grep "-L: factory PIN flagged 'user PIN to be changed'" 'token flags.*user PIN to be changed' T -L
run T -M
for m in ECDSA ECDSA-SHA256 ECDSA-SHA384 RSA-PKCS RSA-PKCS-PSS RSA-PKCS-OAEP RSA-X-509 \
  SHA256-RSA-PKCS SHA256-RSA-PKCS-PSS ECDH1-DERIVE RSA-PKCS-KEY-PAIR-GEN ECDSA-KEY-PAIR-GEN; do
  if [ "$RC" -eq 0 ] && printf '%s\n' "$OUT" | grep -Eq "^  $m, "; then ok "-M lists $m"
  else notok "-M lists $m (exit $RC)" "$OUT"; fi
done

# ---- key generation, certificates ------------------------------------------------------------
expect_grep "--keypairgen rsa:2048 --id 02 (9C)" 'Key pair generated' \
  T --login --pin "$PIN" --keypairgen --key-type rsa:2048 --id 02
expect_grep "--keypairgen EC:prime256v1 --id 01 (9A)" 'Key pair generated' \
  T --login --pin "$PIN" --keypairgen --key-type EC:prime256v1 --id 01
expect_grep "--keypairgen EC:secp384r1 --id 03 (9D)" 'Key pair generated' \
  T --login --pin "$PIN" --keypairgen --key-type EC:secp384r1 --id 03

gate "test CA created" p11_make_ca "$D"
declare -A KU=([01]="digitalSignature" [02]="digitalSignature,nonRepudiation,keyEncipherment"
  [03]="digitalSignature,keyAgreement")
for id in 01 02 03; do
  expect_ok "public key $id read through the module" p11_pubkey_pem "$id" "$D/gen$id.pem"
  expect_ok "test CA issues a certificate for key $id (keyUsage ${KU[$id]})" \
    p11_issue "$D" "$D/gen$id.pem" "/CN=Tessera pkcs11-module $id" "${KU[$id]}" "$D/cert$id.der"
  expect_grep "--write-object cert$id.der --type cert --id $id" 'Created certificate' \
    T --login --pin "$PIN" --write-object "$D/cert$id.der" --type cert --id "$id"
  # every verification below uses the certificate's key, as a relying party would
  openssl x509 -inform DER -in "$D/cert$id.der" -noout -pubkey >"$D/pub$id.pem" 2>/dev/null
  rm -f "$D/back$id.der"
  run T --read-object --type cert --id "$id" -o "$D/back$id.der"
  if [ "$RC" -eq 0 ] && cmp -s "$D/cert$id.der" "$D/back$id.der"; then
    ok "certificate $id read back byte-identical"
  else notok "certificate $id read back byte-identical (exit $RC)" "$OUT"; fi
done
# a certificate for a key that is not the one in the slot is refused
expect_fail "--write-object of a certificate whose key does not match slot 03 is refused" \
  T --login --pin "$PIN" --write-object "$D/cert01.der" --type cert --id 03

# ---- objects ---------------------------------------------------------------------------------
# objects_have WHAT REGEX...: the -O output in $OUT (flattened) matches every REGEX
objects_have() {
  local what=$1 flat re missing=""
  shift
  flat="$(printf '%s\n' "$OUT" | tr '\n\t' '  ' | tr -s ' ') "
  for re in "$@"; do
    printf '%s' "$flat" | grep -Eq -- "$re" || missing="$missing /$re/"
  done
  if [ "$RC" -eq 0 ] && [ -z "$missing" ]; then ok "$what"; else notok "$what (exit $RC; missing:$missing)" "$OUT"; fi
}
run T -O
objects_have "-O without login: 3 certificates (IDs 01 02 03, OpenSC labels)" \
  'Certificate Object; type = X.509 cert label: Certificate for PIV Authentication subject: DN: CN ?= ?Tessera pkcs11-module 01 [^;]*ID: 01 ' \
  'Certificate Object; type = X.509 cert label: Certificate for Digital Signature subject: DN: CN ?= ?Tessera pkcs11-module 02 [^;]*ID: 02 ' \
  'Certificate Object; type = X.509 cert label: Certificate for Key Management subject: DN: CN ?= ?Tessera pkcs11-module 03 [^;]*ID: 03 '
objects_have "-O without login: 3 public keys (EC 256 01, RSA 2048 02, EC 384 03)" \
  'Public Key Object; EC EC_POINT 256 bits [^;]*label: PIV AUTH pubkey ID: 01 ' \
  'Public Key Object; RSA 2048 bits label: SIGN pubkey ID: 02 ' \
  'Public Key Object; EC EC_POINT 384 bits [^;]*label: KEY MAN pubkey ID: 03 '
objects_have "-O without login: a CKO_PROFILE (CKP_PUBLIC_CERTIFICATES_TOKEN)" 'profile_id: CKP_PUBLIC_CERTIFICATES_TOKEN'
if printf '%s\n' "$OUT" | grep >/dev/null 'Private Key Object'; then
  notok "-O without login shows no private keys of 9A/9C/9D" "$OUT"
else ok "-O without login shows no private keys of 9A/9C/9D"; fi
run T -O --login --pin "$PIN"
objects_have "-O --login: 3 private keys with usage from the certificates" \
  'Private Key Object; EC label: PIV AUTH key ID: 01 Usage: sign ' \
  'Private Key Object; RSA label: SIGN key ID: 02 Usage: decrypt, sign[^;]* Access: always authenticate' \
  'Private Key Object; EC label: KEY MAN key ID: 03 Usage: sign, derive '
printf '%s\n' "$OUT" >"$D/ours.txt"

expect_grep "--test --login: 'No errors'" '^No errors' T --test --login --pin "$PIN"

# ---- signatures ------------------------------------------------------------------------------
head -c 1000 /dev/urandom >"$D/data"  # single-part C_Sign (pkcs11-tool reads 1025 at a time)
head -c 5000 /dev/urandom >"$D/big"   # multi-part C_SignUpdate/C_SignFinal
for h in sha1 sha224 sha256 sha384 sha512; do
  openssl dgst -"$h" -binary "$D/data" >"$D/data.$h"
done

# sign WHAT ID MECH IN OUT [pkcs11-tool options]: the module signs
sign() {
  local what=$1 id=$2 mech=$3 in=$4 out=$5
  shift 5
  rm -f "$out"
  run T --login --pin "$PIN" --sign --id "$id" -m "$mech" -i "$in" -o "$out" "$@"
  if [ "$RC" -eq 0 ] && [ -s "$out" ]; then return 0; fi
  notok "$what: pkcs11-tool --sign -m $mech --id $id $* (exit $RC)" "$OUT"
  return 1
}
# verified WHAT CMD...: CMD (an openssl verification) prints "Verified OK" or
# "Signature Verified Successfully"
verified() {
  local what=$1; shift
  run "$@"
  if [ "$RC" -eq 0 ] && printf '%s\n' "$OUT" | grep -Eq 'Verified OK|Signature Verified Successfully'; then
    ok "$what"
  else notok "$what (exit $RC: $*)" "$OUT"; fi
}

# ECDSA with both EC keys; hashing mechanisms give openssl's DER signature format
for id in 01 03; do
  for h in sha1 sha224 sha256 sha384 sha512; do
    m="ECDSA-$(echo "$h" | tr a-z A-Z)"
    sign "$m with key $id" "$id" "$m" "$D/data" "$D/sig" --signature-format openssl &&
      verified "$m with key $id verifies (openssl dgst -$h)" \
        openssl dgst -"$h" -verify "$D/pub$id.pem" -signature "$D/sig" "$D/data"
  done
  for h in sha256 sha384 sha512; do
    sign "ECDSA over a $h hash with key $id" "$id" ECDSA "$D/data.$h" "$D/sig" --signature-format openssl &&
      verified "ECDSA (raw) over a $h hash with key $id verifies (openssl pkeyutl)" \
        openssl pkeyutl -verify -pubin -inkey "$D/pub$id.pem" -in "$D/data.$h" -sigfile "$D/sig"
  done
  sign "ECDSA-SHA256 multi-part with key $id" "$id" ECDSA-SHA256 "$D/big" "$D/sig" --signature-format openssl &&
    verified "ECDSA-SHA256 multi-part (5000 bytes) with key $id verifies" \
      openssl dgst -sha256 -verify "$D/pub$id.pem" -signature "$D/sig" "$D/big"
done
# rs format (PKCS#11's own) is 2×field size
sign "ECDSA-SHA384 rs format with key 03" 03 ECDSA-SHA384 "$D/data" "$D/sig" &&
  check "ECDSA-SHA384 rs signature of the P-384 key is 96 bytes" test "$(stat -c %s "$D/sig")" -eq 96

# RSA (9C: CKA_ALWAYS_AUTHENTICATE, pkcs11-tool logs in CKU_CONTEXT_SPECIFIC before each)
for h in sha1 sha224 sha256 sha384 sha512; do
  m="$(echo "$h" | tr a-z A-Z)-RSA-PKCS"
  sign "$m" 02 "$m" "$D/data" "$D/sig" &&
    verified "$m verifies (openssl dgst -$h)" openssl dgst -"$h" -verify "$D/pub02.pem" -signature "$D/sig" "$D/data"
  m="$(echo "$h" | tr a-z A-Z)-RSA-PKCS-PSS"
  hl=$(stat -c %s "$D/data.$h")
  sign "$m" 02 "$m" "$D/data" "$D/sig" &&
    verified "$m (salt $hl) verifies (openssl dgst -$h, PSS)" openssl dgst -"$h" -verify "$D/pub02.pem" \
      -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:"$hl" -sigopt rsa_mgf1_md:"$h" \
      -signature "$D/sig" "$D/data"
done
sign "SHA256-RSA-PKCS multi-part" 02 SHA256-RSA-PKCS "$D/big" "$D/sig" &&
  verified "SHA256-RSA-PKCS multi-part (5000 bytes) verifies" \
    openssl dgst -sha256 -verify "$D/pub02.pem" -signature "$D/sig" "$D/big"
# RSA-PKCS over a DigestInfo: the result is a sha256WithRSAEncryption signature
{ printf '3031300d060960864801650304020105000420' | xxd -r -p; cat "$D/data.sha256"; } >"$D/di.sha256"
sign "RSA-PKCS over a SHA-256 DigestInfo" 02 RSA-PKCS "$D/di.sha256" "$D/sig" &&
  verified "RSA-PKCS over a DigestInfo verifies as SHA-256 RSA (openssl dgst)" \
    openssl dgst -sha256 -verify "$D/pub02.pem" -signature "$D/sig" "$D/data"
# RSA-X-509 over a full block that we padded ourselves (EMSA-PKCS1-v1_5)
{ printf '0001'; printf 'ff%.0s' $(seq 1 $((256 - 3 - 51))); printf '00'
  xxd -p "$D/di.sha256" | tr -d '\n'; } | xxd -r -p >"$D/block"
check "RSA-X-509 input block is 256 bytes" test "$(stat -c %s "$D/block")" -eq 256
sign "RSA-X-509 over a padded block" 02 RSA-X-509 "$D/block" "$D/sig" &&
  verified "RSA-X-509 over a PKCS#1-padded block verifies as SHA-256 RSA (openssl dgst)" \
    openssl dgst -sha256 -verify "$D/pub02.pem" -signature "$D/sig" "$D/data"
# RSA-PKCS-PSS over a hash, with explicit hash/MGF/salt parameters
pss() { # HASH MGF-HASH SALT(pkcs11-tool) SALT(openssl)
  local h=$1 mh=$2 s=$3 os=$4 H MH
  H=$(echo "$h" | tr a-z A-Z); MH=$(echo "$mh" | tr a-z A-Z)
  [ "$H" = SHA1 ] && H=SHA-1
  sign "RSA-PKCS-PSS $h/mgf1-$mh/salt $s" 02 RSA-PKCS-PSS "$D/data.$h" "$D/sig" \
    --hash-algorithm "$H" --mgf "MGF1-$MH" --salt-len "$s" &&
    verified "RSA-PKCS-PSS hash $h, MGF1-$mh, salt $s verifies (openssl pkeyutl)" \
      openssl pkeyutl -verify -pubin -inkey "$D/pub02.pem" -in "$D/data.$h" -sigfile "$D/sig" \
      -pkeyopt rsa_padding_mode:pss -pkeyopt digest:"$h" -pkeyopt rsa_mgf1_md:"$mh" -pkeyopt rsa_pss_saltlen:"$os"
}
pss sha256 sha256 -1 32
pss sha256 sha256 0 0
pss sha384 sha384 48 48
pss sha512 sha256 -2 $((256 - 64 - 2))
pss sha1 sha1 20 20
pss sha224 sha224 28 28

# verification through the module (public key on the host) and a forged signature
sign "SHA256-RSA-PKCS for C_Verify" 02 SHA256-RSA-PKCS "$D/data" "$D/sig" &&
  expect_grep "--verify SHA256-RSA-PKCS through the module: valid" 'Signature is valid' \
    T --verify --id 02 -m SHA256-RSA-PKCS -i "$D/data" --signature-file "$D/sig"
head -c 1000 /dev/urandom >"$D/other"
# (pkcs11-tool 0.23 prints "Invalid signature" but exits 0 for CKR_SIGNATURE_INVALID)
run T --verify --id 02 -m SHA256-RSA-PKCS -i "$D/other" --signature-file "$D/sig"
if printf '%s\n' "$OUT" | grep >/dev/null 'Invalid signature' && ! printf '%s\n' "$OUT" | grep >/dev/null 'Signature is valid'; then
  ok "--verify of the signature over other data: invalid"
else notok "--verify of the signature over other data: invalid (exit $RC)" "$OUT"; fi
sign "ECDSA-SHA256 for C_Verify" 01 ECDSA-SHA256 "$D/data" "$D/sig" &&
  expect_grep "--verify ECDSA-SHA256 through the module: valid" 'Signature is valid' \
    T --verify --id 01 -m ECDSA-SHA256 -i "$D/data" --signature-file "$D/sig"

# ---- decryption (9C RSA key: keyEncipherment in its certificate) -----------------------------
head -c 32 /dev/urandom >"$D/secret"
decrypt() { # WHAT MECH CIPHERTEXT EXPECTED [pkcs11-tool options]
  local what=$1 mech=$2 ct=$3 want=$4
  shift 4
  rm -f "$D/plain"
  run T --login --pin "$PIN" --decrypt --id 02 -m "$mech" -i "$ct" -o "$D/plain" "$@"
  if [ "$RC" -eq 0 ] && cmp -s "$D/plain" "$want"; then ok "$what"
  else notok "$what (exit $RC: --decrypt -m $mech $*)" "$OUT$(printf '\n# got %s bytes' "$(stat -c %s "$D/plain" 2>/dev/null)")"; fi
}
openssl pkeyutl -encrypt -pubin -inkey "$D/pub02.pem" -in "$D/secret" -out "$D/ct.pkcs1"
decrypt "--decrypt RSA-PKCS returns what openssl encrypted (PKCS#1 v1.5)" RSA-PKCS "$D/ct.pkcs1" "$D/secret"
openssl pkeyutl -encrypt -pubin -inkey "$D/pub02.pem" -in "$D/secret" -out "$D/ct.oaep256" \
  -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256
decrypt "--decrypt RSA-PKCS-OAEP SHA256/MGF1-SHA256 returns what openssl encrypted" RSA-PKCS-OAEP \
  "$D/ct.oaep256" "$D/secret" --hash-algorithm SHA256 --mgf MGF1-SHA256
openssl pkeyutl -encrypt -pubin -inkey "$D/pub02.pem" -in "$D/secret" -out "$D/ct.oaep1" \
  -pkeyopt rsa_padding_mode:oaep
decrypt "--decrypt RSA-PKCS-OAEP SHA-1/MGF1-SHA1 (openssl's default OAEP)" RSA-PKCS-OAEP \
  "$D/ct.oaep1" "$D/secret" --hash-algorithm SHA-1 --mgf MGF1-SHA1
{ printf '\000'; head -c 255 /dev/urandom; } >"$D/rawblock"
openssl pkeyutl -encrypt -pubin -inkey "$D/pub02.pem" -in "$D/rawblock" -out "$D/ct.raw" \
  -pkeyopt rsa_padding_mode:none
decrypt "--decrypt RSA-X-509 returns the raw block" RSA-X-509 "$D/ct.raw" "$D/rawblock"

# ---- ECDH (9D P-384: keyAgreement in its certificate) ----------------------------------------
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$D/peer.key" 2>/dev/null
openssl pkey -in "$D/peer.key" -pubout -outform DER -out "$D/peer_pub.der"
openssl pkeyutl -derive -inkey "$D/peer.key" -peerkey "$D/pub03.pem" -out "$D/z.openssl"
rm -f "$D/z.card"
run T --login --pin "$PIN" --derive -m ECDH1-DERIVE --id 03 --input-file "$D/peer_pub.der" -o "$D/z.card"
if [ "$RC" -eq 0 ] && [ -s "$D/z.openssl" ] && cmp -s "$D/z.card" "$D/z.openssl"; then
  ok "--derive ECDH1-DERIVE with key 03 equals openssl pkeyutl -derive (48 bytes)"
else notok "--derive ECDH1-DERIVE with key 03 equals openssl pkeyutl -derive (exit $RC)" \
  "$OUT$(printf '\n# card: %s\n# openssl: %s' "$(xxd -p "$D/z.card" 2>/dev/null | tr -d '\n')" "$(xxd -p "$D/z.openssl" | tr -d '\n')")"; fi
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$D/peer256.key" 2>/dev/null
openssl pkey -in "$D/peer256.key" -pubout -outform DER -out "$D/peer256_pub.der"
expect_fail "--derive with key 01 (keyUsage digitalSignature only) is refused" \
  T --login --pin "$PIN" --derive -m ECDH1-DERIVE --id 01 --input-file "$D/peer256_pub.der" -o "$D/z.bad"

# ---- card authentication (9E): a token of its own, no login required ----------------------------
AUTH_TOKEN="Tessera PIV #$SERIAL Card Auth"
TA() { T --token-label "$AUTH_TOKEN" "$@"; }
run T -L
# token_flags LABEL: the "token flags" line of the token labelled LABEL in $OUT
token_flags() { printf '%s\n' "$OUT" | awk -v t="$1" '/token label/ { sub(/^[^:]*: /, ""); cur = $0 } /token flags/ && cur == t { print; exit }'; }
main_flags=$(token_flags "Tessera PIV #$SERIAL")
auth_flags=$(token_flags "$AUTH_TOKEN")
if [ "$RC" -eq 0 ] && [[ "$main_flags" == *"login required"* ]] && [ -n "$auth_flags" ] &&
  [[ "$auth_flags" != *"login required"* ]] && [[ "$auth_flags" == *"PIN initialized"* ]]; then
  ok "-L: the card is two tokens, '$AUTH_TOKEN' without 'login required' ($auth_flags)"
else notok "-L: the card is two tokens, '$AUTH_TOKEN' without 'login required'" "$OUT"; fi
expect_fail "--keypairgen --id 04 on the main token is refused (9E is written through '$AUTH_TOKEN')" \
  T --login --pin "$PIN" --keypairgen --key-type EC:prime256v1 --id 04
run TA -O
if [ "$RC" -eq 0 ] && ! printf '%s\n' "$OUT" | grep >/dev/null 'Object;'; then ok "the refused --keypairgen left 9E empty"
else notok "the refused --keypairgen left 9E empty (exit $RC)" "$OUT"; fi
gate "--keypairgen EC:prime256v1 --id 04 on '$AUTH_TOKEN' (with the card's PIN)" \
  TA --login --pin "$PIN" --keypairgen --key-type EC:prime256v1 --id 04
gate "9E public key read from '$AUTH_TOKEN'" p11_pubkey_pem 04 "$D/pub04.pem" "$AUTH_TOKEN"
gate "test CA issues the 9E certificate" \
  p11_issue "$D" "$D/pub04.pem" "/CN=Tessera pkcs11-module 04" digitalSignature "$D/cert04.der"
gate "9E certificate written through '$AUTH_TOKEN'" \
  TA --login --pin "$PIN" --write-object "$D/cert04.der" --type cert --id 04
sign_auth() { rm -f "$D/sig04"; TA --sign --id 04 -m ECDSA-SHA256 --signature-format openssl -i "$D/data" -o "$D/sig04"; }
run sign_auth
if [ "$RC" -eq 0 ] && ! printf '%s\n' "$OUT" | grep >/dev/null -i 'login'; then ok "ECDSA-SHA256 with 9E from '$AUTH_TOKEN' without --login"
else notok "ECDSA-SHA256 with 9E from '$AUTH_TOKEN' without --login (exit $RC)" "$OUT"; fi
verified "the 9E signature made without a PIN verifies (openssl dgst -sha256)" \
  openssl dgst -sha256 -verify "$D/pub04.pem" -signature "$D/sig04" "$D/data"
run T -O
if [ "$RC" -eq 0 ] && ! printf '%s\n' "$OUT" | p11_id_labels | grep -q '|04|'; then ok "the main token shows no 9E object"
else notok "the main token shows no 9E object" "$OUT"; fi
run TA -O
printf '%s\n' "$OUT" >>"$D/ours.txt"

# ---- CKA_IDs and labels beside OpenSC's module -------------------------------------------------
# (ours: the main token logged in plus the card-authentication token; OpenSC has one token)
run pkcs11-tool --module "$OPENSC_MOD" -O --login --pin "$PIN"
printf '%s\n' "$OUT" >"$D/opensc.txt"
p11_id_labels <"$D/opensc.txt" >"$D/opensc.idl"
p11_id_labels <"$D/ours.txt" >"$D/ours.idl"
if [ "$RC" -eq 0 ] && [ "$(wc -l <"$D/ours.idl")" -eq 12 ] && diff -u "$D/opensc.idl" "$D/ours.idl" >"$D/idl.diff"; then
  ok "CKA_IDs and labels of the 12 certificate/key objects (9A 9C 9D 9E) equal opensc-pkcs11.so's"
else notok "CKA_IDs and labels of certificates and keys equal opensc-pkcs11.so's (exit $RC)" \
  "$(cat "$D/idl.diff" 2>/dev/null; echo '# ours:'; cat "$D/ours.idl")"; fi
# key usage: reported, not required to match (OpenSC derives it differently per object)
p11_usages <"$D/opensc.txt" >"$D/opensc.use"
p11_usages <"$D/ours.txt" >"$D/ours.use"
if ! diff -q "$D/opensc.use" "$D/ours.use" >/dev/null; then
  echo "# note: key usage differs from opensc-pkcs11.so's (informational; < OpenSC, > Tessera):"
  diff "$D/opensc.use" "$D/ours.use" | grep '^[<>]' | sed 's/^/#   /'
fi

# ---- PIN change, PUK change ------------------------------------------------------------------
expect_grep "--change-pin 123456 -> 654321 (public session)" 'PIN successfully changed' \
  T --change-pin --pin "$PIN" --new-pin 654321
run T -L
if [ "$RC" -eq 0 ] && ! printf '%s\n' "$OUT" | grep >/dev/null 'user PIN to be changed'; then
  ok "-L: 'user PIN to be changed' cleared after the change"
else notok "-L: 'user PIN to be changed' cleared after the change (exit $RC)" "$OUT"; fi
expect_grep "login with the new PIN works (-O lists private keys)" 'Private Key Object' T -O --login --pin 654321
expect_grep "--change-pin 654321 -> 123456 (user session)" 'PIN successfully changed' \
  T --login --pin 654321 --change-pin --new-pin "$PIN"
expect_grep "login with the factory PIN works again" 'Private Key Object' T -O --login --pin "$PIN"
expect_grep "--change-pin as SO changes the PUK (12345678 -> 87654321)" 'PIN successfully changed' \
  T --login --login-type so --so-pin "$PUK" --change-pin --new-pin 87654321
expect_grep "--change-pin as SO with the new PUK puts the old one back" 'PIN successfully changed' \
  T --login --login-type so --so-pin 87654321 --change-pin --new-pin "$PUK"

# ---- block the PIN, unblock with the PUK as SO PIN ------------------------------------------
flags() { T -L 2>/dev/null | grep 'token flags'; }
expect_fail_grep "wrong PIN 1/3 refused (CKR_PIN_INCORRECT)" 'CKR_PIN_INCORRECT' T --login --pin 000001 -O
expect_grep "-L after 1 wrong PIN: 'user PIN count low'" 'user PIN count low' flags
expect_fail_grep "wrong PIN 2/3 refused (CKR_PIN_INCORRECT)" 'CKR_PIN_INCORRECT' T --login --pin 000002 -O
expect_grep "-L after 2 wrong PINs: 'final user PIN try'" 'final user PIN try' flags
expect_fail_grep "wrong PIN 3/3 refused (CKR_PIN_INCORRECT or CKR_PIN_LOCKED)" 'CKR_PIN_(INCORRECT|LOCKED)' \
  T --login --pin 000003 -O
expect_grep "-L after 3 wrong PINs: 'user PIN locked'" 'user PIN locked' flags
expect_fail_grep "the right PIN is refused while blocked (CKR_PIN_LOCKED)" 'CKR_PIN_LOCKED' T --login --pin "$PIN" -O
# pkcs11-tool 0.23: --unlock-pin without --login sends C_SetPIN(PUK, new) in a public session,
# which PKCS#11 defines as a user PIN change (OpenSC's own module special-cases it); the
# standard way, and the one Tessera implements, is C_Login(CKU_SO, PUK) + C_InitPIN:
expect_grep "--login --login-type so --so-pin PUK --init-pin --new-pin 123456 unblocks" \
  'User PIN successfully initialized' \
  T --login --login-type so --so-pin "$PUK" --init-pin --new-pin "$PIN"
run flags
if printf '%s\n' "$OUT" | grep -Eq 'user PIN (locked|count low)|final user PIN try'; then
  notok "-L after the unblock: no PIN counter flags" "$OUT"
else ok "-L after the unblock: no PIN counter flags"; fi
expect_grep "user login works after the unblock" 'Private Key Object' T -O --login --pin "$PIN"
sign "ECDSA-SHA256 after the unblock" 01 ECDSA-SHA256 "$D/data" "$D/sig" --signature-format openssl &&
  verified "ECDSA-SHA256 after the unblock verifies" \
    openssl dgst -sha256 -verify "$D/pub01.pem" -signature "$D/sig" "$D/data"
expect_fail_grep "SO login with a wrong PUK refused" 'CKR_PIN_INCORRECT' \
  T --login --login-type so --so-pin 11111111 --init-pin --new-pin "$PIN"

# ---- the debug log shows calls and APDU headers, never a PIN, a PUK or key material ----------
LOG="$D/tessera-debug.log"
rm -f "$LOG"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$D/logkey.pem" 2>/dev/null
openssl pkcs8 -topk8 -nocrypt -outform DER -in "$D/logkey.pem" -out "$D/logkey.der"
KEYHEX=$(openssl ec -in "$D/logkey.pem" -outform DER 2>/dev/null | openssl asn1parse -inform DER |
  grep 'l=  32 prim: OCTET STRING' | sed 's/.*HEX DUMP\]://')
export TESSERA_LOG=debug TESSERA_LOG_FILE="$LOG"
run T --login --pin "$PIN" --change-pin --new-pin 24681357
run T --login --pin 24681357 --change-pin --new-pin "$PIN"
run T --login --login-type so --so-pin "$PUK" -O
run T --login --pin "$PIN" --write-object "$D/logkey.der" --type privkey --id 03
unset TESSERA_LOG TESSERA_LOG_FILE
if grep -q 'apdu 00 20 00 80' "$LOG" 2>/dev/null && grep -q 'C_Login' "$LOG"; then
  ok "TESSERA_LOG=debug logs calls and APDU headers ($(grep -c apdu "$LOG") APDUs)"
else notok "TESSERA_LOG=debug logs calls and APDU headers" "$(head -n 5 "$LOG" 2>/dev/null)"; fi
leaked=""
for secret in "$PIN" 24681357 "$PUK" 313233343536 "31 32 33 34 35 36" 3234363831333537 3132333435363738 \
  010203040506070801020304050607080102030405060708 "01 02 03 04 05 06 07 08" "$KEYHEX"; do
  [ -n "$secret" ] || continue
  grep -qi -- "$secret" "$LOG" && leaked="$leaked $secret"
done
if [ -z "$leaked" ]; then ok "the debug log holds no PIN, PUK, management key or imported key bytes"
else notok "the debug log holds no PIN, PUK, management key or imported key bytes (found:$leaked)" ""; fi

stop_card
