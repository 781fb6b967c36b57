#!/usr/bin/env bash
# Interop: the `tessera` control manager, every command on the virtual card, run twice:
#   MODE=inprocess  tessera --vcard CARD …               (no pcscd)
#   MODE=pcscd      tessera --reader "$READER" …         (card served by `tessera vcard serve`
#                                                          through the lab's pcscd + vpcd)
# Each outcome is read back independently of the command that caused it: certificates with
# `tessera export` and (pcscd) `yubico-piv-tool -a read-certificate`, counters with
# `tessera --json status` and (pcscd) `yubico-piv-tool -a status`, signatures and requests with
# openssl, registrations with certutil/modutil, the old key after renewal with pkcs11-tool.
# Refusals must leave the card untouched: the card file is byte-identical (inprocess), or
# `tessera --json status` and the served card file are unchanged (pcscd). Secrets reach
# tessera only through --pin-file/--puk-file/--password-file (pkcs11-tool and yubico-piv-tool,
# used as independent readers, take theirs on the command line: they have no file option).
# Fixtures (a P-256 test CA, .p12 e-Certs) are made with openssl in the work directory
# (tests/interop/lib/manager.bash).
# Run by pkg/scripts/test-all.sh; by hand:
#   bash pkg/scripts/pcsc-lab.sh up /tmp/lab && . /tmp/lab/env
#   TESSERA_BIN=$PWD/target/release/tessera LAB=/tmp/lab bash tests/interop/manager.sh
# MANAGER_MODES="inprocess" (or "pcscd") runs one mode only.
set -uo pipefail
. "$(dirname "$0")/lib/common.bash"
. "$(dirname "$0")/lib/manager.bash"

MODULE=${TESSERA_MODULE:-$(cd "$(dirname "$TESSERA_BIN")" && pwd)/libtessera_pkcs11.so}
MODES=${MANAGER_MODES:-inprocess pcscd}
unset TESSERA_VCARD

check "PKCS#11 module present ($MODULE)" test -r "$MODULE"
check "jq, certutil, modutil, pkcs11-tool, yubico-piv-tool installed" \
  command -v jq certutil modutil pkcs11-tool yubico-piv-tool
FIX="$WORK/fx"
gate "fixtures: test CA, .p12 e-Certs (modern, legacy, expired, RSA-1024, P-521, mismatched, corrupt)" \
  mk_fixtures "$WORK/fx"
expect_grep "fixture rsa-modern.p12 is modern protection (PBES2/PBKDF2/AES-256)" 'PBES2, PBKDF2, AES-256-CBC' \
  p12_protection "$FIX/rsa-modern.p12"
expect_grep "fixture ec-legacy.p12 is legacy protection (3DES key bag, RC2 certificates)" \
  'pbeWithSHA1And40BitRC2-CBC.*pbeWithSHA1And3-KeyTripleDES-CBC' p12_protection "$FIX/ec-legacy.p12"
# the mismatched file must be a well-formed PKCS#12 (MAC verified by openssl) holding a key
# that is not the certificate's: otherwise its refusal would prove nothing
mismatch_is_wellformed() {
  local k c
  openssl pkcs12 -in "$FIX/mismatch.p12" -passin "file:$FIX/pw" -nodes -out "$FIX/mismatch.out.pem" 2>&1 || return 1
  k=$(openssl pkey -in "$FIX/mismatch.out.pem" -pubout 2>/dev/null)
  c=$(openssl x509 -in "$FIX/mismatch.out.pem" -noout -pubkey 2>/dev/null)
  [ -n "$k" ] && [ -n "$c" ] && [ "$k" != "$c" ] || { echo "key/cert missing or matching"; return 1; }
}
check "fixture mismatch.p12 parses (MAC ok) and its key is not its certificate's" mismatch_is_wellformed
# CRLs of the test CA: one before and one after revoking rsa-legacy (the e-Cert renewed below)
crls() {
  SAN_EMAIL=x openssl ca -config "$FIX/ca.cnf" -gencrl -out "$FIX/empty.crl" &&
    SAN_EMAIL=x openssl ca -config "$FIX/ca.cnf" -revoke "$FIX/rsa-legacy.pem" &&
    SAN_EMAIL=x openssl ca -config "$FIX/ca.cnf" -gencrl -out "$FIX/revoked.crl" &&
    openssl crl -in "$FIX/revoked.crl" -noout -text | grep -qi "$(openssl x509 -in "$FIX/rsa-legacy.pem" -noout -serial | cut -d= -f2)"
}
check "fixtures: an empty CRL, and a CRL listing rsa-legacy's serial (openssl ca -revoke/-gencrl)" crls

# ---- secrets (files only) -------------------------------------------------------------------
SEC="$WORK/secrets"
mkdir -p "$SEC"
chmod 700 "$SEC"
secret() { # secret NAME LINE...: a file with one secret per line
  local n=$1
  shift
  printf '%s\n' "$@" >"$SEC/$n"
  echo "$SEC/$n"
}
PIN1=123456 PUK1=12345678
PIN2=24681357 PUK2=87654321
PIN3=11223344 PUK3=55667788
PIN4=99887766

# ---- per-mode helpers -------------------------------------------------------------------------
# TS ARGS...: tessera on this mode's card
TS() {
  if [ "$MODE" = inprocess ]; then
    "$TESSERA_BIN" --vcard "$CARD" "$@"
  else
    "$TESSERA_BIN" --reader "$READER" "$@"
  fi
}
Y() { yubico-piv-tool -r "$READER" "$@"; }
# P11 ARGS...: pkcs11-tool with our module, on this mode's card
P11() {
  if [ "$MODE" = inprocess ]; then
    TESSERA_VCARD="$CARD" pkcs11-tool --module "$MODULE" "$@"
  else
    pkcs11-tool --module "$MODULE" "$@"
  fi
}
# certutil/modutil see the card through the module: in-process it finds the card file here
NSSENV() {
  if [ "$MODE" = inprocess ]; then TESSERA_VCARD="$CARD" "$@"; else "$@"; fi
}

