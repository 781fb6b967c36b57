//! Certificates and signatures from files: PEM or DER.

#[allow(unused_imports)]
use super::*;

// ---------------------------------------------------------------------------------------------
// Files: PEM or DER

/// The DER blocks of a PEM text with one of `labels` (all blocks when `labels` is empty);
/// `None` when the bytes are not PEM.
pub fn pem_blocks(bytes: &[u8], labels: &[&str]) -> Option<Vec<Vec<u8>>> {
    use base64ct::{Base64, Encoding};
    let text = std::str::from_utf8(bytes).ok()?;
    if !text.contains("-----BEGIN ") {
        return None;
    }
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines().map(str::trim) {
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            current = Some((label.to_owned(), String::new()));
        } else if line.starts_with("-----END ") {
            if let Some((label, body)) = current.take() {
                if labels.is_empty() || labels.contains(&label.as_str()) {
                    out.push(Base64::decode_vec(&body).ok()?);
                }
            }
        } else if let Some((_, body)) = current.as_mut() {
            if !line.contains(':') {
                body.push_str(line);
            }
        }
    }
    Some(out)
}

/// The largest document `tessera sign` signs or `tessera verify` checks (it is read whole).
pub const MAX_DOCUMENT: u64 = 512 * 1024 * 1024;
/// The largest certificate, CRL or signature file read.
pub const MAX_STRUCTURE: u64 = 16 * 1024 * 1024;

/// Reads a file of at most `limit` bytes; a larger one (or an endless one, /dev/zero) is
/// refused with a message naming the file and the limit.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let cannot = |e: std::io::Error| ManagerError {
        class: crate::manager::ErrorClass::Usage,
        message: format!("cannot read {}: {e}", path.display()),
    };
    let file = std::fs::File::open(path).map_err(cannot)?;
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    crate::manager::secret::read_bounded(file, limit)
        .map_err(cannot)?
        .ok_or_else(|| ManagerError {
            class: crate::manager::ErrorClass::Usage,
            message: format!(
                "{} is larger than {} MiB: not a file Tessera reads here",
                path.display(),
                limit / (1024 * 1024)
            ),
        })
}

/// A signature, certificate or CRL file ([`MAX_STRUCTURE`] at most).
pub(super) fn read_file(path: &Path) -> Result<Vec<u8>> {
    read_bounded(path, MAX_STRUCTURE)
}

/// Certificates from a file: PEM (any number) or one DER certificate.
pub fn read_certificates(path: &Path) -> Result<Vec<Certificate>> {
    let bytes = read_file(path)?;
    let ders = pem_blocks(&bytes, &["CERTIFICATE", "TRUSTED CERTIFICATE"]).unwrap_or(vec![bytes]);
    let certs: Vec<Certificate> = ders
        .iter()
        .map(|d| Certificate::from_der(d))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| ManagerError {
            class: crate::manager::ErrorClass::Refused,
            message: format!("{} holds no readable certificate: {e}", path.display()),
        })?;
    if certs.is_empty() {
        return fail(format!("{} holds no certificate", path.display()));
    }
    Ok(certs)
}

/// Consecutive DER certificates (the card's certificate followed by its stored chain).
pub fn split_certificates(bytes: &[u8]) -> Result<Vec<Certificate>> {
    use der::Reader;
    let damaged = |e: der::Error| ManagerError {
        class: crate::manager::ErrorClass::Refused,
        message: format!("a stored certificate is damaged: {e}"),
    };
    let mut reader = der::SliceReader::new(bytes).map_err(damaged)?;
    let mut out = Vec::new();
    while !reader.is_finished() {
        out.push(Certificate::decode(&mut reader).map_err(damaged)?);
    }
    Ok(out)
}
