//! Shared helpers of the module tests that go through the `cryptoki` crate (module_inprocess.rs,
//! module_pcscd.rs): finding and loading the built `libtessera_pkcs11.so` once per test binary,
//! initialising it around each test, reading the card back independently of the module, and
//! checking the module's answers with RustCrypto on the host.
//!
//! The module is process-global: every test takes [`Initialized`], which holds one lock for
//! the whole test and finalises the module when dropped (also when an assertion fails).

#![allow(dead_code)]

pub mod locate;
pub mod matrix;
pub mod running;

pub use locate::module_path;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use cryptoki_sys::{CK_FUNCTION_LIST, CK_RV, CK_SESSION_HANDLE, CK_SLOT_ID};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use tessera::applet::piv::{self, admin, keys, KeySlot, PinStatus};
use tessera::card::{self, CardError, Channel, Transport};
use tessera::vcard::{CardFile, CardState, VirtualTransport};

/// Factory PIN and PUK of the virtual card.
pub const PIN: &str = "123456";
/// Factory PUK.
pub const PUK: &str = "12345678";

/// DER OID of P-256 (CKA_EC_PARAMS).
pub const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
/// DER OID of P-384 (CKA_EC_PARAMS).
pub const P384_PARAMS: [u8; 7] = [0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22];

struct Loaded {
    pkcs11: Pkcs11,
    /// The same library opened once more for what cryptoki does not wrap (C_CloseAllSessions,
    /// a single-part C_Sign after a context-specific login). dlopen hands out the same
    /// instance, so both see one module state.
    _lib: libloading::Library,
    list: &'static CK_FUNCTION_LIST,
}

fn loaded() -> &'static Loaded {
    static LOADED: OnceLock<Loaded> = OnceLock::new();
    LOADED.get_or_init(|| {
        let path = module_path();
        let pkcs11 = Pkcs11::new(&path).unwrap_or_else(|e| panic!("load {}: {e}", path.display()));
        // SAFETY: loading the module again only bumps its reference count; the Library lives
        // in a static, so the function list stays valid for the whole process.
        let lib = unsafe { libloading::Library::new(&path) }
            .unwrap_or_else(|e| panic!("load {}: {e}", path.display()));
        type GetList = unsafe extern "C" fn(*mut *mut CK_FUNCTION_LIST) -> CK_RV;
        // SAFETY: the symbol has the C_GetFunctionList signature (PKCS#11 2.40).
        let get: libloading::Symbol<'_, GetList> =
            unsafe { lib.get(b"C_GetFunctionList\0") }.expect("C_GetFunctionList exported");
        let mut list: *mut CK_FUNCTION_LIST = std::ptr::null_mut();
        // SAFETY: `list` is a valid out-pointer.
        let rv = unsafe { get(&mut list) };
        assert_eq!(rv, cryptoki_sys::CKR_OK);
        assert!(!list.is_null());
        // SAFETY: the module returns a pointer to its static function list, valid as long as
        // the library stays loaded (forever: it is held in this static).
        let list = unsafe { &*list };
        Loaded {
            pkcs11,
            _lib: lib,
            list,
        }
    })
}

/// The module loaded through cryptoki (once per test binary).
pub fn pkcs11() -> Pkcs11 {
    loaded().pkcs11.clone()
}

fn lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The module initialised for one test; finalised on drop. Holds the test lock.
pub struct Initialized {
    /// The module.
    pub pkcs11: Pkcs11,
    _lock: MutexGuard<'static, ()>,
}

impl Initialized {
    /// Initialises the module with `vcards` as TESSERA_VCARD (none: the variable is removed)
    /// and the separate card-authentication token on (the opt-in setting most of these tests
    /// exercise; [`Initialized::one_token_per_card`] is the default).
    pub fn new(vcards: &[&Path]) -> Self {
        Self::with_card_auth_token(vcards, true)
    }

    /// Initialises the module as installed: one token per card.
    pub fn one_token_per_card(vcards: &[&Path]) -> Self {
        Self::with_card_auth_token(vcards, false)
    }

