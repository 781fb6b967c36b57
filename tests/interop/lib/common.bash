# Shared helpers for tests/interop/*.sh (sourced, not run: this file is not *.sh).
#
# Needs (set by pkg/scripts/test-all.sh, or by hand after `. LAB/env`):
#   TESSERA_BIN          path to the built `tessera` binary
#   LAB                  the pcsc-lab directory (pkg/scripts/pcsc-lab.sh up LAB)
#   PCSCLITE_CSOCK_NAME  the lab's pcscd socket
#   TESSERA_VPCD_PORT    the lab's vpcd port (slot 0)
# Prints TAP-like lines "ok - WHAT" / "not ok - WHAT"; finish() exits non-zero on any failure.

: "${TESSERA_BIN:?TESSERA_BIN must point at target/release/tessera}"
: "${LAB:?LAB must be the pcsc-lab directory}"
: "${PCSCLITE_CSOCK_NAME:?PCSCLITE_CSOCK_NAME must be set (source LAB/env)}"
: "${TESSERA_VPCD_PORT:?TESSERA_VPCD_PORT must be set (source LAB/env)}"
export PCSCLITE_CSOCK_NAME TESSERA_VPCD_PORT

READER=${TESSERA_LAB_READER:-Yubico YubiKey Virtual}
TEST_NAME=$(basename "$0" .sh)
WORK=$(mktemp -d "$LAB/$TEST_NAME.XXXXXX")
PASS=0
FAIL=0
SKIPS=0
OUT=""
RC=0
CARD_PID=""
CARD_LOG=""

# Never let a client program wait on a prompt or fall back to a stray config.
exec </dev/null
export OPENSC_CONF="$WORK/opensc.conf"
cat >"$OPENSC_CONF" <<'EOF'
app default {
  # no on-disk cache: card files with the same serial differ between test runs
  framework pkcs15 { use_file_caching = no; }
}
EOF

ok() { PASS=$((PASS + 1)); echo "ok - $1"; }
notok() {
  FAIL=$((FAIL + 1))
  echo "not ok - $1"
  if [ -n "${2:-}" ]; then printf '%s\n' "$2" | tail -n 40 | sed 's/^/#   /'; fi
}

# run CMD...: runs with stdin from /dev/null; output (stdout+stderr) in $OUT, status in $RC
run() {
  OUT=$("$@" 2>&1)
  RC=$?
  return 0
}

# expect_ok WHAT CMD...: CMD exits 0
expect_ok() {
  local what=$1; shift
  run "$@"
  if [ "$RC" -eq 0 ]; then ok "$what"; else notok "$what (exit $RC: $*)" "$OUT"; fi
}

# expect_fail WHAT CMD...: CMD exits non-zero
expect_fail() {
  local what=$1; shift
  run "$@"
  if [ "$RC" -ne 0 ]; then ok "$what"; else notok "$what (expected failure, got exit 0: $*)" "$OUT"; fi
}

# expect_grep WHAT REGEX CMD...: CMD exits 0 and its output matches the extended REGEX
expect_grep() {
  local what=$1 re=$2; shift 2
  run "$@"
  if [ "$RC" -eq 0 ] && printf '%s\n' "$OUT" | grep -Eq -- "$re"; then
    ok "$what"
  else
    notok "$what (exit $RC, wanted /$re/: $*)" "$OUT"
  fi
}

# expect_fail_grep WHAT REGEX CMD...: CMD exits non-zero and its output matches REGEX
expect_fail_grep() {
  local what=$1 re=$2; shift 2
  run "$@"
  if [ "$RC" -ne 0 ] && printf '%s\n' "$OUT" | grep -Eq -- "$re"; then
    ok "$what"
  else
    notok "$what (exit $RC, wanted failure and /$re/: $*)" "$OUT"
  fi
}

# check WHAT CMD...: like expect_ok, for local assertions (cmp, test, ...)
check() { expect_ok "$@"; }

# reader_state: "Yes" / "No" for the card column of the lab's slot-0 reader
reader_state() {
  opensc-tool -l 2>/dev/null | grep -F "$READER 00 00" | awk '{print $2}'
}

wait_reader() { # wait_reader Yes|No SECONDS
  local want=$1 deadline=$((SECONDS + $2))
  while [ "$(reader_state)" != "$want" ]; do
    [ "$SECONDS" -ge "$deadline" ] && return 1
    sleep 0.1
  done
}

