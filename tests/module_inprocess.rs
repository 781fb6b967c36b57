//! The PKCS#11 module through the `cryptoki` crate, against in-process virtual cards
//! (TESSERA_VCARD). Every test gets a factory-fresh card and its own C_Initialize/C_Finalize,
//! and checks what the module says against a party that does not go through it: the card file
//! read back with the host PIV driver over a transport of our own (PIN/PUK counters,
//! certificates, Key History), and signatures, decryptions and shared secrets recomputed
//! with RustCrypto on the host.
//!
//! Build the module first (`cargo build`); see tests/module_common/mod.rs for how it is found.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod module_common;

use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{
    Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass, ObjectHandle, ProfileIdType,
};
use cryptoki::session::{SessionState, UserType};
use cryptoki_sys::*;
use module_common::matrix::*;
use module_common::*;
use rsa::traits::PublicKeyParts;
use tessera::applet::piv::{admin, keys, KeySlot, PinStatus};

// ---- library, slots, tokens, mechanisms --------------------------------------------------------

#[test]
fn library_slot_and_token_info() {
    let f = Fresh::new(4_100_001);
    let info = f.p11().get_library_info().unwrap();
    let v = info.cryptoki_version();
    assert!(
        (v.major(), v.minor()) == (2, 40) || v.major() == 3,
        "cryptoki version {v:?}"
    );
    assert!(!info.manufacturer_id().is_empty());

    let all = f.p11().get_all_slots().unwrap();
    assert_eq!(all[0], f.slot, "the virtual card is the first slot");
    let with_token = f.p11().get_slots_with_token().unwrap();
    assert!(with_token.contains(&f.slot));

    let slot = f.p11().get_slot_info(f.slot).unwrap();
    assert!(slot.removable_device(), "CKF_REMOVABLE_DEVICE");
    assert!(slot.token_present(), "CKF_TOKEN_PRESENT");
    assert!(
        !slot.slot_description().is_empty(),
        "slot description is set"
    );

    let token = f.p11().get_token_info(f.slot).unwrap();
    assert_eq!(token.label(), format!("Tessera PIV #{}", f.serial));
    assert_eq!(token.serial_number(), f.serial.to_string());
    assert_eq!(token.model(), "PIV");
    assert!(token.rng());
    assert!(token.login_required());
    assert!(token.user_pin_initialized());
    assert!(token.token_initialized());
    assert!(
        token.user_pin_to_be_changed(),
        "a factory card has CKF_USER_PIN_TO_BE_CHANGED"
    );
    assert!(
        token.so_pin_to_be_changed(),
        "a factory card has CKF_SO_PIN_TO_BE_CHANGED"
    );
    assert!(!token.user_pin_count_low());
    assert!(!token.user_pin_final_try());
    assert!(!token.user_pin_locked());
    assert!(!token.protected_authentication_path());
    assert_eq!(token.min_pin_length(), 6);
    assert_eq!(token.max_pin_length(), 8);
    assert_eq!(token.session_count(), Some(0));
}

#[test]
fn removed_card_leaves_an_empty_slot() {
    let f = Fresh::new(4_100_002);
    let both = vec![f.slot.id(), f.auth_slot.id()];
    // The initial state counts as an event for a present card, once for each of its two
    // tokens; then nothing happens.
    assert_eq!(drain_events(f.p11()), both);
    assert_eq!(f.p11().get_slot_event().unwrap(), None);

    let s = f.ro();
    let count = f.p11().get_all_slots().unwrap().len();
    let away = f.card.with_extension("away");
    std::fs::rename(&f.card, &away).unwrap();

    assert_eq!(
        drain_events(f.p11()),
        both,
        "both tokens report the removal"
    );
    assert_eq!(
        f.p11().get_all_slots().unwrap().len(),
        count,
        "slot list never shrinks"
    );
    assert!(!f.p11().get_slots_with_token().unwrap().contains(&f.slot));
    assert!(!f
        .p11()
        .get_slots_with_token()
        .unwrap()
        .contains(&f.auth_slot));
    let info = f.p11().get_slot_info(f.slot).unwrap();
    assert!(info.removable_device());
    assert!(!info.token_present());
    assert_rv(f.p11().get_token_info(f.slot), RvError::TokenNotPresent);
    assert_rv(f.p11().open_ro_session(f.slot), RvError::TokenNotPresent);
    let rv = rv_of(s.get_session_info());
    assert!(
        matches!(rv, RvError::SessionHandleInvalid | RvError::DeviceRemoved),
        "a session of a removed card: {rv:?}"
    );

    std::fs::rename(&away, &f.card).unwrap();
    assert_eq!(
        drain_events(f.p11()),
        both,
        "both tokens report the insertion"
    );
    assert!(f.p11().get_slot_info(f.slot).unwrap().token_present());
    let token = f.p11().get_token_info(f.slot).unwrap();
    assert_eq!(token.serial_number(), f.serial.to_string());
    let auth = f.p11().get_token_info(f.auth_slot).unwrap();
    assert_eq!(
        auth.serial_number(),
        f.serial.to_string(),
        "same card, same serial"
    );
    drop(s);
}

#[test]
fn mechanism_list_and_info() {
    let f = Fresh::new(4_100_003);
    let raw = raw_mechanism_list(f.slot);
    // The one mechanism table: the module lists exactly it, with its flags.
    let table = &tessera::token::mechanism::TABLE;
    assert_eq!(raw.len(), table.len(), "C_GetMechanismList lists the table");
    for e in table.iter() {
        assert!(
            raw.contains(&e.ty),
            "mechanism {:#x} missing from the list",
            e.ty
        );
        let (rv, info) = raw_mechanism_info(f.slot, e.ty);
        assert_eq!(rv, CKR_OK);
        assert_eq!(info.flags, e.flags, "flags of {:#x}", e.ty);
    }
    let listed = f.p11().get_mechanism_list(f.slot).unwrap();
    assert!(listed.contains(&MechanismType::ECDSA_SHA256));

    let p11 = f.p11();
    let gen = p11
        .get_mechanism_info(f.slot, MechanismType::RSA_PKCS_KEY_PAIR_GEN)
        .unwrap();
    assert!(gen.generate_key_pair());
    assert_eq!((gen.min_key_size(), gen.max_key_size()), (2048, 4096));

    let ecgen = p11
        .get_mechanism_info(f.slot, MechanismType::ECC_KEY_PAIR_GEN)
        .unwrap();
    assert!(ecgen.generate_key_pair());
    assert_eq!((ecgen.min_key_size(), ecgen.max_key_size()), (256, 384));

    let rsa = p11
        .get_mechanism_info(f.slot, MechanismType::RSA_PKCS)
        .unwrap();
    assert!(rsa.sign() && rsa.verify() && rsa.encrypt() && rsa.decrypt());
    assert_eq!((rsa.min_key_size(), rsa.max_key_size()), (2048, 4096));

    let oaep = p11
        .get_mechanism_info(f.slot, MechanismType::RSA_PKCS_OAEP)
        .unwrap();
    assert!(oaep.decrypt() && oaep.encrypt());
    assert!(!oaep.sign());

    let pss = p11
        .get_mechanism_info(f.slot, MechanismType::SHA256_RSA_PKCS_PSS)
        .unwrap();
    assert!(pss.sign() && pss.verify());
    assert!(!pss.decrypt());

    let ecdsa = p11
        .get_mechanism_info(f.slot, MechanismType::ECDSA)
        .unwrap();
    assert!(ecdsa.sign() && ecdsa.verify());
    assert!(ecdsa.ec_f_p() && ecdsa.ec_from_oid() && ecdsa.ec_uncompressed());
    assert_eq!((ecdsa.min_key_size(), ecdsa.max_key_size()), (256, 384));

    let ecdh = p11
        .get_mechanism_info(f.slot, MechanismType::ECDH1_DERIVE)
        .unwrap();
    assert!(ecdh.derive());

    let sha = p11
        .get_mechanism_info(f.slot, MechanismType::SHA256)
        .unwrap();
    assert!(sha.digest());
    assert!(!sha.sign());

    assert_rv(
        p11.get_mechanism_info(f.slot, MechanismType::AES_CBC),
        RvError::MechanismInvalid,
    );
}

// ---- sessions and login ------------------------------------------------------------------------

#[test]
fn sessions_open_close_and_login_states() {
    let f = Fresh::new(4_100_004);
    let ro = f.ro();
    let rw = f.rw();
    let info = ro.get_session_info().unwrap();
    assert_eq!(info.session_state(), SessionState::RoPublic);
    assert!(!info.read_write());
    assert_eq!(info.slot_id(), f.slot);
    assert_eq!(
        rw.get_session_info().unwrap().session_state(),
        SessionState::RwPublic
    );
    let token = f.p11().get_token_info(f.slot).unwrap();
    assert_eq!(token.session_count(), Some(2));
    assert_eq!(token.rw_session_count(), Some(1));

    // The SO cannot log in while a read-only session exists.
    assert_rv(
        rw.login(UserType::So, Some(&pin(PUK))),
        RvError::SessionReadOnlyExists,
    );

    // Login is per token: every session of the application sees it.
    ro.login(UserType::User, Some(&pin(PIN))).unwrap();
    assert_eq!(
        ro.get_session_info().unwrap().session_state(),
        SessionState::RoUser
    );
    assert_eq!(
        rw.get_session_info().unwrap().session_state(),
        SessionState::RwUser
    );
    assert_rv(
        rw.login(UserType::User, Some(&pin(PIN))),
        RvError::UserAlreadyLoggedIn,
    );
    assert_eq!(
        f.on_card(pin_status),
        PinStatus::TriesLeft(3),
        "a successful login spends no try"
    );

    rw.logout().unwrap();
    assert_eq!(
        ro.get_session_info().unwrap().session_state(),
        SessionState::RoPublic
    );
    assert_rv(ro.logout(), RvError::UserNotLoggedIn);

    // Closing the last session logs the token out.
    ro.login(UserType::User, Some(&pin(PIN))).unwrap();
    ro.close().unwrap();
    assert_eq!(
        rw.get_session_info().unwrap().session_state(),
        SessionState::RwUser
    );
    let rw_handle = rw.handle();
    assert_eq!(close_all_sessions(f.slot), CKR_OK);
    assert_rv(rw.get_session_info(), RvError::SessionHandleInvalid);
    assert_eq!(
        f.p11().get_token_info(f.slot).unwrap().session_count(),
        Some(0)
    );
    let again = f.rw();
    assert_ne!(again.handle(), rw_handle);
    assert_eq!(
        again.get_session_info().unwrap().session_state(),
        SessionState::RwPublic,
        "C_CloseAllSessions logs the token out"
    );
    drop(rw);
}

