//! Writes through PKCS#11: certificates and private keys created on the card, key pairs
//! generated on it, objects destroyed, and the control manager's typed changes (an e-Cert
//! loaded whole, a renewal staged or installed, a slot emptied). Every write needs the user
//! logged in and then the management key: the PIN-protected one (ykman's format) if the card
//! holds one, else the factory default while it is still set. Each write is one change of the
//! card's change protocol ([`crate::applet::piv::plans`]) in one transaction: all or nothing
//! as any later reader sees it. A key-management key (9D) is never silently destroyed: it
//! moves with its certificate to the next retired slot and Key History follows; a card
//! without MOVE KEY refuses the write.

use super::mechanism::{Curve, PublicKey};
use super::objects::{CertFacts, ObjectId};
use super::slot::{Card, Login, Part, SlotState, Source};
use super::{attr, Attr, Error, Mechanism, Result};
use crate::applet::piv::plans::{self, Caps, Load, NewKey};
use crate::applet::piv::{
    self, admin, keys, KeyAlgorithm, KeySlot, ManagementAlgorithm, PinPolicy,
};
use crate::card::{CardError, Channel, StatusWord};
use cryptoki_sys::*;

type CardResult<T> = std::result::Result<T, CardError>;

/// Authenticates with the card's management key (stored PIN-protected, else the default).
/// The inner error says why no key could be used.
pub(crate) fn authenticate(ch: &mut dyn Channel) -> CardResult<Result<()>> {
    let meta = keys::reference_metadata(ch, piv::key_ref::MANAGEMENT)?;
    let algorithm = meta
        .and_then(|m| ManagementAlgorithm::from_id(m.algorithm))
        .unwrap_or(ManagementAlgorithm::TripleDes);
    let stored = match admin::stored_management_key(ch) {
        Ok(k) => k,
        // The PIN-protected key cannot be read before the PIN is verified.
        Err(CardError::Status(StatusWord::SecurityStatus)) => {
            return Ok(Err(Error::new(CKR_USER_NOT_LOGGED_IN)))
        }
        Err(e) => return Err(e),
    };
    if let Some(key) = stored {
        return match piv::authenticate_management(ch, algorithm, &key) {
            Ok(()) => Ok(Ok(())),
            Err(CardError::Status(StatusWord::SecurityStatus)) => {
                log::warn!("the PIN-protected management key does not match the card's");
                Ok(Err(Error::new(CKR_FUNCTION_FAILED)))
            }
            Err(e) => Err(e),
        };
    }
    if meta.is_none_or(|m| m.is_default) {
        return match piv::authenticate_management(
            ch,
            ManagementAlgorithm::TripleDes,
            &piv::DEFAULT_MANAGEMENT_KEY,
        ) {
            Ok(()) => Ok(Ok(())),
            Err(CardError::Status(StatusWord::SecurityStatus | StatusWord::IncorrectP1P2)) => {
                Ok(Err(Error::new(CKR_FUNCTION_FAILED)))
            }
            Err(e) => Err(e),
        };
    }
    log::warn!("the card's management key is neither stored PIN-protected nor the default: run `tessera setup`");
    Ok(Err(Error::new(CKR_FUNCTION_FAILED)))
}

/// Refuses a write to a key slot the token does not show (card authentication is written
/// through its own token).
fn shown(part: Part, slot: KeySlot) -> Result<KeySlot> {
    if part.shows(Some(slot)) {
        Ok(slot)
    } else {
        log::warn!("slot {slot} is not on this token");
        Err(Error::new(CKR_ATTRIBUTE_VALUE_INVALID))
    }
}

fn need_user(state: &SlotState) -> Result<()> {
    if state.login == Login::User {
        Ok(())
    } else {
        Err(Error::new(CKR_USER_NOT_LOGGED_IN))
    }
}

/// The slot a template names by CKA_ID (`Ok(None)`: no CKA_ID or not a PIV slot ID).
fn slot_by_id(template: &[Attr]) -> Option<KeySlot> {
    attr::find(template, CKA_ID).and_then(KeySlot::from_cka_id)
}

