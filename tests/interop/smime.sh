#!/usr/bin/env bash
# Interop: Thunderbird's S/MIME stack (NSS; here its command-line face, cmsutil) with
# libtessera_pkcs11.so in an NSS database, through the lab's pcscd + vpcd reader.
#  1. 9C (digital signature): a P-256 key; 9D (key management): an RSA-2048 key; both
#     generated on the card with certificates (emailProtection) from a test CA, through the
#     module (pkcs11-tool).
#  2. cmsutil -S signs a message with the 9C key; `openssl cms -verify` accepts it and names
#     the card's certificate as the signer.
#  3. A message encrypted by OpenSSL to the 9D certificate (`openssl cms -encrypt -aes256`) is
#     decrypted by `cmsutil -D` to the original text.
#  4. Renewal of 9D with `tessera renew request --slot 9d` / the CA issues / `tessera renew
#     install`: the old key and certificate move to retired slot 82 (CKA_ID 05, Key History);
#     cmsutil still decrypts the old message (its recipient is the old certificate) and
#     decrypts a new message encrypted to the renewed certificate.
# Run by pkg/scripts/test-all.sh; by hand:
#   bash pkg/scripts/pcsc-lab.sh up /tmp/lab && . /tmp/lab/env
#   TESSERA_BIN=$PWD/target/release/tessera LAB=/tmp/lab bash tests/interop/smime.sh
set -uo pipefail
. "$(dirname "$0")/lib/common.bash"
. "$(dirname "$0")/lib/p11.bash"
. "$(dirname "$0")/lib/apps.bash"

PIN=123456
SERIAL=1000007
TOKEN="Tessera PIV #$SERIAL"
CARD="$LAB/smime.card"
D=$WORK
DB="sql:$D/nssdb"
printf '%s\n' "$PIN" >"$D/pinfile"
export TESSERA_LOG_FILE="$D/module.log"

p11_module_checks
for t in certutil modutil cmsutil; do
  command -v "$t" >/dev/null || { notok "$t installed (package libnss3-tools)"; exit 1; }
done

rm -f "$CARD" "$CARD".*
expect_ok "tessera vcard init (serial $SERIAL)" "$TESSERA_BIN" vcard init "$CARD" --serial "$SERIAL"
start_card "$CARD" || exit 1

# ---- 9C and 9D through the module ------------------------------------------------------------------
gate "test CA created" p11_make_ca "$D"
declare -A KT=([02]="EC:prime256v1" [03]="rsa:2048")
declare -A KU=([02]="keyUsage=critical,digitalSignature,nonRepudiation" [03]="keyUsage=critical,keyEncipherment")
declare -A CN=([02]="Tessera S/MIME Signer" [03]="Tessera S/MIME Recipient")
for id in 02 03; do
  printf '%s\n' "${KU[$id]}" 'extendedKeyUsage=emailProtection' 'subjectAltName=email:holder@tessera.test' \
    'subjectKeyIdentifier=hash' 'authorityKeyIdentifier=keyid' >"$D/ext$id"
  gate "pkcs11-tool --keypairgen ${KT[$id]} --id $id" \
    T --login --pin "$PIN" --keypairgen --key-type "${KT[$id]}" --id "$id"
  gate "public key $id read through the module" p11_pubkey_pem "$id" "$D/gen$id.pem"
  gate "test CA issues the certificate for key $id (emailProtection)" \
    apps_issue "$D" "$D/gen$id.pem" "/CN=${CN[$id]}/emailAddress=holder@tessera.test" "$D/ext$id" "$D/cert$id.der"
  gate "certificate $id written through the module" \
    T --login --pin "$PIN" --write-object "$D/cert$id.der" --type cert --id "$id"
  openssl x509 -inform DER -in "$D/cert$id.der" -out "$D/cert$id.pem"
done

# ---- the NSS database (what Thunderbird's profile holds) ----------------------------------------------
mkdir -p "$D/nssdb"
gate "certutil -N: fresh NSS database" certutil -N --empty-password -d "$DB"
gate "modutil -add tessera -libfile libtessera_pkcs11.so" modutil -add tessera -libfile "$MODULE" -dbdir "$DB" -force
gate "certutil -A: test CA trusted for e-mail" certutil -A -n "Tessera Interop Test CA" -t "C,C,C" -i "$D/ca.pem" -d "$DB"
NICK9C="$TOKEN:Certificate for Digital Signature"
NICK9D="$TOKEN:Certificate for Key Management"
expect_grep "certutil -L -h all lists the 9C and 9D certificates" "^$NICK9D " certutil -L -h all -d "$DB"

# ---- sign --------------------------------------------------------------------------------------------
printf 'From: holder@tessera.test\nSubject: signed by the card\n\nTessera S/MIME interop: signed text.\n' >"$D/msg.txt"
rm -f "$D/msg.p7s"
run timeout 60 cmsutil -S -T -H SHA256 -N "$NICK9C" -d "$DB" -f "$D/pinfile" -i "$D/msg.txt" -o "$D/msg.p7s"
if [ "$RC" -eq 0 ] && [ -s "$D/msg.p7s" ]; then
  ok "cmsutil -S -N '$NICK9C' signs (9C, context-specific PIN from -f pinfile)"
else
  notok "cmsutil -S -N '$NICK9C' signs (exit $RC)" "$OUT"
  show_module_log "$TESSERA_LOG_FILE" 25