#[test]
fn wrong_pin_spends_one_try_each_and_locks() {
    let f = Fresh::new(4_100_005);
    let s = f.rw();
    assert_eq!(f.on_card(pin_status), PinStatus::TriesLeft(3));

    assert_rv(
        s.login(UserType::User, Some(&pin("000000"))),
        RvError::PinIncorrect,
    );
    assert_eq!(f.on_card(pin_status), PinStatus::TriesLeft(2));
    let t = f.p11().get_token_info(f.slot).unwrap();
    assert!(t.user_pin_count_low(), "CKF_USER_PIN_COUNT_LOW at 2 of 3");
    assert!(!t.user_pin_final_try());
    assert!(!t.user_pin_locked());

    assert_rv(
        s.login(UserType::User, Some(&pin("0000000"))),
        RvError::PinIncorrect,
    );
    assert_eq!(f.on_card(pin_status), PinStatus::TriesLeft(1));
    let t = f.p11().get_token_info(f.slot).unwrap();
    assert!(t.user_pin_final_try(), "CKF_USER_PIN_FINAL_TRY at 1");
    assert!(!t.user_pin_locked());

    // The try that blocks the PIN: incorrect (or already reported as locked).
    let rv = rv_of(s.login(UserType::User, Some(&pin("00000000"))));
    assert!(
        matches!(rv, RvError::PinIncorrect | RvError::PinLocked),
        "last wrong PIN: {rv:?}"
    );
    assert_eq!(f.on_card(pin_status), PinStatus::Blocked);
    let t = f.p11().get_token_info(f.slot).unwrap();
    assert!(t.user_pin_locked(), "CKF_USER_PIN_LOCKED at 0");

    // Even the right PIN is refused now, also for a PIN change.
    assert_rv(s.login(UserType::User, Some(&pin(PIN))), RvError::PinLocked);
    assert_rv(s.set_pin(&pin(PIN), &pin("11223344")), RvError::PinLocked);
    assert_eq!(f.on_card(pin_status), PinStatus::Blocked);
    assert_eq!(
        s.get_session_info().unwrap().session_state(),
        SessionState::RwPublic
    );
}

#[test]
fn malformed_pin_spends_no_try() {
    let f = Fresh::new(4_100_006);
    let s = f.rw();
    for bad in ["12345", "123456789", ""] {
        assert_rv(
            s.login(UserType::User, Some(&pin(bad))),
            RvError::PinLenRange,
        );
        assert_eq!(
            f.on_card(pin_status),
            PinStatus::TriesLeft(3),
            "a {}-character PIN must not reach the card",
            bad.len()
        );
    }
    let t = f.p11().get_token_info(f.slot).unwrap();
    assert!(!t.user_pin_count_low());
    // A malformed context-specific or SO PIN is no different.
    assert_rv(
        s.login(UserType::So, Some(&pin("1234567890"))),
        RvError::PinLenRange,
    );
    assert_eq!(f.on_card(puk_tries), 3);
    s.login(UserType::User, Some(&pin(PIN))).unwrap();
}

#[test]
fn so_login_with_puk_and_init_pin_unblocks() {
    let f = Fresh::new(4_100_007);
    let s = f.rw();
    // Block the PIN.
    for _ in 0..3 {
        let _ = s.login(UserType::User, Some(&pin("999999")));
    }
    assert_eq!(f.on_card(pin_status), PinStatus::Blocked);

    // A wrong PUK spends one PUK try.
    assert_rv(
        s.login(UserType::So, Some(&pin("87654321"))),
        RvError::PinIncorrect,
    );
    assert_eq!(f.on_card(puk_tries), 2, "a wrong PUK spends one PUK try");
    assert!(f.p11().get_token_info(f.slot).unwrap().so_pin_count_low());

    s.login(UserType::So, Some(&pin(PUK))).unwrap();
    assert_eq!(
        s.get_session_info().unwrap().session_state(),
        SessionState::RwSecurityOfficer
    );
    assert_eq!(f.on_card(puk_tries), 3, "the right PUK resets its counter");
    // Only RW sessions while the SO is logged in.
    assert_rv(
        f.p11().open_ro_session(f.slot),
        RvError::SessionReadWriteSoExists,
    );

    s.init_pin(&pin("24681357")).unwrap();
    assert_eq!(
        f.on_card(pin_status),
        PinStatus::TriesLeft(3),
        "C_InitPIN unblocks the PIN"
    );
    assert_eq!(
        f.on_card(|ch| tessera::applet::piv::verify_pin(ch, Some(b"24681357"))),
        PinStatus::Verified,
        "the new PIN is set on the card"
    );
    s.logout().unwrap();
    assert!(!f.p11().get_token_info(f.slot).unwrap().user_pin_locked());

    assert_rv(
        s.login(UserType::User, Some(&pin(PIN))),
        RvError::PinIncorrect,
    );
    s.login(UserType::User, Some(&pin("24681357"))).unwrap();
    assert_eq!(
        s.get_session_info().unwrap().session_state(),
        SessionState::RwUser
    );
    assert!(
        !f.p11()
            .get_token_info(f.slot)
            .unwrap()
            .user_pin_to_be_changed(),
        "no longer the factory PIN"
    );
}

#[test]
fn set_pin_changes_pin_for_user_and_puk_for_so() {
    let f = Fresh::new(4_100_008);
    let s = f.user();
    s.set_pin(&pin(PIN), &pin("13572468")).unwrap();
    assert_eq!(
        f.on_card(|ch| tessera::applet::piv::verify_pin(ch, Some(b"13572468"))),
        PinStatus::Verified
    );
    let meta = f.on_card(|ch| keys::reference_metadata(ch, 0x80)).unwrap();
    assert!(!meta.is_default);
    assert!(!f
        .p11()
        .get_token_info(f.slot)
        .unwrap()
        .user_pin_to_be_changed());
    // A wrong old PIN is a wrong PIN.
    assert_rv(
        s.set_pin(&pin("000000"), &pin("11112222")),
        RvError::PinIncorrect,
    );
    assert_eq!(f.on_card(pin_status), PinStatus::TriesLeft(2));
    s.logout().unwrap();
    s.login(UserType::User, Some(&pin("13572468"))).unwrap();
    s.logout().unwrap();

    s.login(UserType::So, Some(&pin(PUK))).unwrap();
    s.set_pin(&pin(PUK), &pin("87651234")).unwrap();
    let meta = f.on_card(|ch| keys::reference_metadata(ch, 0x81)).unwrap();
    assert!(!meta.is_default, "the PUK changed on the card");
    assert_eq!(
        f.on_card(|ch| admin::change_reference(ch, 0x81, b"87651234", b"87651234")),
        PinStatus::Verified,
        "the new PUK is the card's"
    );
    assert!(!f
        .p11()
        .get_token_info(f.slot)
        .unwrap()
        .so_pin_to_be_changed());
    // C_InitPIN in the same SO session uses the new PUK (a stale one would spend a try).
    s.init_pin(&pin("97531864")).unwrap();
    assert_eq!(f.on_card(puk_tries), 3);
    assert_eq!(
        f.on_card(|ch| tessera::applet::piv::verify_pin(ch, Some(b"97531864"))),
        PinStatus::Verified
    );
    s.logout().unwrap();
    s.login(UserType::So, Some(&pin("87651234"))).unwrap();
}

// ---- key generation and signatures -------------------------------------------------------------
#[test]
fn rsa_2048_generate_sign_every_mechanism() {
    let f = Fresh::new(4_100_010);
    let s = f.user();
    let (public, private) = generate_rsa(&s, 0x01, 2048);
    assert_eq!(attr_bytes(&s, public, AttributeType::Id), vec![0x01]);
    assert_eq!(attr_bytes(&s, private, AttributeType::Id), vec![0x01]);
    assert_eq!(
        s.get_attributes(public, &[AttributeType::ModulusBits])
            .unwrap(),
        vec![Attribute::ModulusBits(2048u64.into())]
    );
    assert!(attr_bool(&s, private, AttributeType::Sign));
    assert!(attr_bool(&s, private, AttributeType::Private));
    assert!(!attr_bool(&s, public, AttributeType::Private));
    // The card has the key now: GET METADATA reports it, with the same public key.
    let meta = f
        .on_card(|ch| keys::metadata(ch, KeySlot::AUTHENTICATION))
        .expect("9A holds a key");
    assert_eq!(
        meta.public_key.unwrap().spki_der,
        rsa_spki(&rsa_public(&s, public))
    );
    // No placeholder certificate after key generation.
    assert_eq!(f.on_card(|ch| certificate(ch, 0x9A)), None);
    assert!(s
        .find_objects(&[Attribute::Class(ObjectClass::CERTIFICATE)])
        .unwrap()
        .is_empty());
    rsa_signatures(&s, public, private);
}

#[test]
fn rsa_3072_generate_and_sign() {
    let f = Fresh::new(4_100_011);
    let s = f.user();
    let (public, private) = generate_rsa(&s, 0x01, 3072);
    let key = rsa_public(&s, public);
    assert_eq!(key.size(), 384);
    let sig = s.sign(&Mechanism::Sha384RsaPkcs, private, MESSAGE).unwrap();
    rsa_verifies(
        &key,
        Hash::Sha384.pkcs1v15(),
        &Hash::Sha384.digest(MESSAGE),
        &sig,
    );
    let sig = s
        .sign(&Hash::Sha512.rsa_pss().unwrap(), private, MESSAGE)
        .unwrap();
    rsa_verifies(
        &key,
        Hash::Sha512.pss(64),
        &Hash::Sha512.digest(MESSAGE),
        &sig,
    );
}

#[test]
#[ignore = "slow: RSA 4096 key generation on the virtual card takes seconds"]
fn rsa_4096_generate_sign_every_mechanism() {
    let f = Fresh::new(4_100_012);
    let s = f.user();
    let (public, private) = generate_rsa(&s, 0x01, 4096);
    assert_eq!(rsa_public(&s, public).size(), 512);
    rsa_signatures(&s, public, private);
}

#[test]
fn ec_p256_generate_sign_every_mechanism() {
    let f = Fresh::new(4_100_013);
    let s = f.user();
    let (public, private) = generate_ec(&s, 0x01, Curve::P256);
    assert_eq!(
        s.get_attributes(private, &[AttributeType::KeyType])
            .unwrap(),
        vec![Attribute::KeyType(KeyType::EC)]
    );
    ec_signatures(&s, Curve::P256, public, private);
}

#[test]
fn ec_p384_generate_sign_every_mechanism() {
    let f = Fresh::new(4_100_014);
    let s = f.user();
    let (public, private) = generate_ec(&s, 0x01, Curve::P384);
    ec_signatures(&s, Curve::P384, public, private);
}

#[test]
fn digests_single_and_multi_part_equal_the_host() {
    let f = Fresh::new(4_100_015);
    let s = f.ro();
    let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
    for h in HASHES {
        let expected = h.digest(&data);
        assert_eq!(
            s.digest(&h.digest_mechanism(), &data).unwrap(),
            expected,
            "{h:?}"
        );
        s.digest_init(&h.digest_mechanism()).unwrap();
        for chunk in data.chunks(77) {
            s.digest_update(chunk).unwrap();
        }
        assert_eq!(s.digest_final().unwrap(), expected, "{h:?} multi-part");
        assert_eq!(
            s.digest(&h.digest_mechanism(), b"").unwrap(),
            h.digest(b""),
            "{h:?} of nothing"
        );
    }
}

// ---- decryption and key agreement --------------------------------------------------------------

