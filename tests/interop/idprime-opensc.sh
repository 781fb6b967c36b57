#!/usr/bin/env bash
# Interop: OpenSC's own idprime driver (card-idprime.c + pkcs15-idprime.c, Debian's 0.23) judges
# the virtual IDPrime card (`tessera vcard init --kind idprime --personalize …`) through the
# lab's pcscd + vpcd reader: the card is faithful only if OpenSC accepts it as a real IDPrime.
#   - two e-Certs (.p12, made here by a demo CA with openssl) personalised into kxc00 and kxc01;
#   - opensc-tool names the IDPrime driver and reads the card id; pkcs11-tool lists the token
#     (label from p11/tinfo, serial from cardid) and OpenSC's objects ("Certificate 1", IDs
#     0001/0002); each certificate read back equals the .p12's byte for byte;
#   - login with the factory PIN 0000; SHA256-RSA-PKCS and SHA256-RSA-PKCS-PSS signatures with
#     both keys, verified by openssl with the certificate; RSA-PKCS decryption of a message
#     openssl encrypted to the certificate (a 257-byte chained PSO DECIPHER);
#   - a wrong PIN costs exactly one try (63Cx read back on the wire with opensc-tool, and
#     pkcs11-tool's "final user PIN try"), the right PIN restores the counter; a PIN change with
#     pkcs11-tool --change-pin, then login with the new PIN only; finally three wrong PINs block
#     the PIN (CKR_PIN_LOCKED, 6983) — an IDPrime is unblocked by the issuer's admin key;
#   - the 940 persona (--model 940): detected, signs with its zero-padded PIN, changes the PIN.
# The APDUs OpenSC sent in each step are summarised (PINs redacted) into the output and into
# LAB/idprime-opensc-apdu-trace.txt, for the author of a host-side driver.
# Run by pkg/scripts/test-all.sh; by hand (under a minute):
#   bash pkg/scripts/pcsc-lab.sh up /tmp/labi && . /tmp/labi/env
#   TESSERA_BIN=$PWD/target/release/tessera LAB=/tmp/labi bash tests/interop/idprime-opensc.sh
#   bash pkg/scripts/pcsc-lab.sh down /tmp/labi
set -uo pipefail
. "$(dirname "$0")/lib/common.bash"

OPENSC_MOD=${OPENSC_MODULE:-$(dpkg -L opensc-pkcs11 2>/dev/null | grep -m1 '/opensc-pkcs11\.so$' || true)}
OPENSC_MOD=${OPENSC_MOD:-/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so}
CARD="$LAB/idprime.card"
SERIAL=4242
AID=A0000000188000000006 # + 62
SELECT_AID="00 A4 04 0C 0B A0 00 00 00 18 80 00 00 00 06 62"
P() { pkcs11-tool --module "$OPENSC_MOD" "$@"; }