/// The slot for a new key from the usage a template asks for.
fn slot_by_usage(template: &[Attr]) -> Result<KeySlot> {
    let flag = |t| attr::find_bool(template, t).map(|v| v.unwrap_or(false));
    let sign = flag(CKA_SIGN)?;
    let decrypt = flag(CKA_DECRYPT)? || flag(CKA_UNWRAP)? || flag(CKA_DERIVE)?;
    Ok(if decrypt && !sign {
        KeySlot::KEY_MANAGEMENT
    } else {
        KeySlot::AUTHENTICATION
    })
}

fn pin_policy(template: &[Attr]) -> Result<PinPolicy> {
    Ok(match attr::find_bool(template, CKA_ALWAYS_AUTHENTICATE)? {
        Some(true) => PinPolicy::Always,
        _ => PinPolicy::Default,
    })
}

/// What the card can do that the change protocol relies on.
pub(crate) fn caps(card: &Card) -> Caps {
    let c = &card.contents;
    Caps {
        metadata: c.has_metadata,
        move_key: matches!(c.version, Some([major, minor, _]) if (major, minor) >= (5, 7)),
    }
}

/// Maps the refusals of the change planner to PKCS#11.
fn change_error(e: CardError) -> Error {
    match e {
        CardError::Status(StatusWord::InsNotSupported | StatusWord::ClaNotSupported) => {
            Error::new(CKR_FUNCTION_NOT_SUPPORTED)
        }
        CardError::Status(StatusWord::NoSpace) => Error::new(CKR_DEVICE_MEMORY),
        CardError::Status(StatusWord::ReferenceNotFound) => Error::new(CKR_KEY_HANDLE_INVALID),
        other => other.into(),
    }
}

/// Runs one change in one transaction: the management key, then `f`, then the card read
/// again so the token shows the result. The user must be logged in.
pub(crate) fn run_change<R>(
    source: &Source,
    state: &mut SlotState,
    mut f: impl FnMut(&mut dyn Channel, &mut Card) -> CardResult<Result<R>>,
) -> Result<R> {
    need_user(state)?;
    state.transact(source, true, |ch, card| {
        // A change left unfinished by someone else is finished or undone first.
        if card.contents.pending.is_some() {
            card.recover(ch)?;
        }
        if let Err(e) = authenticate(ch)? {
            return Ok(Err(e));
        }
        let out = match f(ch, card) {
            Ok(r) => r,
            Err(e @ CardError::Status(_)) => Err(change_error(e)),
            Err(e) => return Err(e),
        };
        card.reread(ch)?;
        Ok(out)
    })?
}

/// Loads a key into `slot`, keeping an occupied key-management slot's old key in history.
fn write_key(
    source: &Source,
    state: &mut SlotState,
    slot: KeySlot,
    key: NewKey<'_>,
    expect: Option<&PublicKey>,
) -> Result<()> {
    run_change(source, state, |ch, card| {
        let occupied = card.contents.entry(slot).is_some();
        let load = Load {
            slot,
            key: &key,
            certificate: None,
            chain: None,
            keep_old: occupied && slot == KeySlot::KEY_MANAGEMENT,
        };
        let accept = |info: &keys::PublicKeyInfo| {
            expect.is_none_or(|want| {
                PublicKey::from_spki_der(&info.spki_der).ok().as_ref() == Some(want)
            })
        };
        let public = plans::load(ch, caps(card), &load, &accept)?;
        if let (NewKey::Generate { .. }, Some(public)) = (&key, public) {
            card.remember_generated(slot, public);
        }
        card.id_aliases.remove(&slot);
        Ok(Ok(()))
    })
}

