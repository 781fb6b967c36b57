//! Build script: writes the C header `include/tessera_pkcs11.h` with cbindgen.
//!
//! The exported `C_*` functions are written through the `cryptoki_fn!` / `cryptoki_fixed!`
//! macros of `src/entry.rs` (directly, or through helper macros such as
//! `single_part!`), which cbindgen cannot expand on stable Rust. So this script reads those
//! macro invocations in `src/*.rs` with syn, writes one plain Rust file of
//! `#[no_mangle] extern "C"` functions with the same names, parameters and docs
//! (`$OUT_DIR/tessera_c_abi.rs`), and lets cbindgen turn it into C with
//! `include/cbindgen.toml`. The Tessera constants (`TESSERA_PKCS11_*`: version, module file
//! and name, environment variables, CKA_IDs) are added as documented `#define`s: read from the
//! token/pkcs11/vcard constants where those exist, written here otherwise (module name and
//! file, CKA_IDs); `tests/header.rs` compares every one with the code.
//! The PKCS#11 types keep their standard names (CK_RV, …), so the header compiles against
//! any PKCS#11 header (p11-kit's by default).
//!
//! Deterministic (files in name order, declarations sorted by cbindgen), fast (~0.1 s: no
//! cargo metadata, no dependency parsing), and the header is replaced only when its text
//! changes, so an unchanged build never touches its mtime.

use quote::ToTokens;
use std::error::Error;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use syn::parse::{ParseStream, Parser};

type Res<T> = Result<T, Box<dyn Error>>;

/// One exported entry point found in a macro invocation.
struct Entry {
    name: String,
    /// `name: Type` pairs, as Rust source.
    params: Vec<(String, String)>,
    /// Doc lines from the invocation (`///` comments).
    docs: Vec<String>,
    /// For `cryptoki_fixed!`: the CK_RV it always answers.
    fixed: Option<String>,
}

fn main() {
    if let Err(e) = run() {
        // A build script reports a failure by exiting non-zero; the message shows in cargo's
        // output.
        eprintln!("build.rs: cannot generate include/tessera_pkcs11.h: {e}");
        std::process::exit(1);
    }
}

fn run() -> Res<()> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../../include/cbindgen.toml");
    println!("cargo:rerun-if-changed=src");
    for f in CONSTANT_SOURCES {
        println!("cargo:rerun-if-changed={}", f.0);
    }

    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("src"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    files.sort();
    let mut asts = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file)?;
        let ast = syn::parse_file(&text).map_err(|e| format!("{}: {e}", file.display()))?;
        asts.push((file, ast));
    }
    // Helper macros (`macro_rules! single_part { … cryptoki_fn! { export fn $name(…) … } }`)
    // that define one exported function per invocation.
    let mut helpers = Vec::new();
    for (file, ast) in &asts {
        for item in &ast.items {
            if let syn::Item::Macro(m) = item {
                if let (true, Some(ident)) = (m.mac.path.is_ident("macro_rules"), &m.ident) {
                    if let Some(h) = helper_macro(&ident.to_string(), m.mac.tokens.clone())
                        .map_err(|e| format!("{}: {e}", file.display()))?
                    {
                        helpers.push(h);
                    }
                }
            }
        }
    }
    let mut entries = Vec::new();
    for (file, ast) in &asts {
        for item in &ast.items {
            let syn::Item::Macro(m) = item else { continue };
            let Some(last) = m.mac.path.segments.last() else {
                continue;
            };
            let name = last.ident.to_string();
            let tokens = m.mac.tokens.clone();
            let parsed = match name.as_str() {
                "cryptoki_fn" => parse_cryptoki_fn.parse2(tokens),
                "cryptoki_fixed" => parse_cryptoki_fixed.parse2(tokens),
                _ => match helpers.iter().find(|h| h.name == name) {
                    Some(h) => (|input: ParseStream<'_>| h.expand(input)).parse2(tokens),
                    None => continue,
                },
            };
            entries.extend(parsed.map_err(|e| format!("{}: {e}", file.display()))?);
        }
    }
    for must in ["C_GetFunctionList", "C_GetInterfaceList", "C_GetInterface"] {
        if !entries.iter().any(|e| e.name == must) {
            return Err(format!("no exported {must} found in crates/pkcs11/src").into());
        }
    }

    let source = abi_source(&entries)?;
    let abi = out_dir.join("tessera_c_abi.rs");
    write_if_changed(&abi, source.as_bytes())?;

    let mut config = cbindgen::Config::from_file(root.join("../../include/cbindgen.toml"))
        .map_err(|e| format!("include/cbindgen.toml: {e}"))?;
    let mut after = config.after_includes.take().unwrap_or_default();
    after.push_str(&constants(&root)?);
    config.after_includes = Some(after);
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(&abi)
        .generate()?;
    let mut header = Vec::new();
    bindings.write(&mut header);
    write_if_changed(&root.join("../../include/tessera_pkcs11.h"), &header)?;
    // The same text in OUT_DIR, for anyone who wants the header of this very build.
    write_if_changed(&out_dir.join("tessera_pkcs11.h"), &header)?;
    Ok(())
}

