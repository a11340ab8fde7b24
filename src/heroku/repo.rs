//! What the repository says about building the app: its language and package manager (by its
//! lockfiles), its build scripts, an image of its own (a Dockerfile, heroku.yml), the formation
//! app.json declares, and whether it runs on ARM64 (Fargate's cheaper architecture, the
//! default) or says otherwise. Each fact names the file it came from.

use std::path::Path;

/// One fact and the file it came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Fact {
    pub what: String,
    pub value: String,
    pub from: String,
}

/// The repository's facts, what they disagree on, and the architecture with its reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Build {
    pub facts: Vec<Fact>,
    pub disagreements: Vec<String>,
    /// "arm64" or "x86_64", and why.
    pub architecture: (String, String),
    /// app.json's formation: type → (quantity, size).
    #[serde(skip)]
    pub declared_formation: Vec<(String, Option<u64>, Option<String>)>,
    /// What builds the image, as the Dockerfile generator needs it.
    pub toolchain: Toolchain,
    /// app.json's `cron` entries (the convention Dokku reads): (schedule, command).
    #[serde(skip)]
    pub cron: Vec<(String, String)>,
}

/// What builds the app, typed: its main ecosystem, package manager, runtime version (and the
/// file that says it), build script, framework, and an image of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Toolchain {
    /// "Node.js", "Ruby" or "Python": the last of Heroku's official buildpacks that the
    /// repository has a lockfile for (the one whose process types Heroku uses), else the first
    /// lockfile's.
    pub ecosystem: Option<String>,
    /// npm, yarn, pnpm, Bundler, Poetry, uv, Pipenv or pip.
    pub manager: Option<String>,
    /// The runtime's version and the file that says it.
    pub version: Option<(String, String)>,
    /// package.json's script Heroku runs after installing: `heroku-postbuild` if present (it
    /// replaces `build`), else `build`.
    pub node_build: Option<String>,
    /// "rails" or "django".
    pub framework: Option<String>,
    /// A package.json beside a Ruby or Python app (assets built with Node).
    pub node_assets: bool,
    /// "Dockerfile" or "heroku.yml": the app builds its own image.
    pub own_image: Option<String>,
    /// Yarn 2 or later (a .yarnrc.yml): installed through corepack, not the image's Yarn 1.
    pub yarn_berry: bool,
}

/// Lockfiles: the file, its ecosystem, its package manager.
const LOCKFILES: &[(&str, &str, &str)] = &[
    ("pnpm-lock.yaml", "Node.js", "pnpm"),
    ("yarn.lock", "Node.js", "yarn"),
    ("package-lock.json", "Node.js", "npm"),
    ("Gemfile.lock", "Ruby", "Bundler"),
    ("poetry.lock", "Python", "Poetry"),
    ("uv.lock", "Python", "uv"),
    ("Pipfile.lock", "Python", "Pipenv"),
    ("requirements.txt", "Python", "pip"),
];

/// The Heroku buildpack of each ecosystem.
const BUILDPACKS: &[(&str, &str)] = &[
    ("Node.js", "heroku/nodejs"),
    ("Ruby", "heroku/ruby"),
    ("Python", "heroku/python"),
];

fn fact(what: &str, value: impl Into<String>, from: &str) -> Fact {
    Fact {
        what: what.to_string(),
        value: value.into(),
        from: from.to_string(),
    }
}