# snapshot NAME: what "the card" is now (card file bytes / tessera --json status)
snapshot() {
  if [ "$MODE" = inprocess ]; then
    cp "$CARD" "$W/snap-$1"
  else
    TS --json status >"$W/snap-$1" 2>&1
    cp "$CARD" "$W/snap-$1.file"
  fi
}
unchanged() { # unchanged NAME: the card is as the snapshot NAME
  if [ "$MODE" = inprocess ]; then
    cmp "$CARD" "$W/snap-$1" || { echo "card file changed"; return 1; }
  else
    TS --json status 2>&1 | diff -u "$W/snap-$1" - || { echo "tessera --json status changed"; return 1; }
    # the card server keeps the card's state in the file: it must not have been rewritten either
    cmp "$CARD" "$W/snap-$1.file" || { echo "the served card file changed"; return 1; }
  fi
}

# refuse WHAT REGEX CMD...: CMD exits non-zero with a message matching REGEX, and the card
# is left as it was
refuse() {
  local what=$1 re=$2
  shift 2
  snapshot refuse
  expect_fail_grep "[$MODE] refused: $what (message /$re/)" "$re" "$@"
  check "[$MODE] refused: $what: the card is untouched" unchanged refuse
}

# status_is WHAT JQ-EXPR: `tessera --json status` parses and JQ-EXPR is true
status_is() {
  local what=$1 expr=$2
  run TS --json status
  if [ "$RC" -eq 0 ] && [ "$(jqv "$expr")" = true ]; then
    ok "[$MODE] $what"
  else
    notok "[$MODE] $what (exit $RC, jq '$expr' not true)" "$OUT"
  fi
}

# rfc2253 < subject: attribute names lower-cased (tessera says SERIALNUMBER, openssl serialNumber)
rfc2253() { sed -E 's/(^|,)([A-Za-z0-9.]+)=/\1\L\2=/g'; }
cert_subject() { openssl x509 -in "$1" -noout -subject -nameopt RFC2253 | sed 's/^subject=//' | rfc2253; }
p12_cert_der() { # p12_cert_der P12 OUT: the holder's certificate out of the file, DER
  openssl pkcs12 -legacy -in "$1" -passin "file:$FIX/pw" -nokeys -clcerts 2>/dev/null |
    openssl x509 -outform DER -out "$2"
}

# loaded_as SLOT NAME: slot SLOT holds NAME's certificate: subject in status equals the .p12's;
# `tessera export --format der` equals `openssl x509 -outform DER` of the .p12's certificate;
# in pcscd mode also `yubico-piv-tool -a read-certificate`
loaded_as() {
  local s=$1 n=$2 want got
  p12_cert_der "$FIX/$n.p12" "$W/$n.p12cert.der"
  want=$(openssl x509 -inform DER -in "$W/$n.p12cert.der" -noout -subject -nameopt RFC2253 | sed 's/^subject=//' | rfc2253)
  run TS --json status
  got=$(jqv ".slots[] | select(.slot == \"$s\") | .certificate.subject" | rfc2253)
  if [ "$RC" -eq 0 ] && [ -n "$want" ] && [ "$got" = "$want" ]; then
    ok "[$MODE] status: slot $s subject is the .p12's ($want)"
  else
    notok "[$MODE] status: slot $s subject is the .p12's (want '$want', got '$got')" "$OUT"
  fi
  rm -f "$W/export-$s.der"
  expect_ok "[$MODE] export --slot $s --format der" TS export --slot "$s" --format der -o "$W/export-$s.der"
  check "[$MODE] export --format der of $s equals openssl x509 -outform DER of $n.p12's certificate byte for byte" \
    der_eq "$W/export-$s.der" "$W/$n.p12cert.der"
  if [ "$MODE" = pcscd ]; then
    rm -f "$W/ypt-$s.der"
    expect_ok "[$MODE] yubico-piv-tool -a read-certificate -s $s" Y -a read-certificate -s "$s" -K DER -o "$W/ypt-$s.der"
    check "[$MODE] yubico-piv-tool reads $n's certificate in $s byte for byte" der_eq "$W/ypt-$s.der" "$W/$n.p12cert.der"
  fi
}

# pin_tries_are LEFT TOTAL: tessera --json status and (pcscd) yubico-piv-tool agree
pin_tries_are() {
  status_is "status: PIN $1 of $2 tries left" ".pin.tries_left == $1 and .pin.tries_total == $2"
  if [ "$MODE" = pcscd ]; then
    expect_grep "[$MODE] yubico-piv-tool -a status: PIN tries left: $1" "PIN tries left:[[:space:]]+$1\$" Y -a status
  fi
}
puk_tries_are() {
  status_is "status: PUK $1 of $2 tries left" ".puk.tries_left == $1 and .puk.tries_total == $2"
}

# works_with_pin FILE WHAT: the PIN in FILE logs in (a CMS signature that openssl verifies)
works_with_pin() {
  local f=$1 what=$2
  rm -f "$W/pinproof.p7s"
  expect_ok "[$MODE] $what: tessera sign with it" TS --pin-file "$f" sign "$W/doc" -o "$W/pinproof.p7s"
  expect_grep "[$MODE] $what: openssl cms -verify accepts that signature" 'Verification successful' \
    openssl cms -verify -binary -inform DER -in "$W/pinproof.p7s" -content "$W/doc" -CAfile "$FIX/ca.pem" -out /dev/null
}

