#!/usr/bin/env bash
# Interop: every PIV card, not only our own (issue 12, acceptance). For each behaviour profile
# of the software card (`tessera vcard init --profile NAME`: yubikey-5.7, yubikey-4, piv-basic,
# quirky), in-process (TESSERA_VCARD) and through the lab's pcscd + vpcd reader, with OpenSC's
# pkcs11-tool driving libtessera_pkcs11.so and openssl judging:
#   - key generation through the module (EC P-256 in 9A, RSA-2048 in 9C), certificates issued
#     by a test CA and written through the module;
#   - objects listed without a PIN (certificates and public keys);
#   - an ECDSA and an RSA signature, each verified by openssl with the certificate's key; the
#     9C signature (PIN before every use) costs at most 4 APDUs in the module's own log, with
#     one VERIFY;
#   - a wrong PIN leaves 2 tries, read back by `tessera --json status`; the PUK unblocks the PIN
#     through C_InitPIN in an SO session (pkcs11-tool --login-type so --init-pin), and the new
#     PIN logs in;
#   - `tessera status` shows the certificates, `tessera doctor` reports no failure;
#   - what a profile cannot do is refused in plain words with the card untouched: a key from a
#     file on a card without IMPORT (piv-basic), deleting a key without MOVE KEY (all but
#     yubikey-5.7), retry counts without SET PIN RETRIES (piv-basic); what it can do works (an
#     e-Cert .p12 into 9d, retry counts); never a device error.
# Run by pkg/scripts/test-all.sh; by hand:
#   bash pkg/scripts/pcsc-lab.sh up /tmp/lab && . /tmp/lab/env
#   TESSERA_BIN=$PWD/target/release/tessera LAB=/tmp/lab bash tests/interop/profiles.sh
# PROFILES (default: all four) and PROFILE_MODES (default "inprocess pcscd") narrow it.
set -uo pipefail
. "$(dirname "$0")/lib/common.bash"
. "$(dirname "$0")/lib/p11.bash"

PROFILES=${PROFILES:-yubikey-5.7 yubikey-4 piv-basic quirky}
MODES=${PROFILE_MODES:-inprocess pcscd}
PIN=123456
PUK=12345678
D=$WORK
printf 'a message signed on every card profile\n' >"$D/msg"
gate "test CA created" p11_make_ca "$D"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$D/file.key" \
  -out "$D/file.pem" -subj "/CN=Tessera profile file e-Cert" -days 30 >/dev/null 2>&1
echo filepw >"$D/pw"
echo "$PIN" >"$D/pin"
echo "$PUK" >"$D/puk"
gate "an e-Cert .p12 to import" openssl pkcs12 -export -inkey "$D/file.key" -in "$D/file.pem" \
  -out "$D/file.p12" -passout "file:$D/pw"

# P ARGS...: pkcs11-tool with our module on this mode's card (in-process: only the virtual
# card's slots; through pcscd: the lab reader's)
P() {
  if [ "$MODE" = inprocess ]; then
    TESSERA_LOG=debug TESSERA_LOG_FILE="$LOG" TESSERA_VCARD="$CARD" pkcs11-tool --module "$MODULE" "$@"
  else
    TESSERA_LOG=debug TESSERA_LOG_FILE="$LOG" pkcs11-tool --module "$MODULE" "$@"
  fi
}
# pin_tries: the PIN tries left as `tessera --json status` reads them from the card
pin_tries() { TS --json status | jq -r .pin.tries_left; }
# TS ARGS...: tessera on this mode's card
TS() {
  if [ "$MODE" = inprocess ]; then "$TESSERA_BIN" --vcard "$CARD" "$@"
  else "$TESSERA_BIN" --reader "$READER" "$@"; fi
}
# card_bytes: what the card holds now, for "untouched" checks (in-process: the file; through
# pcscd: the served file, which the server rewrites only when the card changes)
card_bytes() { sha256sum <"$CARD" | cut -d' ' -f1; }
# sign_apdus LOG: the APDUs the module sent between C_SignInit and the end of C_Sign
sign_apdus() {
  awk '/C_SignInit/ { on = 1; n = 0; v = 0 } on && / apdu / { n++ } on && / apdu 00 20 00 80/ { v++ }
       /C_Sign -> / && on { print n, v; on = 0 }' "$1" | tail -n 1
}