/// C_GenerateKeyPair: returns the slot that now holds the key.
pub fn generate(
    source: &Source,
    part: Part,
    state: &mut SlotState,
    mech: &Mechanism,
    public_template: &[Attr],
    private_template: &[Attr],
) -> Result<KeySlot> {
    let algorithm = match mech.ty {
        CKM_RSA_PKCS_KEY_PAIR_GEN => {
            let bits = attr::find_ulong(public_template, CKA_MODULUS_BITS)?
                .ok_or(Error::new(CKR_TEMPLATE_INCOMPLETE))?;
            match KeyAlgorithm::rsa_with_bits(bits as usize) {
                Some(KeyAlgorithm::Rsa1024) | None => return Err(Error::new(CKR_KEY_SIZE_RANGE)),
                Some(a) => a,
            }
        }
        CKM_EC_KEY_PAIR_GEN => {
            let params = attr::find(public_template, CKA_EC_PARAMS)
                .or_else(|| attr::find(private_template, CKA_EC_PARAMS))
                .ok_or(Error::new(CKR_TEMPLATE_INCOMPLETE))?;
            match Curve::parse_ec_params(params)? {
                Curve::P256 => KeyAlgorithm::EccP256,
                Curve::P384 => KeyAlgorithm::EccP384,
            }
        }
        _ => return Err(Error::new(CKR_MECHANISM_INVALID)),
    };
    let named =
        attr::find(private_template, CKA_ID).or_else(|| attr::find(public_template, CKA_ID));
    let slot = match named {
        Some(id) => KeySlot::from_cka_id(id).ok_or(Error::new(CKR_ATTRIBUTE_VALUE_INVALID))?,
        None => part.default_key_slot(slot_by_usage(private_template)?),
    };
    let slot = shown(part, slot)?;
    let policy = pin_policy(private_template)?;
    write_key(
        source,
        state,
        slot,
        NewKey::Generate { algorithm, policy },
        None,
    )?;
    Ok(slot)
}

/// C_CreateObject: returns the identity of the created object.
pub fn create(
    source: &Source,
    part: Part,
    state: &mut SlotState,
    template: &[Attr],
) -> Result<ObjectId> {
    let class =
        attr::find_ulong(template, CKA_CLASS)?.ok_or(Error::new(CKR_TEMPLATE_INCOMPLETE))?;
    match class {
        CKO_CERTIFICATE => create_certificate(source, part, state, template),
        CKO_PRIVATE_KEY => create_private_key(source, part, state, template),
        CKO_PUBLIC_KEY => {
            // The public half of a key already on the card: answer with that object.
            let pk = public_key_from_template(template)?;
            let card = state
                .card
                .as_ref()
                .ok_or(Error::new(CKR_TOKEN_NOT_PRESENT))?;
            card.contents
                .entries
                .iter()
                .find(|e| e.public_key == pk && part.shows(Some(e.slot)))
                .map(|e| ObjectId::PublicKey(e.slot))
                .ok_or(Error::new(CKR_TEMPLATE_INCONSISTENT))
        }
        _ => Err(Error::new(CKR_TEMPLATE_INCONSISTENT)),
    }
}

fn public_key_from_template(template: &[Attr]) -> Result<PublicKey> {
    let key_type =
        attr::find_ulong(template, CKA_KEY_TYPE)?.ok_or(Error::new(CKR_TEMPLATE_INCOMPLETE))?;
    let get = |t| attr::find(template, t).ok_or(Error::new(CKR_TEMPLATE_INCOMPLETE));
    match key_type {
        CKK_RSA => Ok(PublicKey::from_rsa_components(
            get(CKA_MODULUS)?,
            get(CKA_PUBLIC_EXPONENT)?,
        )?),
        CKK_EC => Ok(PublicKey::from_ec_components(
            get(CKA_EC_PARAMS)?,
            get(CKA_EC_POINT)?,
        )?),
        _ => Err(Error::new(CKR_KEY_TYPE_INCONSISTENT)),
    }
}

