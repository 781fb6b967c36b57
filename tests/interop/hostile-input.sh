#!/usr/bin/env bash
# Interop: hostile and broken input to `tessera import` (issue 11), driven through the real CLI
# on an in-process virtual card (`tessera --vcard CARD`). The .p12 files are made with openssl
# (every legacy protection old Windows exports use, SHA-2 and MD5 MACs, CA certificates that
# name each other as issuer) and rewritten where openssl has no option for it by
# lib/p12der.py (a key bag without localKeyID, MAC recomputed and verified by openssl; a
# 50,000,000-iteration MAC). Asserted:
#   - the loop .p12 is handled in under 5 s with under 200 MB resident (/usr/bin/time -v)
#   - /dev/zero as PIN, password or .p12 file is refused naming it and the limit, in bounded
#     memory; so is an oversized PIN file
#   - a 50,000,000-iteration MAC is refused naming the count, at once
#   - SHA-512-MAC, no-localKeyID and legacy (RC4, 2-key 3DES, RC2-40, MD5-MAC) files import and
#     the loaded key is proven ("verified it: ok"); an unsupported PBE is named
#   - a damaged .p12 says damaged, an empty password file or empty stdin says empty: neither
#     says "wrong password"; a wrong password does
#   - after every refusal the card file is byte-identical (cmp)
# Run by pkg/scripts/test-all.sh; by hand:
#   bash pkg/scripts/pcsc-lab.sh up /tmp/labh && . /tmp/labh/env
#   TESSERA_BIN=$PWD/target/release/tessera LAB=/tmp/labh bash tests/interop/hostile-input.sh
#   bash pkg/scripts/pcsc-lab.sh down /tmp/labh
set -uo pipefail
. "$(dirname "$0")/lib/common.bash"

P12DER="$(cd "$(dirname "$0")" && pwd)/lib/p12der.py"
unset TESSERA_VCARD
FX="$WORK/fx"
PW=envelope-2468
PIN=123456 # the virtual card's factory PIN
MAX_RSS_KB=$((200 * 1024))
MAX_WALL_S=5

check "openssl, python3 and /usr/bin/time installed" command -v openssl python3 /usr/bin/time

