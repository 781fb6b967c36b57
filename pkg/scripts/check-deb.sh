#!/usr/bin/env bash
# check-deb.sh — build Tessera's .deb, inspect it, install it, use it, remove it:
#   bash pkg/scripts/check-deb.sh          (root: it runs dpkg -i and dpkg --purge)
#
#  1. the C header: the checked-in include/tessera_pkcs11.h equals what the build wrote
#     (git), it compiles against p11-kit's PKCS#11 header (and a PKCS#11 3.x header when
#     one is at hand), and it declares exactly the C_* symbols the module exports;
#  2. the package (pkg/scripts/build-deb.sh): every expected path with its mode, the control
#     fields (Depends), the p11-kit module file, the Firefox/Thunderbird policy files and the
#     pkg-config file name a module path that the package holds, the header equals include/;
#  3. installed (dpkg -i): a C program built with `pkg-config --cflags tessera-pkcs11`
#     against the installed header and module calls it; `tessera register nss` (HOME in a
#     temporary directory) registers the installed module by default; `tessera doctor`
#     with a virtual card reports the module loadable and registered; `p11-kit list-modules`
#     shows it with the virtual card's token;
#  4. dpkg --purge leaves nothing behind (policy files that were there before are restored).
# Prints `ok - …` / `not ok - …` per check; exits non-zero when one failed.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 1
export CARGO_TERM_PROGRESS_WHEN=never LC_ALL=C

TRIPLET=x86_64-linux-gnu
MODULE=/usr/lib/$TRIPLET/pkcs11/libtessera_pkcs11.so
POLICIES=(/etc/firefox/policies/policies.json /etc/thunderbird/policies/policies.json)
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)