#[test]
fn rsa_decrypt_pkcs1_and_oaep() {
    let f = Fresh::new(4_100_016);
    let s = f.user();
    let (public, private) = generate_rsa(&s, 0x01, 2048);
    assert!(attr_bool(&s, private, AttributeType::Decrypt));
    rsa_decryptions(&s, public, private);
}

#[test]
fn ecdh_derive_equals_the_host_secret() {
    let f = Fresh::new(4_100_017);
    let s = f.user();
    for curve in [Curve::P256, Curve::P384] {
        let (public, private) = generate_ec(&s, 0x03, curve);
        assert!(attr_bool(&s, private, AttributeType::Derive));
        let card_point = ec_point(&s, public);
        let (host_secret, host_point) = host_ec_key(curve);
        let derived = derive_ecdh(&s, private, &host_point);
        assert_eq!(
            derived,
            host_ecdh(curve, &host_secret, &card_point),
            "ECDH {curve:?}"
        );
        // The peer point as a DER OCTET STRING (CKA_EC_POINT encoding) is accepted as well.
        let mut wrapped = vec![0x04, host_point.len() as u8];
        wrapped.extend_from_slice(&host_point);
        assert_eq!(
            derive_ecdh(&s, private, &wrapped),
            derived,
            "DER-wrapped point"
        );
    }
}

// ---- the signature key, card authentication ---------------------------------------------------

#[test]
fn signature_key_needs_context_login_before_each_signature() {
    let f = Fresh::new(4_100_018);
    let s = f.user();
    let (public, private) = generate_ec(&s, 0x02, Curve::P256);
    assert!(
        attr_bool(&s, private, AttributeType::AlwaysAuthenticate),
        "9C private key has CKA_ALWAYS_AUTHENTICATE"
    );
    assert_eq!(label(&s, private), "SIGN key");
    let point = ec_point(&s, public);
    let hashed = Hash::Sha256.digest(MESSAGE);

    // Without the context-specific login: refused.
    assert_rv(
        s.sign(&Mechanism::EcdsaSha256, private, MESSAGE),
        RvError::UserNotLoggedIn,
    );

    // With it: one signature (single-part C_Sign, after the length query applications make).
    s.sign_init(&Mechanism::EcdsaSha256, private).unwrap();
    s.login(UserType::ContextSpecific, Some(&pin(PIN))).unwrap();
    assert_eq!(raw_sign_len(s.handle(), MESSAGE), (CKR_OK, 64));
    let (rv, sig) = raw_sign(s.handle(), MESSAGE);
    assert_eq!(rv, CKR_OK, "C_Sign after CKU_CONTEXT_SPECIFIC");
    verify_ecdsa(Curve::P256, &point, &hashed, &sig);

    // The next signature needs a new one.
    s.sign_init(&Mechanism::EcdsaSha256, private).unwrap();
    let (rv, _) = raw_sign(s.handle(), MESSAGE);
    assert_eq!(
        rv, CKR_USER_NOT_LOGGED_IN,
        "second signature without a new login"
    );

    // Multi-part works the same way.
    s.sign_init(&Mechanism::EcdsaSha256, private).unwrap();
    s.login(UserType::ContextSpecific, Some(&pin(PIN))).unwrap();
    s.sign_update(&MESSAGE[..9]).unwrap();
    s.sign_update(&MESSAGE[9..]).unwrap();
    verify_ecdsa(Curve::P256, &point, &hashed, &s.sign_final().unwrap());

    // A wrong context PIN is a wrong PIN: one try spent, read back from the card.
    s.sign_init(&Mechanism::EcdsaSha256, private).unwrap();
    assert_rv(
        s.login(UserType::ContextSpecific, Some(&pin("000000"))),
        RvError::PinIncorrect,
    );
    assert_eq!(f.on_card(pin_status), PinStatus::TriesLeft(2));
    s.login(UserType::ContextSpecific, Some(&pin(PIN))).unwrap();
    let (rv, sig) = raw_sign(s.handle(), MESSAGE);
    assert_eq!(rv, CKR_OK);
    verify_ecdsa(Curve::P256, &point, &hashed, &sig);
    assert_eq!(f.on_card(pin_status), PinStatus::TriesLeft(3));
    assert_eq!(
        s.get_session_info().unwrap().session_state(),
        SessionState::RwUser,
        "still logged in as the user"
    );
}

#[test]
fn card_authentication_key_signs_without_login() {
    let f = Fresh::new(4_100_019);
    // The card's second token: 9E only, usable without a login (NSS will not finish a TLS
    // handshake from a logged-out token that has CKF_LOGIN_REQUIRED).
    let main = f.p11().get_token_info(f.slot).unwrap();
    let auth = f.p11().get_token_info(f.auth_slot).unwrap();
    assert!(main.login_required());
    assert!(!auth.login_required(), "no CKF_LOGIN_REQUIRED");
    assert!(
        auth.user_pin_initialized(),
        "the card's PIN still writes 9E"
    );
    assert!(!auth.write_protected());
    assert_eq!(auth.label(), format!("{} Card Auth", main.label()));
    assert_eq!(auth.serial_number(), main.serial_number());
    let described = f.p11().get_slot_info(f.auth_slot).unwrap();
    assert!(described
        .slot_description()
        .ends_with("(card authentication)"));

    // The main token does not take 9E keys, and the card is left as it was.
    {
        let s = f.user();
        let (public, private) = (
            vec![
                Attribute::Token(true),
                Attribute::Id(vec![0x04]),
                Attribute::EcParams(Curve::P256.params()),
            ],
            vec![Attribute::Token(true), Attribute::Id(vec![0x04])],
        );
        assert_rv(
            s.generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private),
            RvError::AttributeValueInvalid,
        );
        assert!(f
            .on_card(|ch| keys::metadata(ch, KeySlot::CARD_AUTHENTICATION))
            .is_none());
    }
    // Written through its own token (with the card's PIN, like every write).
    let (public, point) = {
        let s = f.auth_user();
        let (public, private) = generate_ec(&s, 0x04, Curve::P256);
        assert!(!attr_bool(&s, private, AttributeType::Private));
        (public, ec_point(&s, public))
    };
    // Every session closed: the card is logged out.
    let s = f.auth_ro();
    assert_eq!(
        s.get_session_info().unwrap().session_state(),
        SessionState::RoPublic
    );
    let private = object(&s, ObjectClass::PRIVATE_KEY, 0x04);
    assert!(!attr_bool(&s, private, AttributeType::Private));
    assert_eq!(label(&s, private), "CARD AUTH key");
    let hashed = Hash::Sha256.digest(MESSAGE);
    let sig = s.sign(&Mechanism::Ecdsa, private, &hashed).unwrap();
    verify_ecdsa(Curve::P256, &point, &hashed, &sig);
    s.verify(&Mechanism::Ecdsa, public, &hashed, &sig).unwrap();
    assert_eq!(f.on_card(pin_status), PinStatus::TriesLeft(3));
    // The main token shows nothing of 9E, so NSS cannot find it where a login is needed.
    let m = f.ro();
    assert!(m
        .find_objects(&[Attribute::Id(vec![0x04])])
        .unwrap()
        .is_empty());
    // A handle of the card-authentication token is not one of the main token.
    assert_rv(
        m.sign(&Mechanism::Ecdsa, private, &hashed),
        RvError::KeyHandleInvalid,
    );

    // One card, one PIN: a login on the main token is the card's, and closing the other
    // token's sessions does not end it.
    m.login(UserType::User, Some(&pin(PIN))).unwrap();
    assert_eq!(
        s.get_session_info().unwrap().session_state(),
        SessionState::RoUser
    );
    drop(s);
    assert_eq!(
        m.get_session_info().unwrap().session_state(),
        SessionState::RoUser
    );
    let s = f.auth_ro();
    m.logout().unwrap();
    assert_eq!(
        s.get_session_info().unwrap().session_state(),
        SessionState::RoPublic,
        "a logout on either token is the card's"
    );
    // Still no PIN needed for 9E.
    let sig = s.sign(&Mechanism::Ecdsa, private, &hashed).unwrap();
    verify_ecdsa(Curve::P256, &point, &hashed, &sig);
    assert_eq!(
        f.on_card(pin_status),
        PinStatus::TriesLeft(3),
        "no try spent"
    );
}

// ---- writes: certificates, imported keys, replacement, deletion --------------------------------

#[test]
fn certificate_written_read_back_found_and_destroyed() {
    let f = Fresh::new(4_100_020);
    let s = f.user();
    let (public, _) = generate_ec(&s, 0x01, Curve::P256);
    let spki = ec_spki(Curve::P256, &ec_point(&s, public));
    let der = certificate_for(&spki, "Tessera Holder", false, false);

    let cert = create_certificate(&s, 0x01, &der);
    assert_eq!(
        f.on_card(|ch| certificate(ch, 0x9A)).as_deref(),
        Some(der.as_slice()),
        "the card holds the certificate byte for byte"
    );
    let found = s
        .find_objects(&[Attribute::Class(ObjectClass::CERTIFICATE)])
        .unwrap();
    assert_eq!(found, vec![cert]);
    assert_eq!(attr_bytes(&s, cert, AttributeType::Value), der);
    assert_eq!(attr_bytes(&s, cert, AttributeType::Id), vec![0x01]);
    assert_eq!(label(&s, cert), "Certificate for PIV Authentication");
    assert_eq!(
        s.get_attributes(cert, &[AttributeType::CertificateType])
            .unwrap(),
        vec![Attribute::CertificateType(
            cryptoki::object::CertificateType::X_509
        )]
    );
    let parsed = <x509_cert::Certificate as der::Decode>::from_der(&der).unwrap();
    assert_eq!(
        attr_bytes(&s, cert, AttributeType::Subject),
        der::Encode::to_der(&parsed.tbs_certificate.subject).unwrap()
    );
    assert_eq!(
        attr_bytes(&s, cert, AttributeType::Issuer),
        der::Encode::to_der(&parsed.tbs_certificate.issuer).unwrap()
    );

    // A certificate for a key that is not on the card is refused.
    let (_, stranger) = host_ec_key(Curve::P256);
    let other = certificate_for(&ec_spki(Curve::P256, &stranger), "Stranger", false, false);
    assert!(s
        .create_object(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::CertificateType(cryptoki::object::CertificateType::X_509),
            Attribute::Token(true),
            Attribute::Id(vec![0x01]),
            Attribute::Value(other),
        ])
        .is_err());
    assert_eq!(
        f.on_card(|ch| certificate(ch, 0x9A)).as_deref(),
        Some(der.as_slice())
    );

    // Public: visible without login.
    s.logout().unwrap();
    let certs = s
        .find_objects(&[Attribute::Class(ObjectClass::CERTIFICATE)])
        .unwrap();
    assert_eq!(certs.len(), 1);
    assert_eq!(attr_bytes(&s, certs[0], AttributeType::Value), der);

    // Destroying needs login, then removes it from the card.
    assert_rv(s.destroy_object(certs[0]), RvError::UserNotLoggedIn);
    assert!(f.on_card(|ch| certificate(ch, 0x9A)).is_some());
    s.login(UserType::User, Some(&pin(PIN))).unwrap();
    s.destroy_object(certs[0]).unwrap();
    assert_eq!(
        f.on_card(|ch| certificate(ch, 0x9A)),
        None,
        "gone from the card"
    );
    assert!(s
        .find_objects(&[Attribute::Class(ObjectClass::CERTIFICATE)])
        .unwrap()
        .is_empty());
    // The key stays.
    object(&s, ObjectClass::PRIVATE_KEY, 0x01);
}

