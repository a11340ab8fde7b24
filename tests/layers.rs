//! The module graph keeps the shape ARCHITECTURE.md draws: no import circle between files,
//! and no module importing what its layer must never import. Read from the sources' own
//! `crate::` and `super::` paths (test code left out), so it needs nothing but the tree.
//!
//! To see it fail: add `use crate::engine::Engine;` to src/journal/fold.rs and run
//! `cargo test --test layers`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each top-level module of the library must never import (ARCHITECTURE.md, "Code map").
const NEVER: &[(&str, &[&str])] = &[
    // Approvals judged: bindings, principals, the tally; identities come in verified.
    (
        "approval",
        &[
            "actions",
            "cost",
            "engine",
            "journal",
            "runbook",
            "state",
            "status",
            "tui",
            "window",
            "workspace",
        ],
    ),
    // The leaves: anyone may use them, they use none of the rest.
    (
        "clock",
        &[
            "actions",
            "cost",
            "engine",
            "journal",
            "redact",
            "runbook",
            "state",
            "status",
            "tui",
            "window",
            "workspace",
        ],
    ),
    (
        "aws_error",
        &[
            "actions",
            "clock",
            "cost",
            "engine",
            "journal",
            "redact",
            "runbook",
            "state",
            "status",
            "tui",
            "window",
            "workspace",
        ],
    ),
    (
        "redact",
        &[
            "actions",
            "cost",
            "engine",
            "journal",
            "runbook",
            "state",
            "status",
            "tui",
            "window",
            "workspace",
        ],
    ),
    (
        "actor",
        &[
            "actions", "cost", "engine", "journal", "runbook", "state", "status", "tui", "window",
        ],
    ),
    (
        "cost",
        &[
            "actions", "engine", "journal", "runbook", "state", "status", "tui", "window",
        ],
    ),
    (
        "workspace",
        &[
            "actions", "engine", "journal", "runbook", "state", "status", "tui", "window",
        ],
    ),
    // Reading a Heroku app for `init`: the API and the repository, nothing of a migration.
    (
        "heroku",
        &[
            "actions",
            "cost",
            "engine",
            "journal",
            "runbook",
            "state",
            "status",
            "tui",
            "window",
            "workspace",
        ],
    ),
    // The soak's evidence: parsing and counting traffic, nothing of where it comes from.
    (
        "soak",
        &[
            "actions",
            "cost",
            "engine",
            "heroku",
            "journal",
            "runbook",
            "state",
            "status",
            "tui",
            "window",
            "workspace",
        ],
    ),
    // The runbook is data: it knows nothing of running it or of what was run.
    (
        "runbook",
        &[
            "actions", "engine", "journal", "state", "status", "tui", "window",
        ],
    ),
    // The journal records; it never runs anything, nor knows where it is kept beyond its store.
    (
        "journal",
        &["actions", "engine", "state", "status", "tui", "window"],
    ),
    // Actions report events; they never write the journal, drive the engine or draw.
    (
        "actions",
        &["engine", "journal", "state", "status", "tui", "window"],
    ),
    ("status", &["actions", "engine", "state", "tui"]),
    ("window", &["actions", "engine", "state", "tui"]),
    // The state backends keep the journal and the lock elsewhere; they run nothing.
    ("state", &["actions", "engine", "status", "tui"]),
    // The engine has no UI.
    ("engine", &["state", "tui"]),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every library source file (the binary's `cli/` and `main.rs` are front ends, above all).
fn files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&src(), &mut out);
    out.retain(|p| {
        let rel = p.strip_prefix(src()).unwrap();
        !rel.starts_with("cli")
            && rel != Path::new("main.rs")
            && rel.file_name().is_some_and(|n| n != "tests.rs")
    });
    out.sort();
    out
}

/// The module path of a file: src/actions/db/copy.rs → ["actions", "db", "copy"].
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
        parts.pop();
    }
    parts
}

/// The file that defines a module path, if any: the longest prefix of `path` that is a file.
fn file_of(path: &[String]) -> Option<PathBuf> {
    (1..=path.len()).rev().find_map(|n| {
        let base = path[..n].iter().fold(src(), |p, part| p.join(part));
        [base.with_extension("rs"), base.join("mod.rs")]
            .into_iter()
            .find(|f| f.is_file())
    })
}

/// The source without test code: `#[cfg(test)]` items (a test module is the file's last item).
fn without_tests(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |at| &text[..at])
}

/// Expands a `use` tree (`a::{b, c::{d, e}}`) into its paths.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    match tree.find('{') {
        None => vec![tree.split(" as ").next().unwrap_or(tree).trim().to_string()],
        Some(open) => {
            let prefix = &tree[..open];
            let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
            let mut parts = Vec::new();
            let (mut depth, mut start) = (0, 0);
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        parts.push(&inner[start..i]);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            parts.push(&inner[start..]);
            parts
                .into_iter()
                .filter(|p| !p.trim().is_empty())
                .flat_map(expand)
                .map(|p| format!("{prefix}{p}"))
                .collect()
        }
    }
}

