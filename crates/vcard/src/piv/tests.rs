//! Tests of the PIV applet through raw APDUs, with the host side (management-key cipher,
//! signature checks) done independently with the RustCrypto crates. The behaviour profiles have
//! their own tests in `tests/profiles.rs`; everything here runs on the default profile.

mod profiles;

use super::*;
use crate::card::apdu::Command;
use crate::crypto::{KeyAlgorithm, MgmtAlgorithm};
use crate::seal::KdfCost;
use crate::state::{CardState, DEFAULT_MGMT_KEY, SLOT_ATTESTATION, TAG_ATTESTATION_CERT};
use cipher::generic_array::GenericArray;
use cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use der::{Decode, Encode};
use ecdsa::signature::hazmat::PrehashVerifier;
use ecdsa::signature::Verifier;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand::{Rng, RngCore, SeedableRng};
use rsa::traits::{PrivateKeyParts, PublicKeyParts};

const SERIAL: u32 = 0x0102_0304;

struct Card {
    applet: Applet,
    state: CardState,
}

fn sw_of(resp: &[u8]) -> u16 {
    let n = resp.len();
    assert!(n >= 2, "response without status word");
    u16::from_be_bytes([resp[n - 2], resp[n - 1]])
}

fn pad(pin: &[u8]) -> Vec<u8> {
    let mut v = pin.to_vec();
    v.resize(8, 0xFF);
    v
}

/// Host-side ECB with the crates directly, not through the card's crypto module.
fn host_ecb(alg: MgmtAlgorithm, key: &[u8], block: &[u8], encrypt: bool) -> Vec<u8> {
    fn run<C: BlockEncrypt + BlockDecrypt + KeyInit>(
        key: &[u8],
        block: &[u8],
        enc: bool,
    ) -> Vec<u8> {
        let c = C::new_from_slice(key).unwrap();
        let mut b = GenericArray::clone_from_slice(block);
        if enc {
            c.encrypt_block(&mut b)
        } else {
            c.decrypt_block(&mut b)
        }
        b.to_vec()
    }
    match alg {
        MgmtAlgorithm::TripleDes => run::<des::TdesEde3>(key, block, encrypt),
        MgmtAlgorithm::Aes128 => run::<aes::Aes128>(key, block, encrypt),
        MgmtAlgorithm::Aes192 => run::<aes::Aes192>(key, block, encrypt),
        MgmtAlgorithm::Aes256 => run::<aes::Aes256>(key, block, encrypt),
    }
}

/// Unwraps `outer { inner value }`.
fn unwrap2(data: &[u8], outer: u32, inner: u32) -> Vec<u8> {
    let o = tlv::expect_only(data, outer).unwrap();
    tlv::expect_only(o, inner).unwrap().to_vec()
}

impl Card {
    /// A card of the default profile. PIN and PUK are hashed at the test cost (these tests
    /// verify hundreds of times); `state.rs` tests the default cost.
    fn new() -> Self {
        Self::with_profile(crate::Profile::default())
    }

    fn with_profile(profile: crate::Profile) -> Self {
        Card {
            applet: Applet::new(),
            state: CardState::factory_with_cost(profile, SERIAL, KdfCost::TEST).unwrap(),
        }
    }

    fn outcome(&mut self, apdu: &[u8]) -> Outcome {
        let o = self.applet.process(&mut self.state, apdu);
        assert!(o.response.len() >= 2);
        o
    }

    fn raw(&mut self, apdu: &[u8]) -> (Vec<u8>, u16) {
        let r = self.outcome(apdu).response;
        let sw = sw_of(&r);
        (r[..r.len() - 2].to_vec(), sw)
    }

    /// Sends a command extended (`ext`) or chained, then collects 61xx with GET RESPONSE.
    fn send_with(&mut self, ins: u8, p1: u8, p2: u8, data: &[u8], ext: bool) -> (Vec<u8>, u16) {
        let cmd = Command::new(ins, p1, p2).with_data(data);
        let parts = if ext { vec![cmd] } else { cmd.chain() };
        let mut last = (Vec::new(), 0);
        for part in &parts {
            last = self.raw(&part.encode(ext));
        }
        let (mut out, mut sw) = last;
        while sw >> 8 == 0x61 {
            let (d, s) = self.raw(&[0, 0xC0, 0, 0, sw as u8]);
            out.extend(d);
            sw = s;
        }
        (out, sw)
    }

    fn send(&mut self, ins: u8, p1: u8, p2: u8, data: &[u8]) -> (Vec<u8>, u16) {
        self.send_with(ins, p1, p2, data, false)
    }

    fn ok(&mut self, ins: u8, p1: u8, p2: u8, data: &[u8]) -> Vec<u8> {
        let (d, sw) = self.send(ins, p1, p2, data);
        assert_eq!(
            sw, 0x9000,
            "INS {ins:02X} P1 {p1:02X} P2 {p2:02X}: {sw:04X}"
        );
        d
    }

    fn verify(&mut self, pin: &[u8]) -> u16 {
        self.send(0x20, 0, 0x80, &pad(pin)).1
    }

    fn auth_with(&mut self, alg: MgmtAlgorithm, key: &[u8]) -> u16 {
        let (r, sw) = self.send(0x87, alg.id(), 0x9B, &[0x7C, 0x02, 0x80, 0x00]);
        if sw != 0x9000 {
            return sw;
        }
        let enc = unwrap2(&r, 0x7C, 0x80);
        assert_eq!(enc.len(), alg.block_len());
        let witness = host_ecb(alg, key, &enc, false);
        let challenge = vec![0x5A; alg.block_len()];
        let mut inner = tlv::encode(0x80, &witness);
        inner.extend(tlv::encode(0x81, &challenge));
        let (r, sw) = self.send(0x87, alg.id(), 0x9B, &tlv::encode(0x7C, &inner));
        if sw == 0x9000 {
            let answer = unwrap2(&r, 0x7C, 0x82);
            assert_eq!(
                answer,
                host_ecb(alg, key, &challenge, true),
                "card proved wrong key"
            );
        }
        sw
    }

