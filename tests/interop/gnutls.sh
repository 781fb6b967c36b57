#!/usr/bin/env bash
# Interop: GnuTLS's p11tool and p11-kit with libtessera_pkcs11.so registered as a p11-kit
# module (the per-user module file written by `tessera register p11-kit --user` under a
# temporary HOME), through the lab's pcscd + vpcd reader.
#  1. 9A: a P-256 key and 9D: an RSA-2048 key generated on the card, certificates from a
#     test CA, through the module (pkcs11-tool).
#  2. `p11-kit list-modules` shows the tessera module and its token; `p11tool --list-tokens`
#     shows "Tessera PIV #N" with its URL.
#  3. `p11tool --list-all-certs` lists both certificates (the one read equals the one written);
#     `p11tool --list-privkeys --login` lists the keys.
#  4. `p11tool --test-sign --login --set-pin=PIN URL` passes for the three keys; with the opt-in
#     card-auth-token setting 9E signs without --login on its own token; a signature made by
#     certtool with the card key verifies with the certificate.
#  5. `p11tool --list-all-certs` with no URL lists the card's certificates when only Tessera's
#     module is loaded (one token per card, as installed), and cannot choose with two tokens.
# Run by pkg/scripts/test-all.sh; by hand:
#   bash pkg/scripts/pcsc-lab.sh up /tmp/lab && . /tmp/lab/env
#   TESSERA_BIN=$PWD/target/release/tessera LAB=/tmp/lab bash tests/interop/gnutls.sh
set -uo pipefail
. "$(dirname "$0")/lib/common.bash"
. "$(dirname "$0")/lib/p11.bash"
. "$(dirname "$0")/lib/apps.bash"

PIN=123456
SERIAL=1000010
TOKEN="Tessera PIV #$SERIAL"
URI_TOKEN="pkcs11:token=Tessera%20PIV%20%23$SERIAL"
CARD="$LAB/gnutls.card"
D=$WORK
# p11-kit reads ~/.config/pkcs11/modules/*.module, but never for root ("skipping user config
# in program running as root"), and /etc/pkcs11/modules is shared with everything else on the
# machine. So the p11-kit clients run as an unprivileged user (nobody) whose HOME is ours;
# pcscd's socket is world-accessible and the module is world-readable.
RUN_USER=${GNUTLS_TEST_USER:-nobody}
RUN_GROUP=$(id -gn "$RUN_USER" 2>/dev/null || echo nogroup)
UHOME="$D/home"
mkdir -p "$UHOME"
export HOME="$UHOME"
unset XDG_CONFIG_HOME
export TESSERA_LOG_FILE="$D/module.log"
: >"$TESSERA_LOG_FILE"
# nobody must reach $D: the test command makes the lab with mktemp -d (0700)
chmod o+x "$LAB"
chmod 0711 "$D"
chmod 0666 "$TESSERA_LOG_FILE"
# U CMD...: CMD as RUN_USER (the root shell's environment, HOME=$UHOME)
if [ "$(id -u)" -eq 0 ]; then
  U() { setpriv --reuid="$RUN_USER" --regid="$RUN_GROUP" --clear-groups -- "$@"; }
else
  U() { "$@"; }
fi

p11_module_checks
for t in p11tool p11-kit certtool; do
  command -v "$t" >/dev/null || { notok "$t installed (packages gnutls-bin, p11-kit)"; exit 1; }
done
ok "$(p11tool --version 2>&1 | head -n 1); p11-kit $(p11-kit --version 2>/dev/null | head -n 1 | awk '{print $NF}')"

rm -f "$CARD" "$CARD".*
expect_ok "tessera vcard init (serial $SERIAL)" "$TESSERA_BIN" vcard init "$CARD" --serial "$SERIAL"
start_card "$CARD" || exit 1

