#!/usr/bin/env bash
# Interop: implementations written by others judge the software card's behaviour profiles
# (`tessera vcard init --profile NAME`): OpenSC's own PIV driver (card-piv.c, through
# opensc-tool, piv-tool, pkcs15-tool and opensc-pkcs11.so) must accept a card of every profile
# through the lab's pcscd + vpcd reader, and so must yubico-piv-tool. Per profile:
#   - OpenSC names it a PIV card and shows its token; the card's answer to what it lacks, on the
#     wire, is its family's status word (GET VERSION, GET SERIAL, GET METADATA, admin data);
#   - OpenSC generates a P-256 key in 9A and an RSA-2048 key in 9C (piv-tool: management-key
#     authentication, then GENERATE; its -G cannot print the public key with OpenSSL 3, so the
#     GENERATE answer is read from -s), writes a certificate for each (piv-tool -C), lists
#     certificates and keys and signs with both through its PKCS#11 module; openssl verifies
#     each signature with the certificate's key (on quirky: every long APDU chained, every long
#     answer through 61xx, as the card takes no extended length);
#   - a wrong PIN through OpenSC costs exactly one try (63C2, read back with opensc-tool);
#   - yubikey-4: no AES management key (6A80), and yubico-piv-tool sees firmware 4.3.7,
#     generates RSA-2048 and signs; piv-basic: no admin data can be written (6A80); on
#     piv-basic and quirky yubico-piv-tool finds no version and still generates and signs.
# Run by pkg/scripts/test-all.sh; by hand (well under 60 s):
#   bash pkg/scripts/pcsc-lab.sh up /tmp/lab && . /tmp/lab/env
#   TESSERA_BIN=$PWD/target/release/tessera LAB=/tmp/lab bash tests/interop/profiles-opensc.sh
# PROFILES (default: all four) narrows it.
set -uo pipefail
. "$(dirname "$0")/lib/common.bash"

PROFILES=${PROFILES:-yubikey-5.7 yubikey-4 piv-basic quirky}
PIN=123456
OPENSC_MOD=${OPENSC_MODULE:-$(dpkg -L opensc-pkcs11 2>/dev/null | grep -m1 '/opensc-pkcs11\.so$' || true)}
OPENSC_MOD=${OPENSC_MOD:-/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so}
SLOT_READER="$READER 00 00"
SELECT=00:A4:04:00:09:A0:00:00:03:08:00:00:10:00:00

P() { pkcs11-tool --module "$OPENSC_MOD" "$@"; }
Y() { yubico-piv-tool -r "$READER" "$@"; }
# OpenSC's piv-tool reads the management key (the factory 3DES key) from this file
printf '01:02:03:04:05:06:07:08:01:02:03:04:05:06:07:08:01:02:03:04:05:06:07:08' >"$WORK/mgm"
export PIV_EXT_AUTH_KEY="$WORK/mgm"
PT() { piv-tool -r "$SLOT_READER" -A M:9B:03 "$@"; }

check "OpenSC tools and module present ($OPENSC_MOD)" \
  bash -c "command -v opensc-tool piv-tool pkcs15-tool pkcs11-tool yubico-piv-tool && test -r '$OPENSC_MOD'"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/issuer.pem" 2>/dev/null
head -c 3000 /dev/urandom >"$WORK/data"

# sws APDU...: SELECT PIV, then each APDU through opensc-tool; prints the status words after
# the SELECT's, space-separated ("9000 6D00 ...")
sws() {
  local args=(-r "$SLOT_READER" -s "$SELECT") a
  for a in "$@"; do args+=(-s "$a"); done
  opensc-tool "${args[@]}" 2>&1 | sed -nE 's/.*SW1=0x(..), SW2=0x(..).*/\1\2/p' | tail -n +2 |
    tr 'a-f' 'A-F' | tr '\n' ' ' | sed 's/ $//'
}
# expect_sws WHAT "EXPECTED" APDU...
expect_sws() {
  local what=$1 want=$2 got
  shift 2
  got=$(sws "$@")
  if [ "$got" = "$want" ]; then ok "$what: $got"; else notok "$what (wanted '$want', got '$got')"; fi
}

