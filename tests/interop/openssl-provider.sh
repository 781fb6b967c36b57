#!/usr/bin/env bash
# Interop: OpenSSL 3 using libtessera_pkcs11.so through pkcs11-provider (Debian
# bookworm-backports) and through the libp11 engine (libengine-pkcs11-openssl), against
# `tessera vcard serve` through the lab's pcscd + vpcd reader.
#  1. 9A: a P-256 key and 9D: an RSA-2048 key generated on the card, certificates from a test
#     CA (clientAuth), through the module (pkcs11-tool).
#  2. Provider: `openssl pkeyutl -sign -inkey "pkcs11:…;object=PIV%20AUTH%20key;type=private?pin-value=…"`
#     (ECDSA) and the 9D key (RSA), each verified with plain openssl and the certificate.
#  3. Provider and engine: `openssl s_client -cert card.pem -key pkcs11:…` TLS client
#     authentication against a local `openssl s_server -Verify 1`; the server's log shows the
#     card certificate's subject and serial, and the page it returns names the client certificate.
# Run by pkg/scripts/test-all.sh; by hand:
#   bash pkg/scripts/pcsc-lab.sh up /tmp/lab && . /tmp/lab/env
#   TESSERA_BIN=$PWD/target/release/tessera LAB=/tmp/lab bash tests/interop/openssl-provider.sh
set -uo pipefail
. "$(dirname "$0")/lib/common.bash"
. "$(dirname "$0")/lib/p11.bash"
. "$(dirname "$0")/lib/apps.bash"

PIN=123456
SERIAL=1000008
CARD="$LAB/openssl-provider.card"
D=$WORK
URI_TOKEN="pkcs11:token=Tessera%20PIV%20%23$SERIAL"
PROVIDER=${PKCS11_PROVIDER:-$(dpkg -L pkcs11-provider 2>/dev/null | grep -m1 '/ossl-modules/pkcs11\.so$' || true)}
PROVIDER=${PROVIDER:-/usr/lib/x86_64-linux-gnu/ossl-modules/pkcs11.so}
ENGINE=${LIBP11_ENGINE:-$(dpkg -L libengine-pkcs11-openssl 2>/dev/null | grep -m1 '/engines-3/pkcs11\.so$' || true)}
ENGINE=${ENGINE:-/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so}
export TESSERA_LOG_FILE="$D/module.log"

p11_module_checks
if [ -r "$PROVIDER" ]; then
  ok "pkcs11-provider present ($PROVIDER, $(dpkg-query -W -f='${Version}' pkcs11-provider 2>/dev/null))"
else
  notok "pkcs11-provider present ($PROVIDER): pkg/scripts/deps.sh installs it from bookworm-backports"
fi
check "libp11 engine present ($ENGINE)" test -r "$ENGINE"

# our own OpenSSL configurations (the system openssl.cnf is not used); only the commands that
# use the card get them
cat >"$D/provider.cnf" <<EOF
openssl_conf = openssl_init
[openssl_init]
providers = provider_sect
[provider_sect]
default = default_sect
pkcs11 = pkcs11_sect
[default_sect]
activate = 1
[pkcs11_sect]
module = $PROVIDER
pkcs11-module-path = $MODULE
# the module must not be finalized while OpenSSL still holds objects (see PCSC-NOTES)
pkcs11-module-quirks = no-deinit
activate = 1
EOF
cat >"$D/engine.cnf" <<EOF
openssl_conf = openssl_init
[openssl_init]
engines = engine_section
[engine_section]
pkcs11 = pkcs11_section
[pkcs11_section]
engine_id = pkcs11
dynamic_path = $ENGINE
MODULE_PATH = $MODULE
init = 0
EOF
POSSL=(env OPENSSL_CONF="$D/provider.cnf" openssl)
EOSSL=(env OPENSSL_CONF="$D/engine.cnf" openssl)

rm -f "$CARD" "$CARD".*
expect_ok "tessera vcard init (serial $SERIAL)" "$TESSERA_BIN" vcard init "$CARD" --serial "$SERIAL"
start_card "$CARD" || exit 1

# ---- populate through the module -----------------------------------------------------------------
gate "test CA created" p11_make_ca "$D"
gate "TLS server certificate for 127.0.0.1 from the test CA" apps_server_cert "$D"
declare -A KT=([01]="EC:prime256v1" [03]="rsa:2048")
declare -A EXT=([01]="keyUsage=critical,digitalSignature" [03]="keyUsage=critical,digitalSignature,keyEncipherment")
for id in 01 03; do
  gate "pkcs11-tool --keypairgen ${KT[$id]} --id $id" \
    T --login --pin "$PIN" --keypairgen --key-type "${KT[$id]}" --id "$id"
  gate "public key $id read through the module" p11_pubkey_pem "$id" "$D/gen$id.pem"
  printf '%s\n' "${EXT[$id]}" 'extendedKeyUsage=clientAuth' 'subjectKeyIdentifier=hash' \
    'authorityKeyIdentifier=keyid' >"$D/ext$id"
  gate "test CA issues a certificate for key $id (clientAuth)" \
    apps_issue "$D" "$D/gen$id.pem" "/CN=Tessera OpenSSL Card $id/O=Tessera Interop" "$D/ext$id" "$D/cert$id.der"
  gate "certificate $id written through the module" \
    T --login --pin "$PIN" --write-object "$D/cert$id.der" --type cert --id "$id"
  openssl x509 -inform DER -in "$D/cert$id.der" -out "$D/cert$id.pem"
  openssl x509 -in "$D/cert$id.pem" -noout -pubkey >"$D/pub$id.pem"
