//! Card applications as the host sees them: one driver per applet family (PIV, IDPrime). A
//! driver turns card operations into APDUs over [`crate::card::Channel`] and knows nothing of
//! PKCS#11.

pub mod idprime;
pub mod keys;
pub mod piv;
