//! The layers as the code must keep them (DESIGN.md "Layers"): a use case in the control
//! manager reaches cards only through the core's typed operations — no file of the manager
//! sends an APDU, builds or parses TLV, or names a transport.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// Lines of `dir`'s Rust files that contain one of `words` (comments included: a manager file
/// that talks about APDUs in code comments is fine, so only code lines are searched).
fn offending(dir: &Path, words: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for file in rust_files(dir) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            if let Some(w) = words.iter().find(|w| code.contains(*w)) {
                found.push(format!(
                    "{}:{}: {w}: {}",
                    file.display(),
                    n + 1,
                    line.trim()
                ));
            }
        }
    }
    found
}

#[test]
fn the_manager_sends_no_apdu_and_builds_no_tlv() {
    let manager = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/manager");
    let words = [
        "crate::card",
        "card::exchange",
        "exchange(",
        "tlv::",
        "Command::new(0x",
        "get_data(",
        "put_data(",
        "Channel",
        "administer",
        "pcsc::",
    ];
    let found = offending(&manager, &words);
    // doctor asks pcscd whether it runs and which readers it has (no card I/O).
    let found: Vec<_> = found
        .into_iter()
        .filter(|l| !(l.contains("doctor.rs") && l.contains("pcsc")))
        .collect();
    assert!(
        found.is_empty(),
        "card I/O in the manager:\n{}",
        found.join("\n")
    );
}

/// The crates `cargo tree` shows under `package` (normal dependencies only: what is linked).
fn linked_crates(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
            "-p",
            package,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn the_pkcs11_module_links_no_user_interface_library() {
    let linked = linked_crates("tessera-pkcs11");
    // The check can fail: the module does link the core and the software card.
    for needed in ["tessera-core", "tessera-vcard", "cryptoki-sys"] {
        assert!(
            linked.iter().any(|c| c == needed),
            "{needed} not in {linked:?}"
        );
    }
    let ui = [
        "clap",
        "clap_complete",
        "indicatif",
        "rpassword",
        "p12-keystore",
        "pkcs12",
        "cms",
        "signal-hook",
        "tessera",
    ];
    let found: Vec<_> = linked.iter().filter(|c| ui.contains(&c.as_str())).collect();
    assert!(
        found.is_empty(),
        "libtessera_pkcs11.so links {found:?} (command-line or manager libraries)"
    );
    // The manager does link them: the list names real crates.
    let manager = linked_crates("tessera");
    for c in ["clap", "rpassword", "cms"] {
        assert!(manager.iter().any(|m| m == c), "{c} not in tessera's tree");
    }
}
