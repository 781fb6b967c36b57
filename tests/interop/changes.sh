#!/usr/bin/env bash
# Interop: card changes that never tear (issue 10, acceptance). Proves, with `kill -9` at
# random moments and with concurrent writers, that every change tessera makes to a card in
# more than one step is all-or-nothing as any later reader sees it:
#   1. Kill loops. `tessera import`, `renew install`, `delete` and `setup` on the in-process
#      virtual card (`tessera --vcard CARD`), 40 runs each, and `import` through pcscd
#      (`tessera --reader`, the card served by `tessera vcard serve`), 10 runs. Each run sends
#      SIGKILL to the tessera process itself after a uniformly random time in [0, the command's
#      uncut duration] (measured before the loop and again every ten runs). After each kill the
#      next program to open the card must finish or undo the change: odd runs `tessera repair`,
#      even runs the PKCS#11 module itself (the checker below is then the first to open the
#      card). Then:
#        - the independent checker, through libtessera_pkcs11.so as applications load it
#          (OpenSC pkcs11-tool) and openssl only: every private key signs a fresh challenge
#          that the certificate with the same CKA_ID verifies; no certificate without its key,
#          no key without its certificate except one staged renewal key in a retired slot
#          (and that one is not the key of any certificate the test knows);
#        - the slot under change holds the complete old or the complete new e-Cert (its
#          certificate byte-for-byte one of the two DERs, its key matching it); for delete,
#          the complete e-Cert or nothing; the other slot (9c) is untouched;
#        - renew install: the old key (in 9a if undone, in its retired slot if done) still
#          decrypts a message encrypted to the old certificate before the run; an undone
#          install keeps the staged key, so the renewed certificate can still be installed;
#        - setup: the valid PIN and PUK are found (old or new, never spending a last try),
#          every pair still matches, and `tessera import` with the valid PIN still works (the
#          management key was not lost). PIN and PUK are each changed by one card command, so
#          a setup cut between them may leave one old and one new: reported ("mixed"), not torn;
#        - `tessera --json status` reports "pending_change": null and "problems": [].
#      A card failing the checker is TORN; the script fails on any torn card (and on a failed
#      `repair` or an unclean status). The summary table counts runs, interrupted runs (the
#      others finished before the kill) and torn cards per command.
#   2. Concurrency: two loops of 25 `tessera import` run at the same time into slot 9a of one
#      card (in-process and through pcscd). Every import has its own e-Cert, so the backups
#      ("the replaced certificate was saved to …") chain the successful imports in the order
#      the card saw them: every import that exited 0 and printed "verified it: ok" must be one
#      link of that chain (its e-Cert really was on the card), no two replaced the same e-Cert,
#      no failed import's e-Cert was ever on the card, and the card ends with the last link,
#      every pair matching. A command that ran for more than 1.5 s must have said "waiting for
#      the card: another program is using it".
# Run by pkg/scripts/test-all.sh (about 2 minutes on 2 cores); by hand:
#   bash pkg/scripts/pcsc-lab.sh up /tmp/lab && . /tmp/lab/env
#   TESSERA_BIN=$PWD/target/release/tessera LAB=/tmp/lab bash tests/interop/changes.sh
# TESSERA_MODULE overrides the module (default: libtessera_pkcs11.so next to TESSERA_BIN).
# Knobs: CHANGES_RUNS (kill runs per in-process command, default 40), CHANGES_PCSCD_RUNS
# (default 10), CHANGES_CONCURRENT (imports per concurrent loop, default 25), CHANGES_PHASES
# (default "import renew delete setup pcscd concurrency waiting"), KEEP_WORK=1 (keep the cards).
set -uo pipefail
. "$(dirname "$0")/lib/common.bash"
. "$(dirname "$0")/lib/manager.bash"
. "$(dirname "$0")/lib/changes.bash"

MODULE=${TESSERA_MODULE:-$(cd "$(dirname "$TESSERA_BIN")" && pwd)/libtessera_pkcs11.so}
RUNS=${CHANGES_RUNS:-40}
PCSCD_RUNS=${CHANGES_PCSCD_RUNS:-10}
CONC=${CHANGES_CONCURRENT:-25}
PHASES=${CHANGES_PHASES:-import renew delete setup pcscd concurrency waiting}
unset TESSERA_VCARD
# a persistent per-user cache of the module (if any) belongs to this run only
export XDG_CACHE_HOME="$WORK/xdg-cache"
T_START=$SECONDS

check "PKCS#11 module present ($MODULE)" test -r "$MODULE"
check "jq, pkcs11-tool, openssl installed" command -v jq pkcs11-tool openssl
FIX="$WORK/fx"
gate "fixtures: test CA, .p12 e-Certs" mk_fixtures "$WORK/fx"
for n in rsa-modern rsa-legacy ec-modern ec-legacy; do known "$n" "$FIX/$n.der"; done

SEC="$WORK/secrets"
mkdir -p "$SEC" "$WORK/cards"
chmod 700 "$SEC"
# pinfile SECRET...: a file with one secret per line (named after its content)
# (written once: two concurrent loops read the same file)
pinfile() {
  local f
  f="$SEC/$(printf '%s-' "$@")"
  [ -s "$f" ] || { printf '%s\n' "$@" >"$f.tmp" && mv "$f.tmp" "$f"; }
  echo "$f"
}
P0=123456 K0=12345678   # factory
P1=24681357 K1=87654321
P2=11223344 K2=55667788
PW="$FIX/pw"
SERIAL_NEXT=1010001