/// Reads `dir`; `buildpacks` are the API's, to compare with.
pub fn read(dir: &Path, buildpacks: &[String]) -> Build {
    let mut b = Build {
        architecture: (
            "arm64".to_string(),
            "Fargate's ARM64 (Graviton) by default: nothing in the repository says otherwise"
                .to_string(),
        ),
        ..Build::default()
    };
    let has = |f: &str| dir.join(f).is_file();
    let found: Vec<&(&str, &str, &str)> = LOCKFILES.iter().filter(|(f, _, _)| has(f)).collect();
    let mut ecosystems: Vec<&str> = Vec::new();
    for (file, ecosystem, manager) in &found {
        b.facts.push(fact(
            "package manager",
            format!("{manager} ({ecosystem})"),
            file,
        ));
        if !ecosystems.contains(ecosystem) {
            ecosystems.push(ecosystem);
        }
    }
    for ecosystem in &ecosystems {
        let managers: Vec<&str> = found
            .iter()
            .filter(|(_, e, _)| e == ecosystem)
            .map(|(f, _, _)| *f)
            .collect();
        // requirements.txt beside another Python lockfile is common (an export): not a conflict.
        let real: Vec<&&str> = managers
            .iter()
            .filter(|f| **f != "requirements.txt")
            .collect();
        if real.len() > 1 {
            b.disagreements.push(format!(
                "{ecosystem}: more than one lockfile ({}): which package manager builds the app?",
                managers.join(", ")
            ));
        }
        if let Some((_, pack)) = BUILDPACKS.iter().find(|(e, _)| e == ecosystem) {
            if !buildpacks.is_empty() && !buildpacks.iter().any(|p| p.contains(pack)) {
                b.disagreements.push(format!(
                    "the repository is {ecosystem} (its lockfile), but Heroku builds it without {pack} (buildpacks: {})",
                    buildpacks.join(", ")
                ));
            }
        }
    }
    // Build scripts.
    if let Ok(text) = std::fs::read_to_string(dir.join("package.json")) {
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) {
            for script in ["heroku-postbuild", "build"] {
                if let Some(cmd) = json["scripts"][script].as_str() {
                    b.facts.push(fact(
                        &format!("build script `{script}`"),
                        cmd,
                        "package.json",
                    ));
                }
            }
        }
    }
    if has("bin/rails") || has("config/application.rb") {
        b.facts.push(fact(
            "assets",
            "Rails: bin/rails assets:precompile in the image (a dummy SECRET_KEY_BASE)",
            "bin/rails",
        ));
    }
    if has("manage.py") {
        b.facts.push(fact(
            "assets",
            "Django: python manage.py collectstatic --noinput in the image",
            "manage.py",
        ));
    }
    // An image of its own.
    if has("Dockerfile") {
        b.facts.push(fact(
            "image",
            "the app's own Dockerfile, kept",
            "Dockerfile",
        ));
    }
    if has("heroku.yml") {
        b.facts
            .push(fact("image", "heroku.yml's build, kept", "heroku.yml"));
    }
    // app.json's formation.
    if let Ok(text) = std::fs::read_to_string(dir.join("app.json")) {
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(json) => {
                if let Some(f) = json["formation"].as_object() {
                    for (kind, v) in f {
                        b.declared_formation.push((
                            kind.clone(),
                            v["quantity"].as_u64(),
                            v["size"].as_str().map(str::to_string),
                        ));
                    }
                }
            }
            Err(e) => b
                .disagreements
                .push(format!("app.json does not read as JSON ({e}): not used")),
        }
    }
    // ARM64 unless something says otherwise.
    if let Ok(lock) = std::fs::read_to_string(dir.join("Gemfile.lock")) {
        let platforms: Vec<&str> = lock
            .split("\nPLATFORMS\n")
            .nth(1)
            .map(|rest| {
                rest.lines()
                    .take_while(|l| l.starts_with("  "))
                    .map(str::trim)
                    .collect()
            })
            .unwrap_or_default();
        let arm = platforms
            .iter()
            .any(|p| *p == "ruby" || p.starts_with("aarch64") || p.starts_with("arm64"));
        if !platforms.is_empty() && !arm {
            b.architecture = (
                "x86_64".to_string(),
                format!(
                    "Gemfile.lock locks only {} (native gems built for x86_64): run `bundle lock --add-platform aarch64-linux` to move to ARM64",
                    platforms.join(", ")
                ),
            );
        }
    }
    b.toolchain = toolchain(dir, &found, buildpacks);
    if let Ok(text) = std::fs::read_to_string(dir.join("app.json")) {
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) {
            for job in json["cron"].as_array().into_iter().flatten() {
                if let (Some(schedule), Some(command)) =
                    (job["schedule"].as_str(), job["command"].as_str())
                {
                    b.cron.push((schedule.to_string(), command.to_string()));
                }
            }
        }
    }
    let official = |p: &str| {
        p.starts_with("heroku/")
            || p.contains("buildpack-registry.s3.amazonaws.com/buildpacks/heroku/")
    };
    let custom: Vec<&String> = buildpacks.iter().filter(|p| !official(p)).collect();
    if !custom.is_empty() && b.architecture.0 == "arm64" {
        b.architecture.1 = format!(
            "ARM64 by default, but a buildpack outside Heroku's own ({}) may install x86_64 binaries: check it, or run on x86_64",
            custom.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    b
}

/// The first line of a file, trimmed, if it has one.
fn first_line(dir: &Path, file: &str) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(file)).ok()?;
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    Some(line.to_string())
}

/// The leading `major.minor` (or `major`) of a version requirement: "20.x" → "20",
/// ">=3.12.1" → "3.12", "ruby-3.3.0" → "3.3".
pub fn major_minor(text: &str, parts: usize) -> Option<String> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let numbers: Vec<&str> = text[start..]
        .split(|c: char| !c.is_ascii_digit())
        .take_while(|p| !p.is_empty())
        .take(parts)
        .collect();
    (!numbers.is_empty()).then(|| numbers.join("."))
}

