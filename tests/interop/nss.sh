#!/usr/bin/env bash
# Interop: NSS (certutil, modutil, pk12util, cmsutil from libnss3-tools) loading
# libtessera_pkcs11.so into a fresh database, against `tessera vcard serve` through the lab's
# pcscd + vpcd reader. The card is populated first through the module with pkcs11-tool (9A:
# P-256 key + certificate from a test CA); then NSS lists certificates without a PIN, lists
# keys with it, signs CMS with the card key, and loads a PKCS#12 (key + certificate) onto the
# card, whose certificate is read back and used for another CMS signature.
# Run by pkg/scripts/test-all.sh; by hand:
#   bash pkg/scripts/pcsc-lab.sh up /tmp/lab && . /tmp/lab/env
#   TESSERA_BIN=$PWD/target/release/tessera LAB=/tmp/lab bash tests/interop/nss.sh
set -uo pipefail
. "$(dirname "$0")/lib/common.bash"
. "$(dirname "$0")/lib/p11.bash"

PIN=123456
SERIAL=1000004
TOKEN="Tessera PIV #$SERIAL"
CARD="$LAB/nss.card"
D=$WORK
DB="sql:$D/nssdb"
printf '%s\n' "$PIN" >"$D/pinfile"
printf '%s\n' 'p12 envelope secret' >"$D/p12pass"
# debug trace of the module for the report when NSS gets stuck (never holds PINs)
export TESSERA_LOG_FILE="$D/tessera-debug.log"

p11_module_checks
for t in certutil modutil pk12util cmsutil; do
  command -v "$t" >/dev/null || { notok "$t installed (package libnss3-tools)"; exit 1; }
done

rm -f "$CARD" "$CARD".*
expect_ok "tessera vcard init (serial $SERIAL)" "$TESSERA_BIN" vcard init "$CARD" --serial "$SERIAL"
start_card "$CARD" || exit 1

# ---- populate 9A through the module --------------------------------------------------------
gate "test CA created" p11_make_ca "$D"
gate "pkcs11-tool --keypairgen EC:prime256v1 --id 01 (9A)" \
  T --login --pin "$PIN" --keypairgen --key-type EC:prime256v1 --id 01
gate "9A public key read through the module" p11_pubkey_pem 01 "$D/gen01.pem"
gate "test CA issues the 9A certificate" \
  p11_issue "$D" "$D/gen01.pem" "/CN=Tessera NSS card 9A" "digitalSignature" "$D/card9a.der"
gate "9A certificate written through the module" \
  T --login --pin "$PIN" --write-object "$D/card9a.der" --type cert --id 01

# ---- database, module ----------------------------------------------------------------------
mkdir -p "$D/nssdb"
gate "certutil -N: fresh NSS database" certutil -N --empty-password -d "$DB"
gate "modutil -add tessera -libfile $MODULE" modutil -add tessera -libfile "$MODULE" -dbdir "$DB" -force
expect_grep "modutil -list: module 'tessera' loaded" '^ *[0-9]+\. tessera' modutil -list -dbdir "$DB"
expect_grep "modutil -list: token '$TOKEN' in slot '$READER 00 00'" "token: $TOKEN\$" modutil -list -dbdir "$DB"
expect_grep "modutil -list: the token's pkcs11: URI" "uri: pkcs11:token=Tessera%20PIV%20%23$SERIAL;" modutil -list -dbdir "$DB"
# the test CA, trusted for e-mail, so that NSS accepts the signer certificates
expect_ok "certutil -A: test CA trusted in the database" \
  certutil -A -n "Tessera Interop Test CA" -t "C,C,C" -i "$D/ca.pem" -d "$DB"

# ---- certificates without a PIN, keys with it ----------------------------------------------
NICK9A="$TOKEN:Certificate for PIV Authentication"
expect_grep "certutil -L -h all lists the card certificate without a PIN" "^$NICK9A +u,u,u" \
  certutil -L -h all -d "$DB"
rm -f "$D/nss9a.der"
certutil -L -d "$DB" -n "$NICK9A" -r >"$D/nss9a.der" 2>"$D/nss9a.err"
RC=$?; OUT=$(cat "$D/nss9a.err")
if [ "$RC" -eq 0 ] && cmp -s "$D/nss9a.der" "$D/card9a.der"; then
  ok "certutil -L -n '$NICK9A' -r: the certificate NSS reads equals the one written"
else notok "certutil -L -n '$NICK9A' -r: the certificate NSS reads equals the one written (exit $RC)" "$OUT"; fi
expect_grep "certutil -K -h '$TOKEN' -f pinfile lists the 9A key (ec, ID 01)" '<[ 0-9]+> ec +01 +PIV AUTH key' \
  certutil -K -h "$TOKEN" -d "$DB" -f "$D/pinfile"