# ---- tallies for the summary -------------------------------------------------------------------
declare -A T_RUNS=() T_INT=() T_TORN=() T_REP=() T_STAT=() T_DUR=() T_OUTC=()
PHASE_ORDER=()
tally_init() { PHASE_ORDER+=("$1"); T_RUNS[$1]=0; T_INT[$1]=0; T_TORN[$1]=0; T_REP[$1]=0; T_STAT[$1]=0; T_OUTC[$1]=""; }
# outcome PHASE WORD: counts one outcome (old, new, empty, …) of a run
declare -A T_OC=()
outcome() { T_OC["$1|$2"]=$((${T_OC["$1|$2"]:-0} + 1)); case " ${T_OUTC[$1]} " in *" $2 "*) ;; *) T_OUTC[$1]+=" $2" ;; esac; }

# ---- cards -----------------------------------------------------------------------------------
# new_card: a factory-fresh card under test with a serial of its own (a serial is never reused
# for other contents: a module cache keyed by card identity must not be fooled by the test);
# in pcscd mode it is served into the lab's reader instead of the previous one
new_card() {
  SERIAL=$SERIAL_NEXT
  SERIAL_NEXT=$((SERIAL_NEXT + 1))
  CARD="$WORK/cards/$SERIAL.json"
  WHY="vcard init (serial $SERIAL) failed"
  "$TESSERA_BIN" vcard init "$CARD" --serial "$SERIAL" >/dev/null || return 1
  tsa
  if [ "$MODE" = pcscd ]; then
    [ -n "$CARD_PID" ] && stop_card
    WHY="the card server did not start"
    start_card "$CARD" || return 1
  fi
}

# The functions that make or re-arm cards set WHY to the reason when they fail (they run in
# this shell: they set CARD, SERIAL and, through pcscd, start the card server).
WHY=""
# load NAME SLOT PIN: an uncut `tessera import` of NAME.p12 into SLOT (re-arming a card)
load() {
  local out
  out=$(TS --password-file "$PW" --pin-file "$(pinfile "$3")" --json import "$FIX/$1.p12" --slot "$2" --backup-dir "$W/bk" 2>&1)
  [ "$(printf '%s' "$out" | jq -r '.verified' 2>/dev/null)" = true ] || { WHY="import $1 into $2: $out"; return 1; }
}

# ---- one kill run ----------------------------------------------------------------------------
# Label of the run: "[PHASE #N killed at X of Y ms]" (or "completed before the kill at X")
run_label() {
  local ph=$1 i=$2 d=$3
  if [ "$KR_KILLED" = 1 ]; then
    LABEL="[$ph #$i killed at $(ms "$KR_DELAY") of $(ms "$d") ms"
  else
    LABEL="[$ph #$i completed (exit $KR_RC) before the kill at $(ms "$KR_DELAY") of $(ms "$d") ms"
  fi
}

# after_kill PHASE I PIN: counts the run; its next opener (odd runs: `tessera repair`, even runs:
# the module, through the checker); then the checker with PIN.
after_kill() {
  local ph=$1 i=$2 pin=$3
  T_RUNS[$ph]=$((T_RUNS[$ph] + 1))
  [ "$KR_KILLED" = 1 ] && T_INT[$ph]=$((T_INT[$ph] + 1))
  if [ $((i % 2)) = 1 ]; then
    LABEL+=", next: tessera repair]"
    repair "$(pinfile "$pin")"
    if [ "$REPAIR_RC" = 0 ]; then
      ok "$LABEL repair exits 0: $(printf '%s' "$REPAIR_OUT" | head -n 1)"
    else
      T_REP[$ph]=$((T_REP[$ph] + 1))
      notok "$LABEL tessera repair exits 0 (exit $REPAIR_RC)" "$(printf '%s\n' "$REPAIR_OUT" | head -n 4)"
    fi
  else
    LABEL+=", next: the module]"
  fi
  card_check "$pin"
}

# verdict PHASE WHAT SPECIFIC: the card is consistent (checker and SPECIFIC problems), then
# status reports no pending change and no problem. Sets TORN.
verdict() {
  local ph=$1 what=$2 extra=$3 all
  all=$CK_PROBLEMS
  [ -n "$extra" ] && all+="${all:+$'\n'}$extra"
  if [ -z "$all" ]; then
    TORN=0
    ok "$LABEL card consistent: $what"
  else
    TORN=1
    T_TORN[$ph]=$((T_TORN[$ph] + 1))
    notok "$LABEL TORN CARD: $what" "$all"
  fi
  # (status is read here unless the caller read it right after the checker: status_now)
  [ "$ST_FRESH" = 1 ] || status_check
  ST_FRESH=0
  if [ "$ST_RC" = 0 ]; then
    ok "$LABEL status: pending_change null, problems []"
  else
    T_STAT[$ph]=$((T_STAT[$ph] + 1))
    notok "$LABEL status: pending_change null, problems []" "$ST_WHY"
  fi
}
# status_now: status_check right after the checker, before other commands; the next verdict
# reports that reading
ST_FRESH=0
status_now() { status_check; ST_FRESH=1; }