# ---- populate through the module -----------------------------------------------------------------
gate "test CA created" p11_make_ca "$D"
declare -A KT=([01]="EC:prime256v1" [03]="rsa:2048")
declare -A KU=([01]="digitalSignature" [03]="digitalSignature,keyEncipherment")
for id in 01 03; do
  gate "pkcs11-tool --keypairgen ${KT[$id]} --id $id" \
    T --login --pin "$PIN" --keypairgen --key-type "${KT[$id]}" --id "$id"
  gate "public key $id read through the module" p11_pubkey_pem "$id" "$D/gen$id.pem"
  gate "test CA issues a certificate for key $id" \
    p11_issue "$D" "$D/gen$id.pem" "/CN=Tessera GnuTLS $id" "${KU[$id]}" "$D/cert$id.der"
  gate "certificate $id written through the module" \
    T --login --pin "$PIN" --write-object "$D/cert$id.der" --type cert --id "$id"
  openssl x509 -inform DER -in "$D/cert$id.der" -out "$D/cert$id.pem"
done
# card authentication (9E) is on the card's one token (as installed: no card-auth-token), and
# its key needs no login
gate "pkcs11-tool --keypairgen EC:prime256v1 --id 04 (9E)" \
  T --login --pin "$PIN" --keypairgen --key-type EC:prime256v1 --id 04

# ---- p11-kit registration ------------------------------------------------------------------------
# The unprivileged user must be able to load the module and run tessera, wherever the checkout
# lives (a clone in a mktemp -d directory is 0700): give it copies in $D.
mkdir -p "$D/bin"
cp "$MODULE" "$D/bin/libtessera_pkcs11.so"
cp "$TESSERA_BIN" "$D/bin/tessera"
chmod 0755 "$D/bin" "$D/bin/tessera" "$D/bin/libtessera_pkcs11.so"
MODULE="$D/bin/libtessera_pkcs11.so"
TESSERA_BIN="$D/bin/tessera"
MODFILE="$HOME/.config/pkcs11/modules/tessera.module"
run "$TESSERA_BIN" register p11-kit --user --module "$MODULE"
[ "$(id -u)" -eq 0 ] && chown -R "$RUN_USER:$RUN_GROUP" "$UHOME"
if [ "$RC" -eq 0 ] && [ -s "$MODFILE" ]; then
  ok "tessera register p11-kit --user writes $MODFILE"
else
  notok "tessera register p11-kit --user writes $MODFILE (exit $RC); writing it by hand" "$OUT"
  mkdir -p "$(dirname "$MODFILE")"
  printf 'module: %s\n' "$MODULE" >"$MODFILE"
fi
expect_grep "the module file names the module" "^module: *$MODULE\$" cat "$MODFILE"

run U timeout 30 p11-kit list-modules
printf '%s\n' "$OUT" >"$D/list-modules.txt"
# the tessera block: from "tessera: PATH" to the next module header
awk '/^[^ \t]/ { p = ($1 == "tessera:") } p' "$D/list-modules.txt" >"$D/tessera-block.txt"
if [ "$RC" -eq 0 ] && grep -q "^tessera: $MODULE" "$D/tessera-block.txt"; then
  ok "p11-kit list-modules shows 'tessera: $MODULE'"
else notok "p11-kit list-modules shows the tessera module (exit $RC)" "$OUT"; fi
expect_grep "p11-kit list-modules shows the module's library description" \
  'library-description: Tessera PKCS#11 for PIV cards' cat "$D/tessera-block.txt"
expect_grep "p11-kit list-modules shows the token '$TOKEN' (serial $SERIAL)" \
  "token: $TOKEN\$" cat "$D/tessera-block.txt"
expect_grep "…with its serial number" "serial-number: $SERIAL\$" cat "$D/tessera-block.txt"

# ---- p11tool ---------------------------------------------------------------------------------------
run U timeout 30 p11tool --list-tokens
printf '%s\n' "$OUT" >"$D/tokens.txt"
if [ "$RC" -eq 0 ] && grep -q "Label: $TOKEN\$" "$D/tokens.txt"; then
  ok "p11tool --list-tokens shows 'Label: $TOKEN'"