# ---- CMS signature with the card key ---------------------------------------------------------
printf 'Tessera NSS interop document\nline two\n' >"$D/doc.txt"
cms_sign_verify() { # WHAT NICK
  local what=$1 nick=$2
  rm -f "$D/doc.p7s"
  run cmsutil -S -T -H SHA256 -N "$nick" -d "$DB" -f "$D/pinfile" -i "$D/doc.txt" -o "$D/doc.p7s"
  if [ "$RC" -ne 0 ] || [ ! -s "$D/doc.p7s" ]; then
    notok "$what: cmsutil -S -N '$nick' (exit $RC)" "$OUT"
    return 1
  fi
  ok "$what: cmsutil -S -N '$nick' signs"
  expect_grep "$what: openssl cms -verify -CAfile ca.pem: Verification successful" \
    'Verification successful' \
    openssl cms -verify -binary -inform DER -in "$D/doc.p7s" -content "$D/doc.txt" \
    -CAfile "$D/ca.pem" -purpose any -out /dev/null
}
cms_sign_verify "9A (generated on card)" "$NICK9A"

# ---- PKCS#12 onto the card ------------------------------------------------------------------
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$D/ecert.key" 2>/dev/null
openssl req -new -key "$D/ecert.key" -subj "/CN=Tessera eCert Holder/serialNumber=PNOEE-1000004" \
  -out "$D/ecert.csr" 2>/dev/null
# (NSS's cmsutil -S does not pick an RSA certificate whose keyUsage lacks keyEncipherment:
# "SEC_ERROR_INADEQUATE_KEY_USAGE", even in its own softoken database)
printf 'keyUsage=critical,digitalSignature,nonRepudiation,keyEncipherment\nextendedKeyUsage=emailProtection,clientAuth\n' >"$D/ecert.ext"
openssl x509 -req -in "$D/ecert.csr" -CA "$D/ca.pem" -CAkey "$D/ca.key" -days 30 -sha256 \
  -extfile "$D/ecert.ext" -set_serial 0x1000004 -out "$D/ecert.pem" 2>/dev/null
openssl x509 -in "$D/ecert.pem" -outform DER -out "$D/ecert.der"
# OpenSSL 3's default PKCS#12 (PBES2/AES-256, HMAC-SHA256 MAC): NSS 3.87 reads it (checked
# by importing into a throw-away softoken database first); -legacy is then not needed
expect_ok "openssl pkcs12 -export (RSA-2048 key + certificate, OpenSSL 3 default algorithms)" \
  openssl pkcs12 -export -inkey "$D/ecert.key" -in "$D/ecert.pem" -name "Tessera eCert" \
  -passout "file:$D/p12pass" -out "$D/ecert.p12"
mkdir -p "$D/softdb"
certutil -N --empty-password -d "sql:$D/softdb"
run pk12util -i "$D/ecert.p12" -d "sql:$D/softdb" -w "$D/p12pass"
if [ "$RC" -ne 0 ]; then
  echo "# NSS cannot read OpenSSL 3's default PKCS#12; using -legacy:"
  printf '%s\n' "$OUT" | sed 's/^/#   /'
  expect_ok "openssl pkcs12 -export -legacy" \
    openssl pkcs12 -export -legacy -inkey "$D/ecert.key" -in "$D/ecert.pem" -name "Tessera eCert" \
    -passout "file:$D/p12pass" -out "$D/ecert.p12"
else ok "NSS reads OpenSSL 3's default PKCS#12 (pk12util into a softoken database)"; fi

rm -f "$TESSERA_LOG_FILE"
run env TESSERA_LOG=debug pk12util -i "$D/ecert.p12" -h "$TOKEN" -d "$DB" -w "$D/p12pass" -k "$D/pinfile"
if [ "$RC" -eq 0 ] && printf '%s\n' "$OUT" | grep >/dev/null 'PKCS12 IMPORT SUCCESSFUL'; then
  ok "pk12util -i ecert.p12 -h '$TOKEN' loads key and certificate onto the card"
  P12_OK=1
else
  P12_OK=0
  notok "pk12util -i ecert.p12 -h '$TOKEN' loads key and certificate onto the card (exit $RC)" "$OUT"
  echo "# module calls from C_CreateObject on (TESSERA_LOG=debug, $TESSERA_LOG_FILE):"
  sed -n '/C_CreateObject: /,$p' "$TESSERA_LOG_FILE" 2>/dev/null | grep -v 'C_GetAttributeValue: ' |
    sed -E 's/^\[tessera [0-9.]+ pid [0-9]+ ThreadId\([0-9]+\) DEBUG tessera_pkcs11::/[/' | head -n 60 |
    sed 's/^/#   /'
fi
unset TESSERA_LOG

