//! The card as a RustCrypto signer: card keys plug into the `cms` and `x509-cert` builders.

#[allow(unused_imports)]
use super::*;

// ---------------------------------------------------------------------------------------------
// The card as a RustCrypto signer

/// A signature made by the card, in the encoding X.509 and CMS carry (RSA as is, ECDSA as a DER
/// ECDSA-Sig-Value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardSignature(pub Vec<u8>);

impl SignatureBitStringEncoding for CardSignature {
    fn to_bitstring(&self) -> der::Result<BitString> {
        BitString::from_bytes(&self.0)
    }
}

/// The public half of a card key (SubjectPublicKeyInfo DER), as the builders want it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardPublicKey(pub Vec<u8>);

impl EncodePublicKey for CardPublicKey {
    fn to_public_key_der(&self) -> spki::Result<der::Document> {
        Ok(der::Document::from_der(&self.0)?)
    }
}

/// How a [`CardSigner`] reaches its key.
#[derive(Debug, Clone, Copy)]
enum Route {
    /// C_SignInit / C_Login(CKU_CONTEXT_SPECIFIC) / C_Sign on the private key object.
    Core {
        key: CK_OBJECT_HANDLE,
        always_authenticate: bool,
    },
    /// The core's host half ([`SignOp`]) around the core's typed private-key operation on a
    /// slot: for keys the token model does not offer for signing (a staged renewal key has no
    /// certificate yet, so its slot's defaults apply).
    Direct {
        /// The key wants the PIN right before each use.
        verify_pin: bool,
    },
}

/// A private key on the card that signs through the core, with SHA-256 (RSA PKCS#1 v1.5 or
/// ECDSA). The PIN is given again for keys that want it before every signature (9C).
pub struct CardSigner<'a> {
    card: &'a CardSession,
    slot: KeySlot,
    route: Route,
    public: PublicKey,
    pin: Zeroizing<Vec<u8>>,
    failure: RefCell<Option<ManagerError>>,
}

impl std::fmt::Debug for CardSigner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CardSigner(slot {}, {:?})", self.slot, self.route)
    }
}

impl<'a> CardSigner<'a> {
    /// The signing key in `slot` of a card the user is logged in to, used as PKCS#11 offers
    /// it (refused when its certificate does not allow signatures).
    pub fn new(card: &'a CardSession, slot: KeySlot, pin: &[u8]) -> Result<Self> {
        Self::build(card, slot, pin, false)
    }

    /// The key in `slot`, also when the token model does not offer it for signing (a staged
    /// key without certificate, a key-management key proving its owner's request).
    pub fn for_renewal(card: &'a CardSession, slot: KeySlot, pin: &[u8]) -> Result<Self> {
        Self::build(card, slot, pin, true)
    }

    fn build(card: &'a CardSession, slot: KeySlot, pin: &[u8], any_use: bool) -> Result<Self> {
        let (contents, _, _) = with(|lib| lib.card_snapshot(card.handle))?;
        let Some(entry) = contents.entry(slot) else {
            return fail(format!("slot {slot} holds no key"));
        };
        let route = if any_use && !entry.usage().sign {
            Route::Direct {
                verify_pin: entry.always_authenticate(),
            }
        } else {
            if !entry.usage().sign {
                return fail(format!(
                    "the certificate in slot {slot} does not allow signatures (key usage)"
                ));
            }
            let key = card
                .find(&[
                    attr_ulong(CKA_CLASS, CKO_PRIVATE_KEY),
                    attr_bytes(CKA_ID, &[slot.cka_id()]),
                ])?
                .first()
                .copied()
                .ok_or_else(|| ManagerError {
                    class: crate::manager::ErrorClass::Refused,
                    message: format!(
                        "the private key of slot {slot} is not available (log in first)"
                    ),
                })?;
            let always_authenticate = matches!(
                with(|lib| lib.get_attributes(card.handle, key, &[CKA_ALWAYS_AUTHENTICATE]))?.first(),
                Some(AttrAnswer::Value(v)) if v.first() == Some(&1)
            );
            Route::Core {
                key,
                always_authenticate,
            }
        };
        Ok(Self {
            card,
            slot,
            route,
            public: entry.public_key.clone(),
            pin: Zeroizing::new(pin.to_vec()),
            failure: RefCell::new(None),
        })
    }

    /// The slot of the key.
    pub fn slot(&self) -> KeySlot {
        self.slot
    }

    /// The key's public half.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Why the last signature failed, in words (the builders only see a generic error).
    pub fn take_failure(&self) -> Option<ManagerError> {
        self.failure.borrow_mut().take()
    }

    /// Turns a builder error into the card's reason when there is one.
    pub fn explain(&self, what: &str, e: impl std::fmt::Display) -> ManagerError {
        self.take_failure().unwrap_or_else(|| ManagerError {
            class: crate::manager::ErrorClass::Refused,
            message: format!("cannot build the {what}: {e}"),
        })
    }