fn toolchain(dir: &Path, found: &[&(&str, &str, &str)], buildpacks: &[String]) -> Toolchain {
    let has = |f: &str| dir.join(f).is_file();
    let mut t = Toolchain::default();
    // Heroku runs the last buildpack's process types: its ecosystem is the app's.
    let by_buildpack = buildpacks.iter().rev().find_map(|p| {
        BUILDPACKS
            .iter()
            .find(|(e, pack)| p.contains(pack) && found.iter().any(|(_, fe, _)| fe == e))
            .map(|(e, _)| *e)
    });
    let priority = ["Ruby", "Python", "Node.js"];
    let ecosystem = by_buildpack.or_else(|| {
        priority
            .iter()
            .copied()
            .find(|e| found.iter().any(|(_, fe, _)| fe == e))
    });
    t.ecosystem = ecosystem.map(str::to_string);
    // The lockfile that is not an export (requirements.txt beside poetry.lock is one).
    t.manager = found
        .iter()
        .filter(|(_, e, _)| Some(*e) == ecosystem)
        .find(|(f, _, _)| *f != "requirements.txt")
        .or_else(|| found.iter().find(|(_, e, _)| Some(*e) == ecosystem))
        .map(|(_, _, m)| m.to_string());
    let package_json = std::fs::read_to_string(dir.join("package.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    if let Some(json) = &package_json {
        t.node_build = ["heroku-postbuild", "build"]
            .into_iter()
            .find(|s| json["scripts"][s].is_string())
            .map(str::to_string);
    }
    t.node_assets = ecosystem != Some("Node.js") && package_json.is_some();
    t.version = match ecosystem {
        Some("Node.js") => first_line(dir, ".node-version")
            .or_else(|| first_line(dir, ".nvmrc"))
            .and_then(|v| major_minor(&v, 1))
            .map(|v| (v, ".node-version or .nvmrc".to_string()))
            .or_else(|| {
                package_json
                    .as_ref()
                    .and_then(|j| {
                        j["engines"]["node"]
                            .as_str()
                            .and_then(|v| major_minor(v, 1))
                    })
                    .map(|v| (v, "package.json engines.node".to_string()))
            }),
        Some("Python") => first_line(dir, ".python-version")
            .and_then(|v| major_minor(&v, 2))
            .map(|v| (v, ".python-version".to_string()))
            .or_else(|| {
                first_line(dir, "runtime.txt")
                    .and_then(|v| major_minor(&v, 2))
                    .map(|v| (v, "runtime.txt".to_string()))
            }),
        Some("Ruby") => first_line(dir, ".ruby-version")
            .and_then(|v| major_minor(&v, 2))
            .map(|v| (v, ".ruby-version".to_string()))
            .or_else(|| {
                std::fs::read_to_string(dir.join("Gemfile"))
                    .ok()
                    .and_then(|g| {
                        g.lines()
                            .map(str::trim)
                            .find(|l| l.starts_with("ruby "))
                            .and_then(|l| major_minor(l, 2))
                            .map(|v| (v, "Gemfile".to_string()))
                    })
            }),
        _ => None,
    };
    if has("bin/rails") || has("config/application.rb") {
        t.framework = Some("rails".to_string());
    } else if has("manage.py") {
        t.framework = Some("django".to_string());
    }
    t.yarn_berry = has(".yarnrc.yml");
    t.own_image = if has("Dockerfile") {
        Some("Dockerfile".to_string())
    } else if has("heroku.yml") {
        Some("heroku.yml".to_string())
    } else {
        None
    };
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repository_says_its_package_manager_build_and_architecture() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let write = |f: &str, t: &str| {
            let path = dir.path().join(f);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{e}"));
            }
            std::fs::write(path, t).unwrap_or_else(|e| panic!("{e}"));
        };
        write(
            "Gemfile.lock",
            "GEM\n  specs:\n\nPLATFORMS\n  x86_64-linux\n\nDEPENDENCIES\n",
        );
        write("bin/rails", "#!/usr/bin/env ruby\n");
        write("yarn.lock", "");
        write("package-lock.json", "{}");
        write(
            "package.json",
            "{\"scripts\": {\"build\": \"esbuild app.js\"}}",
        );
        write(
            "app.json",
            "{\"formation\": {\"web\": {\"quantity\": 2, \"size\": \"standard-2x\"}}}",
        );
        let b = read(dir.path(), &["heroku/ruby".to_string()]);
        let said = |what: &str, value: &str, from: &str| {
            b.facts
                .iter()
                .any(|f| f.what == what && f.value == value && f.from == from)
        };
        assert!(
            said("package manager", "Bundler (Ruby)", "Gemfile.lock"),
            "{b:#?}"
        );
        assert!(said(
            "build script `build`",
            "esbuild app.js",
            "package.json"
        ));
        assert!(b.facts.iter().any(|f| f.from == "bin/rails"));
        assert!(b
            .disagreements
            .iter()
            .any(|d| d.contains("more than one lockfile (yarn.lock, package-lock.json)")));
        assert!(b
            .disagreements
            .iter()
            .any(|d| d.contains("Heroku builds it without heroku/nodejs")));
        assert_eq!(b.architecture.0, "x86_64");
        assert!(b
            .architecture
            .1
            .contains("bundle lock --add-platform aarch64-linux"));
        assert_eq!(
            b.declared_formation,
            [("web".to_string(), Some(2), Some("standard-2x".to_string()))]
        );
        let empty = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let none = read(empty.path(), &[]);
        assert_eq!(none.architecture.0, "arm64");
        assert!(none.facts.is_empty());
    }
}