    fn with_card_auth_token(vcards: &[&Path], separate: bool) -> Self {
        let guard = lock();
        // The environment wins over any configuration file of the machine's user.
        std::env::set_var("TESSERA_CARD_AUTH_TOKEN", if separate { "1" } else { "0" });
        if vcards.is_empty() {
            std::env::remove_var("TESSERA_VCARD");
        } else {
            let joined = std::env::join_paths(vcards).expect("card paths without ':'");
            std::env::set_var("TESSERA_VCARD", joined);
        }
        let pkcs11 = pkcs11();
        pkcs11
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .expect("C_Initialize");
        Self {
            pkcs11,
            _lock: guard,
        }
    }
}

impl Drop for Initialized {
    fn drop(&mut self) {
        let r = self.pkcs11.clone().finalize();
        if !std::thread::panicking() {
            r.expect("C_Finalize");
        }
    }
}

/// A factory-fresh virtual card in its own directory, the module initialised with it as its
/// only virtual card (slot 0; PC/SC readers, if any, come after it).
pub struct Fresh {
    /// The initialised module (drop order: sessions made from it, then this).
    pub init: Initialized,
    /// The card's slot (its main token).
    pub slot: Slot,
    /// The slot of the card's card-authentication token (9E only, no login required).
    pub auth_slot: Slot,
    /// The card file.
    pub card: PathBuf,
    /// The card's serial.
    pub serial: u32,
    _dir: tempfile::TempDir,
}

impl Fresh {
    /// A new card with `serial`.
    pub fn new(serial: u32) -> Self {
        Self::with_state(CardState::factory(serial))
    }

    /// A card in the given state (fault injection: counters, objects, keys).
    pub fn with_state(state: CardState) -> Self {
        let serial = state.serial;
        let dir = tempfile::tempdir().unwrap();
        let card = dir.path().join("card.json");
        CardFile::create(&card, &state).unwrap();
        let init = Initialized::new(&[&card]);
        let all = init.pkcs11.get_all_slots().expect("C_GetSlotList");
        let slot = *all.first().expect("the virtual card's slot");
        let auth_slot = *all
            .iter()
            .find(|s| s.id() == slot.id() + CARD_AUTH_SLOT_BASE)
            .expect("the virtual card's card-authentication slot");
        Self {
            init,
            slot,
            auth_slot,
            card,
            serial,
            _dir: dir,
        }
    }

    /// The module.
    pub fn p11(&self) -> &Pkcs11 {
        &self.init.pkcs11
    }

    /// A read/write session.
    pub fn rw(&self) -> Session {
        self.p11()
            .open_rw_session(self.slot)
            .expect("C_OpenSession RW")
    }

    /// A read-only session.
    pub fn ro(&self) -> Session {
        self.p11()
            .open_ro_session(self.slot)
            .expect("C_OpenSession RO")
    }

    /// A read/write session logged in as the user with the factory PIN.
    pub fn user(&self) -> Session {
        let s = self.rw();
        s.login(cryptoki::session::UserType::User, Some(&pin(PIN)))
            .expect("C_Login(CKU_USER)");
        s
    }

    /// A read-only session on the card-authentication token.
    pub fn auth_ro(&self) -> Session {
        self.p11()
            .open_ro_session(self.auth_slot)
            .expect("C_OpenSession RO (card authentication)")
    }

    /// A read/write session on the card-authentication token, logged in with the card's PIN
    /// (what writing 9E needs).
    pub fn auth_user(&self) -> Session {
        let s = self
            .p11()
            .open_rw_session(self.auth_slot)
            .expect("C_OpenSession RW (card authentication)");
        // One card, one login: fine when the main token is logged in already.
        match s.login(cryptoki::session::UserType::User, Some(&pin(PIN))) {
            Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => panic!("C_Login(CKU_USER) on the card-authentication token: {e}"),
        }
        s
    }

    /// Runs `f` on the card file through a transport of our own (like another process).
    pub fn on_card<R>(&self, f: impl FnOnce(&mut dyn Channel) -> Result<R, CardError>) -> R {
        on_card_file(&self.card, f)
    }
}

/// Slot IDs of card-authentication tokens: this plus the card's main slot ID.
pub const CARD_AUTH_SLOT_BASE: u64 = 0x100;

