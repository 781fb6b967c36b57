//! The behaviour profiles through raw APDUs: on every profile the SP 800-73-4 core still works
//! (SELECT, VERIFY with 63Cx counters, PIN change and unblock, key generation and signatures
//! checked with RustCrypto, certificate containers), and each profile refuses exactly what its
//! card family lacks, with that family's status word.

use super::*;
use crate::crypto::PrivateKey;
use crate::profile::{Extension, Profile};
use crate::state::certificate_object;
use rsa::Pkcs1v15Sign;
use sha2::{Digest, Sha256};

const CERT_9A: [u8; 3] = [0x5F, 0xC1, 0x05];

/// A real certificate in its PIV container (about 400 bytes: more than one short APDU).
fn certificate_container() -> Vec<u8> {
    let key = PrivateKey::generate(KeyAlgorithm::EccP256).unwrap();
    let cert = crypto::attestation_root_certificate(&key, 42).unwrap();
    x509_cert::Certificate::from_der(&cert).unwrap();
    certificate_object(&cert)
}

/// The SP 800-73-4 part every profile keeps, checked on a fresh card of `profile`.
fn standard_piv_works(profile: Profile) {
    let mut c = Card::with_profile(profile);
    let (r, sw) = c.raw(&[
        0x00, 0xA4, 0x04, 0x00, 0x09, 0xA0, 0, 0, 3, 8, 0, 0, 0x10, 0, 0x00,
    ]);
    assert_eq!(sw, 0x9000, "{profile}: SELECT");
    let apt = tlv::expect_only(&r, 0x61).unwrap();
    assert_eq!(
        tlv::find(apt, 0x4F).unwrap().unwrap(),
        &[0, 0, 0x10, 0, 1, 0]
    );

    // VERIFY: counters in 63Cx, the status query, a right PIN restores the counter.
    assert_eq!(c.raw(&[0, 0x20, 0, 0x80]).1, 0x63C3, "{profile}");
    assert_eq!(c.verify(b"654321"), 0x63C2, "{profile}");
    assert_eq!(c.raw(&[0, 0x20, 0, 0x80]).1, 0x63C2, "{profile}");
    assert_eq!(c.verify(b"123456"), 0x9000, "{profile}");
    assert_eq!(c.raw(&[0, 0x20, 0, 0x80]).1, 0x9000, "{profile}");
    assert_eq!(c.state.pin.tries_left, 3);

    // Management key, P-256 in 9A: the signature verifies with the GENERATE answer's key.
    c.auth();
    let point = p256_point(&c.generate(0x9A, KeyAlgorithm::EccP256, &[]));
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).unwrap();
    let hash = Sha256::digest(b"document");
    let (sig, sw) = c.sign(0x9A, KeyAlgorithm::EccP256, &hash);
    assert_eq!(sw, 0x9000, "{profile}: ECDSA");
    vk.verify_prehash(&hash, &p256::ecdsa::Signature::from_der(&sig).unwrap())
        .unwrap();

    // RSA-2048 in 9C (PIN always): one signature per VERIFY, PKCS#1 v1.5 verified.
    let t = c.generate(0x9C, KeyAlgorithm::Rsa2048, &[]);
    let public = rsa::RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(tlv::find(&t, 0x81).unwrap().unwrap()),
        rsa::BigUint::from_bytes_be(tlv::find(&t, 0x82).unwrap().unwrap()),
    )
    .unwrap();
    let mut block = vec![0x00, 0x01];
    block.resize(256 - 19 - 32 - 1, 0xFF);
    block.push(0x00);
    block.extend(hex::decode("3031300d060960864801650304020105000420").unwrap());
    block.extend_from_slice(&hash);
    assert_eq!(block.len(), 256);
    let (sig, sw) = c.sign(0x9C, KeyAlgorithm::Rsa2048, &block);
    assert_eq!(sw, 0x9000, "{profile}: RSA");
    public
        .verify(Pkcs1v15Sign::new::<Sha256>(), &hash, &sig)
        .unwrap();
    assert_eq!(c.sign(0x9C, KeyAlgorithm::Rsa2048, &block).1, 0x6982);

    // A certificate container written and read back (chained or extended as the card allows).
    let object = certificate_container();
    let put = [&get_data_cmd(&CERT_9A)[..], &object].concat();
    let ext = profile.extended_length();
    assert_eq!(c.send_with(0xDB, 0x3F, 0xFF, &put, ext).1, 0x9000);
    let (back, sw) = c.send_with(0xCB, 0x3F, 0xFF, &get_data_cmd(&CERT_9A), ext);
    assert_eq!((back, sw), (object, 0x9000), "{profile}: GET DATA");
    // The standard objects are there; an absent one is answered the profile's way.
    c.ok(0xCB, 0x3F, 0xFF, &get_data_cmd(&[0x5F, 0xC1, 0x02]));
    c.ok(0xCB, 0x3F, 0xFF, &get_data_cmd(&[0x7E]));
    assert_eq!(
        c.send(0xCB, 0x3F, 0xFF, &get_data_cmd(&[0x5F, 0xC1, 0x0A]))
            .1,
        profile.absent_object_sw()
    );

    // PIN change, block, PUK unblock (CHANGE REFERENCE DATA, RESET RETRY COUNTER).
    let mut data = pad(b"123456");
    data.extend(pad(b"24681357"));
    assert_eq!(c.send(0x24, 0, 0x80, &data).1, 0x9000, "{profile}");
    while c.verify(b"000000") != 0x6983 {}
    let mut data = pad(b"12345678");
    data.extend(pad(b"135790"));
    assert_eq!(c.send(0x2C, 0, 0x80, &data).1, 0x9000, "{profile}");
    assert_eq!(c.verify(b"135790"), 0x9000, "{profile}");
}

