#!/usr/bin/env python3
"""A minimal Marionette client for tests/interop/firefox.sh (standard library only).

Drives a Firefox started with --marionette (pref marionette.port = PORT):
  marionette.py --port PORT [--login TOKEN PINFILE] --get URL [--page-out FILE] [--timeout S]

--login  logs in to the PKCS#11 token named TOKEN from chrome context, the way Firefox's
         "Log in" button in the certificate manager does (nsIPK11Token.checkPassword, which
         leaves the token logged in), with the PIN read from PINFILE;
--get    loads URL in the content tab (WebDriver:Navigate waits for the page load) and writes
         the page source to --page-out.
Prints one JSON line per step; exits 0 when the page loaded, 1 when a step failed.
"""
import argparse
import json
import socket
import sys
import time

LOGIN_SCRIPT = """
const [name, pin] = arguments;
return (async () => {
  // The token's login asks for the PIN through the window watcher's prompter
  // ("@mozilla.org/prompter;1"): a prompter of our own answers it with the PIN, as the user
  // would in the "Password Required" dialog.
  const prompter = {
    QueryInterface: ChromeUtils.generateQI(["nsIPrompt"]),
    promptPassword(title, text, pass) { pass.value = pin; return true; },
  };
  const factory = {
    QueryInterface: ChromeUtils.generateQI(["nsIFactory", "nsIPromptFactory"]),
    createInstance(iid) { return this.QueryInterface(iid); },
    getPrompt(win, iid) { return prompter.QueryInterface(iid); },
  };
  Components.manager.QueryInterface(Ci.nsIComponentRegistrar).registerFactory(
    Services.uuid.generateUUID(), "tessera test prompter", "@mozilla.org/prompter;1", factory);
  // listModules() and the slot lists: promises or arrays (current Firefox), enumerators (older)
  const all = async (x, iface) => {
    x = await x;
    if (x && typeof x.hasMoreElements === "function") {
      const out = [];
      while (x.hasMoreElements()) out.push(x.getNext().QueryInterface(iface));
      return out;
    }
    return Array.from(x);
  };
  const mdb = Cc["@mozilla.org/security/pkcs11moduledb;1"].getService(Ci.nsIPKCS11ModuleDB);
  const seen = [];
  for (const m of await all(mdb.listModules(), Ci.nsIPKCS11Module)) {
    const slots = typeof m.listSlots === "function" ? m.listSlots() : m.slots;
    for (const s of await all(slots, Ci.nsIPKCS11Slot)) {
      let t;
      try { t = await s.getToken(); } catch (e) { continue; }
      seen.push(m.name + ": " + t.tokenName);
      if (t.tokenName == name) {
        let ok = true;
        if (typeof t.checkPassword === "function") ok = await t.checkPassword(pin);
        else await t.login(false);
        const li = typeof t.isLoggedIn === "function" ? await t.isLoggedIn() : t.isLoggedIn;
        return { found: true, module: m.name, ok: ok, loggedIn: li };
      }
    }
  }
  return { found: false, tokens: seen };
})();
"""


class Marionette:
    def __init__(self, port, timeout):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.msgid = 0
        self.recv()  # the server's hello: {"applicationType": "gecko", "marionetteProtocol": 3}

    def recv(self):
        while b":" not in self.buf:
            self._fill()
        n, rest = self.buf.split(b":", 1)
        n = int(n)
        while len(rest) < n:
            self.buf = rest
            self._fill()
            rest = self.buf
        self.buf = rest[n:]
        return json.loads(rest[:n])

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("marionette closed the connection")
        self.buf += chunk

    def call(self, name, params=None):
        self.msgid += 1
        data = json.dumps([0, self.msgid, name, params or {}]).encode()
        self.sock.sendall(str(len(data)).encode() + b":" + data)
        while True:
            msg = self.recv()
            if msg[0] == 1 and msg[1] == self.msgid:
                if msg[2]:
                    raise RuntimeError(json.dumps(msg[2]))
                return msg[3]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--login", nargs=2, metavar=("TOKEN", "PINFILE"))
    ap.add_argument("--get", required=True)
    ap.add_argument("--page-out")
    ap.add_argument("--timeout", type=float, default=30)
    a = ap.parse_args()

    deadline = time.time() + a.timeout
    m = None
    while m is None:
        try:
            m = Marionette(a.port, a.timeout)
        except OSError as e:
            if time.time() > deadline:
                print(json.dumps({"connect": str(e)}))
                return 1
            time.sleep(0.2)
    m.call("WebDriver:NewSession", {"capabilities": {"alwaysMatch": {
        "timeouts": {"pageLoad": int(a.timeout * 1000), "script": int(a.timeout * 1000)}}}})
    rc = 0
    if a.login:
        with open(a.login[1]) as f:
            pin = f.readline().strip()
        try:
            # chrome context needs Firefox started with -remote-allow-system-access
            m.call("Marionette:SetContext", {"value": "chrome"})
            r = m.call("WebDriver:ExecuteScript", {"script": LOGIN_SCRIPT, "args": [a.login[0], pin]})
            r = r.get("value", r)
            m.call("Marionette:SetContext", {"value": "content"})
        except RuntimeError as e:
            r = {"error": str(e)[:400]}
            try:
                m.call("Marionette:SetContext", {"value": "content"})
            except RuntimeError:
                pass
        print(json.dumps({"login": r}))
        if not (isinstance(r, dict) and r.get("ok") and r.get("loggedIn")):
            rc = 1
    try:
        m.call("WebDriver:Navigate", {"url": a.get})
        page = m.call("WebDriver:GetPageSource").get("value", "")
        print(json.dumps({"navigate": "loaded", "bytes": len(page)}))
        if a.page_out:
            with open(a.page_out, "w") as f:
                f.write(page)
    except (RuntimeError, OSError) as e:
        print(json.dumps({"navigate": str(e)[:400]}))
        rc = 1
    try:
        m.call("Marionette:Quit", {"flags": ["eForceQuit"]})
    except (RuntimeError, OSError, ConnectionError):
        pass
    return rc


if __name__ == "__main__":
    sys.exit(main())