    fn auth(&mut self) {
        assert_eq!(
            self.auth_with(MgmtAlgorithm::TripleDes, &DEFAULT_MGMT_KEY),
            0x9000
        );
    }

    fn generate(&mut self, slot: u8, alg: KeyAlgorithm, extra: &[u8]) -> Vec<u8> {
        let mut inner = tlv::encode(0x80, &[alg.id()]);
        inner.extend_from_slice(extra);
        let r = self.ok(0x47, 0, slot, &tlv::encode(0xAC, &inner));
        tlv::expect_only(&r, 0x7F49).unwrap().to_vec()
    }

    fn sign(&mut self, slot: u8, alg: KeyAlgorithm, input: &[u8]) -> (Vec<u8>, u16) {
        let mut inner = vec![0x82, 0x00];
        inner.extend(tlv::encode(0x81, input));
        let (r, sw) = self.send(0x87, alg.id(), slot, &tlv::encode(0x7C, &inner));
        if sw != 0x9000 {
            return (r, sw);
        }
        (unwrap2(&r, 0x7C, 0x82), sw)
    }

    fn block_pin_and_puk(&mut self) {
        while self.verify(b"000000") != 0x6983 {}
        let mut bad = pad(b"00000000");
        bad.extend(pad(b"654321"));
        while self.send(0x2C, 0, 0x80, &bad).1 != 0x6983 {}
    }
}

fn get_data_cmd(tag: &[u8]) -> Vec<u8> {
    tlv::encode(0x5C, tag)
}

#[test]
fn select_answers_the_application_property_template() {
    let mut c = Card::new();
    let (r, sw) = c.raw(&[
        0x00, 0xA4, 0x04, 0x00, 0x0B, 0xA0, 0, 0, 3, 8, 0, 0, 0x10, 0, 1, 0, 0x00,
    ]);
    assert_eq!(sw, 0x9000);
    let apt = tlv::expect_only(&r, 0x61).unwrap();
    assert_eq!(
        tlv::find(apt, 0x4F).unwrap().unwrap(),
        &[0, 0, 0x10, 0, 1, 0]
    );
    assert_eq!(tlv::find(apt, 0x50).unwrap().unwrap(), b"Tessera PIV");
    let coexist = tlv::find(apt, 0x79).unwrap().unwrap();
    assert_eq!(
        tlv::expect_only(coexist, 0x4F).unwrap(),
        &[0xA0, 0, 0, 3, 8]
    );
    assert!(c.applet.is_selected());
    // Truncated AID, without Le; P2 0C gives no data.
    assert_eq!(c.raw(&[0, 0xA4, 4, 0, 5, 0xA0, 0, 0, 3, 8]).1, 0x9000);
    assert_eq!(
        c.raw(&[0, 0xA4, 4, 0x0C, 5, 0xA0, 0, 0, 3, 8]),
        (vec![], 0x9000)
    );
    assert_eq!(
        c.raw(&[0, 0xA4, 4, 0, 9, 0xA0, 0, 0, 3, 8, 0, 0, 0x10, 0, 0])
            .1,
        0x9000
    );
    assert_eq!(c.raw(&[0, 0xA4, 4, 0, 5, 0xA0, 0, 0, 6, 0x47, 0]).1, 0x6A82);
    assert_eq!(c.raw(&[0, 0xA4, 4, 0, 4, 0xA0, 0, 0, 3]).1, 0x6A82);
    assert_eq!(c.raw(&[0, 0xA4, 0, 0, 2, 0x3F, 0]).1, 0x6A86);
}

#[test]
fn commands_work_without_select_and_bad_headers_are_refused() {
    let mut c = Card::new();
    assert_eq!(c.raw(&[0, 0xFD, 0, 0, 0]), (vec![5, 7, 1], 0x9000));
    assert_eq!(
        c.raw(&[0, 0xF8, 0, 0, 0]),
        (SERIAL.to_be_bytes().to_vec(), 0x9000)
    );
    assert_eq!(c.raw(&[0, 0x01, 0, 0]).1, 0x6D00);
    assert_eq!(c.raw(&[0x80, 0xFD, 0, 0]).1, 0x6E00);
    assert_eq!(c.raw(&[0x0C, 0xFD, 0, 0]).1, 0x6E00);
    assert_eq!(c.raw(&[0, 0xC0, 0, 0, 0]).1, 0x6985);
}

#[test]
fn pin_verify_counts_down_blocks_and_reports() {
    let mut c = Card::new();
    assert_eq!(c.raw(&[0, 0x20, 0, 0x80]).1, 0x63C3);
    let o = c.outcome(&[0, 0x20, 0, 0x80]);
    assert!(!o.changed);
    let mut apdu = vec![0, 0x20, 0, 0x80, 8];
    apdu.extend(pad(b"654321"));
    let o = c.outcome(&apdu);
    assert_eq!(sw_of(&o.response), 0x63C2);
    assert!(o.changed, "a spent try is a state change");
    assert_eq!(c.raw(&[0, 0x20, 0, 0x80]).1, 0x63C2);
    assert_eq!(c.verify(b"123456"), 0x9000);
    assert_eq!(c.raw(&[0, 0x20, 0, 0x80]).1, 0x9000);
    assert_eq!(c.state.pin.tries_left, 3);
    // Un-verify.
    assert_eq!(c.raw(&[0, 0x20, 0xFF, 0x80]).1, 0x9000);
    assert_eq!(c.raw(&[0, 0x20, 0, 0x80]).1, 0x63C3);
    // Malformed.
    assert_eq!(c.send(0x20, 0, 0x80, b"123456").1, 0x6A80);
    assert_eq!(c.send(0x20, 0, 0x81, &pad(b"12345678")).1, 0x6A88);
    assert_eq!(c.state.pin.tries_left, 3, "malformed VERIFY spends no try");
    // Block.
    assert_eq!(c.verify(b"000000"), 0x63C2);
    assert_eq!(c.verify(b"000000"), 0x63C1);
    assert_eq!(c.verify(b"000000"), 0x63C0);
    assert_eq!(c.verify(b"123456"), 0x6983);
    assert_eq!(c.raw(&[0, 0x20, 0, 0x80]).1, 0x6983);
    // An all-FF PIN (what ykman sends to block) is just a wrong PIN.
    let mut c = Card::new();
    assert_eq!(c.send(0x20, 0, 0x80, &[0xFF; 8]).1, 0x63C2);
}