/// C_GetSlotEvent until there is none: the slots that had an event, sorted by ID.
pub fn drain_events(p11: &Pkcs11) -> Vec<u64> {
    let mut out = Vec::new();
    while let Some(slot) = p11
        .get_slot_event()
        .expect("C_WaitForSlotEvent(CKF_DONT_BLOCK)")
    {
        out.push(slot.id());
        assert!(out.len() < 64, "events never stop");
    }
    out.sort_unstable();
    out
}

/// A PIN or PUK for cryptoki.
pub fn pin(s: &str) -> AuthPin {
    AuthPin::from(s)
}

/// Runs `f` (after SELECT) in one transaction on `t`.
pub fn on_transport<R>(
    t: &mut dyn Transport,
    f: impl FnOnce(&mut dyn Channel) -> Result<R, CardError>,
) -> R {
    card::with_transaction(t, |ch| {
        piv::select(ch)?;
        f(ch)
    })
    .expect("talk to the card")
}

/// Runs `f` on the virtual card in `path`, independently of the module.
pub fn on_card_file<R>(path: &Path, f: impl FnOnce(&mut dyn Channel) -> Result<R, CardError>) -> R {
    let mut t = VirtualTransport::open(path).expect("open the card file");
    on_transport(&mut t, f)
}

/// The PIN status as the card reports it (spends no try).
pub fn pin_status(ch: &mut dyn Channel) -> Result<PinStatus, CardError> {
    piv::verify_pin(ch, None)
}

/// PUK tries left as GET METADATA reports them.
pub fn puk_tries(ch: &mut dyn Channel) -> Result<u8, CardError> {
    Ok(keys::reference_metadata(ch, piv::key_ref::PUK)?
        .expect("PUK metadata")
        .tries_left
        .expect("PUK tries"))
}

/// The certificate in `slot`.
pub fn certificate(ch: &mut dyn Channel, slot: u8) -> Result<Option<Vec<u8>>, CardError> {
    admin::read_certificate(ch, KeySlot::from_reference(slot).expect("key slot"))
}

/// Whether an error is the PKCS#11 return value `rv`.
#[track_caller]
pub fn assert_rv<T: std::fmt::Debug>(r: Result<T, Error>, rv: RvError) {
    match r {
        Err(Error::Pkcs11(got, _)) if got == rv => {}
        other => panic!("expected {rv:?}, got {other:?}"),
    }
}

/// The PKCS#11 error code of a failed call.
#[track_caller]
pub fn rv_of<T: std::fmt::Debug>(r: Result<T, Error>) -> RvError {
    match r {
        Err(Error::Pkcs11(got, _)) => got,
        other => panic!("expected a PKCS#11 error, got {other:?}"),
    }
}

/// The one object matching `template`.
#[track_caller]
pub fn find_one(s: &Session, template: &[Attribute]) -> ObjectHandle {
    let found = s.find_objects(template).expect("C_FindObjects");
    assert_eq!(found.len(), 1, "objects matching {template:?}");
    found[0]
}

/// The key (or certificate) of `class` with CKA_ID `id`.
#[track_caller]
pub fn object(s: &Session, class: ObjectClass, id: u8) -> ObjectHandle {
    find_one(s, &[Attribute::Class(class), Attribute::Id(vec![id])])
}

/// One attribute's value bytes.
#[track_caller]
pub fn attr_bytes(s: &Session, o: ObjectHandle, t: AttributeType) -> Vec<u8> {
    let mut got = s.get_attributes(o, &[t]).expect("C_GetAttributeValue");
    assert_eq!(got.len(), 1, "attribute {t:?}");
    match got.remove(0) {
        Attribute::Id(v)
        | Attribute::Label(v)
        | Attribute::Value(v)
        | Attribute::Modulus(v)
        | Attribute::PublicExponent(v)
        | Attribute::EcPoint(v)
        | Attribute::EcParams(v)
        | Attribute::Subject(v)
        | Attribute::Issuer(v)
        | Attribute::SerialNumber(v) => v,
        other => panic!("not a byte attribute: {other:?}"),
    }
}