#[test]
fn imported_rsa_and_ec_private_keys_sign() {
    use rsa::traits::PrivateKeyParts;
    let f = Fresh::new(4_100_021);
    let s = f.user();

    let host = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let be = |n: &rsa::BigUint| n.to_bytes_be();
    let primes = host.primes();
    let created = s
        .create_object(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sign(true),
            Attribute::Id(vec![0x01]),
            Attribute::Modulus(be(host.n())),
            Attribute::PublicExponent(be(host.e())),
            Attribute::PrivateExponent(be(host.d())),
            Attribute::Prime1(be(&primes[0])),
            Attribute::Prime2(be(&primes[1])),
            Attribute::Exponent1(be(host.dp().unwrap())),
            Attribute::Exponent2(be(host.dq().unwrap())),
            Attribute::Coefficient(be(&host.crt_coefficient().unwrap())),
        ])
        .expect("C_CreateObject(CKO_PRIVATE_KEY, CKK_RSA)");
    assert_eq!(attr_bytes(&s, created, AttributeType::Id), vec![0x01]);
    let private = object(&s, ObjectClass::PRIVATE_KEY, 0x01);
    assert_eq!(created, private);
    assert_eq!(rsa_public(&s, private), host.to_public_key());
    let sig = s.sign(&Mechanism::Sha256RsaPkcs, private, MESSAGE).unwrap();
    rsa_verifies(
        &host.to_public_key(),
        Hash::Sha256.pkcs1v15(),
        &Hash::Sha256.digest(MESSAGE),
        &sig,
    );
    let meta = f
        .on_card(|ch| keys::metadata(ch, KeySlot::AUTHENTICATION))
        .unwrap();
    assert!(!meta.generated, "GET METADATA: imported");

    let ec = p384::SecretKey::random(&mut rand::rngs::OsRng);
    let point = {
        use p384::elliptic_curve::sec1::ToEncodedPoint;
        ec.public_key().to_encoded_point(false).as_bytes().to_vec()
    };
    let template = [
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::EC),
        Attribute::Token(true),
        Attribute::Sign(true),
        Attribute::Id(vec![0x04]),
        Attribute::EcParams(P384_PARAMS.to_vec()),
        Attribute::Value(ec.to_bytes().to_vec()),
    ];
    // 9E is written through the card-authentication token; the main token refuses it.
    assert_rv(s.create_object(&template), RvError::AttributeValueInvalid);
    assert!(
        f.on_card(|ch| keys::metadata(ch, KeySlot::CARD_AUTHENTICATION))
            .is_none(),
        "the refused import left 9E empty"
    );
    let s = f.auth_user();
    s.create_object(&template)
        .expect("C_CreateObject(CKO_PRIVATE_KEY, CKK_EC) on the card-authentication token");
    let private = object(&s, ObjectClass::PRIVATE_KEY, 0x04);
    let public = object(&s, ObjectClass::PUBLIC_KEY, 0x04);
    assert_eq!(ec_point(&s, public), point);
    let sig = s.sign(&Mechanism::EcdsaSha384, private, MESSAGE).unwrap();
    verify_ecdsa(Curve::P384, &point, &Hash::Sha384.digest(MESSAGE), &sig);
}

#[test]
fn replacing_the_key_management_key_retires_it() {
    let f = Fresh::new(4_100_022);
    let s = f.user();
    let (old_public, _) = generate_ec(&s, 0x03, Curve::P256);
    let old_point = ec_point(&s, old_public);
    let old_cert = certificate_for(
        &ec_spki(Curve::P256, &old_point),
        "Tessera Encryption",
        true,
        false,
    );
    create_certificate(&s, 0x03, &old_cert);
    assert_eq!(
        f.on_card(|ch| admin::key_history(ch))
            .unwrap_or_default()
            .on_card_certs,
        0
    );

    let (new_public, new_private) = generate_ec(&s, 0x03, Curve::P256);
    let new_point = ec_point(&s, new_public);
    assert_ne!(new_point, old_point, "9D holds a new key");
    assert_eq!(label(&s, new_private), "KEY MAN key");

    // Read back: the old key and certificate are in 82, Key History counts one.
    let history = f.on_card(|ch| admin::key_history(ch)).expect("Key History");
    assert_eq!(history.on_card_certs, 1);
    assert_eq!(
        f.on_card(|ch| certificate(ch, 0x82)).as_deref(),
        Some(old_cert.as_slice())
    );
    assert_eq!(f.on_card(|ch| certificate(ch, 0x9D)), None);
    let meta = f
        .on_card(|ch| keys::metadata(ch, KeySlot::from_reference(0x82).unwrap()))
        .expect("82 holds the old key");
    assert_eq!(
        meta.public_key.unwrap().spki_der,
        ec_spki(Curve::P256, &old_point)
    );

    // Through the module: CKA_ID 05, OpenSC's labels.
    let retired = object(&s, ObjectClass::PRIVATE_KEY, 0x05);
    assert_eq!(label(&s, retired), "Retired KEY MAN 1");
    let retired_public = object(&s, ObjectClass::PUBLIC_KEY, 0x05);
    assert_eq!(ec_point(&s, retired_public), old_point);
    let retired_cert = object(&s, ObjectClass::CERTIFICATE, 0x05);
    assert_eq!(attr_bytes(&s, retired_cert, AttributeType::Value), old_cert);
    assert_eq!(
        label(&s, retired_cert),
        "Retired Certificate for Key Management 1"
    );

    // The old key still agrees keys (old mail stays readable).
    let (host_secret, host_point) = host_ec_key(Curve::P256);
    assert_eq!(
        derive_ecdh(&s, retired, &host_point),
        host_ecdh(Curve::P256, &host_secret, &old_point)
    );
    assert_eq!(
        derive_ecdh(&s, new_private, &host_point),
        host_ecdh(Curve::P256, &host_secret, &new_point)
    );
}

#[test]
fn replacing_an_rsa_key_management_key_keeps_it_decrypting() {
    let f = Fresh::new(4_100_023);
    let s = f.user();
    let (old_public, _) = generate_rsa(&s, 0x03, 2048);
    let old_key = rsa_public(&s, old_public);
    let cert = certificate_for(&rsa_spki(&old_key), "Tessera RSA Encryption", false, true);
    create_certificate(&s, 0x03, &cert);
    generate_ec(&s, 0x03, Curve::P256);

    assert_eq!(
        f.on_card(|ch| admin::key_history(ch))
            .unwrap()
            .on_card_certs,
        1
    );
    let retired = object(&s, ObjectClass::PRIVATE_KEY, 0x05);
    assert!(attr_bool(&s, retired, AttributeType::Decrypt));
    let ct = old_key
        .encrypt(&mut rand::rngs::OsRng, rsa::Pkcs1v15Encrypt, b"old mail")
        .unwrap();
    assert_eq!(
        s.decrypt(&Mechanism::RsaPkcs, retired, &ct).unwrap(),
        b"old mail"
    );
}

#[test]
fn retired_slots_follow_opensc_numbering() {
    let f = Fresh::new(4_100_024);
    let s = f.user();
    // Seven keys in 9D: six of them retire to 82..87.
    let mut points = Vec::new();
    for _ in 0..7 {
        let (public, _) = generate_ec(&s, 0x03, Curve::P256);
        points.push(ec_point(&s, public));
    }
    let history = f.on_card(|ch| admin::key_history(ch)).unwrap();
    assert_eq!(
        usize::from(history.on_card_certs) + usize::from(history.off_card_certs),
        6
    );
    // 82 → 05 … 86 → 09, 87 → 0x10 (decimal digits written as hex, as OpenSC does).
    let ids = [0x05u8, 0x06, 0x07, 0x08, 0x09, 0x10];
    for (n, id) in ids.iter().enumerate() {
        let private = object(&s, ObjectClass::PRIVATE_KEY, *id);
        assert_eq!(label(&s, private), format!("Retired KEY MAN {}", n + 1));
        let public = object(&s, ObjectClass::PUBLIC_KEY, *id);
        assert_eq!(
            ec_point(&s, public),
            points[n],
            "retired slot {} holds key {n}",
            n + 1
        );
    }
    assert!(s
        .find_objects(&[Attribute::Id(vec![0x0A])])
        .unwrap()
        .is_empty());
    assert_eq!(
        ec_point(&s, object(&s, ObjectClass::PUBLIC_KEY, 0x03)),
        points[6]
    );
}

// ---- objects and attributes --------------------------------------------------------------------

#[test]
fn sensitive_attributes_are_refused() {
    let f = Fresh::new(4_100_025);
    let s = f.user();
    let (_, rsa_private) = generate_rsa(&s, 0x01, 2048);
    let (_, ec_private) = generate_ec(&s, 0x03, Curve::P256);

    let info = s
        .get_attribute_info(
            rsa_private,
            &[
                AttributeType::PrivateExponent,
                AttributeType::Prime1,
                AttributeType::Prime2,
                AttributeType::Exponent1,
                AttributeType::Exponent2,
                AttributeType::Coefficient,
            ],
        )
        .unwrap();
    assert!(
        info.iter().all(|i| matches!(i, AttributeInfo::Sensitive)),
        "RSA private parts: {info:?}"
    );
    let info = s
        .get_attribute_info(ec_private, &[AttributeType::Value])
        .unwrap();
    assert!(
        matches!(info.as_slice(), [AttributeInfo::Sensitive]),
        "EC CKA_VALUE: {info:?}"
    );
    assert!(attr_bool(&s, ec_private, AttributeType::Sensitive));
    assert!(!attr_bool(&s, ec_private, AttributeType::Extractable));

    // A mixed template: the readable attributes still come back.
    let got = s
        .get_attributes(
            rsa_private,
            &[
                AttributeType::Label,
                AttributeType::PrivateExponent,
                AttributeType::Id,
            ],
        )
        .unwrap();
    assert_eq!(
        got,
        vec![
            Attribute::Label(b"PIV AUTH key".to_vec()),
            Attribute::Id(vec![0x01])
        ]
    );
}

