#!/usr/bin/env bash
# Interop: OpenSSL 3 with the libp11 engine (Debian package libengine-pkcs11-openssl) loading
# libtessera_pkcs11.so, against `tessera vcard serve` through the lab's pcscd + vpcd reader.
# Keys are generated through the module with pkcs11-tool: 9A P-256 (ID 01), 9C RSA-2048
# (ID 02, CKA_ALWAYS_AUTHENTICATE), 9D RSA-2048 (ID 03); certificates from a test CA give the
# verifying keys. OpenSSL signs (ECDSA, RSA PKCS#1 v1.5 and PSS), decrypts and makes a CSR
# with `pkcs11:` URIs; every result is checked with plain openssl.
# Run by pkg/scripts/test-all.sh; by hand:
#   bash pkg/scripts/pcsc-lab.sh up /tmp/lab && . /tmp/lab/env
#   TESSERA_BIN=$PWD/target/release/tessera LAB=/tmp/lab bash tests/interop/libp11.sh
set -uo pipefail
. "$(dirname "$0")/lib/common.bash"
. "$(dirname "$0")/lib/p11.bash"

PIN=123456
SERIAL=1000005
CARD="$LAB/libp11.card"
D=$WORK
URI_TOKEN="pkcs11:token=Tessera%20PIV%20%23$SERIAL"
ENGINE=${LIBP11_ENGINE:-$(dpkg -L libengine-pkcs11-openssl 2>/dev/null | grep -m1 '/engines-3/pkcs11\.so$' || true)}
ENGINE=${ENGINE:-/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so}

p11_module_checks
check "libp11 engine present ($ENGINE)" test -r "$ENGINE"

# our own OpenSSL configuration: the engine by path (the system openssl.cnf is not used).
# The module comes from PKCS11_MODULE_PATH (libp11 reads it when MODULE_PATH is not set);
# a second configuration names it with MODULE_PATH instead.
cat >"$D/openssl.cnf" <<EOF
openssl_conf = openssl_init
[openssl_init]
engines = engine_section
[engine_section]
pkcs11 = pkcs11_section
[pkcs11_section]
engine_id = pkcs11
dynamic_path = $ENGINE
init = 0
EOF
sed "s|^init = 0|MODULE_PATH = $MODULE\ninit = 0|" "$D/openssl.cnf" >"$D/openssl-modpath.cnf"
# only the engine commands get it: a loaded engine upsets plain openssl (x509 -force_pubkey)
EOSSL=(env OPENSSL_CONF="$D/openssl.cnf" PKCS11_MODULE_PATH="$MODULE" openssl)

rm -f "$CARD" "$CARD".*
expect_ok "tessera vcard init (serial $SERIAL)" "$TESSERA_BIN" vcard init "$CARD" --serial "$SERIAL"
start_card "$CARD" || exit 1

# ---- populate through the module -------------------------------------------------------------
gate "test CA created" p11_make_ca "$D"
declare -A KT=([01]="EC:prime256v1" [02]="rsa:2048" [03]="rsa:2048")
declare -A KU=([01]="digitalSignature" [02]="digitalSignature,nonRepudiation"
  [03]="digitalSignature,keyEncipherment")
for id in 01 02 03; do
  gate "pkcs11-tool --keypairgen ${KT[$id]} --id $id" \
    T --login --pin "$PIN" --keypairgen --key-type "${KT[$id]}" --id "$id"
  gate "public key $id read through the module" p11_pubkey_pem "$id" "$D/gen$id.pem"
  gate "test CA issues a certificate for key $id" \
    p11_issue "$D" "$D/gen$id.pem" "/CN=Tessera libp11 $id" "${KU[$id]}" "$D/cert$id.der"
  gate "certificate $id written through the module" \
    T --login --pin "$PIN" --write-object "$D/cert$id.der" --type cert --id "$id"
  openssl x509 -inform DER -in "$D/cert$id.der" -noout -pubkey >"$D/pub$id.pem"
done

# ENGINE ARGS...: openssl with the pkcs11 engine; its key from a pkcs11: URI
E() { "${EOSSL[@]}" "$1" -engine pkcs11 -keyform engine "${@:2}"; }
key() { echo "$URI_TOKEN;id=%$1;type=private;pin-value=$PIN"; }
verified() { # WHAT CMD...: openssl verification prints "Signature Verified Successfully"/"Verified OK"
  local what=$1; shift
  run "$@"
  if [ "$RC" -eq 0 ] && printf '%s\n' "$OUT" | grep -Eq 'Signature Verified Successfully|Verified OK'; then ok "$what"
  else notok "$what (exit $RC: $*)" "$OUT"; fi
}
# esign WHAT OUT ARGS...: the engine signs (openssl pkeyutl ... -out OUT)
esign() {
  local what=$1 out=$2; shift 2
  rm -f "$out"
  run "$@" -out "$out"
  if [ "$RC" -eq 0 ] && [ -s "$out" ]; then ok "$what"; return 0; fi
  notok "$what (exit $RC: $*)" "$OUT"
  return 1
}