#[test]
fn puk_unblocks_and_pin_puk_change() {
    let mut c = Card::new();
    for _ in 0..3 {
        c.verify(b"999999");
    }
    assert_eq!(c.verify(b"123456"), 0x6983);
    let mut data = pad(b"87654321");
    data.extend(pad(b"246810"));
    assert_eq!(c.send(0x2C, 0, 0x80, &data).1, 0x63C2);
    let mut data = pad(b"12345678");
    data.extend(pad(b"24681"));
    assert_eq!(c.send(0x2C, 0, 0x80, &data).1, 0x6A80, "new PIN too short");
    let mut data = pad(b"12345678");
    data.extend(pad(b"246810"));
    assert_eq!(c.send(0x2C, 0, 0x80, &data).1, 0x9000);
    assert_eq!(c.state.puk.tries_left, 3);
    assert_eq!(c.verify(b"246810"), 0x9000);

    // Change PIN.
    let mut data = pad(b"111111");
    data.extend(pad(b"13572468"));
    assert_eq!(c.send(0x24, 0, 0x80, &data).1, 0x63C2);
    let mut data = pad(b"246810");
    data.extend(pad(b"13572468"));
    assert_eq!(c.send(0x24, 0, 0x80, &data).1, 0x9000);
    assert_eq!(c.verify(b"246810"), 0x63C2);
    assert_eq!(c.verify(b"13572468"), 0x9000);
    assert!(!c.state.pin_is_default());

    // Change PUK (and the DESIGN's SO login: PUK → same PUK).
    let mut data = pad(b"12345678");
    data.extend(pad(b"12345678"));
    let o = c.outcome(&[&[0, 0x24, 0, 0x81, 16][..], &data].concat());
    assert_eq!(sw_of(&o.response), 0x9000);
    assert!(!o.changed);
    let mut data = pad(b"12345678");
    data.extend(pad(b"abcdefgh"));
    assert_eq!(c.send(0x24, 0, 0x81, &data).1, 0x9000);
    assert!(c.state.open_with_puk(&pad(b"abcdefgh")).is_ok());
    assert!(c.state.open_with_puk(&pad(b"12345678")).is_err());
    assert_eq!(c.send(0x24, 0, 0x82, &data).1, 0x6A88);
    assert_eq!(c.send(0x24, 0, 0x81, &data[..15]).1, 0x6A80);
}

#[test]
fn mutual_auth_with_default_3des_and_aes192() {
    let mut c = Card::new();
    let put = [&get_data_cmd(&[0x5F, 0xC1, 0x05])[..], &[0x53, 0x01, 0xAA]].concat();
    assert_eq!(c.send(0xDB, 0x3F, 0xFF, &put).1, 0x6982);
    assert_eq!(c.auth_with(MgmtAlgorithm::TripleDes, &[9; 24]), 0x6982);
    assert_eq!(c.auth_with(MgmtAlgorithm::Aes128, &[1; 16]), 0x6A86);
    // Step 2 without step 1.
    let mut inner = tlv::encode(0x80, &[0; 8]);
    inner.extend(tlv::encode(0x81, &[0; 8]));
    assert_eq!(c.send(0x87, 3, 0x9B, &tlv::encode(0x7C, &inner)).1, 0x6982);
    c.auth();
    assert_eq!(c.send(0xDB, 0x3F, 0xFF, &put).1, 0x9000);

    let aes_key: Vec<u8> = (0..24).collect();
    let mut data = vec![MgmtAlgorithm::Aes192.id()];
    data.extend(tlv::encode(0x9B, &aes_key));
    let o = c.outcome(&[&[0, 0xFF, 0xFF, 0xFF, data.len() as u8][..], &data].concat());
    assert_eq!(sw_of(&o.response), 0x9000);
    assert!(o.changed);
    let md = c.ok(0xF7, 0, 0x9B, &[]);
    assert_eq!(
        md,
        vec![0x01, 0x01, 0x0A, 0x02, 0x02, 0x00, 0x01, 0x05, 0x01, 0x00]
    );

    c.applet.reset();
    assert_eq!(c.send(0xDB, 0x3F, 0xFF, &put).1, 0x6982);
    assert_eq!(
        c.auth_with(MgmtAlgorithm::TripleDes, &DEFAULT_MGMT_KEY),
        0x6A86
    );
    assert_eq!(c.auth_with(MgmtAlgorithm::Aes192, &aes_key), 0x9000);
    assert_eq!(c.send(0xDB, 0x3F, 0xFF, &put).1, 0x9000);

    // Single-step external authentication.
    c.applet.reset();
    let (r, sw) = c.send(0x87, 0x0A, 0x9B, &[0x7C, 0x02, 0x81, 0x00]);
    assert_eq!(sw, 0x9000);
    let challenge = unwrap2(&r, 0x7C, 0x81);
    let resp = host_ecb(MgmtAlgorithm::Aes192, &aes_key, &challenge, true);
    let (_, sw) = c.send(
        0x87,
        0x0A,
        0x9B,
        &tlv::encode(0x7C, &tlv::encode(0x82, &resp)),
    );
    assert_eq!(sw, 0x9000);
    assert_eq!(c.send(0xDB, 0x3F, 0xFF, &put).1, 0x9000);
}