N=2100000
for PROFILE in $PROFILES; do
  for MODE in $MODES; do
    N=$((N + 1))
    tag="[$PROFILE $MODE]"
    CARD="$D/$PROFILE-$MODE.json"
    LOG="$D/$PROFILE-$MODE.log"
    if ! run "$TESSERA_BIN" vcard init "$CARD" --serial "$N" --profile "$PROFILE" || [ "$RC" -ne 0 ]; then
      notok "$tag tessera vcard init --profile $PROFILE" "$OUT"
      continue
    fi
    ok "$tag tessera vcard init --profile $PROFILE"
    if [ "$MODE" = pcscd ]; then
      start_card "$CARD" || continue
    fi
    expect_grep "$tag -L shows a token with a login-required flag" 'token flags +:.*login required' P -L

    # keys generated through the module, certificates issued by the test CA
    # the public key is read in the same pkcs11-tool run: a card without GET METADATA reports
    # a new key only in the GENERATE answer, which the module keeps for its process
    # (an EC public key is taken from the EC_POINT --keypairgen prints: pkcs11-tool 0.23's
    # --read-object of EC public keys reads freed memory, OpenSC#3200)
    expect_grep "$tag --keypairgen EC:prime256v1 --id 01 (9A)" 'Key pair generated' \
      P --login --pin "$PIN" --keypairgen --key-type EC:prime256v1 --id 01
    read -r pt par < <(printf '%s\n' "$OUT" | awk '/EC_POINT:/ { p = $2 } /EC_PARAMS:/ { q = $2 } END { print p, q }')
    p11_ec_spki_from "${pt:-}" "${par:-}" >"$D/$PROFILE-$MODE-pub01.pem.der" 2>/dev/null
    expect_grep "$tag --keypairgen rsa:2048 --id 02 (9C)" 'Key pair generated' \
      P --login --pin "$PIN" --keypairgen --key-type rsa:2048 --id 02 \
      --read-object --type pubkey --id 02 -o "$D/$PROFILE-$MODE-pub02.pem.der"
    for id in 01 02; do
      ku=digitalSignature
      [ "$id" = 02 ] && ku=digitalSignature,nonRepudiation
      if openssl pkey -pubin -inform DER -in "$D/$PROFILE-$MODE-pub$id.pem.der" -out "$D/$PROFILE-$MODE-pub$id.pem" 2>/dev/null &&
        p11_issue "$D" "$D/$PROFILE-$MODE-pub$id.pem" "/CN=Tessera $PROFILE $id" "$ku" "$D/$PROFILE-$MODE-cert$id.der"; then
        ok "$tag public key $id read through the module, certificate issued"
      else
        notok "$tag public key $id read through the module, certificate issued" "$(P -O 2>&1 | head -40)"
        continue
      fi
      expect_grep "$tag --write-object cert $id" 'Created certificate' \
        P --login --pin "$PIN" --write-object "$D/$PROFILE-$MODE-cert$id.der" --type cert --id "$id"
    done

    # listed without a PIN: certificates and public keys of both slots
    run P -O
    for id in 01 02; do
      if [ "$RC" -eq 0 ] && printf '%s\n' "$OUT" | awk -v id="$id" '/^Certificate Object/ { c = 1 } c && /ID:/ { if ($2 == id) f = 1; c = 0 } END { exit !f }'; then
        ok "$tag certificate $id listed without a PIN"
      else
        notok "$tag certificate $id listed without a PIN (exit $RC)" "$OUT"
      fi
    done
    run P --read-object --type cert --id 01 -o "$D/$PROFILE-$MODE-back01.der"
    check "$tag certificate 01 read back byte for byte" cmp "$D/$PROFILE-$MODE-back01.der" "$D/$PROFILE-$MODE-cert01.der"

    # signatures, verified by openssl with the certificates' keys
    for id in 01 02; do
      openssl x509 -inform DER -in "$D/$PROFILE-$MODE-cert$id.der" -noout -pubkey >"$D/$PROFILE-$MODE-cpub$id.pem" 2>/dev/null
    done
    rm -f "$D/sig01" "$D/sig02"
    run P --login --pin "$PIN" --sign --id 01 -m ECDSA-SHA256 --signature-format openssl -i "$D/msg" -o "$D/sig01"
    expect_grep "$tag ECDSA-SHA256 with 9A verified by openssl" 'Verified OK' \
      openssl dgst -sha256 -verify "$D/$PROFILE-$MODE-cpub01.pem" -signature "$D/sig01" "$D/msg"
    # this one run logs on its own, for its APDU count
    rm -f "$D/log02"
    main_log=$LOG
    LOG="$D/log02"
    run P --login --pin "$PIN" --sign --id 02 -m SHA256-RSA-PKCS -i "$D/msg" -o "$D/sig02"
    LOG=$main_log
    expect_grep "$tag SHA256-RSA-PKCS with 9C (PIN before every use) verified by openssl" 'Verified OK' \
      openssl dgst -sha256 -verify "$D/$PROFILE-$MODE-cpub02.pem" -signature "$D/sig02" "$D/msg"
    read -r apdus verifies < <(sign_apdus "$D/log02")
    if [ -n "${apdus:-}" ] && [ "$apdus" -le 4 ] && [ "$verifies" -eq 1 ]; then
      ok "$tag the 9C signature took $apdus APDUs with one VERIFY (at most 4)"
    else
      notok "$tag the 9C signature takes at most 4 APDUs with one VERIFY: ${apdus:-?} APDUs, ${verifies:-?} VERIFY" \
        "$(grep -E 'C_SignInit|C_Login|apdu|C_Sign ' "$D/log02" | tail -20)"
    fi

    # a wrong PIN: 2 tries left, read back; the PUK unblocks through C_InitPIN as SO
    expect_fail_grep "$tag a wrong PIN is refused (CKR_PIN_INCORRECT)" 'CKR_PIN_INCORRECT' \
      P --login --pin 000000 -O
    expect_grep "$tag tessera status: 2 PIN tries left" '^2$' pin_tries
    expect_ok "$tag C_InitPIN in an SO session (the PUK) sets PIN 654321" \
      P --login --login-type so --so-pin "$PUK" --init-pin --new-pin 654321
    expect_grep "$tag the new PIN logs in" 'Certificate Object' P --login --pin 654321 -O
    expect_grep "$tag tessera status: 3 PIN tries left again" '^3$' pin_tries
    echo 654321 >"$D/pin2"

    # pkcs11-tool's own battery over every key on the card (sign, verify, decrypt, …)
    expect_grep "$tag pkcs11-tool --test --login: 'No errors'" '^No errors' P --test --login --pin 654321

    # the control manager
    expect_grep "$tag tessera status shows the certificates" "CN=Tessera $PROFILE 01.*|Subject: +CN=Tessera $PROFILE" TS status
    expect_ok "$tag tessera doctor: no check failed" TS doctor
    run TS export --slot 9c --format der -o "$D/$PROFILE-$MODE-export02.der"
    check "$tag tessera export --slot 9c writes the certificate byte for byte" \
      cmp "$D/$PROFILE-$MODE-export02.der" "$D/$PROFILE-$MODE-cert02.der"
    rm -f "$D/msg.p7s"
    expect_ok "$tag tessera sign (CMS with the 9C key)" TS --pin-file "$D/pin2" sign "$D/msg" -o "$D/msg.p7s"
    expect_grep "$tag openssl cms -verify accepts tessera's signature" 'Verification successful' \
      openssl cms -verify -binary -inform DER -in "$D/msg.p7s" -content "$D/msg" -CAfile "$D/ca.pem" -out /dev/null
    printf '654321\n24681357\n' >"$D/pinchange"
    expect_ok "$tag tessera pin change" TS --pin-file "$D/pinchange" pin change
    expect_grep "$tag the changed PIN logs in through the module" 'Certificate Object' P --login --pin 24681357 -O
    printf '%s\n87654321\n' "$PUK" >"$D/pukchange"
    expect_ok "$tag tessera puk change" TS --puk-file "$D/pukchange" puk change
    printf '87654321\n654321\n' >"$D/unblock"
    expect_ok "$tag tessera pin unblock with the new PUK" TS --puk-file "$D/unblock" pin unblock
    run TS --pin-file "$D/pin2" renew request --slot 9c -o "$D/$PROFILE-$MODE-renewal"
    case "$PROFILE" in
      yubikey-5.7)
        if [ "$RC" -eq 0 ]; then ok "$tag tessera renew request (new key staged on the card)"
        else notok "$tag tessera renew request" "$OUT"; fi ;;
      *)
        if [ "$RC" -ne 0 ] && printf '%s' "$OUT" | grep >/dev/null "renewal with an on-card key needs a card that"; then
          ok "$tag tessera renew request refused in words (no GET METADATA / MOVE KEY)"
        else
          notok "$tag tessera renew request refused in words (exit $RC)" "$OUT"
        fi ;;
    esac
    echo 87654321 >"$D/puk"

    # what the card cannot do is refused in words, the card untouched; never a device error
    before=$(card_bytes)
    run TS --password-file "$D/pw" --pin-file "$D/pin2" import "$D/file.p12" --slot 9d
    case "$PROFILE" in
      piv-basic)
        if [ "$RC" -ne 0 ] && printf '%s' "$OUT" | grep >/dev/null "this card cannot take a new key from a file" && [ "$(card_bytes)" = "$before" ]; then
          ok "$tag tessera import refused in words (no key import), card untouched"
        else
          notok "$tag tessera import refused in words (no key import), card untouched (exit $RC)" "$OUT"
        fi ;;
      *)
        if [ "$RC" -eq 0 ] && printf '%s' "$OUT" | grep >/dev/null "verified it: ok"; then ok "$tag tessera import of an e-Cert file into 9d"
        else notok "$tag tessera import of an e-Cert file into 9d (exit $RC)" "$OUT"; fi ;;
    esac
    before=$(card_bytes)
    run TS --yes --pin-file "$D/pin2" delete --slot 9a
    case "$PROFILE" in
      yubikey-5.7)
        if [ "$RC" -eq 0 ]; then ok "$tag tessera delete --slot 9a"; else notok "$tag tessera delete --slot 9a" "$OUT"; fi ;;
      *)
        if [ "$RC" -ne 0 ] && printf '%s' "$OUT" | grep >/dev/null "this card cannot delete a key" && [ "$(card_bytes)" = "$before" ]; then
          ok "$tag tessera delete refused in words (no MOVE KEY), card untouched"
        else
          notok "$tag tessera delete refused in words (no MOVE KEY), card untouched (exit $RC)" "$OUT"
        fi ;;
    esac
    before=$(card_bytes)
    printf '654321\n' >"$D/pin3"
    run TS --pin-file "$D/pin3" --puk-file "$D/puk" pin retries --pin 4 --puk 4
    case "$PROFILE" in
      piv-basic)
        if [ "$RC" -ne 0 ] && printf '%s' "$OUT" | grep >/dev/null "this card cannot change its retry counts" && [ "$(card_bytes)" = "$before" ]; then
          ok "$tag tessera pin retries refused in words, card untouched"
        else
          notok "$tag tessera pin retries refused in words, card untouched (exit $RC)" "$OUT"
        fi ;;
      *)
        if [ "$RC" -eq 0 ]; then ok "$tag tessera pin retries --pin 4 --puk 4"; else notok "$tag tessera pin retries --pin 4 --puk 4" "$OUT"; fi ;;
    esac
    if grep -qs "CKR_DEVICE_ERROR" "$LOG" "$D/log02"; then
      notok "$tag no device error in the module's log" "$(grep -h -B3 CKR_DEVICE_ERROR "$LOG" "$D/log02" | head -20)"
    else
      ok "$tag no device error in the module's log (every pkcs11-tool run)"
    fi
    [ "$MODE" = pcscd ] && stop_card
  done
done