# measure_cmd KEY OUTFILE CMD...: one uncut run of CMD, checked; its duration is a sample of KEY.
# The kill window of a command is measured before its loop (four uncut runs) and again every
# ten runs (two more), so that a machine that gets busier or quieter during the loop does not
# leave the kills all before or all after the command's end: the window is the second largest
# of the last four uncut durations of the command (key KEY in SAMPLES).
declare -A SAMPLES=()
measure_cmd() {
  local key=$1 out=$2
  shift 2
  measure_us "$out" "$@"
  SAMPLES[$key]="${SAMPLES[$key]:-} $MEASURE_US"
  if [ "$MEASURE_RC" = 0 ]; then
    ok "[$key] uncut run for the kill window: $(ms "$MEASURE_US") ms"
  else
    notok "[$key] uncut run for the kill window exits 0 (exit $MEASURE_RC)" "$(head -n 5 "$out")"
  fi
}
# window KEY: the kill window (us) from the last four samples of KEY
window() {
  local a
  read -r -a a <<<"${SAMPLES[$1]:-0}"
  window_of "${a[@]: -4}"
}
# remeasure_due I: true before runs 11, 21, 31, …
remeasure_due() { [ "$1" -gt 1 ] && [ $(($1 % 10)) = 1 ]; }

# ---- 1a. import (in-process and through pcscd) ------------------------------------------------
other_of() { if [ "$1" = rsa-modern ]; then echo rsa-legacy; else echo rsa-modern; fi; }

fresh_import_card() {
  new_card || return 1
  load ec-modern 9c "$P0" && load rsa-modern 9a "$P0"
}

phase_import() {
  MODE=$1
  local n=$2 ph="import $1" i k d tgt cur s9a s9c extra what why
  W="$WORK/import-$MODE"
  mkdir -p "$W"
  tally_init "$ph"
  CK_MAX_STAGED=0 CK_STAGED_OK=""
  fresh_import_card || { notok "[$ph] card with ec-modern in 9c and rsa-modern in 9a" "$WHY"; return 1; }
  cur=rsa-modern
  # uncut imports (each file in turn) for the kill windows of both files
  measure_imports() {
    for k in $(seq 1 "$1"); do
      tgt=$(other_of "$cur")
      measure_cmd "$ph: $tgt.p12" "$W/measure.out" "$TESSERA_BIN" "${TSA[@]}" --password-file "$PW" --pin-file "$(pinfile "$P0")" \
        import "$FIX/$tgt.p12" --slot 9a --backup-dir "$W/bk"
      cur=$tgt
    done
    echo "# [$ph] kill window: import rsa-legacy.p12 $(ms "$(window "$ph: rsa-legacy.p12")") ms, rsa-modern.p12 $(ms "$(window "$ph: rsa-modern.p12")") ms"
  }
  measure_imports 8
  card_check "$P0"
  check "[$ph] eight uncut imports leave a consistent card" test -z "$CK_PROBLEMS"
  for i in $(seq 1 "$n"); do
    remeasure_due "$i" && measure_imports 4
    tgt=$(other_of "$cur")
    d=$(window "$ph: $tgt.p12")
    kill_run "$d" "$W/run.out" "$TESSERA_BIN" "${TSA[@]}" --password-file "$PW" --pin-file "$(pinfile "$P0")" \
      import "$FIX/$tgt.p12" --slot 9a --backup-dir "$W/bk"
    run_label "$ph" "$i" "$d"
    LABEL+=" replacing $cur with $tgt"
    after_kill "$ph" "$i" "$P0"
    extra=""
    s9a=$(slot_content 01)
    s9c=$(slot_content 02)
    if [ "$s9a" = "$cur" ]; then what="9a holds the complete old e-Cert ($cur)"; outcome "$ph" old
    elif [ "$s9a" = "$tgt" ]; then what="9a holds the complete new e-Cert ($tgt)"; outcome "$ph" new
    else what="9a holds $s9a"; extra="slot 9a holds $s9a: neither the complete old ($cur) nor the complete new ($tgt) e-Cert"; outcome "$ph" neither
    fi
    [ "$s9c" = ec-modern ] || extra+="${extra:+$'\n'}slot 9c (not under change) holds $s9c instead of ec-modern"
    verdict "$ph" "$what" "$extra"
    if [ "$TORN" = 0 ]; then
      cur=$s9a
    else
      # re-arm: an uncut import over the torn slot, else a fresh card
      cur=rsa-modern
      if ! load rsa-modern 9a "$P0" || ! card_check "$P0"; then
        fresh_import_card || { notok "[$ph] re-arm: a fresh card" "$WHY"; return 1; }
        echo "# [$ph] re-armed with a fresh card (serial $SERIAL)"
      fi
    fi
  done
  T_DUR[$ph]="$(ms "$(window "$ph: rsa-legacy.p12")")/$(ms "$(window "$ph: rsa-modern.p12")")"
  [ "$MODE" = pcscd ] && stop_card
  return 0
}

