#!/usr/bin/env bash
# Interop: Firefox ESR (headless) with libtessera_pkcs11.so as a security device, doing TLS
# client authentication with the card's 9E (card authentication) key against a local
# `openssl s_server -Verify 1`, through the lab's pcscd + vpcd reader.
#  1. 9E: a P-256 key generated on the card and a clientAuth certificate from a test CA,
#     both through the module (pkcs11-tool) on the card's card-authentication token
#     ("<label> Card Auth": no CKF_LOGIN_REQUIRED, so NSS uses 9E without asking for a PIN).
#  2. A fresh profile: NSS database (certutil -N), the module registered with
#     `tessera register firefox --profile P`, the test CA trusted (CT,C,C), user.js with
#     security.default_personal_cert = "Select Automatically" and the first-run, update,
#     telemetry and background-network features off.
#  3. Firefox is driven through Marionette (lib/marionette.py): it loads
#     https://127.0.0.1:PORT/ and reports how the load ended; the server's log must show the
#     card's subject and serial (the verify callback's depth=0 line and, from -trace, the
#     client Certificate message), and the page s_server returns names the same certificate.
#     Run 1 without any PIN, nothing logged in; run 2 with the card's main token logged in
#     (the PIN prompt answered, as a user does when Firefox asks) — 9E is still what is used.
#  4. `tessera import` of a renewed e-Cert (new key + certificate in a .p12) into 9E; run 3
#     with the same profile, again without any PIN: the server now sees the new subject and
#     serial, never the old.
# (`firefox --screenshot URL` cannot be used for this: it waits for the page forever when the
# handshake stalls, and it cannot log in to a token.)
# Run by pkg/scripts/test-all.sh; by hand:
#   bash pkg/scripts/pcsc-lab.sh up /tmp/lab && . /tmp/lab/env
#   TESSERA_BIN=$PWD/target/release/tessera LAB=/tmp/lab bash tests/interop/firefox.sh
set -uo pipefail
. "$(dirname "$0")/lib/common.bash"
# This script exercises the opt-in card-auth-token setting: each card's card-authentication key
# (9E) on a login-free token of its own, which Firefox needs for TLS with 9E without a PIN.
export TESSERA_CARD_AUTH_TOKEN=1
. "$(dirname "$0")/lib/p11.bash"
. "$(dirname "$0")/lib/apps.bash"

PIN=123456
SERIAL=1000006
TOKEN="Tessera PIV #$SERIAL"
AUTH_TOKEN="$TOKEN Card Auth"
# TA ARGS...: pkcs11-tool on the card-authentication token (9E)
TA() { T --token-label "$AUTH_TOKEN" "$@"; }
CARD="$LAB/firefox.card"
D=$WORK
P="$D/profile"
FIREFOX=${FIREFOX:-$(command -v firefox-esr || command -v firefox || true)}
printf '%s\n' "$PIN" >"$D/pinfile"
printf '%s\n' 'renewed e-Cert envelope secret' >"$D/p12pass"
# the browser must not find root's own profiles, caches or crash reporter
mkdir -p "$D/home"
export HOME="$D/home" XDG_CONFIG_HOME="$D/home/.config" XDG_CACHE_HOME="$D/home/.cache"
export MOZ_HEADLESS=1 MOZ_CRASHREPORTER_DISABLE=1 MOZ_DISABLE_AUTO_SAFE_MODE=1
unset DISPLAY WAYLAND_DISPLAY

p11_module_checks
if [ -z "$FIREFOX" ]; then
  notok "firefox-esr installed (pkg/scripts/deps.sh)"
  exit 1
fi
ok "browser: $("$FIREFOX" --version 2>/dev/null | head -n 1) ($FIREFOX)"
for t in certutil modutil; do
  command -v "$t" >/dev/null || { notok "$t installed (package libnss3-tools)"; exit 1; }
done

rm -f "$CARD" "$CARD".*
expect_ok "tessera vcard init (serial $SERIAL)" "$TESSERA_BIN" vcard init "$CARD" --serial "$SERIAL"
start_card "$CARD" || exit 1

# ---- 9E through the module -----------------------------------------------------------------------
gate "test CA created" p11_make_ca "$D"
gate "TLS server certificate for 127.0.0.1 from the test CA" apps_server_cert "$D"
expect_grep "pkcs11-tool -L: '$AUTH_TOKEN' needs no login (no CKF_LOGIN_REQUIRED)" \
  "token label +: $AUTH_TOKEN\$" T -L
run T -L
if printf '%s\n' "$OUT" | awk -v t="$AUTH_TOKEN" '/token label/ { sub(/^[^:]*: /, ""); cur = $0 } /token flags/ && cur == t { print; exit }' |
  grep -q 'login required'; then notok "'$AUTH_TOKEN' has no 'login required' flag" "$OUT"
