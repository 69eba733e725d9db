//! The domain's modules import each other without a circle: no module uses,
//! directly or through others, a module that uses it back. Read from the
//! source (every `crate::` path outside comments and `#[cfg(test)]` blocks,
//! root re-exports resolved to the module that defines the item), so that a
//! new import that closes a circle fails here, not in review.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Each module's source without comments and without its test blocks.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let text = fs::read_to_string(&path).unwrap();
        out.insert(name, code_of(&text));
    }
    out
}

/// The lines that are code: comments dropped, and everything from a
/// top-level `#[cfg(test)]` on (test modules close each file).
fn code_of(text: &str) -> String {
    let mut code = String::new();
    for line in text.lines() {
        if line.starts_with("#[cfg(test)]") {
            break;
        }
        let line = line.split("//").next().unwrap_or_default();
        code.push_str(line);
        code.push('\n');
    }
    code
}

/// The first path segment of every `crate::` path in `code`, with grouped
/// imports (`crate::{a::X, b}`) taken apart.
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap();
            for item in group[..end].split(',') {
                let first = item.trim().split("::").next().unwrap().trim();
                if !first.is_empty() {
                    out.push(first.to_owned());
                }
            }
        } else {
            let first: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push(first);
        }
    }
    out
}

/// Root re-exports: item name → the module it comes from (`pub use m::{…}`).
fn reexports(lib: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for statement in lib.split(';') {
        let Some(path) = statement.trim().strip_prefix("pub use ") else {
            continue;
        };
        let (module, items) = path.split_once("::").unwrap();
        let items = items.trim_matches(|c| c == '{' || c == '}' || char::is_whitespace(c));
        for item in items.split(',') {
            let item = item.trim();
            if !item.is_empty() {
                out.insert(item.to_owned(), module.to_owned());
            }
        }
    }
    out
}

fn graph(src: &Path) -> Graph {
    let modules = modules(src);
    let roots = reexports(&modules["lib"]);
    let mut graph = Graph::new();
    for (name, code) in &modules {
        if name == "lib" {
            continue;
        }
        let edges = graph.entry(name.clone()).or_default();
        for first in crate_paths(code) {
            let target = if modules.contains_key(&first) {
                first
            } else {
                roots
                    .get(&first)
                    .unwrap_or_else(|| panic!("{name}: crate::{first} is neither a module nor re-exported"))
                    .clone()
            };
            if &target != name {
                edges.insert(target);
            }
        }
    }
    graph
}

/// A circle through the graph, if there is one (depth-first search).
fn circle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_owned());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|start| visit(start, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_domain_modules_import_each_other_without_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = graph(&src);
    assert!(graph.len() > 10, "the modules were not read: {graph:?}");
    assert!(
        graph["gateway"].contains("routes"),
        "the imports were not read: {graph:?}"
    );
    if let Some(found) = circle(&graph) {
        panic!("the domain's modules import in a circle: {}", found.join(" → "));
    }
}

#[test]
fn the_check_finds_a_circle_and_reads_grouped_imports() {
    let edges = |pairs: &[(&str, &str)]| {
        let mut graph = Graph::new();
        for (from, to) in pairs {
            graph
                .entry((*from).to_owned())
                .or_default()
                .insert((*to).to_owned());
            graph.entry((*to).to_owned()).or_default();
        }
        graph
    };
    assert_eq!(circle(&edges(&[("a", "b"), ("b", "c")])), None);
    assert_eq!(
        circle(&edges(&[("a", "b"), ("b", "c"), ("c", "a")])).map(|c| c.len()),
        Some(4)
    );
    assert_eq!(
        crate_paths("use crate::{a::X, b};\nlet x = crate::c::f(); // crate::d\n"),
        ["a", "b", "c", "d"]
    );
    assert_eq!(
        code_of("use crate::a; // crate::b\n#[cfg(test)]\nuse crate::c;\n"),
        "use crate::a; \n"
    );
}
