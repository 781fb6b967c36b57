#!/usr/bin/env bash
# build-deb.sh — build Tessera's Debian package:  bash pkg/scripts/build-deb.sh
#
# 1. cargo build --release (the module, the tessera binary; build.rs refreshes the header);
# 2. generates into target/pkg/: the man page (help2man from --help, with every command's
#    help), bash/zsh/fish completions (tessera completions SHELL), the pkg-config file;
# 3. cargo deb --no-build (installs cargo-deb with cargo install --locked when missing);
# 4. prints the .deb's path as its last line.
# The package contents are declared in Cargo.toml, [package.metadata.deb].
# Needs: help2man (Debian package help2man), dpkg-dev (dpkg-shlibdeps, for Depends: $auto).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
export CARGO_TERM_PROGRESS_WHEN=never
say() { echo "build-deb: $*" >&2; }

for tool in help2man dpkg-shlibdeps gzip; do
  command -v "$tool" >/dev/null || {
    say "ERROR: $tool not found (bash pkg/scripts/deps.sh installs it)"
    exit 1
  }
done

say "cargo build --release"
cargo build --release --quiet >&2

TARGET_DIR=$(cargo metadata --no-deps --format-version 1 2>/dev/null |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null || echo "$ROOT/target")
BIN="$TARGET_DIR/release/tessera"
[ -x "$BIN" ] || { say "ERROR: $BIN was not built"; exit 1; }

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
OUT="$ROOT/target/pkg"
rm -rf "$OUT"
mkdir -p "$OUT/completions"

# Reproducible dates (help2man and gzip honour these).
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH
# The help must not show values from this shell's environment ([env: TESSERA_VCARD=…]).
clean_env=(env -u TESSERA_VCARD -u TESSERA_LOG -u TESSERA_LOG_FILE)

# ---- man page: help2man from --help/--version, plus one section with each command's help ---
commands=$("${clean_env[@]}" "$BIN" --help |
  awk '/^Commands:/{on=1; next} on && /^[^ ]/{on=0} on && NF {print $1}' | grep -vx help)
[ -n "$commands" ] || { say "ERROR: no commands found in tessera --help"; exit 1; }
# The global options (tessera --help) are shown once, not again under every command.
global_opts=$("${clean_env[@]}" "$BIN" --help |
  awk '/^Options:/{on=1; next} on && /^[^ ]/{on=0} on && NF' | grep -v -e '--help' -e '--version' |
  tr -s ' ')
{
  echo "[COMMANDS]"
  echo "Each command also takes the global options above."
  for c in $commands; do
    echo ".SS \"tessera $c\""
    echo ".nf"
    # roff: a leading dot or quote would start a request; backslashes need escaping
    "${clean_env[@]}" "$BIN" "$c" --help |
      GLOBALS="$global_opts" awk '
        BEGIN { n = split(ENVIRON["GLOBALS"], g, "\n"); for (i = 1; i <= n; i++) skip[g[i]] = 1 }
        { k = $0; gsub(/ +/, " ", k); if (!(k in skip)) print }' |
      sed -e 's/\\/\\e/g' -e "s/^\([.']\)/\\\\\&\1/"
    echo ".fi"
  done
  cat <<'EOF'
[FILES]
.TP
.I /usr/lib/x86_64-linux-gnu/pkcs11/libtessera_pkcs11.so
the PKCS#11 module
.TP
.I /usr/share/p11-kit/modules/tessera.module
its p11-kit registration (GnuTLS, p11tool)
.TP
.I /etc/firefox/policies/policies.json, /etc/thunderbird/policies/policies.json
enterprise policies that add the module as the security device "Tessera PIV"
.TP
.I /usr/include/tessera/tessera_pkcs11.h
the module's C header (pkg-config tessera-pkcs11)
[ENVIRONMENT]
.TP
.B TESSERA_VCARD
virtual card state files (a.json:b.json), used in-process
.TP
.B TESSERA_LOG, TESSERA_LOG_FILE
the module's debug log level and file
[SEE ALSO]
.BR p11-kit (8),
.BR modutil (1),
.BR pkcs11-tool (1)
EOF
} >"$OUT/commands.h2m"
"${clean_env[@]}" help2man --no-info --section=1 --name="smart-card middleware: control manager for PIV e-Cert cards" \
  --include="$OUT/commands.h2m" --output="$OUT/tessera.1" "$BIN"
gzip -9 -n -c "$OUT/tessera.1" >"$OUT/tessera.1.gz"
say "man page: target/pkg/tessera.1.gz"

# ---- shell completions ------------------------------------------------------------------
"${clean_env[@]}" "$BIN" completions bash >"$OUT/completions/tessera"
"${clean_env[@]}" "$BIN" completions zsh >"$OUT/completions/_tessera"
"${clean_env[@]}" "$BIN" completions fish >"$OUT/completions/tessera.fish"
for f in tessera _tessera tessera.fish; do
  [ -s "$OUT/completions/$f" ] || { say "ERROR: empty completion file $f"; exit 1; }
done
say "completions: target/pkg/completions/{tessera,_tessera,tessera.fish}"

# ---- pkg-config file --------------------------------------------------------------------
sed "s/@VERSION@/$VERSION/" pkg/tessera-pkcs11.pc.in >"$OUT/tessera-pkcs11.pc"

# ---- the package ------------------------------------------------------------------------
if ! cargo deb --version >/dev/null 2>&1; then
  say "cargo-deb: installing with cargo install --locked (a minute or two)"
  cargo install cargo-deb --locked --quiet >&2
fi
# --strip: the release profile keeps line tables (debug = 1) for backtraces in development;
# the package ships stripped binaries.
say "cargo deb --no-build ($(cargo deb --version 2>/dev/null))"
deb=$(cargo deb --no-build --strip --quiet | tail -n1)
[ -f "$deb" ] || { say "ERROR: cargo deb did not report a .deb (got: $deb)"; exit 1; }
echo "$deb"