/// One boolean attribute.
#[track_caller]
pub fn attr_bool(s: &Session, o: ObjectHandle, t: AttributeType) -> bool {
    let got = s.get_attributes(o, &[t]).expect("C_GetAttributeValue");
    match got.as_slice() {
        [Attribute::Private(b)]
        | [Attribute::Token(b)]
        | [Attribute::Sign(b)]
        | [Attribute::Decrypt(b)]
        | [Attribute::Derive(b)]
        | [Attribute::Sensitive(b)]
        | [Attribute::Extractable(b)]
        | [Attribute::AlwaysAuthenticate(b)]
        | [Attribute::Verify(b)]
        | [Attribute::Encrypt(b)] => *b,
        other => panic!("not a boolean attribute {t:?}: {other:?}"),
    }
}

/// CKA_LABEL as text.
#[track_caller]
pub fn label(s: &Session, o: ObjectHandle) -> String {
    String::from_utf8(attr_bytes(s, o, AttributeType::Label)).expect("UTF-8 label")
}

/// The curves the card offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    /// NIST P-256.
    P256,
    /// NIST P-384.
    P384,
}

impl Curve {
    /// CKA_EC_PARAMS.
    pub fn params(self) -> Vec<u8> {
        match self {
            Self::P256 => P256_PARAMS.to_vec(),
            Self::P384 => P384_PARAMS.to_vec(),
        }
    }

    /// Field size in bytes.
    pub fn field_len(self) -> usize {
        match self {
            Self::P256 => 32,
            Self::P384 => 48,
        }
    }
}

fn key_pair_templates(id: u8, extra_private: &[Attribute]) -> (Vec<Attribute>, Vec<Attribute>) {
    let public = vec![
        Attribute::Token(true),
        Attribute::Id(vec![id]),
        Attribute::Verify(true),
    ];
    let mut private = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Id(vec![id]),
        Attribute::Sign(true),
    ];
    private.extend_from_slice(extra_private);
    (public, private)
}

/// C_GenerateKeyPair of an EC key with CKA_ID `id` (needs a logged-in RW session).
pub fn generate_ec(s: &Session, id: u8, curve: Curve) -> (ObjectHandle, ObjectHandle) {
    let (mut public, private) = key_pair_templates(id, &[]);
    public.push(Attribute::EcParams(curve.params()));
    s.generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
        .unwrap_or_else(|e| panic!("C_GenerateKeyPair EC {curve:?} id {id:02x}: {e}"))
}

/// C_GenerateKeyPair of an RSA key with CKA_ID `id`.
pub fn generate_rsa(s: &Session, id: u8, bits: u64) -> (ObjectHandle, ObjectHandle) {
    let (mut public, private) = key_pair_templates(id, &[]);
    public.push(Attribute::ModulusBits(bits.into()));
    public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
    s.generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
        .unwrap_or_else(|e| panic!("C_GenerateKeyPair RSA {bits} id {id:02x}: {e}"))
}

/// The uncompressed point of an EC public key object (CKA_EC_POINT is a DER OCTET STRING).
pub fn ec_point(s: &Session, public: ObjectHandle) -> Vec<u8> {
    let der = attr_bytes(s, public, AttributeType::EcPoint);
    unwrap_octet_string(&der)
}

/// The content of a short-form DER OCTET STRING.
pub fn unwrap_octet_string(der: &[u8]) -> Vec<u8> {
    assert_eq!(der.first(), Some(&0x04), "CKA_EC_POINT is an OCTET STRING");
    let len = usize::from(der[1]);
    assert!(len < 0x80, "short-form length");
    assert_eq!(der.len(), 2 + len, "OCTET STRING length");
    der[2..].to_vec()
}

/// The RSA public key of a key object (public or private) from CKA_MODULUS and
/// CKA_PUBLIC_EXPONENT.
pub fn rsa_public(s: &Session, key: ObjectHandle) -> rsa::RsaPublicKey {
    let n = attr_bytes(s, key, AttributeType::Modulus);
    let e = attr_bytes(s, key, AttributeType::PublicExponent);
    rsa::RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(&n),
        rsa::BigUint::from_bytes_be(&e),
    )
    .expect("RSA public key")
}

