#!/usr/bin/env bash
# deps.sh — install what Tessera's build and test suite need on Debian 12, idempotently.
# Run as root (or as a user with sudo). Safe to run again: does nothing when all is there.
#   - Debian packages (apt-get update + install only when one is missing)
#   - the nightly Rust toolchain (for cargo-fuzz) when rustup can install it
#   - cargo-fuzz (cargo install --locked, only when missing)
set -euo pipefail

APT_PACKAGES=(
  pcscd libpcsclite-dev pkg-config vsmartcard-vpcd opensc yubico-piv-tool ykcs11
  libnss3-tools libengine-pkcs11-openssl gnutls-bin p11-kit pcsc-tools openssl
  firefox-esr openssh-server openssh-client
  help2man dpkg-dev gcc libp11-kit-dev
  time jq
)

say() { echo "deps: $*"; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "deps: ERROR: not root and no sudo" >&2; exit 1; }
  SUDO=(sudo)
fi

# 1. Debian packages
missing=()
for p in "${APT_PACKAGES[@]}"; do
  if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" != "install ok installed" ]; then
    missing+=("$p")
  fi
done
# the fuzz targets build libFuzzer (C++) through the cc crate
command -v c++ >/dev/null || missing+=(g++)
# tests/interop/lib/x509der.py (certificates signed by the card)
command -v python3 >/dev/null || missing+=(python3)
if [ ${#missing[@]} -eq 0 ]; then
  say "apt: all ${#APT_PACKAGES[@]} packages present"
else
  say "apt: installing ${missing[*]} (apt-get update first)"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
  say "apt: installed ${#missing[@]} package(s)"
fi

# 1b. pkcs11-provider (OpenSSL 3 provider; tests/interop/openssl-provider.sh) is not in
# bookworm main, only in bookworm-backports. Enable backports (apt gives them low priority:
# nothing else is taken from there) and install only this package from it.
if [ "$(dpkg-query -W -f='${Status}' pkcs11-provider 2>/dev/null || true)" != "install ok installed" ]; then
  BACKPORTS_LIST=/etc/apt/sources.list.d/bookworm-backports.list
  if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    say "apt: enabling bookworm-backports ($BACKPORTS_LIST) for pkcs11-provider"
    echo 'deb http://deb.debian.org/debian bookworm-backports main' | "${SUDO[@]}" tee "$BACKPORTS_LIST" >/dev/null
  fi
  say "apt: installing pkcs11-provider from bookworm-backports"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -t bookworm-backports pkcs11-provider >/dev/null
else
  say "apt: pkcs11-provider present"
fi

# 2. Rust: stable components used by the test command
command -v cargo >/dev/null || { echo "deps: ERROR: cargo not found (install Rust with rustup)" >&2; exit 1; }
if cargo fmt --version >/dev/null 2>&1 && cargo clippy --version >/dev/null 2>&1; then
  say "rust: cargo fmt and clippy present"
elif command -v rustup >/dev/null; then
  say "rust: adding rustfmt and clippy components"
  rustup component add rustfmt clippy
else
  echo "deps: ERROR: cargo fmt / cargo clippy missing and no rustup" >&2; exit 1
fi

# The demo (pkg/scripts/demo.sh) needs no fuzzing tools: SKIP_FUZZ_TOOLS=1 stops here.
if [ "${SKIP_FUZZ_TOOLS:-0}" = 1 ]; then
  say "fuzz tools: skipped (SKIP_FUZZ_TOOLS=1)"
  say "done"
  exit 0
fi

# 3. nightly toolchain (cargo fuzz needs it); absence is not fatal: the fuzz step SKIPs
if ! command -v rustup >/dev/null; then
  say "nightly: no rustup; fuzz step will SKIP"
elif rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  say "nightly: present ($(rustup run nightly rustc --version 2>/dev/null || echo '?'))"
elif rustup toolchain install nightly --profile minimal >/dev/null 2>&1; then
  say "nightly: installed with rustup"
else
  say "nightly: not present and rustup could not install it; fuzz step will SKIP"
fi

# 4. cargo-fuzz
if cargo fuzz --version >/dev/null 2>&1; then
  say "cargo-fuzz: present ($(cargo fuzz --version 2>/dev/null))"
else
  say "cargo-fuzz: installing with cargo install --locked (a few minutes)"
  cargo install cargo-fuzz --locked --quiet
  say "cargo-fuzz: installed ($(cargo fuzz --version 2>/dev/null))"
fi
say "done"
