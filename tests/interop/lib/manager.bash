# Helpers for tests/interop/manager.sh (sourced after common.bash; not run: this file is not *.sh).
#
# mk_fixtures DIR builds, with openssl only, everything the control-manager scenarios load:
#   ca.key/ca.pem        a P-256 test CA; ca.cnf + db/ for `openssl ca` (expired cert, CRLs)
#   ext.cnf              extension sections: sig (RSA e-Cert: digitalSignature, nonRepudiation,
#                        keyEncipherment; emailProtection, clientAuth) and auth (EC e-Cert:
#                        digitalSignature, keyAgreement; clientAuth, emailProtection)
#   pw                   the .p12 password ("envelope-2468"); wrongpw another one
#   rsa-modern.p12       RSA-2048 e-Cert, `openssl pkcs12 -export` defaults (AES-256-CBC, PBKDF2)
#   rsa-legacy.p12       RSA-2048 e-Cert (another key), `-legacy` (3DES keys, RC2-40 certificates)
#   ec-legacy.p12        P-256 e-Cert, -legacy
#   ec-modern.p12        P-256 e-Cert (another key), modern
#   expired.p12          P-256 e-Cert valid 2020-01-01..2020-01-02 (openssl ca -startdate/-enddate)
#   rsa1024.p12 p521.p12 algorithms a PIV card lacks
#   mismatch.p12         key of one pair, certificate of another, same localKeyId (see below)
#   corrupt.p12          rsa-modern.p12 cut in half
# Each NAME.p12 comes with NAME.pem (its certificate), NAME.der and NAME.key.

P12_PASSWORD=envelope-2468

# ca_cnf DIR: a minimal `openssl ca` configuration (used for the expired certificate, revocation
# and CRLs; ordinary certificates are issued with `openssl x509 -req` to keep the subject as is)
ca_cnf() {
  local d=$1
  mkdir -p "$d/db/new"
  : >"$d/db/index.txt"
  echo 1000 >"$d/db/serial"
  echo 01 >"$d/db/crlnumber"
  cat >"$d/ca.cnf" <<EOF
[ ca ]
default_ca = test_ca
[ test_ca ]
dir = $d
database = \$dir/db/index.txt
new_certs_dir = \$dir/db/new
serial = \$dir/db/serial
crlnumber = \$dir/db/crlnumber
certificate = \$dir/ca.pem
private_key = \$dir/ca.key
default_md = sha256
default_days = 365
default_crl_days = 30
policy = policy_any
unique_subject = no
preserve = yes
copy_extensions = none
[ policy_any ]
countryName = optional
organizationName = optional
commonName = supplied
serialNumber = optional
EOF
}

# issue KEY SUBJECT SECTION OUTPEM SAN: the test CA issues a one-year certificate for KEY
issue() { # [DAYS]: default 365
  local key=$1 subj=$2 sect=$3 out=$4 san=$5 days=${6:-365} d
  d=$(dirname "$out")
  openssl req -new -key "$key" -subj "$subj" -out "$out.csr" 2>/dev/null || return 1
  SAN_EMAIL=$san openssl x509 -req -in "$out.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
    -set_serial "0x$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" -days "$days" -sha256 \
    -extfile "$d/ext.cnf" -extensions "$sect" -out "$out" 2>/dev/null
}

# p12 NAME [-legacy]: NAME.key + NAME.pem (+ the CA) into NAME.p12 with the password in pw
p12() {
  local d=$FIX name=$1
  shift
  openssl pkcs12 -export "$@" -inkey "$d/$name.key" -in "$d/$name.pem" -certfile "$d/ca.pem" \
    -name "$name" -passout "file:$d/pw" -out "$d/$name.p12"
}

genkey() { # genkey OUT rsa2048|rsa1024|p256|p521
  case "$2" in
    rsa*) openssl genpkey -algorithm RSA -pkeyopt "rsa_keygen_bits:${2#rsa}" -out "$1" ;;
    p256) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" ;;
    p521) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-521 -out "$1" ;;
  esac 2>/dev/null
}

