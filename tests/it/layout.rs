//! The library's modules import each other without cycles, so each layer can be read,
//! tested and replaced on its own (issue 9).
//!
//! Two graphs are checked, both read from the `crate::…` and `super::…` paths in the
//! sources: the top-level modules (`operation`, `iso`, `plugin`, …), and the sibling
//! files inside each folder (`iso/family.rs`, `iso/recipe.rs`, …). A folder's `mod.rs`
//! is its facade and may use its children as they use it, as in any Rust module tree.
//! `lib.rs` and the binary sit above everything and are not part of the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().unwrap() != "bin" {
                sources(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `iso/family.rs` → ["iso", "family"]; `iso/mod.rs` → ["iso"].
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The first path segments after `prefix::`, expanding one level of `{a, b::c}`.
fn targets(text: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let needle = format!("{prefix}::");
    let mut rest = text;
    while let Some(i) = rest.find(&needle) {
        let before = rest[..i].chars().last();
        rest = &rest[i + needle.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // Split at the commas of this level only: `{iso::{self, X}, vm}`.
            let (mut depth, mut item) = (0, String::new());
            let mut items = Vec::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        items.push(std::mem::take(&mut item));
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            items.push(item);
            for item in items {
                let head = item.trim().split("::").next().unwrap_or("").trim();
                if !head.is_empty() {
                    out.push(head.to_owned());
                }
            }
        } else {
            let head: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push(head);
        }
    }
    out
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(n) {
            Some(2) => return None,
            Some(1) => {
                let from = stack.iter().position(|s| s == n).unwrap_or(0);
                let mut cycle = stack[from..].to_vec();
                cycle.push(n.to_owned());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(n.to_owned(), 1);
        stack.push(n.to_owned());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, g, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(n.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if let Some(c) = visit(n, graph, &mut state, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

#[test]
fn modules_import_each_other_without_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let modules: Vec<(Vec<String>, String)> = files
        .iter()
        .map(|f| (module_of(&src, f), std::fs::read_to_string(f).unwrap()))
        .filter(|(m, _)| m.first().is_some_and(|t| t != "lib"))
        .collect();
    let tops: BTreeSet<String> = modules.iter().map(|(m, _)| m[0].clone()).collect();
    let mut top_graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut folder_graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, text) in &modules {
        // Unit tests may reach anywhere, and comments import nothing: only code counts.
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap_or(text)
            .lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        let code = code.as_str();
        for t in targets(code, "crate") {
            if tops.contains(&t) && t != module[0] {
                top_graph
                    .entry(module[0].clone())
                    .or_default()
                    .insert(t.clone());
            }
            // crate::iso::reader from inside iso/ is a sibling edge too.
            if module.len() == 2 && t == module[0] {
                let inner = format!("crate::{}", module[0]);
                for s in targets(code, &inner) {
                    folder_edge(&mut folder_graph, &modules, module, &s);
                }
            }
        }
        if module.len() == 2 {
            for s in targets(code, "super") {
                folder_edge(&mut folder_graph, &modules, module, &s);
            }
        }
    }
    assert!(
        top_graph.len() > 5,
        "the scan found too few edges to mean anything: {top_graph:?}"
    );
    if let Some(c) = find_cycle(&top_graph) {
        panic!(
            "top-level modules import each other in a cycle: {}",
            c.join(" → ")
        );
    }
    if let Some(c) = find_cycle(&folder_graph) {
        panic!(
            "sibling modules import each other in a cycle: {}",
            c.join(" → ")
        );
    }
}

fn folder_edge(
    graph: &mut BTreeMap<String, BTreeSet<String>>,
    modules: &[(Vec<String>, String)],
    from: &[String],
    sibling: &str,
) {
    let exists = modules
        .iter()
        .any(|(m, _)| m.len() == 2 && m[0] == from[0] && m[1] == sibling);
    if exists && sibling != from[1] {
        graph
            .entry(from.join("::"))
            .or_default()
            .insert(format!("{}::{sibling}", from[0]));
    }
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(find_cycle(&g).unwrap(), ["a", "b", "c", "a"]);
    assert_eq!(
        targets(
            "use crate::{iso::{self, X}, vm};\nlet x = crate::kinds::A;",
            "crate"
        ),
        ["iso", "vm", "kinds"]
    );
}