#[test]
fn the_standard_works_on_every_profile() {
    for profile in Profile::ALL {
        standard_piv_works(profile);
    }
}

/// The status word of an extension instruction with plausible parameters.
fn extension_sw(c: &mut Card, ext: Extension) -> u16 {
    let apdu: Vec<u8> = match ext {
        Extension::SetManagementKey => {
            let mut d = vec![0, 0xFF, 0xFF, 0xFF, 27, 0x03, 0x9B, 24];
            d.extend(DEFAULT_MGMT_KEY);
            d
        }
        Extension::ImportKey => [&[0, 0xFE, 0x11, 0x9D, 34, 0x06, 32][..], &[7; 32]].concat(),
        Extension::GetVersion => vec![0, 0xFD, 0, 0, 0],
        Extension::Reset => vec![0, 0xFB, 0, 0],
        Extension::SetPinRetries => vec![0, 0xFA, 5, 5],
        Extension::Attest => vec![0, 0xF9, 0x9A, 0, 0],
        Extension::GetSerial => vec![0, 0xF8, 0, 0, 0],
        Extension::GetMetadata => vec![0, 0xF7, 0, 0x80, 0],
        Extension::MoveKey => vec![0, 0xF6, 0x82, 0x9A],
    };
    c.raw(&apdu).1
}

/// Every refused extension is refused as the profile says, whatever the card's state.
fn refusals_match_the_profile(profile: Profile) {
    let mut c = Card::with_profile(profile);
    c.auth();
    c.verify(b"123456");
    c.generate(0x9A, KeyAlgorithm::EccP256, &[]);
    for ext in Extension::ALL {
        if let Some(sw) = profile.refusal(ext) {
            assert_eq!(extension_sw(&mut c, ext), sw, "{profile}: {ext:?}");
        }
    }
}

