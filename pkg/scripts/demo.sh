#!/usr/bin/env bash
# demo.sh — the main job on the embedded virtual card, from a fresh Debian 12 machine:
#   bash pkg/scripts/demo.sh
# Installs what is missing, builds Tessera, brings up a private pcscd with a vpcd reader,
# creates a factory-fresh virtual PIV card and inserts it with `tessera vcard serve`, then uses
# it exactly as a user's tools would: yubico-piv-tool generates a key on the card and loads a
# certificate, OpenSC's PKCS#11 module signs with it after a PIN login, and OpenSSL verifies
# the signature with the certificate read back from the card. Exits 0 only if every step
# verified. Everything it starts is stopped at the end.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
SCRIPTS="$ROOT/pkg/scripts"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tessera-demo.XXXXXX")
step() { echo; echo "== $*"; }
cleanup() {
  bash "$SCRIPTS/pcsc-lab.sh" down "$WORK/lab" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

step "1. install missing packages and build"
SKIP_FUZZ_TOOLS=1 bash "$SCRIPTS/deps.sh"
cargo build --release --quiet
TESSERA="$ROOT/target/release/tessera"

step "2. a private pcscd with a virtual reader"
bash "$SCRIPTS/pcsc-lab.sh" up "$WORK/lab"
# shellcheck source=/dev/null
. "$WORK/lab/env"
READER="$TESSERA_LAB_READER 00 00"

step "3. a factory-fresh virtual PIV card, inserted into the reader"
"$TESSERA" vcard init "$WORK/card.json" --serial 1000001
"$TESSERA" vcard serve "$WORK/card.json" --vpcd "127.0.0.1:$TESSERA_VPCD_PORT" 2>"$WORK/serve.log" &
echo $! >"$WORK/lab/card.pid"
for _ in $(seq 1 200); do
  opensc-tool -r "$READER" -a >/dev/null 2>&1 && break
  sleep 0.05
done
opensc-tool -r "$READER" -a

step "4. yubico-piv-tool: card status"
PIV=(yubico-piv-tool -r "$TESSERA_LAB_READER")
"${PIV[@]}" -a status

step "5. generate a P-256 key on the card (slot 9a); a demo CA issues its e-Cert; load it"
"${PIV[@]}" -a generate -s 9a -A ECCP256 -o "$WORK/pub.pem"
# The card's public key goes to a CA, which issues the certificate (yubico-piv-tool's own
# selfsign is broken with OpenSSL 3 in Debian 12: Yubico/yubico-piv-tool#388).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
  -subj "/CN=Tessera Demo CA" -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
openssl req -new -key "$WORK/ca.key" -subj "/CN=Demo e-Cert holder/O=Tessera demo" -out "$WORK/req.csr"
openssl x509 -req -in "$WORK/req.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial \
  -force_pubkey "$WORK/pub.pem" -days 365 -out "$WORK/cert.pem" 2>/dev/null
"${PIV[@]}" -a import-certificate -s 9a -i "$WORK/cert.pem"

step "6. read the certificate back from the card"
"${PIV[@]}" -a read-certificate -s 9a -o "$WORK/readback.pem"
cmp "$WORK/cert.pem" "$WORK/readback.pem"
openssl x509 -in "$WORK/readback.pem" -noout -subject -dates

step "7. OpenSC's PKCS#11 module: log in with the PIN and sign a document"
OPENSC=$(dpkg -L opensc-pkcs11 2>/dev/null | grep -m1 '/opensc-pkcs11.so$')
echo "Document to sign: $(date -u)" >"$WORK/document.txt"
pkcs11-tool --module "$OPENSC" -L | sed -n '1,12p'
pkcs11-tool --module "$OPENSC" --login --pin 123456 --sign --id 01 --mechanism ECDSA-SHA256 \
  --signature-format openssl -i "$WORK/document.txt" -o "$WORK/document.sig"

step "8. OpenSSL verifies the signature with the certificate read from the card"
openssl x509 -in "$WORK/readback.pem" -pubkey -noout >"$WORK/cardkey.pem"
openssl dgst -sha256 -verify "$WORK/cardkey.pem" -signature "$WORK/document.sig" "$WORK/document.txt"

step "9. the PIN counter, read back from the card"
"${PIV[@]}" -a verify-pin -P 000000 && { echo "a wrong PIN was accepted"; exit 1; }
"${PIV[@]}" -a status | grep -E "PIN tries left:\s*2"
"${PIV[@]}" -a verify-pin -P 123456
"${PIV[@]}" -a status | grep -E "PIN tries left:\s*3"

echo
echo "demo: every step verified"