/// A local `macro_rules!` whose one rule starts its matcher with `$NAME:ident` (after any
/// attributes) and expands to `cryptoki_fn! { … export fn $NAME(params) … }`.
struct Helper {
    name: String,
    params: proc_macro2::TokenStream,
}

/// Recognises a helper macro; `Ok(None)` for a macro that defines no exported function, an
/// error for one that does in a form this script cannot read (extend it then).
fn helper_macro(name: &str, body: proc_macro2::TokenStream) -> Res<Option<Helper>> {
    use proc_macro2::TokenTree as T;
    let rules: Vec<T> = body.into_iter().collect();
    let defines = |t: &T| t.to_string().contains("export fn");
    // cryptoki_fn! and cryptoki_fixed! themselves are read directly.
    if name == "cryptoki_fn" || name == "cryptoki_fixed" || !rules.iter().any(defines) {
        return Ok(None);
    }
    let unsupported = || -> Box<dyn Error> {
        format!(
            "macro {name}!: build.rs reads helper macros of one rule `($(#[$meta:meta])* \
             $name:ident …) => {{ cryptoki_fn! {{ … export fn $name(params) … }} }}` only"
        )
        .into()
    };
    let (Some(T::Group(matcher)), Some(T::Group(body))) = (rules.first(), rules.get(3)) else {
        return Err(unsupported());
    };
    if rules.len() > 5 {
        return Err(unsupported());
    }
    // The matcher's first top-level `$X:ident`.
    let m: Vec<T> = matcher.stream().into_iter().collect();
    let var = m
        .windows(4)
        .find_map(|w| match w {
            [T::Punct(d), T::Ident(x), T::Punct(c), T::Ident(k)]
                if d.as_char() == '$' && c.as_char() == ':' && k == "ident" =>
            {
                Some(x.to_string())
            }
            _ => None,
        })
        .ok_or_else(unsupported)?;
    // `cryptoki_fn ! { … export fn $var ( params ) … }` anywhere in the transcriber.
    fn find(ts: proc_macro2::TokenStream, var: &str) -> Option<proc_macro2::TokenStream> {
        let v: Vec<T> = ts.into_iter().collect();
        for w in v.windows(5) {
            if let [T::Ident(e), T::Ident(f), T::Punct(d), T::Ident(x), T::Group(p)] = w {
                if e == "export" && f == "fn" && d.as_char() == '$' && x == var {
                    return Some(p.stream());
                }
            }
        }
        v.into_iter().find_map(|t| match t {
            T::Group(g) => find(g.stream(), var),
            _ => None,
        })
    }
    let params = find(body.stream(), &var).ok_or_else(unsupported)?;
    if params.to_string().contains('$') {
        return Err(unsupported());
    }
    Ok(Some(Helper {
        name: name.to_owned(),
        params,
    }))
}