#[test]
fn put_get_2k_object_chained_and_extended() {
    let mut c = Card::new();
    c.auth();
    let cert: Vec<u8> = (0..2000u32).map(|i| (i * 7) as u8).collect();
    let object = tlv::encode(0x53, &tlv::encode(0x70, &cert));
    let put = [&get_data_cmd(&[0x5F, 0xC1, 0x0A])[..], &object].concat();
    let (_, sw) = c.send_with(0xDB, 0x3F, 0xFF, &put, false);
    assert_eq!(sw, 0x9000);
    // Short read: 256 bytes and 61xx chunks.
    let (first, sw) = c.raw(&[0, 0xCB, 0x3F, 0xFF, 5, 0x5C, 3, 0x5F, 0xC1, 0x0A, 0]);
    assert_eq!(first.len(), 256);
    assert_eq!(sw, 0x6100);
    let (all, sw) = c.send_with(0xCB, 0x3F, 0xFF, &get_data_cmd(&[0x5F, 0xC1, 0x0A]), false);
    assert_eq!(sw, 0x9000);
    assert_eq!(all, object);
    // Extended: one answer.
    let get = Command::new(0xCB, 0x3F, 0xFF)
        .with_data(&get_data_cmd(&[0x5F, 0xC1, 0x0A]))
        .with_le(Some(65536))
        .encode(true);
    let (all, sw) = c.raw(&get);
    assert_eq!(sw, 0x9000);
    assert_eq!(all, object);
    // Extended PUT replacing it, then delete.
    let object2 = tlv::encode(0x53, &[0x42; 3000]);
    let put = [&get_data_cmd(&[0x5F, 0xC1, 0x0A])[..], &object2].concat();
    assert_eq!(c.send_with(0xDB, 0x3F, 0xFF, &put, true).1, 0x9000);
    assert_eq!(
        c.send_with(0xCB, 0x3F, 0xFF, &get_data_cmd(&[0x5F, 0xC1, 0x0A]), true)
            .0,
        object2
    );
    let too_big = [
        &get_data_cmd(&[0x5F, 0xC1, 0x0A])[..],
        &tlv::encode(0x53, &[0; 4200]),
    ]
    .concat();
    assert_eq!(c.send_with(0xDB, 0x3F, 0xFF, &too_big, true).1, 0x6A84);
    let del = [&get_data_cmd(&[0x5F, 0xC1, 0x0A])[..], &[0x53, 0x00]].concat();
    assert_eq!(c.send(0xDB, 0x3F, 0xFF, &del).1, 0x9000);
    assert_eq!(
        c.send(0xCB, 0x3F, 0xFF, &get_data_cmd(&[0x5F, 0xC1, 0x0A]))
            .1,
        0x6A82
    );
    // Bad tags and shapes.
    let bad = [&get_data_cmd(&[0x01])[..], &[0x53, 0x01, 0x00]].concat();
    assert_eq!(c.send(0xDB, 0x3F, 0xFF, &bad).1, 0x6A80);
    assert_eq!(c.send(0xCB, 0x3F, 0x00, &get_data_cmd(&[0x7E])).1, 0x6A86);
    assert_eq!(
        c.send(0xCB, 0x3F, 0xFF, &[0x5C, 0x05, 1, 2, 3, 4, 5]).1,
        0x6A80
    );
}

#[test]
fn factory_objects_and_printed_protection() {
    let mut c = Card::new();
    let chuid = c.ok(0xCB, 0x3F, 0xFF, &get_data_cmd(&[0x5F, 0xC1, 0x02]));
    let inner = tlv::expect_only(&chuid, 0x53).unwrap();
    assert_eq!(tlv::find(inner, 0x34).unwrap().unwrap().len(), 16);
    assert_eq!(tlv::find(inner, 0x30).unwrap().unwrap().len(), 25);
    c.ok(0xCB, 0x3F, 0xFF, &get_data_cmd(&[0x5F, 0xC1, 0x07]));
    let disc = c.ok(0xCB, 0x3F, 0xFF, &get_data_cmd(&[0x7E]));
    assert_eq!(
        tlv::find(tlv::expect_only(&disc, 0x7E).unwrap(), 0x5F2F)
            .unwrap()
            .unwrap(),
        &[0x40, 0]
    );
    assert_eq!(
        c.send(0xCB, 0x3F, 0xFF, &get_data_cmd(&[0x5F, 0xC1, 0x0C]))
            .1,
        0x6A82
    );

    c.auth();
    let put = [
        &get_data_cmd(&[0x5F, 0xC1, 0x09])[..],
        &[0x53, 0x02, 0x88, 0x00],
    ]
    .concat();
    c.ok(0xDB, 0x3F, 0xFF, &put);
    assert_eq!(
        c.send(0xCB, 0x3F, 0xFF, &get_data_cmd(&[0x5F, 0xC1, 0x09]))
            .1,
        0x6982
    );
    assert_eq!(c.verify(b"123456"), 0x9000);
    assert_eq!(
        c.ok(0xCB, 0x3F, 0xFF, &get_data_cmd(&[0x5F, 0xC1, 0x09])),
        vec![0x53, 2, 0x88, 0]
    );
}

fn p256_point(template: &[u8]) -> Vec<u8> {
    tlv::expect_only(template, 0x86).unwrap().to_vec()
}

