#!/usr/bin/env bash
# demo.sh — the main job on the embedded virtual card, from a fresh Debian 12 machine:
#   bash pkg/scripts/demo.sh
# Installs what is missing, builds Tessera (release), then:
#  - `tessera demo`: the whole e-Cert story in-process on a fresh virtual card (a demo CA
#    issues an e-Cert as .p12, import, status, sign, verify, renewal with an on-card key, the
#    CA issues the renewed certificate, install, the old key still decrypts, export);
#  - registers the PKCS#11 module in a fresh NSS database (as for a Firefox profile) and lists
#    the card's certificates with NSS's certutil, which loads the module in-process;
#  - brings up a private pcscd with a vpcd reader, inserts a factory-fresh virtual PIV card
#    with `tessera vcard serve`, and uses it exactly as a user's tools would: yubico-piv-tool
#    generates a key on the card and loads a certificate, OpenSC's PKCS#11 module signs with it
#    after a PIN login, OpenSSL verifies the signature with the certificate read back from the
#    card, and `tessera doctor` checks the system through pcscd.
# Exits 0 only if every step verified. Everything it starts is stopped at the end.
# Env knobs: SKIP_DEPS=1 (do not install packages), KEEP=1 (keep the work directory).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
SCRIPTS="$ROOT/pkg/scripts"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tessera-demo.XXXXXX")
step() { echo; echo "== $*"; }
cleanup() {
  local rc=$?
  bash "$SCRIPTS/pcsc-lab.sh" down "$WORK/lab" >/dev/null 2>&1 || true
  if [ "${KEEP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
    echo "work directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

# deps.sh installs what is missing; the demo needs no fuzzing tools.
install_demo_deps() {
  SKIP_FUZZ_TOOLS=1 bash "$SCRIPTS/deps.sh"
}

step "1. install missing packages and build"
[ "${SKIP_DEPS:-0}" = 1 ] || install_demo_deps
cargo build --release --quiet
TESSERA="$ROOT/target/release/tessera"
MODULE="$ROOT/target/release/libtessera_pkcs11.so"

step "2. tessera demo: the e-Cert story on a fresh virtual card (in-process)"
"$TESSERA" demo --keep "$WORK/story"

step "3. register the module with an NSS database; NSS lists the card's certificates"
mkdir -p "$WORK/profile"
certutil -N --empty-password -d "sql:$WORK/profile"
"$TESSERA" register nss --profile "$WORK/profile" --module "$MODULE"
again=$("$TESSERA" register nss --profile "$WORK/profile" --module "$MODULE")
echo "$again"
grep -q "already registered" <<<"$again"
TESSERA_VCARD="$WORK/story/card.json" certutil -L -h all -d "sql:$WORK/profile" | tee "$WORK/nss.txt"
grep -q ":Certificate for Key Management" "$WORK/nss.txt"
grep -q ":Retired Certificate for Key Management 1" "$WORK/nss.txt"
removed=$("$TESSERA" register nss --profile "$WORK/profile" --remove)
echo "$removed"
grep -q "removed" <<<"$removed"

step "4. a private pcscd with a virtual reader"
bash "$SCRIPTS/pcsc-lab.sh" up "$WORK/lab"
# shellcheck source=/dev/null
. "$WORK/lab/env"
READER="$TESSERA_LAB_READER 00 00"

step "5. a factory-fresh virtual PIV card, inserted into the reader"
"$TESSERA" vcard init "$WORK/card.json" --serial 1000001
"$TESSERA" vcard serve "$WORK/card.json" --vpcd "127.0.0.1:$TESSERA_VPCD_PORT" 2>"$WORK/serve.log" &
echo $! >"$WORK/lab/card.pid"
for _ in $(seq 1 200); do
  opensc-tool -r "$READER" -a >/dev/null 2>&1 && break
  sleep 0.05
done
opensc-tool -r "$READER" -a

step "6. yubico-piv-tool: card status"
PIV=(yubico-piv-tool -r "$TESSERA_LAB_READER")
"${PIV[@]}" -a status

step "7. generate a P-256 key on the card (slot 9a); a demo CA issues its e-Cert; load it"
"${PIV[@]}" -a generate -s 9a -A ECCP256 -o "$WORK/pub.pem"
# The card's public key goes to a CA, which issues the certificate (yubico-piv-tool's own
# selfsign is broken with OpenSSL 3 in Debian 12: Yubico/yubico-piv-tool#388).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
  -subj "/CN=Tessera Demo CA" -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
openssl req -new -key "$WORK/ca.key" -subj "/CN=Demo e-Cert holder/O=Tessera demo" -out "$WORK/req.csr"
openssl x509 -req -in "$WORK/req.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial \
  -force_pubkey "$WORK/pub.pem" -days 365 -out "$WORK/cert.pem" 2>/dev/null
"${PIV[@]}" -a import-certificate -s 9a -i "$WORK/cert.pem"

step "8. read the certificate back from the card"
"${PIV[@]}" -a read-certificate -s 9a -o "$WORK/readback.pem"
cmp "$WORK/cert.pem" "$WORK/readback.pem"
openssl x509 -in "$WORK/readback.pem" -noout -subject -dates

step "9. OpenSC's PKCS#11 module: log in with the PIN and sign a document"
OPENSC=$(dpkg -L opensc-pkcs11 2>/dev/null | grep -m1 '/opensc-pkcs11.so$')
echo "Document to sign: $(date -u)" >"$WORK/document.txt"
pkcs11-tool --module "$OPENSC" -L | sed -n '1,12p'
pkcs11-tool --module "$OPENSC" --login --pin 123456 --sign --id 01 --mechanism ECDSA-SHA256 \
  --signature-format openssl -i "$WORK/document.txt" -o "$WORK/document.sig"

step "10. OpenSSL verifies the signature with the certificate read from the card"
openssl x509 -in "$WORK/readback.pem" -pubkey -noout >"$WORK/cardkey.pem"
openssl dgst -sha256 -verify "$WORK/cardkey.pem" -signature "$WORK/document.sig" "$WORK/document.txt"

step "11. the PIN counter, read back from the card"
"${PIV[@]}" -a verify-pin -P 000000 && { echo "a wrong PIN was accepted"; exit 1; }
"${PIV[@]}" -a status | grep -E "PIN tries left:\s*2"
"${PIV[@]}" -a verify-pin -P 123456
"${PIV[@]}" -a status | grep -E "PIN tries left:\s*3"

step "12. tessera doctor through pcscd (the card in the lab's reader, this build's module)"
env -u TESSERA_VCARD "$TESSERA" doctor --module "$MODULE" | tee "$WORK/doctor.txt"
grep -q "^ok    pcscd" "$WORK/doctor.txt"
grep -q "^ok    module" "$WORK/doctor.txt"
grep -q "^ok    card 1000001 slot 9a" "$WORK/doctor.txt"

echo
echo "demo: every step verified"