# ---- 1b. renew install ---------------------------------------------------------------------------
RENEW_K=0
fresh_renew_card() {
  new_card || return 1
  load ec-modern 9c "$P0" && load rsa-modern 9a "$P0" || return 1
  OLD=rsa-modern NEWC=""
}
# renew_prepare: a staged key and its certificate (renew request + the test CA), unless the
# previous run's undone install left them; a fresh message encrypted to the OLD certificate.
# A card whose key history is nearly full (20 retired slots: one kept per renewal, one spare
# during an install) is replaced by a fresh one first.
renew_prepare() {
  local out kh
  kh=$(TS --json status 2>/dev/null | jq -r '.key_history // 0' 2>/dev/null)
  if [ "${kh:-0}" -ge 16 ]; then
    echo "# [renew install] key history holds $kh keys: continuing on a fresh card"
    fresh_renew_card || return 1
  fi
  if [ -z "$NEWC" ]; then
    RENEW_K=$((RENEW_K + 1))
    out=$(TS --pin-file "$(pinfile "$P0")" renew request --slot 9a -o "$W/ren-$RENEW_K" 2>&1) ||
      { WHY="renew request: $out"; return 1; }
    SAN_EMAIL=x openssl x509 -req -in "$W/ren-$RENEW_K.csr" -CA "$FIX/ca.pem" -CAkey "$FIX/ca.key" \
      -set_serial "0x$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" -days 365 -sha256 \
      -extfile "$FIX/ext.cnf" -extensions sig_renewed -copy_extensions copy -out "$W/renewed-$RENEW_K.pem" 2>/dev/null &&
      openssl x509 -in "$W/renewed-$RENEW_K.pem" -outform DER -out "$W/renewed-$RENEW_K.der" ||
      { WHY="the test CA cannot issue for ren-$RENEW_K.csr"; return 1; }
    NEWC=renewed-$RENEW_K
    known "$NEWC" "$W/$NEWC.der"
  fi
  head -c 32 /dev/urandom >"$W/msg"
  openssl x509 -inform DER -in "${KNOWN_DER[$OLD]}" -noout -pubkey >"$W/oldpub.pem" &&
    openssl pkeyutl -encrypt -pubin -inkey "$W/oldpub.pem" -pkeyopt rsa_padding_mode:pkcs1 -in "$W/msg" -out "$W/msg.enc" ||
    { WHY="cannot encrypt to $OLD"; return 1; }
}

phase_renew() {
  MODE=inprocess
  local n=$1 ph="renew install" i d s9a s9c extra what why id sid
  W="$WORK/renew"
  mkdir -p "$W"
  tally_init "$ph"
  fresh_renew_card || { notok "[$ph] card with ec-modern in 9c and rsa-modern in 9a" "$WHY"; return 1; }
  # uncut installs for the kill window (renew request and the CA's certificate are prepared
  # before every install, uncut)
  measure_installs() {
    local k
    for k in $(seq 1 "$1"); do
      renew_prepare || { notok "[$ph] renew request + the test CA" "$WHY"; return 1; }
      measure_cmd "$ph" "$W/measure.out" "$TESSERA_BIN" "${TSA[@]}" --pin-file "$(pinfile "$P0")" renew install "$W/$NEWC.pem" --slot 9a
      OLD=$NEWC NEWC=""
    done
    echo "# [$ph] kill window: $(ms "$(window "$ph")") ms"
  }
  measure_installs 4 || return 1
  CK_MAX_STAGED=0 CK_STAGED_OK=""
  card_check "$P0"
  check "[$ph] four uncut renewals leave a consistent card, the old keys in retired slots" test -z "$CK_PROBLEMS"
  for i in $(seq 1 "$n"); do
    if remeasure_due "$i"; then measure_installs 2 || return 1; fi
    d=$(window "$ph")
    if ! renew_prepare; then
      notok "[$ph #$i] renew request + the test CA" "$WHY"
      fresh_renew_card || { notok "[$ph] a fresh card" "$WHY"; return 1; }
      continue
    fi
    kill_run "$d" "$W/run.out" "$TESSERA_BIN" "${TSA[@]}" --pin-file "$(pinfile "$P0")" renew install "$W/$NEWC.pem" --slot 9a
    run_label "$ph" "$i" "$d"
    LABEL+=" of $NEWC over $OLD"
    CK_MAX_STAGED=1 CK_STAGED_OK=$NEWC CK_SCOPE="$OLD rsa-modern rsa-legacy"
    after_kill "$ph" "$i" "$P0"
    extra=""
    s9a=$(slot_content 01)
    s9c=$(slot_content 02)
    if [ "$s9a" = "$OLD" ]; then
      what="9a holds the complete old e-Cert ($OLD)"
      outcome "$ph" old
      # undone: the staged key is still there for the renewed certificate
      sid=""
      [ -s "$WORK/known-pub/$NEWC.pem" ] || { mkdir -p "$WORK/known-pub"; pub_of_der "${KNOWN_DER[$NEWC]}" "$WORK/known-pub/$NEWC.pem"; }
      for id in $CK_STAGED; do
        [ -n "$(key_of "$id" "${CK_KEY[$id]}" "$WORK/known-pub/$NEWC.pem")" ] && sid=$id
      done
      if [ -n "$sid" ]; then what+=", the new key still staged in $(slot_of "$sid")"
      else extra="the install was undone but the staged key of $NEWC is gone: the renewed certificate can no longer be installed"
      fi
    elif [ "$s9a" = "$NEWC" ]; then
      what="9a holds the complete new e-Cert ($NEWC)"
      outcome "$ph" new
      [ -z "$CK_STAGED" ] || extra="the install is done but retired slot(s) $CK_STAGED still hold a key without certificate"
    else
      what="9a holds $s9a"
      outcome "$ph" neither
      extra="slot 9a holds $s9a: neither the complete old ($OLD) nor the complete new ($NEWC) e-Cert"
    fi
    [ "$s9c" = ec-modern ] || extra+="${extra:+$'\n'}slot 9c (not under change) holds $s9c instead of ec-modern"
    # the old key, wherever its certificate is now, decrypts what was encrypted to it before
    id=$(cert_id_of "$OLD")
    if [ -z "$id" ]; then
      extra+="${extra:+$'\n'}the old certificate ($OLD) is nowhere on the card"
    else
      rm -f "$W/msg.dec"
      if P11 --login --pin "$P0" --decrypt --id "$id" -m RSA-PKCS -i "$W/msg.enc" -o "$W/msg.dec" >"$W/dec.log" 2>&1 && cmp -s "$W/msg" "$W/msg.dec"; then
        what+="; the old key in $(slot_of "$id") decrypts the message sent before"
      else
        extra+="${extra:+$'\n'}the old key (ID $id, slot $(slot_of "$id"), with the old certificate) does not decrypt the message encrypted to the old certificate: $(grep -m1 -i error "$W/dec.log")"
      fi
    fi
    verdict "$ph" "$what" "$extra"
    CK_MAX_STAGED=0 CK_STAGED_OK="" CK_SCOPE=""
    if [ "$TORN" = 1 ]; then
      fresh_renew_card || { notok "[$ph] re-arm: a fresh card" "$WHY"; return 1; }
      echo "# [$ph] re-armed with a fresh card (serial $SERIAL)"
    elif [ "$s9a" = "$NEWC" ]; then
      OLD=$NEWC NEWC=""
    fi
  done
  T_DUR[$ph]=$(ms "$(window "$ph")")
  return 0
}