#[test]
fn yubikey_4_lacks_metadata_move_serial_and_aes() {
    let profile = Profile::YubiKey4;
    refusals_match_the_profile(profile);
    let mut c = Card::with_profile(profile);
    assert_eq!(c.raw(&[0, 0xFD, 0, 0, 0]), (vec![4, 3, 7], 0x9000));
    assert_eq!(c.raw(&[0, 0xF7, 0, 0x80, 0]).1, 0x6D00, "GET METADATA");
    assert_eq!(c.raw(&[0, 0xF6, 0x82, 0x9A]).1, 0x6D00, "MOVE KEY");
    assert_eq!(
        c.raw(&[0, 0xF8, 0, 0, 0]).1,
        0x6D00,
        "GET SERIAL (YubiKey 5)"
    );
    // A YubiKey's SELECT answer: AID and coexistent tag allocation authority, nothing else.
    let (r, _) = c.raw(&[0, 0xA4, 4, 0, 5, 0xA0, 0, 0, 3, 8, 0]);
    assert_eq!(
        r,
        hex::decode("61114F0600001000010079074F05A000000308").unwrap()
    );

    // SET MANAGEMENT KEY: 3DES only.
    c.auth();
    let aes: Vec<u8> = (0..24).collect();
    let mut data = vec![MgmtAlgorithm::Aes192.id()];
    data.extend(tlv::encode(0x9B, &aes));
    assert_eq!(c.send(0xFF, 0xFF, 0xFF, &data).1, 0x6A80, "AES-192");
    let mut data = vec![MgmtAlgorithm::Aes128.id()];
    data.extend(tlv::encode(0x9B, &aes[..16]));
    assert_eq!(c.send(0xFF, 0xFF, 0xFF, &data).1, 0x6A80, "AES-128");
    let new_3des = [0x42u8; 24];
    let mut data = vec![MgmtAlgorithm::TripleDes.id()];
    data.extend(tlv::encode(0x9B, &new_3des));
    c.ok(0xFF, 0xFF, 0xFF, &data);
    c.applet.reset();
    assert_eq!(c.auth_with(MgmtAlgorithm::TripleDes, &new_3des), 0x9000);

    // No RSA-3072/4096; PIN and touch policies, IMPORT and ATTEST as on a YubiKey 4.3.
    assert_eq!(c.send(0x47, 0, 0x9A, &[0xAC, 3, 0x80, 1, 0x05]).1, 0x6A80);
    assert_eq!(c.send(0x47, 0, 0x9A, &[0xAC, 3, 0x80, 1, 0x16]).1, 0x6A80);
    c.generate(0x9A, KeyAlgorithm::EccP384, &[0xAA, 1, 1, 0xAB, 1, 1]);
    c.verify(b"123456");
    let ec = p256::SecretKey::random(&mut rand::thread_rng());
    c.ok(0xFE, 0x11, 0x9D, &tlv::encode(0x06, &ec.to_bytes()));
    let (der, sw) = c.send(0xF9, 0x9A, 0, &[]);
    assert_eq!(sw, 0x9000, "ATTEST (4.3 and later)");
    let cert = x509_cert::Certificate::from_der(&der).unwrap();
    let exts = cert.tbs_certificate.extensions.unwrap_or_default();
    let firmware = exts
        .iter()
        .find(|e| e.extn_id.to_string() == "1.3.6.1.4.1.41482.3.3")
        .expect("firmware extension");
    assert_eq!(firmware.extn_value.as_bytes(), &[4, 3, 7]);
    assert!(
        !exts
            .iter()
            .any(|e| e.extn_id.to_string() == "1.3.6.1.4.1.41482.3.7"),
        "a YubiKey 4 attestation names no serial"
    );
    c.ok(0xFA, 5, 6, &[]);
    assert_eq!(c.raw(&[0, 0x20, 0, 0x80]).1, 0x63C5);
    c.block_pin_and_puk();
    c.ok(0xFB, 0, 0, &[]);
    assert_eq!(c.state.profile, profile, "RESET keeps the card's family");
    assert!(c.state.keys.contains_key(&SLOT_ATTESTATION));
    assert_eq!(c.state.pin.tries_left, 3);
}

#[test]
fn piv_basic_has_no_yubikey_extension_and_no_admin_data() {
    let profile = Profile::PivBasic;
    refusals_match_the_profile(profile);
    let mut c = Card::with_profile(profile);
    for ins in [0xFD, 0xF8, 0xF7, 0xFE, 0xFF, 0xFA, 0xFB, 0xF6, 0xF9] {
        assert_eq!(c.raw(&[0, ins, 0, 0]).1, 0x6D00, "INS {ins:02X}");
    }
    // No attestation key or certificate, no admin data.
    assert!(!c.state.keys.contains_key(&SLOT_ATTESTATION));
    assert!(!c.state.objects.contains_key(&TAG_ATTESTATION_CERT));
    for tag in [[0x5F, 0xFF, 0x00], [0x5F, 0xFF, 0x01], [0x5F, 0xFF, 0x70]] {
        assert_eq!(c.send(0xCB, 0x3F, 0xFF, &get_data_cmd(&tag)).1, 0x6A82);
    }
    // Its serial is the CHUID's GUID.
    let chuid = c.ok(0xCB, 0x3F, 0xFF, &get_data_cmd(&[0x5F, 0xC1, 0x02]));
    let guid = tlv::find(tlv::expect_only(&chuid, 0x53).unwrap(), 0x34)
        .unwrap()
        .unwrap();
    assert_eq!(guid.len(), 16);

    // PUT DATA: the SP 800-73-4 containers only.
    c.auth();
    let put =
        |tag: &[u8], content: &[u8]| [&get_data_cmd(tag)[..], &tlv::encode(0x53, content)].concat();
    for tag in [[0x5F, 0xFF, 0x00], [0x5F, 0xFF, 0x70], [0x5F, 0xC1, 0x24]] {
        assert_eq!(
            c.send(0xDB, 0x3F, 0xFF, &put(&tag, &[0x80, 0])).1,
            0x6A80,
            "{tag:02X?}"
        );
        assert_eq!(c.send(0xCB, 0x3F, 0xFF, &get_data_cmd(&tag)).1, 0x6A82);
    }
    for tag in [
        [0x5F, 0xC1, 0x01],
        [0x5F, 0xC1, 0x0C],
        [0x5F, 0xC1, 0x0D],
        [0x5F, 0xC1, 0x23],
    ] {
        c.ok(0xDB, 0x3F, 0xFF, &put(&tag, &[0xC1, 1, 0]));
        c.ok(0xCB, 0x3F, 0xFF, &get_data_cmd(&tag));
    }
    let discovery = c.ok(0xCB, 0x3F, 0xFF, &get_data_cmd(&[0x7E]));
    c.ok(0xDB, 0x3F, 0xFF, &discovery);

    // SP 800-78-4 algorithms, no Yubico policy objects in the template.
    assert_eq!(c.send(0x47, 0, 0x9A, &[0xAC, 3, 0x80, 1, 0x05]).1, 0x6A80);
    assert_eq!(c.send(0x47, 0, 0x9A, &[0xAC, 3, 0x80, 1, 0x16]).1, 0x6A80);
    assert_eq!(
        c.send(0x47, 0, 0x9A, &[0xAC, 6, 0x80, 1, 0x11, 0xAA, 1, 1])
            .1,
        0x6A80
    );
    c.generate(0x9E, KeyAlgorithm::EccP384, &[]);
    assert_eq!(
        c.sign(0x9E, KeyAlgorithm::EccP384, &[1; 48]).1,
        0x9000,
        "card authentication without PIN"
    );
    // The SELECT answer lists what it has.
    let (r, _) = c.raw(&[0, 0xA4, 4, 0, 5, 0xA0, 0, 0, 3, 8, 0]);
    let apt = tlv::expect_only(&r, 0x61).unwrap();
    let algs = tlv::find(apt, 0xAC).unwrap().unwrap();
    let ids: Vec<u8> = tlv::objects(algs)
        .filter_map(|o| o.ok())
        .filter(|(t, _)| *t == 0x80)
        .flat_map(|(_, v)| v.to_vec())
        .collect();
    assert_eq!(ids, vec![0x07, 0x11, 0x14, 0x03]);
}

