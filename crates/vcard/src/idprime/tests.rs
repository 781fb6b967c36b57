//! Tests of the IDPrime applet: the file system OpenSC reads (index, container map, cardid,
//! tinfo, compressed certificates), key references per model, and the command sequences OpenSC
//! 0.23 sends (IDPRIME-NOTES.md §1.2–§3.4, and the trace of tests/interop/idprime-opensc.sh),
//! with signatures and decryptions checked by RustCrypto against the certificate's key.

use super::crypto::Hash;
use super::files::{self, FID_CARDID, FID_CMAPFILE, FID_INDEX, FID_KEY_REFERENCE_MAP};
use super::model::Model;
use super::*;
use crate::crypto::{attestation_root_certificate, KeyAlgorithm, PrivateKey};
use crate::seal::KdfCost;
use crate::{CardApplet, CardKind, CardState};
use rsa::traits::PublicKeyParts;
use sha2::Digest;
use std::sync::OnceLock;

const SERIAL: u32 = 4242;

/// One RSA-2048 key and its self-signed certificate for every test (key generation is slow).
fn rsa_ecert() -> &'static (Vec<u8>, Vec<u8>) {
    static E: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    E.get_or_init(|| ecert_of(KeyAlgorithm::Rsa2048))
}

fn ecert_of(alg: KeyAlgorithm) -> (Vec<u8>, Vec<u8>) {
    let key = PrivateKey::generate(alg).unwrap();
    let cert = attestation_root_certificate(&key, SERIAL).unwrap();
    (key.to_pkcs8().unwrap().to_vec(), cert)
}

fn card_with(model: Model, ecerts: &[&(Vec<u8>, Vec<u8>)], format: CertificateFormat) -> Card {
    let list: Vec<ECert<'_>> = ecerts
        .iter()
        .map(|(k, c)| ECert {
            key: k,
            certificate: c,
        })
        .collect();
    Card {
        state: IdPrimeState::personalized(model, SERIAL, &list, format, KdfCost::TEST).unwrap(),
        applet: Applet::new(),
    }
}

fn card() -> Card {
    card_with(
        Model::Idp3810,
        &[rsa_ecert()],
        CertificateFormat::Compressed,
    )
}

struct Card {
    state: IdPrimeState,
    applet: Applet,
}

/// A response: data and status word.
#[derive(Debug)]
struct Resp {
    data: Vec<u8>,
    sw: u16,
}

impl Card {
    fn raw(&mut self, apdu: &[u8]) -> Resp {
        let out = self.applet.process(&mut self.state, apdu);
        let n = out.response.len();
        assert!(n >= 2, "no status word");
        Resp {
            data: out.response[..n - 2].to_vec(),
            sw: u16::from_be_bytes([out.response[n - 2], out.response[n - 1]]),
        }
    }

    fn hex(&mut self, apdu: &str) -> Resp {
        self.raw(&hex::decode(apdu.replace(' ', "")).unwrap())
    }

    /// Sends as a T=0 host does: 61xx is followed by GET RESPONSE until 9000.
    fn t0(&mut self, apdu: &[u8]) -> Resp {
        let mut r = self.raw(apdu);
        let mut data = std::mem::take(&mut r.data);
        while r.sw >> 8 == 0x61 {
            let le = (r.sw & 0xFF) as u8;
            r = self.raw(&[0x00, 0xC0, 0x00, 0x00, le]);
            data.extend_from_slice(&r.data);
        }
        Resp { data, sw: r.sw }
    }

    fn t0_hex(&mut self, apdu: &str) -> Resp {
        self.t0(&hex::decode(apdu.replace(' ', "")).unwrap())
    }

    fn select_applet(&mut self) {
        assert_eq!(
            self.hex("00 A4 04 0C 0B A0 00 00 00 18 80 00 00 00 06 62")
                .sw,
            0x9000
        );
    }

    /// SELECT by FID (P1=00 P2=00, T=0: no Le); returns the FCI size.
    fn select_size(&mut self, p1: u8, fid: u16) -> Result<usize, u16> {
        let [hi, lo] = fid.to_be_bytes();
        let r = self.t0(&[0x00, 0xA4, p1, 0x00, 0x02, hi, lo]);
        if r.sw != 0x9000 {
            return Err(r.sw);
        }
        assert_eq!(r.data[0], 0x62);
        assert_eq!(&r.data[2..4], &[0x80, 0x02]);
        Ok(usize::from(u16::from_be_bytes([r.data[4], r.data[5]])))
    }

