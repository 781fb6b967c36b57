#!/usr/bin/env bash
# Interop: OpenSSH with libtessera_pkcs11.so as its PKCS#11 provider, through the lab's
# pcscd + vpcd reader.
#  1. 9A: a P-256 key generated on the card and a certificate from a test CA, through the
#     module (pkcs11-tool).
#  2. `ssh-keygen -D MODULE` prints the card's public key; its fingerprint equals the one of
#     the certificate's key (`ssh-keygen -i -m PKCS8`).
#  3. An sshd of our own on 127.0.0.1:<free port> (host key, authorized_keys with the card's
#     key, pid file all in the work directory; UsePAM no, StrictModes no) and
#     `ssh -I MODULE root@127.0.0.1 echo card-login-ok`, the PIN given through SSH_ASKPASS:
#     the command's output, and sshd's log naming the card key's fingerprint.
# Run by pkg/scripts/test-all.sh; by hand:
#   bash pkg/scripts/pcsc-lab.sh up /tmp/lab && . /tmp/lab/env
#   TESSERA_BIN=$PWD/target/release/tessera LAB=/tmp/lab bash tests/interop/openssh.sh
set -uo pipefail
. "$(dirname "$0")/lib/common.bash"
. "$(dirname "$0")/lib/p11.bash"
. "$(dirname "$0")/lib/apps.bash"

PIN=123456
SERIAL=1000009
CARD="$LAB/openssh.card"
D=$WORK
SSHD=${SSHD:-/usr/sbin/sshd}
mkdir -p "$D/home"
export HOME="$D/home"
unset SSH_AUTH_SOCK SSH_AGENT_PID DISPLAY
export TESSERA_LOG_FILE="$D/module.log"

p11_module_checks
for t in ssh ssh-keygen; do
  command -v "$t" >/dev/null || { notok "$t installed (package openssh-client)"; exit 1; }
done
[ -x "$SSHD" ] || { notok "sshd installed ($SSHD, package openssh-server)"; exit 1; }
ok "$(ssh -V 2>&1)"

rm -f "$CARD" "$CARD".*
expect_ok "tessera vcard init (serial $SERIAL)" "$TESSERA_BIN" vcard init "$CARD" --serial "$SERIAL"
start_card "$CARD" || exit 1

# ---- 9A through the module ---------------------------------------------------------------------
gate "test CA created" p11_make_ca "$D"
gate "pkcs11-tool --keypairgen EC:prime256v1 --id 01 (9A)" \
  T --login --pin "$PIN" --keypairgen --key-type EC:prime256v1 --id 01
gate "9A public key read through the module" p11_pubkey_pem 01 "$D/gen01.pem"
printf '%s\n' 'keyUsage=critical,digitalSignature' 'extendedKeyUsage=clientAuth' >"$D/auth.ext"
gate "test CA issues the 9A certificate" \
  apps_issue "$D" "$D/gen01.pem" "/CN=Tessera OpenSSH Card" "$D/auth.ext" "$D/card9a.der"
gate "9A certificate written through the module" \
  T --login --pin "$PIN" --write-object "$D/card9a.der" --type cert --id 01
openssl x509 -inform DER -in "$D/card9a.der" -noout -pubkey >"$D/cert-pub.pem"

# ---- ssh-keygen -D ---------------------------------------------------------------------------------
gate "ssh-keygen -i -m PKCS8: the certificate's key in OpenSSH form" \
  sh -c "ssh-keygen -i -m PKCS8 -f '$D/cert-pub.pem' >'$D/cert-key.pub'"
WANT_FP=$(ssh-keygen -l -E sha256 -f "$D/cert-key.pub" | awk '{print $2}')
run timeout 30 ssh-keygen -D "$MODULE"
printf '%s\n' "$OUT" | grep -E '^(ecdsa-sha2-|ssh-rsa|ssh-ed25519)' >"$D/card-keys.pub"
if [ "$RC" -eq 0 ] && [ -s "$D/card-keys.pub" ]; then
  ok "ssh-keygen -D libtessera_pkcs11.so prints $(wc -l <"$D/card-keys.pub") public key(s)"
else notok "ssh-keygen -D libtessera_pkcs11.so prints the card's public keys (exit $RC)" "$OUT"; fi
GOT_FP=$(ssh-keygen -l -E sha256 -f "$D/card-keys.pub" 2>/dev/null | awk '{print $2}')
if printf '%s\n' "$GOT_FP" | grep -Fqx "$WANT_FP"; then
  ok "the 9A key from ssh-keygen -D has the certificate key's fingerprint ($WANT_FP)"
else notok "the 9A key from ssh-keygen -D has the certificate key's fingerprint ($WANT_FP)" \
  "ssh-keygen -D fingerprints: $GOT_FP"; fi
expect_grep "ssh-keygen -D prints the 9A key as ecdsa-sha2-nistp256 with its PKCS#11 label" '^ecdsa-sha2-nistp256 AAAA[^ ]+ PIV AUTH pubkey' \
  cat "$D/card-keys.pub"