#[test]
fn objects_ids_labels_and_visibility() {
    let f = Fresh::new(4_100_026);
    {
        let s = f.user();
        let (p1, _) = generate_ec(&s, 0x01, Curve::P256);
        let spki = ec_spki(Curve::P256, &ec_point(&s, p1));
        create_certificate(&s, 0x01, &certificate_for(&spki, "Auth", false, false));
        generate_ec(&s, 0x02, Curve::P256);
        let (p3, _) = generate_ec(&s, 0x03, Curve::P384);
        let spki = ec_spki(Curve::P384, &ec_point(&s, p3));
        create_certificate(&s, 0x03, &certificate_for(&spki, "Enc", true, false));
        generate_ec(&f.auth_user(), 0x04, Curve::P256);
    }
    let expected = [
        (
            0x01u8,
            "PIV AUTH key",
            "PIV AUTH pubkey",
            Some("Certificate for PIV Authentication"),
        ),
        (0x02, "SIGN key", "SIGN pubkey", None),
        (
            0x03,
            "KEY MAN key",
            "KEY MAN pubkey",
            Some("Certificate for Key Management"),
        ),
        (0x04, "CARD AUTH key", "CARD AUTH pubkey", None),
    ];

    // Without login: profile, certificates, public keys on the main token; card authentication's
    // public and private key (CKA_PRIVATE false) on its own token, and nothing else there.
    let s = f.ro();
    let a = f.auth_ro();
    let on = |id: u8| if id == 0x04 { &a } else { &s };
    let profile = find_one(&s, &[Attribute::Class(ObjectClass::PROFILE)]);
    assert_eq!(
        s.get_attributes(profile, &[AttributeType::ProfileId])
            .unwrap(),
        vec![Attribute::ProfileId(
            ProfileIdType::PUBLIC_CERTIFICATES_TOKEN
        )]
    );
    let everything = s.find_objects(&[]).unwrap();
    let privates = s
        .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
        .unwrap();
    assert!(privates.is_empty(), "no private key without login");
    // profile + 2 certificates + 3 public keys
    assert_eq!(everything.len(), 6, "objects without login");
    let auth_objects = a.find_objects(&[]).unwrap();
    assert_eq!(auth_objects.len(), 2, "9E's public and private key");
    let privates = a
        .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
        .unwrap();
    assert_eq!(privates.len(), 1, "9E's private key is public");
    assert_eq!(attr_bytes(&a, privates[0], AttributeType::Id), vec![0x04]);
    for (id, _, public_label, cert_label) in expected {
        let t = on(id);
        let public = object(t, ObjectClass::PUBLIC_KEY, id);
        assert_eq!(label(t, public), public_label);
        assert!(!attr_bool(t, public, AttributeType::Private));
        if let Some(cert_label) = cert_label {
            let cert = object(t, ObjectClass::CERTIFICATE, id);
            assert_eq!(label(t, cert), cert_label);
            assert!(!attr_bool(t, cert, AttributeType::Private));
        }
    }

    // After login: every private key.
    s.login(UserType::User, Some(&pin(PIN))).unwrap();
    assert_eq!(s.find_objects(&[]).unwrap().len(), 9);
    assert_eq!(a.find_objects(&[]).unwrap().len(), 2);
    for (id, private_label, _, _) in expected {
        let t = on(id);
        let private = object(t, ObjectClass::PRIVATE_KEY, id);
        assert_eq!(label(t, private), private_label);
        assert_eq!(
            attr_bool(t, private, AttributeType::Private),
            id != 0x04,
            "CKA_PRIVATE of {id:02x}"
        );
        assert_eq!(
            attr_bool(t, private, AttributeType::AlwaysAuthenticate),
            id == 0x02,
            "CKA_ALWAYS_AUTHENTICATE of {id:02x}"
        );
    }
    // keyUsage of the 9D certificate (keyAgreement) → CKA_DERIVE.
    assert!(attr_bool(
        &s,
        object(&s, ObjectClass::PRIVATE_KEY, 0x03),
        AttributeType::Derive
    ));
    // Finding by label, as URIs do.
    find_one(
        &s,
        &[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(b"SIGN key".to_vec()),
        ],
    );
    s.logout().unwrap();
    assert_eq!(s.find_objects(&[]).unwrap().len(), 6);
    assert_eq!(a.find_objects(&[]).unwrap().len(), 2);
}

#[test]
fn generate_random() {
    let f = Fresh::new(4_100_027);
    let s = f.ro();
    let a = s.generate_random_vec(64).unwrap();
    let b = s.generate_random_vec(64).unwrap();
    assert_eq!(a.len(), 64);
    assert_ne!(a, b);
    assert!(a.iter().any(|&x| x != 0));
    let mut big = vec![0u8; 4096];
    s.generate_random_slice(&mut big).unwrap();
    assert!(big.iter().filter(|&&x| x == 0).count() < 100);
}

#[test]
fn invalid_handles() {
    let f = Fresh::new(4_100_028);
    let s = f.user();
    let (public, private) = generate_ec(&s, 0x01, Curve::P256);
    let (_, agreement) = generate_ec(&s, 0x03, Curve::P256);
    // SAFETY: deliberately a handle the module never issued.
    let bogus = unsafe { ObjectHandle::new_from_raw(0x7FFF_FF00) };
    assert_rv(
        s.get_attributes(bogus, &[AttributeType::Label]),
        RvError::ObjectHandleInvalid,
    );
    assert_rv(s.destroy_object(bogus), RvError::ObjectHandleInvalid);
    assert_rv(
        s.sign(&Mechanism::Ecdsa, bogus, &[0u8; 32]),
        RvError::KeyHandleInvalid,
    );
    assert_rv(
        s.verify(&Mechanism::Ecdsa, bogus, &[0u8; 32], &[0u8; 64]),
        RvError::KeyHandleInvalid,
    );
    // A public key is no signing key; a private key no verification key.
    let rv = rv_of(s.sign(&Mechanism::Ecdsa, public, &[0u8; 32]));
    assert!(
        matches!(
            rv,
            RvError::KeyTypeInconsistent | RvError::KeyFunctionNotPermitted
        ),
        "sign with a public key: {rv:?}"
    );
    // An RSA mechanism with an EC key.
    assert_rv(
        s.sign(&Mechanism::Sha256RsaPkcs, private, MESSAGE),
        RvError::KeyTypeInconsistent,
    );

    // A destroyed session object's handle.
    let (_, host_point) = host_ec_key(Curve::P256);
    use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
    let derived = s
        .derive_key(
            &Mechanism::Ecdh1Derive(Ecdh1DeriveParams::new(EcKdf::null(), &host_point)),
            agreement,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
            ],
        )
        .unwrap();
    s.destroy_object(derived).unwrap();
    assert_rv(
        s.get_attributes(derived, &[AttributeType::Value]),
        RvError::ObjectHandleInvalid,
    );

    // A key-management key may not sign (no keyUsage says otherwise).
    assert_rv(
        s.sign(&Mechanism::Ecdsa, agreement, &[0u8; 32]),
        RvError::KeyFunctionNotPermitted,
    );

    // Session handles: closed by C_CloseAllSessions.
    assert_eq!(close_all_sessions(f.slot), CKR_OK);
    assert_rv(s.get_session_info(), RvError::SessionHandleInvalid);
    assert_rv(s.generate_random_vec(8), RvError::SessionHandleInvalid);
    assert_rv(
        s.find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)]),
        RvError::SessionHandleInvalid,
    );
}

// ---- threads and processes ---------------------------------------------------------------------

#[test]
fn eight_threads_sign_concurrently() {
    let f = Fresh::new(4_100_029);
    let s = f.user();
    let (ec_public, ec_private) = generate_ec(&s, 0x01, Curve::P256);
    let point = ec_point(&s, ec_public);
    // The RSA key is card authentication's, used from its own token without a login.
    let (rsa_pub, rsa_private) = generate_rsa(&f.auth_user(), 0x04, 2048);
    let key = rsa_public(&f.auth_ro(), rsa_pub);
    let p11 = f.p11().clone();
    let (slot, auth_slot) = (f.slot, f.auth_slot);
    std::thread::scope(|scope| {
        let mut workers = Vec::new();
        for t in 0..8u8 {
            let p11 = p11.clone();
            let (point, key) = (&point, &key);
            workers.push(scope.spawn(move || {
                let session = p11
                    .open_ro_session(if t % 2 == 0 { slot } else { auth_slot })
                    .expect("C_OpenSession in a thread");
                for i in 0..10u8 {
                    let msg = [b'T', t, b'#', i];
                    if t % 2 == 0 {
                        let sig = session
                            .sign(&Mechanism::EcdsaSha256, ec_private, &msg)
                            .expect("ECDSA in a thread");
                        verify_ecdsa(Curve::P256, point, &Hash::Sha256.digest(&msg), &sig);
                    } else {
                        let sig = session
                            .sign(&Mechanism::Sha256RsaPkcs, rsa_private, &msg)
                            .expect("RSA in a thread");
                        rsa_verifies(
                            key,
                            Hash::Sha256.pkcs1v15(),
                            &Hash::Sha256.digest(&msg),
                            &sig,
                        );
                    }
                }
            }));
        }
        for w in workers {
            w.join().expect("worker thread");
        }
    });
    assert_eq!(
        s.get_session_info().unwrap().session_state(),
        SessionState::RwUser
    );
}

#[cfg(unix)]
#[test]
fn forked_child_must_initialize_again() {
    let f = Fresh::new(4_100_030);
    let s = f.user();
    let p11 = f.p11().clone();
    // SAFETY: the child only calls the module through cryptoki and leaves with _exit, never
    // returning into the test harness; every other test waits on the module lock.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut code = 0;
            if let Err(Error::Pkcs11(RvError::CryptokiNotInitialized, _)) = p11.get_all_slots() {
                code |= 1;
            }
            if let Err(Error::Pkcs11(RvError::CryptokiNotInitialized, _)) = s.get_session_info() {
                code |= 2;
            }
            if p11
                .initialize(cryptoki::context::CInitializeArgs::new(
                    cryptoki::context::CInitializeFlags::OS_LOCKING_OK,
                ))
                .is_ok()
            {
                code |= 4;
            }
            if p11.get_all_slots().is_ok_and(|v| !v.is_empty()) {
                code |= 8;
            }
            // The parent's session is not the child's.
            if let Err(Error::Pkcs11(RvError::SessionHandleInvalid, _)) = s.get_session_info() {
                code |= 16;
            }
            code
        }));
        // SAFETY: leaves the child at once, without running the parent's atexit handlers or
        // destructors (cryptoki's Session would close the parent's session handle).
        unsafe { libc::_exit(outcome.unwrap_or(99)) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    assert!(libc::WIFEXITED(status), "child did not exit normally");
    let code = libc::WEXITSTATUS(status);
    assert_eq!(
        code & 1,
        1,
        "child: C_GetSlotList must be CKR_CRYPTOKI_NOT_INITIALIZED (exit {code})"
    );
    assert_eq!(
        code & 2,
        2,
        "child: C_GetSessionInfo must be CKR_CRYPTOKI_NOT_INITIALIZED (exit {code})"
    );
    assert_eq!(code & 4, 4, "child: C_Initialize must work (exit {code})");
    assert_eq!(code & 8, 8, "child: slots after C_Initialize (exit {code})");
    assert_eq!(
        code & 16,
        16,
        "child: the parent's session handle is invalid after its own C_Initialize (exit {code})"
    );
    // The parent is untouched.
    assert_eq!(
        s.get_session_info().unwrap().session_state(),
        SessionState::RwUser
    );
}

// ---- more login rules --------------------------------------------------------------------------