/// `prehash` as ECDSA's host-side integer input: left-padded with zeros to the field size when
/// shorter (the same number), as is; the ecdsa crate truncates longer hashes itself.
fn ecdsa_prehash(curve: Curve, prehash: &[u8]) -> Vec<u8> {
    let n = curve.field_len();
    if prehash.len() >= n {
        return prehash.to_vec();
    }
    let mut out = vec![0u8; n - prehash.len()];
    out.extend_from_slice(prehash);
    out
}

/// Verifies a PKCS#11 ECDSA signature (r || s) over `prehash` with the RustCrypto crates.
#[track_caller]
pub fn verify_ecdsa(curve: Curve, point: &[u8], prehash: &[u8], signature: &[u8]) {
    use ecdsa::signature::hazmat::PrehashVerifier;
    let z = ecdsa_prehash(curve, prehash);
    let ok = match curve {
        Curve::P256 => {
            let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(point).expect("P-256 point");
            let sig = p256::ecdsa::Signature::from_slice(signature).expect("r || s");
            key.verify_prehash(&z, &sig).is_ok()
        }
        Curve::P384 => {
            let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(point).expect("P-384 point");
            let sig = p384::ecdsa::Signature::from_slice(signature).expect("r || s");
            key.verify_prehash(&z, &sig).is_ok()
        }
    };
    assert!(
        ok,
        "ECDSA {curve:?} signature does not verify on the host (hash {} bytes)",
        prehash.len()
    );
}

/// The ECDH shared secret (X coordinate) of a host secret and a peer point.
pub fn host_ecdh(curve: Curve, host_secret: &[u8], peer_point: &[u8]) -> Vec<u8> {
    match curve {
        Curve::P256 => {
            let sk = p256::SecretKey::from_slice(host_secret).unwrap();
            let pk = p256::PublicKey::from_sec1_bytes(peer_point).unwrap();
            p256::ecdh::diffie_hellman(sk.to_nonzero_scalar(), pk.as_affine())
                .raw_secret_bytes()
                .to_vec()
        }
        Curve::P384 => {
            let sk = p384::SecretKey::from_slice(host_secret).unwrap();
            let pk = p384::PublicKey::from_sec1_bytes(peer_point).unwrap();
            p384::ecdh::diffie_hellman(sk.to_nonzero_scalar(), pk.as_affine())
                .raw_secret_bytes()
                .to_vec()
        }
    }
}

/// A host key pair on `curve`: (secret scalar, uncompressed public point).
pub fn host_ec_key(curve: Curve) -> (Vec<u8>, Vec<u8>) {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    match curve {
        Curve::P256 => {
            let sk = p256::SecretKey::random(&mut rand::rngs::OsRng);
            let pt = sk.public_key().to_encoded_point(false).as_bytes().to_vec();
            (sk.to_bytes().to_vec(), pt)
        }
        Curve::P384 => {
            let sk = p384::SecretKey::random(&mut rand::rngs::OsRng);
            let pt = sk.public_key().to_encoded_point(false).as_bytes().to_vec();
            (sk.to_bytes().to_vec(), pt)
        }
    }
}

/// ECDH1_DERIVE (CKD_NULL) with `base` and a host public point; returns CKA_VALUE of the
/// derived generic secret (made non-sensitive and extractable so it can be read).
pub fn derive_ecdh(s: &Session, base: ObjectHandle, peer_point: &[u8]) -> Vec<u8> {
    use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
    let params = Ecdh1DeriveParams::new(EcKdf::null(), peer_point);
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::Token(false),
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
    ];
    let derived = s
        .derive_key(&Mechanism::Ecdh1Derive(params), base, &template)
        .expect("C_DeriveKey ECDH1_DERIVE");
    attr_bytes(s, derived, AttributeType::Value)
}