/// The module paths a file refers to, made absolute (`super::x` resolved against its module).
fn references(file: &Path) -> BTreeSet<Vec<String>> {
    let text = std::fs::read_to_string(file).unwrap();
    let text = without_tests(&text);
    let module = module_of(file);
    let mut paths = Vec::new();
    // `use` statements (their trees expanded), then paths written inline.
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let line = line.trim_start();
        let line = line
            .strip_prefix("pub(crate) ")
            .or_else(|| line.strip_prefix("pub(super) "))
            .or_else(|| line.strip_prefix("pub "))
            .unwrap_or(line);
        let Some(tree) = line.strip_prefix("use ") else {
            continue;
        };
        let mut statement = tree.to_string();
        while !statement.contains(';') {
            match lines.next() {
                Some(more) => statement.push_str(more),
                None => break,
            }
        }
        paths.extend(expand(statement.split(';').next().unwrap_or_default()));
    }
    let inline = regex_lite(text);
    paths.extend(inline);
    let mut out = BTreeSet::new();
    for path in paths {
        let parts: Vec<&str> = path.split("::").map(str::trim).collect();
        let absolute: Vec<String> = match parts.first() {
            Some(&"crate") => parts[1..].iter().map(|s| s.to_string()).collect(),
            Some(&"super") => {
                let mut base = module.clone();
                let mut i = 0;
                // A file's `super` is its parent module; a mod.rs is its own module.
                while parts.get(i) == Some(&"super") {
                    base.pop();
                    i += 1;
                }
                base.extend(parts[i..].iter().map(|s| s.to_string()));
                base
            }
            _ => continue,
        };
        if !absolute.is_empty() {
            out.insert(absolute);
        }
    }
    out
}

/// `crate::a::b` and `super::a` paths written inside code (not in `use`).
fn regex_lite(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(at) = text[from..].find(start) {
            let at = from + at;
            let boundary = at == 0 || {
                let b = text.as_bytes()[at - 1];
                !(b.is_ascii_alphanumeric() || b == b'_' || b == b':')
            };
            let end = text[at..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .map_or(text.len(), |e| at + e);
            if boundary {
                out.push(text[at..end].trim_end_matches(':').to_string());
            }
            from = end.max(at + start.len());
        }
    }
    out
}

/// file → the files it imports from (itself and its own ancestors left out: a child module's
/// `super::` is its parent's own scope, not a dependency).
fn graph() -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let mut graph = BTreeMap::new();
    for file in files() {
        let own = module_of(&file);
        let mut to = BTreeSet::new();
        for path in references(&file) {
            let Some(target) = file_of(&path) else {
                continue;
            };
            let target_module = module_of(&target);
            if target == file || own.starts_with(&target_module) {
                continue;
            }
            to.insert(target);
        }
        graph.insert(file, to);
    }
    graph
}

fn short(p: &Path) -> String {
    p.strip_prefix(src()).unwrap().display().to_string()
}

#[test]
fn no_file_imports_in_a_circle() {
    let graph = graph();
    // Tarjan's strongly connected components: any with two files or more is a circle.
    struct Tarjan<'a> {
        graph: &'a BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        index: BTreeMap<&'a PathBuf, usize>,
        low: BTreeMap<&'a PathBuf, usize>,
        stack: Vec<&'a PathBuf>,
        on: BTreeSet<&'a PathBuf>,
        next: usize,
        circles: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a PathBuf) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                if !self.graph.contains_key(w) {
                    continue;
                }
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    component.push(short(w));
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.circles.push(component);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph: &graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        circles: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    let described: Vec<String> = t
        .circles
        .iter()
        .map(|c| {
            let edges: Vec<String> = c
                .iter()
                .flat_map(|a| {
                    graph[&src().join(a)]
                        .iter()
                        .map(|b| short(b))
                        .filter(|b| c.contains(b))
                        .map(move |b| format!("{a} → {b}"))
                })
                .collect();
            format!("{} ({})", c.join(", "), edges.join("; "))
        })
        .collect();
    assert!(
        described.is_empty(),
        "import circles:\n{}",
        described.join("\n")
    );
}

#[test]
fn no_layer_imports_what_it_must_never_import() {
    let graph = graph();
    let top = |p: &Path| module_of(p).first().cloned().unwrap_or_default();
    let mut broken = Vec::new();
    for (file, targets) in &graph {
        let from = top(file);
        let Some((_, never)) = NEVER.iter().find(|(m, _)| *m == from) else {
            continue;
        };
        for target in targets {
            let to = top(target);
            if never.contains(&to.as_str()) {
                broken.push(format!(
                    "{} imports {} ({from} must never import {to})",
                    short(file),
                    short(target)
                ));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// The reader itself: it sees `use` trees and inline paths, and resolves `super`.
#[test]
fn the_reader_finds_imports_in_every_shape() {
    assert_eq!(
        expand("crate::{a::b, c::{d, e as f}}"),
        vec!["crate::a::b", "crate::c::d", "crate::c::e"]
    );
    let fold = src().join("journal/fold.rs");
    let refs = references(&fold);
    assert!(
        refs.iter()
            .any(|r| r.first().is_some_and(|m| m == "journal")),
        "super:: in journal/fold.rs resolves inside journal: {refs:?}"
    );
    let engine = graph()[&src().join("engine/mod.rs")].clone();
    assert!(
        engine.contains(&src().join("journal/mod.rs")),
        "the engine's journal import is seen: {engine:?}"
    );
}