# ---- fixtures ---------------------------------------------------------------------------------
# p12 NAME KEY CERT [OPENSSL OPTIONS...]: NAME.p12 of KEY and CERT with the CA, password $PW
p12() {
  local name=$1 key=$2 cert=$3
  shift 3
  openssl pkcs12 -export -inkey "$FX/$key" -in "$FX/$cert" -certfile "$FX/ca.pem" \
    -passout "file:$FX/pw" -out "$FX/$name.p12" "$@"
}
mk_fixtures() {
  mkdir -p "$FX" && cd "$FX" || return 1
  printf '%s\n' "$PW" >pw
  printf '%s\n' not-the-password >wrongpw
  : >empty
  printf '%s\n' "$PIN" >pin
  head -c 5000 /dev/urandom | base64 -w0 >bigpin
  openssl ecparam -name prime256v1 -genkey -noout -out ca.key &&
    openssl req -x509 -new -key ca.key -subj "/CN=Hostile Test CA" -days 30 -out ca.pem &&
    openssl ecparam -name prime256v1 -genkey -noout -out holder.key &&
    openssl req -new -key holder.key -subj "/CN=Hostile Holder" -out holder.csr &&
    openssl x509 -req -in holder.csr -CA ca.pem -CAkey ca.key -set_serial 7 -days 30 -out holder.pem ||
    return 1
  # two CAs naming each other as issuer (A issued B, then B issued A's certificate), and a
  # holder certificate issued by A
  openssl ecparam -name prime256v1 -genkey -noout -out loop-a.key &&
    openssl ecparam -name prime256v1 -genkey -noout -out loop-b.key &&
    openssl req -x509 -new -key loop-a.key -subj "/CN=Loop CA A" -days 30 -out loop-a0.pem &&
    openssl req -new -key loop-b.key -subj "/CN=Loop CA B" -out loop-b.csr &&
    openssl x509 -req -in loop-b.csr -CA loop-a0.pem -CAkey loop-a.key -set_serial 2 -days 30 -out loop-b.pem &&
    openssl req -new -key loop-a.key -subj "/CN=Loop CA A" -out loop-a.csr &&
    openssl x509 -req -in loop-a.csr -CA loop-b.pem -CAkey loop-b.key -set_serial 3 -days 30 -out loop-a.pem &&
    openssl x509 -req -in holder.csr -CA loop-a.pem -CAkey loop-a.key -set_serial 4 -days 30 -out loop-holder.pem &&
    cat loop-a.pem loop-b.pem >loop-cas.pem &&
    openssl pkcs12 -export -inkey holder.key -in loop-holder.pem -certfile loop-cas.pem \
      -passout file:pw -out loop.p12 || return 1
  p12 modern holder.key holder.pem &&
    p12 sha512 holder.key holder.pem -macalg sha512 &&
    p12 win-rc4-2des holder.key holder.pem -legacy -certpbe PBE-SHA1-RC4-128 -keypbe PBE-SHA1-2DES &&
    p12 win-rc4-40-rc2-40 holder.key holder.pem -legacy -certpbe PBE-SHA1-RC4-40 -keypbe PBE-SHA1-RC2-40 &&
    p12 win-rc2-128-rc4 holder.key holder.pem -legacy -certpbe PBE-SHA1-RC2-128 -keypbe PBE-SHA1-RC4-128 &&
    p12 md5mac holder.key holder.pem -legacy -macalg md5 &&
    p12 md5des holder.key holder.pem -legacy -keypbe PBE-MD5-DES &&
    p12 plaincerts holder.key holder.pem -certpbe NONE -macalg sha256 || return 1
  python3 "$P12DER" strip-localkeyid plaincerts.p12 nolocalkeyid.p12 "$PW" &&
    python3 "$P12DER" mac-iterations modern.p12 iter50m.p12 50000000 || return 1
  head -c "$(($(stat -c %s modern.p12) / 2))" modern.p12 >truncated.p12
  # the tail (the MAC) overwritten: a well-formed start, a broken end
  cp modern.p12 tail-broken.p12
  printf '\377%.0s' $(seq 1 40) | dd of=tail-broken.p12 bs=1 seek=$(($(stat -c %s modern.p12) - 40)) conv=notrunc 2>/dev/null
  cd - >/dev/null || return 1
}
gate "fixtures: CA, holder, loop CAs, .p12 files (modern, SHA-512 MAC, legacy Windows-style, MD5 MAC, PBE-MD5-DES, no localKeyID, 50M iterations, truncated, broken tail)" \
  mk_fixtures

# the fixtures are what they claim to be (independent reader: openssl, python for the count)
expect_grep "fixture loop.p12 holds both loop CAs (openssl lists 3 certificates)" '^3$' \
  sh -c "openssl pkcs12 -in '$FX/loop.p12' -passin 'file:$FX/pw' -nokeys | grep -c 'BEGIN CERTIFICATE'"
expect_grep "fixture sha512.p12: MAC SHA-512" 'MAC: sha512' \
  openssl pkcs12 -in "$FX/sha512.p12" -passin "file:$FX/pw" -info -noout
expect_grep "fixture win-rc4-2des.p12: RC4-128 certificates, 2-key 3DES key" \
  'pbeWithSHA1And128BitRC4.*pbeWithSHA1And2-KeyTripleDES-CBC' \
  sh -c "openssl pkcs12 -in '$FX/win-rc4-2des.p12' -passin 'file:$FX/pw' -info -noout -legacy 2>&1 | tr '\n' ' '"
expect_grep "fixture md5mac.p12: MAC MD5" 'MAC: md5' \
  openssl pkcs12 -in "$FX/md5mac.p12" -passin "file:$FX/pw" -info -noout -legacy
