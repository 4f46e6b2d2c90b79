//! `New-Plugin`: a buildable skeleton in Rust, Python or JavaScript, for either world:
//! the current WIT, the code, a build script with the toolchain pinned, a manifest that
//! `Test-Plugin -Manifest` takes as it is, and a README. The code templates live in
//! `host/templates/new-plugin/`; CI builds every skeleton and runs `Test-Plugin` on it.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::limits::{DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_MS};
use super::WitVersion;
use crate::hresult::{Failure, HResult};

/// The WIT every new plugin is written against: the current version.
const WIT: WitVersion = WitVersion::CURRENT;

/// `clap::ValueEnum` makes these the CLI's `-Language` and `-World` values, so the
/// accepted spellings live here only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Rust,
    #[value(alias = "py")]
    Python,
    #[value(alias = "javascript")]
    Js,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum World {
    Policy,
    Hooks,
}

impl Language {
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::Python => "python",
            Language::Js => "js",
        }
    }
}

impl World {
    pub fn as_str(self) -> &'static str {
        match self {
            World::Policy => "policy",
            World::Hooks => "hooks",
        }
    }
}

/// What `New-Plugin` wrote, and how to go on.
#[derive(Debug, Serialize)]
pub struct Skeleton {
    pub name: String,
    pub language: Language,
    pub world: World,
    pub path: PathBuf,
    pub files: Vec<String>,
    pub build: String,
    pub test: String,
    pub install: String,
}

fn code(language: Language, world: World) -> (&'static str, &'static str) {
    match (language, world) {
        (Language::Rust, World::Policy) => (
            "src/lib.rs",
            include_str!("../../templates/new-plugin/policy.rs"),
        ),
        (Language::Rust, World::Hooks) => (
            "src/lib.rs",
            include_str!("../../templates/new-plugin/hooks.rs"),
        ),
        (Language::Python, World::Policy) => (
            "app.py",
            include_str!("../../templates/new-plugin/policy.py"),
        ),
        (Language::Python, World::Hooks) => (
            "app.py",
            include_str!("../../templates/new-plugin/hooks.py"),
        ),
        (Language::Js, World::Policy) => ("", include_str!("../../templates/new-plugin/policy.js")),
        (Language::Js, World::Hooks) => ("", include_str!("../../templates/new-plugin/hooks.js")),
    }
}

fn build_script(name: &str, language: Language, world: World) -> String {
    let w = world.as_str();
    let body = match language {
        Language::Rust => format!(
            "command -v rustup >/dev/null && {{ rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2; }}\n\
             cargo build --release --target wasm32-wasip2\n\
             cp \"${{CARGO_TARGET_DIR:-target}}/wasm32-wasip2/release/{}.wasm\" {name}.wasm\n",
            name.replace('-', "_")
        ),
        Language::Python => format!(
            "# componentize-py at the version requirements.txt pins; a venv of its own unless\n\
             # it is on PATH already.\n\
             if ! command -v componentize-py >/dev/null; then\n\
             \x20   [ -x .venv/bin/componentize-py ] || {{ python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt; }}\n\
             \x20   PATH=\"$PWD/.venv/bin:$PATH\"\n\
             fi\n\
             componentize-py -d wit -w {w} componentize app -o {name}.wasm\n"
        ),
        Language::Js => "# componentize-js at the version package.json pins. Its own CLI, not\n\
             # `jco componentize`, which fails on this WIT (see vmguest's docs/plugins.md).\n\
             [ -d node_modules ] || npm install --no-audit --no-fund\n\
             npm run --silent build\n"
            .to_owned(),
    };
    format!("#!/bin/sh\n# Builds {name}.wasm, the component {name}.toml names.\nset -eu\ncd \"$(dirname \"$0\")\"\n{body}")
}

fn manifest(name: &str, world: World) -> String {
    let settings = match world {
        World::Policy => "# protect-prefix = \"prod-\"\n",
        World::Hooks => "# freeze = true\n",
    };
    format!(
        "name = \"{name}\"\n\
         version = \"0.1.0\"\n\
         wit = \"{wit}\"\n\
         component = \"{name}.wasm\"\n\
         # The component's SHA-256. Install-Plugin writes it; Test-Plugin -Manifest only\n\
         # warns while it does not match.\n\
         sha256 = \"\"\n\
         order = 50\n\
         [settings]\n\
         {settings}\
         [grants]\n\
         # \"/mirror\" = \"/srv/ic-mirror\"\n\
         [limits]\n\
         timeout_ms = {DEFAULT_TIMEOUT_MS}\n\
         memory_mb = {DEFAULT_MEMORY_MB}\n",
        wit = WIT.as_str(),
    )
}

fn readme(s: &Skeleton, language: Language, world: World) -> String {
    let what = match world {
        World::Policy => "an `iso-policy` plugin: it chooses which IC ISO is installed",
        World::Hooks => "an `install-hooks` plugin: it runs before and after each install",
    };
    let toolchain = match language {
        Language::Rust => "Rust with the `wasm32-wasip2` target and wit-bindgen 0.49",
        Language::Python => {
            "componentize-py 0.25.1 (requirements.txt), in `.venv` unless it is on PATH"
        }
        Language::Js => "Node.js with componentize-js 0.23.0 (package.json)",
    };
    format!(
        "# {name}\n\n{name} is {what}, written against `wit/plugin.wit` \
         (`vmguest:plugin@{wit}`, world `{world}`).\n\n\
         Toolchain: {toolchain}.\n\n\
         ```sh\n{build}          # builds {name}.wasm\n{test}\n{install}\n```\n\n\
         `Test-Plugin -Manifest` uses the settings, grants and limits in `{name}.toml`; add\n\
         `-IsoPath DIR` to try it on your own ISOs, or `-VMName VM` for a live VM (nothing is\n\
         changed), and `-OutputFormat Json` for CI. `Install-Plugin` pins the SHA-256 and\n\
         precompiles. The guide is vmguest's `docs/plugins.md`.\n",
        name = s.name,
        world = world.as_str(),
        build = s.build,
        test = s.test,
        install = s.install,
        wit = WIT.as_str(),
    )
}

