//! Cryptographic operations: digests and verification on the host, signatures, decryption
//! and key agreement by the card, each run as one operation taken out of its session.
//!
//! An operation's life follows PKCS#11 3.0 §5.12–5.13: after C_xxxInit it is continued either
//! by its single-part call (C_Digest, C_Sign, …) or by Update/Final calls, never both; a call
//! of the other kind ends it with CKR_OPERATION_ACTIVE, as does any error but
//! CKR_BUFFER_TOO_SMALL (a length query or a short buffer keeps it for the next call).

use super::{deliver, err, Library};
use crate::applet::piv;
use crate::token::mechanism::{self, Digester, SignOp, VerifyOp};
use crate::token::objects::{self, KeyEntry, ObjectId};
use crate::token::session::{CardKey, Operation, SessionObject};
use crate::token::slot::{Login, Slot};
use crate::token::{attr, Attr, Error, Mechanism, OutBuf, Result};
use cryptoki_sys::*;
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// How an active operation has been continued: by its single-part call (a length query or
/// a short buffer left it active) or by Update/Final calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stage {
    /// C_Digest, C_Sign, C_Verify, C_Encrypt, C_Decrypt.
    Single,
    /// C_xxxUpdate, C_xxxFinal.
    Multi,
}

impl Stage {
    /// The stage a finishing call with (`Some`) or without (`None`, C_xxxFinal) data enters.
    fn of<T>(data: Option<T>) -> Self {
        if data.is_some() {
            Self::Single
        } else {
            Self::Multi
        }
    }
}

/// The kinds of operation a session can have active, as their C_xxxInit names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperationKind {
    /// C_DigestInit.
    Digest,
    /// C_SignInit.
    Sign,
    /// C_VerifyInit.
    Verify,
    /// C_EncryptInit.
    Encrypt,
    /// C_DecryptInit.
    Decrypt,
}

impl OperationKind {
    fn of(op: &Operation) -> Self {
        match op {
            Operation::Digest(_) => Self::Digest,
            Operation::Sign { .. } => Self::Sign,
            Operation::Verify { .. } => Self::Verify,
            Operation::Encrypt { .. } => Self::Encrypt,
            Operation::Decrypt { .. } => Self::Decrypt,
        }
    }
}

impl Library {
    /// Ends the session's active operation of `kind`, if there is one (an operation of another
    /// kind stays). C_xxxInit with a NULL mechanism cancels this way (PKCS#11 3.0), and the
    /// ABI layer this way ends an operation whose Update/Final/single-part call failed on its
    /// arguments before reaching the core (§5.13).
    pub fn end_operation(&self, h: CK_SESSION_HANDLE, kind: OperationKind) -> Result<()> {
        self.session_slot(h)?;
        self.with_session(h, |s| {
            if s.op.as_ref().map(OperationKind::of) == Some(kind) {
                s.op = None;
            }
            Ok(())
        })
    }

    /// Records that the session's operation (already known to be active and of the right kind)
    /// is continued by a call of `stage`. A call of the other stage may not continue it:
    /// CKR_OPERATION_ACTIVE, and the caller ends the operation.
    fn enter_stage(&self, h: CK_SESSION_HANDLE, stage: Stage) -> Result<()> {
        let mut stages = self.stages.lock();
        match stages.insert(h, stage) {
            Some(before) if before != stage => {
                stages.remove(&h);
                err(CKR_OPERATION_ACTIVE)
            }
            _ => Ok(()),
        }
    }

    /// C_DigestInit.
    pub fn digest_init(&self, h: CK_SESSION_HANDLE, mech: &Mechanism) -> Result<()> {
        self.session_slot(h)?;
        self.start_op(h, Operation::Digest(Digester::new(mech.ty)?))
    }

    /// C_Digest.
    pub fn digest(&self, h: CK_SESSION_HANDLE, data: &[u8], out: OutBuf<'_>) -> Result<usize> {
        self.digest_finish(h, Some(data), out)
    }

