//! Tests of the IDPrime driver: the exact APDUs of the notes' traces (OpenSC 0.23 against the
//! throw-away card) on a scripted channel, the parsers on fixtures built here (an RSA key from
//! the `rsa` crate, certificates from the x509-cert builder, files compressed with flate2) and
//! on hostile input, the key-reference tables per model, and signature flows whose signatures
//! RustCrypto verifies.

use super::atr::{self, match_in, OPENSC_023, OPENSC_027};
use super::files::{self, *};
use super::keys::{self, *};
use super::pin::{self, *};
use super::security::{self, *};
use super::*;
use crate::card::{CardError, Channel};
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::sync::OnceLock;

// ---------------------------------------------------------------------------------------------
// Channels

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).expect("hex in a test")
}

/// A card that answers a fixed script and checks every APDU it receives byte for byte.
struct Script {
    steps: VecDeque<(Vec<u8>, Vec<u8>)>,
    extended: bool,
    sent: usize,
}

impl Script {
    fn new() -> Self {
        Self {
            steps: VecDeque::new(),
            extended: false,
            sent: 0,
        }
    }

    fn expect(mut self, cmd: &str, resp: &str) -> Self {
        self.steps.push_back((h(cmd), h(resp)));
        self
    }

    fn expect_bytes(mut self, cmd: Vec<u8>, resp: Vec<u8>) -> Self {
        self.steps.push_back((cmd, resp));
        self
    }

    /// Every scripted APDU was sent.
    fn done(&self) {
        assert!(
            self.steps.is_empty(),
            "APDUs never sent: {:?}",
            self.steps
                .iter()
                .map(|(c, _)| hex::encode_upper(c))
                .collect::<Vec<_>>()
        );
    }
}

impl Channel for Script {
    fn transmit_raw(&mut self, apdu: &[u8]) -> Result<Vec<u8>, CardError> {
        self.sent += 1;
        let (want, resp) = self
            .steps
            .pop_front()
            .unwrap_or_else(|| panic!("unexpected APDU {}", hex::encode_upper(apdu)));
        assert_eq!(
            hex::encode_upper(apdu),
            hex::encode_upper(&want),
            "APDU #{} differs from the script",
            self.sent
        );
        Ok(resp)
    }

    fn extended_length(&self) -> bool {
        self.extended
    }
}

/// A tiny IDPrime file system: SELECT by AID and by FID (P1 00 or 08), READ BINARY, VERIFY.
/// Parses Lc/Le leniently, as a card behind vpcd must.
struct FakeCard {
    files: HashMap<[u8; 2], Vec<u8>>,
    selected: Option<[u8; 2]>,
    pin: Vec<u8>,
    tries: u8,
    /// SELECT of this file fails as if the card were pulled.
    pulled_at: Option<[u8; 2]>,
    /// READ BINARY of these files answers 6982.
    refused: Vec<[u8; 2]>,
    /// Private keys by key reference; MSE SET picks one and an algorithm.
    keys: HashMap<u8, rsa::RsaPrivateKey>,
    verified: bool,
    env: Option<(u8, u8)>,
    hash: Vec<u8>,
    log: Vec<Vec<u8>>,
}

impl FakeCard {
    fn new(files: &[([u8; 2], Vec<u8>)]) -> Self {
        Self {
            files: files.iter().cloned().collect(),
            selected: None,
            pin: b"0000".to_vec(),
            tries: 3,
            pulled_at: None,
            refused: Vec::new(),
            keys: HashMap::new(),
            verified: false,
            env: None,
            hash: Vec::new(),
            log: Vec::new(),
        }
    }

    fn sent(&self, cmd: &str) -> bool {
        let want = h(cmd);
        self.log.contains(&want)
    }
}

impl Channel for FakeCard {
    fn transmit_raw(&mut self, apdu: &[u8]) -> Result<Vec<u8>, CardError> {
        self.log.push(apdu.to_vec());
        let (header, body) = apdu.split_at(4);
        let (ins, p1, p2) = (header[1], header[2], header[3]);
        let data: &[u8] = match body {
            [] | [_] => &[],
            [lc, rest @ ..] => &rest[..usize::from(*lc).min(rest.len())],
        };
        let le = match body {
            [le] => usize::from(*le),
            _ => 0,
        };
        let sw = |s: u16| s.to_be_bytes().to_vec();
        Ok(match (ins, p1) {
            (0xA4, 0x04) if data == AID => sw(0x9000),
            (0xA4, 0x04) => sw(0x6A82),
            (0xA4, 0x00 | 0x08) => {
                let fid: [u8; 2] = data.try_into().unwrap();
                if self.pulled_at == Some(fid) {
                    return Err(CardError::NoCard);
                }
                match self.files.get(&fid) {
                    Some(f) => {
                        self.selected = Some(fid);
                        let mut out = vec![0x62, 0x04, 0x80, 0x02];
                        out.extend_from_slice(&(f.len() as u16).to_be_bytes());
                        out.extend_from_slice(&[0x90, 0x00]);
                        if p2 == 0x0C {
                            sw(0x9000)
                        } else {
                            out
                        }
                    }
                    None => sw(0x6A82),
                }
            }
            (0xB0, _) => {
                let fid = self.selected.unwrap();
                if self.refused.contains(&fid) {
                    return Ok(sw(0x6982));
                }
                let file = &self.files[&fid];
                let offset = usize::from(u16::from_be_bytes([p1, p2]));
                let le = if le == 0 { 256 } else { le };
                if offset >= file.len() {
                    sw(0x6B00)
                } else {
                    let mut out = file[offset..(offset + le).min(file.len())].to_vec();
                    out.extend_from_slice(&[0x90, 0x00]);
                    out
                }
            }
            (0x20, _) if data.is_empty() => sw(0x63C0 | u16::from(self.tries)),
            (0x20, _) if self.tries == 0 => sw(0x6983),
            (0x20, _) if data == self.pin.as_slice() => {
                self.tries = 3;
                self.verified = true;
                sw(0x9000)
            }
            (0x20, _) => {
                self.verified = false;
                self.tries -= 1;
                if self.tries == 0 {
                    sw(0x6983)
                } else {
                    sw(0x63C0 | u16::from(self.tries))
                }
            }
            (0x22, 0x41) => match data {
                [0x80, 0x01, alg, 0x84, 0x01, key] if self.keys.contains_key(key) => {
                    self.env = Some((*alg, *key));
                    sw(0x9000)
                }
                _ => sw(0x6A88),
            },
            (0x2A, 0x90) => match data {
                [0x90, len, hash @ ..] if usize::from(*len) == hash.len() => {
                    self.hash = hash.to_vec();
                    let mut out = hash.to_vec();
                    out.extend_from_slice(&[0x90, 0x00]);
                    out
                }
                _ => sw(0x6A80),
            },
            (0x2A, 0x9E) => {
                let Some((alg, key)) = self.env else {
                    return Ok(sw(0x6985));
                };
                if !self.verified {
                    return Ok(sw(0x6982));
                }
                let key = &self.keys[&key];
                let signed = match alg {
                    0x42 => key.sign(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &self.hash),
                    0x45 => key.sign_with_rng(
                        &mut rand::rngs::OsRng,
                        rsa::Pss::new_with_salt::<sha2::Sha256>(32),
                        &self.hash,
                    ),
                    _ => return Ok(sw(0x6A80)),
                };
                let mut out = signed.unwrap();
                out.extend_from_slice(&[0x90, 0x00]);
                out
            }
            _ => sw(0x6D00),
        })
    }

    fn extended_length(&self) -> bool {
        false
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures

const ATR_3810: &str = "3B7F96000080318065B084413DF6120FFE829000";
const ATR_ETOKEN_5110: &str = "3BFF9600008131FE4380318065B0855956FB120FFE82900000";

fn profile_3810() -> Profile {
    Profile::from_atr(&h(ATR_3810)).unwrap()
}

fn profile(model: Model) -> Profile {
    Profile {
        model,
        protocol: Protocol::T0,
    }
}

fn rsa_key() -> &'static rsa::RsaPrivateKey {
    static KEY: OnceLock<rsa::RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap())
}

fn rsa_spki() -> Vec<u8> {
    use pkcs8::EncodePublicKey;
    rsa_key()
        .to_public_key()
        .to_public_key_der()
        .unwrap()
        .as_bytes()
        .to_vec()
}