    /// Reads the current file as OpenSC does: chunks of at most 256 bytes.
    fn read_all(&mut self, size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while out.len() < size {
            let [p1, p2] = (out.len() as u16).to_be_bytes();
            let le = (size - out.len()).min(256);
            let r = self.raw(&[0x00, 0xB0, p1, p2, le as u8]);
            assert_eq!(r.sw, 0x9000);
            assert!(!r.data.is_empty());
            out.extend_from_slice(&r.data);
        }
        out
    }

    fn verify(&mut self, pin: &[u8]) -> u16 {
        let mut apdu = vec![0x00, 0x20, 0x00, 0x11, pin.len() as u8];
        apdu.extend_from_slice(pin);
        self.raw(&apdu).sw
    }

    /// MSE SET + PSO HASH (echo checked) + PSO CDS.
    fn sign(&mut self, alg: u8, key_ref: u8, hash: &[u8]) -> Resp {
        let mse = self.raw(&[
            0x00, 0x22, 0x41, 0xB6, 0x06, 0x80, 0x01, alg, 0x84, 0x01, key_ref,
        ]);
        if mse.sw != 0x9000 {
            return mse;
        }
        let mut apdu = vec![0x00, 0x2A, 0x90, 0xA0, hash.len() as u8 + 2, 0x90];
        apdu.push(hash.len() as u8);
        apdu.extend_from_slice(hash);
        let echo = self.t0(&apdu);
        if echo.sw != 0x9000 {
            return echo;
        }
        assert_eq!(echo.data, hash, "PSO HASH echoes its input");
        self.raw(&[0x00, 0x2A, 0x9E, 0x9A, 0x00])
    }
}

fn public_key(cert: &[u8]) -> rsa::RsaPublicKey {
    use pkcs8::DecodePublicKey;
    let c = <x509_cert::Certificate as der::Decode>::from_der(cert).unwrap();
    let spki = der::Encode::to_der(&c.tbs_certificate.subject_public_key_info).unwrap();
    rsa::RsaPublicKey::from_public_key_der(&spki).unwrap()
}

// ---- persona and file system ----------------------------------------------------------------

#[test]
fn atr_is_the_t0_form_opensc_023_matches() {
    let atr = Model::Idp3810.atr();
    // OpenSC 0.23's one entry and mask (card-idprime.c, 0.23.0).
    let want = hex::decode("3B7F96000080318065B084413DF6120FFE829000").unwrap();
    let mask = hex::decode("FFFF00FFFFFFFFFFFFFF00000000FFFFFFFFFFFF").unwrap();
    for m in Model::ALL {
        let atr = m.atr();
        assert_eq!(atr.len(), 20, "{m}");
        assert_eq!(atr[1] & 0x80, 0, "{m}: no TD1, so T=0 only");
        for i in 0..20 {
            assert_eq!(atr[i] & mask[i], want[i] & mask[i], "{m}: byte {i}");
        }
    }
    assert_eq!(atr, want, "the 3810's model bytes 84 41 3D F6");
    assert_eq!(&Model::Idp940.atr()[10..14], &[0x85, 0x59, 0x56, 0xFB]);
}

#[test]
fn key_references_follow_each_models_formula() {
    assert_eq!(Model::Idp3810.key_reference(0), Some(0x31));
    assert_eq!(Model::Idp3810.key_reference(9), Some(0x3A));
    assert_eq!(
        Model::Idp3810.key_reference(10),
        None,
        "0.23 reads one digit"
    );
    assert_eq!(Model::Idp940.key_reference(0), Some(0x56));
    assert_eq!(Model::Idp940.key_reference(1), Some(0x57));
}