    /// C_Digest (`Some` data) or C_DigestFinal (`None`).
    fn digest_finish(
        &self,
        h: CK_SESSION_HANDLE,
        data: Option<&[u8]>,
        out: OutBuf<'_>,
    ) -> Result<usize> {
        self.session_slot(h)?;
        let op = self.take_op(h)?;
        let Operation::Digest(mut d) = op else {
            self.put_op(h, op);
            return err(CKR_OPERATION_NOT_INITIALIZED);
        };
        self.enter_stage(h, Stage::of(data))?;
        match &out {
            OutBuf::Query => {
                let n = d.output_len();
                self.put_op(h, Operation::Digest(d));
                return Ok(n);
            }
            OutBuf::Into(buf) if buf.len() < d.output_len() => {
                let n = d.output_len();
                self.put_op(h, Operation::Digest(d));
                return Err(Error::buffer_too_small(n));
            }
            OutBuf::Into(_) => {}
        }
        if let Some(data) = data {
            d.update(data);
        }
        deliver(&d.finalize(), out)
    }

    /// C_DigestUpdate.
    pub fn digest_update(&self, h: CK_SESSION_HANDLE, data: &[u8]) -> Result<()> {
        self.session_slot(h)?;
        let op = self.take_op(h)?;
        let Operation::Digest(mut d) = op else {
            self.put_op(h, op);
            return err(CKR_OPERATION_NOT_INITIALIZED);
        };
        self.enter_stage(h, Stage::Multi)?;
        d.update(data);
        self.put_op(h, Operation::Digest(d));
        Ok(())
    }

    /// C_DigestFinal.
    pub fn digest_final(&self, h: CK_SESSION_HANDLE, out: OutBuf<'_>) -> Result<usize> {
        self.digest_finish(h, None, out)
    }

    fn card_key(
        &self,
        slot: &Slot,
        key: CK_OBJECT_HANDLE,
        wanted: fn(&objects::Usage) -> bool,
    ) -> Result<(CardKey, KeyEntry)> {
        let (id, entry) = self.resolve(slot, key, CKR_KEY_HANDLE_INVALID)?;
        let (ObjectId::PrivateKey(_), Some(entry)) = (id, entry) else {
            return err(CKR_KEY_TYPE_INCONSISTENT);
        };
        if !wanted(&entry.usage()) {
            return err(CKR_KEY_FUNCTION_NOT_PERMITTED);
        }
        if entry.private_key_is_private() && slot.state.lock().login != Login::User {
            return err(CKR_USER_NOT_LOGGED_IN);
        }
        Ok((
            CardKey {
                slot: entry.slot,
                algorithm: entry.algorithm,
                always_authenticate: entry.always_authenticate(),
                needs_login: entry.private_key_is_private() || entry.always_authenticate(),
            },
            entry,
        ))
    }

    fn public_key(
        &self,
        slot: &Slot,
        key: CK_OBJECT_HANDLE,
        wanted: fn(&objects::Usage) -> bool,
    ) -> Result<KeyEntry> {
        let (id, entry) = self.resolve(slot, key, CKR_KEY_HANDLE_INVALID)?;
        let (ObjectId::PublicKey(_), Some(entry)) = (id, entry) else {
            return err(CKR_KEY_TYPE_INCONSISTENT);
        };
        if !wanted(&entry.usage()) {
            return err(CKR_KEY_FUNCTION_NOT_PERMITTED);
        }
        Ok(entry)
    }

    /// C_SignInit.
    pub fn sign_init(
        &self,
        h: CK_SESSION_HANDLE,
        mech: &Mechanism,
        key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        let (slot, _) = self.session_slot(h)?;
        let (card_key, entry) = self.card_key(&slot, key, |u| u.sign)?;
        let op = SignOp::new(mech, entry.public_key.key_info())?;
        self.start_op(
            h,
            Operation::Sign {
                op,
                key: card_key,
                context_pin: None,
            },
        )
    }

    /// C_Sign.
    pub fn sign(&self, h: CK_SESSION_HANDLE, data: &[u8], out: OutBuf<'_>) -> Result<usize> {
        self.sign_finish(h, Some(data), out)
    }