/// A certificate for `spki_der` (the card's public key) issued by a fresh host P-256 CA key.
/// `key_agreement`/`key_encipherment` set those keyUsage bits (digitalSignature and
/// nonRepudiation are always set).
pub fn certificate_for(
    spki_der: &[u8],
    cn: &str,
    key_agreement: bool,
    key_encipherment: bool,
) -> Vec<u8> {
    use der::{Decode, Encode};
    use std::str::FromStr;
    use x509_cert::builder::{Builder, CertificateBuilder, Profile};
    use x509_cert::name::Name;
    use x509_cert::serial_number::SerialNumber;
    use x509_cert::spki::SubjectPublicKeyInfoOwned;
    use x509_cert::time::Validity;

    let ca = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
    let issuer = Name::from_str("CN=Tessera Test CA,O=Tessera").unwrap();
    let subject = Name::from_str(&format!("CN={cn},O=Tessera")).unwrap();
    let spki = SubjectPublicKeyInfoOwned::from_der(spki_der).expect("SPKI");
    let profile = Profile::Leaf {
        issuer,
        enable_key_agreement: key_agreement,
        enable_key_encipherment: key_encipherment,
    };
    let builder = CertificateBuilder::new(
        profile,
        SerialNumber::from(0x1234_5678u32),
        Validity::from_now(std::time::Duration::from_secs(3600 * 24 * 365)).unwrap(),
        subject,
        spki,
        &ca,
    )
    .expect("certificate builder");
    let cert = builder
        .build::<p256::ecdsa::DerSignature>()
        .expect("sign the certificate");
    cert.to_der().unwrap()
}

/// SubjectPublicKeyInfo DER of an EC point, computed on the host.
pub fn ec_spki(curve: Curve, point: &[u8]) -> Vec<u8> {
    use pkcs8::EncodePublicKey;
    match curve {
        Curve::P256 => p256::PublicKey::from_sec1_bytes(point)
            .unwrap()
            .to_public_key_der()
            .unwrap()
            .as_bytes()
            .to_vec(),
        Curve::P384 => p384::PublicKey::from_sec1_bytes(point)
            .unwrap()
            .to_public_key_der()
            .unwrap()
            .as_bytes()
            .to_vec(),
    }
}

/// SubjectPublicKeyInfo DER of an RSA key, computed on the host.
pub fn rsa_spki(key: &rsa::RsaPublicKey) -> Vec<u8> {
    use pkcs8::EncodePublicKey;
    key.to_public_key_der().unwrap().as_bytes().to_vec()
}

/// C_CreateObject of an X.509 certificate with CKA_ID `id`.
pub fn create_certificate(s: &Session, id: u8, der: &[u8]) -> ObjectHandle {
    s.create_object(&[
        Attribute::Class(ObjectClass::CERTIFICATE),
        Attribute::CertificateType(cryptoki::object::CertificateType::X_509),
        Attribute::Token(true),
        Attribute::Id(vec![id]),
        Attribute::Value(der.to_vec()),
    ])
    .expect("C_CreateObject(CKO_CERTIFICATE)")
}

/// Raw C_CloseAllSessions (cryptoki 0.12 does not wrap it).
pub fn close_all_sessions(slot: Slot) -> CK_RV {
    let f = loaded()
        .list
        .C_CloseAllSessions
        .expect("C_CloseAllSessions");
    // SAFETY: plain value arguments.
    unsafe { f(CK_SLOT_ID::from(slot)) }
}

/// Raw C_Sign length query (NULL signature buffer): the return value and the length.
pub fn raw_sign_len(session: CK_SESSION_HANDLE, data: &[u8]) -> (CK_RV, usize) {
    let f = loaded().list.C_Sign.expect("C_Sign");
    let mut len: cryptoki_sys::CK_ULONG = 0;
    // SAFETY: a NULL signature pointer with a valid length pointer is the length query; data
    // is only read.
    let rv = unsafe {
        f(
            session,
            data.as_ptr() as *mut u8,
            data.len() as cryptoki_sys::CK_ULONG,
            std::ptr::null_mut(),
            &mut len,
        )
    };
    (rv, len as usize)
}

/// Raw single-part C_Sign in a session whose operation was started with C_SignInit (cryptoki
/// only offers C_SignInit+C_Sign together, which leaves no room for a context-specific login
/// in between). Returns the return value and the signature.
pub fn raw_sign(session: CK_SESSION_HANDLE, data: &[u8]) -> (CK_RV, Vec<u8>) {
    let f = loaded().list.C_Sign.expect("C_Sign");
    let mut out = vec![0u8; 1024];
    let mut len = out.len() as cryptoki_sys::CK_ULONG;
    // SAFETY: data and out are valid for their lengths; len is a valid in/out pointer. The
    // module only reads `data` (the pointer is declared mutable by the C prototype).
    let rv = unsafe {
        f(
            session,
            data.as_ptr() as *mut u8,
            data.len() as cryptoki_sys::CK_ULONG,
            out.as_mut_ptr(),
            &mut len,
        )
    };
    out.truncate(len as usize);
    (rv, out)
}

