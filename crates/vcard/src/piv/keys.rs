//! Key commands of the PIV applet: GENERAL AUTHENTICATE (management-key authentication and
//! private-key operations), GENERATE ASYMMETRIC KEY PAIR, and the Yubico IMPORT, MOVE KEY,
//! GET METADATA and ATTEST. Slot rules (which references hold keys, default PIN policies) live
//! here; the arithmetic lives in `crypto.rs`, and which algorithms and policies a card family
//! has in its profile.

use super::{seal_sw, Apdu, Applet, PendingAuth, Reply, Sw};
use crate::card::tlv;
use crate::crypto::{self, CryptoError, KeyAlgorithm, MgmtAlgorithm, PrivateKey};
use crate::profile::Profile;
use crate::state::{
    CardState, KeyError, KeyOrigin, PinPolicy, TouchPolicy, SLOT_ATTESTATION, TAG_ATTESTATION_CERT,
};
use zeroize::Zeroizing;

/// Reference of the card management key.
const MGMT_KEY: u8 = 0x9B;

/// Slots that hold keys the host can use: 9A, 9C, 9D, 9E and the retired 82–95.
fn is_key_slot(slot: u8) -> bool {
    matches!(slot, 0x9A | 0x9C | 0x9D | 0x9E | 0x82..=0x95)
}

/// YubiKey default PIN policy of a slot.
fn default_pin_policy(slot: u8) -> PinPolicy {
    match slot {
        0x9C => PinPolicy::Always,
        0x9E => PinPolicy::Never,
        _ => PinPolicy::Once,
    }
}

/// Maps a crypto failure on host-supplied input to a status word.
fn crypto_sw(e: CryptoError) -> Sw {
    match e {
        CryptoError::InvalidInput | CryptoError::Unsupported => Sw::WRONG_DATA,
        CryptoError::InvalidKey | CryptoError::Certificate(_) => Sw(0x6F00),
    }
}

/// Maps a failure to seal or open a stored key to a status word.
fn key_sw(e: KeyError) -> Sw {
    match e {
        KeyError::Crypto(e) => crypto_sw(e),
        KeyError::Seal(e) => seal_sw(e),
    }
}

/// The objects of a dynamic authentication template `7C { … }`, in order.
fn dynamic_auth(data: &[u8]) -> Result<Vec<(u32, &[u8])>, Sw> {
    let content = tlv::expect_only(data, 0x7C).map_err(|_| Sw::WRONG_DATA)?;
    tlv::objects(content)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| Sw::WRONG_DATA)
}

fn find<'a>(items: &[(u32, &'a [u8])], tag: u32) -> Option<&'a [u8]> {
    items.iter().find(|(t, _)| *t == tag).map(|(_, v)| *v)
}

/// `7C { tag value }`.
fn auth_response(tag: u32, value: &[u8]) -> Vec<u8> {
    tlv::encode(0x7C, &tlv::encode(tag, value))
}

/// The key algorithm named by `id`, when the card has it.
fn key_algorithm(profile: Profile, id: u8) -> Option<KeyAlgorithm> {
    KeyAlgorithm::from_id(id).filter(|&a| profile.has_key_algorithm(a))
}

/// PIN and touch policy bytes from the optional `AA`/`AB` objects (0 or absent = default); a
/// card without Yubico's policies refuses them.
fn policies(
    profile: Profile,
    items: &[(u32, &[u8])],
    slot: u8,
) -> Result<(PinPolicy, TouchPolicy), Sw> {
    if !profile.has_key_policies() && items.iter().any(|(t, _)| matches!(t, 0xAA | 0xAB)) {
        return Err(Sw::WRONG_DATA);
    }
    let byte = |tag| match find(items, tag) {
        None => Ok(0),
        Some([b]) => Ok(*b),
        Some(_) => Err(Sw::WRONG_DATA),
    };
    let pin = match byte(0xAA)? {
        0 => default_pin_policy(slot),
        b => PinPolicy::from_id(b).ok_or(Sw::WRONG_DATA)?,
    };
    let touch = match byte(0xAB)? {
        0 => TouchPolicy::Never,
        b => TouchPolicy::from_id(b).ok_or(Sw::WRONG_DATA)?,
    };
    Ok((pin, touch))
}