#[test]
fn personalised_files_are_what_opensc_reads() {
    let c = card();
    let (_, cert) = rsa_ecert();
    let index = files::parse_index(&c.state.files[&FID_INDEX]).unwrap();
    let names: Vec<(u16, String, String)> = index
        .iter()
        .map(|e| (e.fid, e.name.clone(), e.directory.clone()))
        .collect();
    assert_eq!(
        names,
        [
            (0x0201, "cardid", ""),
            (0x0202, "cardcf", ""),
            (0x0203, "cardapps", ""),
            (0x0204, "cmapfile", "mscp"),
            (0x0205, "tinfo", "p11"),
            (0x0206, "kxc00", "mscp"),
        ]
        .map(|(f, n, d)| (f, n.to_owned(), d.to_owned()))
    );
    // Index layout: count byte + 21-byte records; sizes as stored.
    assert_eq!(c.state.files[&FID_INDEX].len(), 1 + 6 * 21);
    for e in &index {
        assert_eq!(
            usize::from(e.size),
            c.state.files[&e.fid].len(),
            "{}",
            e.name
        );
    }
    assert_eq!(c.state.files[&FID_CARDID].len(), 16);
    assert_eq!(&c.state.files[&FID_CARDID][12..], &SERIAL.to_be_bytes());
    // The certificate: compressed, inflating to the .p12's certificate byte for byte.
    let file = &c.state.files[&0x0206];
    assert_eq!(&file[..2], &[0x01, 0x00]);
    assert_eq!(
        usize::from(u16::from_le_bytes([file[2], file[3]])),
        cert.len()
    );
    assert_eq!(&files::certificate_der(file).unwrap(), cert);
    assert_eq!(c.state.certificates(), vec![(0, cert.clone())]);
    // Container 0: valid and default, a 2048-bit key-exchange key, named by a GUID.
    let map = files::parse_container_map(&c.state.files[&FID_CMAPFILE]);
    assert_eq!(map.len(), 1);
    assert_eq!(map[0].flags, 0x03);
    assert_eq!(
        (map[0].signature_key_bits, map[0].key_exchange_key_bits),
        (0, 2048)
    );
    assert!(map[0].name.starts_with('{') && map[0].name.len() == 38);
    // Token label: the certificate's CN, NUL-terminated.
    let tinfo = &c.state.files[&0x0205];
    assert_eq!(tinfo[0], 0x01);
    assert_eq!(*tinfo.last().unwrap(), 0);
    assert_eq!(
        files::parse_tinfo(tinfo).as_deref(),
        Some("Tessera PIV Attestation")
    );
    // Key 0x31 is the certificate's key; the 3810 has no key-reference map.
    assert_eq!(c.state.keys.keys().copied().collect::<Vec<_>>(), [0x31]);
    assert!(!c.state.files.contains_key(&FID_KEY_REFERENCE_MAP));
}

#[test]
fn compression_round_trips_and_damage_is_noticed() {
    let der: Vec<u8> = (0..1500u32).map(|i| (i % 7) as u8).collect();
    let z = files::compress_certificate(&der).unwrap();
    assert!(files::is_compressed(&z) && z.len() < der.len());
    assert_eq!(&z[4..6], &[0x78, 0xDA], "a zlib stream, best compression");
    assert_eq!(files::certificate_der(&z).unwrap(), der);
    // Header stating another length, a truncated stream: damaged, not a panic.
    let mut wrong = z.clone();
    wrong[2] ^= 1;
    assert!(files::certificate_der(&wrong).is_err());
    assert!(files::certificate_der(&z[..z.len() / 2]).is_err());
    assert!(files::certificate_der(&[0x01, 0x00, 0x05]).is_err());
    // A plain certificate stays as it is.
    let plain = [0x30, 0x03, 0x02, 0x01, 0x00];
    assert_eq!(files::certificate_der(&plain).unwrap(), plain);
}

#[test]
fn plain_certificates_can_be_stored_too() {
    let c = card_with(Model::Idp3810, &[rsa_ecert()], CertificateFormat::Plain);
    assert_eq!(&c.state.files[&0x0206], &rsa_ecert().1);
    assert_eq!(c.state.certificates()[0].1, rsa_ecert().1);
}