    /// C_SignUpdate.
    pub fn sign_update(&self, h: CK_SESSION_HANDLE, data: &[u8]) -> Result<()> {
        self.session_slot(h)?;
        let r = self.with_session(h, |s| match s.op.as_mut() {
            Some(Operation::Sign { op, .. }) => {
                self.enter_stage(h, Stage::Multi)?;
                op.update(data)
            }
            _ => err(CKR_OPERATION_NOT_INITIALIZED),
        });
        if let Err(e) = r {
            if e.rv() != CKR_OPERATION_NOT_INITIALIZED {
                let _ = self.take_op(h);
            }
        }
        r
    }

    /// C_SignFinal.
    pub fn sign_final(&self, h: CK_SESSION_HANDLE, out: OutBuf<'_>) -> Result<usize> {
        self.sign_finish(h, None, out)
    }

    fn sign_finish(
        &self,
        h: CK_SESSION_HANDLE,
        data: Option<&[u8]>,
        out: OutBuf<'_>,
    ) -> Result<usize> {
        let (slot, _) = self.session_slot(h)?;
        let op = self.take_op(h)?;
        let Operation::Sign {
            mut op,
            key,
            context_pin,
        } = op
        else {
            self.put_op(h, op);
            return err(CKR_OPERATION_NOT_INITIALIZED);
        };
        self.enter_stage(h, Stage::of(data))?;
        let len = op.signature_len();
        let too_small = matches!(&out, OutBuf::Into(b) if b.len() < len);
        if matches!(out, OutBuf::Query) || too_small {
            self.put_op(
                h,
                Operation::Sign {
                    op,
                    key,
                    context_pin,
                },
            );
            return if too_small {
                Err(Error::buffer_too_small(len))
            } else {
                Ok(len)
            };
        }
        if let Some(d) = data {
            op.update(d)?;
        }
        let input = op.card_input()?;
        if key.always_authenticate && context_pin.is_none() {
            return err(CKR_USER_NOT_LOGGED_IN);
        }
        let raw = self.with_card(&slot, |state| {
            state.transact(&slot.source, key.needs_login, |ch, card| {
                private_operation(ch, card, &key, context_pin.as_ref().map(|p| &p[..]), &input)
            })
        })?;
        let signature = op.finish(&raw)?;
        deliver(&signature, out)
    }

    /// C_VerifyInit (on the host, with the public key).
    pub fn verify_init(
        &self,
        h: CK_SESSION_HANDLE,
        mech: &Mechanism,
        key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        let (slot, _) = self.session_slot(h)?;
        let entry = self.public_key(&slot, key, |u| u.sign)?;
        let op = VerifyOp::new(mech, entry.public_key.key_info())?;
        self.start_op(
            h,
            Operation::Verify {
                op,
                key: entry.public_key,
            },
        )
    }

    /// C_Verify.
    pub fn verify(&self, h: CK_SESSION_HANDLE, data: &[u8], signature: &[u8]) -> Result<()> {
        self.verify_finish(h, Some(data), signature)
    }

    /// C_Verify (`Some` data) or C_VerifyFinal (`None`): the operation ends either way.
    fn verify_finish(
        &self,
        h: CK_SESSION_HANDLE,
        data: Option<&[u8]>,
        signature: &[u8],
    ) -> Result<()> {
        self.session_slot(h)?;
        match self.take_op(h)? {
            Operation::Verify { mut op, key } => {
                self.enter_stage(h, Stage::of(data))?;
                if let Some(data) = data {
                    op.update(data)?;
                }
                op.verify(&key, signature)
            }
            other => {
                self.put_op(h, other);
                err(CKR_OPERATION_NOT_INITIALIZED)
            }
        }
    }

    /// C_VerifyUpdate: an error ends the operation.
    pub fn verify_update(&self, h: CK_SESSION_HANDLE, data: &[u8]) -> Result<()> {
        self.session_slot(h)?;
        let op = self.take_op(h)?;
        let Operation::Verify { mut op, key } = op else {
            self.put_op(h, op);
            return err(CKR_OPERATION_NOT_INITIALIZED);
        };
        self.enter_stage(h, Stage::Multi)?;
        op.update(data)?;
        self.put_op(h, Operation::Verify { op, key });
        Ok(())
    }