fn create_certificate(
    source: &Source,
    part: Part,
    state: &mut SlotState,
    template: &[Attr],
) -> Result<ObjectId> {
    need_user(state)?;
    if let Some(t) = attr::find_ulong(template, CKA_CERTIFICATE_TYPE)? {
        if t != CKC_X_509 {
            return Err(Error::new(CKR_TEMPLATE_INCONSISTENT));
        }
    }
    let der = attr::find(template, CKA_VALUE).ok_or(Error::new(CKR_TEMPLATE_INCOMPLETE))?;
    let facts = CertFacts::parse(der).ok_or(Error::new(CKR_ATTRIBUTE_VALUE_INVALID))?;
    let cert_key = PublicKey::from_spki_der(&facts.spki)
        .map_err(|_| Error::new(CKR_ATTRIBUTE_VALUE_INVALID))?;
    let card = state
        .card
        .as_ref()
        .ok_or(Error::new(CKR_TOKEN_NOT_PRESENT))?;
    // The slot whose key the certificate certifies: named by CKA_ID, else found by key.
    let slot = match slot_by_id(template) {
        Some(s) => s,
        None => card
            .contents
            .entries
            .iter()
            .find(|e| e.public_key == cert_key)
            .map(|e| e.slot)
            .ok_or(Error::new(CKR_ATTRIBUTE_VALUE_INVALID))?,
    };
    let slot = shown(part, slot)?;
    match card.contents.entry(slot) {
        Some(e) if e.public_key == cert_key => {}
        Some(_) => {
            log::warn!("certificate does not match the key in slot {slot}");
            return Err(Error::new(CKR_ATTRIBUTE_VALUE_INVALID));
        }
        None if card.contents.has_metadata => {
            log::warn!("slot {slot} has no key for this certificate");
            return Err(Error::new(CKR_ATTRIBUTE_VALUE_INVALID));
        }
        None => {}
    }
    let der = der.to_vec();
    run_change(source, state, |ch, _| {
        plans::write_certificate(ch, slot, &der, None)?;
        Ok(Ok(()))
    })?;
    Ok(ObjectId::Certificate(slot))
}

/// A private key as a C_CreateObject template gives it.
struct TemplateKey<'a> {
    key: keys::ImportKey<'a>,
    policy: PinPolicy,
    /// Its public key, as the card must report it after the import.
    expect: Option<PublicKey>,
}

fn template_key(template: &[Attr]) -> Result<TemplateKey<'_>> {
    let key_type =
        attr::find_ulong(template, CKA_KEY_TYPE)?.ok_or(Error::new(CKR_TEMPLATE_INCOMPLETE))?;
    let get = |t| attr::find(template, t).ok_or(Error::new(CKR_TEMPLATE_INCOMPLETE));
    let policy = pin_policy(template)?;
    match key_type {
        CKK_RSA => {
            let modulus = get(CKA_MODULUS)?;
            let bits = modulus.iter().skip_while(|b| **b == 0).count() * 8;
            let algorithm = match KeyAlgorithm::rsa_with_bits(bits) {
                Some(KeyAlgorithm::Rsa1024) | None => return Err(Error::new(CKR_KEY_SIZE_RANGE)),
                Some(a) => a,
            };
            let expect = attr::find(template, CKA_PUBLIC_EXPONENT)
                .and_then(|e| PublicKey::from_rsa_components(modulus, e).ok());
            Ok(TemplateKey {
                key: keys::ImportKey::Rsa {
                    algorithm,
                    p: get(CKA_PRIME_1)?,
                    q: get(CKA_PRIME_2)?,
                    dp: get(CKA_EXPONENT_1)?,
                    dq: get(CKA_EXPONENT_2)?,
                    qinv: get(CKA_COEFFICIENT)?,
                },
                policy,
                expect,
            })
        }
        CKK_EC => {
            let algorithm = match Curve::parse_ec_params(get(CKA_EC_PARAMS)?)? {
                Curve::P256 => KeyAlgorithm::EccP256,
                Curve::P384 => KeyAlgorithm::EccP384,
            };
            let scalar = get(CKA_VALUE)?;
            Ok(TemplateKey {
                key: keys::ImportKey::Ec { algorithm, scalar },
                policy,
                expect: ec_public_key(algorithm, scalar),
            })
        }
        _ => Err(Error::new(CKR_KEY_TYPE_INCONSISTENT)),
    }
}

