#!/usr/bin/env python3
"""Rewrite parts of a PKCS#12 file that openssl cannot be asked to write, for
tests/interop/hostile-input.sh. Standard library only; DER in, DER out.

  p12der.py strip-localkeyid IN OUT PASSWORD
      drops the localKeyID attribute of every bag in the file's unencrypted contents (make IN
      with `-certpbe NONE`, so the certificate bag is among them; the key stays shrouded) and
      recomputes the MAC (the PKCS#12 KDF and HMAC with the file's digest, salt and
      iterations), so the result is a well-formed file that openssl verifies
  p12der.py mac-iterations IN OUT N
      sets the MAC's iteration count to N and leaves its value as it was (a reader must
      refuse the count before computing anything)
  p12der.py info IN
      prints the MAC digest OID and iteration count
"""
import hashlib
import hmac
import sys

DIGESTS = {
    "1.3.14.3.2.26": "sha1",
    "2.16.840.1.101.3.4.2.4": "sha224",
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
    "1.2.840.113549.2.5": "md5",
}
LOCAL_KEY_ID = "1.2.840.113549.1.9.21"
ID_DATA = "1.2.840.113549.1.7.1"


# ---- DER: a node is (tag, bytes) for primitives or (tag, [nodes]) for constructed ones -----
def parse(buf, pos=0, end=None):
    """All TLVs in buf[pos:end] as nodes."""
    end = len(buf) if end is None else end
    nodes = []
    while pos < end:
        tag = buf[pos]
        pos += 1
        first = buf[pos]
        pos += 1
        if first < 0x80:
            length = first
        else:
            n = first & 0x7F
            if n == 0 or n > 4:
                raise ValueError("unsupported length")
            length = int.from_bytes(buf[pos : pos + n], "big")
            pos += n
        if pos + length > end:
            raise ValueError("truncated")
        value = buf[pos : pos + length]
        if tag & 0x20:
            nodes.append((tag, parse(buf, pos, pos + length)))
        else:
            nodes.append((tag, value))
        pos += length
    return nodes


def encode(node):
    tag, value = node
    body = b"".join(encode(n) for n in value) if isinstance(value, list) else value
    n = len(body)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + body


def oid(value):
    first = value[0]
    parts = [first // 40, first % 40] if first < 80 else [2, first - 80]
    acc = 0
    for b in value[1:]:
        acc = (acc << 7) | (b & 0x7F)
        if not b & 0x80:
            parts.append(acc)
            acc = 0
    return ".".join(map(str, parts))


def integer(n):
    raw = n.to_bytes((n.bit_length() + 8) // 8, "big")
    return (0x02, raw)


# ---- PKCS#12 ---------------------------------------------------------------------------------
def kdf(digest, password_bmp, salt, ident, iterations, length):
    """RFC 7292 appendix B.2."""
    h = hashlib.new(digest)
    u, v = h.digest_size, h.block_size

    def fill(s):
        return (s * ((v * ((len(s) + v - 1) // v)) // len(s) + 1))[: v * ((len(s) + v - 1) // v)] if s else b""

    i_block = bytearray(fill(salt) + fill(password_bmp))
    out = b""
    while len(out) < length:
        a = hashlib.new(digest, bytes([ident]) * v + bytes(i_block)).digest()
        for _ in range(1, iterations):
            a = hashlib.new(digest, a).digest()
        out += a
        b = int.from_bytes((a * (v // u + 1))[:v], "big")
        for j in range(0, len(i_block), v):
            x = (int.from_bytes(i_block[j : j + v], "big") + b + 1) % (1 << (8 * v))
            i_block[j : j + v] = x.to_bytes(v, "big")
    return out[:length]


def load(path):
    (pfx,) = parse(open(path, "rb").read())
    return pfx


def auth_safe_octets(pfx):
    content_info = pfx[1][1]
    explicit = content_info[1][1]  # [0] EXPLICIT
    return explicit[1][0]  # the OCTET STRING node


def remac(pfx, password):
    mac_data = pfx[1][2][1]
    digest_info, salt, iterations = mac_data[0][1], mac_data[1][1], int.from_bytes(mac_data[2][1], "big")
    digest = DIGESTS[oid(digest_info[0][1][0][1])]
    bmp = password.encode("utf-16-be") + b"\0\0"
    key = kdf(digest, bmp, salt, 3, iterations, hashlib.new(digest).digest_size)
    data = auth_safe_octets(pfx)[1]
    digest_info[1] = (0x04, hmac.new(key, data, digest).digest())


def strip_localkeyid(src, dst, password):
    pfx = load(src)
    octets = auth_safe_octets(pfx)
    (safes,) = parse(octets[1])
    stripped = 0
    for ci in safes[1]:
        if oid(ci[1][0][1]) != ID_DATA:
            continue
        inner = ci[1][1][1][0]  # [0] EXPLICIT OCTET STRING
        (bags,) = parse(inner[1])
        for bag in bags[1]:
            if len(bag[1]) < 3:
                continue
            attrs = bag[1][2][1]
            kept = [a for a in attrs if oid(a[1][0][1]) != LOCAL_KEY_ID]
            stripped += len(attrs) - len(kept)
            if kept:
                bag[1][2] = (0x31, kept)
            else:
                del bag[1][2]
        ci[1][1][1][0] = (0x04, encode(bags))
    if stripped == 0:
        sys.exit("no localKeyID found in unencrypted contents (make the file with -certpbe NONE)")
    pfx[1][1][1][1][1][0] = (0x04, encode(safes))
    remac(pfx, password)
    open(dst, "wb").write(encode(pfx))
    print(f"removed {stripped} localKeyID attributes")


def mac_iterations(src, dst, n):
    pfx = load(src)
    mac_data = pfx[1][2][1]
    if len(mac_data) < 3:
        mac_data.append(integer(n))
    else:
        mac_data[2] = integer(n)
    open(dst, "wb").write(encode(pfx))


def info(src):
    pfx = load(src)
    mac_data = pfx[1][2][1]
    print(DIGESTS.get(oid(mac_data[0][1][0][1][0][1]), "?"), int.from_bytes(mac_data[2][1], "big") if len(mac_data) > 2 else 1)


def main(argv):
    if len(argv) == 5 and argv[1] == "strip-localkeyid":
        strip_localkeyid(argv[2], argv[3], argv[4])
    elif len(argv) == 5 and argv[1] == "mac-iterations":
        mac_iterations(argv[2], argv[3], int(argv[4]))
    elif len(argv) == 3 and argv[1] == "info":
        info(argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