done

head -c 3000 /dev/urandom >"$D/data"
openssl dgst -sha256 -binary -out "$D/hash.bin" "$D/data"
verified() { # WHAT CMD...: an openssl verification that prints "Signature Verified Successfully"/"Verified OK"
  local what=$1; shift
  run "$@"
  if [ "$RC" -eq 0 ] && printf '%s\n' "$OUT" | grep -Eq 'Signature Verified Successfully|Verified OK'; then ok "$what"
  else notok "$what (exit $RC: $*)" "$OUT"; fi
}
# sign WHAT OUT CMD...: CMD writes a signature to OUT
sign() {
  local what=$1 out=$2; shift 2
  rm -f "$out"
  run "$@"
  if [ "$RC" -eq 0 ] && [ -s "$out" ]; then ok "$what"; return 0; fi
  notok "$what (exit $RC: $*)" "$OUT"
  show_module_log "$TESSERA_LOG_FILE" 15
  return 1
}

# ---- pkcs11-provider: sign ---------------------------------------------------------------------------
run "${POSSL[@]}" list -providers
if [ "$RC" -eq 0 ] && printf '%s\n' "$OUT" | grep >/dev/null 'pkcs11'; then ok "openssl list -providers: pkcs11 provider loaded from OPENSSL_CONF"
else notok "openssl list -providers: pkcs11 provider loaded from OPENSSL_CONF (exit $RC)" "$OUT"; fi

# With the factory PIN still set the module reports CKF_USER_PIN_TO_BE_CHANGED (DESIGN: "factory-
# default PIN -> CKF_USER_PIN_TO_BE_CHANGED"), and pkcs11-provider 1.0 treats that as an expired
# PIN and refuses to log in ("PIN marked as expired, canceling login"). That is the intended
# outcome: a card holder replaces the factory PIN first (`tessera setup`, or C_SetPIN as below).
rm -f "$D/p.factory"
run env PKCS11_PROVIDER_DEBUG="file:$D/provider-debug.log,level:2" "${POSSL[@]}" pkeyutl -sign \
  -inkey "$URI_TOKEN;object=PIV%20AUTH%20key;type=private?pin-value=$PIN" -in "$D/hash.bin" -out "$D/p.factory"
if [ "$RC" -ne 0 ] && [ ! -s "$D/p.factory" ] && grep -q 'expired' "$D/provider-debug.log" 2>/dev/null; then
  ok "provider: refuses the factory-default PIN (token says CKF_USER_PIN_TO_BE_CHANGED; change it first)"
else
  notok "provider: refuses the factory-default PIN (exit $RC)" \
    "$OUT$(printf '\n# PKCS11_PROVIDER_DEBUG:\n'; grep -E 'check_pin_flags_ok|token_login' "$D/provider-debug.log" 2>/dev/null | head -n 5)"
fi
# what a card holder does first (`tessera setup`): a PIN of their own, here through the module
# (C_SetPIN); everything below uses it
NEWPIN=24681357
gate "pkcs11-tool --change-pin: the factory PIN replaced through the module" \
  T --login --pin "$PIN" --change-pin --new-pin "$NEWPIN"
PIN=$NEWPIN
run T -T
if [ "$RC" -eq 0 ] && printf '%s\n' "$OUT" | grep >/dev/null 'token flags' && ! printf '%s\n' "$OUT" | grep >/dev/null 'user PIN to be changed'; then
  ok "pkcs11-tool -T: the token flags no longer say 'user PIN to be changed'"
else notok "pkcs11-tool -T: the token flags no longer say 'user PIN to be changed' (exit $RC)" "$OUT"; fi
PKEY01="$URI_TOKEN;object=PIV%20AUTH%20key;type=private?pin-value=$PIN"
PKEY03="$URI_TOKEN;object=KEY%20MAN%20key;type=private?pin-value=$PIN"
sign "provider: pkeyutl -sign -inkey '$URI_TOKEN;object=PIV%20AUTH%20key;type=private?pin-value=…' (ECDSA over SHA-256)" \
  "$D/p.sig01" "${POSSL[@]}" pkeyutl -sign -inkey "$PKEY01" -in "$D/hash.bin" -out "$D/p.sig01" &&
  verified "provider: the ECDSA signature verifies with the 9A certificate's key" \
    openssl pkeyutl -verify -pubin -inkey "$D/pub01.pem" -in "$D/hash.bin" -sigfile "$D/p.sig01"