# ---- 1c. delete --------------------------------------------------------------------------------------
phase_delete() {
  MODE=inprocess
  local n=$1 ph="delete" i d s9a s9c extra what why
  W="$WORK/delete"
  mkdir -p "$W"
  tally_init "$ph"
  CK_MAX_STAGED=0 CK_STAGED_OK=""
  fresh_import_card || { notok "[$ph] card with ec-modern in 9c and rsa-modern in 9a" "$WHY"; return 1; }
  # uncut deletes (9a loaded again after each) for the kill window
  measure_deletes() {
    local k
    for k in $(seq 1 "$1"); do
      measure_cmd "$ph" "$W/measure.out" "$TESSERA_BIN" "${TSA[@]}" --yes --pin-file "$(pinfile "$P0")" delete --slot 9a
      load rsa-modern 9a "$P0" || { notok "[$ph] re-load 9a" "$WHY"; return 1; }
    done
    echo "# [$ph] kill window: $(ms "$(window "$ph")") ms"
  }
  measure_deletes 4 || return 1
  for i in $(seq 1 "$n"); do
    if remeasure_due "$i"; then measure_deletes 2 || return 1; fi
    d=$(window "$ph")
    kill_run "$d" "$W/run.out" "$TESSERA_BIN" "${TSA[@]}" --yes --pin-file "$(pinfile "$P0")" delete --slot 9a
    run_label "$ph" "$i" "$d"
    LABEL+=" of rsa-modern in 9a"
    after_kill "$ph" "$i" "$P0"
    extra=""
    s9a=$(slot_content 01)
    s9c=$(slot_content 02)
    case "$s9a" in
      rsa-modern) what="9a still holds the complete e-Cert"; outcome "$ph" old ;;
      empty) what="9a is empty (no key, no certificate)"; outcome "$ph" empty ;;
      *) what="9a holds $s9a"; outcome "$ph" neither
         extra="slot 9a holds $s9a: neither the complete e-Cert (rsa-modern) nor nothing" ;;
    esac
    [ "$s9c" = ec-modern ] || extra+="${extra:+$'\n'}slot 9c (not under change) holds $s9c instead of ec-modern"
    verdict "$ph" "$what" "$extra"
    if [ "$TORN" = 1 ] || [ "$s9a" = empty ]; then
      if ! load rsa-modern 9a "$P0" || { [ "$TORN" = 1 ] && ! card_check "$P0"; }; then
        fresh_import_card || { notok "[$ph] re-arm: a fresh card" "$WHY"; return 1; }
        echo "# [$ph] re-armed with a fresh card (serial $SERIAL)"
      fi
    fi
  done
  T_DUR[$ph]=$(ms "$(window "$ph")")
  return 0
}

# ---- 1d. setup -------------------------------------------------------------------------------------------
fresh_setup_card() {
  new_card || return 1
  load rsa-modern 9a "$P0" || return 1
  CURP=$P0 CURK=$K0 CUR9A=rsa-modern MK=default
}
# other_pin / other_puk: the new secret for a setup from the current one (setup refuses the
# factory values, so the card alternates between two other pairs)
other_pin() { if [ "$1" = "$P1" ]; then echo "$P2"; else echo "$P1"; fi; }
other_puk() { if [ "$1" = "$K1" ]; then echo "$K2"; else echo "$K1"; fi; }