N_OK=0
N_FAIL=0
ok() { N_OK=$((N_OK + 1)); echo "ok - $*"; }
not_ok() { N_FAIL=$((N_FAIL + 1)); echo "not ok - $*"; }
# check DESCRIPTION CMD...: ok when CMD succeeds; its output is shown when it fails.
check() {
  local what=$1 out
  shift
  if out=$("$@" 2>&1); then
    ok "$what"
  else
    not_ok "$what"
    [ -n "$out" ] && sed 's/^/#   /' <<<"$out" | head -n 40
  fi
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tessera-deb.XXXXXX")
INSTALLED=0
PREINSTALLED=0
BACKUP="$WORK/policies-backup"
cleanup() {
  if [ "$INSTALLED" = 1 ] && [ "$PREINSTALLED" = 0 ]; then
    dpkg --purge tessera >/dev/null 2>&1 || true
  fi
  restore_policies
  rm -rf "$WORK"
}
# Policy files that existed before the install (not from this package) come back after it.
restore_policies() {
  local f
  for f in "${POLICIES[@]}"; do
    if [ -f "$BACKUP$f" ]; then
      mkdir -p "$(dirname "$f")"
      mv -f "$BACKUP$f" "$f"
    fi
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- 1. the C header ------------------------------------------------------------------
# build-deb.sh builds first (build.rs refreshes include/); do that before looking at git.
echo "# building the package (pkg/scripts/build-deb.sh)"
if DEB=$(bash pkg/scripts/build-deb.sh 2>"$WORK/build-deb.log" | tail -n1) && [ -f "$DEB" ]; then
  ok "build-deb.sh built $(basename "$DEB")"
else
  not_ok "build-deb.sh built a .deb"
  sed 's/^/#   /' "$WORK/build-deb.log" | tail -n 40
  echo "# $N_OK ok, $N_FAIL not ok"
  exit 1
fi
TARGET_DIR=$(cargo metadata --no-deps --format-version 1 2>/dev/null |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null || echo "$ROOT/target")
BUILT_MODULE="$TARGET_DIR/release/libtessera_pkcs11.so"

if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  if ! git ls-files --error-unmatch include/tessera_pkcs11.h >/dev/null 2>&1; then
    not_ok "include/tessera_pkcs11.h is checked in (commit the header that cargo build writes)"
  else
    check "include/tessera_pkcs11.h is up to date (the build changed nothing; else commit what cargo build wrote)" \
      git diff --exit-code --stat -- include/tessera_pkcs11.h
  fi
else
  echo "# not a git checkout: cannot compare include/tessera_pkcs11.h with the committed one"
fi

P11KIT_CFLAGS=$(pkg-config --cflags p11-kit-1 2>/dev/null || echo "-I/usr/include/p11-kit-1")
# shellcheck disable=SC2086  # word splitting of the flags is intended
check "the header compiles as C (gcc -std=c99 -pedantic) with p11-kit's pkcs11.h" \
  gcc -std=c99 -pedantic -Wall -Wextra -Werror -fsyntax-only $P11KIT_CFLAGS -x c include/tessera_pkcs11.h
# shellcheck disable=SC2086
check "the header compiles as C++ with p11-kit's pkcs11.h" \
  g++ -Wall -Wextra -Werror -fsyntax-only $P11KIT_CFLAGS -x c++ include/tessera_pkcs11.h
# A PKCS#11 3.x header (cryptoki-sys vendors one) declares C_GetInterface and friends too, so
# compiling against it checks those signatures as well.
OASIS_H=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -path '*/cryptoki-sys-*/vendor/pkcs11.h' 2>/dev/null | sort | tail -n1)
if [ -n "$OASIS_H" ]; then
  printf '#include "pkcs11.h"\n#define TESSERA_PKCS11_NO_INCLUDE\n#include "tessera_pkcs11.h"\n' >"$WORK/oasis.c"
  check "the header agrees with a PKCS#11 3.x pkcs11.h ($(basename "$(dirname "$(dirname "$OASIS_H")")"))" \
    gcc -Wall -Wextra -Werror -fsyntax-only -I"$(dirname "$OASIS_H")" -Iinclude "$WORK/oasis.c"
else
  echo "# no PKCS#11 3.x header found in the cargo registry: skipped that compile"
fi

nm -D --defined-only "$BUILT_MODULE" | awk '$3 ~ /^C_/ {print $3}' | sort >"$WORK/exported"
grep -o '^CK_RV C_[A-Za-z]*' include/tessera_pkcs11.h | cut -d' ' -f2 | sort >"$WORK/declared"
if [ -s "$WORK/exported" ] && cmp -s "$WORK/exported" "$WORK/declared"; then
  ok "the header declares exactly the $(wc -l <"$WORK/exported") C_* functions the module exports"
else
  not_ok "the header declares exactly the C_* functions the module exports"
  diff "$WORK/exported" "$WORK/declared" | sed 's/^/#   /' | head -n 20
fi

# ---- 2. the package -------------------------------------------------------------------
dpkg-deb -c "$DEB" | awk '{print $1, $6}' | sed 's| \./| /|' >"$WORK/contents"
# path and mode
EXPECTED=(
  "-rw-r--r-- $MODULE"
  "-rwxr-xr-x /usr/bin/tessera"
  "-rw-r--r-- /usr/share/p11-kit/modules/tessera.module"
  "-rw-r--r-- /etc/firefox/policies/policies.json"
  "-rw-r--r-- /etc/thunderbird/policies/policies.json"
  "-rw-r--r-- /usr/include/tessera/tessera_pkcs11.h"
  "-rw-r--r-- /usr/lib/$TRIPLET/pkgconfig/tessera-pkcs11.pc"
  "-rw-r--r-- /usr/share/man/man1/tessera.1.gz"
  "-rw-r--r-- /usr/share/bash-completion/completions/tessera"
  "-rw-r--r-- /usr/share/zsh/vendor-completions/_tessera"
  "-rw-r--r-- /usr/share/fish/vendor_completions.d/tessera.fish"
  "-rw-r--r-- /usr/share/doc/tessera/README.md"
  "-rw-r--r-- /usr/share/doc/tessera/copyright"
)
missing=()
for e in "${EXPECTED[@]}"; do
  grep -qxF -e "$e" "$WORK/contents" || missing+=("$e")
done
if [ ${#missing[@]} -eq 0 ]; then
  ok "dpkg-deb -c: all ${#EXPECTED[@]} expected files, with their modes"
else
  not_ok "dpkg-deb -c: missing or wrong mode: ${missing[*]}"
fi

field() { dpkg-deb -f "$DEB" "$1"; }
check "control: Package tessera, Version $VERSION-1, Architecture amd64" \
  test "$(field Package) $(field Version) $(field Architecture)" = "tessera $VERSION-1 amd64"
depends=$(field Depends)
if grep -qw pcscd <<<"$depends" && grep -qw libpcsclite1 <<<"$depends" && grep -qw libc6 <<<"$depends"; then
  ok "control: Depends has pcscd, libpcsclite1, libc6 ($depends)"
else
  not_ok "control: Depends has pcscd, libpcsclite1, libc6 (got: $depends)"
fi
dpkg-deb --ctrl-tarfile "$DEB" | tar -xO ./conffiles >"$WORK/conffiles" 2>/dev/null
check "control: both policy files are conffiles" \
  diff <(sort "$WORK/conffiles") <(printf '%s\n' "${POLICIES[@]}" | sort)

X="$WORK/x"
dpkg-deb -x "$DEB" "$X"
p11kit_module=$(sed -n 's/^module:[[:space:]]*//p' "$X/usr/share/p11-kit/modules/tessera.module")
check "p11-kit module file names $MODULE, which the package holds" \
  test "$p11kit_module" = "$MODULE" -a -f "$X$p11kit_module"
for f in "${POLICIES[@]}"; do
  # shellcheck disable=SC2016
  check "$f: valid JSON, SecurityDevices.Add[\"Tessera PIV\"] = $MODULE (in the package)" \
    python3 -c '
import json, os, sys
p = json.load(open(sys.argv[1]))["policies"]["SecurityDevices"]["Add"]
assert p == {"Tessera PIV": sys.argv[2]}, p
assert os.path.isfile(sys.argv[3] + sys.argv[2]), "module not in the package"
' "$X$f" "$MODULE" "$X"
done
check "the packaged header equals include/tessera_pkcs11.h" \
  cmp "$X/usr/include/tessera/tessera_pkcs11.h" include/tessera_pkcs11.h
pc() { PKG_CONFIG_PATH="$X/usr/lib/$TRIPLET/pkgconfig" PKG_CONFIG_LIBDIR=/nonexistent pkg-config "$@" tessera-pkcs11; }
check "pkg-config: module=$MODULE (in the package), version $VERSION, includedir holds the header" \
  test "$(pc --variable=module) $(pc --modversion)" = "$MODULE $VERSION" \
  -a -f "$X$MODULE" -a -f "$X$(pc --variable=includedir)/tessera_pkcs11.h"
check "man page: gzip intact, tessera(1) with the commands section" \
  bash -c "zcat '$X/usr/share/man/man1/tessera.1.gz' | grep -q '^\.TH TESSERA \"1\"' &&
           zcat '$X/usr/share/man/man1/tessera.1.gz' | grep -q 'tessera doctor'"
check "completions: bash, zsh and fish scripts for tessera" \
  bash -c "grep -q 'complete .*tessera' '$X/usr/share/bash-completion/completions/tessera' &&
           grep -q '^#compdef tessera' '$X/usr/share/zsh/vendor-completions/_tessera' &&
           grep -q '^complete -c tessera' '$X/usr/share/fish/vendor_completions.d/tessera.fish'"
# (.debug_gdb_scripts is not debug information: rustc adds it to every binary)
check "the packaged module and binary are stripped (no .symtab, no DWARF)" \
  bash -c "! readelf -SW '$X$MODULE' '$X/usr/bin/tessera' | grep -E '\.symtab|\.debug_(info|line|str)'"

# ---- 3. install and use -----------------------------------------------------------------
if [ "$(id -u)" -ne 0 ]; then
  echo "# not root: install checks skipped"
  echo "# $N_OK ok, $N_FAIL not ok"
  [ "$N_FAIL" -eq 0 ]
  exit
fi
if [ "$(dpkg-query -W -f='${Status}' tessera 2>/dev/null)" = "install ok installed" ]; then
  PREINSTALLED=1
  echo "# tessera was installed before this check: it is upgraded and left installed"
fi
mkdir -p "$BACKUP"
for f in "${POLICIES[@]}"; do
  if [ -f "$f" ] && ! dpkg -S "$f" >/dev/null 2>&1; then
    mkdir -p "$BACKUP$(dirname "$f")"
    mv "$f" "$BACKUP$f"
    echo "# moved the existing $f aside; it is put back at the end"
  fi
done

if out=$(DEBIAN_FRONTEND=noninteractive dpkg -i "$DEB" 2>&1); then
  INSTALLED=1
  ok "dpkg -i $(basename "$DEB")"
else
  not_ok "dpkg -i $(basename "$DEB")"
  sed 's/^/#   /' <<<"$out" | tail -n 20
  echo "# $N_OK ok, $N_FAIL not ok"
  exit 1
fi
check "installed: /usr/bin/tessera --version is $VERSION" \
  test "$(/usr/bin/tessera --version)" = "tessera $VERSION"
check "installed: the module's libraries all resolve (ldd)" \
  bash -c "ldd '$MODULE' && ! ldd '$MODULE' | grep -q 'not found'"
for f in "${POLICIES[@]}"; do
  check "installed: $f is the package's" cmp "$f" pkg/firefox/policies.json
done

# A C program against the installed header and pkg-config file, linked to the installed module.
cat >"$WORK/use.c" <<'EOF'
#include <stdio.h>
#include <string.h>
#include <tessera_pkcs11.h>

int main(void) {
    CK_FUNCTION_LIST *list = NULL;
    CK_INTERFACE *iface = NULL;
    CK_INFO info;
    if (C_GetFunctionList(&list) != CKR_OK || list == NULL || list->C_GetInfo != C_GetInfo)
        return 1;
    if (C_GetInterface(NULL, NULL, &iface, 0) != CKR_OK || iface == NULL ||
        strcmp((const char *)iface->pInterfaceName, "PKCS 11") != 0 ||
        ((CK_VERSION *)iface->pFunctionList)->major != 3)
        return 2;
    if (C_Initialize(NULL) != CKR_OK || C_GetInfo(&info) != CKR_OK)
        return 3;
    if (memcmp(info.manufacturerID, TESSERA_PKCS11_MANUFACTURER,
               strlen(TESSERA_PKCS11_MANUFACTURER)) != 0 ||
        info.libraryVersion.major != TESSERA_PKCS11_VERSION_MAJOR ||
        info.libraryVersion.minor != TESSERA_PKCS11_VERSION_MINOR)
        return 4;
    C_Finalize(NULL);
    printf("%s %s: %.32s\n", TESSERA_PKCS11_MODULE_FILE, TESSERA_PKCS11_VERSION,
           (const char *)info.libraryDescription);
    return 0;
}
EOF
cflags=$(pkg-config --cflags tessera-pkcs11 2>&1 | sed 's/ *$//')
# shellcheck disable=SC2086
if gcc -Wall -Wextra -Werror $cflags -o "$WORK/use" "$WORK/use.c" "$MODULE" -Wl,-rpath,"$(dirname "$MODULE")" 2>"$WORK/cc.log" &&
  out=$(env -u TESSERA_VCARD "$WORK/use" 2>&1 | sed 's/ *$//'); then
  ok "a C program built with pkg-config --cflags tessera-pkcs11 ($cflags) calls the module ($out)"
else
  not_ok "a C program built with pkg-config --cflags tessera-pkcs11 calls the module"
  sed 's/^/#   /' "$WORK/cc.log" | head -n 20
  [ -x "$WORK/use" ] && echo "#   exit status of the program: $(env -u TESSERA_VCARD "$WORK/use" >/dev/null 2>&1; echo $?)"
fi

# The manager, as a user would run it: a home of its own, a virtual card.
export HOME="$WORK/home"
unset XDG_CONFIG_HOME TESSERA_LOG TESSERA_LOG_FILE
mkdir -p "$HOME/.pki/nssdb"
CARD="$WORK/card.json"
check "tessera vcard init (a virtual card)" /usr/bin/tessera vcard init "$CARD"
check "certutil -N: an empty NSS database in ~/.pki/nssdb" \
  certutil -N --empty-password -d "sql:$HOME/.pki/nssdb"
if out=$(/usr/bin/tessera register nss 2>&1) && grep -qF "$MODULE" <<<"$out" &&
  grep -qF "$MODULE" "$HOME/.pki/nssdb/pkcs11.txt"; then
  ok "tessera register nss: the installed module by default, in ~/.pki/nssdb/pkcs11.txt"
else
  not_ok "tessera register nss: the installed module by default, in ~/.pki/nssdb/pkcs11.txt"
  sed 's/^/#   /' <<<"$out" | head -n 20
fi
# Firefox ESR applies the policy file at start-up: it adds the module to the profile's NSS
# database, where `tessera doctor` then finds it.
FX_PROFILE=""
if command -v firefox-esr >/dev/null; then
  FX_PROFILE="$HOME/.mozilla/firefox/check.default-esr"
  mkdir -p "$FX_PROFILE"
  timeout --kill-after=5 120 firefox-esr --headless --no-remote --profile "$FX_PROFILE" \
    --screenshot "$WORK/firefox.png" about:blank >"$WORK/firefox.log" 2>&1
  if grep -qxF "library=$MODULE" "$FX_PROFILE/pkcs11.txt" 2>/dev/null &&
    grep -qxF "name=Tessera PIV" "$FX_PROFILE/pkcs11.txt"; then
    ok "firefox-esr (headless, new profile) loads the module from the policy file as \"Tessera PIV\""
  else
    not_ok "firefox-esr (headless, new profile) loads the module from the policy file"
    sed 's/^/#   /' "$WORK/firefox.log" "$FX_PROFILE/pkcs11.txt" 2>/dev/null | tail -n 20
  fi
else
  echo "# firefox-esr not installed: the policy file was checked, not applied"
fi

/usr/bin/tessera --vcard "$CARD" --json doctor --module "$MODULE" >"$WORK/doctor.json" 2>"$WORK/doctor.err"
doctor_rc=$?
/usr/bin/tessera --vcard "$CARD" doctor --module "$MODULE" 2>&1 | sed 's/^/#   doctor: /'
# shellcheck disable=SC2016
check "tessera doctor --module $MODULE: module ok (loads, with the virtual card's slot)" \
  python3 -c '
import json, re, sys
checks = json.load(open(sys.argv[1]))
m = [c for c in checks if c["name"] == "module"]
assert m and m[0]["level"] == "ok", m
assert m[0]["message"].startswith(sys.argv[2] + " loads"), m[0]["message"]
assert re.search(r", [1-9][0-9]* with a token", m[0]["message"]), m[0]["message"]
' "$WORK/doctor.json" "$MODULE"
# shellcheck disable=SC2016
check "tessera doctor: ~/.pki/nssdb has the module registered" \
  python3 -c '
import json, sys
checks = json.load(open(sys.argv[1]))
n = [c for c in checks if c["name"] == "nss " + sys.argv[2]]
assert n and n[0]["level"] == "ok" and sys.argv[3] in n[0]["message"], n or checks
' "$WORK/doctor.json" "$HOME/.pki/nssdb" "$MODULE"
if [ -n "$FX_PROFILE" ]; then
  # shellcheck disable=SC2016
  check "tessera doctor: the Firefox profile has the module registered (by the policy)" \
    python3 -c '
import json, sys
checks = json.load(open(sys.argv[1]))
n = [c for c in checks if c["name"] == "firefox " + sys.argv[2]]
assert n and n[0]["level"] == "ok" and sys.argv[3] in n[0]["message"], n or checks
' "$WORK/doctor.json" "$FX_PROFILE" "$MODULE"
fi
check "tessera doctor: no check failed (exit status $doctor_rc)" test "$doctor_rc" -eq 0

if out=$(TESSERA_VCARD="$CARD" p11-kit list-modules 2>&1) &&
  grep -q '^tessera: ' <<<"$out" &&
  grep -qF "$(sed -n 's/^#define TESSERA_PKCS11_LIBRARY_DESCRIPTION "\(.*\)"$/\1/p' include/tessera_pkcs11.h)" <<<"$out"; then
  ok "p11-kit list-modules: tessera, with its library description"
  token=$(awk '/^tessera: /{on=1; next} /^[^ ]/{on=0} on && /token:/{sub(/^ *token: */, ""); print; exit}' <<<"$out")
  if [ -n "$token" ]; then
    ok "p11-kit list-modules: the virtual card's token ($token)"
  else
    not_ok "p11-kit list-modules: the virtual card's token"
    sed 's/^/#   /' <<<"$out" | head -n 40
  fi
else
  not_ok "p11-kit list-modules: tessera, with its library description"
  sed 's/^/#   /' <<<"$out" | head -n 40
fi

# ---- 4. remove ----------------------------------------------------------------------------
if [ "$PREINSTALLED" = 0 ]; then
  check "dpkg --purge tessera" dpkg --purge tessera
  INSTALLED=0
  left=()
  for f in "$MODULE" /usr/bin/tessera /usr/share/p11-kit/modules/tessera.module "${POLICIES[@]}" \
    /usr/include/tessera /usr/lib/$TRIPLET/pkgconfig/tessera-pkcs11.pc; do
    [ -e "$f" ] && left+=("$f")
  done
  if [ ${#left[@]} -eq 0 ]; then
    ok "after the purge nothing of the package is left"
  else
    not_ok "after the purge these are left: ${left[*]}"
  fi
fi

echo "# $N_OK ok, $N_FAIL not ok"
[ "$N_FAIL" -eq 0 ]