head -c 2000 /dev/urandom >"$D/data"
openssl dgst -sha256 -binary -out "$D/hash.bin" "$D/data"
openssl dgst -sha384 -binary -out "$D/hash384.bin" "$D/data"

# ---- ECDSA, 9A ----------------------------------------------------------------------------------
esign "pkeyutl -engine pkcs11 -sign with '$URI_TOKEN;id=%01;type=private;pin-value=…' (ECDSA over SHA-256)" \
  "$D/sig.ec" E pkeyutl -inkey "$(key 01)" -sign -in "$D/hash.bin" &&
  verified "ECDSA signature verifies with the certificate's key (openssl pkeyutl -verify)" \
    openssl pkeyutl -verify -pubin -inkey "$D/pub01.pem" -in "$D/hash.bin" -sigfile "$D/sig.ec"
rm -f "$D/sig.ec384"
run "${EOSSL[@]}" dgst -sha384 -engine pkcs11 -keyform engine -sign "$(key 01)" -out "$D/sig.ec384" "$D/data"
if [ "$RC" -eq 0 ] && [ -s "$D/sig.ec384" ]; then ok "dgst -sha384 -sign with the engine key 01"
else notok "dgst -sha384 -sign with the engine key 01 (exit $RC)" "$OUT"; fi
[ -s "$D/sig.ec384" ] &&
  verified "ECDSA-SHA384 (dgst) verifies with the certificate's key" \
    openssl dgst -sha384 -verify "$D/pub01.pem" -signature "$D/sig.ec384" "$D/data"
esign "pkeyutl -sign with the module from MODULE_PATH in OPENSSL_CONF (no PKCS11_MODULE_PATH)" "$D/sig.ec2" \
  env -u PKCS11_MODULE_PATH OPENSSL_CONF="$D/openssl-modpath.cnf" openssl pkeyutl -engine pkcs11 -keyform engine -inkey "$(key 01)" -sign -in "$D/hash.bin" &&
  verified "…and that signature verifies" \
    openssl pkeyutl -verify -pubin -inkey "$D/pub01.pem" -in "$D/hash.bin" -sigfile "$D/sig.ec2"

# The most common URI names no token: one token per card (as installed) makes it find exactly
# one card, where two tokens made libp11 give up ("Multiple matching slots (2)").
rm -f "$D/sig.notoken"
esign "pkeyutl -engine pkcs11 -sign with 'pkcs11:id=%01;type=private;pin-value=…' (no token name)" \
  "$D/sig.notoken" E pkeyutl -inkey "pkcs11:id=%01;type=private;pin-value=$PIN" -sign -in "$D/hash.bin" &&
  verified "…and that signature verifies with the 9A certificate's key" \
    openssl pkeyutl -verify -pubin -inkey "$D/pub01.pem" -in "$D/hash.bin" -sigfile "$D/sig.notoken"

# ---- RSA, 9D ------------------------------------------------------------------------------------
esign "pkeyutl -sign RSA PKCS#1 v1.5 (-pkeyopt digest:sha256) with key 03" "$D/sig.rsa" \
  E pkeyutl -inkey "$(key 03)" -sign -in "$D/hash.bin" -pkeyopt digest:sha256 &&
  verified "RSA PKCS#1 v1.5 signature verifies (openssl dgst -sha256 over the data)" \
    openssl dgst -sha256 -verify "$D/pub03.pem" -signature "$D/sig.rsa" "$D/data"
esign "pkeyutl -sign RSA-PSS (sha256, salt 32) with key 03" "$D/sig.pss" \
  E pkeyutl -inkey "$(key 03)" -sign -in "$D/hash.bin" -pkeyopt digest:sha256 \
  -pkeyopt rsa_padding_mode:pss -pkeyopt rsa_pss_saltlen:32 &&
  verified "RSA-PSS signature verifies" \
    openssl pkeyutl -verify -pubin -inkey "$D/pub03.pem" -in "$D/hash.bin" -sigfile "$D/sig.pss" \
    -pkeyopt digest:sha256 -pkeyopt rsa_padding_mode:pss -pkeyopt rsa_pss_saltlen:32