no_localkeyid_is_wellformed() {
  local out
  out=$(openssl pkcs12 -in "$FX/nolocalkeyid.p12" -passin "file:$FX/pw" -info -nodes 2>&1) ||
    { echo "openssl rejects it: $out"; return 1; }
  printf '%s\n' "$out" | grep >/dev/null 'PRIVATE KEY' || { echo "no key"; return 1; }
  printf '%s\n' "$out" | grep >/dev/null 'BEGIN CERTIFICATE' || { echo "no certificate"; return 1; }
  ! printf '%s\n' "$out" | grep >/dev/null -i 'localKeyID' || { echo "still has a localKeyID"; return 1; }
}
check "fixture nolocalkeyid.p12: MAC verified by openssl, key and certificate read, no localKeyID anywhere" \
  no_localkeyid_is_wellformed
expect_grep "fixture iter50m.p12: a SHA-256 MAC of 50000000 iterations" '^sha256 50000000$' \
  python3 "$P12DER" info "$FX/iter50m.p12"

# ---- the card ---------------------------------------------------------------------------------
CARD="$WORK/card.json"
gate "tessera vcard init" "$TESSERA_BIN" vcard init "$CARD"
TS() { "$TESSERA_BIN" --vcard "$CARD" "$@"; }
# import PASSWORDFILE PINFILE P12 (a function); IMPORT: the same as a plain command line, for
# /usr/bin/time
import() {
  TS --password-file "$1" --pin-file "$2" import "$3" --backup-dir "$WORK/backup"
}
IMPORT=("$TESSERA_BIN" --vcard "$CARD")
imp() { # imp PASSWORDFILE PINFILE P12: the argument list of `import` for measured
  printf '%s\n' "${IMPORT[@]}" --password-file "$1" --pin-file "$2" import "$3" --backup-dir "$WORK/backup"
}

# refuse WHAT REGEX CMD...: CMD fails with a message matching REGEX that does not say "wrong
# password" unless REGEX asks for it, and the card file is byte-identical afterwards
refuse() {
  local what=$1 re=$2
  shift 2
  cp "$CARD" "$WORK/card.before"
  run "$@"
  if [ "$RC" -eq 0 ] || ! printf '%s\n' "$OUT" | grep -Eq -- "$re"; then
    notok "refused: $what (exit $RC, wanted /$re/)" "$OUT"
  elif [[ "$re" != *"wrong password"* ]] && printf '%s\n' "$OUT" | grep >/dev/null -i 'wrong password'; then
    notok "refused: $what, and not as a wrong password" "$OUT"
  else
    ok "refused: $what ($(printf '%s\n' "$OUT" | tail -n 1 | cut -c1-240))"
  fi
  check "  card file byte-identical after: $what" cmp "$CARD" "$WORK/card.before"
}

# imported WHAT P12: the import succeeds and the loaded key is proven against the certificate
imported() {
  expect_grep "imported: $1 (the key signed a challenge the certificate verified)" \
    'verified it: ok' import "$FX/pw" "$FX/pin" "$FX/$2"
}

# measured WHAT PASSWORDFILE PINFILE P12: `tessera import` under /usr/bin/time -v; checks max
# RSS and wall time (the outcome is left in $RC and $OUT)
measured() {
  local what=$1 rss wall args
  shift
  mapfile -t args < <(imp "$@")
  run timeout 60 /usr/bin/time -v -o "$WORK/time.txt" "${args[@]}"
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time.txt")
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i]; print s}' "$WORK/time.txt")
  if [ -n "$rss" ] && [ -n "$wall" ] && [ "$rss" -lt "$MAX_RSS_KB" ] &&
    awk -v w="$wall" -v m="$MAX_WALL_S" 'BEGIN { exit !(w < m) }'; then
    ok "$what: ${wall} s, max RSS ${rss} kB (limits ${MAX_WALL_S} s, ${MAX_RSS_KB} kB)"
  else
    notok "$what: ${wall:-?} s, max RSS ${rss:-?} kB (limits ${MAX_WALL_S} s, ${MAX_RSS_KB} kB)" \
      "$(cat "$WORK/time.txt" 2>/dev/null; printf '%s\n' "$OUT")"
  fi
}

# ---- the loop .p12: handled, fast, bounded ------------------------------------------------------
measured "loop.p12 (CA certificates naming each other as issuer) imported" \
  "$FX/pw" "$FX/pin" "$FX/loop.p12"