# ---- sshd on 127.0.0.1 -------------------------------------------------------------------------------
# sshd refuses to start without its privilege separation directory (Debian's init script
# creates it; nothing runs here at boot)
[ -d /run/sshd ] || mkdir -p -m 0755 /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$D/host_ed25519" </dev/null >/dev/null
cp "$D/cert-key.pub" "$D/authorized_keys"
chmod 600 "$D/authorized_keys"
PORT=""
start_sshd() {
  local i
  for i in 1 2 3; do
    PORT=$(free_port)
    cat >"$D/sshd_config" <<EOF
Port $PORT
ListenAddress 127.0.0.1
HostKey $D/host_ed25519
PidFile $D/sshd.pid
AuthorizedKeysFile $D/authorized_keys
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthenticationMethods publickey
LogLevel VERBOSE
EOF
    bg_start "$D/sshd.log" timeout 120 "$SSHD" -D -e -f "$D/sshd_config"
    SSHD_PID=$BG_PID
    wait_listen "$PORT" 10 "$SSHD_PID" && return 0
    bg_stop "$SSHD_PID"
  done
  return 1
}
if start_sshd; then ok "sshd -D -e -f sshd_config listening on 127.0.0.1:$PORT"
else
  notok "sshd listening on 127.0.0.1" "$(cat "$D/sshd.log")"
  exit 1
fi

# the PIN prompt goes to SSH_ASKPASS (no terminal here)
printf '#!/bin/sh\necho "$*" >>"%s"\necho %s\n' "$D/askpass.log" "$PIN" >"$D/askpass"
chmod 700 "$D/askpass"
# OpenSSH 9 treats PKCS#11 keys like agent keys: with IdentitiesOnly=yes it offers only those
# that an IdentityFile names, so the card key's public half is named too (the usual
# ~/.ssh/config recipe); the private key stays on the card.
SSH_OPTS=(-F /dev/null -o IdentitiesOnly=yes -o IdentityFile="$D/cert-key.pub" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
  -o PasswordAuthentication=no -o KbdInteractiveAuthentication=no -o ConnectTimeout=10 -o LogLevel=VERBOSE
  -p "$PORT")
run env SSH_ASKPASS="$D/askpass" SSH_ASKPASS_REQUIRE=force DISPLAY=:0 setsid -w \
  timeout 60 ssh -I "$MODULE" "${SSH_OPTS[@]}" root@127.0.0.1 echo card-login-ok
if [ "$RC" -eq 0 ] && printf '%s\n' "$OUT" | grep >/dev/null -x 'card-login-ok'; then
  ok "ssh -I libtessera_pkcs11.so root@127.0.0.1 echo card-login-ok prints card-login-ok"
else
  notok "ssh -I libtessera_pkcs11.so root@127.0.0.1 echo card-login-ok (exit $RC)" "$OUT"
  show_module_log "$TESSERA_LOG_FILE" 30
fi
if [ -s "$D/askpass.log" ]; then ok "ssh asked for the card PIN through SSH_ASKPASS ($(head -n 1 "$D/askpass.log"))"
else notok "ssh asked for the card PIN through SSH_ASKPASS"; fi
sleep 0.3
# (a fingerprint holds '+' and '/': matched as a fixed string)
if grep 'Accepted publickey for root from 127.0.0.1 ' "$D/sshd.log" | grep -Fq "ECDSA $WANT_FP"; then
  ok "sshd log: 'Accepted publickey for root from 127.0.0.1 … ECDSA $WANT_FP' (the card key)"
else notok "sshd log: 'Accepted publickey for root' with the card key's fingerprint $WANT_FP" "$(cat "$D/sshd.log")"; fi

# the same with -o PKCS11Provider= (what ~/.ssh/config would say)
run env SSH_ASKPASS="$D/askpass" SSH_ASKPASS_REQUIRE=force DISPLAY=:0 setsid -w \
  timeout 60 ssh -o PKCS11Provider="$MODULE" "${SSH_OPTS[@]}" root@127.0.0.1 echo card-login-ok-2
if [ "$RC" -eq 0 ] && printf '%s\n' "$OUT" | grep >/dev/null -x 'card-login-ok-2'; then
  ok "ssh -o PKCS11Provider=libtessera_pkcs11.so logs in as well"
else notok "ssh -o PKCS11Provider=libtessera_pkcs11.so logs in as well (exit $RC)" "$OUT"; fi

# a wrong PIN does not log in (and the card's PIN counter is restored by the right one after)
printf '#!/bin/sh\necho 654321\n' >"$D/askpass-wrong"
chmod 700 "$D/askpass-wrong"
run env SSH_ASKPASS="$D/askpass-wrong" SSH_ASKPASS_REQUIRE=force DISPLAY=:0 setsid -w \
  timeout 60 ssh -I "$MODULE" "${SSH_OPTS[@]}" root@127.0.0.1 echo should-not-run
if [ "$RC" -ne 0 ] && ! printf '%s\n' "$OUT" | grep >/dev/null 'should-not-run'; then
  ok "with a wrong PIN ssh does not log in"
else notok "with a wrong PIN ssh does not log in (exit $RC)" "$OUT"; fi
expect_grep "the right PIN still works after one wrong try" 'card-login-ok-3' \
  env SSH_ASKPASS="$D/askpass" SSH_ASKPASS_REQUIRE=force DISPLAY=:0 setsid -w \
  timeout 60 ssh -I "$MODULE" "${SSH_OPTS[@]}" root@127.0.0.1 echo card-login-ok-3

apps_cleanup
stop_card