#[test]
fn quirky_answers_oddly_where_the_standard_lets_it() {
    let profile = Profile::Quirky;
    refusals_match_the_profile(profile);
    let mut c = Card::with_profile(profile);
    // GET METADATA: 9000 and nothing, for every reference.
    for p2 in [0x80, 0x81, 0x9B, 0x9A, 0x82, 0xF9, 0x00, 0x42] {
        assert_eq!(c.raw(&[0, 0xF7, 0, p2, 0]), (vec![], 0x9000), "P2 {p2:02X}");
    }
    // Missing instructions: CLA for one, INS for others; truly unknown ones INS.
    assert_eq!(c.raw(&[0, 0xFD, 0, 0, 0]).1, 0x6E00, "GET VERSION");
    assert_eq!(c.raw(&[0, 0xF8, 0, 0, 0]).1, 0x6D00, "GET SERIAL");
    assert_eq!(c.raw(&[0, 0xF9, 0x9A, 0, 0]).1, 0x6D00, "ATTEST");
    assert_eq!(c.raw(&[0, 0xF6, 0x82, 0x9A]).1, 0x6D00, "MOVE KEY");
    assert_eq!(c.raw(&[0, 0x01, 0, 0]).1, 0x6D00);
    // Absent objects: 6A80, admin data included.
    for tag in [[0x5F, 0xFF, 0x00], [0x5F, 0xC1, 0x05], [0x5F, 0xFF, 0x01]] {
        assert_eq!(c.send(0xCB, 0x3F, 0xFF, &get_data_cmd(&tag)).1, 0x6A80);
    }

    // No extended length: any extended APDU is 6700 and changes nothing.
    c.auth();
    let object = tlv::encode(0x53, &tlv::encode(0x70, &[0x5A; 2000]));
    let put = [&get_data_cmd(&CERT_9A)[..], &object].concat();
    let extended_put = Command::new(0xDB, 0x3F, 0xFF)
        .with_data(&put)
        .with_le(None)
        .encode(true);
    assert_eq!(c.raw(&extended_put).1, 0x6700);
    let short_data_extended_le = Command::new(0xCB, 0x3F, 0xFF)
        .with_data(&get_data_cmd(&[0x5F, 0xC1, 0x02]))
        .with_le(Some(1000))
        .encode(true);
    assert_eq!(c.raw(&short_data_extended_le).1, 0x6700);
    assert_eq!(c.raw(&[0, 0xCB, 0x3F, 0xFF, 0, 0, 0]).1, 0x6700);
    assert!(!c.state.objects.contains_key(&0x5FC105));
    // More than 255 bytes only by chaining.
    let parts = Command::new(0xDB, 0x3F, 0xFF).with_data(&put).chain();
    assert!(parts.len() > 1);
    for part in &parts {
        let apdu = part.encode(false);
        assert!(apdu.len() <= 5 + 255 + 1);
        assert_eq!(c.raw(&apdu).1, 0x9000);
    }
    assert_eq!(c.state.objects[&0x5FC105], object);

    // A long answer: 256 bytes and 61xx, then GET RESPONSE.
    let (first, sw) = c.raw(&[0, 0xCB, 0x3F, 0xFF, 5, 0x5C, 3, 0x5F, 0xC1, 0x05, 0]);
    assert_eq!((first.len(), sw), (256, 0x6100));
    let mut all = first;
    let mut last = 0;
    loop {
        let (d, sw) = c.raw(&[0, 0xC0, 0, 0, 0]);
        all.extend(d);
        if sw == 0x9000 {
            break;
        }
        assert_eq!(sw >> 8, 0x61);
        last = sw & 0xFF;
    }
    assert!(last > 0, "the last chunk is announced with its length");
    assert_eq!(all, object, "Le 00 takes whatever is left, never 6Cxx");

    // A wrong Le on GET RESPONSE: 6Cxx with what is left, which stays for the right Le.
    let (_, sw) = c.raw(&[0, 0xCB, 0x3F, 0xFF, 5, 0x5C, 3, 0x5F, 0xC1, 0x05, 0]);
    assert_eq!(sw, 0x6100);
    let mut total = 256;
    let left = loop {
        let (d, sw) = c.raw(&[0, 0xC0, 0, 0, 0]);
        total += d.len();
        match sw {
            0x6100 => continue,
            s if s >> 8 == 0x61 => break usize::from(s as u8),
            s => panic!("{s:04X}"),
        }
    };
    assert_eq!(total + left, object.len());
    let (d, sw) = c.raw(&[0, 0xC0, 0, 0, (left + 5) as u8]);
    assert_eq!((d.len(), sw), (0, 0x6C00 | left as u16));
    let (d, sw) = c.raw(&[0, 0xC0, 0, 0, left as u8]);
    assert_eq!((d.len(), sw), (left, 0x9000));
    assert_eq!(&d[..], &object[object.len() - left..]);
    // A smaller Le is standard: part of it and 61xx for the rest.
    let (_, sw) = c.raw(&[0, 0xCB, 0x3F, 0xFF, 5, 0x5C, 3, 0x5F, 0xC1, 0x05, 0]);
    assert_eq!(sw, 0x6100);
    assert_eq!(c.raw(&[0, 0xC0, 0, 0, 0x10]).1, 0x6100);

    // What independent applets keep of the YubiKey extensions still works.
    c.ok(0xFE, 0x11, 0x9D, &tlv::encode(0x06, &[7; 32]));
    c.verify(b"123456");
    c.ok(0xFA, 4, 4, &[]);
    assert_eq!(c.raw(&[0, 0x20, 0, 0x80]).1, 0x63C4);
}