#[test]
fn login_rules_between_user_and_so() {
    let f = Fresh::new(4_100_031);
    let s = f.rw();
    // C_InitPIN needs the SO.
    assert_rv(s.init_pin(&pin("11223344")), RvError::UserNotLoggedIn);
    s.login(UserType::User, Some(&pin(PIN))).unwrap();
    assert_rv(s.init_pin(&pin("11223344")), RvError::UserNotLoggedIn);
    assert_rv(
        s.login(UserType::So, Some(&pin(PUK))),
        RvError::UserAnotherAlreadyLoggedIn,
    );
    s.logout().unwrap();
    s.login(UserType::So, Some(&pin(PUK))).unwrap();
    assert_rv(
        s.login(UserType::User, Some(&pin(PIN))),
        RvError::UserAnotherAlreadyLoggedIn,
    );
    // A malformed new PIN never reaches the card (no PUK try spent, PIN unchanged).
    assert_rv(s.init_pin(&pin("12345")), RvError::PinLenRange);
    assert_eq!(f.on_card(puk_tries), 3);
    assert_eq!(
        f.on_card(|ch| tessera::applet::piv::verify_pin(ch, Some(PIN.as_bytes()))),
        PinStatus::Verified
    );
    s.logout().unwrap();

    // CKU_CONTEXT_SPECIFIC without an operation that wants it.
    s.login(UserType::User, Some(&pin(PIN))).unwrap();
    assert_rv(
        s.login(UserType::ContextSpecific, Some(&pin(PIN))),
        RvError::OperationNotInitialized,
    );
    // C_SetPIN with a malformed new PIN spends nothing.
    assert_rv(s.set_pin(&pin(PIN), &pin("123")), RvError::PinLenRange);
    assert_eq!(f.on_card(pin_status), PinStatus::TriesLeft(3));

    // A wrong PIN after a good one: COUNT_LOW follows, and a good login clears it.
    s.logout().unwrap();
    assert_rv(
        s.login(UserType::User, Some(&pin("654321"))),
        RvError::PinIncorrect,
    );
    assert!(f.p11().get_token_info(f.slot).unwrap().user_pin_count_low());
    s.login(UserType::User, Some(&pin(PIN))).unwrap();
    assert_eq!(f.on_card(pin_status), PinStatus::TriesLeft(3));
    let t = f.p11().get_token_info(f.slot).unwrap();
    assert!(
        !t.user_pin_count_low(),
        "a good PIN resets the counter and the flag"
    );
}

#[test]
fn wrong_puk_counts_down_and_locks() {
    let f = Fresh::new(4_100_032);
    let s = f.rw();
    assert_rv(
        s.login(UserType::So, Some(&pin("00000000"))),
        RvError::PinIncorrect,
    );
    assert_eq!(f.on_card(puk_tries), 2);
    assert!(f.p11().get_token_info(f.slot).unwrap().so_pin_count_low());
    assert_rv(
        s.login(UserType::So, Some(&pin("00000001"))),
        RvError::PinIncorrect,
    );
    assert_eq!(f.on_card(puk_tries), 1);
    assert!(f.p11().get_token_info(f.slot).unwrap().so_pin_final_try());
    let rv = rv_of(s.login(UserType::So, Some(&pin("00000002"))));
    assert!(
        matches!(rv, RvError::PinIncorrect | RvError::PinLocked),
        "last wrong PUK: {rv:?}"
    );
    assert_eq!(f.on_card(puk_tries), 0);
    assert!(f.p11().get_token_info(f.slot).unwrap().so_pin_locked());
    assert_rv(s.login(UserType::So, Some(&pin(PUK))), RvError::PinLocked);
    // The PIN is untouched.
    assert_eq!(f.on_card(pin_status), PinStatus::TriesLeft(3));
    s.login(UserType::User, Some(&pin(PIN))).unwrap();
}

#[test]
fn so_changes_puk_with_a_wrong_old_puk_spends_a_try() {
    let f = Fresh::new(4_100_033);
    let s = f.rw();
    s.login(UserType::So, Some(&pin(PUK))).unwrap();
    assert_rv(
        s.set_pin(&pin("11111111"), &pin("22222222")),
        RvError::PinIncorrect,
    );
    assert_eq!(f.on_card(puk_tries), 2);
    let meta = f.on_card(|ch| keys::reference_metadata(ch, 0x81)).unwrap();
    assert!(meta.is_default, "the PUK did not change");
}

// ---- more write rules --------------------------------------------------------------------------

#[test]
fn writes_need_a_logged_in_rw_session() {
    let f = Fresh::new(4_100_034);
    let (public, private) = {
        let s = f.user();
        generate_ec(&s, 0x01, Curve::P256)
    };
    let _ = (public, private);
    let rw = f.rw();
    let mut public_template = vec![
        Attribute::Token(true),
        Attribute::Id(vec![0x01]),
        Attribute::EcParams(P256_PARAMS.to_vec()),
    ];
    let private_template = vec![Attribute::Token(true), Attribute::Id(vec![0x01])];
    assert_rv(
        rw.generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &public_template,
            &private_template,
        ),
        RvError::UserNotLoggedIn,
    );
    let ro = f.ro();
    ro.login(UserType::User, Some(&pin(PIN))).unwrap();
    assert_rv(
        ro.generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &public_template,
            &private_template,
        ),
        RvError::SessionReadOnly,
    );
    let public = object(&ro, ObjectClass::PUBLIC_KEY, 0x01);
    let spki = ec_spki(Curve::P256, &ec_point(&ro, public));
    let der = certificate_for(&spki, "RO", false, false);
    assert_rv(
        ro.create_object(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::CertificateType(cryptoki::object::CertificateType::X_509),
            Attribute::Id(vec![0x01]),
            Attribute::Value(der),
        ]),
        RvError::SessionReadOnly,
    );
    assert_eq!(f.on_card(|ch| certificate(ch, 0x9A)), None);

    // Sizes the card cannot do.
    let rsa_public_template = [
        Attribute::Token(true),
        Attribute::Id(vec![0x01]),
        Attribute::ModulusBits(1024u64.into()),
    ];
    let rv = rv_of(rw.generate_key_pair(
        &Mechanism::RsaPkcsKeyPairGen,
        &rsa_public_template,
        &private_template,
    ));
    assert!(
        matches!(
            rv,
            RvError::KeySizeRange | RvError::TemplateInconsistent | RvError::AttributeValueInvalid
        ),
        "RSA 1024: {rv:?}"
    );
    public_template[2] = Attribute::EcParams(vec![0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x23]); // P-521
    let rv = rv_of(rw.generate_key_pair(
        &Mechanism::EccKeyPairGen,
        &public_template,
        &private_template,
    ));
    assert!(
        matches!(
            rv,
            RvError::CurveNotSupported
                | RvError::DomainParamsInvalid
                | RvError::AttributeValueInvalid
                | RvError::TemplateInconsistent
        ),
        "P-521: {rv:?}"
    );
    // The 9A key is untouched by the refused writes.
    assert_eq!(
        ec_point(&rw, object(&rw, ObjectClass::PUBLIC_KEY, 0x01)),
        ec_point(&ro, public)
    );
}

#[test]
fn key_without_cka_id_goes_by_usage() {
    let f = Fresh::new(4_100_035);
    let s = f.user();
    let (public, _) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::EcParams(P256_PARAMS.to_vec()),
            ],
            &[Attribute::Token(true), Attribute::Sign(true)],
        )
        .unwrap();
    assert_eq!(
        attr_bytes(&s, public, AttributeType::Id),
        vec![0x01],
        "signing key → 9A"
    );
    let (public, _) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::EcParams(P256_PARAMS.to_vec()),
            ],
            &[Attribute::Token(true), Attribute::Derive(true)],
        )
        .unwrap();
    assert_eq!(
        attr_bytes(&s, public, AttributeType::Id),
        vec![0x03],
        "agreement key → 9D"
    );
    assert!(f
        .on_card(|ch| keys::metadata(ch, KeySlot::KEY_MANAGEMENT))
        .is_some());
}

#[test]
fn destroying_a_private_key_deletes_it_from_the_card() {
    let f = Fresh::new(4_100_036);
    let s = f.user();
    let (public, private) = generate_ec(&s, 0x01, Curve::P256);
    let spki = ec_spki(Curve::P256, &ec_point(&s, public));
    create_certificate(&s, 0x01, &certificate_for(&spki, "Gone", false, false));
    s.destroy_object(private).unwrap();
    assert_eq!(
        f.on_card(|ch| keys::metadata(ch, KeySlot::AUTHENTICATION)),
        None,
        "the key is gone from the card"
    );
    assert_eq!(
        f.on_card(|ch| certificate(ch, 0x9A)),
        None,
        "and its certificate"
    );
    assert!(s
        .find_objects(&[Attribute::Id(vec![0x01])])
        .unwrap()
        .is_empty());
    assert_rv(
        s.sign(&Mechanism::Ecdsa, private, &[1u8; 32]),
        RvError::KeyHandleInvalid,
    );
}

#[test]
fn attributes_are_read_only_and_derived_keys_can_be_sensitive() {
    let f = Fresh::new(4_100_037);
    let s = f.user();
    let (public, private) = generate_ec(&s, 0x03, Curve::P256);
    // Setting a value to what it is succeeds (NSS does that), changing it does not.
    s.update_attributes(private, &[Attribute::Label(b"KEY MAN key".to_vec())])
        .unwrap();
    // NSS renames keys it imports: accepted, but the card's label stays (design decision in
    // token::library::set_attributes).
    s.update_attributes(private, &[Attribute::Label(b"renamed".to_vec())])
        .unwrap();
    assert_eq!(label(&s, private), "KEY MAN key");
    assert_rv(
        s.update_attributes(private, &[Attribute::Sign(true)]),
        RvError::AttributeReadOnly,
    );
    assert!(!attr_bool(&s, private, AttributeType::Sign));
    let spki = ec_spki(Curve::P256, &ec_point(&s, public));
    let cert = create_certificate(&s, 0x03, &certificate_for(&spki, "Enc", true, false));
    assert_rv(
        s.update_attributes(cert, &[Attribute::Value(vec![0x30, 0x00])]),
        RvError::AttributeReadOnly,
    );

    use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
    let (_, host_point) = host_ec_key(Curve::P256);
    let derived = s
        .derive_key(
            &Mechanism::Ecdh1Derive(Ecdh1DeriveParams::new(EcKdf::null(), &host_point)),
            private,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                Attribute::Sensitive(true),
            ],
        )
        .unwrap();
    let info = s
        .get_attribute_info(derived, &[AttributeType::Value])
        .unwrap();
    assert!(
        matches!(info.as_slice(), [AttributeInfo::Sensitive]),
        "CKA_VALUE of a sensitive derived key: {info:?}"
    );
    // CKA_VALUE_LEN asks for fewer bytes.
    let derived = s
        .derive_key(
            &Mechanism::Ecdh1Derive(Ecdh1DeriveParams::new(EcKdf::null(), &host_point)),
            private,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
                Attribute::ValueLen(16u64.into()),
            ],
        )
        .unwrap();
    assert_eq!(attr_bytes(&s, derived, AttributeType::Value).len(), 16);
}