# start_card FILE: serve the card file on the lab's vpcd slot 0 and wait for pcscd to see it
start_card() {
  local file=$1
  CARD_LOG="$WORK/card-server.log"
  # a card already in the reader belongs to someone else (a stray server): our server would
  # queue behind it on the vpcd port and every check would talk to the wrong card
  if ! wait_reader No 10; then
    notok "reader '$READER 00 00' is empty before our card server starts" "$(opensc-tool -l 2>&1)"
    return 1
  fi
  "$TESSERA_BIN" vcard serve "$file" --vpcd "127.0.0.1:$TESSERA_VPCD_PORT" >>"$CARD_LOG" 2>&1 &
  CARD_PID=$!
  echo "$CARD_PID" >"$LAB/$TEST_NAME-card.pid"
  if wait_reader Yes 20; then
    ok "card server (pid $CARD_PID) inserted the card into '$READER 00 00'"
    return 0
  fi
  notok "card present in '$READER 00 00' within 20 s" "$(cat "$CARD_LOG" 2>/dev/null; opensc-tool -l 2>&1)"
  return 1
}

# running PID: the process exists and has not exited (a zombie child still answers kill -0
# until `wait` reaps it)
running() {
  local st
  st=$(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# stop_card: SIGTERM the card server, check it exits cleanly and the card is removed
stop_card() {
  [ -n "$CARD_PID" ] || return 0
  local pid=$CARD_PID rc i
  CARD_PID=""
  kill -TERM "$pid" 2>/dev/null
  for i in $(seq 1 100); do
    running "$pid" || break
    sleep 0.1
  done
  if running "$pid"; then
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    notok "card server exits within 10 s of SIGTERM" "$(tail -n 20 "$CARD_LOG" 2>/dev/null)"
  else
    wait "$pid" 2>/dev/null
    rc=$?
    if [ "$rc" -eq 0 ]; then
      ok "card server exits cleanly (status 0) on SIGTERM"
    else
      notok "card server exits cleanly on SIGTERM (status $rc)" "$(tail -n 20 "$CARD_LOG" 2>/dev/null)"
    fi
  fi
  rm -f "$LAB/$TEST_NAME-card.pid"
  if wait_reader No 10; then ok "card removed from the reader after the server stopped"
  else notok "card removed from the reader after the server stopped" "$(opensc-tool -l 2>&1)"; fi
}

finish() {
  local rc=$?
  stop_card
  echo "# $TEST_NAME: $PASS ok, $FAIL not ok, $SKIPS skipped"
  if [ "$FAIL" -gt 0 ]; then
    echo "# work files and card server log kept in $WORK"
    exit 1
  fi
  [ -n "${KEEP_WORK:-}" ] && echo "# work files kept in $WORK (KEEP_WORK)" || rm -rf "$WORK"
  [ "$rc" -eq 0 ] || exit "$rc"
  exit 0
}
trap finish EXIT
trap 'exit 130' INT TERM

# pub_der FILE: the DER SubjectPublicKeyInfo of a PEM public key, cert or private key
pub_der_of_pubkey() { openssl pkey -pubin -in "$1" -outform DER; }
pub_der_of_cert() { openssl x509 -in "$1" -noout -pubkey | openssl pkey -pubin -outform DER; }
pub_der_of_key() { openssl pkey -in "$1" -pubout -outform DER; }
same_pubkey_cert_pub() { # CERT PUBPEM: both parse and hold the same SubjectPublicKeyInfo
  local a b
  a=$(pub_der_of_cert "$1" 2>&1 | od -An -tx1 | tr -d ' \n') || { echo "cannot read $1"; return 1; }
  b=$(pub_der_of_pubkey "$2" 2>&1 | od -An -tx1 | tr -d ' \n') || { echo "cannot read $2"; return 1; }
  [ -n "$a" ] && [ "$a" = "$b" ] || { echo "public keys differ: $1 vs $2"; return 1; }
}

# gate WHAT CMD...: like expect_ok, but a failure ends the script (nothing after it can
# work); prints the command again with verbose APDU tracing for the report.
gate() {
  local what=$1; shift
  run "$@"
  if [ "$RC" -eq 0 ]; then ok "$what"; return 0; fi
  notok "$what (exit $RC: $*) -- stopping here" "$OUT"
  if [ "${1:-}" = Y ] || [ "${1:-}" = yubico-piv-tool ]; then
    echo "# APDU trace (yubico-piv-tool -v 2):"
    yubico-piv-tool -r "$READER" -v 2 -a status 2>&1 | sed 's/^/#   /' | head -n 60
  fi
  echo "# card server log:"
  tail -n 30 "$CARD_LOG" 2>/dev/null | sed 's/^/#   /'
  exit 1
}

# ---- certificates for card keys ------------------------------------------------------------
# yubico-piv-tool 2.2.0 / 2.3.0 built against OpenSSL 3 (Debian 12) cannot run
# -a selfsign-certificate (or request-certificate): its RSA/EC method hooks are ignored by
# OpenSSL 3 and it prints "Failed signing certificate." without sending an APDU
# (Yubico/yubico-piv-tool#388). Then the card signs the certificate through the tool's
# plain --sign instead: the template comes from openssl, the signature from the card.
ypt_selfsign_known_broken() {
  local v o
  v=$(yubico-piv-tool --version 2>/dev/null | awk '{print $2}')
  o=$(openssl version 2>/dev/null | awk '{print $2}')
  case "$v" in 2.2.*|2.3.0) ;; *) return 1 ;; esac
  case "$o" in 3.*) return 0 ;; *) return 1 ;; esac
}

