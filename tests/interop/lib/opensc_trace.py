#!/usr/bin/env python3
"""Summarises the APDUs in OpenSC debug logs (debug >= 3: "Outgoing APDU (N bytes):" and
"Incoming APDU (N bytes):" followed by hex dump lines), one file per test step whose first line
is "== TITLE". Prints, per step, one line per exchange ("> command  < answer"), PIN data of
VERIFY / CHANGE / RESET RETRY COUNTER redacted; a connect sequence (from the driver's first
SELECT of the applet up to the first security command) that was already printed is replaced by
a reference to the step that showed it. Ends with the distinct command forms (CLA INS P1 P2) in
the order OpenSC first sent them, with counts.

usage: opensc_trace.py AID_HEX STEPFILE...
"""
import re
import sys

HEADER = re.compile(r"^(Outgoing|Incoming) APDU \((\d+) bytes\):")
BYTE = re.compile(r"^[0-9A-Fa-f]{2}$")
SECURITY_INS = {"20", "22", "24", "2A", "2C", "84", "88"}
NAMES = {
    ("A4", "04"): "SELECT by AID",
    ("A4", "08"): "SELECT by path",
    ("A4", "00"): "SELECT by FID",
    ("C0", None): "GET RESPONSE",
    ("CA", None): "GET DATA",
    ("B0", None): "READ BINARY",
    ("20", None): "VERIFY",
    ("24", None): "CHANGE REFERENCE DATA",
    ("2C", None): "RESET RETRY COUNTER",
    ("22", None): "MANAGE SECURITY ENVIRONMENT",
    ("2A", "90"): "PSO HASH",
    ("2A", "9E"): "PSO COMPUTE DIGITAL SIGNATURE",
    ("2A", "80"): "PSO DECIPHER",
    ("84", None): "GET CHALLENGE",
}


def exchanges(lines):
    """(command bytes, answer bytes) pairs from a debug log."""
    out, pending, want, got, direction = [], None, 0, [], None
    for line in lines:
        m = HEADER.match(line)
        if m:
            direction, want, got = m.group(1), int(m.group(2)), []
            continue
        if direction is None:
            continue
        for tok in line.split()[:16]:
            if len(got) < want and BYTE.match(tok):
                got.append(tok.upper())
        if len(got) >= want or not line.strip():
            if direction == "Outgoing":
                pending = got
            elif pending is not None:
                out.append((pending, got))
                pending = None
            direction = None
    return out


def show_command(c):
    ins = c[1] if len(c) > 1 else ""
    if ins in ("20", "24", "2C") and len(c) > 5:
        return " ".join(c[:5]) + " [PIN data redacted]"
    text = " ".join(c[:16])
    return text + (f" ... ({len(c)} bytes)" if len(c) > 16 else "")


def show_answer(a):
    if len(a) <= 2:
        return " ".join(a)
    data = a[:-2]
    head = " ".join(data[:6]) + (" ..." if len(data) > 6 else "")
    return f"[{len(data)} bytes: {head}] {a[-2]} {a[-1]}"


def line(c, a):
    return f"  > {show_command(c):<58} < {show_answer(a)}"


def name(c):
    ins, p1 = (c[1], c[2]) if len(c) > 2 else ("", "")
    return NAMES.get((ins, p1)) or NAMES.get((ins, None)) or "?"


def main():
    aid, files = sys.argv[1].upper(), sys.argv[2:]
    select_aid = ["00", "A4", "04"]
    seen = {}  # connect sequence text -> step title
    forms = {}  # CLA INS P1 P2 -> [count, name]
    for path in files:
        with open(path, errors="replace") as f:
            raw = f.read().splitlines()
        title = raw[0][3:] if raw and raw[0].startswith("== ") else path
        print(f"== {title}")
        ex = exchanges(raw[1:])
        for c, _ in ex:
            key = " ".join(c[:4])
            forms.setdefault(key, [0, name(c)])[0] += 1
        i = 0
        while i < len(ex):
            c, a = ex[i]
            starts = c[:3] == select_aid and "".join(c[5:]).startswith(aid)
            if not starts:
                print(line(c, a))
                i += 1
                continue
            j = i + 1
            while j < len(ex):
                cj = ex[j][0]
                if cj[1:2] and cj[1] in SECURITY_INS:
                    break
                if cj[:3] == select_aid and j > i + 4 and ex[j - 1][0][1:2] != ["C0"] and \
                        ex[j - 1][0][1:2] == ["B0"] and False:
                    break
                j += 1
            block = [line(*e) for e in ex[i:j]]
            text = "\n".join(block)
            if text in seen:
                print(f"  [connect: the same {j - i} exchanges as in '{seen[text]}']")
            else:
                seen[text] = title
                print(text)
            i = j
    print("== distinct command forms, in the order OpenSC first sent them")
    for key, (count, what) in forms.items():
        print(f"  {key:<12} {what:<32} x{count}")


if __name__ == "__main__":
    main()