if [ "$RC" -eq 0 ] && printf '%s\n' "$OUT" | grep >/dev/null 'verified it: ok'; then
  ok "loop.p12: the key was loaded and proven"
else notok "loop.p12: the key was loaded and proven (exit $RC)" "$OUT"; fi
expect_grep "loop.p12: both CA certificates stored with it, once each (export --chain: 3 certificates)" '^3$' \
  sh -c "'$TESSERA_BIN' --vcard '$CARD' export --slot 9a --chain | grep -c 'BEGIN CERTIFICATE'"

# ---- endless and oversized inputs ---------------------------------------------------------------
measured "/dev/zero as PIN file: refused in bounded memory" "$FX/pw" /dev/zero "$FX/modern.p12"
refuse "/dev/zero as PIN file (named, with the limit)" '/dev/zero.*4096' \
  import "$FX/pw" /dev/zero "$FX/modern.p12"
refuse "/dev/zero as password file (named, with the limit)" '/dev/zero.*4096' \
  import /dev/zero "$FX/pin" "$FX/modern.p12"
refuse "an oversized (6668-byte) PIN file (named, with the limit)" 'bigpin.*4096' \
  import "$FX/pw" "$FX/bigpin" "$FX/modern.p12"
measured "/dev/zero as the .p12 file: refused in bounded memory" "$FX/pw" "$FX/pin" /dev/zero
refuse "/dev/zero as the .p12 file (named, with the limit)" '/dev/zero.*1048576' \
  import "$FX/pw" "$FX/pin" /dev/zero
measured "iter50m.p12 (50,000,000-iteration MAC): refused at once" "$FX/pw" "$FX/pin" "$FX/iter50m.p12"
refuse "iter50m.p12: the iteration count is named" '50000000 iterations' \
  import "$FX/pw" "$FX/pin" "$FX/iter50m.p12"

# ---- damaged files, empty and wrong passwords ---------------------------------------------------
refuse "truncated.p12: damaged (truncated), not a wrong password" 'truncated.p12 is damaged.*truncated' \
  import "$FX/pw" "$FX/pin" "$FX/truncated.p12"
refuse "tail-broken.p12: damaged at a named place, not a wrong password" 'tail-broken.p12 is damaged at' \
  import "$FX/pw" "$FX/pin" "$FX/tail-broken.p12"
refuse "a PEM certificate given as the .p12: not a PKCS#12 file" 'not a PKCS#12 file' \
  import "$FX/pw" "$FX/pin" "$FX/holder.pem"
refuse "an empty password file: empty, not a wrong password" 'empty' \
  import "$FX/empty" "$FX/pin" "$FX/modern.p12"
refuse "an empty standard input as password: empty, not a wrong password" 'empty' \
  import - "$FX/pin" "$FX/modern.p12"
refuse "a wrong password: said so" 'wrong password' \
  import "$FX/wrongpw" "$FX/pin" "$FX/modern.p12"
refuse "md5des.p12 (PBE-MD5-DES): the algorithm named" 'pbeWithMD5AndDES-CBC.*1\.2\.840\.113549\.1\.5\.3.*cannot open' \
  import "$FX/pw" "$FX/pin" "$FX/md5des.p12"

# ---- files that must import -------------------------------------------------------------------
imported "sha512.p12 (SHA-512 MAC)" sha512.p12
imported "nolocalkeyid.p12 (key bag without localKeyID: paired by public key)" nolocalkeyid.p12
imported "win-rc4-2des.p12 (RC4-128 certificates, 2-key 3DES key)" win-rc4-2des.p12
imported "win-rc4-40-rc2-40.p12 (RC4-40 certificates, RC2-40 key)" win-rc4-40-rc2-40.p12
imported "win-rc2-128-rc4.p12 (RC2-128 certificates, RC4-128 key)" win-rc2-128-rc4.p12
imported "md5mac.p12 (MD5 MAC, -legacy)" md5mac.p12
imported "modern.p12 (openssl defaults)" modern.p12