esign "pkeyutl -sign RSA PKCS#1 v1.5 over SHA-384 with key 03" "$D/sig.rsa384" \
  E pkeyutl -inkey "$(key 03)" -sign -in "$D/hash384.bin" -pkeyopt digest:sha384 &&
  verified "RSA PKCS#1 v1.5 SHA-384 signature verifies" \
    openssl dgst -sha384 -verify "$D/pub03.pem" -signature "$D/sig.rsa384" "$D/data"
head -c 32 /dev/urandom >"$D/secret"
openssl pkeyutl -encrypt -pubin -inkey "$D/pub03.pem" -in "$D/secret" -out "$D/ct.pkcs1"
rm -f "$D/pt"
run E pkeyutl -inkey "$(key 03)" -decrypt -in "$D/ct.pkcs1" -out "$D/pt"
if [ "$RC" -eq 0 ] && cmp -s "$D/pt" "$D/secret"; then ok "pkeyutl -decrypt (PKCS#1 v1.5) with key 03 returns the plaintext"
else notok "pkeyutl -decrypt (PKCS#1 v1.5) with key 03 returns the plaintext (exit $RC)" "$OUT"; fi
openssl pkeyutl -encrypt -pubin -inkey "$D/pub03.pem" -in "$D/secret" -out "$D/ct.oaep" \
  -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256
rm -f "$D/pt"
run E pkeyutl -inkey "$(key 03)" -decrypt -in "$D/ct.oaep" -out "$D/pt" \
  -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256
if [ "$RC" -eq 0 ] && cmp -s "$D/pt" "$D/secret"; then ok "pkeyutl -decrypt (OAEP SHA-256) with key 03 returns the plaintext"
else notok "pkeyutl -decrypt (OAEP SHA-256) with key 03 returns the plaintext (exit $RC)" "$OUT"; fi

# ---- RSA, 9C (CKA_ALWAYS_AUTHENTICATE) ----------------------------------------------------------
# libp11 0.4.12 logs in CKU_CONTEXT_SPECIFIC before each 9C signature with a PIN it asks for
# through OpenSSL's UI (pin-value and -passin are not reused), reading the terminal: `script`
# gives it a pseudo-terminal and the PIN is typed in.
if command -v script >/dev/null; then
  rm -f "$D/sig.9c"
  OUT=$( (sleep 0.5; printf '%s\n' "$PIN") | OPENSSL_CONF="$D/openssl.cnf" PKCS11_MODULE_PATH="$MODULE" timeout 30 script -qec \
    "openssl pkeyutl -engine pkcs11 -keyform engine -inkey '$(key 02)' -sign -in '$D/hash.bin' -pkeyopt digest:sha256 -out '$D/sig.9c'" \
    /dev/null 2>&1)
  RC=$?
  if [ "$RC" -eq 0 ] && [ -s "$D/sig.9c" ]; then
    ok "pkeyutl -sign with the 9C key (ID 02): context-specific login with the PIN libp11 prompts for"
    verified "9C RSA signature verifies" \
      openssl dgst -sha256 -verify "$D/pub02.pem" -signature "$D/sig.9c" "$D/data"
  else notok "pkeyutl -sign with the 9C key (ID 02) with the PIN typed at libp11's prompt (exit $RC)" "$OUT"; fi
  # without the context-specific PIN the 9C key refuses to sign
  rm -f "$D/sig.9c"
  run E pkeyutl -inkey "$(key 02)" -sign -in "$D/hash.bin" -pkeyopt digest:sha256 -out "$D/sig.9c"
  if [ "$RC" -ne 0 ] && [ ! -s "$D/sig.9c" ]; then ok "the 9C key does not sign without its context-specific PIN"
  else notok "the 9C key does not sign without its context-specific PIN (exit $RC)" "$OUT"; fi
else
  SKIPS=$((SKIPS + 1))
  echo "ok - 9C signature through libp11 # SKIP no 'script' (util-linux) to give libp11 a terminal"
fi

# ---- CSR ----------------------------------------------------------------------------------------
for id in 01 03; do
  rm -f "$D/req$id.pem"
  expect_ok "openssl req -new -engine pkcs11 -key <URI id=%$id> -subj /CN=x makes a CSR" \
    E req -new -key "$(key "$id")" -subj "/CN=Tessera libp11 CSR $id" -out "$D/req$id.pem"
  expect_grep "openssl req -verify accepts the CSR of key $id" 'verify OK' \
    openssl req -in "$D/req$id.pem" -verify -noout
  check "the CSR of key $id holds the card's public key" \
    cmp -s <(openssl req -in "$D/req$id.pem" -noout -pubkey | openssl pkey -pubin -outform DER) \
    <(openssl pkey -pubin -in "$D/pub$id.pem" -outform DER)
done

stop_card
