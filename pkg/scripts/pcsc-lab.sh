#!/usr/bin/env bash
# pcsc-lab.sh — a private pcscd with a vsmartcard vpcd reader, isolated from any
# other pcscd on the machine (Debian 12, no systemd needed).
#
#   pcsc-lab.sh up DIR [PORT]   start pcscd; write DIR/env (source it to use the lab)
#   pcsc-lab.sh down DIR        stop everything started for DIR (pid files in DIR)
#   pcsc-lab.sh status DIR      print the readers the lab's pcscd lists
#
# How it is isolated: pcscd has its socket directory /run/pcscd hard-coded, so it runs
# in a private mount namespace (unshare -m) where /run/pcscd is a bind mount of
# DIR/run, with its own reader.conf.d (pcscd -c DIR/reader.conf.d) naming one vpcd
# reader on its own CHANNELID port. Clients reach it via PCSCLITE_CSOCK_NAME.
# The system pcscd (if any) and /etc/reader.conf.d are never touched.
#
# The vpcd driver *listens* on PORT (slot 0) and PORT+1 (slot 1); the card side
# (`tessera vcard serve FILE --vpcd 127.0.0.1:PORT`) connects to it.
# Reader names: "$LAB_READER_NAME 00 00" and "$LAB_READER_NAME 01 00".
#
# Env knobs: LAB_READER_NAME (default "Yubico YubiKey Virtual": a name that both
# yubico-piv-tool and ykcs11 accept), LAB_TIMEOUT (seconds to wait, default 20),
# LAB_APDU_LOG=1 (pcscd --debug --apdu: every APDU, PINs included, into DIR/pcscd.log).
set -euo pipefail

READER_NAME=${LAB_READER_NAME:-Yubico YubiKey Virtual}
TIMEOUT=${LAB_TIMEOUT:-20}
VPCD_DRIVER=/usr/lib/pcsc/drivers/serial/libifdvpcd.so

say() { echo "pcsc-lab: $*"; }
die() { echo "pcsc-lab: ERROR: $*" >&2; exit 1; }
usage() { echo "usage: $0 up DIR [PORT] | down DIR | status DIR" >&2; exit 2; }

# port_in_use PORT -> 0 when something listens on TCP PORT
port_in_use() {
  if command -v ss >/dev/null; then
    ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
    return
  fi
  # no iproute2: read the kernel's table (state 0A = LISTEN; port in hex)
  local hex
  hex=$(printf '%04X' "$1")
  cat /proc/net/tcp /proc/net/tcp6 2>/dev/null |
    awk -v p=":$hex" 'NR > 1 && $4 == "0A" && substr($2, length($2) - 4) == p { f = 1 } END { exit !f }'
}

pick_port() {
  local p i
  for i in $(seq 1 200); do
    # even offsets in [0, 2000): PORT and PORT+1 are both needed (two vpcd slots)
    p=$((35963 + 2 * (RANDOM % 1000)))
    if ! port_in_use "$p" && ! port_in_use "$((p + 1))"; then
      echo "$p"; return 0
    fi
  done
  return 1
}

# pid_alive PID -> 0 when the process exists and is not a zombie
pid_alive() {
  local st
  [ -r "/proc/$1/stat" ] || return 1
  st=$(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
  [ "$st" != Z ] && [ "$st" != X ]
}

# stop_pidfile FILE: TERM, wait up to 5 s, then KILL; removes FILE
stop_pidfile() {
  local f=$1 pid i
  [ -f "$f" ] || return 0
  pid=$(cat "$f" 2>/dev/null || true)
  rm -f "$f"
  case "$pid" in ''|*[!0-9]*) return 0 ;; esac
  pid_alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do pid_alive "$pid" || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  for i in $(seq 1 20); do pid_alive "$pid" || return 0; sleep 0.1; done
  say "warning: pid $pid (from $(basename "$f")) did not exit"
}

reader_listed() {
  PCSCLITE_CSOCK_NAME="$1/run/pcscd.comm" opensc-tool -l 2>/dev/null | grep -qF "$READER_NAME 00 00"
}

