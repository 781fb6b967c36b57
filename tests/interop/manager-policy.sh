#!/usr/bin/env bash
# Interop: the control manager's answers to broken input and its policies (issue 11), on an
# in-process virtual card, each outcome read back independently (openssl, the card file):
#   - exit status by class: a wrong PIN 3, no card 4, a damaged card file 5 (named in the
#     message, never "insert a card"), a refusal 6, an untrusted signer 7; --json errors carry
#     the class; --help lists the codes;
#   - every command that changes credentials verifies all of them first: `pin retries` with a
#     wrong PUK and `setup` with a wrong current PIN change nothing, and the real PUK still works;
#   - `tessera verify` builds the path through the intermediate CA carried in the signature to
#     the root in --ca (OpenSSL agrees), and a self-signed forgery in the holder's name is
#     "intact but NOT TRUSTED" with its own exit status, with or without --ca;
#   - `export` without --slot writes the e-Cert after an import into 9c; import into a retired
#     slot is refused before anything is written; `renew install` takes the CA's PEM bundle
#     (certificate + chain) and keeps the chain; `tessera reset` wants the typed serial and a
#     blocked PUK names it.
# Run by pkg/scripts/test-all.sh; by hand:
#   bash pkg/scripts/pcsc-lab.sh up /tmp/lab && . /tmp/lab/env
#   TESSERA_BIN=$PWD/target/release/tessera LAB=/tmp/lab bash tests/interop/manager-policy.sh
set -uo pipefail
. "$(dirname "$0")/lib/common.bash"

unset TESSERA_VCARD
D=$WORK
T() { "$TESSERA_BIN" "$@"; }
# status_of CMD...: runs CMD, sets OUT and RC (like run), for exit-status checks
expect_status() { # expect_status WHAT CODE REGEX CMD...
  local what=$1 code=$2 re=$3
  shift 3
  run "$@"
  if [ "$RC" -eq "$code" ] && printf '%s\n' "$OUT" | grep -Eq -- "$re"; then ok "$what (exit $RC)"
  else notok "$what (wanted exit $code and /$re/, got exit $RC: $*)" "$OUT"; fi
}
same_file() { cmp -s "$1" "$2"; }

# ---- fixtures: a root CA, an intermediate CA, e-Certs, a forgery -----------------------------
fixtures() {
  cd "$D" || return 1
  echo envelope-1357 >pw
  echo 123456 >pin
  echo 12345678 >puk
  printf 'a contract\n' >doc
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout root.key -out root.pem \
    -subj "/CN=Tessera Policy Root CA" -days 30 -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign &&
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout inter.key -out inter.csr \
      -subj "/CN=Tessera Policy Issuing CA" &&
    printf 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n' >ca.ext &&
    openssl x509 -req -in inter.csr -CA root.pem -CAkey root.key -set_serial 2 -days 30 -sha256 \
      -extfile ca.ext -out inter.pem &&
    printf 'keyUsage=critical,digitalSignature,nonRepudiation\nextendedKeyUsage=emailProtection\n' >sig.ext &&
    openssl req -new -newkey rsa:2048 -nodes -keyout holder.key -out holder.csr -subj "/CN=Mari Maasikas/serialNumber=PNOEE-38001085718" &&
    openssl x509 -req -in holder.csr -CA inter.pem -CAkey inter.key -set_serial 3 -days 30 -sha256 \
      -extfile sig.ext -out holder.pem &&
    openssl x509 -in holder.pem -outform DER -out holder.der &&
    openssl pkcs12 -export -inkey holder.key -in holder.pem -certfile inter.pem -passout file:pw -out holder.p12 &&
    # the forgery: the holder's name on a self-signed certificate and a key of the forger's
    openssl req -x509 -newkey rsa:2048 -nodes -keyout forger.key -out forger.pem -days 30 \
      -subj "/CN=Mari Maasikas/serialNumber=PNOEE-38001085718" -addext keyUsage=critical,digitalSignature,nonRepudiation &&
    openssl cms -sign -binary -in doc -signer forger.pem -inkey forger.key -outform DER -out forged.p7s -nodetach
} >/dev/null 2>&1
gate "fixtures: root CA, intermediate CA, an e-Cert issued by the intermediate (.p12 with the chain), a forgery" fixtures

CARD="$D/card.json"
gate "tessera vcard init" T vcard init "$CARD" --serial 3100001
C() { T --vcard "$CARD" "$@"; }

