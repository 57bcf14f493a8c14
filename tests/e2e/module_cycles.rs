//! No module cycles: within each crate, the top-level modules (`src/<name>.rs` or
//! `src/<name>/`) depend on each other in layers, so each can be read, tested and moved with
//! what is below it only. A module depends on another when its code (not its comments or
//! docs, not its `#[cfg(test)] mod tests`) names `crate::<other>`, `crate::{<other>, ..}`
//! or, from a top-level file, `super::<other>`. The crates are the crate roots
//! [`super::layout_maps`] checks: the workspace's and the plugins' workspace's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::layout_maps::{declared_file_modules, module_files, repository_root};

/// A crate's top-level modules and the others each one names.
type ModuleGraph = BTreeMap<String, BTreeSet<String>>;

#[test]
fn no_crate_has_a_module_cycle() -> anyhow::Result<()> {
    let root = repository_root();
    let mut problems = Vec::new();
    let mut crates = 0;
    for file in module_files(&root)? {
        let is_crate_root = file
            .file_name()
            .is_some_and(|name| name == "lib.rs" || name == "main.rs");
        if !is_crate_root {
            continue;
        }
        crates += 1;
        let graph = module_graph(&file)?;
        for cycle in cycles(&graph) {
            let shown = file.strip_prefix(&root).unwrap_or(&file).display();
            problems.push(format!("{shown}: {}", describe(&graph, &cycle)));
        }
    }
    assert!(
        crates >= 10,
        "only {crates} crate roots found: is the search wrong?"
    );
    assert!(
        problems.is_empty(),
        "module cycles:\n{}",
        problems.join("\n")
    );
    Ok(())
}

#[test]
fn a_cycle_through_three_modules_is_found_and_a_layered_graph_passes() {
    let graph = |edges: &[(&str, &[&str])]| -> ModuleGraph {
        edges
            .iter()
            .map(|(from, to)| {
                let to = to.iter().map(|name| name.to_string()).collect();
                (from.to_string(), to)
            })
            .collect()
    };
    let layered = graph(&[
        ("http", &["store", "amqp"]),
        ("amqp", &["store"]),
        ("store", &[]),
    ]);
    assert!(cycles(&layered).is_empty());
    let cyclic = graph(&[
        ("control", &["azure"]),
        ("azure", &["faults"]),
        ("faults", &["control"]),
        ("state", &[]),
    ]);
    let found = cycles(&cyclic);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        found[0],
        BTreeSet::from(["azure".into(), "control".into(), "faults".into()])
    );
    assert_eq!(
        describe(&cyclic, &found[0]),
        "azure -> faults, control -> azure, faults -> control"
    );
}

#[test]
fn references_are_read_from_code_only() {
    let modules = BTreeSet::from([
        "store".to_string(),
        "amqp".into(),
        "http".into(),
        "webhooks".into(),
    ]);
    let text = "//! Docs naming [`crate::http`].\nuse crate::{store::Store, amqp};\n\
                fn f() { super::http::serve(); } // crate::http in a comment\n\
                const URL: &str = \"http://x\"; fn g() { crate::webhooks::send(); }\n\
                #[cfg(test)]\nmod tests {\n    use crate::http;\n}\n";
    assert_eq!(
        named_modules(text, &modules, true),
        BTreeSet::from([
            "store".to_string(),
            "amqp".into(),
            "http".into(),
            "webhooks".into()
        ])
    );
    assert_eq!(
        named_modules(text, &modules, false),
        BTreeSet::from(["store".to_string(), "amqp".into(), "webhooks".into()])
    );
}

/// The top-level modules of the crate whose root is `crate_root` and the others each names.
fn module_graph(crate_root: &Path) -> anyhow::Result<ModuleGraph> {
    let src = crate_root.parent().expect("a crate root is in a folder");
    let modules = declared_file_modules(&std::fs::read_to_string(crate_root)?);
    let mut graph = ModuleGraph::new();
    for module in &modules {
        let mut named = BTreeSet::new();
        for file in files_of(src, module)? {
            let top_level = file.parent() == Some(src) || file.ends_with("mod.rs");
            let text = std::fs::read_to_string(&file)?;
            named.extend(named_modules(&text, &modules, top_level));
        }
        named.remove(module);
        graph.insert(module.clone(), named);
    }
    Ok(graph)
}

/// The source files of `module` under `src`: `<module>.rs` and everything in `<module>/`
/// (without `tests.rs` files, which are test modules).
fn files_of(src: &Path, module: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let file = src.join(format!("{module}.rs"));
    if file.exists() {
        files.push(file);
    }
    let mut pending = vec![src.join(module)];
    while let Some(folder) = pending.pop() {
        if !folder.is_dir() {
            continue;
        }
        for entry in std::fs::read_dir(&folder)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") && !path.ends_with("tests.rs")
            {
                files.push(path);
            }
        }
    }
    Ok(files)
}

/// The names of `modules` that `text`'s code refers to through `crate::` (and through
/// `super::` when `top_level`: the file's parent is the crate root). Comments and the test
/// module (last in a file, as clippy requires) are left out.
fn named_modules(text: &str, modules: &BTreeSet<String>, top_level: bool) -> BTreeSet<String> {
    let mut code = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim();
        if trimmed == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|next| next.trim().starts_with("mod tests"))
        {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        // A comment after code follows a space; `//` inside a string (`"http://..."`) does not.
        let without_comment = line.split_once(" //").map_or(line, |(code, _)| code);
        code.push_str(without_comment);
        code.push('\n');
    }
    let mut named = BTreeSet::new();
    let mut prefixes = vec!["crate::"];
    if top_level {
        prefixes.push("super::");
    }
    for prefix in prefixes {
        for after in code.split(prefix).skip(1) {
            let names: Vec<&str> = match after.strip_prefix('{') {
                // `crate::{a, b::c}`: the first segment of each path in the group.
                Some(group) => group
                    .split('}')
                    .next()
                    .unwrap_or("")
                    .split(',')
                    .map(|path| path.trim().split("::").next().unwrap_or(""))
                    .collect(),
                None => vec![identifier_at_start(after)],
            };
            named.extend(
                names
                    .into_iter()
                    .filter(|name| modules.contains(*name))
                    .map(str::to_string),
            );
        }
    }
    named
}

fn identifier_at_start(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The cycles of `graph`: its strongly connected components of two or more modules.
fn cycles(graph: &ModuleGraph) -> Vec<BTreeSet<String>> {
    let reaches = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut pending = vec![from.to_string()];
        while let Some(module) = pending.pop() {
            for next in graph.get(&module).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    pending.push(next.clone());
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&str, BTreeSet<String>> = graph
        .keys()
        .map(|module| (module.as_str(), reaches(module)))
        .collect();
    let mut found: Vec<BTreeSet<String>> = Vec::new();
    for (module, reached) in &reach {
        let component: BTreeSet<String> = reached
            .iter()
            .filter(|other| reach[other.as_str()].contains(*module))
            .cloned()
            .collect();
        if component.len() >= 2 && !found.contains(&component) {
            found.push(component);
        }
    }
    found
}

/// The edges within `cycle`, `a -> b, ...`.
fn describe(graph: &ModuleGraph, cycle: &BTreeSet<String>) -> String {
    let mut edges = Vec::new();
    for module in cycle {
        for next in graph[module].intersection(cycle) {
            edges.push(format!("{module} -> {next}"));
        }
    }
    edges.join(", ")
}