# spki_of_generate: piv-tool -s output of GENERATE ASYMMETRIC KEY PAIR (7F49 { 81 n 82 e } or
# { 86 point }) on stdin -> the public key as DER SubjectPublicKeyInfo on stdout
spki_of_generate() {
  python3 -c '
import re, sys
text = sys.stdin.read()
if "SW1=0x90, SW2=0x00" not in text:
    sys.exit("GENERATE refused: " + text.strip().splitlines()[-1])
data = b"".join(bytes.fromhex(" ".join(re.findall(r"\b[0-9A-F]{2}\b", l[:48])))
                for l in text.split("Received", 1)[1].splitlines()[1:])
def tlv(b):
    tag, i = b[0], 1
    if tag & 0x1F == 0x1F:
        tag, i = (tag << 8) | b[1], 2
    n, i = b[i], i + 1
    if n & 0x80:
        k = n & 0x7F
        n, i = int.from_bytes(b[i:i + k], "big"), i + k
    return tag, b[i:i + n], b[i + n:]
def der(tag, body):
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    lb = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(lb)]) + lb + body
def integer(b):
    b = b.lstrip(b"\0")
    return der(0x02, b"\0" + b if b[0] & 0x80 else b)
tag, rest, _ = tlv(data)
assert tag == 0x7F49, hex(tag)
parts = {}
while rest:
    t, v, rest = tlv(rest)
    parts[t] = v
if 0x86 in parts:
    curve = {65: "2a8648ce3d030107", 97: "2b81040022"}[len(parts[0x86])]
    alg = der(0x30, der(0x06, bytes.fromhex("2a8648ce3d0201")) + der(0x06, bytes.fromhex(curve)))
    key = parts[0x86]
else:
    alg = der(0x30, der(0x06, bytes.fromhex("2a864886f70d010101")) + b"\x05\x00")
    key = der(0x30, integer(parts[0x81]) + integer(parts[0x82]))
sys.stdout.buffer.write(der(0x30, alg + der(0x03, b"\0" + key)))
'
}

# opensc_keygen SLOT ALGID NAME ID: GENERATE through piv-tool, a certificate for the key written
# with piv-tool -C; leaves $D/pub$SLOT.pem and $D/cert$SLOT.pem
opensc_keygen() {
  local s=$1 alg=$2 name=$3 id=$4 out
  out=$(piv-tool -r "$SLOT_READER" -A M:9B:03 -s "00:47:00:$s:05:AC:03:80:01:$alg:00" 2>&1)
  if printf '%s\n' "$out" | spki_of_generate >"$D/pub$s.der" 2>"$D/spki.err" &&
    openssl pkey -pubin -inform DER -in "$D/pub$s.der" -out "$D/pub$s.pem" 2>>"$D/spki.err"; then
    ok "[$p] OpenSC (piv-tool) generates $name in $s"
  else
    notok "[$p] OpenSC (piv-tool) generates $name in $s" "$out$(cat "$D/spki.err")"
    return 1
  fi
  openssl x509 -new -subj "/CN=Tessera $p $s/" -key "$WORK/issuer.pem" -force_pubkey "$D/pub$s.pem" \
    -days 30 -out "$D/cert$s.pem" 2>/dev/null
  # piv-tool -C exits with the number of bytes written (mod 256), so success is judged by
  # reading the certificate back through OpenSC's PKCS#15 emulation
  run PT -C "$s" -i "$D/cert$s.pem"
  local written=$OUT
  run bash -c "pkcs15-tool -r '$SLOT_READER' --read-certificate $id | openssl x509 -outform DER |
    cmp - <(openssl x509 -in '$D/cert$s.pem' -outform DER)"
  if [ "$RC" -eq 0 ]; then ok "[$p] OpenSC (piv-tool -C) writes the certificate for $s, read back equal"
  else notok "[$p] OpenSC (piv-tool -C) writes the certificate for $s" "$written$OUT"; fi
}