else ok "'$AUTH_TOKEN' has no 'login required' flag (the main token has it: $(printf '%s\n' "$OUT" | grep -c 'login required') token)"; fi
gate "pkcs11-tool --keypairgen EC:prime256v1 --id 04 (9E) on '$AUTH_TOKEN'" \
  TA --login --pin "$PIN" --keypairgen --key-type EC:prime256v1 --id 04
gate "9E public key read through the module" p11_pubkey_pem 04 "$D/gen04.pem" "$AUTH_TOKEN"
printf '%s\n' 'keyUsage=critical,digitalSignature' 'extendedKeyUsage=clientAuth' \
  'basicConstraints=critical,CA:FALSE' 'subjectKeyIdentifier=hash' 'authorityKeyIdentifier=keyid' >"$D/client.ext"
gate "test CA issues the 9E certificate (clientAuth)" \
  apps_issue "$D" "$D/gen04.pem" "/CN=Tessera Firefox Card One/serialNumber=PNOEE-1000006/O=Tessera Interop" \
  "$D/client.ext" "$D/card1.der"
openssl x509 -inform DER -in "$D/card1.der" -out "$D/card1.pem"
gate "9E certificate written through the module" \
  TA --login --pin "$PIN" --write-object "$D/card1.der" --type cert --id 04
# what makes the PIN-less browser run possible: the 9E private key is visible without login,
# on a token that needs none; the main token does not show 9E, so NSS cannot pick it there
expect_grep "pkcs11-tool -O without login lists the 9E private key (CKA_PRIVATE false)" \
  '^Private Key Object; EC' TA -O --type privkey --id 04
run T -O
if [ "$RC" -eq 0 ] && ! printf '%s\n' "$OUT" | p11_id_labels | grep -q '|04|'; then ok "the main token '$TOKEN' shows no 9E object"
else notok "the main token '$TOKEN' shows no 9E object" "$OUT"; fi

# ---- the profile ---------------------------------------------------------------------------------
mkdir -p "$P"
gate "certutil -N: the profile's NSS database" certutil -N --empty-password -d "sql:$P"
run "$TESSERA_BIN" register firefox --profile "$P" --module "$MODULE" --yes
if [ "$RC" -eq 0 ]; then ok "tessera register firefox --profile P --module libtessera_pkcs11.so"
else
  notok "tessera register firefox --profile P --module libtessera_pkcs11.so (exit $RC); registering with modutil instead" "$OUT"
  modutil -add Tessera -libfile "$MODULE" -dbdir "sql:$P" -force >/dev/null 2>&1
fi
expect_grep "modutil -list: the profile's database loads the module and sees '$TOKEN'" "token: $TOKEN\$" \
  modutil -list -dbdir "sql:$P"
gate "certutil -A -t CT,C,C: test CA trusted in the profile" \
  certutil -A -n "Tessera Interop Test CA" -t "CT,C,C" -i "$D/ca.pem" -d "sql:$P"
expect_grep "certutil -L -h all: the card's 9E certificate is visible without a PIN" \
  "^$AUTH_TOKEN:Certificate for Card Authentication +u,u,u" certutil -L -h all -d "sql:$P"

