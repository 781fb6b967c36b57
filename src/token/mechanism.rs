//! Mechanisms: which ones the token offers, and the host-side halves of them. STUB: the
//! mechanisms helper fills this in.