/// A leaf certificate for `spki_der`, issued by a throw-away P-256 CA (keyUsage
/// digitalSignature, nonRepudiation, keyEncipherment).
fn certificate(spki_der: &[u8], cn: &str) -> Vec<u8> {
    use der::{Decode, Encode};
    use std::str::FromStr;
    use x509_cert::builder::{Builder, CertificateBuilder, Profile};
    use x509_cert::name::Name;
    use x509_cert::serial_number::SerialNumber;
    use x509_cert::spki::SubjectPublicKeyInfoOwned;
    use x509_cert::time::Validity;
    let ca = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
    let profile = Profile::Leaf {
        issuer: Name::from_str("CN=IDPrime Test CA").unwrap(),
        enable_key_agreement: false,
        enable_key_encipherment: true,
    };
    CertificateBuilder::new(
        profile,
        SerialNumber::from(7u32),
        Validity::from_now(std::time::Duration::from_secs(86_400)).unwrap(),
        Name::from_str(&format!("CN={cn},O=Tessera")).unwrap(),
        SubjectPublicKeyInfoOwned::from_der(spki_der).unwrap(),
        &ca,
    )
    .unwrap()
    .build::<p256::ecdsa::DerSignature>()
    .unwrap()
    .to_der()
    .unwrap()
}

fn rsa_certificate() -> &'static [u8] {
    static CERT: OnceLock<Vec<u8>> = OnceLock::new();
    CERT.get_or_init(|| certificate(&rsa_spki(), "Ana Novak"))
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(data).unwrap();
    z.finish().unwrap()
}

/// The minidriver compressed form: 01 00, LE16 length, zlib.
fn compressed(der: &[u8]) -> Vec<u8> {
    let mut out = vec![0x01, 0x00];
    out.extend_from_slice(&(der.len() as u16).to_le_bytes());
    out.extend_from_slice(&zlib(der));
    out
}

/// An index file from (FID, name, directory) records.
fn index_file(records: &[([u8; 2], &str, &str)]) -> Vec<u8> {
    let mut out = vec![records.len() as u8];
    for (fid, name, dir) in records {
        out.extend_from_slice(fid);
        out.extend_from_slice(&[0x00, 0x00]);
        let mut n = name.as_bytes().to_vec();
        n.resize(8, 0);
        let mut d = dir.as_bytes().to_vec();
        d.resize(9, 0);
        out.extend_from_slice(&n);
        out.extend_from_slice(&d);
    }
    out
}

/// A container map with `guids.len()` valid containers.
fn container_map(guids: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for g in guids {
        let mut rec: Vec<u8> = g.encode_utf16().flat_map(u16::to_le_bytes).collect();
        rec.resize(80, 0);
        rec.extend_from_slice(&[0x01, 0x00]);
        rec.extend_from_slice(&0u16.to_le_bytes());
        rec.extend_from_slice(&2048u16.to_le_bytes());
        out.extend_from_slice(&rec);
    }
    out
}

fn card_id() -> Vec<u8> {
    (0xA0u8..=0xAF).collect()
}

fn fci(size: usize) -> String {
    format!("6204 8002 {size:04X} 9000")
}

fn rsa_key_ref() -> PrivateKeyRef {
    PrivateKeyRef {
        reference: 0x31,
        pin: PinRef::User,
        algorithm: KeyAlgorithm::Rsa { bits: 2048 },
    }
}

