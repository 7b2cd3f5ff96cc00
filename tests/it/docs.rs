//! The documentation holds to the repository: every query the README shows is a file under
//! `infra/queries/` (which the KQL checks analyse), and every relative link in the README and
//! `docs/` reaches a file that exists.

use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The README and every page of `docs/`.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md")];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "md") {
            pages.push(path);
        }
    }
    pages
}

/// The bodies of the page's ```kql blocks.
fn kql_blocks(page: &str) -> Vec<String> {
    page.split("```kql\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap().to_owned())
        .collect()
}

#[test]
fn every_query_the_readme_shows_is_a_query_file_word_for_word() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let blocks = kql_blocks(&readme);
    assert!(blocks.len() >= 3, "the README shows its ad hoc queries");
    let files: Vec<String> = std::fs::read_dir(root().join("infra/queries"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "kql"))
        .map(|path| std::fs::read_to_string(path).unwrap())
        .collect();
    for block in blocks {
        assert!(
            files.contains(&block),
            "the README shows a query no file under infra/queries holds:\n{block}"
        );
    }
}

#[test]
fn every_relative_link_reaches_a_file() {
    let mut broken = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        for (at, _) in text.match_indices("](") {
            let target = &text[at + 2..];
            let target = &target[..target.find(')').unwrap_or(target.len())];
            let path = target.split('#').next().unwrap();
            if path.is_empty() || path.contains("://") || path.starts_with("mailto:") {
                continue;
            }
            if !page.parent().unwrap().join(path).exists() {
                broken.push(format!("{}: {target}", page.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