#[test]
fn p256_generate_sign_and_ecdh() {
    let mut c = Card::new();
    assert_eq!(c.send(0x47, 0, 0x9A, &[0xAC, 3, 0x80, 1, 0x11]).1, 0x6982);
    c.auth();
    let point = p256_point(&c.generate(0x9A, KeyAlgorithm::EccP256, &[]));
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).unwrap();
    let hash = [0x11u8; 32];
    assert_eq!(
        c.sign(0x9A, KeyAlgorithm::EccP256, &hash).1,
        0x6982,
        "PIN once needs the PIN"
    );
    c.verify(b"123456");
    let (sig, sw) = c.sign(0x9A, KeyAlgorithm::EccP256, &hash);
    assert_eq!(sw, 0x9000);
    let sig = p256::ecdsa::Signature::from_der(&sig).unwrap();
    vk.verify_prehash(&hash, &sig).unwrap();
    // Once: a second signature needs no new VERIFY.
    assert_eq!(c.sign(0x9A, KeyAlgorithm::EccP256, &hash).1, 0x9000);
    // Short hash (SHA-1) is left-padded.
    let (sig, _) = c.sign(0x9A, KeyAlgorithm::EccP256, &[0x22; 20]);
    let mut padded = vec![0u8; 12];
    padded.extend([0x22; 20]);
    vk.verify_prehash(&padded, &p256::ecdsa::Signature::from_der(&sig).unwrap())
        .unwrap();
    // Wrong algorithm in P1, missing key.
    assert_eq!(c.sign(0x9A, KeyAlgorithm::EccP384, &hash).1, 0x6A80);
    assert_eq!(c.sign(0x9D, KeyAlgorithm::EccP256, &hash).1, 0x6A88);

    // ECDH on 9D.
    c.generate(0x9D, KeyAlgorithm::EccP256, &[]);
    let card_point = p256_point(tlv::find(&c.ok(0xF7, 0, 0x9D, &[]), 0x04).unwrap().unwrap());
    let host = p256::SecretKey::random(&mut rand::thread_rng());
    let host_pub = host.public_key().to_encoded_point(false);
    let mut inner = vec![0x82, 0x00];
    inner.extend(tlv::encode(0x85, host_pub.as_bytes()));
    let r = c.ok(0x87, 0x11, 0x9D, &tlv::encode(0x7C, &inner));
    let shared = unwrap2(&r, 0x7C, 0x82);
    let card_pub = p256::PublicKey::from_sec1_bytes(&card_point).unwrap();
    let expect = p256::ecdh::diffie_hellman(host.to_nonzero_scalar(), card_pub.as_affine());
    assert_eq!(&shared[..], &expect.raw_secret_bytes()[..]);
}

#[test]
fn rsa2048_generate_and_raw_signature() {
    let mut c = Card::new();
    c.auth();
    let t = c.generate(0x9E, KeyAlgorithm::Rsa2048, &[]);
    let n = rsa::BigUint::from_bytes_be(tlv::find(&t, 0x81).unwrap().unwrap());
    let e = rsa::BigUint::from_bytes_be(tlv::find(&t, 0x82).unwrap().unwrap());
    assert_eq!(e, rsa::BigUint::from(65537u32));
    let mut input = vec![0x00, 0x01];
    input.extend(vec![0xFF; 256 - 2 - 20]);
    input.extend([0x33; 20]);
    // 9E: PIN never.
    let (s, sw) = c.sign(0x9E, KeyAlgorithm::Rsa2048, &input);
    assert_eq!(sw, 0x9000);
    assert_eq!(s.len(), 256);
    let back = rsa::BigUint::from_bytes_be(&s).modpow(&e, &n);
    assert_eq!(back, rsa::BigUint::from_bytes_be(&input));
    assert_eq!(c.sign(0x9E, KeyAlgorithm::Rsa2048, &input[1..]).1, 0x6A80);
    assert_eq!(
        c.sign(0x9E, KeyAlgorithm::Rsa2048, &[0xFF; 256]).1,
        0x6A80,
        "input >= n"
    );
    assert_eq!(
        c.send(0x47, 0, 0x9A, &[0xAC, 3, 0x80, 1, 0x06]).1,
        0x6A80,
        "no RSA-1024"
    );
    assert_eq!(c.send(0x47, 0, 0x9A, &[0xAC, 3, 0x80, 1, 0x42]).1, 0x6A80);
    assert_eq!(c.send(0x47, 0, 0xF9, &[0xAC, 3, 0x80, 1, 0x11]).1, 0x6A86);
}

#[test]
fn signature_slot_needs_the_pin_for_each_signature() {
    let mut c = Card::new();
    c.auth();
    c.generate(0x9C, KeyAlgorithm::EccP384, &[]);
    let hash = [7u8; 48];
    assert_eq!(c.sign(0x9C, KeyAlgorithm::EccP384, &hash).1, 0x6982);
    c.verify(b"123456");
    assert_eq!(c.sign(0x9C, KeyAlgorithm::EccP384, &hash).1, 0x9000);
    assert_eq!(c.sign(0x9C, KeyAlgorithm::EccP384, &hash).1, 0x6982);
    // The empty status VERIFY does not re-arm it; a real VERIFY does.
    assert_eq!(c.raw(&[0, 0x20, 0, 0x80]).1, 0x9000);
    assert_eq!(c.sign(0x9C, KeyAlgorithm::EccP384, &hash).1, 0x6982);
    c.verify(b"123456");
    assert_eq!(c.sign(0x9C, KeyAlgorithm::EccP384, &hash).1, 0x9000);
    let md = c.ok(0xF7, 0, 0x9C, &[]);
    assert_eq!(tlv::find(&md, 0x02).unwrap().unwrap(), &[3, 1]);
    // Explicit policy: never.
    c.generate(0x9C, KeyAlgorithm::EccP256, &[0xAA, 1, 1, 0xAB, 1, 2]);
    c.applet.reset();
    c.auth();
    assert_eq!(c.sign(0x9C, KeyAlgorithm::EccP256, &[1; 32]).1, 0x9000);
    let md = c.ok(0xF7, 0, 0x9C, &[]);
    assert_eq!(tlv::find(&md, 0x02).unwrap().unwrap(), &[1, 2]);
}

