# Helpers for tests/interop/changes.sh (sourced after common.bash and manager.bash; not run:
# this file is not *.sh).
#
#   measure_us/kill_run  a command's uncut duration; start it, kill -9 it after a random time
#   P11                  pkcs11-tool with the module, on the card under test (by token label)
#   card_check           the independent checker: every private key signs a fresh challenge
#                        through the module and the certificate of the same CKA_ID verifies it
#   find_pin / find_puk  which of two PINs (PUKs) is valid, never spending the last try
#
# Card under test: MODE (inprocess | pcscd), CARD (the card file), SERIAL (its serial; the
# token label is "Tessera PIV #SERIAL"), MODULE (libtessera_pkcs11.so).

# ---- timing --------------------------------------------------------------------------------
# nap SECONDS: a fractional sleep without a fork (read -t on a FIFO nobody writes to): the
# kill lands within a fraction of a millisecond of the chosen time
NAP_FIFO="$WORK/nap.fifo"
mkfifo "$NAP_FIFO"
exec {NAP_FD}<>"$NAP_FIFO"
nap() { read -r -t "$1" -u "$NAP_FD" _ 2>/dev/null || true; }

# NOW_US: wall clock in microseconds, without a fork (a command substitution would add a
# fork to every measurement): call `now_us` and read NOW_US
now_us() { NOW_US=${EPOCHREALTIME/./}; NOW_US=$((10#$NOW_US)); }
# ms MICROSECONDS: "12.345" (milliseconds, for messages)
ms() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }
# secs MICROSECONDS: "0.012345" (for read -t)
secs() { printf '%d.%06d' $(($1 / 1000000)) $(($1 % 1000000)); }

# measure_us OUT CMD...: runs CMD to its end (launched exactly as kill_run launches it: in the
# background, $! is the binary); sets MEASURE_US to its wall time in microseconds and
# MEASURE_RC to its exit status; CMD's output in OUT
measure_us() {
  local out=$1 t0 pid
  shift
  now_us
  t0=$NOW_US
  "$@" >"$out" 2>&1 &
  pid=$!
  wait "$pid"
  MEASURE_RC=$?
  now_us
  MEASURE_US=$((NOW_US - t0))
}

# kill_run DURATION_US OUT CMD...: starts CMD (the tessera binary itself: `$!` of a simple
# command is the binary, bash execs it in the forked child), waits a uniformly random time in
# [0, DURATION_US] and sends SIGKILL to that pid. Sets KR_DELAY (us), KR_RC, KR_KILLED (1 when
# the signal ended the process, 0 when it had finished before: a "completed" run).
kill_run() {
  local d=$1 out=$2 pid s
  shift 2
  # uniformly random in [0, d] from 32 random bits of the kernel; computed before the start
  KR_DELAY=$((SRANDOM % (d + 1)))
  s=$(secs "$KR_DELAY")
  "$@" >"$out" 2>&1 &
  pid=$!
  nap "$s"
  kill -KILL "$pid" 2>/dev/null
  # (stderr: bash reports a job ended by a signal with "Killed"; that is the point here)
  wait "$pid" 2>/dev/null
  KR_RC=$?
  # a process that exited before the signal is a zombie until `wait`: kill succeeds on it,
  # but its status is its own exit code, not 128+9
  if [ "$KR_RC" -eq 137 ]; then KR_KILLED=1; else KR_KILLED=0; fi
}

# window_of N...: the kill window from uncut durations: the second largest (the whole duration
# of a typical run; one run slowed down by a busy machine does not stretch the window)
window_of() { printf '%s\n' "$@" | sort -n | tail -n 2 | head -n 1; }

# ---- the card under test ---------------------------------------------------------------------
# TSA: the tessera options that select the card under test
tsa() {
  if [ "$MODE" = inprocess ]; then TSA=(--vcard "$CARD"); else TSA=(--reader "$READER"); fi
}
# TS ARGS...: tessera on the card under test (bounded: a hung command is a failure, not a hang)
TS() { timeout 60 "$TESSERA_BIN" "${TSA[@]}" "$@"; }

# P11 ARGS...: pkcs11-tool with the module on the card under test's main token. In-process
# the module finds the card file through TESSERA_VCARD, as an application started with it would.
P11() {
  if [ "$MODE" = inprocess ]; then
    TESSERA_VCARD="$CARD" timeout 60 pkcs11-tool --module "$MODULE" --token-label "Tessera PIV #$SERIAL" "$@"
  else
    timeout 60 pkcs11-tool --module "$MODULE" --token-label "Tessera PIV #$SERIAL" "$@"
  fi
}
# P11_flags: pkcs11-tool -L (token flags: PIN counters) on the card under test; prints its flags line
P11_flags() {
  local out
  if [ "$MODE" = inprocess ]; then
    out=$(TESSERA_VCARD="$CARD" timeout 60 pkcs11-tool --module "$MODULE" -L 2>&1)
  else
    out=$(timeout 60 pkcs11-tool --module "$MODULE" -L 2>&1)
  fi
  printf '%s\n' "$out" | awk -v l="Tessera PIV #$SERIAL" '
    /token label/ { sub(/^[^:]*: */, ""); cur = $0 }
    /token flags/ && cur == l { sub(/^[^:]*: */, ""); print; exit }'
}

# slot_of ID: the PIV slot of a CKA_ID (OpenSC's numbering: 01 9a, 02 9c, 03 9d, 04 9e,
# 05..18 the retired slots 82..95)
# OpenSC's CKA_IDs of retired slots are the decimal numbers 5..24 written as hex digits
# (82 → 05 … 86 → 09, 87 → 10 … 95 → 24): read the ID's digits as decimal.
slot_of() {
  case $1 in *[!0-9]*) echo "id-$1"; return ;; esac
  local n=$((10#$1))
  case $n in
    1) echo 9a ;; 2) echo 9c ;; 3) echo 9d ;; 4) echo 9e ;;
    *) if [ "$n" -ge 5 ] && [ "$n" -le 24 ]; then printf '%02x' $((0x82 + n - 5)); else echo "id-$1"; fi ;;
  esac
}
retired_id() {
  case $1 in *[!0-9]*) return 1 ;; esac
  local n=$((10#$1))
  [ "$n" -ge 5 ] && [ "$n" -le 24 ]
}

# pub_of_der CERT.der OUT.pem: the certificate's public key
pub_of_der() { openssl x509 -inform DER -in "$1" -noout -pubkey >"$2" 2>/dev/null && [ -s "$2" ]; }

# what_cert DER: the name of the known certificate (KEY of KNOWN_DER[KEY]=file) whose DER is
# byte-for-byte DER's (by SHA-256), else "unknown(sha256 prefix)"
declare -A KNOWN_DER=() KNOWN_SUM=()
# known NAME FILE.der: a certificate the test knows by name
known() { KNOWN_DER[$1]=$2; KNOWN_SUM[$1]=$(sha256sum <"$2" | cut -d' ' -f1); }
what_cert() {
  local n sum
  sum=$(sha256sum <"$1" | cut -d' ' -f1)
  for n in "${!KNOWN_SUM[@]}"; do
    if [ "${KNOWN_SUM[$n]}" = "$sum" ]; then echo "$n"; return; fi
  done
  echo "unknown(${sum:0:12})"
}

# key_signs ID TYPE PUB.pem: the private key ID (RSA or EC) signs a fresh random challenge
# through the module and PUB verifies the signature (openssl). RSA keys that cannot sign
# (decrypt-only) prove themselves by decrypting a challenge encrypted to PUB instead.
# Prints the reason on failure; returns 1 when the key is another key than PUB's, 2 when the
# card cannot use it at all (listed, but not on the card: a certificate without its key).
key_signs() {
  local id=$1 type=$2 pub=$3 d="$CKW/k$1"
  mkdir -p "$d"
  rm -f "$d/sig" "$d/dec"
  head -c 64 /dev/urandom >"$d/chal"
  if [ "$type" = EC ]; then
    P11 --login --pin "$CK_PIN" --sign --id "$id" -m ECDSA-SHA256 --signature-format openssl \
      -i "$d/chal" -o "$d/sig" >"$d/log" 2>&1 || { echo "the card cannot use EC key $id (a certificate without its key?): $(grep -m1 -i error "$d/log")"; return 2; }
  else
    if ! P11 --login --pin "$CK_PIN" --sign --id "$id" -m SHA256-RSA-PKCS -i "$d/chal" -o "$d/sig" >"$d/log" 2>&1; then
      if grep -q 'KEY_FUNCTION_NOT_PERMITTED\|MECHANISM_INVALID' "$d/log"; then
        head -c 32 /dev/urandom >"$d/chal"
        openssl pkeyutl -encrypt -pubin -inkey "$pub" -pkeyopt rsa_padding_mode:pkcs1 -in "$d/chal" -out "$d/enc" 2>/dev/null ||
          { echo "cannot encrypt to the public key for key $id"; return 1; }
        P11 --login --pin "$CK_PIN" --decrypt --id "$id" -m RSA-PKCS -i "$d/enc" -o "$d/dec" >"$d/log" 2>&1 ||
          { echo "RSA key $id neither signs nor decrypts: $(grep -m1 -i error "$d/log")"; return 2; }
        cmp -s "$d/chal" "$d/dec" || { echo "key $id does not decrypt what was encrypted to the certificate"; return 1; }
        return 0
      fi
      echo "the card cannot use RSA key $id (a certificate without its key?): $(grep -m1 -i error "$d/log")"
      return 2
    fi
  fi
  openssl dgst -sha256 -verify "$pub" -signature "$d/sig" "$d/chal" >/dev/null 2>&1 ||
    { echo "the signature of key $id does not verify with that public key"; return 1; }
}

# key_of ID TYPE PUB...: whose key is the private key ID? Prints the first PUB it belongs to
# (nothing when none). One signature verified against every PUB; a key that may not sign (a
# staged renewal key is a retired key-management key: decrypt only) decrypts a challenge
# encrypted to each RSA PUB instead.
key_of() {
  local id=$1 type=$2 d="$CKW/s$1" p
  shift 2
  mkdir -p "$d"
  head -c 64 /dev/urandom >"$d/chal"
  rm -f "$d/sig"
  if [ "$type" = EC ]; then
    P11 --login --pin "$CK_PIN" --sign --id "$id" -m ECDSA-SHA256 --signature-format openssl -i "$d/chal" -o "$d/sig" >"$d/log" 2>&1
  else
    P11 --login --pin "$CK_PIN" --sign --id "$id" -m SHA256-RSA-PKCS -i "$d/chal" -o "$d/sig" >"$d/log" 2>&1
  fi
  if [ -s "$d/sig" ]; then
    for p in "$@"; do
      if openssl dgst -sha256 -verify "$p" -signature "$d/sig" "$d/chal" >/dev/null 2>&1; then echo "$p"; return 0; fi
    done
    return 0
  fi
  [ "$type" = RSA ] && grep -q KEY_FUNCTION_NOT_PERMITTED "$d/log" || return 0
  head -c 32 /dev/urandom >"$d/chal"
  for p in "$@"; do
    rm -f "$d/enc" "$d/dec"
    openssl pkeyutl -encrypt -pubin -inkey "$p" -pkeyopt rsa_padding_mode:pkcs1 -in "$d/chal" -out "$d/enc" 2>/dev/null || continue
    P11 --login --pin "$CK_PIN" --decrypt --id "$id" -m RSA-PKCS -i "$d/enc" -o "$d/dec" >/dev/null 2>&1 &&
      cmp -s "$d/chal" "$d/dec" && { echo "$p"; return 0; }
  done
}

# card_check PIN: the independent checker, through the PKCS#11 module only (pkcs11-tool) and
# openssl. Lists the main token's objects after C_Login, then:
#   - every certificate has a private key with the same CKA_ID;
#   - every private key with a certificate signs a fresh challenge that the certificate's
#     public key verifies;
#   - a private key without a certificate is allowed only in a retired slot (a renewal key
#     staged by `renew request`), at most CK_MAX_STAGED of them (default 1), and it must not be
#     the key of any certificate the test knows (KNOWN_DER) or of one on the card: such a key
#     is stranded, not staged. CK_STAGED_OK names the one known certificate (a renewal not
#     yet installed) whose key may sit staged; CK_SCOPE (names) limits the known certificates
#     compared (each costs a decryption through the module: a staged key may not sign).
# Sets CK_PROBLEMS (one per line), CK_CERT[ID]=DER file, CK_KEY[ID]=RSA|EC, CK_BAD[ID] (why
# the pair in ID is not whole), CK_STAGED (IDs), CK_RC (0 consistent, 1 torn). Returns CK_RC.
declare -A CK_CERT=() CK_KEY=() CK_BAD=()
CK_STAGED=""
CK_PROBLEMS=""
CK_N=0
# problem TEXT: adds a line to CK_PROBLEMS
problem() { CK_PROBLEMS+="${CK_PROBLEMS:+$'\n'}$1"; }
card_check() {
  CK_PIN=$1
  CK_N=$((CK_N + 1))
  CKW="$WORK/check/$CK_N"
  mkdir -p "$CKW"
  CK_CERT=() CK_KEY=() CK_BAD=() CK_STAGED="" CK_PROBLEMS=""
  local id type why n=0 p known_pubs=() k
  if ! P11 --login --pin "$CK_PIN" -O >"$CKW/objects" 2>&1; then
    problem "pkcs11-tool -O --login fails: $(grep -m1 -iE 'error|fail' "$CKW/objects")"
    CK_RC=1
    return 1
  fi
  while read -r cls id type; do
    case "$cls" in
      cert) CK_CERT[$id]="$CKW/cert-$id.der" ;;
      priv) CK_KEY[$id]=$type ;;
    esac
  done < <(awk '
    /^Certificate Object/ { cls = "cert"; type = "-"; next }
    /^Private Key Object/ { cls = "priv"; type = ($0 ~ /EC/) ? "EC" : "RSA"; next }
    /^[^ \t]/ { cls = ""; next }
    /^[ \t]+ID:/ && cls != "" { print cls, $2, type; cls = "" }' "$CKW/objects")
  for id in "${!CK_CERT[@]}"; do
    if ! P11 --read-object --type cert --id "$id" -o "${CK_CERT[$id]}" >"$CKW/read-$id.log" 2>&1 || [ ! -s "${CK_CERT[$id]}" ]; then
      problem "certificate $id ($(slot_of "$id")) is listed but cannot be read: $(grep -m1 -i error "$CKW/read-$id.log")"
      continue
    fi
    pub_of_der "${CK_CERT[$id]}" "$CKW/pub-$id.pem" || problem "certificate $id ($(slot_of "$id")) does not parse"
    if [ -z "${CK_KEY[$id]:-}" ]; then
      CK_BAD[$id]="without-key"
      problem "certificate without key: slot $(slot_of "$id") (ID $id) holds $(what_cert "${CK_CERT[$id]}") but no private key"
    fi
  done
  for k in ${CK_SCOPE:-"${!KNOWN_DER[@]}"}; do
    [ "$k" = "${CK_STAGED_OK:-}" ] && continue
    [ -s "$WORK/known-pub/$k.pem" ] || { mkdir -p "$WORK/known-pub"; pub_of_der "${KNOWN_DER[$k]}" "$WORK/known-pub/$k.pem"; }
    known_pubs+=("$WORK/known-pub/$k.pem")
  done
  for id in "${!CK_KEY[@]}"; do
    type=${CK_KEY[$id]}
    if [ -n "${CK_CERT[$id]:-}" ]; then
      [ -s "$CKW/pub-$id.pem" ] || continue
      why=$(key_signs "$id" "$type" "$CKW/pub-$id.pem")
      case $? in
        0) ;;
        1) CK_BAD[$id]="with-a-foreign-key"
           problem "key/certificate mismatch in slot $(slot_of "$id") (ID $id, $type key, certificate $(what_cert "${CK_CERT[$id]}")): $why" ;;
        *) CK_BAD[$id]="without-usable-key"
           problem "certificate without a usable key in slot $(slot_of "$id") (ID $id, certificate $(what_cert "${CK_CERT[$id]}")): $why" ;;
      esac
    elif retired_id "$id"; then
      n=$((n + 1))
      CK_STAGED+="${CK_STAGED:+ }$id"
      local on_card=()
      for p in "$CKW"/pub-*.pem; do [ -e "$p" ] && on_card+=("$p"); done
      p=$(key_of "$id" "$type" "${known_pubs[@]}" "${on_card[@]}")
      if [ -n "$p" ]; then
        p=$(basename "$p" .pem)
        case "$p" in pub-*) p="the certificate in slot $(slot_of "${p#pub-}")" ;; esac
        problem "stranded key: retired slot $(slot_of "$id") (ID $id) holds the key of $p without its certificate"
      fi
    else
      problem "key without certificate: slot $(slot_of "$id") (ID $id) holds a $type private key but no certificate"
    fi
  done
  [ "$n" -le "${CK_MAX_STAGED:-1}" ] ||
    problem "$n keys without certificate in retired slots ($CK_STAGED): at most ${CK_MAX_STAGED:-1} staged renewal key expected"
  if [ -n "$CK_PROBLEMS" ]; then CK_RC=1; else CK_RC=0; fi
  return "$CK_RC"
}