#[test]
fn layouts_parse_back() {
    let entries = vec![files::IndexEntry {
        fid: 0x0207,
        size: 0x0123,
        name: "ksc01".into(),
        directory: "mscp".into(),
    }];
    let bytes = files::index(&entries).unwrap();
    assert_eq!(&bytes[..5], &[1, 0x02, 0x07, 0x01, 0x23]);
    assert_eq!(&bytes[5..13], b"ksc01\0\0\0");
    assert_eq!(&bytes[13..22], b"mscp\0\0\0\0\0");
    assert_eq!(files::parse_index(&bytes).unwrap(), entries);
    assert!(files::parse_index(&bytes[..10]).is_err());
    assert!(files::parse_index(&[]).is_err());
    // An empty container map is one empty record (OpenSC 0.24+ refuses size 0).
    let empty = files::container_map(&[]).unwrap();
    assert_eq!(empty, vec![0; 86]);
    assert!(files::parse_container_map(&empty).is_empty());
    let records = [files::KeyReferenceRecord {
        pin_index: 1,
        key_reference: 0x56,
        certificate_index: 0,
    }];
    let map = files::key_reference_map(&records);
    assert_eq!(map, [1, 0x56, 0, 0, 0, 0, 0, 1]);
    assert_eq!(files::parse_key_reference_map(&map), records);
    assert_eq!(files::tinfo("x"), [1, 2, b'x', 0]);
    let long = "é".repeat(40);
    let t = files::tinfo(&long);
    assert!(usize::from(t[1]) <= files::TINFO_LABEL_MAX + 1);
    assert!(files::parse_tinfo(&t).is_some());
}

#[test]
fn personalisation_refuses_what_the_card_cannot_hold() {
    let (key, cert) = rsa_ecert();
    let (other_key, _) = ecert_of(KeyAlgorithm::Rsa2048);
    let pair = |k: &'static [u8], c: &'static [u8]| ECert {
        key: k,
        certificate: c,
    };
    let ec = Box::leak(Box::new(ecert_of(KeyAlgorithm::EccP256)));
    let other_key: &'static [u8] = Box::leak(other_key.into_boxed_slice());
    let err = |ecerts: &[ECert<'_>], m: Model| {
        IdPrimeState::personalized(m, 1, ecerts, CertificateFormat::Compressed, KdfCost::TEST)
            .err()
            .map(|e| e.to_string())
    };
    assert!(err(&[pair(other_key, cert)], Model::Idp3810)
        .unwrap()
        .contains("not for this private key"));
    assert!(err(&[pair(&ec.0, &ec.1)], Model::Idp3810)
        .unwrap()
        .contains("takes no EccP256"));
    assert!(err(&[pair(&ec.0, &ec.1)], Model::Idp940).is_none());
    assert!(err(&[pair(key, b"not a certificate")], Model::Idp3810)
        .unwrap()
        .contains("does not parse"));
    let many: Vec<ECert<'_>> = (0..11).map(|_| pair(key, cert)).collect();
    assert!(err(&many, Model::Idp3810).unwrap().contains("at most 10"));
}

// ---- the command sequences OpenSC sends ------------------------------------------------------

#[test]
fn opensc_023_binding_sequence() {
    let mut c = card();
    // match_card: SELECT AID (P2=0C, no Le), SELECT 0101 by path (P1=08, T=0: no Le) → 61xx.
    c.select_applet();
    let r = c.hex("00 A4 08 00 02 01 01");
    assert_eq!(r.sw >> 8, 0x61, "T=0: the FCI waits for GET RESPONSE");
    let size = c.select_size(0x08, FID_INDEX).unwrap();
    assert_eq!(size, 1 + 6 * 21);
    // init: CPLC, exactly 45 bytes with OS level 01 at rbuf[11].
    let cplc = c.hex("00 CA 9F 7F 2D");
    assert_eq!(cplc.sw, 0x9000);
    assert_eq!(cplc.data.len(), 45);
    assert_eq!(&cplc.data[..3], &[0x9F, 0x7F, 0x2A]);
    assert_eq!(cplc.data[11], 0x01);
    // The index, read in one READ BINARY.
    let index = c.read_all(size);
    assert_eq!(index, c.state.files[&FID_INDEX]);
    // PKCS#15 probing: EF.DIR and the PKCS#15 DFs are absent.
    for path in ["2F00", "5015", "5031"] {
        assert_eq!(c.t0_hex(&format!("00 A4 08 00 02 {path}")).sw, 0x6A82);
    }
    assert_eq!(c.hex("00 A4 08 0C 02 50 15").sw, 0x6A82);
    // Serial: cardid, exactly 16 bytes.
    assert_eq!(c.select_size(0x08, FID_CARDID), Ok(16));
    assert_eq!(c.hex("00 B0 00 00 10").data, c.state.files[&FID_CARDID]);
    // Certificate: SELECT by FID, 4-byte header check, then the raw file.
    let size = c.select_size(0x00, 0x0206).unwrap();
    let head = c.hex("00 B0 00 00 04");
    assert_eq!(&head.data[..2], &[0x01, 0x00]);
    let raw = c.read_all(size);
    assert_eq!(files::certificate_der(&raw).unwrap(), rsa_ecert().1);
    // 0.24+: the container map.
    let size = c.select_size(0x00, FID_CMAPFILE).unwrap();
    assert_eq!(c.read_all(size).len(), 86);
    // PIN status probe (T=0 adds P3=00).
    assert_eq!(c.hex("00 20 00 11 00").sw, 0x63C3);
    assert_eq!(c.hex("00 20 00 11").sw, 0x63C3);
    // 0.25+: GET DATA DF30.
    let v = c.hex("00 CA DF 30 00");
    assert_eq!(&v.data[..2], &[0xDF, 0x30]);
    assert_eq!(c.hex("00 CA 01 02 00").sw, 0x6A88);
}