# ---- exit status by class --------------------------------------------------------------------
expect_grep "--help lists the exit status of each class" '3 +wrong, blocked or malformed PIN.*' T --help
run T --help
if printf '%s\n' "$OUT" | grep -Eq '^ +4 +no reader or no card' && printf '%s\n' "$OUT" | grep -Eq '^ +7 +the signature is intact'; then
  ok "--help lists no card (4) and untrusted signer (7)"
else notok "--help lists no card (4) and untrusted signer (7)" "$OUT"; fi
echo 000000 >"$D/wrongpin"
expect_status "a wrong PIN exits 3 and says the tries left" 3 'wrong PIN: 2 tries left' \
  C --password-file "$D/pw" --pin-file "$D/wrongpin" import "$D/holder.p12"
expect_status "a virtual card file that is not there exits 4 (no card)" 4 'does not exist' \
  T --vcard "$D/nowhere.json" status
expect_status "no reader of that name: exit 4" 4 'no card' T --reader "No Such Reader" status
run C --json --reader "No Such Reader" status
if [ "$RC" -eq 4 ] && [ "$(printf '%s' "$OUT" | jq -r '.error.class' 2>/dev/null)" = no-card ] &&
  [ "$(printf '%s' "$OUT" | jq -r '.error.exit_code' 2>/dev/null)" = 4 ]; then
  ok "--json error carries the class (no-card, exit_code 4)"
else notok "--json error carries the class (no-card, exit_code 4)" "exit $RC: $OUT"; fi
cp "$CARD" "$D/broken.json"
truncate -s 200 "$D/broken.json"
expect_status "a truncated card file exits 5 and names the file, not 'insert a card'" 5 'broken\.json.*cannot be used' \
  T --vcard "$D/broken.json" status
run T --vcard "$D/broken.json" status
if printf '%s' "$OUT" | grep >/dev/null -i 'insert'; then notok "the damaged card file message never says insert" "$OUT"
else ok "the damaged card file message never says insert"; fi
expect_grep "doctor names the damaged card file" 'virtual card: .*broken\.json cannot be used' \
  sh -c "'$TESSERA_BIN' --vcard '$D/broken.json' doctor; true"

# ---- import, export, retired slots -----------------------------------------------------------
expect_grep "tessera import of the e-Cert (nonRepudiation: 9c) with its intermediate CA" 'verified it: ok' \
  C --password-file "$D/pw" --pin-file "$D/pin" import "$D/holder.p12"
echo not-the-password >"$D/wrongpw"
expect_status "a wrong .p12 password is refused before the PIN is even read (exit 3, no PIN file needed)" 3 \
  'wrong password' C --password-file "$D/wrongpw" --pin-file "$D/no-such-pin-file" import "$D/holder.p12"
rm -f "$D/exported.der"
expect_ok "tessera export without --slot" C export --format der -o "$D/exported.der"
check "export without --slot wrote the e-Cert byte for byte (it sits in 9c)" same_file "$D/exported.der" "$D/holder.der"
cp "$CARD" "$D/before82.json"
expect_status "import into retired slot 82 is refused (exit 6)" 6 'retired key slot' \
  C --password-file "$D/pw" --pin-file "$D/pin" import "$D/holder.p12" --slot 82
check "the card file is byte-identical after the refused import into 82" same_file "$CARD" "$D/before82.json"

# ---- verify: intermediates, trust anchors, forgeries -------------------------------------------
rm -f "$D/doc.p7s"
expect_ok "tessera sign with the e-Cert (the signature carries the intermediate)" \
  C --pin-file "$D/pin" sign "$D/doc" -o "$D/doc.p7s"
expect_grep "openssl cms -verify -CAfile root.pem accepts it (path through the intermediate)" 'Verification successful' \
  openssl cms -verify -binary -inform DER -in "$D/doc.p7s" -content "$D/doc" -CAfile "$D/root.pem" -out /dev/null
expect_status "tessera verify --ca root.pem accepts it (exit 0): the path through the carried intermediate" 0 \
  'signature valid' T verify --ca "$D/root.pem" "$D/doc.p7s" "$D/doc"
expect_status "tessera verify without --ca: intact, but the test root is not in the system store (exit 7)" 7 \
  'NOT TRUSTED' T verify "$D/doc.p7s" "$D/doc"
expect_status "the forgery in the holder's name is not 'valid' without --ca (exit 7)" 7 'NOT TRUSTED' \
  T verify "$D/forged.p7s"
expect_status "the forgery with --ca root.pem (exit 7)" 7 'NOT TRUSTED' T verify --ca "$D/root.pem" "$D/forged.p7s"
expect_status "an endless signature file (/dev/zero) is refused, naming it and the limit (exit 2)" 2 \
  '/dev/zero is larger than 16 MiB' T verify /dev/zero
