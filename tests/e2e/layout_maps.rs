//! The crates' `# Layout` maps: every crate root (`src/lib.rs`, `src/main.rs`) that declares
//! two or more modules has a `# Layout` section in its docs, and that map names every module
//! the file declares, so a new or renamed module cannot leave the map behind. (A map naming
//! a module that no longer exists already fails `cargo doc`, which scripts/test.sh runs with
//! warnings as errors: the maps' names are intra-doc links.) Folders' `mod.rs` files with a
//! `# Layout` section are held to the same rule. Not held to it: the end-to-end test binary
//! (`tests/e2e`, one module per concern, each saying what it tests) and modules named `tests`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

#[test]
fn every_layout_map_names_every_module_its_file_declares() -> anyhow::Result<()> {
    let root = repository_root();
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in module_files(&root)? {
        let text = std::fs::read_to_string(&file)?;
        let declared = declared_file_modules(&text);
        let is_crate_root = file
            .file_name()
            .is_some_and(|name| name == "lib.rs" || name == "main.rs");
        let shown = file.strip_prefix(&root).unwrap_or(&file).display();
        match layout_map_names(&text) {
            None if is_crate_root && declared.len() >= 2 => problems.push(format!(
                "{shown}: declares {} modules but has no `# Layout` section",
                declared.len()
            )),
            None => {}
            Some(named) => {
                checked += 1;
                let missing: Vec<_> = declared.difference(&named).cloned().collect();
                if !missing.is_empty() {
                    problems.push(format!(
                        "{shown}: its `# Layout` map leaves out {}",
                        missing.join(", ")
                    ));
                }
            }
        }
    }
    assert!(
        checked >= 10,
        "only {checked} layout maps found: is the search wrong?"
    );
    assert!(problems.is_empty(), "layout maps:\n{}", problems.join("\n"));
    Ok(())
}

#[test]
fn a_module_missing_from_the_map_is_found() {
    let text = "//! The crate.\n//!\n//! # Layout\n//! - [`config`]: flags.\n//! - [`store::orders`]: reads.\n//!\n//! # Other\n//! [`worker`] is named here, not in the map.\n\npub mod config;\nmod store;\npub(crate) mod worker;\n#[cfg(test)]\nmod tests;\n";
    assert_eq!(
        declared_file_modules(text),
        BTreeSet::from(["config".into(), "store".into(), "worker".into()])
    );
    assert_eq!(
        layout_map_names(text),
        Some(BTreeSet::from(["config".into(), "store".into()]))
    );
}

/// The crate roots and the folders' `mod.rs` files of the workspace and the plugins'
/// workspace (not `target/` folders, not the test fixtures' old plugin versions, not the
/// end-to-end test binary).
pub(super) fn module_files(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|name| name.to_str())
                .unwrap_or("");
            if path.is_dir() {
                if !name.starts_with('.') && !matches!(name, "target" | "fixtures" | "e2e") {
                    pending.push(path);
                }
            } else if matches!(name, "lib.rs" | "main.rs" | "mod.rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// The modules `text` declares in files of their own (`mod name;`, with any visibility).
pub(super) fn declared_file_modules(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let rest = line
                .strip_prefix("pub ")
                .or_else(|| line.strip_prefix("pub(crate) "))
                .unwrap_or(line);
            let name = rest.strip_prefix("mod ")?.strip_suffix(';')?;
            let name = name.trim();
            (name != "tests").then(|| name.to_string())
        })
        .collect()
}

/// The first path segment of each intra-doc link (`` [`name`] `` or `` [`name::item`] ``) in
/// the `# Layout` section of `text`'s inner docs, or `None` when it has no such section.
fn layout_map_names(text: &str) -> Option<BTreeSet<String>> {
    let docs: Vec<&str> = text
        .lines()
        .map_while(|line| line.strip_prefix("//!"))
        .collect();
    let start = docs.iter().position(|line| line.trim() == "# Layout")?;
    let section = docs[start + 1..]
        .iter()
        .take_while(|line| !line.trim_start().starts_with("# "));
    let mut names = BTreeSet::new();
    for line in section {
        for link in line.split("[`").skip(1) {
            if let Some((path, _)) = link.split_once("`]") {
                let first = path.split("::").next().unwrap_or(path);
                names.insert(first.to_string());
            }
        }
    }
    Some(names)
}

pub(super) fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}