#[test]
fn files_need_the_applet_and_reads_stay_in_bounds() {
    let mut c = card();
    assert_eq!(c.select_size(0x00, FID_INDEX), Err(0x6A82));
    assert_eq!(c.hex("00 20 00 11 00").sw, 0x6D00);
    assert_eq!(c.hex("00 A4 04 0C 05 A0 00 00 00 03").sw, 0x6A82);
    c.select_applet();
    assert_eq!(c.hex("00 B0 00 00 10").sw, 0x6986, "no EF selected");
    assert_eq!(c.select_size(0x00, 0x0999), Err(0x6A82));
    assert_eq!(c.select_size(0x00, FID_CARDID), Ok(16));
    assert_eq!(c.hex("00 B0 00 10 01").sw, 0x6B00);
    assert_eq!(
        c.hex("00 B0 00 0C 00").data.len(),
        4,
        "short read at the end"
    );
    assert_eq!(
        c.hex("00 B0 81 00 04").sw,
        0x6A81,
        "no short EF identifiers"
    );
    assert_eq!(c.hex("00 A4 08 00 04 3F 00 02 01").sw >> 8, 0x61);
    assert_eq!(c.hex("00 A4 08 00 04 3F 00 50 15").sw, 0x6A82);
    assert_eq!(c.hex("00 A4 00 0C 02 02 01").sw, 0x9000);
    assert_eq!(c.hex("80 A4 00 0C 02 02 01").sw, 0x6E00);
    assert_eq!(
        c.hex("00 D6 00 00 01 00").sw,
        0x6982,
        "writes need the admin key"
    );
    assert_eq!(c.hex("00 C0 00 00 10").sw, 0x6985, "nothing to get");
    let r = c.hex("00 84 00 01 08");
    assert_eq!((r.data.len(), r.sw), (8, 0x9000));
    assert_eq!(c.hex("00 84 00 00 10").data.len(), 16);
}

#[test]
fn pin_counter_is_exact() {
    let mut c = card();
    c.select_applet();
    assert_eq!(c.verify(b"1234"), 0x63C2);
    assert_eq!(c.hex("00 20 00 11 00").sw, 0x63C2);
    assert_eq!(c.verify(b"0000"), 0x9000, "the factory PIN");
    assert_eq!(c.state.pin.tries_left, 3, "a right PIN restores the tries");
    assert_eq!(c.hex("00 20 00 11 00").sw, 0x9000, "verified");
    assert_eq!(c.verify(b"00000"), 0x63C2);
    assert_eq!(c.hex("00 20 00 11 00").sw, 0x63C2, "a wrong PIN ends it");
    assert_eq!(c.verify(b"000"), 0x6700, "too short: no try spent");
    assert_eq!(c.verify(&[b'1'; 17]), 0x6700, "too long: no try spent");
    assert_eq!(c.verify(b"1111"), 0x63C1);
    assert_eq!(c.verify(b"2222"), 0x63C0);
    assert_eq!(c.verify(b"0000"), 0x6983, "blocked: even the right PIN");
    assert_eq!(c.hex("00 20 00 11 00").sw, 0x6983);
    assert_eq!(c.hex("00 2C 00 11 08 31 32 33 34 30 30 30 30").sw, 0x6982);
    assert_eq!(c.hex("00 20 00 12 00").sw, 0x6A88, "no such PIN");
}