sign "provider: dgst -sha256 -sign with the 9D key (RSA PKCS#1 v1.5)" \
  "$D/p.sig03" "${POSSL[@]}" dgst -sha256 -sign "$PKEY03" -out "$D/p.sig03" "$D/data" &&
  verified "provider: the RSA signature verifies with the 9D certificate's key (openssl dgst -verify)" \
    openssl dgst -sha256 -verify "$D/pub03.pem" -signature "$D/p.sig03" "$D/data"
sign "provider: pkeyutl -sign RSA-PSS with the 9D key" "$D/p.pss03" \
  "${POSSL[@]}" pkeyutl -sign -inkey "$PKEY03" -in "$D/hash.bin" -out "$D/p.pss03" \
  -pkeyopt digest:sha256 -pkeyopt rsa_padding_mode:pss -pkeyopt rsa_pss_saltlen:32 &&
  verified "provider: the RSA-PSS signature verifies" \
    openssl pkeyutl -verify -pubin -inkey "$D/pub03.pem" -in "$D/hash.bin" -sigfile "$D/p.pss03" \
    -pkeyopt digest:sha256 -pkeyopt rsa_padding_mode:pss -pkeyopt rsa_pss_saltlen:32
# the provider's store also reads the certificate
rm -f "$D/p.cert01.pem"
run "${POSSL[@]}" storeutl -certs -out "$D/p.cert01.pem" "$URI_TOKEN;object=Certificate%20for%20PIV%20Authentication;type=cert"
check "provider: storeutl -certs reads the 9A certificate as written" \
  cmp -s <(openssl x509 -in "$D/p.cert01.pem" -outform DER 2>/dev/null) "$D/cert01.der"

# ---- libp11 engine: sign -----------------------------------------------------------------------------
EKEY01="$URI_TOKEN;object=PIV%20AUTH%20key;type=private;pin-value=$PIN"
sign "engine: pkeyutl -engine pkcs11 -keyform engine -sign -inkey '…;object=PIV%20AUTH%20key;type=private;pin-value=…'" \
  "$D/e.sig01" "${EOSSL[@]}" pkeyutl -engine pkcs11 -keyform engine -sign -inkey "$EKEY01" \
  -in "$D/hash.bin" -out "$D/e.sig01" &&
  verified "engine: the ECDSA signature verifies with the 9A certificate's key" \
    openssl pkeyutl -verify -pubin -inkey "$D/pub01.pem" -in "$D/hash.bin" -sigfile "$D/e.sig01"

# ---- TLS client authentication -------------------------------------------------------------------------
# tls LABEL CERT CLIENTCMD...: s_server on a free port; the client command (openssl s_client
# with its key from the card) sends a GET and prints the -www page; the server log and the page
# must show CERT
tls() {
  local label=$1 cert=$2; shift 2
  local log="$D/server-$label.log"
  rm -f "$log"
  if ! s_server_start "$log"; then
    notok "$label: openssl s_server listening on 127.0.0.1" "$(cat "$log")"
    return 1
  fi
  OUT=$(printf 'GET / HTTP/1.0\r\n\r\n' | timeout 60 "$@" -connect "127.0.0.1:$SRV_PORT" \
    -CAfile "$D/ca.pem" -verify_return_error -quiet 2>&1)
  RC=$?
  sleep 0.2
  bg_stop "$SRV_PID"
  printf '%s\n' "$OUT" >"$D/client-$label.out"
  if [ "$RC" -eq 0 ] && printf '%s\n' "$OUT" | grep >/dev/null 'Client certificate'; then
    ok "$label: s_client -cert card.pem -key pkcs11:… completes the handshake; the server's page shows a client certificate"
  else
    notok "$label: s_client TLS client authentication with the card key (exit $RC)" "$OUT"
    show_module_log "$TESSERA_LOG_FILE" 15
  fi
  run server_saw_cert "$log" "$cert"
  if [ "$RC" -eq 0 ]; then
    ok "$label: s_server log shows 'depth=0 $(cert_subject "$cert")' and serial $(cert_serial_hex "$cert")"
  else notok "$label: s_server log shows the card certificate" "$OUT"; fi
  expect_grep "$label: the client proved the key (CertificateVerify in the server's trace)" 'CertificateVerify' cat "$log"
}
tls provider-ec "$D/cert01.pem" "${POSSL[@]}" s_client -cert "$D/cert01.pem" -key "$PKEY01"
tls provider-rsa "$D/cert03.pem" "${POSSL[@]}" s_client -cert "$D/cert03.pem" -key "$PKEY03"
tls engine-ec "$D/cert01.pem" "${EOSSL[@]}" s_client -engine pkcs11 -keyform engine -cert "$D/cert01.pem" -key "$EKEY01"
tls engine-rsa "$D/cert03.pem" "${EOSSL[@]}" s_client -engine pkcs11 -keyform engine -cert "$D/cert03.pem" \
  -key "$URI_TOKEN;object=KEY%20MAN%20key;type=private;pin-value=$PIN"

apps_cleanup
stop_card
