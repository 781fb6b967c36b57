//! Card-side cryptography of the virtual card. STUB: the applet helper fills this in.