phase_setup() {
  MODE=inprocess
  local n=$1 ph="setup" i k d from newp newk extra what pst kst tgt
  W="$WORK/setup"
  mkdir -p "$W"
  tally_init "$ph"
  CK_MAX_STAGED=0 CK_STAGED_OK=""
  # uncut setups for the kill windows: from factory on a fresh card, then again on that card
  measure_setups() {
    for k in $(seq 1 "$1"); do
      fresh_setup_card || { notok "[$ph] fresh card with rsa-modern in 9a" "$WHY"; return 1; }
      measure_cmd "$ph: from factory" "$W/measure.out" "$TESSERA_BIN" "${TSA[@]}" --pin-file "$(pinfile "$P0" "$P1" "$K0" "$K1")" setup
      measure_cmd "$ph: again" "$W/measure.out" "$TESSERA_BIN" "${TSA[@]}" --pin-file "$(pinfile "$P1" "$P2" "$K1" "$K2")" setup
      CURP=$P2 CURK=$K2 MK=set
    done
    echo "# [$ph] kill window: $(ms "$(window "$ph: from factory")") ms from factory, $(ms "$(window "$ph: again")") ms on a card set up before"
  }
  measure_setups 4 || return 1
  WHY=""
  load rsa-legacy 9a "$CURP" && card_check "$CURP"
  check "[$ph] after eight uncut setups the card is consistent and imports with the PIN $WHY" test -z "$WHY$CK_PROBLEMS"
  local reuse=0
  for i in $(seq 1 "$n"); do
    if remeasure_due "$i"; then measure_setups 2 || return 1; fi
    # odd runs: a factory-fresh card (first use); even runs: the card the previous run left,
    # set up (uncut) first when the previous run left it (partly) factory
    from=factory
    if [ $((i % 2)) = 0 ] && [ "$reuse" = 1 ]; then
      from="set up"
      if [ "$CURP" = "$P0" ] || [ "$CURK" = "$K0" ] || [ "$MK" = default ]; then
        newp=$(other_pin "$CURP") newk=$(other_puk "$CURK")
        if TS --pin-file "$(pinfile "$CURP" "$newp" "$CURK" "$newk")" setup >"$W/presetup.out" 2>&1; then
          CURP=$newp CURK=$newk MK=set
        else
          echo "# [$ph #$i] uncut setup of the card the previous run left fails ($(head -n 1 "$W/presetup.out")): a fresh card instead"
          reuse=0
        fi
      fi
    fi
    if [ "$reuse" = 0 ] || [ "$from" = factory ]; then
      from=factory
      fresh_setup_card || { notok "[$ph] fresh card" "$WHY"; return 1; }
    fi
    if [ "$from" = factory ]; then d=$(window "$ph: from factory"); else d=$(window "$ph: again"); fi
    newp=$(other_pin "$CURP") newk=$(other_puk "$CURK")
    kill_run "$d" "$W/run.out" "$TESSERA_BIN" "${TSA[@]}" --pin-file "$(pinfile "$CURP" "$newp" "$CURK" "$newk")" setup
    run_label "$ph" "$i" "$d"
    LABEL+=" from $from: PIN $CURP→$newp, PUK $CURK→$newk"
    T_RUNS[$ph]=$((T_RUNS[$ph] + 1))
    [ "$KR_KILLED" = 1 ] && T_INT[$ph]=$((T_INT[$ph] + 1))
    extra=""
    if [ $((i % 2)) = 1 ]; then
      LABEL+=", next: tessera repair]"
      # the holder gives the PIN they knew; if the card says it is wrong, the new one
      repair "$(pinfile "$CURP")"
      if [ "$REPAIR_RC" != 0 ] && printf '%s' "$REPAIR_OUT" | grep >/dev/null -i 'wrong PIN'; then
        repair "$(pinfile "$newp")"
        REPAIR_OUT="(old PIN refused, then with the new PIN) $REPAIR_OUT"
      fi
      if [ "$REPAIR_RC" = 0 ]; then ok "$LABEL repair exits 0: $(printf '%s' "$REPAIR_OUT" | head -n 1)"
      else
        T_REP[$ph]=$((T_REP[$ph] + 1))
        notok "$LABEL tessera repair exits 0 (exit $REPAIR_RC)" "$(printf '%s\n' "$REPAIR_OUT" | head -n 4)"
      fi
    else
      LABEL+=", next: the module]"
    fi
    # which PIN and PUK are valid now (through the module; never spending a last try)
    FIND_LOG=""
    if find_pin "$CURP" "$newp"; then pst=$([ "$FOUND_PIN" = "$CURP" ] && echo old || echo new)
    else pst=lost; extra="no PIN works without spending the last try: ${FIND_LOG}"; fi
    if find_puk "$CURK" "$newk"; then kst=$([ "$FOUND_PUK" = "$CURK" ] && echo old || echo new)
    else kst=lost; extra+="${extra:+$'\n'}no PUK works without spending the last try: ${FIND_LOG}"; fi
    CK_PROBLEMS=""
    if [ -n "$FOUND_PIN" ]; then
      card_check "$FOUND_PIN"
      [ "$(slot_content 01)" = "$CUR9A" ] || extra+="${extra:+$'\n'}slot 9a holds $(slot_content 01) instead of $CUR9A"
    fi
    status_now
    MK=$(printf '%s' "$ST_JSON" | jq -r 'if .management_key_default then "default" else "set" end' 2>/dev/null)
    what="PIN $pst, PUK $kst, management key ${MK:-?}"
    # the management key must never be lost: a later import with the valid PIN works
    if [ -n "$FOUND_PIN" ]; then
      tgt=$(other_of "$CUR9A")
      if load "$tgt" 9a "$FOUND_PIN"; then
        what+="; import with the valid PIN works"
        CUR9A=$tgt
      else
        extra+="${extra:+$'\n'}the management key is lost: $(printf '%s' "$WHY" | head -n 2)"
      fi
    fi
    # outcomes: undone (all old), done (all new), or mixed (PIN and PUK each either)
    case "$from/$pst/$kst/$MK" in
      factory/old/old/default | "set up/old/old/set") outcome "$ph" undone ;;
      */new/new/set) outcome "$ph" done ;;
      factory/new/new/default) outcome "$ph" "new-secrets+default-key" ;;
      */lost/* | */*/lost/*) outcome "$ph" lost ;;
      *) outcome "$ph" mixed ;;
    esac
    verdict "$ph" "$what" "$extra"
    if [ "$TORN" = 0 ] && [ -n "$FOUND_PIN" ] && [ -n "$FOUND_PUK" ]; then
      CURP=$FOUND_PIN CURK=$FOUND_PUK reuse=1
    else
      reuse=0
    fi
  done
  T_DUR[$ph]="$(ms "$(window "$ph: from factory")")/$(ms "$(window "$ph: again")")"
  return 0
}

# ---- 2. concurrency ------------------------------------------------------------------------------------------
# mk_conc_fixtures: CONC RSA-2048 e-Certs (cA01…) and CONC P-256 e-Certs (cB01…), each a .p12
mk_conc_fixtures() {
  local i n
  for i in $(seq -w 1 "$CONC"); do
    for n in "cA$i:rsa2048" "cB$i:p256"; do
      genkey "$FIX/${n%%:*}.key" "${n#*:}" &&
        issue "$FIX/${n%%:*}.key" "/C=EE/O=Tessera Test/CN=Concurrent ${n%%:*}" sig "$FIX/${n%%:*}.pem" conc@example.ee &&
        p12 "${n%%:*}" && openssl x509 -in "$FIX/${n%%:*}.pem" -outform DER -out "$FIX/${n%%:*}.der" || return 1
    done
  done
}

# conc_loop TAG: CONC imports of cTAG01… into 9a, one after the other; one line per command
# "ID RC START_US END_US" in D/log-TAG, its stdout/stderr in D/ID.out / D/ID.err, its backup
# in D/bk-ID/
conc_loop() {
  local tag=$1 i id t0 rc
  for i in $(seq -w 1 "$CONC"); do
    id=c$tag$i
    now_us
    t0=$NOW_US
    timeout 120 "$TESSERA_BIN" "${TSA[@]}" --password-file "$PW" --pin-file "$(pinfile "$P0")" \
      import "$FIX/$id.p12" --slot 9a --backup-dir "$D/bk-$id" >"$D/$id.out" 2>"$D/$id.err"
    rc=$?
    now_us
    echo "$id $rc $t0 $NOW_US" >>"$D/log-$tag"
  done
}

phase_concurrency() {
  MODE=$1
  local ph="concurrent imports $1" v msg detail
  D="$WORK/conc-$MODE"
  W=$D
  mkdir -p "$D"
  CK_MAX_STAGED=0 CK_STAGED_OK=""
  fresh_import_card || { notok "[$ph] card with ec-modern in 9c and rsa-modern in 9a" "$WHY"; return 1; }
  conc_loop A &
  local pa=$!
  conc_loop B &
  local pb=$!
  wait "$pa" "$pb"
  card_check "$P0"
  # every "ok" true, the backups chain the imports, the card ends with the last of them
  import_chain "$D" "$FIX" "${CK_CERT[01]:-}" >"$D/analysis"
  while IFS=$'\t' read -r v msg detail; do
    case "$v" in
      OK) ok "[$ph] $msg" ;;
      NOTOK) notok "[$ph] $msg" "$(printf '%b' "$detail")" ;;
      INFO) echo "# [$ph] $msg" ;;
    esac
  done <"$D/analysis"
  [ -s "$D/analysis" ] || notok "[$ph] the analysis ran" "$(ls "$D" | head)"
  if [ -z "$CK_PROBLEMS" ]; then ok "[$ph] card consistent after the concurrent imports: 9a holds $(slot_content 01)"
  else notok "[$ph] TORN CARD after the concurrent imports" "$CK_PROBLEMS"; fi
  if status_check; then ok "[$ph] status: pending_change null, problems []"
  else notok "[$ph] status: pending_change null, problems []" "$ST_WHY"; fi
  CONC_RESULT[$MODE]="$(grep -c '^NOTOK' "$D/analysis") failed checks; $([ -z "$CK_PROBLEMS" ] && echo "card consistent" || echo "TORN"); $(grep -m1 'exited 0' "$D/analysis" | cut -f2 | sed 's/; failures.*//')"
  [ "$MODE" = pcscd ] && stop_card
  return 0
}
declare -A CONC_RESULT=()

