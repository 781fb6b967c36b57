# Shared helpers for the interop scripts that load libtessera_pkcs11.so (pkcs11-module.sh,
# nss.sh, libp11.sh). Sourced after lib/common.bash (needs its WORK, run/ok/notok).
#
#   TESSERA_MODULE  the module to test (default: target/release/libtessera_pkcs11.so next
#                   to TESSERA_BIN)
# The card is used through pcscd (the lab's vpcd reader), never in-process: TESSERA_VCARD is
# unset so that the module shows only the lab's readers.

unset TESSERA_VCARD
MODULE=${TESSERA_MODULE:-$(dirname "$TESSERA_BIN")/libtessera_pkcs11.so}
OPENSC_MOD=${OPENSC_MODULE:-$(dpkg -L opensc-pkcs11 2>/dev/null | grep -m1 '/opensc-pkcs11\.so$' || true)}
OPENSC_MOD=${OPENSC_MOD:-/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so}

# T ARGS...: pkcs11-tool with our module (the slot of the lab reader holding the card is the
# first slot with a token: the lab's second reader stays empty). Card authentication (9E) is
# on the card's second token, "<label> Card Auth": reach it with --token-label.
T() { pkcs11-tool --module "$MODULE" "$@"; }

# p11_make_ca DIR: a P-256 test CA in DIR/ca.key + DIR/ca.pem
p11_make_ca() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1/ca.key" \
    -out "$1/ca.pem" -subj "/CN=Tessera Interop Test CA" -days 30 \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    >/dev/null 2>&1
}

# p11_issue DIR PUBPEM SUBJECT KEYUSAGE OUT.der: a certificate for PUBPEM issued by DIR's CA
# (the card key never leaves the card: openssl x509 -new -force_pubkey)
p11_issue() {
  local dir=$1 pub=$2 subj=$3 ku=$4 out=$5 ext
  ext=$(mktemp "$dir/ext.XXXXXX")
  printf 'keyUsage=critical,%s\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' "$ku" >"$ext"
  openssl x509 -new -subj "$subj" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -force_pubkey "$pub" \
    -days 30 -sha256 -extfile "$ext" \
    -set_serial "0x$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" -outform DER -out "$out"
}

# p11_ec_spki ID [MODULE [TOKEN-LABEL]]: the DER SubjectPublicKeyInfo of the EC public key
# object with CKA_ID ID, built from the EC_POINT and EC_PARAMS that `pkcs11-tool -O` prints.
# (pkcs11-tool 0.23 cannot export every EC public key: `--read-object --type pubkey` of a
# P-384 key fails with "cannot create EVP_PKEY", OpenSC#3200.)
p11_ec_spki() {
  local id=$1 mod=${2:-$MODULE} pt par alg bs body sel=()
  [ -n "${3:-}" ] && sel=(--token-label "$3")
  read -r pt par < <(pkcs11-tool --module "$mod" "${sel[@]}" -O --type pubkey 2>/dev/null | awk -v id="$id" '
    /Object;/ { if (p != "" && i == id) { print p, q; found = 1; exit } p = ""; q = ""; i = "" }
    /EC_POINT:/ { p = $2 } /EC_PARAMS:/ { q = $2 } /^[ \t]+ID:/ { i = $2 }
    END { if (!found && p != "" && i == id) print p, q }')
  [ -n "$pt" ] && [ -n "$par" ] || { echo "p11_ec_spki: no EC public key with ID $id" >&2; return 1; }
  p11_ec_spki_from "$pt" "$par"
}

# p11_ec_spki_from EC_POINT EC_PARAMS: the DER SubjectPublicKeyInfo of an EC key from the hex
# that pkcs11-tool prints for a public key object (also in --keypairgen's own output)
p11_ec_spki_from() {
  local pt=$1 par=$2 alg bs body
  # EC_POINT is the DER OCTET STRING around the uncompressed point: drop its header
  case ${pt:2:1} in 8) pt=${pt:$((4 + 2 * (16#${pt:3:1})))} ;; *) pt=${pt:4} ;; esac
  alg="06072a8648ce3d0201$par" # id-ecPublicKey + the curve OID
  alg="30$(printf %02x $((${#alg} / 2)))$alg"
  bs="00$pt"
  bs="03$(printf %02x $((${#bs} / 2)))$bs"
  body="$alg$bs"
  [ $((${#body} / 2)) -lt 128 ] || { echo "p11_ec_spki: key too long" >&2; return 1; }
  printf '30%02x%s' $((${#body} / 2)) "$body" | xxd -r -p
}

# p11_pubkey_pem ID OUT.pem [TOKEN-LABEL]: the public key object ID as PEM (RSA: pkcs11-tool
# export; EC: p11_ec_spki), from the first token or the one labelled TOKEN-LABEL
p11_pubkey_pem() {
  local id=$1 out=$2 der="$WORK/pubkey-$1.der" sel=()
  [ -n "${3:-}" ] && sel=(--token-label "$3")
  rm -f "$der"
  if T "${sel[@]}" --read-object --type pubkey --id "$id" -o "$der" >/dev/null 2>&1 && [ -s "$der" ] &&
    openssl pkey -pubin -inform DER -in "$der" -out "$out" 2>/dev/null; then
    return 0
  fi
  p11_ec_spki "$id" "$MODULE" "${3:-}" >"$der" && openssl pkey -pubin -inform DER -in "$der" -out "$out"
}

# p11_id_labels < `pkcs11-tool -O` output: sorted "class|ID|label" lines of the certificate,
# public key and private key objects (data and profile objects ignored)
p11_id_labels() {
  awk '
    function emit() { if (cls != "" && id != "") print cls "|" id "|" lbl; cls = ""; id = ""; lbl = "" }
    /Object;/ {
      emit()
      if ($0 ~ /^Certificate Object/) cls = "certificate"
      else if ($0 ~ /^Public Key Object/) cls = "public key"
      else if ($0 ~ /^Private Key Object/) cls = "private key"
      next
    }
    /^[^ \t]/ { emit(); next }
    /^[ \t]+label:/ { sub(/^[ \t]+label:[ \t]*/, ""); lbl = $0 }
    /^[ \t]+ID:/ { id = $2 }
    END { emit() }' | sort
}

# p11_usages < `pkcs11-tool -O` output: sorted "class|ID|usage" lines (as p11_id_labels)
p11_usages() {
  awk '
    function emit() { if (cls != "" && id != "") print cls "|" id "|" use; cls = ""; id = ""; use = "" }
    /Object;/ {
      emit()
      if ($0 ~ /^Public Key Object/) cls = "public key"
      else if ($0 ~ /^Private Key Object/) cls = "private key"
      next
    }
    /^[^ \t]/ { emit(); next }
    /^[ \t]+Usage:/ { sub(/^[ \t]+Usage:[ \t]*/, ""); use = $0 }
    /^[ \t]+ID:/ { id = $2 }
    END { emit() }' | sort
}

# p11_module_checks: the module file exists and pkcs11-tool can load it
p11_module_checks() {
  if [ -r "$MODULE" ]; then ok "module present ($MODULE)"; else
    notok "module present ($MODULE): build it with cargo build --release"
    exit 1
  fi
}