#[test]
fn the_default_profile_is_the_card_as_it_was() {
    let c = Card::new();
    assert_eq!(c.state.profile, Profile::YubiKey57);
    assert_eq!(c.state.atr(), crate::atr());
    for ext in Extension::ALL {
        assert!(c.state.profile.has(ext));
    }
    // A card file written before profiles existed is a YubiKey 5.7.
    let mut json: serde_json::Value = serde_json::to_value(&c.state).unwrap();
    json.as_object_mut().unwrap().remove("profile");
    let old = CardState::from_json(json.to_string().as_bytes()).unwrap();
    assert_eq!(old, c.state);
}

#[test]
fn garbage_never_panics_on_any_profile() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x9F0F11E);
    for profile in Profile::ALL {
        let mut c = Card::with_profile(profile);
        c.auth();
        c.generate(0x9A, KeyAlgorithm::EccP256, &[]);
        c.verify(b"123456");
        for _ in 0..5_000 {
            let len = rng.gen_range(0..24);
            let mut v = vec![0u8; len];
            rng.fill_bytes(&mut v);
            if len > 4 && rng.gen_bool(0.8) {
                v[0] = if rng.gen_bool(0.5) { 0 } else { 0x10 };
                v[1] = [
                    0xC0, 0xCB, 0xDB, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA, 0xFD, 0xFE, 0xFF,
                ][rng.gen_range(0..11)];
            }
            let o = c.outcome(&v);
            assert!(o.response.len() >= 2, "{profile}: {v:02X?}");
        }
    }
}