# slot_content ID: "empty", "a-key-without-certificate", NAME (the known certificate in ID
# with its matching key: the complete e-Cert), or "NAME-certificate-without-usable-key" /
# "NAME-certificate-with-a-foreign-key"
slot_content() {
  local id=$1 n
  if [ -n "${CK_CERT[$id]:-}" ] && [ -s "${CK_CERT[$id]}" ]; then
    n=$(what_cert "${CK_CERT[$id]}")
    if [ -n "${CK_BAD[$id]:-}" ]; then echo "$n-certificate-${CK_BAD[$id]}"; else echo "$n"; fi
  elif [ -n "${CK_KEY[$id]:-}" ]; then echo a-key-without-certificate
  else echo empty; fi
}

# cert_id_of NAME: the CKA_ID holding the known certificate NAME (empty when none)
cert_id_of() {
  local id
  for id in "${!CK_CERT[@]}"; do
    [ -s "${CK_CERT[$id]}" ] && cmp -s "${CK_CERT[$id]}" "${KNOWN_DER[$1]}" && { echo "$id"; return; }
  done
}

# ---- PIN and PUK without spending the last try ------------------------------------------------
# find_pin A B: sets FOUND_PIN to whichever of A, B logs in (pkcs11-tool --login through the
# module), empty when neither. A candidate is tried only while the token does not say
# "user PIN final try" or "locked" (so a wrong guess never spends the last try); when a try was
# already spent ("count low") the second candidate goes first.
find_pin() {
  local a=$1 b=$2 flags c order
  FOUND_PIN="" FIND_LOG=""
  flags=$(P11_flags)
  order=("$a" "$b")
  case "$flags" in *"user PIN count low"*) order=("$b" "$a") ;; esac
  for c in "${order[@]}"; do
    flags=$(P11_flags)
    case "$flags" in
      *"user PIN final try"* | *"user PIN locked"*) FIND_LOG+="PIN: not trying $c ($flags); "; return 1 ;;
    esac
    if P11 --login --pin "$c" -O >/dev/null 2>"$WORK/findpin.err"; then FOUND_PIN=$c; return 0; fi
    FIND_LOG+="PIN $c refused ($(grep -m1 -o 'CKR_[A-Z_]*' "$WORK/findpin.err")); "
  done
  return 1
}
# find_puk A B: the same for the PUK (C_Login as SO in a read-write session; flags "SO PIN …")
find_puk() {
  local a=$1 b=$2 flags c order
  FOUND_PUK=""
  flags=$(P11_flags)
  order=("$a" "$b")
  case "$flags" in *"SO PIN count low"*) order=("$b" "$a") ;; esac
  for c in "${order[@]}"; do
    flags=$(P11_flags)
    case "$flags" in
      *"SO PIN final try"* | *"SO PIN locked"*) FIND_LOG+="PUK: not trying $c ($flags); "; return 1 ;;
    esac
    if P11 --session-rw --login --login-type so --so-pin "$c" -O >/dev/null 2>"$WORK/findpuk.err"; then FOUND_PUK=$c; return 0; fi
    FIND_LOG+="PUK $c refused ($(grep -m1 -o 'CKR_[A-Z_]*' "$WORK/findpuk.err")); "
  done
  return 1
}

