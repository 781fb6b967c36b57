//! Benchmark: median round trip of a 2 KB GET DATA, in-process and through pcscd + vpcd.
//! Prints figures; asserts nothing about time. The PC/SC half runs when the environment names
//! a lab (PCSCLITE_CSOCK_NAME and TESSERA_VPCD_PORT, as pkg/scripts/pcsc-lab.sh writes them)
//! and TESSERA_BIN points at the tessera binary; otherwise it says it skipped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::ffi::CString;
use std::path::Path;
use std::time::{Duration, Instant};
use tessera::applet::piv::{self, ManagementAlgorithm, DEFAULT_MANAGEMENT_KEY};
use tessera::card::{apdu, pcsc, with_transaction, Transport};
use tessera::vcard::{CardFile, CardState, VirtualTransport};

const OBJECT: u32 = 0x5FC105;
const SIZE: usize = 2048;
const ROUNDS: usize = 200;

fn measure(label: &str, t: &mut dyn Transport) -> Result<(), Box<dyn std::error::Error>> {
    let payload: Vec<u8> = (0..SIZE).map(|i| i as u8).collect();
    with_transaction(t, |ch| {
        piv::select(ch)?;
        piv::authenticate_management(ch, ManagementAlgorithm::TripleDes, &DEFAULT_MANAGEMENT_KEY)?;
        piv::put_data(ch, OBJECT, &payload)
    })?;
    let mut times = Vec::with_capacity(ROUNDS);
    let apdus_before = apdu::apdus_sent();
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let got = with_transaction(t, |ch| piv::get_data(ch, OBJECT))?;
        times.push(start.elapsed());
        if got.as_deref() != Some(payload.as_slice()) {
            return Err("GET DATA returned other bytes".into());
        }
    }
    let apdus = (apdu::apdus_sent() - apdus_before) as f64 / ROUNDS as f64;
    times.sort();
    let pct = |p: usize| {
        times
            .get(times.len() * p / 100)
            .copied()
            .unwrap_or_default()
    };
    println!(
        "bench get_data_2k {label:<12} median {:>8.3} ms  p90 {:>8.3} ms  min {:>8.3} ms  apdus/op {apdus:.1}  rounds {ROUNDS}",
        ms(pct(50)),
        ms(pct(90)),
        ms(times.first().copied().unwrap_or_default()),
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bench.card");
    CardFile::create(&path, &CardState::factory(4242))?;
    let mut card = VirtualTransport::open(&path)?;
    measure("in-process", &mut card)?;
    drop(card);

    let (Ok(port), Ok(bin)) = (
        std::env::var("TESSERA_VPCD_PORT"),
        std::env::var("TESSERA_BIN"),
    ) else {
        println!("bench get_data_2k pcscd+vpcd   skipped (no lab: set PCSCLITE_CSOCK_NAME, TESSERA_VPCD_PORT, TESSERA_BIN)");
        return Ok(());
    };
    // A card server that just stopped stays "present" in pcscd for a moment: wait until the
    // reader is empty so that the card we find below is ours.
    wait_until_empty()?;
    let mut server = std::process::Command::new(bin)
        .args(["vcard", "serve"])
        .arg(&path)
        .args(["--vpcd", &format!("127.0.0.1:{port}")])
        .spawn()?;
    let result = through_pcscd(&path);
    let _ = server.kill();
    let _ = server.wait();
    result
}

fn wait_until_empty() -> Result<(), Box<dyn std::error::Error>> {
    let ctx = pcsc::establish()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while pcsc::readers(&ctx)?.iter().any(|r| r.card_present) {
        if Instant::now() > deadline {
            return Err("the reader still holds another card".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn through_pcscd(_path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let ctx = pcsc::establish()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let reader = loop {
        if let Some(r) = pcsc::readers(&ctx)?.into_iter().find(|r| r.card_present) {
            break r;
        }
        if Instant::now() > deadline {
            return Err("no card appeared in the vpcd reader".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut card = pcsc::PcscTransport::connect(&ctx, &CString::new(reader.name.clone())?)?;
    measure("pcscd+vpcd", &mut card)?;
    card.disconnect();
    Ok(())
}
