//! Every link in the README and `docs/` resolves inside the repository: the file exists and,
//! for a `#fragment`, the page has a heading with that anchor (GitHub's rule: lower case,
//! punctuation dropped, spaces as `-`). Links leave the repository nowhere.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The pages whose links are checked.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![Path::new(ROOT).join("README.md")];
    let docs = std::fs::read_dir(Path::new(ROOT).join("docs")).expect("docs/ exists");
    for entry in docs {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "md") {
            pages.push(path);
        }
    }
    pages
}

/// The text outside fenced code blocks.
fn prose(text: &str) -> String {
    let mut inside = false;
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            inside = !inside;
            continue;
        }
        if !inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(page: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(page).unwrap();
    prose(&text)
        .lines()
        .filter(|line| line.starts_with('#'))
        .map(|line| anchor(line.trim_start_matches('#')))
        .collect()
}

/// The targets of `[text](target)` links.
fn links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        if let Some(end) = rest.find(')') {
            found.push(rest[..end].to_owned());
        }
    }
    found
}

#[test]
fn every_link_resolves_inside_the_repository() {
    let mut checked = 0;
    for page in pages() {
        let text = prose(&std::fs::read_to_string(&page).unwrap());
        for link in links(&text) {
            let name = page.strip_prefix(ROOT).unwrap().display();
            assert!(
                !link.contains("://") && !link.starts_with("mailto:"),
                "{name}: `{link}` leaves the repository"
            );
            assert!(
                !link.contains("shared/"),
                "{name}: `{link}` points outside the repository"
            );
            let (path, fragment) = link.split_once('#').unwrap_or((&link, ""));
            let target = if path.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(path)
            };
            let target = target
                .canonicalize()
                .unwrap_or_else(|_| panic!("{name}: `{link}` names no file"));
            assert!(
                target.starts_with(Path::new(ROOT).canonicalize().unwrap()),
                "{name}: `{link}` points outside the repository"
            );
            if !fragment.is_empty() {
                assert!(
                    anchors(&target).contains(fragment),
                    "{name}: `{link}`: no heading has the anchor `{fragment}`"
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 30, "only {checked} links were found");
}