#[test]
fn pin_change_splits_old_and_new_at_the_current_length() {
    let mut c = card();
    c.select_applet();
    assert!(c.state.pin.is_default);
    // Wrong old PIN: a try spent, nothing changed.
    assert_eq!(
        c.hex("00 24 00 11 0A 31 31 31 31 34 37 31 31 32 32").sw,
        0x63C2
    );
    // 0000 → 471122 (OpenSC sends old‖new, unpadded on the 3810).
    assert_eq!(
        c.hex("00 24 00 11 0A 30 30 30 30 34 37 31 31 32 32").sw,
        0x9000
    );
    assert!(!c.state.pin.is_default);
    assert_eq!((c.state.pin.tries_left, c.state.pin.length), (3, 6));
    c.applet.reset();
    c.select_applet();
    assert_eq!(c.verify(b"0000"), 0x63C2);
    assert_eq!(c.verify(b"471122"), 0x9000);
    // New PIN too short: refused before anything changes.
    assert_eq!(
        c.hex("00 24 00 11 09 34 37 31 31 32 32 31 32 33").sw,
        0x6700
    );
    assert_eq!(c.verify(b"471122"), 0x9000);
    // Keys still open with the new PIN: the storage key was rewrapped.
    let r = c.sign(0x42, 0x31, &[7; 32]);
    assert_eq!((r.sw, r.data.len()), (0x9000, 256));
}

#[test]
fn signatures_verify_with_the_certificates_key() {
    let mut c = card();
    let public = public_key(&rsa_ecert().1);
    c.select_applet();
    let data = b"document to sign";
    // Before VERIFY: 6982 at PSO CDS.
    let hash = sha2::Sha256::digest(data);
    assert_eq!(c.sign(0x42, 0x31, &hash).sw, 0x6982);
    assert_eq!(c.verify(b"0000"), 0x9000);
    for (alg, hash) in [
        (0x42, sha2::Sha256::digest(data).to_vec()),
        (0x52, sha2::Sha384::digest(data).to_vec()),
        (0x62, sha2::Sha512::digest(data).to_vec()),
    ] {
        let r = c.sign(alg, 0x31, &hash);
        assert_eq!(r.sw, 0x9000, "{alg:02X}");
        let scheme = match alg {
            0x42 => rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
            0x52 => rsa::Pkcs1v15Sign::new::<sha2::Sha384>(),
            _ => rsa::Pkcs1v15Sign::new::<sha2::Sha512>(),
        };
        public.verify(scheme, &hash, &r.data).unwrap();
    }
    for (alg, h) in [
        (0x45, Hash::Sha256),
        (0x55, Hash::Sha384),
        (0x65, Hash::Sha512),
    ] {
        let hash = match h {
            Hash::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Hash::Sha384 => sha2::Sha384::digest(data).to_vec(),
            _ => sha2::Sha512::digest(data).to_vec(),
        };
        let r = c.sign(alg, 0x31, &hash);
        assert_eq!(r.sw, 0x9000, "{alg:02X}");
        let scheme = match h {
            Hash::Sha256 => rsa::Pss::new_with_salt::<sha2::Sha256>(32),
            Hash::Sha384 => rsa::Pss::new_with_salt::<sha2::Sha384>(48),
            _ => rsa::Pss::new_with_salt::<sha2::Sha512>(64),
        };
        public.verify(scheme, &hash, &r.data).unwrap();
    }
    // A hash of the wrong length, a DigestInfo with reference 02 (real cards refuse it), a
    // wrong key reference, an EC algorithm for an RSA key.
    assert_eq!(c.sign(0x42, 0x31, &[0; 20]).sw, 0x6A80);
    assert_eq!(c.sign(0x02, 0x31, &[0x30; 35]).sw, 0x6A80);
    assert_eq!(c.sign(0x42, 0x32, &[0; 32]).sw, 0x6A88);
    assert_eq!(c.sign(0x44, 0x31, &[0; 32]).sw, 0x6A80);
    // CDS without a fresh PSO HASH: conditions not satisfied.
    assert_eq!(c.hex("00 2A 9E 9A 00").sw, 0x6985);
}