for p in $PROFILES; do
  D="$WORK/$p"
  mkdir -p "$D"
  CARD="$D/card.json"
  expect_ok "[$p] tessera vcard init --profile $p" "$TESSERA_BIN" vcard init "$CARD" --profile "$p" --serial 1000077
  start_card "$CARD" || continue

  # ---- identification ------------------------------------------------------------------------
  expect_grep "[$p] opensc-tool -n: OpenSC's PIV driver takes the card" \
    '^Personal Identity Verification Card$' opensc-tool -r "$SLOT_READER" -n
  run opensc-tool -r "$SLOT_READER" -a
  atr=$(printf '%s\n' "$OUT" | grep -E '^3b' | tr -d ':\n')
  case $p in
    yubikey-5.7) want='^3bfd1300008131fe158073c021c0575465737365726177$' ;;
    yubikey-4) want='^3bf81300008131fe15597562696b657934d4$' ;;
    piv-basic) want='^3bff1300008131fe158073c021c0' ;;
    quirky) want='^3bff1300008131fe158073c02180' ;;
  esac
  if printf '%s' "$atr" | grep -Eq "$want"; then ok "[$p] ATR $atr"; else notok "[$p] ATR (wanted /$want/, got '$atr')"; fi
  if [ "$p" = piv-basic ]; then
    check "[$p] its ATR does not claim to be a YubiKey" bash -c "! printf '%s' '$atr' | grep -Eqi '59756269(4b|6b)6579'"
  fi
  expect_grep "[$p] pkcs11-tool -L shows OpenSC's PIV token" 'token label[[:space:]]+: PIV_II' P -L
  # what the card lacks, as it answers on the wire: GET VERSION, GET SERIAL, GET METADATA (PIN),
  # GET DATA of the admin data 5FFF00 (absent on a factory card)
  case $p in
    yubikey-5.7) want='9000 9000 9000 6A82' ;;
    yubikey-4) want='9000 6D00 6D00 6A82' ;;
    piv-basic) want='6D00 6D00 6D00 6A82' ;;
    quirky) want='6E00 6D00 9000 6A80' ;;
  esac
  expect_sws "[$p] GET VERSION, GET SERIAL, GET METADATA, GET DATA 5FFF00 answer" "$want" \
    00:FD:00:00:00 00:F8:00:00:00 00:F7:00:80:00 00:CB:3F:FF:05:5C:03:5F:FF:00:00

  # ---- keys and certificates through OpenSC ----------------------------------------------------
  opensc_keygen 9A 11 "EC P-256" 01 && opensc_keygen 9C 07 "RSA-2048" 02
  run P -O
  flat="$(printf '%s\n' "$OUT" | tr '\n\t' '  ' | tr -s ' ') "
  # WHAT|REGEX over the flattened listing; "[^;]*" stays inside one object
  for item in \
    "the 9A certificate (ID 01)|Certificate Object; type = X.509 cert label: Certificate for PIV Authentication subject: DN: CN ?= ?Tessera $p 9A [^;]*ID: 01 " \
    "the 9C certificate (ID 02)|Certificate Object; type = X.509 cert label: Certificate for Digital Signature subject: DN: CN ?= ?Tessera $p 9C [^;]*ID: 02 " \
    "the 9A public key (EC P-256, ID 01)|Public Key Object; EC EC_POINT 256 bits [^;]*ID: 01 " \
    "the 9C public key (RSA 2048, ID 02)|Public Key Object; RSA 2048 bits [^;]*ID: 02 "; do
    if printf '%s' "$flat" | grep -Eq -- "${item#*|}"; then ok "[$p] OpenSC lists ${item%%|*}"
    else notok "[$p] OpenSC lists ${item%%|*} (exit $RC)" "$OUT"; fi
  done
  rm -f "$D/sig-ec.der" "$D/sig-rsa.bin"
  expect_ok "[$p] OpenSC signs ECDSA-SHA256 with 9A (ID 01)" \
    P --login --pin "$PIN" --sign --id 01 --mechanism ECDSA-SHA256 --signature-format openssl \
    -i "$WORK/data" -o "$D/sig-ec.der"
  expect_grep "[$p] the ECDSA signature verifies with the certificate's key" 'Verified OK' \
    openssl dgst -sha256 -verify "$D/pub9A.pem" -signature "$D/sig-ec.der" "$WORK/data"
  expect_ok "[$p] OpenSC signs SHA256-RSA-PKCS with 9C (ID 02, PIN before the signature)" \
    P --login --pin "$PIN" --sign --id 02 --mechanism SHA256-RSA-PKCS -i "$WORK/data" -o "$D/sig-rsa.bin"
  expect_grep "[$p] the RSA signature verifies with the certificate's key" 'Verified OK' \
    openssl dgst -sha256 -verify "$D/pub9C.pem" -signature "$D/sig-rsa.bin" "$WORK/data"

  # ---- PIN counter -----------------------------------------------------------------------------
  expect_fail "[$p] OpenSC login with a wrong PIN fails" P --login --pin 654321 -O
  expect_sws "[$p] the wrong PIN spent one try (VERIFY status)" "63C2" 00:20:00:80
  expect_ok "[$p] pkcs15-tool verifies the right PIN" \
    pkcs15-tool -r "$SLOT_READER" --verify-pin --auth-id 01 --pin "$PIN"
  expect_sws "[$p] the right PIN restored the counter (verified; un-verify; status)" "9000 9000 63C3" \
    00:20:00:80 00:20:FF:80 00:20:00:80

  # ---- what the profile refuses, through OpenSC's piv-tool (management key authenticated) -----
  case $p in
    yubikey-4)
      expect_grep "[$p] SET MANAGEMENT KEY with AES-192: 6A80 (3DES only)" 'SW1=0x6A, SW2=0x80' \
        PT -s "00:FF:FF:FF:1B:0A:9B:18:$(printf '%s' "$(seq -f '%02g' 1 24 | tr '\n' ':')" | sed 's/:$//')"
      expect_grep "[$p] MOVE KEY: 6D00" 'SW1=0x6D, SW2=0x00' PT -s 00:F6:82:9A
      # yubico-piv-tool (reads the serial of a YubiKey before 5 from its OTP application,
      # which a YubiKey 4 has and the software card does not: "No data available")
      expect_grep "[$p] yubico-piv-tool -a version: 4.3.7" 'Application version 4\.3\.7 found' Y -a version
      expect_grep "[$p] yubico-piv-tool -a status shows the PIN counter" 'PIN tries left:[[:space:]]+3$' Y -a status
      expect_grep "[$p] yubico-piv-tool generates RSA-2048 in 9D" 'Successfully generated a new private key' \
        Y -a generate -s 9d -A RSA2048 -o "$D/pub9D.pem"
      rm -f "$D/ysig.bin"
      expect_ok "[$p] yubico-piv-tool signs with 9D" \
        Y -a verify-pin -P "$PIN" --sign -s 9d -A RSA2048 -H SHA256 -i "$WORK/data" -o "$D/ysig.bin"
      expect_grep "[$p] yubico-piv-tool's signature verifies" 'Verified OK' \
        openssl dgst -sha256 -verify "$D/pub9D.pem" -signature "$D/ysig.bin" "$WORK/data"
      ;;
    piv-basic)
      expect_grep "[$p] PUT DATA of admin data 5FFF00: 6A80" 'SW1=0x6A, SW2=0x80' \
        PT -s 00:DB:3F:FF:07:5C:03:5F:FF:00:53:00
      expect_grep "[$p] IMPORT ASYMMETRIC KEY: 6D00" 'SW1=0x6D, SW2=0x00' \
        PT -s "00:FE:11:9D:22:06:20:$(printf '07:%.0s' $(seq 31))07"
      ;;
  esac
  case $p in
    piv-basic | quirky)
      # yubico-piv-tool on a card without GET VERSION: it says so (and exits 0) and carries on
      expect_grep "[$p] yubico-piv-tool -a version: no version" 'Failed to retrieve application version' \
        Y -a version
      expect_grep "[$p] yubico-piv-tool generates P-256 in 9D" 'Successfully generated a new private key' \
        Y -a generate -s 9d -A ECCP256 -o "$D/pub9D.pem"
      rm -f "$D/ysig.der"
      expect_ok "[$p] yubico-piv-tool signs with 9D" \
        Y -a verify-pin -P "$PIN" --sign -s 9d -A ECCP256 -H SHA256 -i "$WORK/data" -o "$D/ysig.der"
      expect_grep "[$p] yubico-piv-tool's signature verifies" 'Verified OK' \
        openssl dgst -sha256 -verify "$D/pub9D.pem" -signature "$D/ysig.der" "$WORK/data"
      ;;
  esac
  stop_card
done
