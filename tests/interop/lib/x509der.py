#!/usr/bin/env python3
"""Split and re-assemble an X.509 certificate's DER, so that the card can sign its TBS part.

Used by tests/interop (card_selfsign in common.bash) because Debian's yubico-piv-tool 2.2.0
built against OpenSSL 3 cannot run `-a selfsign-certificate` (it fails inside OpenSSL before
sending any APDU). Standard library only.

  x509der.py split CERT.der TBS.der ALG.der     -> tbsCertificate and signatureAlgorithm
  x509der.py join TBS.der ALG.der SIG.bin OUT.der -> Certificate with SIG as signatureValue
"""
import sys


def read_tlv(buf: bytes, pos: int):
    """Return (start, end) of the complete TLV at pos, and the start of its value."""
    if pos + 2 > len(buf):
        raise ValueError("truncated TLV")
    start = pos
    pos += 1  # tag (single-byte tags are all we need here)
    first = buf[pos]
    pos += 1
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or pos + n > len(buf):
            raise ValueError("bad length")
        length = int.from_bytes(buf[pos : pos + n], "big")
        pos += n
    end = pos + length
    if end > len(buf):
        raise ValueError("truncated value")
    return start, pos, end


def encode_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def main(argv):
    if len(argv) == 5 and argv[1] == "split":
        cert = open(argv[2], "rb").read()
        _, inner, _ = read_tlv(cert, 0)
        tbs_s, _, tbs_e = read_tlv(cert, inner)
        alg_s, _, alg_e = read_tlv(cert, tbs_e)
        open(argv[3], "wb").write(cert[tbs_s:tbs_e])
        open(argv[4], "wb").write(cert[alg_s:alg_e])
        return 0
    if len(argv) == 6 and argv[1] == "join":
        tbs = open(argv[2], "rb").read()
        alg = open(argv[3], "rb").read()
        sig = open(argv[4], "rb").read()
        if not sig:
            raise ValueError("empty signature")
        bitstring = b"\x03" + encode_len(len(sig) + 1) + b"\x00" + sig
        body = tbs + alg + bitstring
        open(argv[5], "wb").write(b"\x30" + encode_len(len(body)) + body)
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