# ---- 3. waiting for another program ---------------------------------------------------------------------
# A program in the middle of a change holds the card's change lock (`flock` on CARD.change here,
# as `tessera` holds it for its whole run). `tessera --wait 1 import` gives up after a bounded
# time, says so, and the card is byte-identical; `tessera --wait 20 import` says "waiting for the
# card: another program is using it" after a second and goes ahead once the lock is free.
phase_waiting() {
  MODE=inprocess
  local ph="waiting" out rc t0 holder
  D="$WORK/waiting"
  W=$D
  mkdir -p "$D"
  fresh_import_card || { notok "[$ph] card with ec-modern in 9c and rsa-modern in 9a" "$WHY"; return 1; }
  cp "$CARD" "$D/before.json"
  flock "$CARD.change" sleep 4 &
  holder=$!
  sleep 0.3
  t0=$SECONDS
  out=$(TS --wait 1 --password-file "$PW" --pin-file "$(pinfile "$P0")" import "$FIX/rsa-legacy.p12" --slot 9a --backup-dir "$D/bk" 2>&1)
  rc=$?
  if [ "$rc" -ne 0 ] && printf '%s' "$out" | grep >/dev/null "waiting for the card: another program is using it" &&
    printf '%s' "$out" | grep >/dev/null "nothing was changed"; then
    ok "[$ph] --wait 1 while another program holds the card: gives up after $((SECONDS - t0)) s, says it waited and that nothing was changed"
  else
    notok "[$ph] --wait 1 while another program holds the card gives up with a clear message" "exit $rc: $out"
  fi
  if cmp -s "$CARD" "$D/before.json"; then ok "[$ph] the card file is byte-identical after giving up"
  else notok "[$ph] the card file is byte-identical after giving up" "it changed"; fi
  t0=$SECONDS
  out=$(TS --wait 20 --password-file "$PW" --pin-file "$(pinfile "$P0")" import "$FIX/rsa-legacy.p12" --slot 9a --backup-dir "$D/bk" 2>&1)
  rc=$?
  wait "$holder" 2>/dev/null
  if [ "$rc" -eq 0 ] && printf '%s' "$out" | grep >/dev/null "waiting for the card: another program is using it" &&
    printf '%s' "$out" | grep >/dev/null "verified it: ok"; then
    ok "[$ph] --wait 20: says it is waiting, then loads the e-Cert once the card is free ($((SECONDS - t0)) s)"
  else
    notok "[$ph] --wait 20 waits, says so, then loads the e-Cert" "exit $rc: $out"
  fi
  CK_MAX_STAGED=0 CK_STAGED_OK=""
  card_check "$P0"
  if [ -z "$CK_PROBLEMS" ] && [ "$(slot_content 01)" = rsa-legacy ]; then
    ok "[$ph] 9a holds the e-Cert loaded after the wait, every pair matching"
  else
    notok "[$ph] 9a holds the e-Cert loaded after the wait" "9a: $(slot_content 01); $CK_PROBLEMS"
  fi
}