else notok "p11tool --list-tokens shows '$TOKEN' (exit $RC)" "$OUT"; fi
if [ "$(grep -c "Label: $TOKEN" "$D/tokens.txt")" = 1 ]; then ok "p11tool --list-tokens shows the card as one token"
else notok "p11tool --list-tokens shows the card as one token" "$OUT"; fi
# the token URL p11tool prints, for everything below
URL=$(awk -v t="$TOKEN" '/^Token [0-9]+:/ { getline; u = $2 } /Label:/ { sub(/^[ \t]*Label: /, ""); if ($0 == t) { print u; exit } }' "$D/tokens.txt")
if [ -n "$URL" ] && [[ "$URL" == "$URI_TOKEN"* ]] || [[ "$URL" == pkcs11:*token=Tessera%20PIV%20%23$SERIAL* ]]; then
  ok "p11tool's token URL names the token and serial ($URL)"
else notok "p11tool's token URL names the token ('$URL')" "$(cat "$D/tokens.txt")"; URL=$URI_TOKEN; fi

run U timeout 30 p11tool --list-all-certs "$URL"
printf '%s\n' "$OUT" >"$D/certs.txt"
n=$(grep -c '^Object [0-9]*:' "$D/certs.txt")
if [ "$RC" -eq 0 ] && grep -q 'Label: Certificate for PIV Authentication' "$D/certs.txt" &&
  grep -q 'Label: Certificate for Key Management' "$D/certs.txt"; then
  ok "p11tool --list-all-certs lists the 9A and 9D certificates ($n objects)"
else notok "p11tool --list-all-certs lists the 9A and 9D certificates (exit $RC)" "$OUT"; fi
# Without a URL p11tool picks the token when there is exactly one: with Tessera's module alone
# (--provider; p11-kit also loads OpenSC's module and its trust store, each a token of its own)
# the card is one token and is picked; with card-auth-token on it is two, and p11tool gives up.
run U timeout 30 p11tool --provider "$MODULE" --list-all-certs
if [ "$RC" -eq 0 ] && printf '%s\n' "$OUT" | grep >/dev/null 'Label: Certificate for PIV Authentication'; then
  ok "p11tool --provider MODULE --list-all-certs without a URL lists the card's certificates (exit 0)"
else notok "p11tool --provider MODULE --list-all-certs without a URL lists the card's certificates (exit $RC)" "$OUT"; fi
run U env TESSERA_CARD_AUTH_TOKEN=1 timeout 30 p11tool --provider "$MODULE" --list-all-certs
if [ "$RC" -ne 0 ] && printf '%s\n' "$OUT" | grep >/dev/null 'no token URL was provided'; then
  ok "…while with card-auth-token on (two tokens) p11tool cannot pick one: the reason it is off by default"
else notok "with card-auth-token on p11tool --list-all-certs has two tokens to choose from (exit $RC)" "$OUT"; fi
rm -f "$UHOME/export01.pem"
run U timeout 30 p11tool --export "$URI_TOKEN;object=Certificate%20for%20PIV%20Authentication;type=cert" --outfile "$UHOME/export01.pem"
check "p11tool --export of the 9A certificate equals the one written" \
  cmp -s <(openssl x509 -in "$UHOME/export01.pem" -outform DER 2>/dev/null) "$D/cert01.der"
expect_grep "p11tool --list-privkeys --login lists the 9A and 9D keys" 'Label: PIV AUTH key' \
  U timeout 30 p11tool --list-privkeys --login --set-pin="$PIN" "$URL"
expect_grep "…and the 9D key" 'Label: KEY MAN key' \
  U timeout 30 p11tool --list-privkeys --login --set-pin="$PIN" "$URL"

