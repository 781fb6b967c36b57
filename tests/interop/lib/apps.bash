# Shared helpers for the application interop scripts (firefox.sh, smime.sh,
# openssl-provider.sh, openssh.sh, gnutls.sh). Sourced after lib/common.bash and lib/p11.bash
# (needs their WORK, run/ok/notok, MODULE, T, p11_make_ca).
#
# Background programs (TLS servers, sshd, a browser) run in their own process group
# (setsid) and are listed in APPS_PGIDS; they are all stopped when the script exits, whole
# groups at once (a browser's child processes included). Servers bind 127.0.0.1 only, on
# ports picked free at run time.

APPS_PGIDS=()

# port_listening PORT -> 0 when something listens on TCP PORT (no connection is made: a
# server started with -naccept 1 must not lose its one accept to a probe)
port_listening() {
  if command -v ss >/dev/null; then
    ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
    return
  fi
  local hex
  hex=$(printf '%04X' "$1")
  cat /proc/net/tcp /proc/net/tcp6 2>/dev/null |
    awk -v p=":$hex" 'NR > 1 && $4 == "0A" && substr($2, length($2) - 4) == p { f = 1 } END { exit !f }'
}

# free_port: a TCP port on 127.0.0.1 that nothing uses now
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_listen PORT SECONDS [PID]: wait until PORT listens (and PID, when given, still runs)
wait_listen() {
  local port=$1 deadline=$((SECONDS + $2)) pid=${3:-}
  until port_listening "$port"; do
    [ -n "$pid" ] && ! running "$pid" && return 1
    [ "$SECONDS" -ge "$deadline" ] && return 1
    sleep 0.1
  done
}

# bg_start LOG CMD...: CMD in the background in its own process group, output to LOG;
# its pid (= process group id) in BG_PID
bg_start() {
  local log=$1; shift
  setsid "$@" </dev/null >>"$log" 2>&1 &
  BG_PID=$!
  APPS_PGIDS+=("$BG_PID")
}

# bg_stop PGID: SIGTERM the process group, SIGKILL what is left after 5 s
bg_stop() {
  local g=$1 i
  kill -TERM -- "-$g" 2>/dev/null || return 0
  for i in $(seq 1 50); do
    kill -0 -- "-$g" 2>/dev/null || break
    # a group whose members are all zombies (PID 1 here does not reap) is gone for us
    pgrep -g "$g" 2>/dev/null | while read -r p; do running "$p" && echo x; done | grep >/dev/null x || break
    sleep 0.1
  done
  kill -KILL -- "-$g" 2>/dev/null
  wait "$g" 2>/dev/null
  return 0
}

apps_cleanup() {
  local g
  for g in "${APPS_PGIDS[@]}"; do bg_stop "$g"; done
  APPS_PGIDS=()
}

# run the cleanup before common.bash's finish (which must see the script's exit status)
apps_exit() {
  local rc=$?
  apps_cleanup
  (exit "$rc")
  finish
}
trap apps_exit EXIT

# ---- certificates ----------------------------------------------------------------------------
# rand_serial: 16 random bytes in hex, first byte 10..7f (positive, no DER padding: openssl
# prints it as the same colon-separated hex every time)
rand_serial() {
  local s
  s=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  printf '%02x%s' $((16 + 16#${s:0:2} % 96)) "${s:2}"
}

# apps_issue DIR PUBPEM SUBJECT EXTFILE OUT.der [SERIALHEX]: a certificate for PUBPEM issued by
# DIR's test CA with the extensions in EXTFILE (openssl x509 -extfile syntax)
apps_issue() {
  local dir=$1 pub=$2 subj=$3 ext=$4 out=$5 serial=${6:-$(rand_serial)}
  openssl x509 -new -subj "$subj" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -force_pubkey "$pub" \
    -days 30 -sha256 -extfile "$ext" -set_serial "0x$serial" -outform DER -out "$out"
}

# apps_server_cert DIR: DIR/srv.key + DIR/srv.pem, a TLS server certificate for 127.0.0.1
# (and localhost) issued by DIR's test CA
apps_server_cert() {
  local dir=$1
  printf '%s\n' 'subjectAltName=IP:127.0.0.1,DNS:localhost' 'extendedKeyUsage=serverAuth' \
    'keyUsage=critical,digitalSignature' 'basicConstraints=critical,CA:FALSE' \
    'subjectKeyIdentifier=hash' 'authorityKeyIdentifier=keyid' >"$dir/srv.ext"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$dir/srv.key" \
    -subj "/CN=127.0.0.1" -out "$dir/srv.csr" 2>/dev/null &&
    openssl x509 -req -in "$dir/srv.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -days 30 -sha256 \
      -set_serial "0x$(rand_serial)" -extfile "$dir/srv.ext" -out "$dir/srv.pem" 2>/dev/null
}

# cert_subject CERT: the subject as openssl's verify callback prints it ("CN = x, O = y")
cert_subject() { openssl x509 -in "$1" -noout -subject -nameopt oneline 2>/dev/null | sed 's/^subject= *//'; }
# cert_serial_hex CERT: the serial as `openssl x509 -text` prints a long one (aa:bb:...)
cert_serial_hex() {
  openssl x509 -in "$1" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f' | sed -E 's/(..)/\1:/g; s/:$//'
}

# ---- TLS server --------------------------------------------------------------------------------
# s_server_start LOG ARGS...: openssl s_server on 127.0.0.1:<free port> with DIR's server
# certificate ($D/srv.pem), asking for a client certificate from the test CA (-Verify 1),
# answering HTTP (-www) and logging each handshake with -trace (the client certificate in
# full: subject and serial). Port in SRV_PORT, process group in SRV_PID.
s_server_start() {
  local log=$1 i; shift
  for i in 1 2 3; do
    SRV_PORT=$(free_port)
    bg_start "$log" timeout 120 openssl s_server -accept "127.0.0.1:$SRV_PORT" \
      -cert "$D/srv.pem" -key "$D/srv.key" -CAfile "$D/ca.pem" -Verify 1 -verify_return_error \
      -www -trace "$@"
    SRV_PID=$BG_PID
    wait_listen "$SRV_PORT" 10 "$SRV_PID" && return 0
    bg_stop "$SRV_PID"
  done
  return 1
}

# server_saw_cert LOG CERT: the s_server log shows CERT as the verified client certificate
# (the verify callback's "depth=0 SUBJECT" line and, from -trace, its serial number). Prints
# what it found when it did not.
server_saw_cert() {
  local log=$1 cert=$2 subj ser
  subj=$(cert_subject "$cert")
  ser=$(cert_serial_hex "$cert")
  if grep -Fqx "depth=0 $subj" "$log" && grep -Fq "$ser" "$log"; then return 0; fi
  echo "wanted 'depth=0 $subj' and serial $ser in $log; it has:"
  grep -E '^depth=|verify (error|return)|:error:|Serial Number' -A1 "$log" | head -n 30
  return 1
}

# ---- module debug log ------------------------------------------------------------------------
# show_module_log FILE [N]: the last N (default 40) lines of the module's debug log, shortened
show_module_log() {
  [ -s "$1" ] || { echo "# (no module log in $1)"; return 0; }
  echo "# module debug log ($1), last ${2:-40} lines:"
  tail -n "${2:-40}" "$1" |
    sed -E 's/^\[tessera [0-9.]+ pid [0-9]+ ThreadId\([0-9]+\) [A-Z]+ tessera_pkcs11::/[/' | sed 's/^/#   /'
}