impl Applet {
    /// GENERAL AUTHENTICATE: P2 9B authenticates the management key, a key slot uses its key.
    pub(super) fn general_authenticate(&mut self, state: &mut CardState, cmd: &Apdu<'_>) -> Reply {
        if cmd.p2 == MGMT_KEY {
            return self.authenticate_management(state, cmd);
        }
        if !is_key_slot(cmd.p2) {
            return Err(Sw::WRONG_P1P2);
        }
        let slot = state.keys.get(&cmd.p2).ok_or(Sw::NO_REFERENCE)?;
        if cmd.p1 != slot.algorithm.id() {
            return Err(Sw::WRONG_DATA);
        }
        let allowed = match slot.pin_policy {
            PinPolicy::Never => true,
            PinPolicy::Once => self.pin_verified,
            PinPolicy::Always => self.pin_verified && self.pin_fresh,
        };
        if !allowed {
            return Err(Sw::SECURITY);
        }
        let items = dynamic_auth(cmd.data)?;
        if find(&items, 0x82) != Some(&[][..]) {
            return Err(Sw::WRONG_DATA);
        }
        // A key sealed to the storage key opens with what the verified PIN unwrapped.
        let storage = if slot.is_sealed_to_storage() {
            Some(self.verified_storage(state).ok_or(Sw::SECURITY)?)
        } else {
            None
        };
        let key = state.open_key(slot, storage.as_ref()).map_err(key_sw)?;
        let result = match (find(&items, 0x81), find(&items, 0x85)) {
            (Some(challenge), None) if !challenge.is_empty() => match key {
                PrivateKey::Rsa(_) => key.rsa_raw(challenge).map_err(crypto_sw)?,
                _ => Zeroizing::new(key.sign_prehash(challenge).map_err(crypto_sw)?),
            },
            (None, Some(point)) => key.ecdh(point).map_err(crypto_sw)?,
            _ => return Err(Sw::WRONG_DATA),
        };
        if slot.pin_policy == PinPolicy::Always {
            self.pin_fresh = false;
        }
        Ok(auth_response(0x82, &result))
    }

    /// Management key authentication, mutual (witness then challenge, as yubico-piv-tool and
    /// ykman do) or external (card challenge, host response).
    fn authenticate_management(&mut self, state: &CardState, cmd: &Apdu<'_>) -> Reply {
        let alg = MgmtAlgorithm::from_id(cmd.p1).ok_or(Sw::WRONG_P1P2)?;
        if alg != state.management_key.algorithm {
            return Err(Sw::WRONG_P1P2);
        }
        let items = dynamic_auth(cmd.data)?;
        let key = state.management_key().map_err(seal_sw)?;
        let key = &key[..];
        let block = alg.block_len();
        let pending = self.pending_auth.take();
        let fail = |applet: &mut Applet| {
            applet.mgmt_authenticated = false;
            Err(Sw::SECURITY)
        };
        // An empty 82 ("send me your response") is how OpenSC asks; yubico-piv-tool omits it.
        let response = find(&items, 0x82).filter(|r| !r.is_empty());
        match (find(&items, 0x80), find(&items, 0x81), response) {
            // Step 1 of mutual authentication: send the encrypted witness.
            (Some([]), None, None) => {
                let witness = Zeroizing::new(crypto::random_bytes(block));
                let encrypted = crypto::mgmt_encrypt(alg, key, &witness).map_err(crypto_sw)?;
                self.pending_auth = Some(PendingAuth::Witness(witness));
                Ok(auth_response(0x80, &encrypted))
            }
            // Step 2: the host proves it decrypted the witness and challenges the card.
            (Some(witness), Some(challenge), None) if !witness.is_empty() => {
                let Some(PendingAuth::Witness(expected)) = pending else {
                    return fail(self);
                };
                if !crypto::ct_eq(&expected, witness) {
                    return fail(self);
                }
                if challenge.len() != block {
                    return Err(Sw::WRONG_DATA);
                }
                let answer = crypto::mgmt_encrypt(alg, key, challenge).map_err(crypto_sw)?;
                self.mgmt_authenticated = true;
                Ok(auth_response(0x82, &answer))
            }
            // External authentication, step 1: the card's challenge.
            (None, Some([]), None) => {
                let challenge = Zeroizing::new(crypto::random_bytes(block));
                self.pending_auth = Some(PendingAuth::Challenge(challenge.clone()));
                Ok(auth_response(0x81, &challenge))
            }
            // Step 2: the host's encryption of it.
            (None, None, Some(response)) if !response.is_empty() => {
                let Some(PendingAuth::Challenge(challenge)) = pending else {
                    return fail(self);
                };
                let expected = crypto::mgmt_encrypt(alg, key, &challenge).map_err(crypto_sw)?;
                if !crypto::ct_eq(&expected, response) {
                    return fail(self);
                }
                self.mgmt_authenticated = true;
                Ok(Vec::new())
            }
            _ => Err(Sw::WRONG_DATA),
        }
    }