# ---- the scenario --------------------------------------------------------------------------------
scenario() {
  MODE=$1
  W="$WORK/$MODE"
  mkdir -p "$W/backup"
  CARD="$W/card.json"
  local serial=$2 out retired rid oldser
  head -c 4000 /dev/urandom >"$W/doc"
  expect_ok "[$MODE] tessera vcard init (serial $serial)" "$TESSERA_BIN" vcard init "$CARD" --serial "$serial"
  if [ "$MODE" = pcscd ]; then
    start_card "$CARD" || return 1
  fi
  local pin1 puk1
  pin1=$(secret pin1 "$PIN1")
  puk1=$(secret puk1 "$PUK1")
  local pw="$FIX/pw"

  # ---- list, status ----
  run TS --json list
  if [ "$RC" -eq 0 ] && [ "$(jqv "[.[] | select(.serial == \"$serial\")] | length")" = 1 ]; then
    ok "[$MODE] list --json names the card (serial $serial)"
  else notok "[$MODE] list --json names the card (serial $serial)" "$OUT"; fi
  if [ "$MODE" = pcscd ]; then
    expect_grep "[$MODE] list shows the lab reader and the serial" "$READER.*serial $serial" TS list
  else
    expect_grep "[$MODE] list shows the card file and the serial" "serial $serial" TS list
  fi
  status_is "status --json: serial, PIN 3/3, PUK 3/3, no keys, three factory warnings" \
    ".serial == \"$serial\" and .pin.tries_left == 3 and .puk.tries_total == 3 and (.slots | length) == 0 and .pin.factory_default and .puk.factory_default and .management_key_default and (.warnings | length) == 3"
  expect_grep "[$MODE] status (text): PIN 3 of 3 tries left (factory default)" 'PIN: +3 of 3 tries left \(factory default\)' TS status
  pin_tries_are 3 3

  # ---- import: legacy and modern, RSA-2048 and P-256, replacements with backups ----
  run TS --password-file "$pw" --pin-file "$pin1" --json import "$FIX/ec-legacy.p12" --backup-dir "$W/backup"
  if [ "$RC" -eq 0 ] && [ "$(jqv '.slot + " " + (.verified|tostring) + " " + (.backup|tostring)')" = "9a true null" ]; then
    ok "[$MODE] import ec-legacy.p12 (P-256, -legacy 3DES/RC2): slot 9a from key usage, key proven, nothing replaced"
  else notok "[$MODE] import ec-legacy.p12 (P-256, -legacy) into 9a" "$OUT"; fi
  loaded_as 9a ec-legacy
  run TS --password-file "$pw" --pin-file "$pin1" --json import "$FIX/rsa-modern.p12" --backup-dir "$W/backup"
  if [ "$RC" -eq 0 ] && [ "$(jqv '.slot + " " + (.verified|tostring) + " " + (.chain|tostring)')" = "9c true 1" ]; then
    ok "[$MODE] import rsa-modern.p12 (RSA-2048, AES-256/PBKDF2): slot 9c from key usage (nonRepudiation), chain of 1 CA"
  else notok "[$MODE] import rsa-modern.p12 (RSA-2048, modern) into 9c" "$OUT"; fi
  loaded_as 9c rsa-modern
  # replacements: the old certificate is saved first
  local n s old bk
  for n in ec-modern:9a:ec-legacy rsa-legacy:9c:rsa-modern; do
    IFS=: read -r n s old <<<"$n"
    run TS --password-file "$pw" --pin-file "$pin1" --json import "$FIX/$n.p12" --backup-dir "$W/backup"
    bk=$(jqv '.backup // empty')
    if [ "$RC" -eq 0 ] && [ "$(jqv .slot)" = "$s" ] && [ "$(jqv .verified)" = true ] && [ -n "$bk" ]; then
      ok "[$MODE] import $n.p12 replaces $old in $s and names a backup file"
    else notok "[$MODE] import $n.p12 replaces $old in $s and names a backup file" "$OUT"; fi
    check "[$MODE] backup file of the replaced $s certificate exists" test -s "$bk"
    openssl x509 -in "$bk" -outform DER -out "$W/backup-$s.der" 2>/dev/null
    check "[$MODE] backup file equals the replaced certificate ($old) byte for byte" der_eq "$W/backup-$s.der" "$FIX/$old.der"
    loaded_as "$s" "$n"
  done
  status_is "status: 9a and 9c with days_left 364..365, state ok" \
    '[.slots[] | select(.slot == "9a" or .slot == "9c") | .certificate.days_left >= 364 and .certificate.days_left <= 365 and .certificate.state == "ok"] == [true, true]'

  # ---- import refusals ----
  refuse "import with a wrong .p12 password" 'wrong password' \
    TS --password-file "$FIX/wrongpw" --pin-file "$pin1" import "$FIX/rsa-modern.p12" --backup-dir "$W/backup"
  refuse "import of a .p12 whose key does not match its certificate" 'do not belong together|does not match' \
    TS --password-file "$pw" --pin-file "$pin1" import "$FIX/mismatch.p12" --backup-dir "$W/backup"
  refuse "import of an expired certificate without --force" 'expired.*--force' \
    TS --password-file "$pw" --pin-file "$pin1" import "$FIX/expired.p12" --slot 9e --backup-dir "$W/backup"
  refuse "import of a corrupt (truncated) .p12" 'not a readable PKCS#12|corrupt|truncated' \
    TS --password-file "$pw" --pin-file "$pin1" import "$FIX/corrupt.p12" --backup-dir "$W/backup"
  refuse "import of an RSA-1024 key" 'RSA keys of 2048.*not 1024|algorithm' \
    TS --password-file "$pw" --pin-file "$pin1" import "$FIX/rsa1024.p12" --backup-dir "$W/backup"
  refuse "import of a P-521 key" "algorithm is not one the card has|P-521|algorithm" \
    TS --password-file "$pw" --pin-file "$pin1" import "$FIX/p521.p12" --backup-dir "$W/backup"
  # a wrong card PIN spends a try (the card file changes), but nothing is loaded
  expect_fail_grep "[$MODE] refused: import with a wrong card PIN (shows tries left)" 'wrong PIN: 2 tries left' \
    TS --password-file "$pw" --pin-file "$(secret badpin 000000)" import "$FIX/rsa-modern.p12" --slot 9d --backup-dir "$W/backup"
  status_is "refused import with a wrong PIN: slot 9d still empty, PIN 2 of 3" \
    '([.slots[] | select(.slot == "9d")] | length) == 0 and .pin.tries_left == 2'
  expect_ok "[$MODE] sign with the right PIN after the wrong one" TS --pin-file "$pin1" sign "$W/doc" -o "$W/reset.p7s"
  pin_tries_are 3 3
  # days left: a warning under 30 days, urgent under 7
  expect_ok "[$MODE] import soon.p12 (20 days left) into 9e" \
    TS --password-file "$pw" --pin-file "$pin1" import "$FIX/soon.p12" --slot 9e --backup-dir "$W/backup"
  status_is "status: 9e with 19..20 days left is state warning, with a renew warning" \
    '(.slots[] | select(.slot == "9e") | .certificate.state == "warning" and .certificate.days_left >= 19 and .certificate.days_left <= 20) and ([.warnings[] | select(test("9e.*expires in"))] | length) == 1'
  expect_ok "[$MODE] import urgent.p12 (5 days left) into 9e" \
    TS --password-file "$pw" --pin-file "$pin1" import "$FIX/urgent.p12" --slot 9e --backup-dir "$W/backup"
  status_is "status: 9e with 4..5 days left is state urgent, with a renew-now warning" \
    '(.slots[] | select(.slot == "9e") | .certificate.state == "urgent" and .certificate.days_left >= 4 and .certificate.days_left <= 5) and ([.warnings[] | select(test("9e.*renew now"))] | length) == 1'
  expect_grep "[$MODE] status (text) shows the urgent 9e certificate" 'Days left: +[45] \(urgent' TS status
  expect_ok "[$MODE] import expired.p12 with --force into 9e" \
    TS --password-file "$pw" --pin-file "$pin1" import "$FIX/expired.p12" --slot 9e --force --backup-dir "$W/backup"
  status_is "status: 9e holds the expired certificate (state expired, days_left < 0, a warning)" \
    '(.slots[] | select(.slot == "9e") | .certificate.state == "expired" and .certificate.days_left < 0) and ([.warnings[] | select(test("9e.*expired"))] | length) == 1'
  loaded_as 9e expired
  refuse "renew request for the expired certificate in 9e" 'expired' \
    TS --pin-file "$pin1" renew request --slot 9e -o "$W/ren-expired"
  refuse "sign with the expired certificate in 9e (no --force)" 'not valid now.*--force|expired.*--force' \
    TS --pin-file "$pin1" sign --slot 9e "$W/doc" -o "$W/expired.p7s"
  expect_ok "[$MODE] sign --force with the expired certificate in 9e" \
    TS --pin-file "$pin1" sign --force --slot 9e "$W/doc" -o "$W/expired.p7s"
  expect_grep "[$MODE] openssl cms -verify -no_check_time checks that signature (made by the expired e-Cert's key)" \
    'Verification successful' openssl cms -verify -no_check_time -binary -inform DER -in "$W/expired.p7s" -content "$W/doc" -CAfile "$FIX/ca.pem" -out /dev/null

  # ---- export --chain ----
  rm -f "$W/chain.pem"
  expect_ok "[$MODE] export --slot 9c --chain -o FILE" TS export --slot 9c --chain -o "$W/chain.pem"
  chain_ok() {
    local n
    n=$(grep -c 'BEGIN CERTIFICATE' "$W/chain.pem")
    [ "$n" = 2 ] || { echo "$n certificates in the chain export, want 2"; return 1; }
    awk '/BEGIN CERT/{i++} {print > ("'"$W"'/chain-" i ".pem")}' "$W/chain.pem"
    openssl x509 -in "$W/chain-1.pem" -outform DER -out "$W/chain-1.der" &&
      openssl x509 -in "$W/chain-2.pem" -outform DER -out "$W/chain-2.der" &&
      openssl x509 -in "$FIX/ca.pem" -outform DER -out "$W/ca.der" &&
      der_eq "$W/chain-1.der" "$FIX/rsa-legacy.der" && der_eq "$W/chain-2.der" "$W/ca.der"
  }
  check "[$MODE] export --chain: the e-Cert then the CA certificate (byte for byte)" chain_ok
  expect_grep "[$MODE] openssl verify: the exported certificate chains to the exported CA" ': OK' \
    openssl verify -CAfile "$W/chain-2.pem" "$W/chain-1.pem"
  run TS export --slot 9c
  if [ "$RC" -eq 0 ] && [ "$OUT" = "$(cat "$W/chain-1.pem")" ]; then ok "[$MODE] export (PEM to stdout) equals the first certificate of the chain"
  else notok "[$MODE] export (PEM to stdout) equals the first certificate of the chain" "$OUT"; fi

  # ---- sign / verify ----
  rm -f "$W/doc.p7s" "$W/att.p7s"
  expect_ok "[$MODE] sign FILE (default: 9c)" TS --pin-file "$pin1" sign "$W/doc"
  check "[$MODE] sign wrote FILE.p7s" test -s "$W/doc.p7s"
  expect_grep "[$MODE] openssl cms -verify accepts the detached signature" 'Verification successful' \
    openssl cms -verify -binary -inform DER -in "$W/doc.p7s" -content "$W/doc" -CAfile "$FIX/ca.pem" -out /dev/null
  openssl cms -verify -binary -inform DER -in "$W/doc.p7s" -content "$W/doc" -CAfile "$FIX/ca.pem" \
    -out /dev/null -signer "$W/signer.pem" >/dev/null 2>&1
  check "[$MODE] the signer certificate in the signature is the 9c e-Cert" \
    der_eq <(openssl x509 -in "$W/signer.pem" -outform DER) "$FIX/rsa-legacy.der"
  expect_fail_grep "[$MODE] tessera verify without --ca: intact, but the test CA is not in the system trust store" \
    'NOT TRUSTED' TS verify "$W/doc.p7s" "$W/doc"
  expect_grep "[$MODE] tessera verify --ca ca.pem accepts it" 'signature valid' TS verify --ca "$FIX/ca.pem" "$W/doc.p7s" "$W/doc"
  expect_fail "[$MODE] tessera verify --ca with another CA rejects it" TS verify --ca "$FIX/otherca.pem" "$W/doc.p7s" "$W/doc"
  cp "$W/doc" "$W/doc.altered"
  printf 'x' | dd of="$W/doc.altered" bs=1 seek=100 conv=notrunc 2>/dev/null
  expect_fail_grep "[$MODE] tessera verify rejects an altered file" 'INVALID|altered' \
    TS verify "$W/doc.p7s" "$W/doc.altered"
  expect_fail "[$MODE] openssl cms -verify also rejects the altered file" \
    openssl cms -verify -binary -inform DER -in "$W/doc.p7s" -content "$W/doc.altered" -CAfile "$FIX/ca.pem" -out /dev/null
  expect_ok "[$MODE] sign --attached --slot 9a -o att.p7s" TS --pin-file "$pin1" sign --attached --slot 9a -o "$W/att.p7s" "$W/doc"
  rm -f "$W/att.out"
  expect_grep "[$MODE] openssl cms -verify accepts the attached (ECDSA) signature" 'Verification successful' \
    openssl cms -verify -binary -inform DER -in "$W/att.p7s" -CAfile "$FIX/ca.pem" -out "$W/att.out"
  check "[$MODE] the attached signature carries the file's content" cmp "$W/att.out" "$W/doc"
  expect_grep "[$MODE] tessera verify accepts the attached signature" 'signature valid' TS verify --ca "$FIX/ca.pem" "$W/att.p7s"
  expect_fail "[$MODE] tessera verify rejects the attached signature against an altered file" \
    TS verify "$W/att.p7s" "$W/doc.altered"

  # ---- renewal of 9c (rsa-legacy) ----
  rm -f "$W/ren-revoked.csr" "$W/ren-revoked.p7s"
  refuse "renew request with a CRL listing the certificate" 'revoked' \
    TS --pin-file "$pin1" renew request --slot 9c --crl "$FIX/revoked.crl" --ca "$FIX/ca.pem" -o "$W/ren-revoked"
  check "[$MODE] refused renew request wrote no files" test ! -e "$W/ren-revoked.csr" -a ! -e "$W/ren-revoked.p7s"
  refuse "renew request with the revoked CRL, without --ca" 'revoked' \
    TS --pin-file "$pin1" renew request --slot 9c --crl "$FIX/revoked.crl" -o "$W/ren-revoked"
  expect_grep "[$MODE] renew request with a CRL not listing it says revocation was checked" \
    'revocation checked: not listed' \
    TS --pin-file "$pin1" renew request --slot 9c --crl "$FIX/empty.crl" --ca "$FIX/ca.pem" -o "$W/ren-crl"
  expect_grep "[$MODE] renew request without --crl says revocation was not checked" 'revocation NOT checked|not checked' \
    TS --pin-file "$pin1" renew request --slot 9c -o "$W/ren"
  run TS --pin-file "$pin1" --json renew request --slot 9c -o "$W/ren-json"
  if [ "$RC" -eq 0 ] && [ "$(jqv '.revocation.checked')" = false ] && [ "$(jqv '.reused_key')" = true ]; then
    ok "[$MODE] renew request --json parses (revocation.checked false, the staged key reused)"
  else notok "[$MODE] renew request --json parses (revocation.checked false, the staged key reused)" "$OUT"; fi
  local subj_old
  subj_old=$(cert_subject "$FIX/rsa-legacy.pem")
  expect_grep "[$MODE] openssl req -verify accepts the request" '(verify OK|self-signature verify OK)' \
    openssl req -verify -in "$W/ren.csr" -noout -subject -nameopt RFC2253
  run openssl req -in "$W/ren.csr" -noout -subject -nameopt RFC2253
  if [ "$(printf '%s\n' "$OUT" | sed -n 's/^subject=//p' | rfc2253)" = "$subj_old" ]; then
    ok "[$MODE] the request's subject is unchanged ($subj_old)"
  else notok "[$MODE] the request's subject is unchanged (want $subj_old)" "$OUT"; fi
  run openssl req -in "$W/ren.csr" -noout -text
  if printf '%s\n' "$OUT" | grep >/dev/null 'email:mari@example.ee'; then ok "[$MODE] the request carries the subjectAltName e-mail"
  else notok "[$MODE] the request carries the subjectAltName e-mail" "$OUT"; fi
  new_key_differs() {
    local a b
    a=$(openssl req -in "$W/ren.csr" -noout -pubkey) && b=$(openssl x509 -in "$FIX/rsa-legacy.pem" -noout -pubkey) &&
      [ "$a" != "$b" ] || { echo "the request's key is the current key"; return 1; }
  }
  check "[$MODE] the request's key is a new key, not the current one" new_key_differs
  rm -f "$W/ren.content"
  expect_grep "[$MODE] openssl cms -verify accepts the signed request against the old certificate's CA" 'Verification successful' \
    openssl cms -verify -binary -inform DER -in "$W/ren.p7s" -CAfile "$FIX/ca.pem" -out "$W/ren.content" -signer "$W/ren.signer.pem"
  check "[$MODE] the signed request's signer is the current (old) certificate" \
    der_eq <(openssl x509 -in "$W/ren.signer.pem" -outform DER) "$FIX/rsa-legacy.der"
  check "[$MODE] the signed request's content is the PKCS#10 request" \
    der_eq "$W/ren.content" <(openssl req -in "$W/ren.csr" -outform DER)
  run TS --json status
  retired=$(jqv '[.slots[] | select(.slot | test("^(8[2-9a-f]|9[0-5])$"))] | .[0].slot // empty')
  if [ "$RC" -eq 0 ] && [ -n "$retired" ] && [ "$(jqv '.key_history >= 1')" = true ]; then
    ok "[$MODE] status: the staged key is in retired slot $retired, key history counts it"
  else notok "[$MODE] status: the staged key is in a retired slot, key history counts it" "$OUT"; fi

  # a message encrypted to the old certificate before the renewal
  head -c 32 /dev/urandom >"$W/secret"
  openssl x509 -in "$FIX/rsa-legacy.pem" -noout -pubkey >"$W/oldpub.pem"
  expect_ok "[$MODE] openssl pkeyutl -encrypt to the old certificate's key" \
    openssl pkeyutl -encrypt -pubin -inkey "$W/oldpub.pem" -pkeyopt rsa_padding_mode:pkcs1 -in "$W/secret" -out "$W/secret.enc"
  # the CA issues the renewal from the request; and one with a changed subject
  oldser=$(openssl x509 -in "$FIX/rsa-legacy.pem" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f')
  expect_ok "[$MODE] the test CA issues the renewed certificate from the request" \
    env SAN_EMAIL=x openssl x509 -req -in "$W/ren.csr" -CA "$FIX/ca.pem" -CAkey "$FIX/ca.key" -set_serial 0x5e11a1 \
    -days 365 -sha256 -extfile "$FIX/ext.cnf" -extensions sig_renewed -copy_extensions copy -out "$W/renewed.pem"
  expect_ok "[$MODE] the test CA issues a certificate for the same key with a changed subject" \
    env SAN_EMAIL=x openssl x509 -req -in "$W/ren.csr" -CA "$FIX/ca.pem" -CAkey "$FIX/ca.key" -set_serial 0x5e11a2 \
    -days 365 -sha256 -extfile "$FIX/ext.cnf" -extensions sig_renewed -copy_extensions copy \
    -subj "/C=EE/O=Tessera Test/CN=Mari Kask/serialNumber=PNOEE-48001010001" -out "$W/changed.pem"
  refuse "renew install of a certificate with a changed subject" 'data within the certificate has changed' \
    TS --pin-file "$pin1" renew install "$W/changed.pem"
  refuse "renew install --slot 9c of a certificate with a changed subject" 'data within the certificate has changed' \
    TS --pin-file "$pin1" renew install "$W/changed.pem" --slot 9c
  refuse "renew install of a certificate for a key not staged on the card" 'not the new key staged|staged' \
    TS --pin-file "$pin1" renew install "$FIX/rsa-modern.pem"
  run TS --pin-file "$pin1" renew install "$W/renewed.pem"
  rid=$(printf '%s\n' "$OUT" | sed -n 's/.*kept in retired slot \([0-9a-fA-F]*\).*/\1/p' | head -n1)
  if [ "$RC" -eq 0 ] && [ -n "$rid" ]; then ok "[$MODE] renew install accepts the renewed certificate (old key kept in retired slot $rid)"
  else notok "[$MODE] renew install accepts the renewed certificate" "$OUT"; fi
  status_is "status: 9c holds the renewed certificate (serial 5e11a1), the retired slot the old one ($oldser)" \
    "(.slots[] | select(.slot == \"9c\") | .certificate.serial | ltrimstr(\"00\")) == \"5e11a1\" and (.slots[] | select(.slot == \"${rid:-none}\") | .certificate.serial | ltrimstr(\"00\")) == \"$(printf '%s' "$oldser" | sed 's/^00//')\" and .key_history == 1"
  rm -f "$W/export-9c.der"
  expect_ok "[$MODE] export --slot 9c --format der after the renewal" TS export --slot 9c --format der -o "$W/export-9c.der"
  check "[$MODE] the exported 9c certificate is the renewed one byte for byte" \
    der_eq "$W/export-9c.der" <(openssl x509 -in "$W/renewed.pem" -outform DER)
  if [ "$MODE" = pcscd ]; then
    rm -f "$W/ypt-9c.der"
    expect_ok "[$MODE] yubico-piv-tool -a read-certificate -s 9c after the renewal" Y -a read-certificate -s 9c -K DER -o "$W/ypt-9c.der"
    check "[$MODE] yubico-piv-tool reads the renewed certificate in 9c" der_eq "$W/ypt-9c.der" <(openssl x509 -in "$W/renewed.pem" -outform DER)
  fi
  # the old key, now in key history, decrypts what was encrypted to the old certificate
  local id
  if [ -n "$rid" ]; then
    id=$(printf '%02d' $((0x$rid - 0x82 + 5)))
    rm -f "$W/secret.dec"
    expect_ok "[$MODE] pkcs11-tool --decrypt --id $id (retired $rid) -m RSA-PKCS" \
      P11 --login --pin "$PIN1" --decrypt --id "$id" -m RSA-PKCS -i "$W/secret.enc" -o "$W/secret.dec"
    check "[$MODE] the old key in key history decrypted the message encrypted to the old certificate" cmp "$W/secret" "$W/secret.dec"
  else
    notok "[$MODE] old key decrypts after renewal (no retired slot reported by renew install)"
  fi
  rm -f "$W/doc2.p7s"
  expect_ok "[$MODE] sign after the renewal" TS --pin-file "$pin1" sign "$W/doc" -o "$W/doc2.p7s"
  openssl cms -verify -binary -inform DER -in "$W/doc2.p7s" -content "$W/doc" -CAfile "$FIX/ca.pem" \
    -out /dev/null -signer "$W/signer2.pem" >/dev/null 2>&1
  check "[$MODE] the new signature verifies with openssl and is made by the renewed certificate" \
    der_eq <(openssl x509 -in "$W/signer2.pem" -outform DER 2>/dev/null) <(openssl x509 -in "$W/renewed.pem" -outform DER)

  # ---- register firefox ----
  local prof="$W/profile" label nick
  mkdir -p "$prof"
  expect_ok "[$MODE] certutil -N --empty-password (a fresh profile database)" certutil -N --empty-password -d "sql:$prof"
  expect_ok "[$MODE] register firefox --profile DIR --module" TS register firefox --profile "$prof" --module "$MODULE"
  label="Tessera PIV #$serial"
  nick="$label:Certificate for Digital Signature"
  run NSSENV certutil -L -h all -d "sql:$prof"
  if [ "$RC" -eq 0 ] && printf '%s\n' "$OUT" | grep >/dev/null -F "$nick"; then ok "[$MODE] certutil -L -h all lists the card's certificate ($nick)"
  else notok "[$MODE] certutil -L -h all lists the card's certificate ($nick)" "$OUT"; fi
  rm -f "$W/nss-9c.pem"
  nss_cert() { NSSENV certutil -L -d "sql:$prof" -n "$nick" -a >"$W/nss-9c.pem"; }
  expect_ok "[$MODE] certutil -L -n '$nick' -a reads the certificate from the card" nss_cert
  openssl x509 -in "$W/nss-9c.pem" -outform DER -out "$W/nss-9c.der" 2>/dev/null
  openssl x509 -in "$W/renewed.pem" -outform DER -out "$W/renewed.der"
  check "[$MODE] the certificate NSS reads from the card is the renewed 9c certificate byte for byte" \
    der_eq "$W/nss-9c.der" "$W/renewed.der"
  expect_ok "[$MODE] register firefox a second time" TS register firefox --profile "$prof" --module "$MODULE"
  run modutil -list -dbdir "sql:$prof"
  if [ "$(printf '%s\n' "$OUT" | grep -cF "$MODULE")" = 1 ]; then ok "[$MODE] the second run is idempotent (modutil lists the module once)"
  else notok "[$MODE] the second run is idempotent (modutil lists the module once)" "$OUT"; fi
  expect_ok "[$MODE] register firefox --remove" TS register firefox --profile "$prof" --module "$MODULE" --remove
  run modutil -list -dbdir "sql:$prof"
  if [ "$RC" -eq 0 ] && ! printf '%s\n' "$OUT" | grep >/dev/null -F "$MODULE"; then ok "[$MODE] --remove: modutil no longer lists the module"
  else notok "[$MODE] --remove: modutil no longer lists the module" "$OUT"; fi
  run NSSENV certutil -L -h all -d "sql:$prof"
  if [ "$RC" -eq 0 ] && ! printf '%s\n' "$OUT" | grep >/dev/null -F "$label"; then ok "[$MODE] --remove: certutil no longer lists the card's certificates"
  else notok "[$MODE] --remove: certutil no longer lists the card's certificates" "$OUT"; fi

  # p11-kit module file (per user, in a private HOME)
  local home="$W/home"
  mkdir -p "$home"
  expect_ok "[$MODE] register p11-kit --user (HOME=$home)" env HOME="$home" XDG_CONFIG_HOME= \
    "$TESSERA_BIN" register p11-kit --user --module "$MODULE"
  expect_grep "[$MODE] the p11-kit module file names the module" "^module: *$MODULE\$" \
    cat "$home/.config/pkcs11/modules/tessera.module"
  expect_ok "[$MODE] register p11-kit --user --remove" env HOME="$home" XDG_CONFIG_HOME= \
    "$TESSERA_BIN" register p11-kit --user --remove --module "$MODULE"
  check "[$MODE] register p11-kit --remove deleted the module file" test ! -e "$home/.config/pkcs11/modules/tessera.module"

  # ---- doctor, demo, completions ----
  # the expired certificate in 9e is a doctor failure (as it should be): seen, then removed
  expect_fail_grep "[$MODE] doctor fails on the expired certificate in 9e" '^fail +card .*9e.*expired' \
    TS doctor --module "$MODULE"
  expect_ok "[$MODE] delete --slot 9e --yes (the expired e-Cert)" TS --yes --pin-file "$pin1" delete --slot 9e
  status_is "status: slot 9e is empty after delete" '([.slots[] | select(.slot == "9e")] | length) == 0'
  run TS doctor --module "$MODULE"
  if [ "$RC" -eq 0 ] && printf '%s\n' "$OUT" | grep -Eq '^ok +module' && printf '%s\n' "$OUT" | grep -Eq '^ok +cards?:.*'"$serial"; then
    ok "[$MODE] doctor exits 0 with the module and the card ok"
  else notok "[$MODE] doctor exits 0 with the module and the card ok (exit $RC)" "$OUT"; fi
  if [ "$MODE" = pcscd ]; then
    if printf '%s\n' "$OUT" | grep -Eq '^ok +pcscd'; then ok "[$MODE] doctor: pcscd ok"
    else notok "[$MODE] doctor: pcscd ok" "$OUT"; fi
  fi
  run TS --json doctor --module "$MODULE"
  if [ "$RC" -eq 0 ] && printf '%s' "$OUT" | jq -e . >/dev/null 2>&1; then ok "[$MODE] doctor --json parses"
  else notok "[$MODE] doctor --json parses" "$OUT"; fi
  expect_grep "[$MODE] demo exits 0 with every step verified" 'all [0-9]+ steps verified' TS demo
  run TS completions bash
  if [ "$RC" -eq 0 ] && printf '%s\n' "$OUT" | grep >/dev/null 'complete .*tessera' && bash -n <(printf '%s\n' "$OUT"); then
    ok "[$MODE] completions bash prints a completion script (bash -n parses it)"
  else notok "[$MODE] completions bash prints a completion script" "$(printf '%s\n' "$OUT" | tail -n 5)"; fi

  # ---- setup: new PIN and PUK, random PIN-protected management key ----
  expect_ok "[$MODE] setup (factory PIN/PUK replaced, random management key)" \
    TS --pin-file "$(secret setup "$PIN1" "$PIN2" "$PUK1" "$PUK2")" setup
  status_is "status after setup: no factory warnings, management key not default" \
    '(.pin.factory_default | not) and (.puk.factory_default | not) and (.management_key_default | not) and ([.warnings[] | select(test("factory"))] | length) == 0'
  run TS status
  if [ "$RC" -eq 0 ] && ! printf '%s\n' "$OUT" | grep >/dev/null -i 'factory'; then ok "[$MODE] status (text) after setup: no factory warnings"
  else notok "[$MODE] status (text) after setup: no factory warnings" "$OUT"; fi
  if [ "$MODE" = pcscd ]; then
    expect_fail_grep "[$MODE] yubico-piv-tool can no longer authenticate with the default management key" \
      'Failed authentication' Y -a set-chuid
    expect_grep "[$MODE] yubico-piv-tool verifies the new PIN" 'Successfully verified PIN' Y -a verify-pin -P "$PIN2"
  fi
  local pin2
  pin2=$(secret pin2 "$PIN2")
  run TS --password-file "$pw" --pin-file "$pin2" --json import "$FIX/rsa-modern.p12" --slot 9d --backup-dir "$W/backup"
  if [ "$RC" -eq 0 ] && [ "$(jqv .verified)" = true ]; then ok "[$MODE] import after setup works (the PIN-protected management key)"
  else notok "[$MODE] import after setup works (the PIN-protected management key)" "$OUT"; fi
  loaded_as 9d rsa-modern

  # ---- PIN and PUK ----
  expect_ok "[$MODE] pin change" TS --pin-file "$(secret pinchange "$PIN2" "$PIN3")" pin change
  local pin3 puk3
  pin3=$(secret pin3 "$PIN3")
  works_with_pin "$pin3" "the changed PIN works"
  pin_tries_are 3 3
  expect_ok "[$MODE] puk change" TS --puk-file "$(secret pukchange "$PUK2" "$PUK3")" puk change
  puk3=$(secret puk3 "$PUK3")
  puk_tries_are 3 3
  expect_ok "[$MODE] pin retries --pin 5 --puk 4" TS --pin-file "$pin3" --puk-file "$puk3" pin retries --pin 5 --puk 4
  pin_tries_are 5 5
  puk_tries_are 4 4
  works_with_pin "$pin3" "after pin retries the PIN still works"
  expect_ok "[$MODE] after pin retries the PUK still works (puk change to itself)" \
    TS --puk-file "$(secret pukself "$PUK3" "$PUK3")" puk change
  puk_tries_are 4 4
  status_is "status after pin retries: still no factory PIN/PUK" '(.pin.factory_default | not) and (.puk.factory_default | not)'
  expect_ok "[$MODE] pin retries --pin 3 --puk 3 (back)" TS --pin-file "$pin3" --puk-file "$puk3" pin retries --pin 3 --puk 3
  pin_tries_are 3 3
  puk_tries_are 3 3

  # doctor while everything is in order (a blocked PIN below is a doctor failure)
  expect_ok "[$MODE] doctor exits 0 after setup" TS doctor --module "$MODULE"

  local bad
  bad=$(secret wrongpin 00000000)
  expect_fail_grep "[$MODE] a wrong PIN is refused and shows the tries left" 'wrong PIN: 2 tries left' \
    TS --pin-file "$bad" sign "$W/doc" -o "$W/bad.p7s"
  pin_tries_are 2 3
  expect_fail_grep "[$MODE] second wrong PIN: 1 try left" 'wrong PIN: 1 tr(y|ies) left' \
    TS --pin-file "$bad" sign "$W/doc" -o "$W/bad.p7s"
  pin_tries_are 1 3
  expect_fail_grep "[$MODE] third wrong PIN blocks it" 'PIN is blocked' \
    TS --pin-file "$bad" sign "$W/doc" -o "$W/bad.p7s"
  pin_tries_are 0 3
  status_is "status: a warning says the PIN is blocked" '[.warnings[] | select(test("PIN is blocked"))] | length == 1'
  expect_fail_grep "[$MODE] the right PIN is refused while blocked" 'blocked' \
    TS --pin-file "$pin3" sign "$W/doc" -o "$W/bad.p7s"
  expect_fail_grep "[$MODE] doctor fails while the PIN is blocked" 'PIN is blocked' TS doctor --module "$MODULE"
  expect_fail_grep "[$MODE] pin unblock with a wrong PUK shows the PUK tries left" 'wrong PUK: 2 tries left' \
    TS --puk-file "$(secret unblockbad 00000000 "$PIN4")" pin unblock
  puk_tries_are 2 3
  expect_ok "[$MODE] pin unblock with the PUK and a new PIN" TS --puk-file "$(secret unblock "$PUK3" "$PIN4")" pin unblock
  pin_tries_are 3 3
  puk_tries_are 3 3
  works_with_pin "$(secret pin4 "$PIN4")" "after unblocking, the new PIN logs in"
  # three wrong PUKs block the PUK
  local badpuk
  badpuk=$(secret badpuk 00000000 11111111)
  expect_fail_grep "[$MODE] puk change with a wrong PUK shows tries left" 'wrong PUK: 2 tries left' \
    TS --puk-file "$badpuk" puk change
  puk_tries_are 2 3
  expect_fail_grep "[$MODE] second wrong PUK: 1 try left" 'wrong PUK: 1 tr(y|ies) left' TS --puk-file "$badpuk" puk change
  expect_fail_grep "[$MODE] third wrong PUK blocks the PUK" 'PUK is blocked' TS --puk-file "$badpuk" puk change
  puk_tries_are 0 3
  status_is "status: a warning says the PUK is blocked" '[.warnings[] | select(test("PUK is blocked"))] | length == 1'
  run TS status
  if [ "$RC" -eq 0 ] && printf '%s\n' "$OUT" | grep -Eq 'PUK: +0 of 3' && printf '%s\n' "$OUT" | grep >/dev/null 'PUK is blocked'; then
    ok "[$MODE] status (text): PUK 0 of 3 and blocked"
  else notok "[$MODE] status (text): PUK 0 of 3 and blocked" "$OUT"; fi
  expect_fail_grep "[$MODE] the right PUK is refused while blocked" 'PUK is blocked' \
    TS --puk-file "$(secret unblock2 "$PUK3" "$PIN4")" pin unblock
  if [ "$MODE" = pcscd ]; then
    expect_fail_grep "[$MODE] yubico-piv-tool -a unblock-pin with the right PUK fails too" 'puk code is blocked|blocked' \
      Y -a unblock-pin -P "$PUK3" -N "$PIN4"
  fi
  pin_tries_are 3 3

  # ---- delete ----
  refuse "delete --slot 9a without --yes and without a terminal" 'confirm|--yes' \
    TS --pin-file "$SEC/pin4" delete --slot 9a
  expect_ok "[$MODE] delete --slot 9a --yes" TS --yes --pin-file "$SEC/pin4" delete --slot 9a
  status_is "status: slot 9a is empty, 9c still there" '([.slots[] | select(.slot == "9a")] | length) == 0 and ([.slots[] | select(.slot == "9c")] | length) == 1'
  expect_fail "[$MODE] export --slot 9a fails after delete" TS export --slot 9a -o "$W/gone.pem"
  if [ "$MODE" = pcscd ]; then
    expect_fail "[$MODE] yubico-piv-tool -a read-certificate -s 9a fails after delete" \
      Y -a read-certificate -s 9a -o "$W/gone-ypt.pem"
  fi
  run P11 -O
  if [ "$RC" -eq 0 ] && ! printf '%s\n' "$OUT" | grep -Eq 'ID: +01$'; then ok "[$MODE] pkcs11-tool -O lists no object with ID 01 after delete"
  else notok "[$MODE] pkcs11-tool -O lists no object with ID 01 after delete" "$OUT"; fi

  if [ "$MODE" = pcscd ]; then stop_card; fi
}

for m in $MODES; do
  case "$m" in
    inprocess) scenario inprocess 1000201 ;;
    pcscd) scenario pcscd 1000202 ;;
    *) notok "unknown mode $m" ;;
  esac
done