#[test]
fn import_rsa_and_ec_keys() {
    let mut c = Card::new();
    let host = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
    let fixed = |b: &rsa::BigUint| {
        let v = b.to_bytes_be();
        let mut out = vec![0; 128 - v.len()];
        out.extend(v);
        out
    };
    let p = &host.primes()[0];
    let q = &host.primes()[1];
    let mut data = tlv::encode(0x01, &fixed(p));
    data.extend(tlv::encode(0x02, &fixed(q)));
    data.extend(tlv::encode(0x03, &fixed(host.dp().unwrap())));
    data.extend(tlv::encode(0x04, &fixed(host.dq().unwrap())));
    data.extend(tlv::encode(0x05, &fixed(&host.crt_coefficient().unwrap())));
    data.extend([0xAA, 1, 1]);
    assert_eq!(c.send(0xFE, 0x07, 0x9D, &data).1, 0x6982);
    c.auth();
    assert_eq!(
        c.send(0xFE, 0x16, 0x9D, &data).1,
        0x6A80,
        "algorithm does not match the key"
    );
    assert_eq!(c.send(0xFE, 0x99, 0x9D, &data).1, 0x6A86);
    c.ok(0xFE, 0x07, 0x9D, &data);
    let md = c.ok(0xF7, 0, 0x9D, &[]);
    assert_eq!(tlv::find(&md, 0x01).unwrap().unwrap(), &[0x07]);
    assert_eq!(tlv::find(&md, 0x02).unwrap().unwrap(), &[1, 1]);
    assert_eq!(tlv::find(&md, 0x03).unwrap().unwrap(), &[2]);
    let pk = tlv::find(&md, 0x04).unwrap().unwrap();
    assert_eq!(
        tlv::find(pk, 0x81).unwrap().unwrap(),
        &host.n().to_bytes_be()[..]
    );
    let input = [0x01u8; 256];
    let (s, _) = c.sign(0x9D, KeyAlgorithm::Rsa2048, &input);
    let back = rsa::BigUint::from_bytes_be(&s).modpow(host.e(), host.n());
    assert_eq!(back, rsa::BigUint::from_bytes_be(&input));
    assert_eq!(
        c.send(0xF9, 0x9D, 0, &[]).1,
        0x6A80,
        "imported keys are not attested"
    );

    let ec = p384::SecretKey::random(&mut rand::thread_rng());
    let data = tlv::encode(0x06, &ec.to_bytes());
    c.ok(0xFE, 0x14, 0x85, &data);
    let md = c.ok(0xF7, 0, 0x85, &[]);
    let pk = tlv::find(&md, 0x04).unwrap().unwrap();
    assert_eq!(
        p256_point(pk),
        ec.public_key().to_encoded_point(false).as_bytes()
    );
    assert_eq!(
        tlv::find(&md, 0x02).unwrap().unwrap(),
        &[2, 1],
        "retired slots: PIN once"
    );
    assert_eq!(
        c.send(0xFE, 0x14, 0x85, &tlv::encode(0x06, &[0; 48])).1,
        0x6A80
    );
    assert_eq!(c.send(0xFE, 0x11, 0x85, &[0x06, 0x81]).1, 0x6A80);
}

#[test]
fn metadata_for_pin_puk_mgmt_and_missing_key() {
    let mut c = Card::new();
    assert_eq!(
        c.ok(0xF7, 0, 0x80, &[]),
        vec![1, 1, 0xFF, 5, 1, 1, 6, 2, 3, 3]
    );
    c.verify(b"000000");
    assert_eq!(
        c.ok(0xF7, 0, 0x80, &[]),
        vec![1, 1, 0xFF, 5, 1, 1, 6, 2, 3, 2]
    );
    assert_eq!(
        c.ok(0xF7, 0, 0x81, &[]),
        vec![1, 1, 0xFF, 5, 1, 1, 6, 2, 3, 3]
    );
    assert_eq!(c.ok(0xF7, 0, 0x9B, &[]), vec![1, 1, 3, 2, 2, 0, 1, 5, 1, 1]);
    assert_eq!(c.send(0xF7, 0, 0x9A, &[]).1, 0x6A88);
    assert_eq!(c.send(0xF7, 0, 0x96, &[]).1, 0x6A88);
    let f9 = c.ok(0xF7, 0, 0xF9, &[]);
    assert_eq!(tlv::find(&f9, 0x01).unwrap().unwrap(), &[0x11]);
}

#[test]
fn set_pin_retries_needs_mgmt_and_pin() {
    let mut c = Card::new();
    assert_eq!(c.send(0xFA, 5, 6, &[]).1, 0x6982);
    c.auth();
    assert_eq!(c.send(0xFA, 5, 6, &[]).1, 0x6982);
    c.verify(b"123456");
    c.ok(0xFA, 5, 6, &[]);
    assert_eq!(
        c.ok(0xF7, 0, 0x80, &[]),
        vec![1, 1, 0xFF, 5, 1, 1, 6, 2, 5, 5]
    );
    assert_eq!(
        c.ok(0xF7, 0, 0x81, &[]),
        vec![1, 1, 0xFF, 5, 1, 1, 6, 2, 6, 6]
    );
    assert_eq!(c.raw(&[0, 0x20, 0, 0x80]).1, 0x63C5);
}

#[test]
fn reset_only_when_pin_and_puk_are_blocked() {
    let mut c = Card::new();
    c.auth();
    c.generate(0x9A, KeyAlgorithm::EccP256, &[]);
    let put = [&get_data_cmd(&[0x5F, 0xC1, 0x05])[..], &[0x53, 0x01, 0xAA]].concat();
    c.ok(0xDB, 0x3F, 0xFF, &put);
    let attestation = c.state.keys[&SLOT_ATTESTATION].clone();
    let storage_before = c.state.storage_key.clone();
    assert_eq!(c.send(0xFB, 0, 0, &[]).1, 0x6985);
    while c.verify(b"000000") != 0x6983 {}
    assert_eq!(c.send(0xFB, 0, 0, &[]).1, 0x6985);
    c.block_pin_and_puk();
    let o = c.outcome(&[0, 0xFB, 0, 0]);
    assert_eq!(sw_of(&o.response), 0x9000);
    assert!(o.changed);
    assert_eq!(c.state.serial, SERIAL);
    assert!(!c.state.keys.contains_key(&0x9A));
    assert_eq!(c.state.keys[&SLOT_ATTESTATION], attestation);
    assert_eq!(
        c.send(0xCB, 0x3F, 0xFF, &get_data_cmd(&[0x5F, 0xC1, 0x05]))
            .1,
        0x6A82
    );
    assert_eq!(c.verify(b"123456"), 0x9000);
    assert_eq!(
        c.send(0xDB, 0x3F, 0xFF, &put).1,
        0x6982,
        "reset forgets authentication"
    );
    // The factory image, with the attestation key kept and a new storage key.
    let mut fresh = CardState::factory(SERIAL);
    fresh.objects.insert(
        TAG_ATTESTATION_CERT,
        c.state.objects[&TAG_ATTESTATION_CERT].clone(),
    );
    assert_eq!(c.state.objects, fresh.objects);
    assert_eq!(
        c.state.keys.keys().collect::<Vec<_>>(),
        vec![&SLOT_ATTESTATION]
    );
    assert!(c.state.protected_objects.is_empty());
    assert!(c.state.pin_is_default() && c.state.puk_is_default());
    assert!(c.state.management_key_is_default());
    assert_ne!(c.state.storage_key, storage_before, "a new storage key");
}

