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

/// What one language's project is made of and how it is built.
struct Template {
    /// Its name in messages.
    lang: &'static str,
    files: &'static [TemplateFile],
    /// Files that must exist in the checkout for this language's SDK.
    markers: &'static [&'static str],
    /// The one command that builds the component (also in its README).
    build: &'static str,
    /// The command that runs the unit tests (also in its README).
    unit_test: &'static str,
    /// The built component, relative to the project (with placeholders).
    component: &'static str,
}

const RUST: Template = Template {
    lang: "Rust",
    files: &[
        (
            "Cargo.toml",
            include_str!("../../templates/rust/Cargo.toml"),
        ),
        ("src/lib.rs", include_str!("../../templates/rust/lib.rs")),
        ("README.md", include_str!("../../templates/rust/README.md")),
        (".gitignore", "/target\n"),
    ],
    markers: &["guest-sdk/Cargo.toml"],
    build: "cargo build --release --target wasm32-wasip2",
    unit_test: "cargo test",
    component: "target/wasm32-wasip2/release/{{file}}.wasm",
};

const JS: Template = Template {
    lang: "TypeScript",
    files: &[
        (
            "package.json",
            include_str!("../../templates/js/package.json"),
        ),
        (
            "tsconfig.json",
            include_str!("../../templates/js/tsconfig.json"),
        ),
        (
            "src/handler.ts",
            include_str!("../../templates/js/handler.ts"),
        ),
        (
            "test/handler.test.ts",
            include_str!("../../templates/js/handler.test.ts"),
        ),
        (
            "scripts/install-deps.mjs",
            include_str!("../../templates/js/install-deps.mjs"),
        ),
        ("README.md", include_str!("../../templates/js/README.md")),
        (".gitignore", "node_modules/\n*.wasm\n"),
    ],
    markers: &[
        "guest-sdk/js/package.json",
        "guest-sdk/js/bin/sluice-build-js.js",
        "wit/handler.wit",
    ],
    build: "npm run build",
    unit_test: "npm test",
    component: "{{name}}.wasm",
};

const PYTHON: Template = Template {
    lang: "Python",
    files: &[
        (
            "handler.py",
            include_str!("../../templates/python/handler.py"),
        ),
        (
            "test_handler.py",
            include_str!("../../templates/python/test_handler.py"),
        ),
        (
            "requirements.txt",
            include_str!("../../templates/python/requirements.txt"),
        ),
        ("build.py", include_str!("../../templates/python/build.py")),
        (
            "README.md",
            include_str!("../../templates/python/README.md"),
        ),
        (
            ".gitignore",
            ".venv/\n__pycache__/\n*.pyc\n.pytest_cache/\n*.wasm\n",
        ),
    ],
    markers: &[
        "guest-sdk/python/pyproject.toml",
        "guest-sdk/python/requirements-dev.txt",
        "guest-sdk/python/src/sluice_sdk/build.py",
        "wit/handler.wit",
    ],
    build: "python3 build.py",
    unit_test: ".venv/bin/python -m pytest",
    component: "{{name}}.wasm",
};

fn template(lang: Lang) -> &'static Template {
    match lang {
        Lang::Rust => &RUST,
        Lang::Js => &JS,
        Lang::Python => &PYTHON,
    }
}

/// The `sluice test` command line of a project's component, as its README
/// gives it (with placeholders).
fn sluice_test_line(template: &Template) -> String {
    format!(
        "sluice test {} --name {{{{name}}}} --event events/greet.event.json --expect events/greet.expect.json",
        template.component
    )
}

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
    let template = template(args.lang);
    for marker in template.markers {
        if !sdk.join(marker).is_file() {
            bail!(
                "{} has no {} SDK (no {marker}); point --sdk or SLUICE_SDK_DIR at a Sluice checkout",
                sdk.display(),
                template.lang
            );
        }
    }
    let file = args.name.replace('-', "_");
    let fill = |text: &str| {
        text.replace("{{name}}", &args.name)
            .replace("{{file}}", &file)
            .replace("{{sdk}}", &sdk.to_string_lossy())
    };
    for (path, text) in template.files.iter().chain(EVENTS) {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&target, fill(text))
            .with_context(|| format!("cannot write {}", target.display()))?;
    }
    println!(
        "created {} ({} handler {:?}, SDK in {})",
        dir.display(),
        template.lang,
        args.name,
        sdk.display()
    );
    println!("next (see its README.md):");
    println!("  cd {}", dir.display());
    let width = template.build.len().max(template.unit_test.len());
    println!("  {:<width$}  # build", template.build);
    println!("  {:<width$}  # unit tests", template.unit_test);
    println!("  {}", fill(&sluice_test_line(template)));
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

    /// Every README gives the commands `sluice new` prints.
    #[test]
    fn readmes_give_the_printed_commands() {
        for lang in [Lang::Rust, Lang::Js, Lang::Python] {
            let t = template(lang);
            let (_, readme) = t
                .files
                .iter()
                .find(|(path, _)| *path == "README.md")
                .unwrap_or_else(|| panic!("{} has no README.md", t.lang));
            for command in [
                format!("Build: `{}`", t.build),
                format!("Unit tests: `{}`", t.unit_test),
                format!("`{}`", sluice_test_line(t)),
            ] {
                assert!(readme.contains(&command), "{}: {command}", t.lang);
            }
            assert_eq!(readme.lines().filter(|l| !l.is_empty()).count(), 3);
            assert!(t.files.iter().any(|(path, _)| *path == ".gitignore"));
        }
    }

    #[test]
    fn names() {
        assert!(check_name("greeter").is_ok());
        assert!(check_name("order-audit2").is_ok());
        for bad in ["", "Greeter", "2x", "a_b", "a-", "a b", "../x"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