#[test]
fn wrong_lengths_and_parameters_have_their_return_values() {
    let f = Fresh::new(4_100_038);
    let s = f.user();
    let (rsa_pub, rsa_priv) = generate_rsa(&s, 0x01, 2048);
    let (_, ec_priv) = generate_ec(&s, 0x03, Curve::P256);

    assert_rv(
        s.sign(&Mechanism::RsaPkcs, rsa_priv, &[0x11; 250]),
        RvError::DataLenRange,
    );
    assert_rv(
        s.sign(&Mechanism::RsaX509, rsa_priv, &[0x11; 257]),
        RvError::DataLenRange,
    );
    assert_rv(
        s.decrypt(&Mechanism::RsaPkcs, rsa_priv, &[0x11; 100]),
        RvError::EncryptedDataLenRange,
    );
    let sig = s
        .sign(&Mechanism::Sha256RsaPkcs, rsa_priv, MESSAGE)
        .unwrap();
    assert_rv(
        s.verify(&Mechanism::Sha256RsaPkcs, rsa_pub, MESSAGE, &sig[1..]),
        RvError::SignatureLenRange,
    );
    // PSS: the hash must be the mechanism's, the salt must fit.
    let wrong_hash = PkcsPssParams {
        hash_alg: MechanismType::SHA1,
        mgf: PkcsMgfType::MGF1_SHA1,
        s_len: 20u64.into(),
    };
    assert_rv(
        s.sign(&Mechanism::Sha256RsaPkcsPss(wrong_hash), rsa_priv, MESSAGE),
        RvError::MechanismParamInvalid,
    );
    let long_salt = PkcsPssParams {
        hash_alg: MechanismType::SHA256,
        mgf: PkcsMgfType::MGF1_SHA256,
        s_len: 300u64.into(),
    };
    assert_rv(
        s.sign(&Mechanism::Sha256RsaPkcsPss(long_salt), rsa_priv, MESSAGE),
        RvError::MechanismParamInvalid,
    );
    // ECDH with a point that is not on the curve.
    use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
    let mut bad_point = vec![0x04];
    bad_point.extend_from_slice(&[0x01; 64]);
    let rv = rv_of(s.derive_key(
        &Mechanism::Ecdh1Derive(Ecdh1DeriveParams::new(EcKdf::null(), &bad_point)),
        ec_priv,
        &[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
        ],
    ));
    assert!(
        matches!(
            rv,
            RvError::MechanismParamInvalid | RvError::DomainParamsInvalid
        ),
        "ECDH with an invalid point: {rv:?}"
    );
    // An operation in progress blocks another one of the same kind until it ends.
    s.sign_init(&Mechanism::Sha256RsaPkcs, rsa_priv).unwrap();
    assert_rv(
        s.sign_init(&Mechanism::Sha256RsaPkcs, rsa_priv),
        RvError::OperationActive,
    );
    s.sign_update(MESSAGE).unwrap();
    s.sign_final().unwrap();
    assert_rv(s.sign_final(), RvError::OperationNotInitialized);
}

#[test]
fn wait_for_slot_event_sees_removal_and_is_cancelled_by_finalize() {
    use std::sync::mpsc;
    use std::time::Duration;
    let f = Fresh::new(4_100_039);
    assert_eq!(drain_events(f.p11()), vec![f.slot.id(), f.auth_slot.id()]);

    // A blocking wait wakes up when the card goes.
    let (tx, rx) = mpsc::channel();
    let p11 = f.p11().clone();
    std::thread::spawn(move || {
        let _ = tx.send(p11.wait_for_slot_event());
    });
    std::thread::sleep(Duration::from_millis(300));
    let away = f.card.with_extension("away");
    std::fs::rename(&f.card, &away).unwrap();
    let got = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("C_WaitForSlotEvent never returned after a removal");
    assert_eq!(got.unwrap(), f.slot);
    std::fs::rename(&away, &f.card).unwrap();
    assert_eq!(f.p11().get_slot_event().unwrap(), Some(f.slot));

    // C_Finalize cancels a blocked wait.
    let (tx, rx) = mpsc::channel();
    let p11 = f.p11().clone();
    std::thread::spawn(move || {
        let _ = tx.send(p11.wait_for_slot_event());
    });
    std::thread::sleep(Duration::from_millis(300));
    f.p11().clone().finalize().unwrap();
    let got = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("C_Finalize did not cancel C_WaitForSlotEvent");
    assert_rv(got, RvError::CryptokiNotInitialized);
    // Initialised again for the test's own C_Finalize.
    f.p11()
        .initialize(cryptoki::context::CInitializeArgs::new(
            cryptoki::context::CInitializeFlags::OS_LOCKING_OK,
        ))
        .unwrap();
}

#[test]
fn counters_and_identity_at_startup_come_from_the_card() {
    let mut low = tessera::vcard::CardState::factory(4_100_040);
    low.pin.tries_left = 1;
    low.puk.tries_left = 0;
    let mut five = tessera::vcard::CardState::factory(4_100_041);
    five.set_retries(5, 4);
    five.pin.tries_left = 4;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.json"), dir.path().join("b.json"));
    tessera::vcard::CardFile::create(&a, &low).unwrap();
    tessera::vcard::CardFile::create(&b, &five).unwrap();
    let init = Initialized::new(&[&a, &b]);
    let slots = init.pkcs11.get_all_slots().unwrap();
    let (sa, sb) = (slots[0], slots[1]);

    let ta = init.pkcs11.get_token_info(sa).unwrap();
    assert_eq!(ta.serial_number(), "4100040");
    assert!(
        ta.user_pin_final_try(),
        "PIN at its last try before any login"
    );
    assert!(ta.user_pin_count_low());
    assert!(ta.so_pin_locked(), "PUK blocked");
    let tb = init.pkcs11.get_token_info(sb).unwrap();
    assert_eq!(tb.serial_number(), "4100041");
    assert!(tb.user_pin_count_low(), "4 of 5");
    assert!(!tb.user_pin_final_try());
    assert!(!tb.so_pin_count_low(), "PUK 4 of 4 is not low");
    drop(init);
}

#[test]
fn writes_use_the_pin_protected_management_key() {
    use tessera::applet::piv::{self, ManagementAlgorithm};
    let f = Fresh::new(4_100_042);
    let key: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37) ^ 0xA5).collect();
    f.on_card(|ch| {
        piv::authenticate_management(
            ch,
            ManagementAlgorithm::TripleDes,
            &piv::DEFAULT_MANAGEMENT_KEY,
        )?;
        admin::set_management_key(ch, ManagementAlgorithm::Aes256, &key)?;
        piv::authenticate_management(ch, ManagementAlgorithm::Aes256, &key)?;
        admin::store_management_key(ch, &key)
    });
    let s = f.user();
    let (public, _) = generate_ec(&s, 0x01, Curve::P256);
    let spki = ec_spki(Curve::P256, &ec_point(&s, public));
    let der = certificate_for(&spki, "Protected", false, false);
    create_certificate(&s, 0x01, &der);
    assert_eq!(
        f.on_card(|ch| certificate(ch, 0x9A)).as_deref(),
        Some(der.as_slice())
    );
    // The card's management key is still the one we set (the module did not change it).
    f.on_card(|ch| piv::authenticate_management(ch, ManagementAlgorithm::Aes256, &key));
}

#[test]
fn writes_are_refused_without_a_usable_management_key() {
    use tessera::applet::piv::{self, ManagementAlgorithm};
    let f = Fresh::new(4_100_043);
    let key = [0x42u8; 16];
    f.on_card(|ch| {
        piv::authenticate_management(
            ch,
            ManagementAlgorithm::TripleDes,
            &piv::DEFAULT_MANAGEMENT_KEY,
        )?;
        admin::set_management_key(ch, ManagementAlgorithm::Aes128, &key)
    });
    let s = f.user();
    let public = [
        Attribute::Token(true),
        Attribute::Id(vec![0x01]),
        Attribute::EcParams(P256_PARAMS.to_vec()),
    ];
    let private = [Attribute::Token(true), Attribute::Id(vec![0x01])];
    assert!(s
        .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
        .is_err());
    assert_eq!(
        f.on_card(|ch| keys::metadata(ch, KeySlot::AUTHENTICATION)),
        None,
        "no key was generated"
    );
    assert_eq!(
        f.on_card(pin_status),
        PinStatus::TriesLeft(3),
        "no PIN try spent"
    );
}

#[test]
fn replacing_a_key_leaves_no_stale_certificate() {
    let f = Fresh::new(4_100_044);
    let s = f.user();
    let (public, _) = generate_ec(&s, 0x01, Curve::P256);
    let spki = ec_spki(Curve::P256, &ec_point(&s, public));
    create_certificate(&s, 0x01, &certificate_for(&spki, "Old", false, false));
    let (public, private) = generate_ec(&s, 0x01, Curve::P256);
    let certs = s
        .find_objects(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::Id(vec![0x01]),
        ])
        .unwrap();
    assert!(
        certs.is_empty(),
        "the old certificate does not certify the new key"
    );
    assert_eq!(f.on_card(|ch| certificate(ch, 0x9A)), None);
    let point = ec_point(&s, public);
    let sig = s.sign(&Mechanism::EcdsaSha256, private, MESSAGE).unwrap();
    verify_ecdsa(Curve::P256, &point, &Hash::Sha256.digest(MESSAGE), &sig);
}

#[test]
fn a_full_key_history_refuses_to_replace_the_key_management_key() {
    let f = Fresh::new(4_100_045);
    let s = f.user();
    // 9D plus 20 retired slots.
    for _ in 0..21 {
        generate_ec(&s, 0x03, Curve::P256);
    }
    let history = f.on_card(|ch| admin::key_history(ch)).unwrap();
    assert_eq!(history.on_card_certs, 20);
    let current = ec_point(&s, object(&s, ObjectClass::PUBLIC_KEY, 0x03));
    let last_retired = object(&s, ObjectClass::PRIVATE_KEY, 0x24);
    assert_eq!(label(&s, last_retired), "Retired KEY MAN 20");

    let public = [
        Attribute::Token(true),
        Attribute::Id(vec![0x03]),
        Attribute::EcParams(P256_PARAMS.to_vec()),
    ];
    let private = [Attribute::Token(true), Attribute::Id(vec![0x03])];
    assert!(
        s.generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
            .is_err(),
        "no retired slot left: the write is refused"
    );
    let meta = f
        .on_card(|ch| keys::metadata(ch, KeySlot::KEY_MANAGEMENT))
        .unwrap();
    assert_eq!(
        meta.public_key.unwrap().spki_der,
        ec_spki(Curve::P256, &current),
        "9D still holds its key"
    );
    assert_eq!(
        f.on_card(|ch| admin::key_history(ch))
            .unwrap()
            .on_card_certs,
        20
    );
}

// ---- a running program and another process's change ----------------------------------------

#[test]
fn a_running_program_sees_an_import_by_another_process() {
    let f = Fresh::new(4_100_091);
    let s = f.user();
    let dir = tempfile::tempdir().unwrap();
    running::running_client_sees_an_import(&s, dir.path(), |p12, pw| {
        running::tessera_import(&["--vcard".as_ref(), f.card.as_os_str()], p12, pw);
    });
}