#[test]
fn move_and_delete_keys() {
    let mut c = Card::new();
    c.auth();
    let t = c.generate(0x9A, KeyAlgorithm::EccP256, &[]);
    c.ok(0xF6, 0x82, 0x9A, &[]);
    assert_eq!(c.send(0xF7, 0, 0x9A, &[]).1, 0x6A88);
    let md = c.ok(0xF7, 0, 0x82, &[]);
    assert_eq!(tlv::find(&md, 0x04).unwrap().unwrap(), &t[..]);
    assert_eq!(c.send(0xF6, 0x9A, 0x9A, &[]).1, 0x6A86);
    assert_eq!(c.send(0xF6, 0x9A, 0xF9, &[]).1, 0x6A86);
    assert_eq!(c.send(0xF6, 0x9C, 0x9A, &[]).1, 0x6A88);
    c.ok(0xF6, 0xFF, 0x82, &[]);
    assert_eq!(c.send(0xF7, 0, 0x82, &[]).1, 0x6A88);
    c.applet.reset();
    assert_eq!(c.send(0xF6, 0xFF, 0x9A, &[]).1, 0x6982);
}

#[test]
fn attestation_certificate_verifies_with_the_f9_key() {
    let mut c = Card::new();
    c.auth();
    c.generate(0x9A, KeyAlgorithm::EccP256, &[]);
    let (der, sw) = c.send(0xF9, 0x9A, 0, &[]);
    assert_eq!(sw, 0x9000);
    let cert = x509_cert::Certificate::from_der(&der).unwrap();
    let f9_obj = c.ok(0xCB, 0x3F, 0xFF, &get_data_cmd(&[0x5F, 0xFF, 0x01]));
    let f9_der = tlv::find(tlv::expect_only(&f9_obj, 0x53).unwrap(), 0x70)
        .unwrap()
        .unwrap();
    let f9 = x509_cert::Certificate::from_der(f9_der).unwrap();
    assert_eq!(cert.tbs_certificate.issuer, f9.tbs_certificate.subject);
    assert!(cert
        .tbs_certificate
        .subject
        .to_string()
        .contains("Tessera PIV Attestation 9a"));
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(
        f9.tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes(),
    )
    .unwrap();
    let sig = p256::ecdsa::DerSignature::from_bytes(cert.signature.raw_bytes()).unwrap();
    vk.verify(&cert.tbs_certificate.to_der().unwrap(), &sig)
        .unwrap();
    // Self-signed root verifies too, and the attested key is the slot's key.
    let root_sig = p256::ecdsa::DerSignature::from_bytes(f9.signature.raw_bytes()).unwrap();
    vk.verify(&f9.tbs_certificate.to_der().unwrap(), &root_sig)
        .unwrap();
    let md = c.ok(0xF7, 0, 0x9A, &[]);
    let point = p256_point(tlv::find(&md, 0x04).unwrap().unwrap());
    assert_eq!(
        cert.tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes(),
        &point[..]
    );
    assert_eq!(c.send(0xF9, 0x9C, 0, &[]).1, 0x6A88);
    assert_eq!(c.send(0xF9, 0xF9, 0, &[]).1, 0x6A86);
}

#[test]
fn chaining_is_abandoned_by_another_command() {
    let mut c = Card::new();
    c.auth();
    // Start a chain, then send something else: the chain is dropped.
    assert_eq!(c.raw(&[0x10, 0xDB, 0x3F, 0xFF, 2, 0x5C, 0x03]).1, 0x9000);
    assert_eq!(c.raw(&[0, 0xFD, 0, 0, 0]).1, 0x9000);
    assert_eq!(
        c.raw(&[0x00, 0xDB, 0x3F, 0xFF, 3, 0x5F, 0xC1, 0x05]).1,
        0x6A80
    );
    // 61xx remainder is dropped by another command.
    c.auth();
    let object = tlv::encode(0x53, &[1; 600]);
    c.ok(
        0xDB,
        0x3F,
        0xFF,
        &[&get_data_cmd(&[0x5F, 0xC1, 0x05])[..], &object].concat(),
    );
    let (_, sw) = c.raw(&[0, 0xCB, 0x3F, 0xFF, 5, 0x5C, 3, 0x5F, 0xC1, 0x05, 0]);
    assert_eq!(sw, 0x6100);
    assert_eq!(c.raw(&[0, 0xFD, 0, 0, 0]).1, 0x9000);
    assert_eq!(c.raw(&[0, 0xC0, 0, 0, 0]).1, 0x6985);
    // GET RESPONSE with a smaller Le.
    let (_, sw) = c.raw(&[0, 0xCB, 0x3F, 0xFF, 5, 0x5C, 3, 0x5F, 0xC1, 0x05, 0]);
    assert_eq!(sw, 0x6100);
    let (d, sw) = c.raw(&[0, 0xC0, 0, 0, 0x10]);
    assert_eq!((d.len(), sw), (16, 0x6100));
}