cat >"$P/user.js" <<'EOF'
// client certificate: no dialog, the one matching the server's CA list
user_pref("security.default_personal_cert", "Select Automatically");
user_pref("security.osclientcerts.autoload", false);
user_pref("security.enterprise_roots.enabled", false);
// first run, default browser, session restore, crash recovery
user_pref("browser.shell.checkDefaultBrowser", false);
user_pref("browser.startup.homepage_override.mstone", "ignore");
user_pref("browser.startup.page", 0);
user_pref("startup.homepage_welcome_url", "");
user_pref("startup.homepage_welcome_url.additional", "");
user_pref("browser.aboutwelcome.enabled", false);
user_pref("browser.newtabpage.enabled", false);
user_pref("browser.sessionstore.resume_from_crash", false);
user_pref("toolkit.startup.max_resumed_crashes", -1);
user_pref("browser.tabs.crashReporting.sendReport", false);
user_pref("browser.rights.3.shown", true);
user_pref("datareporting.policy.firstRunURL", "");
// updates, telemetry, studies
user_pref("app.update.enabled", false);
user_pref("app.update.auto", false);
user_pref("app.update.disabledForTesting", true);
user_pref("app.normandy.enabled", false);
user_pref("app.shield.optoutstudies.enabled", false);
user_pref("datareporting.healthreport.uploadEnabled", false);
user_pref("datareporting.policy.dataSubmissionEnabled", false);
user_pref("datareporting.usage.uploadEnabled", false);
user_pref("toolkit.telemetry.enabled", false);
user_pref("toolkit.telemetry.unified", false);
user_pref("toolkit.telemetry.archive.enabled", false);
user_pref("browser.ping-centre.telemetry", false);
user_pref("browser.discovery.enabled", false);
user_pref("extensions.update.enabled", false);
user_pref("extensions.getAddons.cache.enabled", false);
user_pref("extensions.blocklist.enabled", false);
user_pref("media.gmp-manager.url", "");
user_pref("media.gmp-gmpopenh264.enabled", false);
// background network
user_pref("network.captive-portal-service.enabled", false);
user_pref("network.connectivity-service.enabled", false);
user_pref("network.dns.disablePrefetch", true);
user_pref("network.prefetch-next", false);
user_pref("network.http.speculative-parallel-limit", 0);
user_pref("network.trr.mode", 5);
user_pref("network.http.http3.enable", false);
user_pref("services.settings.server", "http://127.0.0.1:9/");
user_pref("browser.safebrowsing.malware.enabled", false);
user_pref("browser.safebrowsing.phishing.enabled", false);
user_pref("browser.safebrowsing.downloads.enabled", false);
user_pref("browser.safebrowsing.downloads.remote.enabled", false);
user_pref("browser.safebrowsing.blockedURIs.enabled", false);
user_pref("browser.safebrowsing.provider.mozilla.updateURL", "");
user_pref("browser.safebrowsing.provider.google4.updateURL", "");
user_pref("security.OCSP.enabled", 0);
user_pref("security.remote_settings.crlite_filters.enabled", false);
user_pref("security.remote_settings.intermediates.enabled", false);
user_pref("security.certerrors.mitm.priming.enabled", false);
EOF
ok "user.js: Select Automatically; first-run, updates, telemetry, safe browsing off"

# Firefox is driven through Marionette (lib/marionette.py; --marionette on a free port): it
# loads the page and reports how the load ended, and it can log in to the token the way the
# certificate manager's "Log in" button does.
echo 'user_pref("marionette.port", 2828);' >>"$P/user.js"

# browse LABEL [login]: a fresh s_server (log $D/server-LABEL.log); Firefox loads
# https://127.0.0.1:PORT/ (page in $D/page-LABEL.html), after logging in to the token when asked
# to; module log $D/module-LABEL.log. Result in BROWSE_OUT / BROWSE_RC.
browse() {
  local label=$1 login=${2:-} mport ff args=()
  SRV_LOG="$D/server-$label.log"
  rm -f "$SRV_LOG" "$D/page-$label.html" "$D/module-$label.log"
  if ! s_server_start "$SRV_LOG"; then
    notok "$label: openssl s_server listening on 127.0.0.1" "$(cat "$SRV_LOG")"
    return 1
  fi
  mport=$(free_port)
  sed -i "s/^user_pref(\"marionette.port\", [0-9]*);/user_pref(\"marionette.port\", $mport);/" "$P/user.js"
  bg_start "$D/firefox-$label.log" env TESSERA_LOG=debug TESSERA_LOG_FILE="$D/module-$label.log" \
    timeout -k 5 80 "$FIREFOX" --headless --no-remote --marionette -remote-allow-system-access --profile "$P"
  ff=$BG_PID
  [ -n "$login" ] && args=(--login "$TOKEN" "$D/pinfile")
  BROWSE_OUT=$(timeout 70 python3 "$(dirname "$0")/lib/marionette.py" --port "$mport" --timeout "${BROWSE_TIMEOUT:-25}" \
    "${args[@]}" --get "https://127.0.0.1:$SRV_PORT/" --page-out "$D/page-$label.html" 2>&1)
  BROWSE_RC=$?
  bg_stop "$ff"
  bg_stop "$SRV_PID"
  printf '%s\n' "$BROWSE_OUT" >"$D/marionette-$label.out"
}

# page_shows LABEL CERT: the page s_server -www returned to the browser describes CERT as the
# client certificate
page_shows() { grep -q 'Client certificate' "$D/page-$1.html" 2>/dev/null && grep -Fq "$(cert_serial_hex "$2")" "$D/page-$1.html"; }

# the evidence for a failed TLS client authentication
explain() { # LABEL
  printf '# marionette: %s\n' "$(tr '\n' ' ' <"$D/marionette-$1.out")"
  printf '# s_server: %s\n' "$(grep -E '^depth=|:error:|Alert|description=' "$D/server-$1.log" | head -n 5 | tr '\n' ' ')"
  show_module_log "$D/module-$1.log" 12
}

# nothing_logged_in LABEL: the module log shows no C_Login and no PIN VERIFY during the run
nothing_logged_in() {
  [ -s "$D/module-$1.log" ] && ! grep -Eq 'C_Login|verify_pin|VERIFY' "$D/module-$1.log"
}