    fn mechanism(&self) -> Mechanism {
        Mechanism {
            ty: crate::token::mechanism::signing_mechanism(
                &self.public.key_info(),
                HashAlg::Sha256,
            ),
            param: MechParam::None,
        }
    }

    fn raw_signature(&self, mech: &Mechanism, message: &[u8]) -> Result<Vec<u8>> {
        let h = self.card.handle;
        match self.route {
            Route::Core {
                key,
                always_authenticate,
            } => with(|lib| {
                lib.sign_init(h, mech, key)?;
                if always_authenticate {
                    lib.login(h, CKU_CONTEXT_SPECIFIC, &self.pin)?;
                }
                let len = lib.sign(h, message, OutBuf::Query)?;
                let mut sig = vec![0u8; len];
                let n = lib.sign(h, message, OutBuf::Into(&mut sig))?;
                sig.truncate(n);
                Ok(sig)
            })
            .map_err(|e| self.card.explain(e, true)),
            Route::Direct { verify_pin } => {
                let mut op = SignOp::new(mech, self.public.key_info())?;
                op.update(message)?;
                let input = op.card_input()?;
                let pin = verify_pin.then_some(&self.pin[..]);
                let answer = with(|lib| lib.private_operation_in_slot(h, self.slot, &input, pin))
                    .map_err(|e| self.card.explain(e, true))?;
                Ok(op.finish(&answer)?)
            }
        }
    }

    /// Signs `message` (hashed with SHA-256 on the host, signed by the card) and checks the
    /// signature with the public key. ECDSA signatures come back DER-encoded.
    pub fn sign_bytes(&self, message: &[u8]) -> Result<Vec<u8>> {
        let mech = self.mechanism();
        let raw = self.raw_signature(&mech, message)?;
        let mut op = VerifyOp::new(&mech, self.public.key_info())?;
        op.update(message)?;
        if op.verify(&self.public, &raw).is_err() {
            return fail(format!(
                "the card's signature with slot {} does not verify with its public key",
                self.slot
            ));
        }
        match self.public.curve() {
            None => Ok(raw),
            Some(curve) => ecdsa_raw_to_der(curve, &raw),
        }
    }
}

impl Keypair for CardSigner<'_> {
    type VerifyingKey = CardPublicKey;

    fn verifying_key(&self) -> CardPublicKey {
        CardPublicKey(self.public.to_spki_der())
    }
}

impl DynSignatureAlgorithmIdentifier for CardSigner<'_> {
    fn signature_algorithm_identifier(&self) -> spki::Result<AlgorithmIdentifierOwned> {
        Ok(signature_algorithm(&self.public))
    }
}

impl signature::Signer<CardSignature> for CardSigner<'_> {
    fn try_sign(&self, msg: &[u8]) -> std::result::Result<CardSignature, signature::Error> {
        match self.sign_bytes(msg) {
            Ok(sig) => Ok(CardSignature(sig)),
            Err(e) => {
                *self.failure.borrow_mut() = Some(e);
                Err(signature::Error::new())
            }
        }
    }
}

/// The signature algorithm a card key signs with: sha256WithRSAEncryption or
/// ecdsa-with-SHA256.
pub fn signature_algorithm(public: &PublicKey) -> AlgorithmIdentifierOwned {
    match public.key_info() {
        KeyInfo::Rsa { .. } => AlgorithmIdentifierOwned {
            oid: rfc5912::SHA_256_WITH_RSA_ENCRYPTION,
            parameters: Some(Any::from(der::asn1::Null)),
        },
        KeyInfo::Ec { .. } => AlgorithmIdentifierOwned {
            oid: rfc5912::ECDSA_WITH_SHA_256,
            parameters: None,
        },
    }
}

/// r‖s (PKCS#11) → DER ECDSA-Sig-Value (X.509, CMS).
pub fn ecdsa_raw_to_der(curve: Curve, raw: &[u8]) -> Result<Vec<u8>> {
    let bad = |_| ManagerError {
        class: crate::manager::ErrorClass::Refused,
        message: "the card returned a malformed ECDSA signature".into(),
    };
    Ok(match curve {
        Curve::P256 => p256::ecdsa::Signature::from_slice(raw)
            .map_err(bad)?
            .to_der()
            .as_bytes()
            .to_vec(),
        Curve::P384 => p384::ecdsa::Signature::from_slice(raw)
            .map_err(bad)?
            .to_der()
            .as_bytes()
            .to_vec(),
    })
}

/// DER ECDSA-Sig-Value → r‖s; `None` when it does not parse for this curve.
pub fn ecdsa_der_to_raw(curve: Curve, der_sig: &[u8]) -> Option<Vec<u8>> {
    match curve {
        Curve::P256 => p256::ecdsa::Signature::from_der(der_sig)
            .ok()
            .map(|s| s.to_bytes().to_vec()),
        Curve::P384 => p384::ecdsa::Signature::from_der(der_sig)
            .ok()
            .map(|s| s.to_bytes().to_vec()),
    }
}