printf 'a changed contract\n' >"$D/doc.changed"
expect_status "a changed document: signature INVALID (exit 5)" 5 'INVALID' \
  T verify --ca "$D/root.pem" "$D/doc.p7s" "$D/doc.changed"

# ---- credentials: verified before anything changes ----------------------------------------------
echo 87654321 >"$D/wrongpuk"
cp "$CARD" "$D/before-retries.json"
expect_status "pin retries with the right PIN and a wrong PUK: refused (exit 3)" 3 'wrong PUK' \
  C --pin-file "$D/pin" --puk-file "$D/wrongpuk" pin retries --pin 5 --puk 5
expect_grep "the real PUK still works afterwards (PUK change to itself)" '^PUK changed' \
  sh -c "printf '12345678\n12345678\n' >'$D/pukpuk'; '$TESSERA_BIN' --vcard '$CARD' --puk-file '$D/pukpuk' puk change"
run sh -c "'$TESSERA_BIN' --vcard '$CARD' --json status | jq -r '.pin.tries_total'"
if [ "$OUT" = 3 ]; then ok "the retry counts are unchanged (PIN 3 tries)"; else notok "the retry counts are unchanged" "$OUT"; fi
printf '000000\n24681357\n12345678\n11223344\n' >"$D/setup-wrongpin"
expect_status "setup with a wrong current PIN: refused (exit 3)" 3 'wrong PIN' \
  C --pin-file "$D/setup-wrongpin" setup
expect_grep "the real PUK still works after the refused setup" '^PUK changed' \
  sh -c "'$TESSERA_BIN' --vcard '$CARD' --puk-file '$D/pukpuk' puk change"
run sh -c "'$TESSERA_BIN' --vcard '$CARD' --json status | jq -r '.puk.factory_default'"
if [ "$OUT" = true ]; then ok "the PUK is still the factory one (setup changed nothing)"; else notok "the PUK is still the factory one" "$OUT"; fi

# ---- renew install with the CA's PEM bundle -----------------------------------------------------
rm -f "$D/renewal.csr" "$D/renewal.p7s"
expect_ok "renew request for 9c (new key staged on the card)" \
  C --pin-file "$D/pin" renew request --slot 9c -o "$D/renewal"
renew_issue() {
  openssl x509 -req -in "$D/renewal.csr" -CA "$D/inter.pem" -CAkey "$D/inter.key" -set_serial 4 -days 30 \
    -sha256 -extfile "$D/sig.ext" -out "$D/renewed.pem" 2>/dev/null &&
    cat "$D/renewed.pem" "$D/inter.pem" >"$D/bundle.pem"
}
gate "the intermediate CA issues the renewed certificate; bundle = certificate + intermediate" renew_issue
expect_grep "renew install takes the PEM bundle" 'belongs to the renewed certificate: ok' \
  C --pin-file "$D/pin" renew install "$D/bundle.pem" --slot 9c
run C export --slot 9c --chain --format pem -o "$D/exported-chain.pem"
if [ "$(grep -c 'BEGIN CERTIFICATE' "$D/exported-chain.pem" 2>/dev/null)" = 2 ] &&
  openssl verify -CAfile "$D/root.pem" -untrusted "$D/exported-chain.pem" "$D/renewed.pem" >/dev/null 2>&1; then
  ok "the chain from the bundle is kept beside the renewed certificate (export --chain: 2 certificates, openssl verify ok)"
else
  notok "the chain from the bundle is kept beside the renewed certificate" "$(cat "$D/exported-chain.pem" 2>&1 | head -5)"
fi

# ---- a blocked PUK, and the reset it names -------------------------------------------------------
printf '77777777\n654321\n' >"$D/badunblock"
for i in 1 2 3; do run C --puk-file "$D/badunblock" pin unblock; done
expect_status "a blocked PUK names tessera reset" 3 'tessera reset' C --puk-file "$D/badunblock" pin unblock
cp "$CARD" "$D/before-reset.json"
expect_status "reset with a wrong serial typed: refused, nothing erased (exit 6)" 6 'not the card' \
  C reset --confirm-serial 999
check "the card file is byte-identical after the refused reset" same_file "$CARD" "$D/before-reset.json"
expect_grep "reset with the card's serial: factory state" 'factory state' C reset --confirm-serial 3100001
run sh -c "'$TESSERA_BIN' --vcard '$CARD' --json status | jq -c '[(.slots|length), .pin.factory_default, .puk.tries_left]'"
if [ "$OUT" = '[0,true,3]' ]; then ok "after the reset: no keys, factory PIN, PUK unblocked"; else notok "after the reset: no keys, factory PIN, PUK unblocked" "$OUT"; fi
