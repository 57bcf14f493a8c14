//! The documentation's links: every relative link in the README, the `docs/` book and the
//! other Markdown files a reader starts from names a file that exists, and every `#fragment`
//! names a heading of its target (as GitHub renders it), so a moved page or a renamed
//! section fails here instead of in a reader's browser. Links to other sites are not
//! followed (the tests run without the internet).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use pulldown_cmark::{Event, HeadingLevel, Parser, Tag, TagEnd};

/// The Markdown files a reader reaches from the README, besides the book in `docs/`.
const ENTRY_POINTS: &[&str] = &[
    "README.md",
    "BENCHMARKS.md",
    "plugins/README.md",
    "wit/README.md",
];

/// What one Markdown file holds for this check: its headings' anchors and its links.
struct Page {
    anchors: BTreeSet<String>,
    links: Vec<String>,
}

#[test]
fn every_relative_link_and_anchor_in_the_docs_resolves() -> anyhow::Result<()> {
    let root = repository_root();
    let mut files: Vec<PathBuf> = ENTRY_POINTS.iter().map(|file| root.join(file)).collect();
    for entry in std::fs::read_dir(root.join("docs"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|extension| extension == "md") {
            files.push(path);
        }
    }
    anyhow::ensure!(
        files.len() > ENTRY_POINTS.len(),
        "docs/ holds no Markdown page"
    );

    let mut pages: HashMap<PathBuf, Page> = HashMap::new();
    for file in &files {
        pages.insert(canonical(file)?, read_page(file)?);
    }
    let mut broken = Vec::new();
    for file in &files {
        let links = pages[&canonical(file)?].links.clone();
        for link in &links {
            if let Some(problem) = check_link(file, link, &mut pages)? {
                broken.push(format!(
                    "{}: {link}: {problem}",
                    file.strip_prefix(&root)?.display()
                ));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    Ok(())
}

/// The anchors GitHub gives headings, checked on a few shapes the docs use.
#[test]
fn heading_anchors_follow_github() {
    let page = parse_page(
        "# Tests, chaos runs and benchmarks\n## The `cache` (0.3)\n## Retries\n## Retries\n",
    );
    let expected = [
        "tests-chaos-runs-and-benchmarks",
        "the-cache-03",
        "retries",
        "retries-1",
    ];
    assert_eq!(
        page.anchors,
        expected.iter().map(|a| a.to_string()).collect()
    );
}

/// `None` when the link resolves; what is wrong otherwise. Pages outside `files` are read
/// when a link first reaches them.
fn check_link(
    from: &Path,
    link: &str,
    pages: &mut HashMap<PathBuf, Page>,
) -> anyhow::Result<Option<String>> {
    if link.contains("://") || link.starts_with("mailto:") {
        return Ok(None);
    }
    let (path, fragment) = match link.split_once('#') {
        Some((path, fragment)) => (path, Some(fragment)),
        None => (link, None),
    };
    let target = if path.is_empty() {
        from.to_path_buf()
    } else {
        from.parent().expect("a file has a folder").join(path)
    };
    if !target.exists() {
        return Ok(Some("no such file".into()));
    }
    let Some(fragment) = fragment else {
        return Ok(None);
    };
    if target.extension().is_none_or(|extension| extension != "md") {
        return Ok(None);
    }
    let key = canonical(&target)?;
    if !pages.contains_key(&key) {
        pages.insert(key.clone(), read_page(&target)?);
    }
    if pages[&key].anchors.contains(fragment) {
        Ok(None)
    } else {
        Ok(Some(format!("no heading with the anchor #{fragment}")))
    }
}

fn read_page(file: &Path) -> anyhow::Result<Page> {
    let text = std::fs::read_to_string(file)
        .map_err(|error| anyhow::anyhow!("reading {}: {error}", file.display()))?;
    Ok(parse_page(&text))
}

/// Headings' anchors (GitHub's rule: the heading's text in lower case, characters other
/// than letters, digits, spaces, `-` and `_` dropped, spaces made `-`, a repeated anchor
/// suffixed `-1`, `-2`, ...) and the destinations of links and images.
fn parse_page(text: &str) -> Page {
    let mut anchors = BTreeSet::new();
    let mut links = Vec::new();
    let mut heading: Option<String> = None;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for event in Parser::new(text) {
        match event {
            Event::Start(Tag::Heading { level, .. }) if level <= HeadingLevel::H6 => {
                heading = Some(String::new());
            }
            Event::Text(text) | Event::Code(text) => {
                if let Some(heading) = heading.as_mut() {
                    heading.push_str(&text);
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                let text = heading.take().unwrap_or_default();
                let base = github_anchor(&text);
                let count = seen.entry(base.clone()).or_insert(0);
                let anchor = if *count == 0 {
                    base.clone()
                } else {
                    format!("{base}-{count}")
                };
                *count += 1;
                anchors.insert(anchor);
            }
            Event::Start(Tag::Link { dest_url, .. })
            | Event::Start(Tag::Image { dest_url, .. }) => {
                links.push(dest_url.to_string());
            }
            _ => {}
        }
    }
    Page { anchors, links }
}

fn github_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn canonical(path: &Path) -> anyhow::Result<PathBuf> {
    path.canonicalize()
        .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))
}

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}
