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
/// In a top-level module's own file (`x.rs`, `x/mod.rs`) `super::` is the crate root,
/// so there `super::` counts too; deeper down it is a module of the same directory.
fn named_modules(text: &str, top_level: bool) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let prefixes: &[&str] = if top_level {
        &["crate::", "super::"]
    } else {
        &["crate::"]
    };
    for prefix in prefixes {
        for (at, _) in text.match_indices(prefix) {
            let before = text[..at].chars().next_back();
            if before.is_some_and(|c| c == '$' || c == ':' || c == '_' || c.is_alphanumeric()) {
                continue; // `$crate::` in a macro names the crate that defines it
            }
            names.extend(listed_names(&text[at + prefix.len()..]));
        }
    }
    names
}

/// The first path segments after `crate::` or `super::`: one name, or each item of a
/// `{...}` group; only lowercase names (modules, not types or constants).
fn listed_names(rest: &str) -> Vec<String> {
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
    listed
        .into_iter()
        .filter(|name| !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .map(str::to_owned)
        .collect()
}

/// The text without its comment lines: a doc link is no import.
fn code_only(text: &str) -> String {
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Top-level module → the top-level modules it uses. A name that is no top-level
/// module (a function of the root that `super::` reaches from a file's inline tests
/// module) is left out.
fn module_graph(krate: &str) -> BTreeMap<String, BTreeSet<String>> {
    let src = root().join(krate).join("src");
    let files = sources(krate);
    let modules: BTreeSet<&str> = files.iter().map(|(top, _)| top.as_str()).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (top, path) in &files {
        if ["lib", "main", "bin"].contains(&top.as_str()) {
            continue;
        }
        let relative = path.strip_prefix(&src).expect("under src");
        let top_level =
            relative.components().count() == 1 || relative.ends_with(Path::new(top).join("mod.rs"));
        let text = std::fs::read_to_string(path).expect("readable");
        let uses = graph.entry(top.clone()).or_default();
        uses.extend(
            named_modules(&code_only(&text), top_level)
                .into_iter()
                .filter(|name| name != top && modules.contains(name.as_str())),
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
        // A binary's crate may be its root alone (lc-cli's, the bench's, `lc-worker`'s).
        let roots_only = krate.ends_with("cli") || ["bench", "worker/deployment"].contains(krate);
        assert!(!graph.is_empty() || roots_only, "{krate}: no modules found");
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
        named_modules(
            "use crate::{store::Store, job};\nlet x = crate::kind::Kinds::empty();",
            false
        ),
        BTreeSet::from(["job".to_owned(), "kind".to_owned(), "store".to_owned()])
    );
    // In a top-level file `super::` is the crate root (plan.rs once reached the kinds
    // this way); in a file deeper down, and in `$crate::`, it is not.
    let text = "use super::{kinds::Deploy, Spec};\nuse super::store::Store;\n$crate::job::x();";
    assert_eq!(
        named_modules(text, true),
        BTreeSet::from(["kinds".to_owned(), "store".to_owned()])
    );
    assert!(named_modules(text, false).is_empty());
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