# where the key went and whether the certificate followed it
run T -O --login --pin "$PIN"
printf '%s\n' "$OUT" >"$D/after-p12.txt"
NICKP12=""
run certutil -L -h all -d "$DB"
for n in "Certificate for PIV Authentication" "Certificate for Digital Signature" \
  "Certificate for Key Management" "Certificate for Card Authentication" "Tessera eCert"; do
  if certutil -L -d "$DB" -n "$TOKEN:$n" 2>/dev/null | grep -q 'Subject: "serialNumber=PNOEE-1000004,CN=Tessera eCert Holder"'; then
    NICKP12="$TOKEN:$n"
    break
  fi
done
if [ -n "$NICKP12" ]; then
  ok "certutil -L -h all lists the imported certificate ('$NICKP12')"
else notok "certutil -L -h all lists the imported certificate (subject CN=Tessera eCert Holder)" \
  "$OUT$(printf '\n# pkcs11-tool -O --login after the import:\n'; grep -E 'Object|label|subject|ID|Usage' "$D/after-p12.txt")"; fi

# the certificate on the card, read back by pkcs11-tool, is the one in the .p12
id=$(awk '/^Certificate Object/ { c = 1 } c && /subject:.*Tessera eCert Holder/ { s = 1 }
  c && /^[ \t]+ID:/ { if (s) { print $2; exit } c = 0; s = 0 }' "$D/after-p12.txt")
rm -f "$D/back.der"
if [ -n "$id" ] && T --read-object --type cert --id "$id" -o "$D/back.der" >/dev/null 2>&1 &&
  cmp -s "$D/back.der" "$D/ecert.der"; then
  ok "certificate read back from the card (pkcs11-tool -r --id $id) is byte-identical to the .p12's"
else notok "certificate read back from the card is byte-identical to the .p12's (card ID '${id:-none}')" \
  "$(grep -E 'Object|label|subject|ID' "$D/after-p12.txt")"; fi
expect_grep "certutil -K lists an RSA key on the token after the import" '<[ 0-9]+> rsa ' \
  certutil -K -h "$TOKEN" -d "$DB" -f "$D/pinfile"

# NSS files the imported key under CKA_ID = SHA-1 of the RSA modulus and looks it up by that
# ID before it writes the certificate (pk11_mkcertKeyID -> pk11_FindPrivateKeyFromCertID).
# A PIV card cannot store an application's CKA_ID: the module answers to it as an alias for
# the rest of that process (which is what pk12util needs), and afterwards the key and the
# certificate share the slot's OpenSC CKA_ID, by which NSS pairs them in later processes
# (cmsutil below). So the alias is checked through the pairing, not through a second process.
NSS_ID=$(openssl rsa -in "$D/ecert.key" -noout -modulus 2>/dev/null | cut -d= -f2 | xxd -r -p | sha1sum | cut -c1-40)
echo "# NSS gave the key CKA_ID $NSS_ID (SHA-1 of the modulus); on the card it is the slot's ID"

# no certificate on the card may name a key that is no longer in its slot
mismatch=""
for cid in $(awk '/^Certificate Object/ { c = 1 } c && /^[ \t]+ID:/ { print $2; c = 0 }' "$D/after-p12.txt"); do
  rm -f "$D/c.der" "$D/k.pem"
  T --read-object --type cert --id "$cid" -o "$D/c.der" >/dev/null 2>&1
  p11_pubkey_pem "$cid" "$D/k.pem" >/dev/null 2>&1
  if ! cmp -s <(openssl x509 -inform DER -in "$D/c.der" -noout -pubkey 2>/dev/null | openssl pkey -pubin -outform DER 2>/dev/null) \
    <(openssl pkey -pubin -in "$D/k.pem" -outform DER 2>/dev/null); then
    mismatch="$mismatch $cid($(openssl x509 -inform DER -in "$D/c.der" -noout -subject 2>/dev/null))"
  fi
done
if [ -z "$mismatch" ]; then ok "after the import every certificate on the card matches the key with its CKA_ID"
else notok "after the import every certificate on the card matches the key with its CKA_ID (stale:$mismatch)" \
  "$(grep -E 'Object|label|subject|ID' "$D/after-p12.txt")"; fi

if [ -n "$NICKP12" ]; then
  cms_sign_verify "imported e-Cert" "$NICKP12"
  # the signature was made by the imported key: its certificate is the signer's
  if [ -s "$D/doc.p7s" ]; then
    openssl cms -verify -binary -inform DER -in "$D/doc.p7s" -content "$D/doc.txt" -noverify \
      -signer "$D/signer.pem" -out /dev/null 2>/dev/null
    check "the CMS signer certificate is the imported e-Cert" cmp -s <(openssl x509 -in "$D/signer.pem" -outform DER) "$D/ecert.der"
  fi
else
  notok "cmsutil -S with the imported e-Cert (skipped: no imported certificate on the token)"
fi
[ "$P12_OK" = 1 ] || echo "# see the pk12util failure above"

stop_card
