//! The library's modules import each other without cycles, so each layer can be read,
//! tested and replaced on its own.
//!
//! Every `crate::…` and `super::…` path in the sources is an edge between the two
//! modules it joins, drawn where their paths part: `vm/libvirt/agent.rs` using
//! `crate::vm::agent` is an edge `vm::libvirt` → `vm::agent` among the children of `vm`.
//! So the top-level modules form one graph, and the children of each folder, at any
//! depth, form another. A folder's `mod.rs` is its facade and may use its children as
//! they use it, as in any Rust module tree. `lib.rs` is a node of the top-level graph:
//! its re-exports are its facade (a `crate::Name` path leads to the module `Name` comes
//! from); anything else in it is code like any module's. The binary is another crate.

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

/// The full paths after `prefix::`, expanding `{a, b::{c, d}}` at any depth; with the
/// name each is known by (`x as y` is known as `y`).
fn paths(text: &str, prefix: &str) -> Vec<(Vec<String>, String)> {
    fn tree(rest: &str, base: &[String], out: &mut Vec<(Vec<String>, String)>) {
        let mut path = base.to_vec();
        let mut rest = rest.trim_start();
        loop {
            if let Some(group) = rest.strip_prefix('{') {
                let (mut depth, mut start) = (0, 0);
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => {
                            tree(&group[start..i], &path, out);
                            return;
                        }
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            tree(&group[start..i], &path, out);
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
                return;
            }
            let seg: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if seg.is_empty() {
                break;
            }
            path.push(seg.clone());
            rest = &rest[seg.len()..];
            match rest.strip_prefix("::") {
                Some(r) => rest = r.trim_start(),
                None => break,
            }
        }
        let alias = rest
            .trim_start()
            .strip_prefix("as ")
            .map(|r| {
                r.trim_start()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .filter(|a| !a.is_empty());
        if path.len() > base.len() {
            let name = alias.unwrap_or_else(|| path.last().unwrap().clone());
            out.push((path, name));
        }
    }
    let mut out = Vec::new();
    let needle = format!("{prefix}::");
    let mut rest = text;
    while let Some(i) = rest.find(&needle) {
        let before = rest[..i].chars().last();
        rest = &rest[i + needle.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        tree(rest, &[], &mut out);
    }
    out
}

/// Only code counts: unit tests may reach anywhere, and comments import nothing.
fn code_of(text: &str) -> String {
    text.split("#[cfg(test)]")
        .next()
        .unwrap_or(text)
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `lib.rs` without its facade, the `pub use` re-exports.
fn without_reexports(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(i) = rest.find("pub use ") {
        out.push_str(&rest[..i]);
        rest = rest[i..].split_once(';').map_or("", |(_, r)| r);
    }
    out.push_str(rest);
    out
}

#[test]
fn modules_import_each_other_without_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    // lib.rs is the node `lib`, beside the top-level modules.
    let modules: Vec<(Vec<String>, String)> = files
        .iter()
        .map(|f| {
            (
                module_of(&src, f),
                code_of(&std::fs::read_to_string(f).unwrap()),
            )
        })
        .collect();
    let known: BTreeSet<Vec<String>> = modules.iter().map(|(m, _)| m.clone()).collect();
    let lib = vec!["lib".to_owned()];
    let lib_code = &modules.iter().find(|(m, _)| *m == lib).unwrap().1;
    let tops: Vec<String> = known
        .iter()
        .filter(|m| m.len() == 1 && **m != lib)
        .map(|m| m[0].clone())
        .collect();
    // A path leads into its longest known prefix, through lib.rs's re-exports; a name
    // lib.rs defines itself leads to `lib`.
    let reexports: BTreeMap<String, Vec<String>> = tops
        .iter()
        .flat_map(|t| paths(lib_code, t))
        .map(|(p, name)| (name, p))
        .collect();
    let resolve = |path: &[String]| -> Option<Vec<String>> {
        let path = match reexports.get(path.first()?) {
            Some(p) if !known.contains(&path[..1]) => p.as_slice(),
            _ => path,
        };
        let found = (1..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|p| known.contains(p));
        Some(found.unwrap_or_else(|| lib.clone()))
    };
    let mut top_graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut folder_graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, code) in &modules {
        let mut uses: Vec<Vec<String>> = Vec::new();
        if *module == lib {
            let code = without_reexports(code);
            for t in &tops {
                uses.extend(paths(&code, t).into_iter().map(|(p, _)| p));
            }
        }
        uses.extend(paths(code, "crate").into_iter().map(|(p, _)| p));
        for (mut p, _) in paths(code, "super") {
            // `super` is the parent of this file's module; each further `super` one up.
            let mut base = module[..module.len() - 1].to_vec();
            while p.first().is_some_and(|s| s == "super") {
                p.remove(0);
                base.pop();
            }
            uses.push(base.into_iter().chain(p).collect());
        }
        for used in uses {
            let Some(target) = resolve(&used) else {
                continue;
            };
            // A folder and its children are one unit: its mod.rs is their facade.
            if target.starts_with(module) || module.starts_with(&target) {
                continue;
            }
            let common = module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            let (from, to) = (module[..=common].join("::"), target[..=common].join("::"));
            let graph = if common == 0 {
                &mut top_graph
            } else {
                &mut folder_graph
            };
            graph.entry(from).or_default().insert(to);
        }
    }
    assert!(
        top_graph.len() > 5,
        "the scan found too few edges to mean anything: {top_graph:?}"
    );
    assert!(
        top_graph.values().flatten().any(|t| t == "virtual_pc"),
        "the scan missed the COM-shaped API's module: {top_graph:?}"
    );
    assert!(
        folder_graph.keys().any(|m| m.matches("::").count() == 2),
        "the scan found no edge among files two folders deep: {folder_graph:?}"
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