/// The READ BINARY steps that read `file` whole (256-byte pieces).
fn read_steps(mut s: Script, file: &[u8]) -> Script {
    for (i, chunk) in file.chunks(256).enumerate() {
        let offset = (i * 256) as u16;
        let mut cmd = vec![0x00, 0xB0];
        cmd.extend_from_slice(&offset.to_be_bytes());
        cmd.push(chunk.len() as u8);
        let mut resp = chunk.to_vec();
        resp.extend_from_slice(&[0x90, 0x00]);
        s = s.expect_bytes(cmd, resp);
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Detection (§1.1 – §1.3)

#[test]
fn atr_tables_name_every_model() {
    let cases = [
        ("3B7F96000080318065B084413DF6120FFE829000", Model::Md3810),
        ("3B7F96000080318065B084565110120FFE829000", Model::Md830),
        ("3B7F96000080318065B0846160FB120FFE829000", Model::Md930),
        // 0.24 ignores bytes 15–16: the 930 ATR seen with 0F FD.
        ("3B7F96000080318065B0846160FB120FFD829000", Model::Md930),
        ("3B7F96000080318065B0855956FB120FFE829000", Model::Md940),
        ("3B7F96000080318065B085050039120FFE829000", Model::Md940),
        // The 840 sits before the 940, whose mask covers its model bytes (#3106/#3154).
        ("3B7F96000080318065B0850300EF120FFE829000", Model::Md840),
        // Unknown model bytes: generic.
        ("3B7F96000080318065B084999999120FFE829000", Model::Generic),
        // TA1 is ignored.
        ("3B7F18000080318065B084413DF6120FFE829000", Model::Md3810),
        // The T=1 eToken forms.
        (ATR_ETOKEN_5110, Model::Md940),
        (
            "3BFF9600008131FE4380318065B0855956FB12017882900088",
            Model::Md940,
        ),
        (
            "3BFF9600008131FE4380318065B0846566FB12017882900085",
            Model::Md930Plus,
        ),
        (
            "3BFF960000813180438031 8065B0850300EF120FFE82900066",
            Model::Generic,
        ),
    ];
    for (atr, model) in cases {
        assert_eq!(matches_atr(&h(atr)), Some(model), "{atr}");
    }
    assert_eq!(atr::protocol(&h(ATR_3810)), Protocol::T0);
    assert_eq!(atr::protocol(&h(ATR_ETOKEN_5110)), Protocol::T1);
    // Not IDPrime: a YubiKey, a truncated ATR, nothing.
    assert_eq!(
        matches_atr(&h("3BFD1300008131FE158073C021C057597562694B657940")),
        None
    );
    assert_eq!(
        matches_atr(&h("3B7F96000080318065B084413DF6120FFE8290")),
        None
    );
    assert_eq!(matches_atr(&[]), None);
}

#[test]
fn opensc_023_binds_only_the_exact_t0_family() {
    // 0.23: model bytes are wildcards, everything else exact.
    let e = match_in(OPENSC_023, &h("3B7F96000080318065B085590000120FFE829000")).unwrap();
    assert_eq!(e.model, Model::Generic);
    assert!(match_in(OPENSC_023, &h("3B7F96000080318065B0846160FB120FFD829000")).is_none());
    assert!(match_in(OPENSC_023, &h(ATR_ETOKEN_5110)).is_none());
    // The virtual card's persona: 0.23 generic, 0.24+ 3810.
    assert!(match_in(OPENSC_023, &h(ATR_3810)).is_some());
    assert_eq!(
        match_in(OPENSC_027, &h(ATR_3810)).unwrap().model,
        Model::Md3810
    );
    for e in OPENSC_027.iter().chain(OPENSC_023) {
        assert_eq!(e.atr.len(), e.mask.len(), "{}", e.name);
        assert!(e.matches(e.atr), "{}", e.name);
    }
}

#[test]
fn select_and_cplc_send_the_probes_bytes() {
    // §1.2 (match_card) and §1.3 (init, CPLC) under T=0, as the probe saw them.
    let mut cplc = vec![0u8; 42];
    cplc[8] = 0x01;
    cplc[9] = 0x03;
    let mut cplc_resp = h("9F7F2A");
    cplc_resp.extend_from_slice(&cplc);
    cplc_resp.extend_from_slice(&[0x90, 0x00]);
    let mut ch = Script::new()
        .expect("00A4040C0BA000000018800000000662", "9000")
        .expect("00A40800020101", &fci(64))
        .expect_bytes(h("00CA9F7F2D"), cplc_resp);
    let p = profile_3810();
    assert_eq!(select(&mut ch, &p).unwrap(), Fci { size: 64 });
    let cplc = read_cplc(&mut ch, &p).unwrap().unwrap();
    assert_eq!(cplc.os_release_level(), 0x0103);
    assert_eq!(cplc.generation(), Some(Generation::V1));
    ch.done();
}

#[test]
fn select_retries_with_p2_00_on_6a86() {
    let mut ch = Script::new()
        .expect("00A4040C0BA000000018800000000662", "6A86")
        .expect("00A404000BA000000018800000000662", "6109")
        .expect("00C0000009", "6F0784056162636465 9000")
        .expect("00A40800020101", "61 06")
        .expect("00C0000006", &fci(21));
    assert_eq!(select(&mut ch, &profile_3810()).unwrap().size, 21);
    ch.done();
}

#[test]
fn a_card_without_the_applet_or_index_is_not_idprime() {
    let p = profile_3810();
    let mut ch = Script::new().expect("00A4040C0BA000000018800000000662", "6A82");
    assert!(matches!(select(&mut ch, &p), Err(Error::NotIdPrime)));
    let mut ch = Script::new()
        .expect("00A4040C0BA000000018800000000662", "9000")
        .expect("00A40800020101", "6A82");
    assert!(matches!(select(&mut ch, &p), Err(Error::NotIdPrime)));
    for answer in [fci(0), "6982".into(), "6F00 9000".into(), "9000".into()] {
        let mut ch = Script::new()
            .expect("00A4040C0BA000000018800000000662", "9000")
            .expect("00A40800020101", &answer);
        assert!(
            matches!(select(&mut ch, &p), Err(Error::NotIdPrime)),
            "{answer}"
        );
    }
}

#[test]
fn t1_tokens_get_le_and_no_p3() {
    let p = Profile::from_atr(&h(ATR_ETOKEN_5110)).unwrap();
    assert_eq!(p.protocol, Protocol::T1);
    let mut ch = Script::new()
        .expect("00A4040C0BA000000018800000000662", "9000")
        .expect("00A4080002010100", &fci(22))
        .expect("00200011", "63C3")
        .expect("00A4080002020100", &fci(16));
    select(&mut ch, &p).unwrap();
    assert_eq!(
        pin_status(&mut ch, &p, PinRef::User).unwrap(),
        PinStatus::NotVerified { tries_left: 3 }
    );
    select_file(&mut ch, &p, CARD_ID_FID, SelectBy::Path).unwrap();
    ch.done();
}

#[test]
fn cplc_of_another_length_or_level_is_no_information() {
    let p = profile_3810();
    let mut ch = Script::new().expect("00CA9F7F2D", "6A88");
    assert_eq!(read_cplc(&mut ch, &p).unwrap(), None);
    let mut short = h("9F7F29");
    short.extend_from_slice(&[0u8; 41]);
    short.extend_from_slice(&[0x90, 0x00]);
    let mut ch = Script::new().expect_bytes(h("00CA9F7F2D"), short);
    assert_eq!(read_cplc(&mut ch, &p).unwrap(), None);
    let mut level5 = h("9F7F2A");
    let mut body = [0u8; 42];
    body[8] = 5;
    level5.extend_from_slice(&body);
    level5.extend_from_slice(&[0x90, 0x00]);
    let mut ch = Script::new().expect_bytes(h("00CA9F7F2D"), level5);
    assert_eq!(read_cplc(&mut ch, &p).unwrap().unwrap().generation(), None);
    let mut ch = Script::new().expect("00CADF302D", "DF300A 342E342E322E41 2E2E2E 9000");
    assert_eq!(
        applet_version(&mut ch, &p).unwrap().as_deref(),
        Some("4.4.2.A...")
    );
}

// ---------------------------------------------------------------------------------------------
// Key references (§2.2, §4)

#[test]
fn key_reference_formulas_per_model() {
    let table: [(Model, [Option<u8>; 3]); 7] = [
        (Model::Md3810, [Some(0x31), Some(0x32), Some(0x3C)]),
        (Model::Md830, [Some(0x41), Some(0x42), Some(0x4C)]),
        (Model::Md930, [Some(0x11), Some(0x13), Some(0x27)]),
        (Model::Md930Plus, [Some(0x10), Some(0x12), Some(0x26)]),
        (Model::Md840, [Some(0xF7), Some(0xF8), None]),
        (Model::Generic, [Some(0x56), Some(0x57), Some(0x61)]),
        (Model::Md940, [None, None, None]),
    ];
    for (model, refs) in table {
        for (n, want) in [0u8, 1, 11].into_iter().zip(refs) {
            assert_eq!(model.key_reference(n), want, "{model:?} n={n}");
        }
    }
    // 0.23's CPLC formulas (kxc0d): V1 = record[8] + 1 = 0x31 + d, …
    let v023 = [
        (Generation::V1, 0x31),
        (Generation::V2, 0x11),
        (Generation::V3, 0xF7),
        (Generation::V4, 0x56),
    ];
    for (g, base) in v023 {
        for d in 0..=5u8 {
            assert_eq!(g.opensc023_key_reference(d), base + d);
        }
    }
    // V1 under 0.23 and the 3810 under 0.24+ agree: the forward-compatible persona.
    for d in 0..=9u8 {
        assert_eq!(
            Some(Generation::V1.opensc023_key_reference(d)),
            Model::Md3810.key_reference(d)
        );
    }
    assert!(Generation::V3.opensc023_pin_padded() && !Generation::V1.opensc023_pin_padded());
}

#[test]
fn keyref_map_decides_the_940s_keys_and_pins() {
    // 8-byte records: used, keyref, container, …, PIN index.
    let map =
        h("01 81 00 00000000 01   00 00 00 00000000 00   02 82 01 00000000 02   01 83 07 000000");
    let records = parse_keyref_map(&map);
    assert_eq!(
        records,
        vec![
            KeyRefRecord {
                key_reference: 0x81,
                container: 0,
                pin_index: 1
            },
            KeyRefRecord {
                key_reference: 0x82,
                container: 1,
                pin_index: 2
            },
        ]
    );
    let m = Model::Md940;
    assert_eq!(
        keys::private_key_for(m, 0, None, Some(&records)),
        Some((0x81, PinRef::User))
    );
    assert_eq!(
        keys::private_key_for(m, 1, None, Some(&records)),
        Some((0x82, PinRef::DigitalSignature))
    );
    assert_eq!(keys::private_key_for(m, 2, None, Some(&records)), None);
    assert_eq!(keys::private_key_for(m, 0, None, None), None);
    // Other models: the container map decides presence, the formula the reference.
    let cmap = parse_container_map(&container_map(&["a"]));
    assert_eq!(
        keys::private_key_for(Model::Md830, 0, Some(&cmap), None),
        Some((0x41, PinRef::User))
    );
    assert_eq!(
        keys::private_key_for(Model::Md830, 1, Some(&cmap), None),
        None
    );
    // No container map shown: every certificate has a key (0.23).
    assert_eq!(
        keys::private_key_for(Model::Md3810, 4, None, None),
        Some((0x35, PinRef::User))
    );
}

// ---------------------------------------------------------------------------------------------
// Files (§2)

#[test]
fn index_parses_the_pr2335_layout() {
    let data = index_file(&[
        ([0x02, 0x01], "cardid", ""),
        ([0x02, 0x02], "cardcf", ""),
        ([0x02, 0x03], "cardapps", ""),
        ([0x02, 0x04], "cmapfile", "mscp"),
        ([0x02, 0x05], "tinfo", "p11"),
        ([0x02, 0x06], "kxc00", "mscp"),
        ([0x02, 0x07], "kxc01", "mscp"),
        ([0x02, 0x08], "ksc12", "mscp"),
        ([0x02, 0x09], "kxcab", "mscp"),
        ([0x02, 0x0A], "kxc03", "mscpx"),
        ([0x02, 0x0B], "pubkxc", "mscp"),
    ]);
    let entries = parse_index(&data).unwrap();
    assert_eq!(entries.len(), 11);
    assert_eq!(entries[0].name(), "cardid");
    assert_eq!(entries[3].directory(), "mscp");
    assert!(entries[4].is_token_info());
    let certs: Vec<_> = entries.iter().map(IndexEntry::certificate).collect();
    assert_eq!(certs[5], Some((CertificateRole::KeyExchange, 0)));
    assert_eq!(certs[6], Some((CertificateRole::KeyExchange, 1)));
    assert_eq!(certs[7], Some((CertificateRole::Signature, 12)));
    // Not two digits: container 0, as OpenSC 0.26.
    assert_eq!(certs[8], Some((CertificateRole::KeyExchange, 0)));
    // Directory must be exactly "mscp"; CA certificates (pubkxc) are not key containers.
    assert_eq!(certs[9], None);
    assert_eq!(certs[10], None);
    assert!(certs[..5].iter().all(Option::is_none));
}

#[test]
fn truncated_or_empty_index_is_damage() {
    let mut data = index_file(&[
        ([0x02, 0x07], "kxc00", "mscp"),
        ([0x02, 0x01], "cardid", ""),
    ]);
    assert!(matches!(parse_index(&[]), Err(Error::Damaged(_))));
    data[0] = 3;
    assert!(matches!(parse_index(&data), Err(Error::Damaged(_))));
    data[0] = 2;
    data.truncate(data.len() - 1);
    assert!(matches!(parse_index(&data), Err(Error::Damaged(_))));
    // Count 0 is an empty index; bytes past the last record are allowed.
    assert_eq!(parse_index(&[0, 1, 2, 3]).unwrap(), vec![]);
    let mut padded = index_file(&[([0x02, 0x07], "kxc00", "mscp")]);
    padded.extend_from_slice(&[0xFF; 40]);
    assert_eq!(parse_index(&padded).unwrap().len(), 1);
    // Count 255 with nothing behind it.
    assert!(matches!(parse_index(&[0xFF]), Err(Error::Damaged(_))));
}

#[test]
fn container_map_reads_until_the_first_empty_record() {
    let mut data = container_map(&["{1111-2222}", "te-ECert"]);
    data.extend_from_slice(&[0u8; 86]);
    data.extend_from_slice(&container_map(&["after-the-end"]));
    data.extend_from_slice(&[0x41; 20]);
    let map = parse_container_map(&data);
    assert_eq!(map.len(), 2);
    assert_eq!(map[0].guid, "{1111-2222}");
    assert_eq!(map[1].index, 1);
    assert_eq!(map[1].guid, "te-ECert");
    assert_eq!(map[1].flags, 0x01);
    assert_eq!(map[1].key_exchange_key_bits, 2048);
    assert_eq!(map[1].signature_key_bits, 0);
    assert!(parse_container_map(&[]).is_empty());
    assert!(parse_container_map(&[0x41; 85]).is_empty());
}

#[test]
fn certificate_files_plain_and_compressed() {
    let der = rsa_certificate();
    assert_eq!(decode_certificate_file(&compressed(der)).unwrap(), der);
    assert_eq!(decode_certificate_file(der).unwrap(), der);
    // gzip is detected as OpenSC's automatic mode does.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(der).unwrap();
    let mut file = vec![0x01, 0x00];
    file.extend_from_slice(&(der.len() as u16).to_le_bytes());
    file.extend_from_slice(&gz.finish().unwrap());
    assert_eq!(decode_certificate_file(&file).unwrap(), der);
    // A plain file longer than its certificate (padding) yields the certificate.
    let mut padded = der.to_vec();
    padded.extend_from_slice(&[0x00; 33]);
    assert_eq!(decode_certificate_file(&padded).unwrap(), der);
    let facts = keys::parse_certificate(der).unwrap();
    assert_eq!(facts.algorithm, KeyAlgorithm::Rsa { bits: 2048 });
    assert_eq!(facts.subject_cn.as_deref(), Some("Ana Novak"));
    // digitalSignature | nonRepudiation | keyEncipherment
    assert_eq!(facts.key_usage, Some(0x0007));
    assert_eq!(facts.public_key_der, rsa_spki());
}

#[test]
fn hostile_certificate_files_are_refused() {
    let damaged = |raw: &[u8]| matches!(decode_certificate_file(raw), Err(Error::Damaged(_)));
    // A zip bomb: 16 MiB of zeros behind a header that says 1000 bytes.
    let bomb = zlib(&vec![0u8; 16 << 20]);
    let mut file = vec![0x01, 0x00];
    file.extend_from_slice(&1000u16.to_le_bytes());
    file.extend_from_slice(&bomb);
    assert!(damaged(&file));
    // The same bomb with the largest header the format has.
    file[2..4].copy_from_slice(&u16::MAX.to_le_bytes());
    assert!(damaged(&file));
    // A header that promises more than the stream holds, or nothing.
    let der = rsa_certificate();
    let mut long = compressed(der);
    long[2..4].copy_from_slice(&((der.len() + 1) as u16).to_le_bytes());
    assert!(damaged(&long));
    let mut zero = compressed(der);
    zero[2..4].copy_from_slice(&[0, 0]);
    assert!(damaged(&zero));
    // Truncated headers and streams, garbage streams.
    assert!(damaged(&[0x01, 0x00]));
    assert!(damaged(&[0x01, 0x00, 0x10]));
    let whole = compressed(der);
    assert!(damaged(&whole[..whole.len() / 2]));
    assert!(damaged(&[0x01, 0x00, 0x10, 0x00, 0xDE, 0xAD, 0xBE, 0xEF]));
    // Plain files that are not DER, or whose length runs past the file.
    assert!(damaged(&[]));
    assert!(damaged(b"-----BEGIN CERTIFICATE-----"));
    assert!(damaged(&der[..der.len() - 1]));
    assert!(damaged(&[0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]));
    assert!(damaged(&[0x30, 0x80, 0x00, 0x00]));
    // A compressed stream that inflates to something that is not a certificate parses as
    // DER here, but not as a certificate.
    let not_cert = compressed(&[0x30, 0x03, 0x02, 0x01, 0x00]);
    let der = decode_certificate_file(&not_cert).unwrap();
    assert!(matches!(
        keys::parse_certificate(&der),
        Err(Error::Damaged(_))
    ));
}

#[test]
fn fci_size_is_read_and_bounded() {
    assert_eq!(parse_fci(&h("6204 8002 0040")).unwrap().size, 64);
    assert_eq!(parse_fci(&h("6F05 8103 00FFFF")).unwrap().size, 65535);
    assert_eq!(
        parse_fci(&h("620A 820101 83020101 800110")).unwrap().size,
        16
    );
    for bad in [
        "",
        "6204 8202 0040",
        "6303 800110",
        "6206 8004 00010000",
        "6204 8002 00",
        "62",
    ] {
        assert!(
            matches!(parse_fci(&h(bad)), Err(Error::Damaged(_))),
            "{bad}"
        );
    }
}

#[test]
fn token_info_label_and_serial() {
    assert_eq!(
        parse_token_info(b"\x01\x0ATessera 1\0").as_deref(),
        Some("Tessera 1")
    );
    // The last of the L bytes is forced to NUL.
    assert_eq!(parse_token_info(b"\x01\x03ABC").as_deref(), Some("AB"));
    assert_eq!(parse_token_info(b"\x01\x00"), None);
    assert_eq!(parse_token_info(b"\x01\x7Fshort\0"), None);
    assert_eq!(parse_token_info(b"\x01"), None);
    // L within the file but past what was read: what is there.
    assert_eq!(parse_token_info(b"\x01\x05AB\0\0").as_deref(), Some("AB"));
    let id = CardId(card_id().try_into().unwrap());
    assert_eq!(id.hex(), "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf");
    assert_eq!(files::opensc_serial(Some(&id)), "a8a9aaabacadaeaf");
    assert_eq!(files::opensc_serial(None), "00000000");
}

// ---------------------------------------------------------------------------------------------
// Reading a card (§1.4, §2.6, §5)

/// The probe's personalisation (§5.4) plus tinfo: index with kxc00@0207, cardid@0201,
/// cmapfile@0204, tinfo@0205.
fn probe_card() -> FakeCard {
    FakeCard::new(&[
        (
            INDEX_FID,
            index_file(&[
                ([0x02, 0x07], "kxc00", "mscp"),
                ([0x02, 0x01], "cardid", ""),
                ([0x02, 0x04], "cmapfile", "mscp"),
                ([0x02, 0x05], "tinfo", "p11"),
            ]),
        ),
        (CARD_ID_FID, card_id()),
        (CONTAINER_MAP_FID, container_map(&["tessera-ecert-0"])),
        ([0x02, 0x05], b"\x01\x0ATessera 1\0".to_vec()),
        ([0x02, 0x07], compressed(rsa_certificate())),
    ])
}

#[test]
fn reads_the_probe_card_as_opensc_lists_it() {
    let mut card = probe_card();
    let contents = read_contents(&mut card, &profile_3810()).unwrap();
    assert_eq!(contents.keys.len(), 1);
    assert!(contents.skipped.is_empty());
    let k = &contents.keys[0];
    assert_eq!(k.id, vec![0x00, 0x01]);
    assert_eq!(k.certificate_label, "Certificate 1");
    assert_eq!(k.public_key_label, "Public key 1");
    assert_eq!(k.private_key_label, "Private key 1");
    assert_eq!(k.certificate_der, rsa_certificate());
    assert_eq!(k.role, CertificateRole::KeyExchange);
    assert_eq!(k.container_guid.as_deref(), Some("tessera-ecert-0"));
    assert_eq!(k.private_key, Some(rsa_key_ref()));
    assert_eq!(k.effective_key_usage(), 0x0007);
    assert_eq!(contents.token_label(), "Tessera 1");
    assert_eq!(contents.serial(), "a8a9aaabacadaeaf");
    assert_eq!(contents.pins(Model::Md3810), vec![PinRef::User]);
    assert_eq!(contents.find(&[0, 1]), Some(k));
    // The forms §1.2–1.4 name: index and serial by path (P1=08, no Le under T=0), the
    // certificate by file id (P1=00), the serial read as 16 bytes.
    for cmd in [
        "00A4040C0BA000000018800000000662",
        "00A40800020101",
        "00B0000055",
        "00A40800020201",
        "00B0000010",
        "00A40800020204",
        "00A40800020205",
        "00A40000020207",
        "00B0000000",
    ] {
        assert!(card.sent(cmd), "{cmd} not sent");
    }
    // Budget: applet+index 3, card id 2, map 2, tinfo 2, certificate 1 + reads.
    let cert_reads = compressed(rsa_certificate()).len().div_ceil(256);
    assert_eq!(card.log.len(), 10 + cert_reads);
}

#[test]
fn token_label_falls_back_to_the_cn_then_idprime() {
    let mut card = probe_card();
    card.files.remove(&[0x02, 0x05]);
    card.files.remove(&CARD_ID_FID);
    let contents = read_contents(&mut card, &profile_3810()).unwrap();
    assert_eq!(contents.token_info_label, None);
    assert_eq!(contents.token_label(), "Ana Novak");
    assert_eq!(contents.serial(), "00000000");
    let empty = CardContents {
        index: vec![],
        card_id: None,
        token_info_label: None,
        container_map: None,
        keyref_map: None,
        keys: vec![],
        skipped: vec![],
    };
    assert_eq!(empty.token_label(), "IDPrime");
}

#[test]
fn index_entries_pointing_nowhere_keep_their_number() {
    let der2 = certificate(&rsa_spki(), "Second");
    let mut card = FakeCard::new(&[
        (
            INDEX_FID,
            index_file(&[
                ([0x02, 0x99], "kxc00", "mscp"), // no such file
                ([0x01, 0x01], "kxc01", "mscp"), // the index itself
                ([0x02, 0x09], "ksc02", "mscp"), // fine, plain DER
                ([0x02, 0x0A], "kxc03", "mscp"), // refused (6982)
                ([0x02, 0x0B], "kxc04", "mscp"), // empty file
            ]),
        ),
        (CONTAINER_MAP_FID, container_map(&["a", "b", "c"])),
        ([0x02, 0x09], der2.clone()),
        ([0x02, 0x0A], compressed(rsa_certificate())),
        ([0x02, 0x0B], vec![]),
    ]);
    card.refused.push([0x02, 0x0A]);
    let contents = read_contents(&mut card, &profile(Model::Md830)).unwrap();
    assert_eq!(contents.keys.len(), 1);
    let k = &contents.keys[0];
    assert_eq!(k.ordinal, 3);
    assert_eq!(k.id, vec![0x00, 0x03]);
    assert_eq!(k.private_key_label, "Private key 3");
    assert_eq!(k.role, CertificateRole::Signature);
    assert_eq!(k.certificate_der, der2);
    // 830: 0x41 + container 2.
    assert_eq!(k.private_key.unwrap().reference, 0x43);
    let skipped: Vec<u16> = contents.skipped.iter().map(|s| s.ordinal).collect();
    assert_eq!(skipped, vec![1, 2, 4, 5]);
    assert!(contents
        .skipped
        .iter()
        .all(|s| matches!(s.reason, Error::Damaged(_) | Error::NotLoggedIn)));
}

#[test]
fn certificates_without_a_container_have_no_private_key() {
    let mut card = FakeCard::new(&[
        (
            INDEX_FID,
            index_file(&[
                ([0x02, 0x07], "kxc00", "mscp"),
                ([0x02, 0x08], "kxc01", "mscp"),
            ]),
        ),
        (CONTAINER_MAP_FID, container_map(&["only-0"])),
        ([0x02, 0x07], compressed(rsa_certificate())),
        ([0x02, 0x08], compressed(rsa_certificate())),
    ]);
    let contents = read_contents(&mut card, &profile_3810()).unwrap();
    assert_eq!(contents.keys.len(), 2);
    assert!(contents.keys[0].private_key.is_some());
    assert_eq!(contents.keys[1].private_key, None);
    assert_eq!(contents.keys[1].public_key_label, "Public key 2");
    // A container map the card refuses to show (eTokens, #3478): 0.23's assumption.
    card.refused.push(CONTAINER_MAP_FID);
    let contents = read_contents(&mut card, &profile_3810()).unwrap();
    assert_eq!(contents.container_map, None);
    assert_eq!(contents.keys[1].private_key.unwrap().reference, 0x32);
}

#[test]
fn reads_a_940_with_its_keyref_map_and_an_ec_key() {
    use pkcs8::EncodePublicKey;
    let ec = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
    let ec_spki = p256::PublicKey::from(ec.verifying_key())
        .to_public_key_der()
        .unwrap();
    let ec_cert = certificate(ec_spki.as_bytes(), "Signer");
    let mut card = FakeCard::new(&[
        (
            INDEX_FID,
            index_file(&[
                ([0x02, 0x07], "kxc00", "mscp"),
                ([0x02, 0x08], "ksc01", "mscp"),
                ([0x02, 0x09], "kxc02", "mscp"),
            ]),
        ),
        (CONTAINER_MAP_FID, container_map(&["a", "b", "c"])),
        (
            KEYREF_MAP_FID,
            h("01 81 00 00000000 01   01 82 01 00000000 02"),
        ),
        ([0x02, 0x07], compressed(rsa_certificate())),
        ([0x02, 0x08], compressed(&ec_cert)),
        ([0x02, 0x09], compressed(rsa_certificate())),
    ]);
    let p = profile(Model::Md940);
    let contents = read_contents(&mut card, &p).unwrap();
    assert!(card.sent("00A40800020005"));
    let keys = &contents.keys;
    assert_eq!(keys.len(), 3);
    assert_eq!(
        keys[0].private_key,
        Some(PrivateKeyRef {
            reference: 0x81,
            pin: PinRef::User,
            algorithm: KeyAlgorithm::Rsa { bits: 2048 }
        })
    );
    assert_eq!(
        keys[1].private_key,
        Some(PrivateKeyRef {
            reference: 0x82,
            pin: PinRef::DigitalSignature,
            algorithm: KeyAlgorithm::Ec(Curve::P256)
        })
    );
    // Container 2 is in the container map but not in the key-reference map: no key.
    assert_eq!(keys[2].private_key, None);
    assert_eq!(
        contents.pins(Model::Md940),
        vec![PinRef::User, PinRef::DigitalSignature]
    );
    assert_eq!(PinRef::DigitalSignature.label(), "Digital Signature PIN");
}

#[test]
fn a_card_pulled_mid_read_is_an_error_not_a_skipped_certificate() {
    let mut card = probe_card();
    card.pulled_at = Some([0x02, 0x07]);
    let err = read_contents(&mut card, &profile_3810()).unwrap_err();
    assert!(err.is_removed(), "{err}");
}

#[test]
fn files_larger_than_their_card_are_refused_without_reading() {
    let p = profile_3810();
    let mut ch = Script::new().expect("00A40000020207", "6204 8002 FFFF 9000");
    let err = files::read_file(&mut ch, &p, [0x02, 0x07], SelectBy::FileId).unwrap_err();
    assert!(matches!(err, Error::Damaged(_)));
    ch.done();
    // A card that answers more than it was asked, or nothing.
    let mut ch = Script::new().expect("00B0000004", "0102030405 9000");
    assert!(matches!(
        read_binary(&mut ch, &p, 4),
        Err(Error::Damaged(_))
    ));
    let mut ch = Script::new().expect("00B0000004", "9000");
    assert!(matches!(
        read_binary(&mut ch, &p, 4),
        Err(Error::Damaged(_))
    ));
    // Short answers are continued from where they stopped.
    let mut ch = Script::new()
        .expect("00B0000004", "0102 9000")
        .expect("00B0000202", "0304 9000");
    assert_eq!(read_binary(&mut ch, &p, 4).unwrap(), vec![1, 2, 3, 4]);
    ch.done();
}

// ---------------------------------------------------------------------------------------------
// PIN (§3.1)

#[test]
fn verify_sends_ascii_unpadded_on_the_3810() {
    let p = profile_3810();
    let mut ch = Script::new()
        .expect("002000110431323334", "9000")
        .expect("002000110431323335", "63C2")
        .expect("002000110431323335", "63C0")
        .expect("002000110431323334", "6983");
    verify_pin(&mut ch, &p, PinRef::User, b"1234").unwrap();
    assert!(matches!(
        verify_pin(&mut ch, &p, PinRef::User, b"1235"),
        Err(Error::WrongPin { tries_left: 2 })
    ));
    assert!(matches!(
        verify_pin(&mut ch, &p, PinRef::User, b"1235"),
        Err(Error::Blocked)
    ));
    assert!(matches!(
        verify_pin(&mut ch, &p, PinRef::User, b"1234"),
        Err(Error::Blocked)
    ));
    ch.done();
}

#[test]
fn verify_pads_to_16_on_840_940_and_generic() {
    for model in [Model::Md840, Model::Md940, Model::Generic] {
        let mut ch =
            Script::new().expect(&format!("0020001110 31323334 {}", "00".repeat(12)), "9000");
        verify_pin(&mut ch, &profile(model), PinRef::User, b"1234").unwrap();
        ch.done();
    }
    // The 940's signature PIN, 0x83, padded.
    let mut ch = Script::new().expect(
        &format!("0020008310 303030303030 {}", "00".repeat(10)),
        "9000",
    );
    verify_pin(
        &mut ch,
        &profile(Model::Md940),
        PinRef::DigitalSignature,
        b"000000",
    )
    .unwrap();
    ch.done();
    // Not padded: 830, 930.
    for model in [Model::Md830, Model::Md930, Model::Md930Plus] {
        assert!(!pin::pin_padded(&profile(model), PinRef::User));
    }
}

#[test]
fn pin_status_spends_no_try() {
    let p = profile_3810();
    let mut ch = Script::new()
        .expect("0020001100", "63C3")
        .expect("0020001100", "9000")
        .expect("0020001100", "6983")
        .expect("0020001100", "63C0");
    assert_eq!(
        pin_status(&mut ch, &p, PinRef::User).unwrap(),
        PinStatus::NotVerified { tries_left: 3 }
    );
    assert_eq!(
        pin_status(&mut ch, &p, PinRef::User).unwrap(),
        PinStatus::Verified
    );
    assert_eq!(
        pin_status(&mut ch, &p, PinRef::User).unwrap(),
        PinStatus::Blocked
    );
    assert_eq!(
        pin_status(&mut ch, &p, PinRef::User).unwrap(),
        PinStatus::Blocked
    );
    ch.done();
    // Against the fake card: a wrong PIN then the status shows the counter.
    let mut card = probe_card();
    assert!(matches!(
        verify_pin(&mut card, &p, PinRef::User, b"9999"),
        Err(Error::WrongPin { tries_left: 2 })
    ));
    assert_eq!(
        pin_status(&mut card, &p, PinRef::User).unwrap(),
        PinStatus::NotVerified { tries_left: 2 }
    );
    verify_pin(&mut card, &p, PinRef::User, b"0000").unwrap();
}

#[test]
fn malformed_pins_never_reach_the_card() {
    let p = profile_3810();
    let mut ch = Script::new();
    for pin in [&b""[..], b"123", b"12345678901234567"] {
        assert!(matches!(
            verify_pin(&mut ch, &p, PinRef::User, pin),
            Err(Error::PinFormat(_))
        ));
        assert!(matches!(
            change_pin(&mut ch, &p, PinRef::User, b"1234", pin),
            Err(Error::PinFormat(_))
        ));
    }
    assert_eq!(ch.sent, 0);
}

#[test]
fn change_reference_data_pads_each_part() {
    let mut ch = Script::new()
        .expect("00240011083132333435363738", "9000")
        .expect("00240011083132333435363738", "63C1");
    let p = profile_3810();
    change_pin(&mut ch, &p, PinRef::User, b"1234", b"5678").unwrap();
    assert!(matches!(
        change_pin(&mut ch, &p, PinRef::User, b"1234", b"5678"),
        Err(Error::WrongPin { tries_left: 1 })
    ));
    ch.done();
    let mut ch = Script::new().expect(
        "0024001120 31323334000000000000000000000000 35363738393000000000000000000000",
        "9000",
    );
    change_pin(
        &mut ch,
        &profile(Model::Md940),
        PinRef::User,
        b"1234",
        b"567890",
    )
    .unwrap();
    ch.done();
}

#[test]
fn what_the_family_cannot_do_is_refused_without_an_apdu() {
    let p = profile_3810();
    let key = rsa_key_ref();
    let mut ch = Script::new();
    let unsupported = |r: Result<(), Error>, what: Unsupported| {
        assert!(
            matches!(r, Err(Error::NotSupported(u)) if u == what),
            "{what:?}"
        )
    };
    unsupported(
        unblock_pin(&mut ch, &p, PinRef::User),
        Unsupported::PinUnblock,
    );
    unsupported(
        security::generate_key(&mut ch, &p),
        Unsupported::KeyGeneration,
    );
    unsupported(security::import_key(&mut ch, &p), Unsupported::KeyImport);
    unsupported(
        security::write_certificate(&mut ch, &p, rsa_certificate()),
        Unsupported::CertificateWrite,
    );
    unsupported(
        security::delete_object(&mut ch, &p),
        Unsupported::ObjectDelete,
    );
    unsupported(security::derive(&mut ch, &p), Unsupported::KeyDerivation);
    let oaep = DecryptPadding::Oaep {
        hash: OaepHash::Sha256,
        label: b"abc",
    };
    unsupported(
        decrypt(&mut ch, &p, &key, oaep, &[1; 256]).map(|_| ()),
        Unsupported::OaepLabel,
    );
    unsupported(
        sign_pkcs1_input(&mut ch, &p, &key, &[0x42; 32]).map(|_| ()),
        Unsupported::RawRsa,
    );
    let ec_key = PrivateKeyRef {
        algorithm: KeyAlgorithm::Ec(Curve::P256),
        ..key
    };
    unsupported(
        sign_ecdsa(&mut ch, &p, &ec_key, &[1; 32]).map(|_| ()),
        Unsupported::EcOnThisModel,
    );
    unsupported(
        sign_ecdsa(&mut ch, &profile(Model::Md940), &key, &[1; 32]).map(|_| ()),
        Unsupported::KeyAlgorithm,
    );
    unsupported(
        sign_pss(&mut ch, &p, &ec_key, CardHash::Sha256, &[1; 32]).map(|_| ()),
        Unsupported::KeyAlgorithm,
    );
    assert!(matches!(
        sign_pkcs1(&mut ch, &p, &key, CardHash::Sha384, &[1; 32]),
        Err(Error::BadInput(_))
    ));
    assert!(matches!(
        decrypt(&mut ch, &p, &key, DecryptPadding::Pkcs1v15, &[1; 257]),
        Err(Error::BadInput(_))
    ));
    assert_eq!(ch.sent, 0);
    assert!(Error::NotSupported(Unsupported::PinUnblock)
        .to_string()
        .contains("issuer"));
}

// ---------------------------------------------------------------------------------------------
// Signatures and decryption (§3.2 – §3.4)

fn sha256(data: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(data).to_vec()
}

/// MSE, PSO HASH echo, PSO CDS answered with `signature`.
fn sign_script(alg: u8, keyref: u8, hash: &[u8], signature: &[u8], le: &str) -> Script {
    let mse = format!("002241B6068001{alg:02X}8401{keyref:02X}");
    let mut pso_hash = h(&format!(
        "002A90A0{:02X}90{:02X}",
        hash.len() + 2,
        hash.len()
    ));
    pso_hash.extend_from_slice(hash);
    let mut echo = hash.to_vec();
    echo.extend_from_slice(&[0x90, 0x00]);
    let mut sig = signature.to_vec();
    sig.extend_from_slice(&[0x90, 0x00]);
    Script::new()
        .expect(&mse, "9000")
        .expect_bytes(pso_hash, echo)
        .expect_bytes(h(&format!("002A9E9A{le}")), sig)
}

#[test]
fn pkcs1_sha256_signature_verifies() {
    use rsa::signature::Verifier;
    let hash = sha256(b"document");
    let card_sig = rsa_key()
        .sign(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &hash)
        .unwrap();
    // §3.2 probe: 00 22 41 B6 06 80 01 42 84 01 31; §3.3: 00 2A 90 A0 22 90 20 <hash>.
    let mut ch = sign_script(0x42, 0x31, &hash, &card_sig, "00");
    let sig = sign_pkcs1(
        &mut ch,
        &profile_3810(),
        &rsa_key_ref(),
        CardHash::Sha256,
        &hash,
    )
    .unwrap();
    ch.done();
    let vk = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(rsa_key().to_public_key());
    vk.verify(
        b"document",
        &rsa::pkcs1v15::Signature::try_from(sig.as_slice()).unwrap(),
    )
    .unwrap();
}

#[test]
fn pss_signature_verifies_with_salt_as_long_as_the_hash() {
    let hash = sha256(b"renewal request");
    let card_sig = rsa_key()
        .sign_with_rng(
            &mut rand::rngs::OsRng,
            rsa::Pss::new_with_salt::<sha2::Sha256>(32),
            &hash,
        )
        .unwrap();
    let mut ch = sign_script(0x45, 0x31, &hash, &card_sig, "00");
    let sig = sign_pss(
        &mut ch,
        &profile_3810(),
        &rsa_key_ref(),
        CardHash::Sha256,
        &hash,
    )
    .unwrap();
    ch.done();
    rsa_key()
        .to_public_key()
        .verify(rsa::Pss::new::<sha2::Sha256>(), &hash, &sig)
        .unwrap();
}

#[test]
fn pkcs1_of_a_digest_info_strips_it_or_sends_it_whole() {
    let key = rsa_key_ref();
    let p = profile_3810();
    // SHA-256 DigestInfo: stripped, 42 with the bare hash.
    let hash = sha256(b"x");
    let mut di = rsa::Pkcs1v15Sign::new::<sha2::Sha256>().prefix.to_vec();
    di.extend_from_slice(&hash);
    let sig = rsa_key()
        .sign(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &hash)
        .unwrap();
    let mut ch = sign_script(0x42, 0x31, &hash, &sig, "00");
    sign_pkcs1_input(&mut ch, &p, &key, &di).unwrap();
    ch.done();
    // SHA-1 DigestInfo: whole, algorithm reference 02 (the probe's
    // 00 2A 90 A0 25 90 23 30 21 30 09 06 05 2B 0E 03 02 1A …).
    use sha1::Digest;
    let sha1 = sha1::Sha1::digest(b"x").to_vec();
    let mut di1 = h("3021300906052B0E03021A05000414");
    di1.extend_from_slice(&sha1);
    let sig1 = rsa_key()
        .sign(rsa::Pkcs1v15Sign::new_unprefixed(), &di1)
        .unwrap();
    let mut ch = sign_script(0x02, 0x31, &di1, &sig1, "00");
    let out = sign_pkcs1_input(&mut ch, &p, &key, &di1).unwrap();
    ch.done();
    rsa_key()
        .to_public_key()
        .verify(rsa::Pkcs1v15Sign::new_unprefixed(), &di1, &out)
        .unwrap();
    // Not a DigestInfo: a wrong digest length, absent parameters, trailing bytes.
    let mut ch = Script::new();
    let mut bad = di.clone();
    bad.push(0);
    for input in [
        &di[..di.len() - 1],
        &bad[..],
        &h("302F300B0609608648016503040201 0420")[..],
    ] {
        assert!(matches!(
            sign_pkcs1_input(&mut ch, &p, &key, input),
            Err(Error::NotSupported(Unsupported::RawRsa))
        ));
    }
    assert_eq!(ch.sent, 0);
}

#[test]
fn pso_hash_must_be_echoed() {
    // #1772: a card that does not echo the hash fails the signature.
    let hash = sha256(b"y");
    let p = profile_3810();
    let mut pso_hash = h("002A90A0229020");
    pso_hash.extend_from_slice(&hash);
    let mut ch = Script::new()
        .expect("002241B606800142840131", "9000")
        .expect_bytes(pso_hash.clone(), h("6A88"));
    assert!(matches!(
        sign_pkcs1(&mut ch, &p, &rsa_key_ref(), CardHash::Sha256, &hash),
        Err(Error::Card(CardError::Status(_)))
    ));
    let mut other = hash.clone();
    other[0] ^= 1;
    other.extend_from_slice(&[0x90, 0x00]);
    let mut ch = Script::new()
        .expect("002241B606800142840131", "9000")
        .expect_bytes(pso_hash, other);
    assert!(matches!(
        sign_pkcs1(&mut ch, &p, &rsa_key_ref(), CardHash::Sha256, &hash),
        Err(Error::Card(CardError::Malformed(_)))
    ));
}

#[test]
fn signing_without_the_pin_is_not_logged_in() {
    let hash = sha256(b"z");
    let mut ch = Script::new().expect("002241B606800162840131", "6982");
    let digest = [0u8; 64];
    assert!(matches!(
        sign_pkcs1(
            &mut ch,
            &profile_3810(),
            &rsa_key_ref(),
            CardHash::Sha512,
            &digest
        ),
        Err(Error::NotLoggedIn)
    ));
    let mut script = sign_script(0x42, 0x31, &hash, &[], "00");
    script.steps.back_mut().unwrap().1 = h("6982");
    let mut ch = script;
    assert!(matches!(
        sign_pkcs1(
            &mut ch,
            &profile_3810(),
            &rsa_key_ref(),
            CardHash::Sha256,
            &hash
        ),
        Err(Error::NotLoggedIn)
    ));
}

#[test]
fn a_short_signature_is_left_padded_to_the_modulus() {
    let hash = sha256(b"w");
    let mut ch = sign_script(0x42, 0x31, &hash, &[0x01; 255], "00");
    let sig = sign_pkcs1(
        &mut ch,
        &profile_3810(),
        &rsa_key_ref(),
        CardHash::Sha256,
        &hash,
    )
    .unwrap();
    assert_eq!(sig.len(), 256);
    assert_eq!(sig[0], 0);
    let mut ch = sign_script(0x42, 0x31, &hash, &[0x01; 257], "00");
    assert!(sign_pkcs1(
        &mut ch,
        &profile_3810(),
        &rsa_key_ref(),
        CardHash::Sha256,
        &hash
    )
    .is_err());
}

#[test]
fn decryption_chains_the_cryptogram_as_the_probe_saw() {
    let plain = b"session key 0123456789abcdef".to_vec();
    let cryptogram = rsa_key()
        .to_public_key()
        .encrypt(&mut rand::rngs::OsRng, rsa::Pkcs1v15Encrypt, &plain)
        .unwrap();
    assert_eq!(cryptogram.len(), 256);
    // 81 ‖ 256 bytes = 257: 255 bytes with CLA 10, then 2 bytes; no Le under T=0.
    let mut first = h("102A8086FF81");
    first.extend_from_slice(&cryptogram[..254]);
    let mut last = h("002A808602");
    last.extend_from_slice(&cryptogram[254..]);
    let card_plain = rsa_key()
        .decrypt(rsa::Pkcs1v15Encrypt, &cryptogram)
        .unwrap();
    let mut resp = card_plain;
    resp.extend_from_slice(&[0x90, 0x00]);
    let mut ch = Script::new()
        .expect("002241B80680011A840131", "9000")
        .expect_bytes(first, h("9000"))
        .expect_bytes(last, resp);
    let out = decrypt(
        &mut ch,
        &profile_3810(),
        &rsa_key_ref(),
        DecryptPadding::Pkcs1v15,
        &cryptogram,
    )
    .unwrap();
    ch.done();
    assert_eq!(out.as_slice(), plain.as_slice());
}

#[test]
fn oaep_decryption_uses_the_hash_reference_and_t1_le() {
    let p = Profile::from_atr(&h(ATR_ETOKEN_5110)).unwrap();
    let key = PrivateKeyRef {
        reference: 0x81,
        pin: PinRef::User,
        algorithm: KeyAlgorithm::Rsa { bits: 1024 },
    };
    let mut cmd = h("002A80868181");
    cmd.extend_from_slice(&[0x55; 128]);
    cmd.push(0x80);
    let mut ch = Script::new()
        .expect("002241B80680014D840181", "9000")
        .expect_bytes(cmd, h("01020304 9000"));
    let oaep = DecryptPadding::Oaep {
        hash: OaepHash::Sha256,
        label: b"",
    };
    assert_eq!(
        decrypt(&mut ch, &p, &key, oaep, &[0x55; 128])
            .unwrap()
            .as_slice(),
        &[1, 2, 3, 4]
    );
    ch.done();
}

#[test]
fn ecdsa_on_a_940_returns_r_and_s() {
    use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
    let ec = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
    let key = PrivateKeyRef {
        reference: 0x82,
        pin: PinRef::DigitalSignature,
        algorithm: KeyAlgorithm::Ec(Curve::P256),
    };
    let p = profile(Model::Md940);
    let hash = sha256(b"ec document");
    let card: p256::ecdsa::Signature = ec.sign_prehash(&hash).unwrap();
    // r‖s as the card answers it; Le = 2 × 32.
    let mut ch = sign_script(0x44, 0x82, &hash, &card.to_bytes(), "40");
    let sig = sign_ecdsa(&mut ch, &p, &key, &hash).unwrap();
    ch.done();
    let sig = p256::ecdsa::Signature::from_slice(&sig).unwrap();
    ec.verifying_key().verify_prehash(&hash, &sig).unwrap();
    // A DER answer becomes r‖s too.
    let mut ch = sign_script(0x44, 0x82, &hash, card.to_der().as_bytes(), "40");
    let raw = sign_ecdsa(&mut ch, &p, &key, &hash).unwrap();
    assert_eq!(raw, card.to_bytes().to_vec());
    // A SHA-224 hash is zero-padded at the front to 32 bytes (a multiple of 8).
    let h224 = [0x22u8; 28];
    let mut padded = vec![0u8; 4];
    padded.extend_from_slice(&h224);
    let mut ch = sign_script(0x44, 0x82, &padded, &card.to_bytes(), "40");
    sign_ecdsa(&mut ch, &p, &key, &h224).unwrap();
    ch.done();
    // A SHA-512 hash on P-256 is cut to the field length.
    let h512 = [0x33u8; 64];
    let mut ch = sign_script(0x44, 0x82, &h512[..32], &card.to_bytes(), "40");
    sign_ecdsa(&mut ch, &p, &key, &h512).unwrap();
    ch.done();
}

#[test]
fn get_challenge_forms() {
    let p = profile_3810();
    let mut ch = Script::new().expect("0084000108", "0102030405060708 9000");
    assert_eq!(get_challenge(&mut ch, &p, 8).unwrap().len(), 8);
    let mut ch = Script::new()
        .expect("0084000010", "000102030405060708090A0B0C0D0E0F 9000")
        .expect("0084000108", "1011121314151617 9000");
    assert_eq!(
        get_challenge(&mut ch, &p, 20).unwrap(),
        (0u8..16).chain(16..20).collect::<Vec<_>>()
    );
    ch.done();
}

#[test]
fn no_extended_length_apdu_even_on_an_extended_channel() {
    // The in-process channel may announce extended length; IDPrime takes short APDUs only.
    let hash = sha256(b"v");
    let sig = vec![0x11; 256];
    let mut ch = sign_script(0x42, 0x31, &hash, &sig, "00");
    ch.extended = true;
    sign_pkcs1(
        &mut ch,
        &profile_3810(),
        &rsa_key_ref(),
        CardHash::Sha256,
        &hash,
    )
    .unwrap();
    ch.done();
    let mut ch = Script::new()
        .expect("00A40800020101", &fci(300))
        .expect("00B0000000", &format!("{} 9000", "AA".repeat(256)))
        .expect("00B001002C", &format!("{} 9000", "BB".repeat(44)));
    ch.extended = true;
    let p = profile_3810();
    let fci = select_file(&mut ch, &p, INDEX_FID, SelectBy::Path)
        .unwrap()
        .unwrap();
    assert_eq!(read_binary(&mut ch, &p, fci.size).unwrap().len(), 300);
    ch.done();
}

#[test]
fn the_whole_read_of_the_probe_card_is_scripted_byte_for_byte() {
    let index = index_file(&[
        ([0x02, 0x07], "kxc00", "mscp"),
        ([0x02, 0x01], "cardid", ""),
        ([0x02, 0x04], "cmapfile", "mscp"),
    ]);
    assert_eq!(index.len(), 64); // the probe's 3 records, 64 bytes
    let cmap = container_map(&["p"]);
    let cert = compressed(rsa_certificate());
    let mut s = Script::new()
        .expect("00A4040C0BA000000018800000000662", "9000")
        .expect("00A40800020101", &fci(64));
    s = read_steps(s, &index).expect("00A40800020201", &fci(16));
    s = read_steps(s, &card_id()).expect("00A40800020204", &fci(86));
    s = read_steps(s, &cmap).expect("00A40000020207", &fci(cert.len()));
    let mut s = read_steps(s, &cert);
    let contents = read_contents(&mut s, &profile_3810()).unwrap();
    s.done();
    assert_eq!(contents.keys[0].private_key.unwrap().reference, 0x31);
}

#[test]
fn status_words_map_to_causes() {
    use crate::card::StatusWord;
    assert!(matches!(
        Error::from_status(StatusWord::VerifyFail { tries: 1 }),
        Error::WrongPin { tries_left: 1 }
    ));
    assert!(matches!(
        Error::from_status(StatusWord::AuthBlocked),
        Error::Blocked
    ));
    assert!(matches!(
        Error::from_status(StatusWord::SecurityStatus),
        Error::NotLoggedIn
    ));
    assert!(Error::Card(CardError::Reset).is_removed());
    assert!(!Error::Damaged("x").is_removed());
}

#[test]
fn read_log_in_and_sign_on_a_stateful_card() {
    // The whole use: read the card, find the key by CKA_ID, sign (refused before the PIN),
    // verify the PIN, sign with PKCS#1 v1.5 and PSS, verify both against the certificate.
    use rsa::pkcs8::DecodePublicKey;
    let mut card = probe_card();
    card.keys.insert(0x31, rsa_key().clone());
    let p = profile_3810();
    let contents = read_contents(&mut card, &p).unwrap();
    let k = contents.find(&[0x00, 0x01]).unwrap();
    let key = k.private_key.unwrap();
    let public = rsa::RsaPublicKey::from_public_key_der(&k.public_key_der).unwrap();
    let hash = sha256(b"contract");
    assert!(matches!(
        sign_pkcs1(&mut card, &p, &key, CardHash::Sha256, &hash),
        Err(Error::NotLoggedIn)
    ));
    assert_eq!(
        pin_status(&mut card, &p, key.pin).unwrap(),
        PinStatus::NotVerified { tries_left: 3 }
    );
    verify_pin(&mut card, &p, key.pin, b"0000").unwrap();
    let sig = sign_pkcs1(&mut card, &p, &key, CardHash::Sha256, &hash).unwrap();
    public
        .verify(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &hash, &sig)
        .unwrap();
    let sig = sign_pss(&mut card, &p, &key, CardHash::Sha256, &hash).unwrap();
    public
        .verify(rsa::Pss::new::<sha2::Sha256>(), &hash, &sig)
        .unwrap();
    // A tampered hash does not verify: the signature covers what was sent.
    let mut other = hash.clone();
    other[0] ^= 0xFF;
    assert!(public
        .verify(rsa::Pss::new::<sha2::Sha256>(), &other, &sig)
        .is_err());
}

#[test]
fn card_identity_reads_the_card_id_and_the_cache_counters() {
    let p = profile_3810();
    let mut ch = Script::new()
        .expect("00A4040C0BA000000018800000000662", "9000")
        .expect("00A40800020201", &fci(16))
        .expect("00B0000010", "A0A1A2A3A4A5A6A7A8A9AAABACADAEAF 9000")
        .expect("00A40800020202", &fci(6))
        .expect("00B0000006", "00 01 0300 0700 9000");
    let id = card_identity(&mut ch, &p).unwrap();
    ch.done();
    assert_eq!(
        id.card_id.unwrap().hex(),
        "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"
    );
    assert_eq!(
        id.freshness,
        Some(CacheFreshness {
            version: 0,
            pins: 1,
            containers: 3,
            files: 7
        })
    );
    // Neither file: an identity of nothing, not an error.
    let mut ch = Script::new()
        .expect("00A4040C0BA000000018800000000662", "9000")
        .expect("00A40800020201", "6A82")
        .expect("00A40800020202", &fci(6))
        .expect("00B0000006", "6982");
    assert_eq!(
        card_identity(&mut ch, &p).unwrap(),
        CardIdentity {
            card_id: None,
            freshness: None
        }
    );
    assert_eq!(files::parse_cache_file(&[0, 1, 2]), None);
}

#[test]
fn a_4096_bit_signature_comes_in_61xx_pieces() {
    // Le stays short (00 = 256); the card hands the other 256 bytes over GET RESPONSE.
    let hash = sha256(b"long");
    let key = PrivateKeyRef {
        reference: 0x81,
        pin: PinRef::User,
        algorithm: KeyAlgorithm::Rsa { bits: 4096 },
    };
    let mut ch = sign_script(0x42, 0x81, &hash, &[], "00");
    ch.steps.back_mut().unwrap().1 = h(&format!("{} 6100", "AB".repeat(256)));
    let mut ch = ch.expect("00C0000000", &format!("{} 9000", "CD".repeat(256)));
    let sig = sign_pkcs1(
        &mut ch,
        &profile(Model::Md940),
        &key,
        CardHash::Sha256,
        &hash,
    )
    .unwrap();
    ch.done();
    assert_eq!(sig.len(), 512);
    assert_eq!((sig[255], sig[256]), (0xAB, 0xCD));
}