fi
expect_grep "openssl cms -verify -CAfile ca.pem: Verification successful" 'Verification successful' \
  openssl cms -verify -binary -inform DER -in "$D/msg.p7s" -content "$D/msg.txt" -CAfile "$D/ca.pem" \
  -signer "$D/signer.pem" -out /dev/null
check "the CMS signer certificate is the card's 9C certificate" \
  cmp -s <(openssl x509 -in "$D/signer.pem" -outform DER 2>/dev/null) "$D/cert02.der"

# ---- decrypt ---------------------------------------------------------------------------------------------
# encrypt MSG RECIPCERT OUT: openssl cms -encrypt (AES-256-CBC, RSA key transport), DER
encrypt() { openssl cms -encrypt -binary -aes256 -in "$1" -recip "$2" -outform DER -out "$3"; }
# decrypt WHAT IN PLAIN: cmsutil -D with the card gives PLAIN
decrypt() {
  local what=$1 in=$2 plain=$3
  rm -f "$D/out"
  run timeout 60 cmsutil -D -d "$DB" -f "$D/pinfile" -i "$in" -o "$D/out"
  if [ "$RC" -eq 0 ] && cmp -s "$D/out" "$plain"; then ok "$what"
  else
    notok "$what (exit $RC)" "$OUT$(printf '\n# decrypted: '; head -c 200 "$D/out" 2>/dev/null)"
    show_module_log "$TESSERA_LOG_FILE" 25
  fi
}
printf 'Tessera S/MIME interop: a secret for the key-management key (before renewal).\n' >"$D/old.txt"
gate "openssl cms -encrypt -aes256 -recip cert9d.pem (old certificate)" encrypt "$D/old.txt" "$D/cert03.pem" "$D/old.p7m"
decrypt "cmsutil -D decrypts the message to the 9D certificate (equals the plaintext)" "$D/old.p7m" "$D/old.txt"

# ---- renew 9D: key history ----------------------------------------------------------------------------
R=(--reader "$READER" --yes --pin-file "$D/pinfile")
run "$TESSERA_BIN" "${R[@]}" renew request --slot 9d -o "$D/renewal"
if [ "$RC" -eq 0 ] && [ -s "$D/renewal.csr" ]; then ok "tessera renew request --slot 9d: new on-card key, renewal.csr + renewal.p7s"
else notok "tessera renew request --slot 9d (exit $RC)" "$OUT"; fi
expect_grep "the renewal CSR verifies (signed by the new key)" 'verify OK' openssl req -in "$D/renewal.csr" -verify -noout
if [ -s "$D/renewal.p7s" ]; then
  expect_grep "renewal.p7s is signed by the current 9D certificate" 'Verification successful' \
    openssl cms -verify -binary -inform DER -in "$D/renewal.p7s" -CAfile "$D/ca.pem" -purpose any \
    -signer "$D/renewal-signer.pem" -out /dev/null
fi
rm -f "$D/renewed.pem"
openssl x509 -req -in "$D/renewal.csr" -CA "$D/ca.pem" -CAkey "$D/ca.key" -days 30 -sha256 \
  -set_serial "0x$(rand_serial)" -extfile "$D/ext03" -out "$D/renewed.pem" 2>/dev/null
check "the test CA issues the renewed 9D certificate" test -s "$D/renewed.pem"
expect_ok "tessera renew install renewed.pem --slot 9d" "$TESSERA_BIN" "${R[@]}" renew install "$D/renewed.pem" --slot 9d

run T -O
printf '%s\n' "$OUT" >"$D/objects-after.txt"
rm -f "$D/c03.der" "$D/c05.der"
T --read-object --type cert --id 03 -o "$D/c03.der" >/dev/null 2>&1
T --read-object --type cert --id 05 -o "$D/c05.der" >/dev/null 2>&1
check "9D (CKA_ID 03) now holds the renewed certificate" \
  cmp -s "$D/c03.der" <(openssl x509 -in "$D/renewed.pem" -outform DER)
check "retired slot 82 (CKA_ID 05) holds the old 9D certificate" cmp -s "$D/c05.der" "$D/cert03.der"
expect_grep "the old private key is on the token with CKA_ID 05 (pkcs11-tool -O --login)" \
  'Private Key Object; RSA' sh -c "pkcs11-tool --module '$MODULE' -O --login --pin '$PIN' --type privkey --id 05 2>&1"
run certutil -L -h all -d "$DB"
n=$(printf '%s\n' "$OUT" | grep -c "^$TOKEN:")
if [ "$n" -ge 3 ]; then ok "NSS lists 9C, 9D and the retired certificate on the token ($n certificates)"
else notok "NSS lists 9C, 9D and the retired certificate on the token ($n certificates)" "$OUT"; fi

decrypt "after renewal: cmsutil -D still decrypts the old message (old key found in retired slot 82)" \
  "$D/old.p7m" "$D/old.txt"
printf 'Tessera S/MIME interop: a secret for the renewed key-management key.\n' >"$D/new.txt"
gate "openssl cms -encrypt to the renewed certificate" encrypt "$D/new.txt" "$D/renewed.pem" "$D/new.p7m"
decrypt "after renewal: cmsutil -D decrypts a message to the renewed certificate" "$D/new.p7m" "$D/new.txt"

stop_card