# saw_client_cert LABEL TITLE CERT.pem WHAT: after `browse LABEL`, the server's log names CERT
# (subject and serial), the client sent a CertificateVerify, and the page Firefox loaded shows
# CERT as the client certificate
saw_client_cert() {
  local label=$1 title=$2 cert=$3 what=$4
  run server_saw_cert "$SRV_LOG" "$cert"
  if [ "$RC" -eq 0 ]; then
    ok "$title: s_server log shows $what: 'depth=0 $(cert_subject "$cert")', serial $(cert_serial_hex "$cert")"
  else notok "$title: s_server log shows $what" "$OUT$(printf '\n'; explain "$label")"; fi
  expect_grep "$title: the handshake used TLS client authentication (CertificateVerify from the client)" \
    'CertificateVerify' cat "$SRV_LOG"
  if page_shows "$label" "$cert"; then ok "$title: the page Firefox loaded shows $what as the client certificate"
  else notok "$title: the page Firefox loaded shows $what" "$(tr '\n' ' ' <"$D/marionette-$label.out")"; fi
}

# no_pin_used LABEL TITLE: the run signed through the module, and nothing logged in
no_pin_used() {
  expect_grep "$2: the CertificateVerify was signed through the module (C_SignInit with the 9E key)" \
    'C_SignInit -> CKR_OK' cat "$D/module-$1.log"
  if nothing_logged_in "$1"; then ok "$2: no login and no PIN reached the module or the card (module log)"
  else notok "$2: no login and no PIN reached the module or the card" "$(grep -E 'C_Login|VERIFY' "$D/module-$1.log" | head -n 5)"; fi
}

# ---- run 1: no PIN ----------------------------------------------------------------------------------
# NSS's TLS client refuses to send records while the token that signed the client
# CertificateVerify "needs login" and is not logged in (ssl3_ClientAuthTokenPresent:
# PK11_NeedLogin && !PK11_IsLoggedIn -> SSL_ERROR_TOKEN_INSERTION_REMOVAL), whatever
# CKA_PRIVATE the key has. 9E is on a token without CKF_LOGIN_REQUIRED, so it goes through.
browse run1
saw_client_cert run1 "run 1 (no PIN)" "$D/card1.pem" "the card's 9E certificate"
no_pin_used run1 "run 1 (no PIN)"

# ---- run 2: the token logged in first (what the user does when Firefox asks for the PIN) -----------
browse run2 login
expect_grep "run 2: Firefox logs in to '$TOKEN' with the PIN (token login, PIN prompt answered)" \
  '"login": \{"found": true.*"ok": true, "loggedIn": true' cat "$D/marionette-run2.out"
saw_client_cert run2 "run 2 (logged in)" "$D/card1.pem" "the card's 9E certificate"

# ---- renewal: tessera import of a new key + certificate into 9E ---------------------------------
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$D/renew.key" 2>/dev/null
openssl pkey -in "$D/renew.key" -pubout -out "$D/renew.pub"
gate "test CA issues the renewed 9E certificate (new key, new subject and serial)" \
  apps_issue "$D" "$D/renew.pub" "/CN=Tessera Firefox Card Renewed/serialNumber=PNOEE-1000006/O=Tessera Interop" \
  "$D/client.ext" "$D/card2.der"
openssl x509 -inform DER -in "$D/card2.der" -out "$D/card2.pem"
gate "openssl pkcs12 -export: the renewed e-Cert (key + certificate + CA)" \
  openssl pkcs12 -export -inkey "$D/renew.key" -in "$D/card2.pem" -certfile "$D/ca.pem" \
  -name "Tessera renewed" -passout "file:$D/p12pass" -out "$D/renew.p12"
expect_ok "tessera import renew.p12 --slot 9e (password and PIN from files)" \
  "$TESSERA_BIN" --reader "$READER" --yes import "$D/renew.p12" --password-file "$D/p12pass" \
  --pin-file "$D/pinfile" --slot 9e
rm -f "$D/back2.der"
TA --read-object --type cert --id 04 -o "$D/back2.der" >/dev/null 2>&1
check "the card's 9E certificate (read through the module) is now the renewed one" cmp -s "$D/back2.der" "$D/card2.der"

# ---- run 3: same profile, the renewed certificate, no PIN ---------------------------------------
browse run3
saw_client_cert run3 "run 3 (renewed, no PIN)" "$D/card2.pem" "the renewed certificate"
if [ -s "$SRV_LOG" ] && ! grep -Fq "$(cert_serial_hex "$D/card1.pem")" "$SRV_LOG" &&
  ! grep -Fq "Card One" "$SRV_LOG"; then
  ok "run 3: the old certificate no longer appears in the server's log"
else notok "run 3: the old certificate no longer appears in the server's log" "$(grep -E '^depth=0' "$SRV_LOG")"; fi
no_pin_used run3 "run 3 (renewed, no PIN)"

apps_cleanup
stop_card