    /// C_VerifyFinal.
    pub fn verify_final(&self, h: CK_SESSION_HANDLE, signature: &[u8]) -> Result<()> {
        self.verify_finish(h, None, signature)
    }

    /// C_EncryptInit (on the host, with the public key).
    pub fn encrypt_init(
        &self,
        h: CK_SESSION_HANDLE,
        mech: &Mechanism,
        key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        let (slot, _) = self.session_slot(h)?;
        let entry = self.public_key(&slot, key, |u| u.decrypt)?;
        mechanism::check_params(mech, &entry.public_key.key_info())?;
        self.start_op(
            h,
            Operation::Encrypt {
                mech: mech.clone(),
                key: entry.public_key,
                pending: None,
            },
        )
    }

    /// C_Encrypt.
    pub fn encrypt(&self, h: CK_SESSION_HANDLE, data: &[u8], out: OutBuf<'_>) -> Result<usize> {
        self.session_slot(h)?;
        let op = self.take_op(h)?;
        let Operation::Encrypt { mech, key, pending } = op else {
            self.put_op(h, op);
            return err(CKR_OPERATION_NOT_INITIALIZED);
        };
        let result = match pending {
            Some(p) => p,
            None => mechanism::encrypt(&mech, &key, data)?,
        };
        let query = matches!(out, OutBuf::Query);
        match deliver(&result, out) {
            // Delivered: the operation ends.
            Ok(n) if !query => Ok(n),
            // Length query or buffer too small: keep the result for the next call.
            other => {
                self.put_op(
                    h,
                    Operation::Encrypt {
                        mech,
                        key,
                        pending: Some(result),
                    },
                );
                other
            }
        }
    }

    /// C_DecryptInit.
    pub fn decrypt_init(
        &self,
        h: CK_SESSION_HANDLE,
        mech: &Mechanism,
        key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        let (slot, _) = self.session_slot(h)?;
        let (card_key, entry) = self.card_key(&slot, key, |u| u.decrypt)?;
        mechanism::check_params(mech, &entry.public_key.key_info())?;
        self.start_op(
            h,
            Operation::Decrypt {
                mech: mech.clone(),
                key: card_key,
                context_pin: None,
                pending: None,
            },
        )
    }

    /// C_Decrypt: the card's raw RSA operation, unpadded on the host.
    pub fn decrypt(&self, h: CK_SESSION_HANDLE, data: &[u8], out: OutBuf<'_>) -> Result<usize> {
        let (slot, _) = self.session_slot(h)?;
        let op = self.take_op(h)?;
        let Operation::Decrypt {
            mech,
            key,
            context_pin,
            pending,
        } = op
        else {
            self.put_op(h, op);
            return err(CKR_OPERATION_NOT_INITIALIZED);
        };
        let k = key.algorithm.size_bytes();
        let plain = match pending {
            Some(p) => p,
            None => {
                if matches!(out, OutBuf::Query) {
                    self.put_op(
                        h,
                        Operation::Decrypt {
                            mech,
                            key,
                            context_pin,
                            pending: None,
                        },
                    );
                    return Ok(k);
                }
                mechanism::check_ciphertext_len(&mech, k, data.len())?;
                if key.always_authenticate && context_pin.is_none() {
                    return err(CKR_USER_NOT_LOGGED_IN);
                }
                let raw = self.with_card(&slot, |state| {
                    state.transact(&slot.source, key.needs_login, |ch, card| {
                        private_operation(
                            ch,
                            card,
                            &key,
                            context_pin.as_ref().map(|p| &p[..]),
                            data,
                        )
                    })
                })?;
                mechanism::decrypt_unpad(&mech, k, &raw)?
            }
        };
        match deliver(&plain, out) {
            Err(e) => {
                self.put_op(
                    h,
                    Operation::Decrypt {
                        mech,
                        key,
                        context_pin: None,
                        pending: Some(plain),
                    },
                );
                Err(e)
            }
            Ok(n) => Ok(n),
        }
    }