# mismatch_p12 KEY CERT PWFILE OUT: a PKCS#12 file whose key bag and certificate bag carry the
# same localKeyId although the key does not belong to the certificate. `openssl pkcs12 -export`
# and python's cryptography both refuse to build one ("No certificate matches private key"), so
# the PFX is put together here (standard library only): the key bag is the
# EncryptedPrivateKeyInfo from `openssl pkcs8 -topk8 -v2 aes-256-cbc`, the certificate bag is
# plain, and the MAC is HMAC-SHA256 with the RFC 7292 appendix B key derivation, as OpenSSL 3
# writes it. `openssl pkcs12 -info` reads the result (MAC verified) — checked by the caller.
mismatch_p12() {
  local key=$1 cert=$2 pw=$3 out=$4
  openssl pkcs8 -topk8 -in "$key" -outform DER -v2 aes-256-cbc -v2prf hmacWithSHA256 \
    -passout "file:$pw" -out "$out.p8" || return 1
  openssl x509 -in "$cert" -outform DER -out "$out.crt" || return 1
  python3 - "$out.p8" "$out.crt" "$pw" "$out" <<'EOF'
import hashlib, hmac, os, sys

def der(tag, body):
    n = len(body)
    if n < 0x80:
        ln = bytes([n])
    else:
        b = n.to_bytes((n.bit_length() + 7) // 8, "big")
        ln = bytes([0x80 | len(b)]) + b
    return bytes([tag]) + ln + body

def oid(dotted):
    parts = [int(x) for x in dotted.split(".")]
    body = bytes([40 * parts[0] + parts[1]])
    for p in parts[2:]:
        enc = [p & 0x7F]
        p >>= 7
        while p:
            enc.insert(0, 0x80 | (p & 0x7F))
            p >>= 7
        body += bytes(enc)
    return der(0x06, body)

seq = lambda *xs: der(0x30, b"".join(xs))
setof = lambda *xs: der(0x31, b"".join(xs))
octets = lambda b: der(0x04, b)
explicit0 = lambda b: der(0xA0, b)

def integer(n):
    return der(0x02, n.to_bytes((n.bit_length() + 8) // 8, "big"))

def kdf(password, salt, ident, iterations, n):
    # RFC 7292 appendix B.2 with SHA-256 (u = 32, v = 64)
    u, v = 32, 64
    p = password.encode("utf-16-be") + b"\0\0"
    D = bytes([ident]) * v
    S = (salt * (v * ((len(salt) + v - 1) // v) // len(salt) + 1))[: v * ((len(salt) + v - 1) // v)]
    P = (p * (v * ((len(p) + v - 1) // v) // len(p) + 1))[: v * ((len(p) + v - 1) // v)]
    I = bytearray(S + P)
    out = b""
    while len(out) < n:
        A = hashlib.sha256(D + bytes(I)).digest()
        for _ in range(iterations - 1):
            A = hashlib.sha256(A).digest()
        out += A
        B = (A * (v // u + 1))[:v]
        Bn = int.from_bytes(B, "big")
        for j in range(0, len(I), v):
            x = (int.from_bytes(I[j : j + v], "big") + Bn + 1) % (1 << (v * 8))
            I[j : j + v] = x.to_bytes(v, "big")
    return out[:n]

p8, crt, pwfile, outfile = sys.argv[1:5]
password = open(pwfile).read().splitlines()[0]
local_id = setof(seq(oid("1.2.840.113549.1.9.21"), setof(octets(b"\x01" * 20))))
key_bag = seq(oid("1.2.840.113549.1.12.10.1.2"), explicit0(open(p8, "rb").read()), local_id)
cert_bag = seq(
    oid("1.2.840.113549.1.12.10.1.3"),
    explicit0(seq(oid("1.2.840.113549.1.9.22.1"), explicit0(octets(open(crt, "rb").read())))),
    local_id,
)
data = lambda body: seq(oid("1.2.840.113549.1.7.1"), explicit0(octets(body)))
auth_safe = seq(data(seq(cert_bag)), data(seq(key_bag)))
salt, iterations = os.urandom(8), 2048
mac = hmac.new(kdf(password, salt, 3, iterations, 32), auth_safe, hashlib.sha256).digest()
mac_data = seq(seq(seq(oid("2.16.840.1.101.3.4.2.1"), b"\x05\x00"), octets(mac)), octets(salt), integer(iterations))
open(outfile, "wb").write(seq(integer(3), data(auth_safe), mac_data))
EOF
}

# mk_fixtures DIR (sets FIX=DIR)
mk_fixtures() {
  FIX=$1
  local d=$1 n
  mkdir -p "$d"
  printf '%s\n' "$P12_PASSWORD" >"$d/pw"
  printf '%s\n' "not-the-password" >"$d/wrongpw"
  genkey "$d/ca.key" p256 || return 1
  openssl req -x509 -new -key "$d/ca.key" -subj "/C=EE/O=Tessera Test/CN=Tessera Test CA" -days 3650 \
    -sha256 -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$d/ca.pem" 2>/dev/null || return 1
  ca_cnf "$d"
  cat >"$d/ext.cnf" <<'EOF'
[ sig ]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, nonRepudiation, keyEncipherment
extendedKeyUsage = emailProtection, clientAuth
subjectAltName = email:$ENV::SAN_EMAIL
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ sig_renewed ]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, nonRepudiation, keyEncipherment
extendedKeyUsage = emailProtection, clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ auth ]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyAgreement
extendedKeyUsage = clientAuth, emailProtection
subjectAltName = email:$ENV::SAN_EMAIL
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
  genkey "$d/rsa-modern.key" rsa2048 && genkey "$d/rsa-legacy.key" rsa2048 &&
    genkey "$d/ec-legacy.key" p256 && genkey "$d/ec-modern.key" p256 &&
    genkey "$d/expired.key" p256 && genkey "$d/rsa1024.key" rsa1024 && genkey "$d/p521.key" p521 &&
    genkey "$d/other.key" p256 || return 1
  issue "$d/rsa-modern.key" "/C=EE/O=Tessera Test/CN=Mari Maasikas/serialNumber=PNOEE-48001010001" sig \
    "$d/rsa-modern.pem" mari@example.ee || return 1
  issue "$d/rsa-legacy.key" "/C=EE/O=Tessera Test/CN=Mari Maasikas (2)/serialNumber=PNOEE-48001010001" sig \
    "$d/rsa-legacy.pem" mari@example.ee || return 1
  issue "$d/ec-legacy.key" "/C=EE/O=Tessera Test/CN=Jaan Tamm/serialNumber=PNOEE-38001010002" auth \
    "$d/ec-legacy.pem" jaan@example.ee || return 1
  issue "$d/ec-modern.key" "/C=EE/O=Tessera Test/CN=Jaan Tamm (2)/serialNumber=PNOEE-38001010002" auth \
    "$d/ec-modern.pem" jaan@example.ee || return 1
  issue "$d/rsa1024.key" "/C=EE/O=Tessera Test/CN=Weak Key" sig "$d/rsa1024.pem" weak@example.ee || return 1
  issue "$d/p521.key" "/C=EE/O=Tessera Test/CN=Big Curve" auth "$d/p521.pem" big@example.ee || return 1
  # close to expiry: 20 days (warning, under 30) and 5 days (urgent, under 7)
  genkey "$d/soon.key" p256 && genkey "$d/urgent.key" p256 || return 1
  issue "$d/soon.key" "/C=EE/O=Tessera Test/CN=Soon Expiring" auth "$d/soon.pem" soon@example.ee 20 || return 1
  issue "$d/urgent.key" "/C=EE/O=Tessera Test/CN=Urgent Renewal" auth "$d/urgent.pem" urgent@example.ee 5 || return 1
  # another CA, for signatures that must not verify against it
  genkey "$d/otherca.key" p256 &&
    openssl req -x509 -new -key "$d/otherca.key" -subj "/C=EE/O=Elsewhere/CN=Other CA" -days 3650 \
      -sha256 -addext "basicConstraints=critical,CA:TRUE" -out "$d/otherca.pem" 2>/dev/null || return 1
  # expired: `openssl x509 -req` of OpenSSL 3.0 has no -not_before/-not_after, so `openssl ca`
  openssl req -new -key "$d/expired.key" -subj "/C=EE/O=Tessera Test/CN=Old Timer" -out "$d/expired.csr" 2>/dev/null &&
    SAN_EMAIL=old@example.ee openssl ca -batch -notext -config "$d/ca.cnf" -extfile "$d/ext.cnf" \
      -extensions auth -startdate 20200101000000Z -enddate 20200102000000Z \
      -in "$d/expired.csr" -out "$d/expired.pem" 2>/dev/null || return 1
  p12 rsa-modern || return 1
  p12 ec-modern || return 1
  p12 rsa-legacy -legacy || return 1
  p12 ec-legacy -legacy || return 1
  p12 expired || return 1
  p12 soon || return 1
  p12 urgent || return 1
  p12 rsa1024 || return 1
  p12 p521 || return 1
  for n in rsa-modern rsa-legacy ec-legacy ec-modern expired soon urgent rsa1024 p521; do
    openssl x509 -in "$d/$n.pem" -outform DER -out "$d/$n.der" || return 1
  done
  # the key of other.key, the certificate of ec-modern
  mismatch_p12 "$d/other.key" "$d/ec-modern.pem" "$d/pw" "$d/mismatch.p12" || return 1
  head -c "$(($(stat -c %s "$d/rsa-modern.p12") / 2))" "$d/rsa-modern.p12" >"$d/corrupt.p12"
}

# p12_protection FILE: the PBE algorithms `openssl pkcs12 -info` reports (one line)
p12_protection() {
  openssl pkcs12 -info -in "$1" -passin "file:$FIX/pw" -nokeys -nocerts -legacy 2>&1 | grep -E 'PBES|PBKDF|pbeWith|MAC' | tr '\n' ' '
}

# der_eq A B: two files hold the same bytes (prints both SHA-256 when not)
# (either may be a pipe, e.g. <(openssl x509 -outform DER …): both are read once into a file)
der_eq() {
  local a b
  a=$(mktemp) b=$(mktemp)
  cat "$1" >"$a" 2>/dev/null
  cat "$2" >"$b" 2>/dev/null
  if [ -s "$a" ] && cmp -s "$a" "$b"; then rm -f "$a" "$b"; return 0; fi
  echo "differ: $1 (sha256 $(sha256sum <"$a" | cut -c1-16)…, $(stat -c %s "$a") bytes) vs $2 (sha256 $(sha256sum <"$b" | cut -c1-16)…, $(stat -c %s "$b") bytes)"
  rm -f "$a" "$b"
  return 1
}

# jqv FILTER: evaluates FILTER on $OUT (JSON); prints the raw value
jqv() { printf '%s' "$OUT" | jq -r "$1" 2>/dev/null; }