# ---- test-sign -------------------------------------------------------------------------------------
# p11tool --test-sign signs with the private key the URL names and verifies with the public key
# found by the same URL with type=public. The URL names the key pair by CKA_ID: the labels
# differ between the two objects ("PIV AUTH key" / "PIV AUTH pubkey", as OpenSC names them),
# so an object= URL finds no public key ("Cannot import public key").
for id in 01 03; do
  run U timeout 60 p11tool --test-sign --login --set-pin="$PIN" "$URI_TOKEN;id=%$id;type=private"
  if [ "$RC" -eq 0 ] && printf '%s\n' "$OUT" | grep >/dev/null 'Verifying against public key in the token... ok'; then
    ok "p11tool --test-sign --login --set-pin=… '$URI_TOKEN;id=%$id;type=private': $(printf '%s\n' "$OUT" | grep -m1 -o 'Signing using [^.]*') ok, verified against the token's public key"
  else
    notok "p11tool --test-sign --login '…;id=%$id;type=private' (exit $RC)" "$OUT"
    show_module_log "$TESSERA_LOG_FILE" 20
  fi
done
# 9E: on the one token GnuTLS asks for the PIN first (the token needs a login, as NSS does);
# with card-auth-token on, 9E is on a login-free token of its own and signs without any PIN
run U timeout 60 p11tool --test-sign --login --set-pin="$PIN" "$URI_TOKEN;id=%04;type=private"
if [ "$RC" -eq 0 ] && printf '%s\n' "$OUT" | grep >/dev/null 'Verifying against public key in the token... ok'; then
  ok "p11tool --test-sign '$URI_TOKEN;id=%04;type=private': 9E signs, verified against the token's public key"
else
  notok "p11tool --test-sign '$URI_TOKEN;id=%04;type=private' (exit $RC)" "$OUT"
  show_module_log "$TESSERA_LOG_FILE" 20
fi
URI_AUTH="pkcs11:token=Tessera%20PIV%20%23$SERIAL%20Card%20Auth"
run U env TESSERA_CARD_AUTH_TOKEN=1 timeout 60 p11tool --test-sign "$URI_AUTH;id=%04;type=private"
if [ "$RC" -eq 0 ] && printf '%s\n' "$OUT" | grep >/dev/null 'Verifying against public key in the token... ok'; then
  ok "card-auth-token on: p11tool --test-sign (no --login) '$URI_AUTH;id=%04;type=private': 9E signs without a PIN"
else
  notok "card-auth-token on: p11tool --test-sign (no --login) '$URI_AUTH;id=%04;type=private' (exit $RC)" "$OUT"
  show_module_log "$TESSERA_LOG_FILE" 20
fi

# a signature made through GnuTLS, checked by OpenSSL with the certificate (certtool signs a
# CSR with the card key: the request's self-signature)
export GNUTLS_PIN=$PIN
printf 'cn = "Tessera GnuTLS CSR"\n' >"$D/csr.tmpl"
rm -f "$UHOME/req.pem"
run U timeout 60 certtool --generate-request --load-privkey "$URI_TOKEN;object=PIV%20AUTH%20key;type=private" \
  --load-pubkey "$URI_TOKEN;id=%01;type=public" --template "$D/csr.tmpl" --outfile "$UHOME/req.pem"
if [ "$RC" -eq 0 ] && [ -s "$UHOME/req.pem" ]; then ok "certtool --generate-request signs with the card key (GNUTLS_PIN)"
else notok "certtool --generate-request signs with the card key (exit $RC)" "$OUT"; fi
expect_grep "openssl req -verify accepts certtool's request" 'verify OK' openssl req -in "$UHOME/req.pem" -verify -noout
check "the request holds the 9A certificate's public key" \
  cmp -s <(openssl req -in "$UHOME/req.pem" -noout -pubkey 2>/dev/null | openssl pkey -pubin -outform DER 2>/dev/null) \
  <(openssl x509 -in "$D/cert01.pem" -noout -pubkey | openssl pkey -pubin -outform DER)
unset GNUTLS_PIN

# unregistering removes the file and p11-kit no longer lists the module
expect_ok "tessera register p11-kit --user --remove" U "$TESSERA_BIN" register p11-kit --user --remove
run U timeout 30 p11-kit list-modules
if ! printf '%s\n' "$OUT" | grep >/dev/null "^tessera:"; then ok "after --remove p11-kit list-modules no longer shows tessera"
else notok "after --remove p11-kit list-modules no longer shows tessera" "$OUT"; fi

stop_card