/// Raw C_GetMechanismList (cryptoki drops the types it has no name for, such as
/// CKM_SHA224_RSA_PKCS_PSS).
pub fn raw_mechanism_list(slot: Slot) -> Vec<cryptoki_sys::CK_MECHANISM_TYPE> {
    let f = loaded()
        .list
        .C_GetMechanismList
        .expect("C_GetMechanismList");
    let mut n: cryptoki_sys::CK_ULONG = 0;
    // SAFETY: NULL list with a valid count pointer is the length query.
    let rv = unsafe { f(CK_SLOT_ID::from(slot), std::ptr::null_mut(), &mut n) };
    assert_eq!(rv, cryptoki_sys::CKR_OK, "C_GetMechanismList length");
    let mut list = vec![0; n as usize];
    // SAFETY: `list` has room for `n` entries.
    let rv = unsafe { f(CK_SLOT_ID::from(slot), list.as_mut_ptr(), &mut n) };
    assert_eq!(rv, cryptoki_sys::CKR_OK, "C_GetMechanismList");
    list.truncate(n as usize);
    list
}

/// Raw C_GetMechanismInfo.
pub fn raw_mechanism_info(
    slot: Slot,
    mech: cryptoki_sys::CK_MECHANISM_TYPE,
) -> (CK_RV, cryptoki_sys::CK_MECHANISM_INFO) {
    let f = loaded()
        .list
        .C_GetMechanismInfo
        .expect("C_GetMechanismInfo");
    let mut info = cryptoki_sys::CK_MECHANISM_INFO::default();
    // SAFETY: `info` is a valid, writable CK_MECHANISM_INFO.
    let rv = unsafe { f(CK_SLOT_ID::from(slot), mech, &mut info) };
    (rv, info)
}

/// Raw C_SignInit with a mechanism cryptoki cannot name (CKM_SHA224_RSA_PKCS_PSS).
pub fn raw_sign_init<P>(
    session: CK_SESSION_HANDLE,
    mechanism: cryptoki_sys::CK_MECHANISM_TYPE,
    param: &P,
    key: ObjectHandle,
) -> CK_RV {
    let f = loaded().list.C_SignInit.expect("C_SignInit");
    let mut m = cryptoki_sys::CK_MECHANISM {
        mechanism,
        pParameter: param as *const P as *mut std::ffi::c_void,
        ulParameterLen: std::mem::size_of::<P>() as cryptoki_sys::CK_ULONG,
    };
    // SAFETY: `m` and the parameter it points to outlive the call; the module copies them.
    unsafe { f(session, &mut m, key.handle()) }
}

/// Raw C_VerifyInit + C_Verify with a mechanism cryptoki cannot name.
pub fn raw_verify<P>(
    session: CK_SESSION_HANDLE,
    mechanism: cryptoki_sys::CK_MECHANISM_TYPE,
    param: &P,
    key: ObjectHandle,
    data: &[u8],
    signature: &[u8],
) -> CK_RV {
    let init = loaded().list.C_VerifyInit.expect("C_VerifyInit");
    let verify = loaded().list.C_Verify.expect("C_Verify");
    let mut m = cryptoki_sys::CK_MECHANISM {
        mechanism,
        pParameter: param as *const P as *mut std::ffi::c_void,
        ulParameterLen: std::mem::size_of::<P>() as cryptoki_sys::CK_ULONG,
    };
    // SAFETY: `m` and its parameter outlive the call.
    let rv = unsafe { init(session, &mut m, key.handle()) };
    if rv != cryptoki_sys::CKR_OK {
        return rv;
    }
    // SAFETY: data and signature are valid for their lengths and only read.
    unsafe {
        verify(
            session,
            data.as_ptr() as *mut u8,
            data.len() as cryptoki_sys::CK_ULONG,
            signature.as_ptr() as *mut u8,
            signature.len() as cryptoki_sys::CK_ULONG,
        )
    }
}
