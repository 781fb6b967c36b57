//! Two processes hammer one virtual card file: each writes its own data objects and increments
//! a shared counter object inside a transaction, N times. Afterwards every object and the full
//! count must be on the card — no update lost to a race between the processes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;
use std::process::Command as Process;
use tessera::applet::piv::{self, ManagementAlgorithm, DEFAULT_MANAGEMENT_KEY};
use tessera::card::{with_transaction, Transport};
use tessera::vcard::{CardFile, CardState, VirtualTransport};

const ROUNDS: u32 = 40;
const COUNTER: u32 = 0x5FFF20;

fn own_object(worker: u32, i: u32) -> u32 {
    0x5FFF40 + worker * 0x40 + i
}

fn hammer(path: &Path, worker: u32) {
    let mut card = VirtualTransport::open(path).expect("open card");
    for i in 0..ROUNDS {
        with_transaction(&mut card, |ch| {
            piv::select(ch)?;
            piv::authenticate_management(
                ch,
                ManagementAlgorithm::TripleDes,
                &DEFAULT_MANAGEMENT_KEY,
            )?;
            piv::put_data(
                ch,
                own_object(worker, i),
                format!("worker {worker} round {i}").as_bytes(),
            )?;
            let count = piv::get_data(ch, COUNTER)?
                .map(|v| u32::from_be_bytes(v.try_into().expect("4-byte counter")))
                .unwrap_or(0);
            piv::put_data(ch, COUNTER, &(count + 1).to_be_bytes())
        })
        .expect("one round");
    }
}

/// Entry point of the child processes (does nothing when run as a normal test).
#[test]
fn hammer_child() {
    if let (Ok(path), Ok(worker)) = (
        std::env::var("TESSERA_HAMMER_CARD"),
        std::env::var("TESSERA_HAMMER_WORKER"),
    ) {
        hammer(Path::new(&path), worker.parse().expect("worker number"));
    }
}

#[test]
fn two_processes_lose_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.json");
    CardFile::create(&path, &CardState::factory(777)).unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2u32)
        .map(|worker| {
            Process::new(&exe)
                .args(["hammer_child", "--exact", "--nocapture", "--test-threads=1"])
                .env("TESSERA_HAMMER_CARD", &path)
                .env("TESSERA_HAMMER_WORKER", worker.to_string())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(
            child.wait().unwrap().success(),
            "a hammering process failed"
        );
    }
    let mut card = VirtualTransport::open(&path).unwrap();
    let t: &mut dyn Transport = &mut card;
    with_transaction(t, |ch| {
        piv::select(ch)?;
        let count = piv::get_data(ch, COUNTER)?.expect("counter present");
        assert_eq!(u32::from_be_bytes(count.try_into().unwrap()), 2 * ROUNDS);
        for worker in 0..2 {
            for i in 0..ROUNDS {
                let v = piv::get_data(ch, own_object(worker, i))?.expect("object present");
                assert_eq!(v, format!("worker {worker} round {i}").as_bytes());
            }
        }
        Ok(())
    })
    .unwrap();
}
