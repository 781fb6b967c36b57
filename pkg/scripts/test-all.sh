#!/usr/bin/env bash
# test-all.sh — THE test command of Tessera:  bash pkg/scripts/test-all.sh
#
# Installs what it needs (deps.sh), checks formatting and lints, builds, runs the unit and
# integration tests, brings up a private pcscd + vpcd reader (pcsc-lab.sh), runs every
# tests/interop/*.sh against it, runs the benchmark, and fuzzes each cargo-fuzz target
# briefly. Stops everything it started. Ends with the line "N passed, M failed".
#
# Env knobs: FUZZ_SECONDS (per target, default 20), KEEP_LAB=1 (keep the lab dir),
#            SKIP_DEPS=1 (do not run deps.sh), SKIP_FUZZ=1.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
SCRIPTS="$ROOT/pkg/scripts"
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
export CARGO_TERM_PROGRESS_WHEN=never

PASSED=0
FAILED=0
SKIPPED=0
FAILED_NAMES=()
T0=$SECONDS
LAB=""

finish() {
  local rc=$?
  if [ -n "$LAB" ]; then
    bash "$SCRIPTS/pcsc-lab.sh" down "$LAB" >/dev/null 2>&1 || true
    if [ "$FAILED" -eq 0 ] && [ "${KEEP_LAB:-0}" != 1 ]; then
      rm -rf "$LAB"
    else
      echo "lab directory kept for inspection: $LAB"
    fi
  fi
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

# step NAME CMD...: run CMD with a header line and its wall time; count pass/fail.
step() {
  local name=$1 t rc
  shift
  echo
  echo "==> $name"
  t=$SECONDS
  set +e
  "$@"
  rc=$?
  set -e
  if [ "$rc" -eq 0 ]; then
    PASSED=$((PASSED + 1))
    echo "<== ok: $name ($((SECONDS - t))s)"
  else
    FAILED=$((FAILED + 1))
    FAILED_NAMES+=("$name")
    echo "<== FAILED (exit $rc): $name ($((SECONDS - t))s)"
  fi
  return "$rc"
}

skip() {
  SKIPPED=$((SKIPPED + 1))
  echo
  echo "==> $1"
  echo "<== SKIP: $1: $2"
}

summary() {
  echo
  echo "total wall time: $((SECONDS - T0))s"
  if [ "$FAILED" -gt 0 ]; then
    echo "failed steps:"
    printf '  - %s\n' "${FAILED_NAMES[@]}"
  fi
  if [ "$SKIPPED" -gt 0 ]; then
    echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
  else
    echo "$PASSED passed, $FAILED failed"
  fi
  [ "$FAILED" -eq 0 ]
}

# A failure of a step that everything after it needs: summarise and stop.
fatal_step() {
  step "$@" || { summary || true; exit 1; }
}

# ---- 1. dependencies, style, build, tests --------------------------------------------
if [ "${SKIP_DEPS:-0}" = 1 ]; then
  skip "deps.sh" "SKIP_DEPS=1"
else
  fatal_step "deps.sh" bash "$SCRIPTS/deps.sh"
fi
step "cargo fmt --check" cargo fmt --check || true
step "cargo clippy --all-targets -- -D warnings" cargo clippy --all-targets --quiet -- -D warnings || true
fatal_step "cargo build --release" cargo build --release

# ---- 2. a private pcscd + vpcd reader; tests that need it; interop; benchmark -------------
TESSERA_BIN="$ROOT/target/release/tessera"
export TESSERA_BIN
LAB=$(mktemp -d "${TMPDIR:-/tmp}/tessera-lab.XXXXXX")
if step "pcsc lab up" bash "$SCRIPTS/pcsc-lab.sh" up "$LAB"; then
  # shellcheck source=/dev/null
  . "$LAB/env"
  export LAB PCSCLITE_CSOCK_NAME TESSERA_VPCD_PORT
  # tests/pcsc_transport.rs fails instead of skipping when the lab is required
  step "cargo test --release" env TESSERA_REQUIRE_LAB=1 cargo test --release --no-fail-fast || true
  shopt -s nullglob
  for t in "$ROOT"/tests/interop/*.sh; do
    # each script starts (and stops) its own card server; the vpcd hangs with a hung
    # card side, so every script has a hard time limit
    step "interop $(basename "$t")" timeout --kill-after=10 600 bash "$t" || true
  done
  shopt -u nullglob
  if [ -f "$ROOT/examples/bench_getdata.rs" ]; then
    step "benchmark bench_getdata" timeout --kill-after=10 300 \
      cargo run --release --quiet --example bench_getdata || true
  else
    skip "benchmark bench_getdata" "examples/bench_getdata.rs not found"
  fi
  # PKCS#11 operations, APDUs counted at the card, beside opensc-pkcs11.so on the same card
  step "benchmark bench_pkcs11" timeout --kill-after=10 300 \
    cargo run --release --quiet --example bench_pkcs11 || true
else
  step "cargo test --release (no pcsc lab)" cargo test --release --no-fail-fast || true
  skip "interop and benchmark" "the pcsc lab did not start"
fi
# the Debian package: header check, contents, dpkg -i, doctor/register/p11-kit, dpkg --purge
step "package: build, inspect, install the .deb" timeout --kill-after=10 1200 bash "$SCRIPTS/check-deb.sh" || true

# ---- 3. fuzz smoke run ---------------------------------------------------------------
if [ "${SKIP_FUZZ:-0}" = 1 ]; then
  skip "fuzz" "SKIP_FUZZ=1"
elif [ ! -f "$ROOT/fuzz/Cargo.toml" ]; then
  skip "fuzz" "fuzz/Cargo.toml not found"
elif ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  skip "fuzz" "no nightly toolchain (rustup toolchain install nightly)"
elif ! cargo fuzz --version >/dev/null 2>&1; then
  skip "fuzz" "cargo-fuzz not installed (cargo install cargo-fuzz --locked)"
else
  targets=$(cargo +nightly fuzz list 2>/dev/null || true)
  if [ -z "$targets" ]; then
    step "fuzz: list targets" false || true
  else
    # build all targets once (one compile of the dependencies), then run each briefly
    if step "fuzz build" timeout 900 cargo +nightly fuzz build; then
      for target in $targets; do
        step "fuzz run $target (-max_total_time=$FUZZ_SECONDS)" timeout --kill-after=10 $((FUZZ_SECONDS + 120)) \
          cargo +nightly fuzz run "$target" -- -max_total_time="$FUZZ_SECONDS" -print_final_stats=0 || true
      done
    fi
  fi
fi

summary