    /// GENERATE ASYMMETRIC KEY PAIR: `AC { 80 alg [AA pin] [AB touch] }` → `7F49 { … }`.
    pub(super) fn generate(&mut self, state: &mut CardState, cmd: &Apdu<'_>) -> Reply {
        if cmd.p1 != 0x00 || !is_key_slot(cmd.p2) {
            return Err(Sw::WRONG_P1P2);
        }
        if !self.mgmt_authenticated {
            return Err(Sw::SECURITY);
        }
        let template = tlv::expect_only(cmd.data, 0xAC).map_err(|_| Sw::WRONG_DATA)?;
        let items = tlv::objects(template)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| Sw::WRONG_DATA)?;
        let alg = match find(&items, 0x80) {
            Some([id]) => key_algorithm(state.profile, *id).ok_or(Sw::WRONG_DATA)?,
            _ => return Err(Sw::WRONG_DATA),
        };
        let (pin, touch) = policies(state.profile, &items, cmd.p2)?;
        let key = PrivateKey::generate(alg).map_err(crypto_sw)?;
        let stored = state
            .seal_key(cmd.p2, &key, pin, touch, KeyOrigin::Generated)
            .map_err(key_sw)?;
        state.keys.insert(cmd.p2, stored);
        self.changed = true;
        Ok(tlv::encode(0x7F49, &key.public_key_template()))
    }

    /// IMPORT ASYMMETRIC KEY (Yubico): RSA from `01 p, 02 q` (the CRT values `03`–`05` are
    /// recomputed), EC from `06 scalar`; optional `AA`/`AB` policies.
    pub(super) fn import_key(&mut self, state: &mut CardState, cmd: &Apdu<'_>) -> Reply {
        let alg = key_algorithm(state.profile, cmd.p1).ok_or(Sw::WRONG_P1P2)?;
        if !is_key_slot(cmd.p2) && cmd.p2 != SLOT_ATTESTATION {
            return Err(Sw::WRONG_P1P2);
        }
        if !self.mgmt_authenticated {
            return Err(Sw::SECURITY);
        }
        let items = tlv::objects(cmd.data)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| Sw::WRONG_DATA)?;
        let key = match alg.rsa_bits() {
            Some(bits) => {
                let half = bits / 16;
                let (Some(p), Some(q)) = (find(&items, 0x01), find(&items, 0x02)) else {
                    return Err(Sw::WRONG_DATA);
                };
                if p.len() > half || q.len() > half {
                    return Err(Sw::WRONG_DATA);
                }
                PrivateKey::from_rsa_primes(p, q).map_err(|_| Sw::WRONG_DATA)?
            }
            None => {
                let scalar = find(&items, 0x06).ok_or(Sw::WRONG_DATA)?;
                PrivateKey::from_ec_scalar(alg, scalar).map_err(|_| Sw::WRONG_DATA)?
            }
        };
        if key.algorithm().ok() != Some(alg) {
            return Err(Sw::WRONG_DATA);
        }
        let (pin, touch) = policies(state.profile, &items, cmd.p2)?;
        let stored = state
            .seal_key(cmd.p2, &key, pin, touch, KeyOrigin::Imported)
            .map_err(key_sw)?;
        state.keys.insert(cmd.p2, stored);
        self.changed = true;
        Ok(Vec::new())
    }

    /// MOVE KEY (Yubico 5.7): P2 source, P1 destination or FF to delete. Certificates stay.
    pub(super) fn move_key(&mut self, state: &mut CardState, cmd: &Apdu<'_>) -> Reply {
        let (to, from) = (cmd.p1, cmd.p2);
        if !is_key_slot(from) || (to != 0xFF && (!is_key_slot(to) || to == from)) {
            return Err(Sw::WRONG_P1P2);
        }
        if !self.mgmt_authenticated {
            return Err(Sw::SECURITY);
        }
        let key = state.keys.remove(&from).ok_or(Sw::NO_REFERENCE)?;
        if to != 0xFF {
            state.keys.insert(to, key);
        }
        self.changed = true;
        Ok(Vec::new())
    }

    /// GET METADATA (Yubico): PIN/PUK (80/81), management key (9B) or a key slot; nothing at
    /// all, successfully, on a card whose profile answers so.
    pub(super) fn metadata(&mut self, state: &CardState, cmd: &Apdu<'_>) -> Reply {
        if state.profile.empty_metadata() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        match cmd.p2 {
            0x80 | 0x81 => {
                let (reference, default) = if cmd.p2 == 0x80 {
                    (&state.pin, state.pin_is_default())
                } else {
                    (&state.puk, state.puk_is_default())
                };
                tlv::push_do(&mut out, 0x01, &[0xFF]);
                tlv::push_do(&mut out, 0x05, &[u8::from(default)]);
                tlv::push_do(&mut out, 0x06, &[reference.max_tries, reference.tries_left]);
            }
            MGMT_KEY => {
                let mk = &state.management_key;
                tlv::push_do(&mut out, 0x01, &[mk.algorithm.id()]);
                tlv::push_do(&mut out, 0x02, &[0x00, mk.touch_policy.id()]);
                tlv::push_do(
                    &mut out,
                    0x05,
                    &[u8::from(state.management_key_is_default())],
                );
            }
            slot if is_key_slot(slot) || slot == SLOT_ATTESTATION => {
                let k = state.keys.get(&slot).ok_or(Sw::NO_REFERENCE)?;
                let key = k.public_key().map_err(crypto_sw)?;
                tlv::push_do(&mut out, 0x01, &[k.algorithm.id()]);
                tlv::push_do(&mut out, 0x02, &[k.pin_policy.id(), k.touch_policy.id()]);
                tlv::push_do(&mut out, 0x03, &[k.origin.id()]);
                tlv::push_do(&mut out, 0x04, &key.template());
            }
            _ => return Err(Sw::NO_REFERENCE),
        }
        Ok(out)
    }

    /// ATTEST (Yubico): a certificate for a generated key, signed by the F9 key.
    pub(super) fn attest(&mut self, state: &CardState, cmd: &Apdu<'_>) -> Reply {
        if !is_key_slot(cmd.p1) {
            return Err(Sw::WRONG_P1P2);
        }
        let k = state.keys.get(&cmd.p1).ok_or(Sw::NO_REFERENCE)?;
        if k.origin != KeyOrigin::Generated {
            return Err(Sw::WRONG_DATA);
        }
        let attestation = state.keys.get(&SLOT_ATTESTATION).ok_or(Sw::NO_REFERENCE)?;
        // The attestation key is sealed under the file key: ATTEST needs no PIN.
        let signer = state.open_key(attestation, None).map_err(key_sw)?;
        // The stored object is 53 { 70 cert … }; the issuer comes from that certificate.
        let cert = state
            .objects
            .get(&TAG_ATTESTATION_CERT)
            .and_then(|o| tlv::expect_only(o, 0x53).ok())
            .and_then(|inner| tlv::find(inner, 0x70).ok().flatten());
        let facts = crypto::AttestedFacts {
            slot: cmd.p1,
            version: state.profile.version().ok_or(Sw::WRONG_INS)?,
            serial: state.profile.attests_serial().then_some(state.serial),
            pin_policy: k.pin_policy.id(),
            touch_policy: k.touch_policy.id(),
        };
        let subject = k.public_key().map_err(crypto_sw)?;
        crypto::attestation_certificate(&signer, cert, &subject, facts).map_err(crypto_sw)
    }
}
