//! `sluice new`: scaffolds a handler project in Rust, JavaScript/TypeScript
//! or Python that builds with one command and passes `sluice test` as
//! created. Every language gets the same handler (a per-key greeting
//! counter that emits one event) and the same event and expectation files.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};

use crate::{Lang, NewArgs};

/// One file of a template: its path in the project and its text, with
/// `{{name}}`, `{{file}}` (the name as a file stem) and `{{sdk}}` (the
/// Sluice checkout) to fill in.
type TemplateFile = (&'static str, &'static str);

const EVENTS: &[TemplateFile] = &[
    (
        "events/greet.event.json",
        include_str!("../../templates/events/greet.event.json"),
    ),
    (
        "events/greet.expect.json",
        include_str!("../../templates/events/greet.expect.json"),
    ),
];

const RUST: &[TemplateFile] = &[
    (
        "Cargo.toml",
        include_str!("../../templates/rust/Cargo.toml"),
    ),
    ("src/lib.rs", include_str!("../../templates/rust/lib.rs")),
    ("README.md", include_str!("../../templates/rust/README.md")),
    (".gitignore", "/target\n"),
];

/// The Sluice checkout this binary was built from, where the SDKs are.
fn built_checkout() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Creates the project and prints what to run next.
pub fn run(args: NewArgs) -> anyhow::Result<ExitCode> {
    check_name(&args.name)?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists()
        && dir
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!("{} exists and is not empty", dir.display());
    }
    let sdk = args
        .sdk
        .clone()
        .or_else(|| std::env::var_os("SLUICE_SDK_DIR").map(PathBuf::from))
        .unwrap_or_else(built_checkout);
    let sdk = std::path::absolute(&sdk)
        .and_then(|p| p.canonicalize())
        .with_context(|| format!("the Sluice checkout {} (set --sdk)", sdk.display()))?;
    let (files, marker) = match args.lang {
        Lang::Rust => (RUST, "guest-sdk/Cargo.toml"),
    };
    if !sdk.join(marker).is_file() {
        bail!(
            "{} is not a Sluice checkout (no {marker}); point --sdk or SLUICE_SDK_DIR at one",
            sdk.display()
        );
    }
    let file = args.name.replace('-', "_");
    let fill = |text: &str| {
        text.replace("{{name}}", &args.name)
            .replace("{{file}}", &file)
            .replace("{{sdk}}", &sdk.to_string_lossy())
    };
    for (path, text) in files.iter().chain(EVENTS) {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&target, fill(text))
            .with_context(|| format!("cannot write {}", target.display()))?;
    }
    println!("created {} ({:?} handler)", dir.display(), args.lang);
    println!("next: cd {} and follow README.md", dir.display());
    Ok(ExitCode::SUCCESS)
}

/// A name that is a package name in every language's toolchain and a
/// handler name: lowercase ASCII letters, digits and `-`, starting with a
/// letter.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !ok {
        bail!(
            "invalid name {name:?}: use lowercase letters, digits and '-', starting with a letter (at most 64)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("greeter").is_ok());
        assert!(check_name("order-audit2").is_ok());
        for bad in ["", "Greeter", "2x", "a_b", "a-", "a b", "../x"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