#[test]
fn the_token_label_stays_after_a_write() {
    let f = Fresh::new(4_100_092);
    let before = f.p11().get_token_info(f.slot).unwrap().label().to_owned();
    let s = f.user();
    generate_ec(&s, 0x01, Curve::P256);
    assert_eq!(
        f.p11().get_token_info(f.slot).unwrap().label(),
        before,
        "the label comes from the card, not from the transport lent out during the write"
    );
}

/// A card whose management key is stored PIN-protected, left by a crash with a committed but
/// unfinished import into 9A: before the PIN the module shows no certificate with a foreign key;
/// C_Login finishes the change first, and the new e-Cert then signs.
#[test]
fn the_module_finishes_an_interrupted_change_at_login() {
    use sha2::Digest;
    use tessera::applet::piv::change;
    use tessera::applet::piv::keys::{ImportKey, KeyAlgorithm, PinPolicy};
    use tessera::applet::piv::plans::{self, Caps, Load, NewKey};
    use tessera::applet::piv::{self, ManagementAlgorithm};
    use tessera::card::{with_transaction, CardError, Channel};
    use tessera::vcard::{CardFile, CardState, VirtualTransport};

    struct Cut<'a>(&'a mut dyn Channel, usize);
    impl Channel for Cut<'_> {
        fn transmit_raw(&mut self, apdu: &[u8]) -> Result<Vec<u8>, CardError> {
            if self.1 == 0 {
                return Err(CardError::NoCard);
            }
            self.1 -= 1;
            self.0.transmit_raw(apdu)
        }
        fn extended_length(&self) -> bool {
            self.0.extended_length()
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let prep = dir.path().join("prep.json");
    CardFile::create(&prep, &CardState::factory(4_100_094)).unwrap();
    let mgmt = [0x42u8; 24];
    let scalar_a = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let scalar_b = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let spki = |k: &p256::SecretKey| {
        use pkcs8::EncodePublicKey;
        k.public_key()
            .to_public_key_der()
            .unwrap()
            .as_bytes()
            .to_vec()
    };
    let cert_a = certificate_for(&spki(&scalar_a), "Before crash", false, false);
    let cert_b = certificate_for(&spki(&scalar_b), "After crash", false, false);
    let load = |ch: &mut dyn Channel, k: &p256::SecretKey, cert: &[u8]| {
        let bytes = k.to_bytes();
        let key = ImportKey::Ec {
            algorithm: KeyAlgorithm::EccP256,
            scalar: &bytes,
        };
        let key = NewKey::Import {
            key: &key,
            policy: PinPolicy::Default,
        };
        let caps = Caps {
            metadata: true,
            move_key: true,
        };
        let load = Load {
            slot: KeySlot::AUTHENTICATION,
            key: &key,
            certificate: Some(cert),
            chain: None,
            keep_old: false,
        };
        plans::load(ch, caps, &load, &|_| true).map(|_| ())
    };
    let session = |ch: &mut dyn Channel| -> Result<(), CardError> {
        piv::select(ch)?;
        piv::verify_pin(ch, Some(PIN.as_bytes()))?;
        piv::authenticate_management(ch, ManagementAlgorithm::Aes192, &mgmt)
    };
    on_card_file(&prep, |ch| {
        piv::select(ch)?;
        piv::verify_pin(ch, Some(PIN.as_bytes()))?;
        piv::authenticate_management(
            ch,
            ManagementAlgorithm::TripleDes,
            &piv::DEFAULT_MANAGEMENT_KEY,
        )?;
        admin::set_management_key(ch, ManagementAlgorithm::Aes192, &mgmt)?;
        piv::authenticate_management(ch, ManagementAlgorithm::Aes192, &mgmt)?;
        admin::store_management_key(ch, &mgmt)?;
        load(ch, &scalar_a, &cert_a)
    });
    // The import of B, cut right after its commit (the first cut that leaves it committed).
    let mut crashed = None;
    for n in 1..200 {
        let copy = dir.path().join(format!("cut-{n}.json"));
        std::fs::copy(&prep, &copy).unwrap();
        let mut t = VirtualTransport::open(&copy).unwrap();
        let _ = with_transaction(&mut t, |ch| {
            session(ch)?;
            load(&mut Cut(ch, n), &scalar_b, &cert_b)
        });
        drop(t);
        let committed = on_card_file(&copy, |ch| {
            piv::select(ch)?;
            Ok(change::read_record(ch)?
                .pending
                .is_some_and(|p| p.phase == change::Phase::Committed))
        });
        if committed {
            crashed = Some(copy);
            break;
        }
    }
    let crashed = crashed.expect("a cut that leaves the import committed");
    let state = CardFile::open(&crashed)
        .unwrap()
        .read(|s| (s.clone(), false))
        .unwrap();
    let f = Fresh::with_state(state);
    let s = f.rw();
    // Before the PIN: the change waits (the management key needs it); no certificate is
    // shown with a key that is not its own.
    for cert in s
        .find_objects(&[Attribute::Class(ObjectClass::CERTIFICATE)])
        .unwrap()
    {
        let der = attr_bytes(&s, cert, AttributeType::Value);
        assert!(der == cert_a || der == cert_b);
    }
    // C_Login finishes the change before anything else.
    s.login(UserType::User, Some(&pin(PIN))).unwrap();
    let cert = object(&s, ObjectClass::CERTIFICATE, 0x01);
    assert_eq!(attr_bytes(&s, cert, AttributeType::Value), cert_b);
    let pending = f.on_card(|ch| Ok(change::read_record(ch)?.pending));
    assert!(pending.is_none(), "the change record is cleared");
    let private = object(&s, ObjectClass::PRIVATE_KEY, 0x01);
    let hashed = sha2::Sha256::digest(MESSAGE);
    let sig = s.sign(&Mechanism::Ecdsa, private, &hashed).unwrap();
    let point = p256::EncodedPoint::from(scalar_b.public_key());
    verify_ecdsa(Curve::P256, point.as_bytes(), &hashed, &sig);
}

/// One bad object is one missing object: a certificate that does not parse is left out (and
/// reported by `tessera status`); the rest of the card works.
#[test]
fn a_damaged_certificate_is_one_missing_object() {
    use tessera::applet::piv::keys::{ImportKey, KeyAlgorithm, PinPolicy};
    use tessera::applet::piv::plans::{self, Caps, Load, NewKey};
    use tessera::applet::piv::{self, ManagementAlgorithm};
    use tessera::vcard::{CardFile, CardState};

    let dir = tempfile::tempdir().unwrap();
    let prep = dir.path().join("prep.json");
    CardFile::create(&prep, &CardState::factory(4_100_096)).unwrap();
    let good = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let spki = {
        use pkcs8::EncodePublicKey;
        good.public_key()
            .to_public_key_der()
            .unwrap()
            .as_bytes()
            .to_vec()
    };
    let good_cert = certificate_for(&spki, "Still fine", false, false);
    on_card_file(&prep, |ch| {
        piv::select(ch)?;
        piv::authenticate_management(
            ch,
            ManagementAlgorithm::TripleDes,
            &piv::DEFAULT_MANAGEMENT_KEY,
        )?;
        let caps = Caps {
            metadata: true,
            move_key: true,
        };
        for (slot, key, cert) in [
            (
                KeySlot::AUTHENTICATION,
                p256::SecretKey::random(&mut rand::rngs::OsRng),
                vec![0x30, 0x03, 0x02, 0x01, 0x00],
            ),
            (KeySlot::SIGNATURE, good.clone(), good_cert.clone()),
        ] {
            let bytes = key.to_bytes();
            let import = ImportKey::Ec {
                algorithm: KeyAlgorithm::EccP256,
                scalar: &bytes,
            };
            let new_key = NewKey::Import {
                key: &import,
                policy: PinPolicy::Default,
            };
            let load = Load {
                slot,
                key: &new_key,
                certificate: Some(&cert),
                chain: None,
                keep_old: false,
            };
            plans::load(ch, caps, &load, &|_| true)?;
        }
        Ok(())
    });
    let state = CardFile::open(&prep)
        .unwrap()
        .read(|s| (s.clone(), false))
        .unwrap();
    let f = Fresh::with_state(state);
    let s = f.user();
    let certs = s
        .find_objects(&[Attribute::Class(ObjectClass::CERTIFICATE)])
        .unwrap();
    assert_eq!(certs.len(), 1, "only the certificate that parses is shown");
    assert_eq!(attr_bytes(&s, certs[0], AttributeType::Value), good_cert);
    let hashed = Hash::Sha256.digest(MESSAGE);
    let private = object(&s, ObjectClass::PRIVATE_KEY, 0x02);
    let point = p256::EncodedPoint::from(good.public_key());
    let sig = {
        s.sign_init(&Mechanism::Ecdsa, private).unwrap();
        s.login(UserType::ContextSpecific, Some(&pin(PIN))).unwrap();
        let (rv, sig) = raw_sign(s.handle(), &hashed);
        assert_eq!(rv, CKR_OK);
        sig
    };
    verify_ecdsa(Curve::P256, point.as_bytes(), &hashed, &sig);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("--vcard")
        .arg(&f.card)
        .args(["--json", "status"])
        .env_remove("TESSERA_VCARD")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = report["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p["slot"] == "9a" && p["problem"].as_str().unwrap().contains("cannot be read")),
        "status reports the damaged certificate: {problems:?}"
    );
}

/// As installed (no `card-auth-token`): one token per card, 9E on it, usable without a login
/// (CKA_PRIVATE false), so URIs without a token name find exactly one card.
#[test]
fn one_token_per_card_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let card = dir.path().join("card.json");
    tessera::vcard::CardFile::create(&card, &tessera::vcard::CardState::factory(4_100_097))
        .unwrap();
    let init = Initialized::one_token_per_card(&[&card]);
    let slots = init.pkcs11.get_slots_with_token().unwrap();
    assert_eq!(slots.len(), 1, "one token for the one card: {slots:?}");
    let slot = slots[0];
    let info = init.pkcs11.get_token_info(slot).unwrap();
    assert_eq!(info.label(), "Tessera PIV #4100097");
    assert!(info.login_required());
    let s = init.pkcs11.open_rw_session(slot).unwrap();
    s.login(UserType::User, Some(&pin(PIN))).unwrap();
    let (public, _) = generate_ec(&s, 0x04, Curve::P256);
    generate_ec(&s, 0x01, Curve::P256);
    let point = ec_point(&s, public);
    s.logout().unwrap();
    // Without a login: 9E's private key is visible and signs; 9A's is not visible.
    let private = object(&s, ObjectClass::PRIVATE_KEY, 0x04);
    assert!(!attr_bool(&s, private, AttributeType::Private));
    assert_eq!(label(&s, private), "CARD AUTH key");
    let hashed = Hash::Sha256.digest(MESSAGE);
    let sig = s.sign(&Mechanism::Ecdsa, private, &hashed).unwrap();
    verify_ecdsa(Curve::P256, &point, &hashed, &sig);
    assert!(s
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(vec![0x01])
        ])
        .unwrap()
        .is_empty());
    drop(s);
    drop(init);
}