fn refuse(why: String) -> Failure {
    Failure::msg(HResult::DispException, why)
}

/// A plugin name: lowercase letters, digits and dashes, starting with a letter.
fn valid_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The files of a skeleton, relative to its directory.
pub fn files(name: &str, language: Language, world: World) -> Vec<(String, String)> {
    let fill = |t: &str| {
        t.replace("{{name}}", name)
            .replace("{{world}}", world.as_str())
    };
    let (code_path, code_text) = code(language, world);
    let code_path = match language {
        Language::Js => format!("{name}.js"),
        _ => code_path.to_owned(),
    };
    let mut files = vec![
        ("wit/plugin.wit".to_owned(), WIT.wit_text().to_owned()),
        (code_path, fill(code_text)),
        ("build.sh".to_owned(), build_script(name, language, world)),
        (format!("{name}.toml"), manifest(name, world)),
    ];
    let ignore = match language {
        Language::Rust => {
            files.push((
                "Cargo.toml".into(),
                fill(include_str!("../../templates/new-plugin/Cargo.toml")),
            ));
            "/target\n"
        }
        Language::Python => {
            files.push((
                "requirements.txt".into(),
                include_str!("../../templates/new-plugin/requirements.txt").into(),
            ));
            "/.venv\n__pycache__/\n"
        }
        Language::Js => {
            files.push((
                "package.json".into(),
                fill(include_str!("../../templates/new-plugin/package.json")),
            ));
            "/node_modules\n"
        }
    };
    files.push((".gitignore".into(), format!("{ignore}/*.wasm\n")));
    files
}

/// Write a skeleton into `dir` (which must be empty or missing, unless `force`).
pub fn create(
    name: &str,
    language: Language,
    world: World,
    dir: &Path,
    force: bool,
    what_if: bool,
) -> Result<Skeleton, Failure> {
    if !valid_name(name) {
        return Err(refuse(format!(
            "plugin name {name:?} must be lowercase letters, digits and dashes, starting with a letter"
        )));
    }
    let occupied = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some());
    if occupied && !force {
        return Err(refuse(format!(
            "{} is not empty; choose another -Path, or -Force to overwrite the skeleton's files",
            dir.display()
        )));
    }
    let files = files(name, language, world);
    let shown = dir.display();
    let skeleton = Skeleton {
        name: name.to_owned(),
        language,
        world,
        path: dir.to_owned(),
        files: files.iter().map(|(p, _)| p.clone()).collect(),
        build: format!("sh {shown}/build.sh"),
        test: format!("vmguest Test-Plugin -Manifest {shown}/{name}.toml"),
        install: format!("vmguest Install-Plugin -Path {shown}/{name}.wasm -Name {name}"),
    };
    if what_if {
        return Ok(skeleton);
    }
    let readme_text = readme(&skeleton, language, world);
    let write = |rel: &str, text: &str| -> std::io::Result<()> {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text)
    };
    files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .chain([("README.md", readme_text.as_str())])
        .try_for_each(|(p, t)| write(p, t))
        .map_err(|e| refuse(format!("writing the skeleton into {shown}: {e}")))?;
    let mut skeleton = skeleton;
    skeleton.files.push("README.md".into());
    Ok(skeleton)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [(Language, World); 6] = [
        (Language::Rust, World::Policy),
        (Language::Rust, World::Hooks),
        (Language::Python, World::Policy),
        (Language::Python, World::Hooks),
        (Language::Js, World::Policy),
        (Language::Js, World::Hooks),
    ];

    #[test]
    fn every_skeleton_names_its_world_and_component_consistently() {
        for (language, world) in ALL {
            let files = files("my-plugin", language, world);
            let text = |p: &str| &files.iter().find(|(f, _)| f == p).unwrap().1;
            assert!(text("my-plugin.toml").contains("component = \"my-plugin.wasm\""));
            assert!(text("wit/plugin.wit").contains("package vmguest:plugin@0.2.0;"));
            let all: String = files.iter().map(|(_, t)| t.as_str()).collect();
            assert!(
                !all.contains("{{"),
                "{language:?} {world:?}: a placeholder is left"
            );
            let world_named = match language {
                Language::Rust => format!("world: \"{}\"", world.as_str()),
                Language::Python => format!("-w {} componentize", world.as_str()),
                Language::Js => format!("-n {} ", world.as_str()),
            };
            assert!(all.contains(&world_named), "{language:?} {world:?}");
        }
    }

    #[test]
    fn a_bad_name_or_an_occupied_directory_is_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let e = create(
            "My Plugin",
            Language::Rust,
            World::Policy,
            dir.path(),
            false,
            false,
        )
        .unwrap_err();
        assert_eq!(e.hresult, HResult::DispException);
        std::fs::write(dir.path().join("keep.txt"), "mine").unwrap();
        let e = create("ok", Language::Js, World::Hooks, dir.path(), false, false).unwrap_err();
        assert!(format!("{:#}", e.error).contains("is not empty"), "{e:?}");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }
}