# ---- after a kill ----------------------------------------------------------------------------------
# status_check: `tessera --json status`, read once: ST_JSON, and ST_RC 0 when it reports
# "pending_change": null and "problems": [] (else 1, with what it said in ST_WHY)
status_check() {
  local rc
  ST_JSON=$(TS --json status 2>&1)
  rc=$?
  ST_RC=1
  if [ "$rc" != 0 ]; then
    ST_WHY="tessera --json status failed (exit $rc): $(printf '%s\n' "$ST_JSON" | head -n 3)"
  elif printf '%s' "$ST_JSON" | jq -e 'has("pending_change") and .pending_change == null and (.problems | type) == "array" and (.problems | length) == 0' >/dev/null 2>&1; then
    ST_RC=0 ST_WHY=""
  else
    ST_WHY=$(printf '%s' "$ST_JSON" | jq -c '{pending_change: (if has("pending_change") then .pending_change else "(no pending_change field)" end), problems: (.problems // "(no problems field)")}' 2>/dev/null ||
      printf '%s\n' "$ST_JSON" | head -n 3)
  fi
  return "$ST_RC"
}

# repair PINFILE: `tessera repair --pin-file PINFILE` (the explicit next opener); sets
# REPAIR_RC and REPAIR_OUT
repair() {
  REPAIR_OUT=$(TS --pin-file "$1" repair 2>&1)
  REPAIR_RC=$?
}