#[test]
fn decipher_takes_a_chained_cryptogram() {
    let mut c = card();
    let public = public_key(&rsa_ecert().1);
    c.select_applet();
    let message = b"a session key for the holder";
    let cryptogram = public
        .encrypt(&mut rand_core::OsRng, rsa::Pkcs1v15Encrypt, message)
        .unwrap();
    assert_eq!(cryptogram.len(), public.size());
    let mse = c.hex("00 22 41 B8 06 80 01 1A 84 01 31");
    assert_eq!(mse.sw, 0x9000);
    // As OpenSC 0.23 sends it: 81 ‖ cryptogram, 257 bytes: 255 chained, then 2.
    let mut body = vec![0x81];
    body.extend_from_slice(&cryptogram);
    let first = |c: &mut Card| {
        let mut a = vec![0x10, 0x2A, 0x80, 0x86, 0xFF];
        a.extend_from_slice(&body[..255]);
        c.raw(&a).sw
    };
    let last = |c: &mut Card| {
        let mut a = vec![0x00, 0x2A, 0x80, 0x86, 0x02];
        a.extend_from_slice(&body[255..]);
        c.t0(&a)
    };
    assert_eq!(first(&mut c), 0x9000);
    assert_eq!(last(&mut c).sw, 0x6982, "the PIN first");
    assert_eq!(c.verify(b"0000"), 0x9000);
    assert_eq!(first(&mut c), 0x9000);
    let r = last(&mut c);
    assert_eq!((r.sw, &r.data[..]), (0x9000, &message[..]));
    // OAEP SHA-256 (empty label).
    let cryptogram = public
        .encrypt(
            &mut rand_core::OsRng,
            rsa::Oaep::new::<sha2::Sha256>(),
            message,
        )
        .unwrap();
    assert_eq!(c.hex("00 22 41 B8 06 80 01 4D 84 01 31").sw, 0x9000);
    let mut a = vec![0x10, 0x2A, 0x80, 0x86, 0xFF, 0x81];
    a.extend_from_slice(&cryptogram[..254]);
    assert_eq!(c.raw(&a).sw, 0x9000);
    let mut a = vec![0x00, 0x2A, 0x80, 0x86, 0x02];
    a.extend_from_slice(&cryptogram[254..]);
    assert_eq!(c.t0(&a).data, message);
    // Garbage decrypts to nothing; chaining any other command is refused.
    let mut a = vec![0x10, 0x2A, 0x80, 0x86, 0xFF, 0x81];
    a.extend_from_slice(&[0x11; 254]);
    assert_eq!(c.raw(&a).sw, 0x9000);
    assert_eq!(c.hex("00 2A 80 86 02 11 11").sw, 0x6A80);
    assert_eq!(c.hex("10 2A 90 A0 04 90 02 00 00").sw, 0x6884);
}

#[test]
fn the_940_pads_its_pin_and_maps_its_key_references() {
    let ec = ecert_of(KeyAlgorithm::EccP256);
    let mut c = card_with(
        Model::Idp940,
        &[rsa_ecert(), &ec],
        CertificateFormat::Compressed,
    );
    let map = files::parse_key_reference_map(&c.state.files[&FID_KEY_REFERENCE_MAP]);
    assert_eq!(
        map.iter()
            .map(|r| (r.certificate_index, r.key_reference, r.pin_index))
            .collect::<Vec<_>>(),
        [(0, 0x56, 1), (1, 0x57, 1)]
    );
    let cmap = files::parse_container_map(&c.state.files[&FID_CMAPFILE]);
    assert_eq!(cmap[1].key_exchange_key_bits, 256);
    c.select_applet();
    assert_eq!(
        c.hex("00 CA 9F 7F 2D").data[11],
        0x04,
        "OS level 04: 0.23 pads"
    );
    assert_eq!(c.verify(b"0000"), 0x6700, "unpadded: wrong length");
    let mut padded = b"0000".to_vec();
    padded.resize(16, 0);
    assert_eq!(c.verify(&padded), 0x9000);
    assert_eq!(c.hex("00 20 00 83 00").sw, 0x63C3, "Digital Signature PIN");
    // ECDSA, input zero-padded to a multiple of 8, answer r‖s.
    let hash = sha2::Sha256::digest(b"ec document");
    let r = c.sign(0x44, 0x57, &hash);
    assert_eq!((r.sw, r.data.len()), (0x9000, 64));
    let key = PrivateKey::from_pkcs8(&ec.0).unwrap();
    let PrivateKey::P256(secret) = key else {
        panic!("P-256")
    };
    let sig = p256::ecdsa::Signature::from_slice(&r.data).unwrap();
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    p256::ecdsa::VerifyingKey::from(secret.public_key())
        .verify_prehash(&hash, &sig)
        .unwrap();
    // Change with two 16-byte blocks.
    let mut change = vec![0x00, 0x24, 0x00, 0x11, 0x20];
    change.extend_from_slice(&padded);
    let mut new = b"5678".to_vec();
    new.resize(16, 0);
    change.extend_from_slice(&new);
    assert_eq!(c.raw(&change).sw, 0x9000);
    assert_eq!(c.verify(&padded), 0x63C2);
    assert_eq!(c.verify(&new), 0x9000);
}

