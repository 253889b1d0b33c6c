//! The code's shape, checked: in every crate the top-level modules form layers (no
//! module uses one that uses it back, directly or through others; a directory's files
//! count as one module), and the queue core knows no domain (its crates neither depend
//! on the deployment crates nor name them).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every crate of the workspace, by its folder.
const CRATES: &[&str] = &[
    "shared",
    "shared/deployment",
    "producer",
    "producer/cli",
    "producer/http",
    "worker",
    "worker/deployment",
    "bench",
];

/// The queue core's crates, and what they must not name.
const CORE: &[&str] = &["shared", "producer", "worker"];
const DOMAIN_NAMES: &[&str] = &["lc-deployment", "lc_deployment"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

/// The `.rs` files under a crate's `src`, with the top-level module each belongs to
/// (`lib`, `main` and `bin` are the crate's roots, not modules).
fn sources(krate: &str) -> Vec<(String, PathBuf)> {
    let src = root().join(krate).join("src");
    let mut found = Vec::new();
    let mut pending = vec![src.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("src is readable").flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|ext| ext != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&src).expect("under src");
            let top = relative
                .components()
                .next()
                .map(|part| {
                    let name = part.as_os_str().to_string_lossy();
                    name.trim_end_matches(".rs").to_owned()
                })
                .unwrap_or_default();
            found.push((top, path));
        }
    }
    found
}

/// The top-level modules that `text` names with `crate::` (also inside `crate::{...}`).
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        if at > 0 && text[..at].ends_with('$') {
            continue; // `$crate::` in a macro names the crate that defines it
        }
        let rest = &text[at + "crate::".len()..];
        let listed: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => group
                .split('}')
                .next()
                .unwrap_or("")
                .split(',')
                .map(|item| item.trim().split("::").next().unwrap_or(""))
                .collect(),
            None => vec![
                rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or(""),
            ],
        };
        for name in listed {
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

/// The text without its comment lines: a doc link is no import.
fn code_only(text: &str) -> String {
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Top-level module → the top-level modules it uses.
fn module_graph(krate: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (top, path) in sources(krate) {
        if ["lib", "main", "bin"].contains(&top.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable");
        let uses = graph.entry(top.clone()).or_default();
        uses.extend(
            named_modules(&code_only(&text))
                .into_iter()
                .filter(|name| *name != top),
        );
    }
    graph
}

/// A path from a module back to itself, if there is one.
fn find_circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    for start in graph.keys() {
        let mut stack: Vec<Vec<String>> = vec![vec![start.clone()]];
        let mut seen = BTreeSet::new();
        while let Some(path) = stack.pop() {
            let last = path.last().expect("non-empty").clone();
            for next in graph.get(&last).into_iter().flatten() {
                if next == start {
                    let mut circle = path.clone();
                    circle.push(start.clone());
                    return Some(circle);
                }
                if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push(longer);
                }
            }
        }
    }
    None
}

#[test]
fn no_crate_has_an_import_circle() {
    for krate in CRATES {
        let graph = module_graph(krate);
        assert!(
            !graph.is_empty() || krate.ends_with("cli") || *krate == "bench",
            "{krate}: no modules found"
        );
        if let Some(circle) = find_circle(&graph) {
            panic!("{krate}: module circle {}", circle.join(" -> "));
        }
    }
}

#[test]
fn the_checker_finds_a_circle() {
    let graph = BTreeMap::from([
        ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
        ("b".to_owned(), BTreeSet::from(["c".to_owned()])),
        ("c".to_owned(), BTreeSet::from(["a".to_owned()])),
    ]);
    assert!(find_circle(&graph).is_some());
    assert_eq!(
        named_modules("use crate::{store::Store, job};\nlet x = crate::kind::Kinds::empty();"),
        BTreeSet::from(["job".to_owned(), "kind".to_owned(), "store".to_owned()])
    );
}

#[test]
fn the_queue_core_knows_no_domain() {
    for krate in CORE {
        let manifest = std::fs::read_to_string(root().join(krate).join("Cargo.toml"))
            .expect("Cargo.toml is readable");
        for name in DOMAIN_NAMES {
            assert!(
                !manifest.contains(name),
                "{krate}/Cargo.toml depends on the domain ({name})"
            );
        }
        for (_, path) in sources(krate) {
            let text = std::fs::read_to_string(&path).expect("readable");
            // Comments may point to the domain as an example; code may not use it.
            let code = text
                .lines()
                .filter(|line| !line.trim_start().starts_with("//"));
            for line in code {
                for name in DOMAIN_NAMES {
                    assert!(
                        !line.contains(name),
                        "{} names the domain ({name}): {line}",
                        path.display()
                    );
                }
            }
        }
    }
}
