//! Settings a user or administrator chooses for the module, read once per C_Initialize: the
//! environment first, then `$XDG_CONFIG_HOME/tessera/tessera.conf` (else
//! `~/.config/tessera/tessera.conf`), then `/etc/tessera/tessera.conf`. A file holds
//! `name = value` lines; `#` starts a comment. Unknown names are ignored (and logged).
//!
//! | setting | environment | default |
//! | --- | --- | --- |
//! | `card-auth-token` | `TESSERA_CARD_AUTH_TOKEN` | `false` |
//!
//! `card-auth-token = true` shows each card's card-authentication key (9E) on a token of its
//! own without CKF_LOGIN_REQUIRED: NSS (Firefox, Thunderbird) does not finish a TLS
//! handshake with a key on a token that needs a login while it is logged out, even when the
//! key itself needs no PIN. Off by default: one token per card, as other middleware does, so
//! that URIs without a token name (`pkcs11:id=%01;type=private`) find exactly one card.

use std::path::PathBuf;

/// Environment variable of `card-auth-token`.
pub const ENV_CARD_AUTH_TOKEN: &str = "TESSERA_CARD_AUTH_TOKEN";

/// Whether `value` says yes (`1`, `true`, `yes`, `on`).
fn yes(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

/// The configuration files, most specific first.
fn files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => out.push(PathBuf::from(dir).join("tessera/tessera.conf")),
        None => {
            if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
                out.push(PathBuf::from(home).join(".config/tessera/tessera.conf"));
            }
        }
    }
    out.push(PathBuf::from("/etc/tessera/tessera.conf"));
    out
}

/// The value of `name` in a configuration file's text.
fn lookup(text: &str, name: &str) -> Option<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim().to_owned())
}

/// A boolean setting: the environment, else the first configuration file that names it.
fn setting(name: &str, env: &str) -> Option<bool> {
    if let Some(v) = std::env::var_os(env) {
        return yes(&v.to_string_lossy());
    }
    for f in files() {
        // A configuration file larger than this is not one.
        let Ok(text) = std::fs::read(&f)
            .map(|b| String::from_utf8_lossy(b.get(..64 * 1024).unwrap_or(&b)).into_owned())
        else {
            continue;
        };
        if let Some(v) = lookup(&text, name) {
            let parsed = yes(&v);
            if parsed.is_none() {
                log::warn!("{}: {name} = {v:?} is not true or false", f.display());
            }
            return parsed;
        }
    }
    None
}

/// `card-auth-token`: a separate, login-free token for each card's card-authentication key.
pub fn card_auth_token() -> bool {
    setting("card-auth-token", ENV_CARD_AUTH_TOKEN).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_name_value_lines() {
        let text = "# Tessera\ncard-auth-token = true # for Firefox\nother = 1\n";
        assert_eq!(lookup(text, "card-auth-token").as_deref(), Some("true"));
        assert_eq!(lookup(text, "missing"), None);
        assert_eq!(yes("Yes"), Some(true));
        assert_eq!(yes("off"), Some(false));
        assert_eq!(yes("maybe"), None);
    }
}