#[test]
fn card_state_round_trips_and_old_files_are_piv() {
    let mut state =
        CardState::factory_with_cost(Default::default(), SERIAL, KdfCost::TEST).unwrap();
    let piv_json = serde_json::to_value(&state).unwrap();
    assert_eq!(piv_json["kind"], "piv");
    assert!(piv_json.get("idprime").is_none());
    // A file from before IDPrime (no "kind") is a PIV card.
    let mut old = piv_json.clone();
    old.as_object_mut().unwrap().remove("kind");
    let back = CardState::from_json(&serde_json::to_vec(&old).unwrap()).unwrap();
    assert_eq!(back.kind, CardKind::Piv);
    state.kind = CardKind::IdPrime;
    state.idprime = Some(card().state);
    let json = serde_json::to_vec_pretty(&state).unwrap();
    let text = String::from_utf8(json.clone()).unwrap();
    assert!(text.contains("\"kind\": \"idprime\"") && text.contains("\"0201\""));
    assert!(!text.contains("30303030"), "no PIN in the clear");
    let back = CardState::from_json(&json).unwrap();
    assert_eq!(back, state);
    // The dispatcher presents the IDPrime ATR and answers with the IDPrime applet.
    assert_eq!(crate::kind::atr(&back), Model::Idp3810.atr());
    let mut applet = CardApplet::for_state(&back);
    let mut back = back;
    let out = applet.process(
        &mut back,
        &hex::decode("00A4040C0BA000000018800000000662").unwrap(),
    );
    assert_eq!(out.response, [0x90, 0x00]);
}

#[test]
fn no_input_panics() {
    let mut c = card();
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..20_000 {
        if i % 500 == 0 {
            c.select_applet();
            c.verify(b"0000");
        }
        let len = (next() % 40) as usize;
        let mut apdu: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if let Some(cla) = apdu.first_mut() {
            *cla &= 0x10;
        }
        if apdu.len() > 1 {
            apdu[1] = [0xA4, 0xB0, 0xCA, 0x20, 0x24, 0x22, 0x2A, 0xC0, 0x84][i % 9];
        }
        let out = c.applet.process(&mut c.state, &apdu);
        assert!(out.response.len() >= 2);
    }
}

#[test]
fn the_in_process_transport_presents_the_idprime_card() {
    use crate::card::apdu::{exchange, Command};
    use crate::card::Transport;
    use crate::{CardFile, VirtualTransport};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idprime.json");
    let mut state =
        CardState::factory_with_cost(Default::default(), SERIAL, KdfCost::TEST).unwrap();
    state.kind = CardKind::IdPrime;
    state.idprime = Some(card().state);
    CardFile::create(&path, &state).unwrap();
    let mut t = VirtualTransport::open(&path).unwrap();
    assert_eq!(t.atr(), &Model::Idp3810.atr()[..]);
    t.transaction(&mut |ch| {
        assert!(
            !ch.extended_length(),
            "the T=0 ATR announces no extended length"
        );
        let r = exchange(ch, &Command::new(0xA4, 0x04, 0x0C).with_data(&AID))?;
        assert!(r.sw.is_success());
        // The FCI comes through 61xx + GET RESPONSE, which the card I/O layer follows.
        let r = exchange(ch, &Command::new(0xA4, 0x08, 0x00).with_data(&[0x01, 0x01]))?;
        assert!(r.sw.is_success());
        assert_eq!(&r.data[..4], &[0x62, 0x0B, 0x80, 0x02]);
        let r = exchange(ch, &Command::new(0x20, 0x00, 0x11))?;
        assert_eq!(u16::from(r.sw), 0x63C3);
        Ok(())
    })
    .unwrap();
}