# ---- OpenSC's APDU trace ---------------------------------------------------------------------
# OpenSC logs the APDUs at debug level 3, those carrying a PIN only at a high level (9 here);
# each step's share of the log is kept in its own file
# and lib/opensc_trace.py summarises them at the end (PINs redacted, repeated connects folded).
TRACE_LOG="$WORK/opensc-debug.log"
SUMMARY="$LAB/idprime-opensc-apdu-trace.txt"
cat >"$OPENSC_CONF" <<EOF
app default {
  debug = 9;
  debug_file = $TRACE_LOG;
  # no on-disk cache: card files with the same serial differ between test runs
  framework pkcs15 { use_file_caching = no; }
}
EOF
: >"$TRACE_LOG"
MARK=0
STEPS=()
trace_mark() { MARK=$(wc -l <"$TRACE_LOG"); }
# trace_step TITLE: the log lines since the last mark become the next step's file
trace_step() {
  local f
  f="$WORK/trace-$(printf '%02d' "${#STEPS[@]}").log"
  { echo "== $1"; tail -n +"$((MARK + 1))" "$TRACE_LOG"; } >"$f"
  STEPS+=("$f")
  trace_mark
}
# card_apdus APDU...: SELECT the applet, then send each APDU with opensc-tool (raw, no driver
# logic); prints opensc-tool's output
card_apdus() {
  local args=(-r 0 -s "$SELECT_AID") a
  for a in "$@"; do args+=(-s "$a"); done
  opensc-tool "${args[@]}" 2>&1
}
# pin_status_is SW: the card answers VERIFY without data (the PIN status) with SW (e.g. 63C2)
pin_status_is() {
  local out
  out=$(card_apdus "00 20 00 11")
  printf '%s\n' "$out" | tail -n 1 | grep -q "SW1=0x${1:0:2}, SW2=0x${1:2:2}" ||
    { printf '%s\n' "$out"; return 1; }
}

check "OpenSC tools and module present ($OPENSC_MOD)" \
  bash -c "command -v opensc-tool pkcs15-tool pkcs11-tool openssl && test -r '$OPENSC_MOD'"

# ---- the issuer: a demo CA and two e-Certs for one holder --------------------------------------
mk_ecert() { # NAME KEYUSAGE
  openssl req -newkey rsa:2048 -nodes -keyout "$WORK/$1.key" -out "$WORK/$1.csr" \
    -subj "/CN=Ana Novak/O=Tessera Demo/serialNumber=PNOSI-4242" 2>/dev/null &&
    printf 'keyUsage=critical,%s\n' "$2" >"$WORK/$1.ext" &&
    openssl x509 -req -in "$WORK/$1.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" \
      -CAcreateserial -days 730 -extfile "$WORK/$1.ext" -out "$WORK/$1.pem" 2>/dev/null &&
    openssl x509 -in "$WORK/$1.pem" -outform DER -out "$WORK/$1.der" &&
    openssl x509 -in "$WORK/$1.pem" -noout -pubkey >"$WORK/$1.pub" &&
    openssl pkcs12 -export -inkey "$WORK/$1.key" -in "$WORK/$1.pem" -certfile "$WORK/ca.pem" \
      -passout "file:$WORK/pw" -out "$WORK/$1.p12"
}
printf 'envelope-1234' >"$WORK/pw"
printf 'not-the-password' >"$WORK/badpw"
check "a demo CA" openssl req -x509 -newkey rsa:2048 -nodes -keyout "$WORK/ca.key" -out "$WORK/ca.pem" \
  -days 3650 -subj "/CN=Tessera Demo Qualified CA/O=Tessera Demo" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
check "e-Cert 1 (authentication and encryption: digitalSignature, keyEncipherment) as .p12" \
  mk_ecert auth digitalSignature,keyEncipherment
check "e-Cert 2 (qualified signature: nonRepudiation) as .p12" mk_ecert sign nonRepudiation

# ---- personalisation ---------------------------------------------------------------------------
rm -f "$CARD" "$CARD".*
expect_fail_grep "a wrong .p12 password is refused and no card is made" 'wrong password' \
  "$TESSERA_BIN" vcard init "$CARD" --kind idprime --personalize "$WORK/auth.p12" \
  --password-file "$WORK/badpw" --serial "$SERIAL"
check "no card file after the refusal" test ! -e "$CARD"
expect_fail_grep "--personalize needs --kind idprime" 'kind idprime' \
  "$TESSERA_BIN" vcard init "$CARD" --personalize "$WORK/auth.p12" --password-file "$WORK/pw"
expect_grep "tessera vcard init --kind idprime with two e-Certs (kxc00 → key 0x31, kxc01 → 0x32)" \
  'IDPrime MD 3810.*PIN 0000.*kxc00 key 0x31, kxc01 key 0x32' \
  "$TESSERA_BIN" vcard init "$CARD" --kind idprime --personalize "$WORK/auth.p12" \
  --personalize "$WORK/sign.p12" --password-file "$WORK/pw" --serial "$SERIAL"
CARDID=$(printf '%s\n' "$OUT" | sed -n 's/.*card id \([0-9a-f]\{32\}\).*/\1/p')
check "the card id is 32 hex digits ($CARDID)" test "${#CARDID}" -eq 32
check "the card file is 0600" test "$(stat -c %a "$CARD")" = 600
# the first 20 bytes of the key's prime p, in hex, must not be anywhere in the card file
prime_hex() { openssl rsa -in "$1" -noout -text 2>/dev/null | sed -n '/^prime1:/,/^prime2:/p' |
  grep -v prime | tr -d ' :\n' | sed 's/^00//' | cut -c1-40; }
P_HEX=$(prime_hex "$WORK/auth.key")
check "the card file holds no private key in the clear (no prime of it, in hex)" \
  bash -c '[ ${#1} -eq 40 ] && ! grep -qi "$1" "$2"' _ "$P_HEX" "$CARD"

start_card "$CARD" || exit 1
trace_mark

# ---- detection -----------------------------------------------------------------------------------
expect_grep "opensc-tool -n names OpenSC's IDPrime driver" '^Gemalto IDPrime' opensc-tool -n
NAME=$(printf '%s\n' "$OUT" | grep -m1 '^Gemalto IDPrime')
trace_step "opensc-tool -n: detection (match_card, init) -> '$NAME'"
expect_grep "the ATR is the IDPrime 3810's T=0 ATR" \
  '3b:7f:96:00:00:80:31:80:65:b0:84:41:3d:f6:12:0f:fe:82:90:00' opensc-tool -a
expect_grep "opensc-tool --serial reads cardid 0201" \
  "$(printf '%s' "$CARDID" | sed 's/../& /g; s/ $//' | tr a-f A-F)" opensc-tool --serial
trace_step "opensc-tool -a, --serial"

# ---- the token and its objects -------------------------------------------------------------------
run P -L
out_has() { # WHAT REGEX: the last command succeeded and its output matches REGEX
  if [ "$RC" -eq 0 ] && printf '%s\n' "$OUT" | grep -Eq -- "$2"; then ok "$1"; else notok "$1 (wanted /$2/)" "$OUT"; fi
}
out_has "pkcs11-tool -L: the token (label from p11/tinfo: the holder's CN)" 'token label +: Ana Novak'
out_has "pkcs11-tool -L: manufacturer Gemalto" 'token manufacturer +: Gemalto'
out_has "pkcs11-tool -L: serial = the last 16 hex digits of cardid" "serial num +: ${CARDID:16:16}"
out_has "pkcs11-tool -L: PIN length 4..16" 'pin min/max +: 4/16'
out_has "pkcs11-tool -L: login required, token and PIN initialised" \
  'token flags +: login required, rng, token initialized, PIN initialized$'
trace_step "pkcs11-tool -L"
objects_have() { # WHAT REGEX...: the flattened $OUT matches every REGEX
  local what=$1 flat re missing=""
  shift
  flat="$(printf '%s\n' "$OUT" | tr '\n\t' '  ' | tr -s ' ') "
  for re in "$@"; do
    printf '%s' "$flat" | grep -Eq -- "$re" || missing="$missing /$re/"
  done
  if [ "$RC" -eq 0 ] && [ -z "$missing" ]; then ok "$what"; else notok "$what (exit $RC; missing:$missing)" "$OUT"; fi
}
run P -O
objects_have "pkcs11-tool -O: OpenSC's labels and IDs (Certificate 1/2, Public key 1/2; ID 0001/0002)" \
  'Certificate Object; type = X.509 cert label: Certificate 1 subject: DN: CN ?= ?Ana Novak[^;]*ID: 0001 ' \
  'Certificate Object; type = X.509 cert label: Certificate 2 subject: DN: CN ?= ?Ana Novak[^;]*ID: 0002 ' \
  'Public Key Object; RSA 2048 bits label: Public key 1 ID: 0001 ' \
  'Public Key Object; RSA 2048 bits label: Public key 2 ID: 0002 '
trace_step "pkcs11-tool -O (public objects: the certificates, read and inflated)"
run P -O --login --pin 0000
objects_have "pkcs11-tool -O --login 0000: the private keys (Private key 1 decrypts and signs)" \
  'Private Key Object; RSA label: Private key 1 ID: 0001 Usage: decrypt, sign' \
  'Private Key Object; RSA label: Private key 2 ID: 0002 '
trace_step "pkcs11-tool -O --login (factory PIN 0000)"
for i in 1 2; do
  name=$([ "$i" = 1 ] && echo auth || echo sign)
  rm -f "$WORK/read$i.der"
  expect_ok "read certificate $i back (pkcs11-tool --read-object --id 000$i)" \
    P --read-object --type cert --id "000$i" -o "$WORK/read$i.der"
  check "certificate $i read back equals the .p12's byte for byte" cmp "$WORK/read$i.der" "$WORK/$name.der"
done
trace_step "pkcs11-tool --read-object (both certificates)"

# ---- signatures and decryption -------------------------------------------------------------------
head -c 3000 /dev/urandom >"$WORK/data"
sign_and_verify() { # ID NAME MECH OPENSSL-OPTS...
  local id=$1 name=$2 mech=$3
  shift 3
  rm -f "$WORK/sig-$id-$mech"
  expect_ok "login 0000 + sign $mech with key $id" \
    P --login --pin 0000 --sign --mechanism "$mech" --id "$id" -i "$WORK/data" -o "$WORK/sig-$id-$mech"
  expect_grep "$mech signature of key $id verifies with the certificate (openssl)" 'Verified OK' \
    openssl dgst -sha256 "$@" -verify "$WORK/$name.pub" -signature "$WORK/sig-$id-$mech" "$WORK/data"
}
sign_and_verify 0001 auth SHA256-RSA-PKCS
trace_step "sign SHA256-RSA-PKCS with key 0001 (key reference 0x31)"
sign_and_verify 0001 auth SHA256-RSA-PKCS-PSS -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32
trace_step "sign SHA256-RSA-PKCS-PSS with key 0001"
sign_and_verify 0002 sign SHA256-RSA-PKCS
sign_and_verify 0002 sign SHA256-RSA-PKCS-PSS -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32
trace_step "sign SHA256-RSA-PKCS and -PSS with key 0002 (key reference 0x32)"
printf 'the session key of a message to Ana' >"$WORK/plain"
check "openssl encrypts a message to certificate 1 (RSA PKCS#1 v1.5)" \
  openssl pkeyutl -encrypt -pubin -inkey "$WORK/auth.pub" -in "$WORK/plain" -out "$WORK/cipher"
rm -f "$WORK/decrypted"
expect_ok "login 0000 + decrypt RSA-PKCS with key 0001" \
  P --login --pin 0000 --decrypt --mechanism RSA-PKCS --id 0001 -i "$WORK/cipher" -o "$WORK/decrypted"
check "the card's plaintext equals the message" cmp "$WORK/plain" "$WORK/decrypted"
trace_step "decrypt RSA-PKCS with key 0001 (chained PSO DECIPHER)"

# ---- PIN: counters, change -------------------------------------------------------------------------
expect_ok "opensc-tool --reset (the card forgets the verification)" opensc-tool -r 0 --reset
expect_ok "PIN status on the wire: 63C3 (3 tries, not verified)" pin_status_is 63C3
expect_fail_grep "login with a wrong PIN fails (CKR_PIN_INCORRECT)" 'CKR_PIN_INCORRECT' \
  P --login --pin 9999 -O
trace_step "pkcs11-tool --login with a wrong PIN"
expect_ok "a wrong PIN cost exactly one try: 63C2" pin_status_is 63C2
expect_fail_grep "a second wrong PIN fails" 'CKR_PIN_INCORRECT' P --login --pin 9998 -O
expect_ok "two wrong PINs: 63C1" pin_status_is 63C1
expect_grep "pkcs11-tool -L shows 'final user PIN try'" 'token flags.*final user PIN try' P -L
trace_step "second wrong PIN, token flags"
expect_ok "login with the right PIN" P --login --pin 0000 -O
expect_grep "the right PIN restored the counter: no 'final user PIN try'" \
  'token flags +: login required, rng, token initialized, PIN initialized$' P -L
expect_ok "opensc-tool --reset" opensc-tool -r 0 --reset
expect_ok "PIN status after the reset: 63C3" pin_status_is 63C3
trace_step "right PIN, token flags, status"
expect_grep "pkcs11-tool --change-pin 0000 → 4711" 'PIN successfully changed' \
  P --login --pin 0000 --change-pin --new-pin 4711
trace_step "pkcs11-tool --change-pin"
expect_fail_grep "the old PIN 0000 no longer logs in" 'CKR_PIN_INCORRECT' P --login --pin 0000 -O
rm -f "$WORK/sig-new"
expect_ok "login with the new PIN 4711 + sign SHA256-RSA-PKCS" \
  P --login --pin 4711 --sign --mechanism SHA256-RSA-PKCS --id 0001 -i "$WORK/data" -o "$WORK/sig-new"
expect_grep "the signature after the PIN change verifies" 'Verified OK' \
  openssl dgst -sha256 -verify "$WORK/auth.pub" -signature "$WORK/sig-new" "$WORK/data"
expect_ok "opensc-tool --reset" opensc-tool -r 0 --reset
expect_ok "the new PIN's success restored the counter: 63C3" pin_status_is 63C3
trace_step "old PIN refused, new PIN logs in and signs"

# ---- blocking: the issuer's business -------------------------------------------------------------
for i in 1 2 3; do P --login --pin 1111 -O >/dev/null 2>&1; done
expect_ok "three wrong PINs block it (6983)" pin_status_is 6983
expect_fail_grep "OpenSC then reports CKR_PIN_LOCKED, even for the right PIN" 'CKR_PIN_LOCKED' \
  P --login --pin 4711 -O
expect_grep "pkcs11-tool -L shows 'user PIN locked'" 'token flags.*user PIN locked' P -L
trace_step "three wrong PINs, blocked"
stop_card

# ---- the 940 persona ---------------------------------------------------------------------------
# OpenSC 0.23 knows no 940: its generic ATR mask matches, and the CPLC OS level 04 makes it pad
# the PIN to 16 bytes and compute key reference 0x56+n, which the persona's key-reference map
# (0005, what 0.24+ reads) also says.
CARD940="$LAB/idprime940.card"
rm -f "$CARD940" "$CARD940".*
expect_grep "tessera vcard init --model 940 (kxc00 → key 0x56)" 'IDPrime 940.*PIN 0000.*kxc00 key 0x56' \
  "$TESSERA_BIN" vcard init "$CARD940" --kind idprime --model 940 --personalize "$WORK/auth.p12" \
  --password-file "$WORK/pw" --serial 940
start_card "$CARD940" || exit 1
trace_mark
expect_grep "940: opensc-tool -n names the IDPrime driver" '^Gemalto IDPrime' opensc-tool -n
expect_grep "940: the ATR carries the 940's model bytes 85 59 56 FB" \
  '3b:7f:96:00:00:80:31:80:65:b0:85:59:56:fb:12:0f:fe:82:90:00' opensc-tool -a
trace_step "940: opensc-tool -n, -a"
sign_and_verify 0001 auth SHA256-RSA-PKCS
trace_step "940: sign SHA256-RSA-PKCS (PIN zero-padded to 16 bytes, key reference 0x56)"
expect_grep "940: pkcs11-tool --change-pin 0000 → 4711 (two padded blocks)" 'PIN successfully changed' \
  P --login --pin 0000 --change-pin --new-pin 4711
expect_fail_grep "940: the old PIN no longer logs in" 'CKR_PIN_INCORRECT' P --login --pin 0000 -O
expect_ok "940: the new PIN logs in" P --login --pin 4711 -O
trace_step "940: PIN change, old PIN refused, new PIN"
stop_card

{
  echo "APDUs OpenSC ($(dpkg-query -W -f='${Version}' opensc 2>/dev/null || echo '?')) sent to the virtual IDPrime 3810 (then 940)"
  echo "through pcscd/vpcd, per step of tests/interop/idprime-opensc.sh ('>' command, '<' answer)."
  python3 "$(dirname "$0")/lib/opensc_trace.py" "${AID}62" "${STEPS[@]}"
} >"$SUMMARY" 2>&1
check "APDU trace summary written ($SUMMARY)" grep -q 'distinct command forms' "$SUMMARY"
echo "# ---- APDU trace summary (kept in $SUMMARY) ----"
sed 's/^/# /' "$SUMMARY"