fn create_private_key(
    source: &Source,
    part: Part,
    state: &mut SlotState,
    template: &[Attr],
) -> Result<ObjectId> {
    let slot = match slot_by_id(template) {
        Some(s) => s,
        None => part.default_key_slot(slot_by_usage(template)?),
    };
    let slot = shown(part, slot)?;
    let parsed = template_key(template)?;
    write_key(
        source,
        state,
        slot,
        NewKey::Import {
            key: &parsed.key,
            policy: parsed.policy,
        },
        parsed.expect.as_ref(),
    )?;
    if let Some(id) = attr::find(template, CKA_ID).filter(|id| KeySlot::from_cka_id(id).is_none()) {
        if let Some(card) = state.card.as_mut() {
            card.id_aliases.insert(slot, id.to_vec());
        }
    }
    Ok(ObjectId::PrivateKey(slot))
}

/// Loads an e-Cert whole into `slot` in one change: the private key from `key_template`
/// (as for C_CreateObject), its certificate and the CA chain (concatenated DER, may be
/// empty). An occupied key-management slot keeps its old key in Key History.
pub fn load_ecert(
    source: &Source,
    state: &mut SlotState,
    slot: KeySlot,
    key_template: &[Attr],
    certificate: &[u8],
    chain: &[u8],
) -> Result<()> {
    let parsed = template_key(key_template)?;
    let cert = CertFacts::parse(certificate).ok_or(Error::new(CKR_ATTRIBUTE_VALUE_INVALID))?;
    let cert_key = PublicKey::from_spki_der(&cert.spki)?;
    if parsed.expect.as_ref().is_some_and(|k| *k != cert_key) {
        return Err(Error::new(CKR_TEMPLATE_INCONSISTENT));
    }
    let key = NewKey::Import {
        key: &parsed.key,
        policy: parsed.policy,
    };
    run_change(source, state, |ch, card| {
        let load = Load {
            slot,
            key: &key,
            certificate: Some(certificate),
            chain: Some(chain),
            keep_old: slot == KeySlot::KEY_MANAGEMENT && card.contents.entry(slot).is_some(),
        };
        let accept = |info: &keys::PublicKeyInfo| {
            PublicKey::from_spki_der(&info.spki_der).is_ok_and(|k| k == cert_key)
        };
        plans::load(ch, caps(card), &load, &accept)?;
        card.id_aliases.remove(&slot);
        Ok(Ok(()))
    })
}

/// C_DestroyObject for a token object.
pub fn destroy(source: &Source, state: &mut SlotState, id: ObjectId) -> Result<()> {
    need_user(state)?;
    let (delete_key, slot) = match id {
        ObjectId::Certificate(s) => (false, s),
        ObjectId::PrivateKey(s) => (true, s),
        ObjectId::PublicKey(_) | ObjectId::Profile => {
            return Err(Error::new(CKR_ACTION_PROHIBITED))
        }
    };
    run_change(source, state, |ch, card| {
        plans::clear(ch, caps(card), slot, delete_key)?;
        Ok(Ok(()))
    })
}

/// The public key of an EC private scalar (what the card must report after an import).
fn ec_public_key(algorithm: KeyAlgorithm, scalar: &[u8]) -> Option<PublicKey> {
    match algorithm {
        KeyAlgorithm::EccP256 => p256::SecretKey::from_slice(scalar)
            .ok()
            .map(|k| PublicKey::P256(k.public_key())),
        KeyAlgorithm::EccP384 => p384::SecretKey::from_slice(scalar)
            .ok()
            .map(|k| PublicKey::P384(k.public_key())),
        _ => None,
    }
}