# ---- run -----------------------------------------------------------------------------------------------
for p in $PHASES; do
  t=$SECONDS
  case "$p" in
    import) phase_import inprocess "$RUNS" ;;
    renew) phase_renew "$RUNS" ;;
    delete) phase_delete "$RUNS" ;;
    setup) phase_setup "$RUNS" ;;
    pcscd) phase_import pcscd "$PCSCD_RUNS" ;;
    concurrency)
      gate "fixtures: $CONC RSA-2048 and $CONC P-256 e-Certs for the concurrent imports" mk_conc_fixtures
      for i in $(seq -w 1 "$CONC"); do known "cA$i" "$FIX/cA$i.der" && known "cB$i" "$FIX/cB$i.der"; done
      phase_concurrency inprocess
      phase_concurrency pcscd
      ;;
    waiting) phase_waiting ;;
    *) notok "unknown phase $p" ;;
  esac
  echo "# phase $p: $((SECONDS - t)) s"
done

# ---- summary ---------------------------------------------------------------------------------------------
echo "#"
echo "# issue 10 kill loops (torn = the independent checker found the card inconsistent after the next opener)"
printf '# %-18s %5s %12s %5s %14s %13s  %-18s %s\n' command runs interrupted torn "repair failed" "status !clean" "window ms" outcomes
for ph in "${PHASE_ORDER[@]}"; do
  oc=""
  for w in ${T_OUTC[$ph]}; do oc+="$w ${T_OC["$ph|$w"]}, "; done
  printf '# %-18s %5s %12s %5s %14s %13s  %-18s %s\n' "$ph" "${T_RUNS[$ph]}" "${T_INT[$ph]}" "${T_TORN[$ph]}" \
    "${T_REP[$ph]}" "${T_STAT[$ph]}" "${T_DUR[$ph]:-}" "${oc%, }"
done
for m in "${!CONC_RESULT[@]}"; do echo "# concurrent imports ($m): ${CONC_RESULT[$m]}"; done
echo "# total time: $((SECONDS - T_START)) s"
for ph in "${PHASE_ORDER[@]}"; do
  if [ "${T_TORN[$ph]}" = 0 ]; then ok "[$ph] no torn card in ${T_RUNS[$ph]} kill runs"
  else notok "[$ph] no torn card in ${T_RUNS[$ph]} kill runs: ${T_TORN[$ph]} torn"; fi
  # the loop proves something only when the kills really cut the command short: most runs
  # should be interrupted; under a third means the kill window is off (a busy machine)
  if [ $((3 * T_INT[$ph])) -ge "${T_RUNS[$ph]}" ]; then ok "[$ph] ${T_INT[$ph]} of ${T_RUNS[$ph]} runs were interrupted by the kill (at least a third)"
  else notok "[$ph] at least a third of the runs were interrupted by the kill (only ${T_INT[$ph]} of ${T_RUNS[$ph]}: the kill window is off)"; fi
  [ $((2 * T_INT[$ph])) -ge "${T_RUNS[$ph]}" ] || echo "# [$ph] note: fewer than half of the runs were interrupted"
done