# card_selfsign SLOT ALG PUBPEM SUBJECT OUTPEM: a certificate for PUBPEM self-signed by the
# card's key in SLOT (yubico-piv-tool --sign over the TBSCertificate, PIN verified first).
card_selfsign() {
  local s=$1 alg=$2 pub=$3 subj=$4 out=$5 d="$WORK/selfsign-$1" dummy="$WORK/template-$2.pem"
  mkdir -p "$d"
  if [ ! -s "$dummy" ]; then
    case "$alg" in
      RSA2048) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dummy" ;;
      RSA1024) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out "$dummy" ;;
      ECCP256) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dummy" ;;
      ECCP384) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$dummy" ;;
      *) echo "card_selfsign: unknown algorithm $alg"; return 1 ;;
    esac 2>/dev/null || { echo "card_selfsign: openssl genpkey failed"; return 1; }
  fi
  # the template's signature algorithm (ecdsa-with-SHA256 / sha256WithRSAEncryption) is what
  # the card's signature below must match
  openssl x509 -new -subj "$subj" -key "$dummy" -force_pubkey "$pub" -days 365 -sha256 \
    -set_serial "0x$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" -outform DER -out "$d/template.der" ||
    { echo "card_selfsign: openssl x509 -new failed"; return 1; }
  python3 "$(dirname "${BASH_SOURCE[0]}")/x509der.py" split "$d/template.der" "$d/tbs.der" "$d/alg.der" || return 1
  rm -f "$d/sig.bin"
  yubico-piv-tool -r "$READER" -a verify-pin -P "$PIN" --sign -s "$s" -A "$alg" -H SHA256 \
    -i "$d/tbs.der" -o "$d/sig.bin" || { echo "card_selfsign: yubico-piv-tool --sign -s $s failed"; return 1; }
  python3 "$(dirname "${BASH_SOURCE[0]}")/x509der.py" join "$d/tbs.der" "$d/alg.der" "$d/sig.bin" "$d/cert.der" || return 1
  openssl x509 -inform DER -in "$d/cert.der" -out "$out"
}

# selfsign SLOT ALG PUBPEM SUBJECT OUTPEM: yubico-piv-tool -a selfsign-certificate, or, where
# that tool is known broken, card_selfsign. Records ok/not ok.
selfsign() {
  local s=$1 alg=$2 pub=$3 subj=$4 out=$5
  rm -f "$out"
  run yubico-piv-tool -r "$READER" -a verify-pin -P "$PIN" -a selfsign-certificate -s "$s" -S "$subj" \
    -i "$pub" -o "$out"
  if [ "$RC" -eq 0 ] && printf '%s\n' "$OUT" | grep >/dev/null 'Successfully generated a new self signed certificate'; then
    ok "selfsign-certificate with the key in slot $s"
    return 0
  fi
  if printf '%s\n' "$OUT" | grep >/dev/null 'Failed signing certificate' && ypt_selfsign_known_broken; then
    SKIPS=$((SKIPS + 1))
    echo "ok - selfsign-certificate slot $s # SKIP yubico-piv-tool $(yubico-piv-tool --version | awk '{print $2}') + OpenSSL 3 cannot sign certificates (Yubico/yubico-piv-tool#388); the card signs the certificate via --sign instead"
    expect_ok "card self-signs a certificate for slot $s (yubico-piv-tool --sign over the TBS)" \
      card_selfsign "$s" "$alg" "$pub" "$subj" "$out"
    return 0
  fi
  notok "selfsign-certificate with the key in slot $s (exit $RC)" "$OUT"
  return 1
}