impl Helper {
    /// An invocation: `/// docs  NAME …`.
    fn expand(&self, input: ParseStream<'_>) -> syn::Result<Vec<Entry>> {
        let attrs = input.call(syn::Attribute::parse_outer)?;
        let name: syn::Ident = input.parse()?;
        input.parse::<proc_macro2::TokenStream>()?;
        let args = syn::punctuated::Punctuated::<syn::PatType, syn::Token![,]>::parse_terminated
            .parse2(self.params.clone())?;
        Ok(vec![Entry {
            name: name.to_string(),
            params: args
                .iter()
                .map(|p| {
                    (
                        p.pat.to_token_stream().to_string(),
                        p.ty.to_token_stream().to_string(),
                    )
                })
                .collect(),
            docs: docs(&attrs),
            fixed: None,
        }])
    }
}

/// `cryptoki_fn! { /// docs  [export] fn NAME(params) { body } }`: only `export` functions
/// are symbols; the others live only in the 3.0 function list.
fn parse_cryptoki_fn(input: ParseStream<'_>) -> syn::Result<Vec<Entry>> {
    let mut out = Vec::new();
    while !input.is_empty() {
        let attrs = input.call(syn::Attribute::parse_outer)?;
        let export = input.peek(syn::Ident) && input.fork().parse::<syn::Ident>()? == "export";
        if export {
            input.parse::<syn::Ident>()?;
        }
        let mut f: syn::ItemFn = input.parse()?;
        f.attrs = attrs;
        if export {
            out.push(Entry {
                name: f.sig.ident.to_string(),
                params: params(&f.sig)?,
                docs: docs(&f.attrs),
                fixed: None,
            });
        }
    }
    Ok(out)
}

/// `cryptoki_fixed! { export|internal CKR_X => fn NAME(params); … }`.
fn parse_cryptoki_fixed(input: ParseStream<'_>) -> syn::Result<Vec<Entry>> {
    let kind: syn::Ident = input.parse()?;
    let rv: syn::Expr = input.parse()?;
    input.parse::<syn::Token![=>]>()?;
    let mut out = Vec::new();
    while !input.is_empty() {
        let f: syn::ForeignItemFn = input.parse()?;
        if kind == "export" {
            out.push(Entry {
                name: f.sig.ident.to_string(),
                params: params(&f.sig)?,
                docs: docs(&f.attrs),
                fixed: Some(rv.to_token_stream().to_string()),
            });
        }
    }
    Ok(out)
}

fn params(sig: &syn::Signature) -> syn::Result<Vec<(String, String)>> {
    sig.inputs
        .iter()
        .map(|arg| match arg {
            syn::FnArg::Typed(p) => Ok((
                p.pat.to_token_stream().to_string(),
                p.ty.to_token_stream().to_string(),
            )),
            syn::FnArg::Receiver(r) => Err(syn::Error::new_spanned(r, "unexpected self")),
        })
        .collect()
}