# ---- concurrent imports ------------------------------------------------------------------------------
# import_chain DIR FIX FINAL.der: the analysis of two concurrent loops of imports (conc_loop in
# changes.sh: DIR/log-A, DIR/log-B with "ID RC START_US END_US", DIR/ID.out, DIR/ID.err, the
# backup each import saved in DIR/bk-ID/; FIX/ID.der the e-Cert each imported; rsa-modern the
# card's e-Cert before; FINAL the certificate in 9a after). Every import loads an e-Cert of its
# own, so the backup an import saved names the e-Cert it replaced: the successful imports must
# form one chain from the initial e-Cert to FINAL. Prints "OK|NOTOK|INFO<TAB>message<TAB>detail".
import_chain() {
  python3 - "$@" <<'EOF'
import base64, os, re, sys
d, fix, final = sys.argv[1], sys.argv[2], sys.argv[3]
def der_of_pem(path):
    t = open(path).read()
    m = re.search(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", t, re.S)
    return base64.b64decode("".join(m.group(1).split())) if m else None
cmds = []
for tag in "AB":
    for line in open(os.path.join(d, "log-" + tag)):
        i, rc, t0, t1 = line.split()
        out = open(os.path.join(d, i + ".out"), errors="replace").read()
        err = open(os.path.join(d, i + ".err"), errors="replace").read()
        bk = os.path.join(d, "bk-" + i)
        backups = [os.path.join(bk, f) for f in sorted(os.listdir(bk))] if os.path.isdir(bk) else []
        cmds.append(dict(id=i, tag=tag, rc=int(rc), t0=int(t0), t1=int(t1), out=out, err=err, backups=backups,
                         der=open(os.path.join(fix, i + ".der"), "rb").read()))
initial = open(os.path.join(fix, "rsa-modern.der"), "rb").read()
by_der = {c["der"]: c["id"] for c in cmds}
by_der[initial] = "initial(rsa-modern)"
byid = {c["id"]: c for c in cmds}
def say(ok, msg, detail=""):
    print(("OK" if ok else "NOTOK") + "\t" + msg + "\t" + detail.replace("\n", "\\n"))
A = [c for c in cmds if c["tag"] == "A"]; B = [c for c in cmds if c["tag"] == "B"]
overlap = sum(1 for a in A if any(a["t0"] < b["t1"] and b["t0"] < a["t1"] for b in B))
span = (max(c["t1"] for c in cmds) - min(c["t0"] for c in cmds)) / 1e6
say(overlap > 0, f"{overlap} of {len(A)} A-imports overlapped in time with a B-import (both loops done in {span:.1f} s)")
succ = [c for c in cmds if c["rc"] == 0]
fails = [c for c in cmds if c["rc"] != 0]
reasons = {}
for c in fails:
    r = (c["err"].strip().splitlines() or ["(no message)"])[-1][:120]
    reasons.setdefault(f"exit {c['rc']}: {r}", []).append(c["id"])
print("INFO\t%d of %d imports exited 0; failures: %s\t" % (len(succ), len(cmds),
      "; ".join(f"{k} ({len(v)}×)" for k, v in reasons.items()) or "none"))
bad = [c["id"] for c in succ if "verified it: ok" not in c["out"]]
say(not bad, "every import that exited 0 printed 'the new key signed a challenge and the certificate verified it: ok'", " ".join(bad))
bad = [c["id"] for c in fails if "verified it: ok" in c["out"]]
say(not bad, "no import that failed printed 'verified it: ok'", " ".join(bad))
# the chain of replacements, from the backups the successful imports name
pred, problems = {}, []
for c in succ:
    if len(c["backups"]) != 1:
        problems.append(f"{c['id']} saved {len(c['backups'])} backups (the slot was never empty: want 1)")
        continue
    der = der_of_pem(c["backups"][0])
    pred[c["id"]] = by_der.get(der, "unknown certificate")
    if pred[c["id"]] == "unknown certificate":
        problems.append(f"{c['id']} replaced a certificate that no command imported")
    elif pred[c["id"]] in byid and byid[pred[c["id"]]]["rc"] != 0:
        problems.append(f"{c['id']} replaced {pred[c['id']]}, whose import failed (exit {byid[pred[c['id']]]['rc']}): a failed import changed the card")
    elif pred[c["id"]] == c["id"]:
        problems.append(f"{c['id']} replaced its own certificate")
seen = {}
for x, p in pred.items():
    seen.setdefault(p, []).append(x)
for p, xs in seen.items():
    if len(xs) > 1:
        problems.append(f"{' and '.join(sorted(xs))} all say they replaced {p}: a lost update (only one of them can have)")
say(not problems, "the backups chain every successful import (each replaced the one before it; none replaced a failed one)", "\n".join(problems))
chain, cur, visited = [], "initial(rsa-modern)", set()
nxt = {p: xs[0] for p, xs in seen.items() if len(xs) == 1}
while cur in nxt and nxt[cur] not in visited:
    cur = nxt[cur]; visited.add(cur); chain.append(cur)
missing = [c["id"] for c in succ if c["id"] not in visited]
say(not missing, f"following the backups from the initial e-Cert reaches all {len(succ)} successful imports (chain of {len(chain)})", "not reached: " + " ".join(missing))
fin = open(final, "rb").read() if final and os.path.exists(final) else None
fin_id = by_der.get(fin, "none/unknown") if fin else "no certificate"
last = chain[-1] if chain else "initial(rsa-modern)"
say(fin_id == last, f"the card ends with the e-Cert of the last import in the chain ({last}); it holds {fin_id}")
if fin_id in byid:
    say(byid[fin_id]["rc"] == 0, f"the e-Cert on the card at the end ({fin_id}) comes from an import that exited 0")
waits = [c for c in cmds if "waiting for the card: another program is using it" in c["err"]]
slow = [c for c in cmds if c["t1"] - c["t0"] > 1_500_000]
silent = [c["id"] for c in slow if c not in waits]
print("INFO\t%d command(s) said 'waiting for the card: another program is using it'; %d ran longer than 1.5 s; longest %.2f s\t" %
      (len(waits), len(slow), max(c["t1"] - c["t0"] for c in cmds) / 1e6))
# A command can also be slow without waiting for the card (a loaded machine: the PIN's slow hash,
# process start-up), so this is reported, not judged; the "waiting" phase proves the notice
# with a holder that keeps the card for seconds.
if silent:
    print("INFO\t%d command(s) ran longer than 1.5 s without waiting for the card's lock: %s\t" %
          (len(silent), " ".join(silent)))
EOF
}