    /// C_DeriveKey with ECDH1_DERIVE: the card computes the shared secret, which becomes a
    /// session object.
    pub fn derive_key(
        &self,
        h: CK_SESSION_HANDLE,
        mech: &Mechanism,
        base: CK_OBJECT_HANDLE,
        template: &[Attr],
    ) -> Result<CK_OBJECT_HANDLE> {
        let (slot, _) = self.session_slot(h)?;
        if mech.ty != CKM_ECDH1_DERIVE {
            return err(CKR_MECHANISM_INVALID);
        }
        let (key, entry) = self.card_key(&slot, base, |u| u.derive)?;
        let mechanism::KeyInfo::Ec { curve } = entry.public_key.key_info() else {
            return err(CKR_KEY_TYPE_INCONSISTENT);
        };
        let point = mechanism::ecdh_peer_point(&mech.param, curve)?;
        let value_len = attr::find_ulong(template, CKA_VALUE_LEN)?.map(|v| v as usize);
        let x = self.with_card(&slot, |state| {
            state.transact(&slot.source, key.needs_login, |ch, _| {
                piv::keys::key_agreement(ch, key.slot, key.algorithm, &point)
            })
        })?;
        let value = mechanism::derived_value(&x, value_len)?;
        let mut attributes = BTreeMap::new();
        for a in template {
            attributes.insert(a.ty, a.value.clone());
        }
        let sensitive = attr::find_bool(template, CKA_SENSITIVE)?.unwrap_or(false)
            || !attr::find_bool(template, CKA_EXTRACTABLE)?.unwrap_or(true);
        attributes
            .entry(CKA_CLASS)
            .or_insert_with(|| Zeroizing::new(attr::ulong(CKO_SECRET_KEY)));
        attributes
            .entry(CKA_KEY_TYPE)
            .or_insert_with(|| Zeroizing::new(attr::ulong(CKK_GENERIC_SECRET)));
        attributes.insert(
            CKA_VALUE_LEN,
            Zeroizing::new(attr::ulong(value.len() as CK_ULONG)),
        );
        attributes.insert(CKA_TOKEN, Zeroizing::new(attr::bool(false)));
        attributes.insert(CKA_SENSITIVE, Zeroizing::new(attr::bool(sensitive)));
        attributes.insert(CKA_EXTRACTABLE, Zeroizing::new(attr::bool(!sensitive)));
        attributes.insert(CKA_VALUE, Zeroizing::new(value.to_vec()));
        let fresh = self.handles.lock().fresh();
        self.session_objects.lock().insert(
            fresh,
            (
                h,
                SessionObject {
                    attributes,
                    sensitive,
                },
            ),
        );
        Ok(fresh)
    }
}

/// The card's private-key operation (GENERAL AUTHENTICATE) for a key the session may use.
/// A key that needs the PIN before every use was verified by C_Login(CKU_CONTEXT_SPECIFIC)
/// just before: one VERIFY per operation. Only when the card answers that the verification is
/// gone (another program's command came in between) is the PIN given for this very operation
/// presented again, in the same transaction as the operation.
fn private_operation(
    ch: &mut dyn crate::card::Channel,
    card: &mut crate::token::slot::Card,
    key: &CardKey,
    context_pin: Option<&[u8]>,
    input: &[u8],
) -> std::result::Result<zeroize::Zeroizing<Vec<u8>>, crate::card::CardError> {
    use crate::card::{CardError, StatusWord};
    match piv::keys::private_operation(ch, key.slot, key.algorithm, input) {
        Err(CardError::Status(StatusWord::SecurityStatus)) => {
            let Some(pin) = context_pin else {
                return Err(CardError::Status(StatusWord::SecurityStatus));
            };
            let status = piv::verify_pin(ch, Some(pin))?;
            card.pin.record(status);
            piv::keys::private_operation(ch, key.slot, key.algorithm, input)
        }
        other => other,
    }
}