#[test]
fn garbage_never_panics() {
    let mut c = Card::new();
    let fixed: &[&[u8]] = &[
        &[],
        &[0x00],
        &[0x00, 0xA4],
        &[0x00, 0xA4, 0x04],
        &[0x00, 0xA4, 0x04, 0x00, 0x00],
        &[0x00, 0xA4, 0x04, 0x00, 0x00, 0x00],
        &[0x00, 0xCB, 0x3F, 0xFF, 0x00, 0x00, 0x05, 0x5C],
        &[0x00, 0xCB, 0x3F, 0xFF, 0x00, 0xFF, 0xFF, 0x5C, 0x01],
        &[0x00, 0xCB, 0x3F, 0xFF, 0x00, 0x00, 0x00, 0x00, 0x00],
        &[0x00, 0xCB, 0x3F, 0xFF, 0x10, 0x5C, 0x01],
        &[0x00, 0xCB, 0x3F, 0xFF, 0x02, 0x5C, 0x01, 0x7E, 0x00],
        &[0x00, 0x20, 0x00, 0x80, 0x08, 0x31],
        &[0x00, 0x87, 0x11, 0x9A, 0x04, 0x7C, 0x84, 0xFF, 0xFF],
        &[0x00, 0x87, 0x03, 0x9B, 0x04, 0x7C, 0x02, 0x80, 0x05],
        &[0x00, 0x87, 0x03, 0x9B, 0x02, 0x7C, 0x80],
        &[0x10, 0xC0, 0x00, 0x00, 0x00],
        &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
    ];
    for apdu in fixed {
        let o = c.outcome(apdu);
        assert!(o.response.len() >= 2);
    }
    assert_eq!(c.raw(&[]).1, 0x6700);
    assert_eq!(c.raw(&[0x00, 0xCB, 0x3F, 0xFF, 0x10, 0x5C, 0x01]).1, 0x6700);
    assert_eq!(
        c.raw(&[0x00, 0xA4, 0x04, 0x00, 0x00, 0x00, 0x05, 1, 2]).1,
        0x6700
    );

    // Random and mutated APDUs against a card with keys and an open management session.
    c.auth();
    c.generate(0x9A, KeyAlgorithm::EccP256, &[]);
    c.verify(b"123456");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x7E55E7A);
    let seeds: Vec<Vec<u8>> = vec![
        vec![
            0x00, 0x87, 0x11, 0x9A, 0x08, 0x7C, 0x06, 0x82, 0x00, 0x81, 0x02, 1, 2,
        ],
        vec![0x00, 0x87, 0x03, 0x9B, 0x04, 0x7C, 0x02, 0x80, 0x00],
        vec![
            0x00, 0xDB, 0x3F, 0xFF, 0x07, 0x5C, 0x03, 0x5F, 0xC1, 0x05, 0x53, 0x00,
        ],
        vec![0x00, 0x47, 0x00, 0x9D, 0x05, 0xAC, 0x03, 0x80, 0x01, 0x11],
        vec![0x00, 0xFE, 0x11, 0x9D, 0x03, 0x06, 0x01, 0x01],
        vec![
            0x00, 0xCB, 0x3F, 0xFF, 0x00, 0x00, 0x05, 0x5C, 0x03, 0x5F, 0xFF, 0x01, 0x00, 0x00,
        ],
        vec![
            0x00, 0x24, 0x00, 0x80, 0x10, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8,
        ],
        vec![0x00, 0xF6, 0x83, 0x9A],
        vec![0x00, 0xF9, 0x9A, 0x00],
    ];
    let ins_pool = [
        0xA4, 0xCB, 0xDB, 0x20, 0x24, 0x2C, 0x87, 0x47, 0xFD, 0xF8, 0xF7, 0xFF, 0xFE, 0xFA, 0xF6,
        0xF9, 0xC0,
    ];
    for i in 0..20_000 {
        let apdu = if i % 2 == 0 {
            let len = rng.gen_range(0..40);
            let mut v = vec![0u8; len];
            rng.fill_bytes(&mut v);
            if len > 1 && rng.gen_bool(0.7) {
                v[0] = if rng.gen_bool(0.5) { 0 } else { 0x10 };
                v[1] = ins_pool[rng.gen_range(0..ins_pool.len())];
            }
            v
        } else {
            let mut v = seeds[rng.gen_range(0..seeds.len())].clone();
            for _ in 0..rng.gen_range(1..4) {
                match rng.gen_range(0..3) {
                    0 if !v.is_empty() => {
                        let j = rng.gen_range(0..v.len());
                        v[j] = rng.gen();
                    }
                    1 if !v.is_empty() => {
                        v.truncate(rng.gen_range(0..v.len()));
                    }
                    _ => v.push(rng.gen()),
                }
            }
            v
        };
        // Never FB (reset) or FA (retries) with both blocked by chance matters; all must answer.
        let o = c.outcome(&apdu);
        assert!(o.response.len() >= 2, "{apdu:02X?}");
    }
}

#[test]
#[ignore = "RSA-4096 generation takes seconds"]
fn rsa4096_generate_sign_and_attest() {
    let mut c = Card::new();
    c.auth();
    let t = c.generate(0x9D, KeyAlgorithm::Rsa4096, &[]);
    let n = rsa::BigUint::from_bytes_be(tlv::find(&t, 0x81).unwrap().unwrap());
    assert_eq!(n.bits(), 4096);
    c.verify(b"123456");
    let input = [0x05u8; 512];
    let (s, sw) = c.sign(0x9D, KeyAlgorithm::Rsa4096, &input);
    assert_eq!((s.len(), sw), (512, 0x9000));
    let back = rsa::BigUint::from_bytes_be(&s).modpow(&rsa::BigUint::from(65537u32), &n);
    assert_eq!(back, rsa::BigUint::from_bytes_be(&input));
    let (der, sw) = c.send(0xF9, 0x9D, 0, &[]);
    assert_eq!(sw, 0x9000);
    x509_cert::Certificate::from_der(&der).unwrap();
}