cmd_up() {
  local dir=$1 port=${2:-}
  command -v pcscd >/dev/null || die "pcscd not installed (run pkg/scripts/deps.sh)"
  command -v opensc-tool >/dev/null || die "opensc-tool not installed (run pkg/scripts/deps.sh)"
  [ -e "$VPCD_DRIVER" ] || die "$VPCD_DRIVER missing (package vsmartcard-vpcd)"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/pcscd.pid" ] && pid_alive "$(cat "$dir/pcscd.pid")"; then
    die "a lab is already running in $dir (pid $(cat "$dir/pcscd.pid")); run: $0 down $dir"
  fi
  if [ -z "$port" ]; then
    port=$(pick_port) || die "no free port pair found near 35963"
  else
    case "$port" in ''|*[!0-9]*) die "PORT must be a number: $port" ;; esac
    if port_in_use "$port" || port_in_use "$((port + 1))"; then
      die "port $port or $((port + 1)) is already in use"
    fi
  fi

  mkdir -p "$dir/run" "$dir/reader.conf.d"
  rm -f "$dir/run/"* "$dir/env"
  cat >"$dir/reader.conf.d/vpcd" <<EOF
FRIENDLYNAME "$READER_NAME"
DEVICENAME   /dev/null:$port
LIBPATH      $VPCD_DRIVER
CHANNELID    $port
EOF

  # unshare -m needs CAP_SYS_ADMIN: as root a plain mount namespace; otherwise a user
  # namespace where we are root (-r) gives one.
  local ns=(unshare -m --propagation private)
  [ "$(id -u)" -eq 0 ] || ns=(unshare -r -m --propagation private)
  local dbg=""
  [ "${LAB_APDU_LOG:-0}" = 1 ] && dbg="--debug --apdu"
  # No --fork: unshare execs sh, which execs pcscd, so $! is pcscd's pid.
  # shellcheck disable=SC2016
  "${ns[@]}" sh -c 'mkdir -p /run/pcscd && mount --bind "$1" /run/pcscd && exec pcscd -f -c "$2" $3' \
    sh "$dir/run" "$dir/reader.conf.d" "$dbg" </dev/null >"$dir/pcscd.log" 2>&1 &
  echo $! >"$dir/pcscd.pid"
  say "started pcscd pid $(cat "$dir/pcscd.pid") (log $dir/pcscd.log), vpcd ports $port,$((port + 1))"

  local deadline=$((SECONDS + TIMEOUT))
  until [ -S "$dir/run/pcscd.comm" ] && reader_listed "$dir"; do
    if ! pid_alive "$(cat "$dir/pcscd.pid")"; then
      cat "$dir/pcscd.log" >&2
      rm -f "$dir/pcscd.pid"
      die "pcscd exited during start-up"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      cat "$dir/pcscd.log" >&2
      stop_pidfile "$dir/pcscd.pid"
      die "reader '$READER_NAME 00 00' not listed after ${TIMEOUT}s"
    fi
    sleep 0.05
  done

  cat >"$dir/env" <<EOF
export PCSCLITE_CSOCK_NAME=$dir/run/pcscd.comm
export TESSERA_VPCD_PORT=$port
export TESSERA_LAB=$dir
export TESSERA_LAB_READER='$READER_NAME'
EOF
  say "up: reader '$READER_NAME 00 00'; env in $dir/env"
}

cmd_down() {
  local dir=$1 f
  [ -d "$dir" ] || { say "nothing to stop ($dir does not exist)"; return 0; }
  # card servers and other helpers first (they may hold the vpcd socket), pcscd last
  for f in "$dir"/*.pid; do
    [ -e "$f" ] || continue
    [ "$(basename "$f")" = pcscd.pid ] && continue
    stop_pidfile "$f"
  done
  stop_pidfile "$dir/pcscd.pid"
  rm -f "$dir/run/pcscd.comm" "$dir/run/pcscd.pid"
  say "down: $dir"
}

cmd_status() {
  local dir=$1
  PCSCLITE_CSOCK_NAME="$dir/run/pcscd.comm" opensc-tool -l
}

[ $# -ge 2 ] || usage
case "$1" in
  up) [ $# -le 3 ] || usage; cmd_up "$2" "${3:-}" ;;
  down) [ $# -eq 2 ] || usage; cmd_down "$2" ;;
  status) [ $# -eq 2 ] || usage; cmd_status "$2" ;;
  *) usage ;;
esac