fn docs(attrs: &[syn::Attribute]) -> Vec<String> {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(s.value()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// String constants read from the sources that define them: (file, Rust name, C name, doc).
const CONSTANT_SOURCES: &[(&str, &str, &str, &str)] = &[
    (
        "../core/src/token/mod.rs",
        "MANUFACTURER",
        "TESSERA_PKCS11_MANUFACTURER",
        "CK_INFO.manufacturerID (blank-padded to 32 bytes there).",
    ),
    (
        "../core/src/token/mod.rs",
        "LIBRARY_DESCRIPTION",
        "TESSERA_PKCS11_LIBRARY_DESCRIPTION",
        "CK_INFO.libraryDescription (blank-padded to 32 bytes there).",
    ),
    (
        "../core/src/logging.rs",
        "ENV_LOG",
        "TESSERA_PKCS11_ENV_LOG",
        "Environment variable switching on the module's debug log: `error`, `warn`, `info`, \
         `debug`, `trace` (`1`/`on` mean `debug`). Read at the first C_Initialize.",
    ),
    (
        "../core/src/logging.rs",
        "ENV_LOG_FILE",
        "TESSERA_PKCS11_ENV_LOG_FILE",
        "Environment variable naming a file the log is appended to instead of stderr (alone \
         it implies `debug`).",
    ),
    (
        "../vcard/src/lib.rs",
        "ENV_VCARD",
        "TESSERA_PKCS11_ENV_VCARD",
        "Environment variable listing virtual card state files (`a.json:b.json`); each one is \
         a slot of its own, reached in-process without PC/SC.",
    ),
];

/// The value of `const NAME: &str = "…";` at the top level of `file`.
fn str_const(root: &Path, file: &str, name: &str) -> Res<String> {
    let text = std::fs::read_to_string(root.join(file))?;
    let ast = syn::parse_file(&text).map_err(|e| format!("{file}: {e}"))?;
    for item in ast.items {
        if let syn::Item::Const(c) = item {
            if c.ident == name {
                if let syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) = *c.expr
                {
                    return Ok(s.value());
                }
            }
        }
    }
    Err(format!("{file}: no `const {name}: &str = \"…\"`").into())
}

/// A documented `#define` in the header; the comment is wrapped at 92 columns.
fn define(out: &mut String, name: &str, value: &str, doc: &str) -> Res<()> {
    writeln!(out)?;
    writeln!(out, "/**")?;
    for line in wrap(doc, 88) {
        writeln!(out, " * {line}")?;
    }
    writeln!(out, " */")?;
    writeln!(out, "#define {name} {value}")?;
    Ok(())
}

/// Greedy word wrap (the words are kept whole).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// A C string literal (the values are plain ASCII; quotes and backslashes escaped anyway).
fn c_str(value: &str) -> Res<String> {
    if !value.chars().all(|c| c.is_ascii() && !c.is_ascii_control()) {
        return Err(format!("constant {value:?} is not printable ASCII").into());
    }
    Ok(format!(
        "\"{}\"",
        value.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// The Tessera constants, as C `#define`s (cbindgen cannot write string constants, so they
/// are part of the text that follows the includes).
fn constants(root: &Path) -> Res<String> {
    let mut s = String::from("\n\n/* Tessera constants */\n");
    define(
        &mut s,
        "TESSERA_PKCS11_VERSION",
        &c_str(&std::env::var("CARGO_PKG_VERSION")?)?,
        "The Tessera release this header and the module come from (its package version).",
    )?;
    define(
        &mut s,
        "TESSERA_PKCS11_VERSION_MAJOR",
        &std::env::var("CARGO_PKG_VERSION_MAJOR")?,
        "CK_INFO.libraryVersion.major, as C_GetInfo reports it.",
    )?;
    define(
        &mut s,
        "TESSERA_PKCS11_VERSION_MINOR",
        &std::env::var("CARGO_PKG_VERSION_MINOR")?,
        "CK_INFO.libraryVersion.minor, as C_GetInfo reports it.",
    )?;
    define(
        &mut s,
        "TESSERA_PKCS11_MODULE_FILE",
        &c_str("libtessera_pkcs11.so")?,
        "The module's file name. The Debian package installs it in the multiarch PKCS#11 \
         directory /usr/lib/<triplet>/pkcs11/ (p11-kit's default module directory).",
    )?;
    define(
        &mut s,
        "TESSERA_PKCS11_MODULE_NAME",
        &c_str("Tessera PIV")?,
        "The name the module gets in NSS databases (Firefox's and Thunderbird's \"Security \
         Devices\") from `tessera register` and from the enterprise policy file.",
    )?;
    for (file, name, c_name, doc) in CONSTANT_SOURCES {
        define(&mut s, c_name, &c_str(&str_const(root, file, name)?)?, doc)?;
    }
    define(
        &mut s,
        "TESSERA_PKCS11_CARD_AUTH_SLOT_BASE",
        "0x100",
        "Each card is two tokens. Its main token (slot ID n: 0, 1, ... in the order readers \
         and virtual cards appear) holds everything but card authentication and needs a login \
         (CKF_LOGIN_REQUIRED). Card authentication (PIV key slot 9E, CKA_ID 0x04) is on a \
         second token in slot ID TESSERA_PKCS11_CARD_AUTH_SLOT_BASE + n, labelled like the main \
         token plus TESSERA_PKCS11_CARD_AUTH_LABEL_SUFFIX, without CKF_LOGIN_REQUIRED: NSS \
         (Firefox, Thunderbird) finishes a TLS handshake from a logged-out token only when it \
         needs no login. Both tokens share the card's PIN and its login state; writing 9E \
         (C_GenerateKeyPair, C_CreateObject) goes through the second token after C_Login.",
    )?;
    define(
        &mut s,
        "TESSERA_PKCS11_CARD_AUTH_LABEL_SUFFIX",
        &c_str(" Card Auth")?,
        "Appended to the main token's label (shortened to fit 32 bytes) to name the card's \
         card-authentication token, e.g. \"Tessera PIV #1000006 Card Auth\".",
    )?;
    for (name, value, what) in [
        (
            "TESSERA_PKCS11_CKA_ID_PIV_AUTHENTICATION",
            "0x01",
            "PIV key slot 9A (PIV Authentication)",
        ),
        (
            "TESSERA_PKCS11_CKA_ID_DIGITAL_SIGNATURE",
            "0x02",
            "PIV key slot 9C (Digital Signature; the private key has CKA_ALWAYS_AUTHENTICATE)",
        ),
        (
            "TESSERA_PKCS11_CKA_ID_KEY_MANAGEMENT",
            "0x03",
            "PIV key slot 9D (Key Management: decryption, key agreement)",
        ),
        (
            "TESSERA_PKCS11_CKA_ID_CARD_AUTHENTICATION",
            "0x04",
            "PIV key slot 9E (Card Authentication: its private key is usable without login)",
        ),
    ] {
        let doc = format!(
            "CKA_ID (one byte) of the certificate, public key and private key objects of \
             {what}. Tessera numbers key slots as OpenSC does, and keeps the numbers stable: \
             pkcs11: URIs name keys by them (id=%01). Retired key slots 82..95 get 0x05..0x24 \
             (n - 0x82 + 5 written as two decimal digits)."
        );
        define(&mut s, name, value, &doc)?;
    }
    Ok(s)
}

/// The Rust source cbindgen reads: one function per exported entry point.
fn abi_source(entries: &[Entry]) -> Res<String> {
    let mut s = String::new();
    writeln!(
        s,
        "// Generated by build.rs from crates/pkcs11/src for cbindgen; never compiled.\n"
    )?;
    for e in entries {
        for line in &e.docs {
            writeln!(s, "///{line}")?;
        }
        if let Some(rv) = &e.fixed {
            writeln!(s, "/// Not offered by Tessera: always returns {rv}.")?;
        }
        writeln!(s, "#[no_mangle]")?;
        let params: Vec<String> = e
            .params
            .iter()
            .map(|(name, ty)| format!("{name}: {ty}"))
            .collect();
        writeln!(
            s,
            "pub unsafe extern \"C\" fn {}({}) -> CK_RV {{ unimplemented!() }}\n",
            e.name,
            params.join(", ")
        )?;
    }
    Ok(s)
}

/// Replaces `path` with `data` (through a temporary file and a rename, so a concurrent
/// reader never sees half a file) unless it already holds exactly that.
fn write_if_changed(path: &Path, data: &[u8]) -> Res<()> {
    if std::fs::read(path).is_ok_and(|old| old == data) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(())
}
