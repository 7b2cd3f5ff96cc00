//! The source layout's rules, checked on `src/` itself: no two modules import each other, however
//! indirectly (a module and its own submodules aside, which are one room); only `startup` (and
//! the binary's `main`) imports `config`; and no file holds more than 400 lines outside its tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 400;

/// Every module of the library (`sync::decide`, ...; the crate root is ""), and its file.
fn modules() -> BTreeMap<String, PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules = BTreeMap::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let relative = path.strip_prefix(&root).unwrap().with_extension("");
            let mut parts: Vec<String> = relative
                .iter()
                .map(|part| part.to_string_lossy().into_owned())
                .collect();
            match parts.last().map(String::as_str) {
                Some("main") if parts.len() == 1 => continue,
                Some("mod" | "lib") => {
                    parts.pop();
                }
                _ => {}
            }
            modules.insert(parts.join("::"), path);
        }
    }
    modules
}

/// The source before its `#[cfg(test)]` module: what the library itself is.
fn outside_tests(path: &Path) -> String {
    let source = std::fs::read_to_string(path).unwrap();
    match source.find("#[cfg(test)]") {
        Some(at) => source[..at].to_owned(),
        None => source,
    }
}

/// The `a::b::c` paths that follow `prefix` in `source`.
fn paths_after<'a>(source: &'a str, prefix: &'a str) -> impl Iterator<Item = String> + 'a {
    source.match_indices(prefix).filter_map(move |(at, _)| {
        let before = source[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            return None;
        }
        let rest = &source[at + prefix.len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let path = rest[..end].trim_end_matches(':');
        (!path.is_empty()).then(|| path.to_owned())
    })
}

/// The modules each module uses, a module's own ancestors and descendants left out.
fn imports(modules: &BTreeMap<String, PathBuf>) -> BTreeMap<String, BTreeSet<String>> {
    // The longest module a path names.
    let resolve = |path: &str| -> Option<String> {
        let segments: Vec<&str> = path.split("::").collect();
        (1..=segments.len())
            .rev()
            .map(|n| segments[..n].join("::"))
            .find(|module| modules.contains_key(module))
    };
    let join = |base: &str, path: &str| match base {
        "" => path.to_owned(),
        base => format!("{base}::{path}"),
    };
    modules
        .iter()
        .map(|(module, path)| {
            let source = outside_tests(path);
            let parent = module.rsplit_once("::").map_or("", |(parent, _)| parent);
            let mut used: BTreeSet<String> = BTreeSet::new();
            for prefix in ["crate::", "$crate::"] {
                used.extend(paths_after(&source, prefix).filter_map(|p| resolve(&p)));
            }
            used.extend(paths_after(&source, "super::").filter_map(|p| resolve(&join(parent, &p))));
            used.extend(paths_after(&source, "self::").filter_map(|p| resolve(&join(module, &p))));
            let related = |other: &String| {
                other == module
                    || other.is_empty()
                    || module.is_empty()
                    || other.starts_with(&format!("{module}::"))
                    || module.starts_with(&format!("{other}::"))
            };
            used.retain(|other| !related(other));
            (module.clone(), used)
        })
        .collect()
}

/// A cycle through `start`, if there is one.
fn cycle_from(start: &str, imports: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    let mut stack = vec![vec![start.to_owned()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().unwrap();
        for next in imports.get(last).into_iter().flatten() {
            if next == start {
                return Some([path.clone(), vec![next.clone()]].concat());
            }
            if seen.insert(next.clone()) {
                stack.push([path.clone(), vec![next.clone()]].concat());
            }
        }
    }
    None
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let modules = modules();
    assert!(modules.contains_key("sync::decide") && modules.contains_key("config"));
    let imports = imports(&modules);
    let cycles: Vec<String> = imports
        .keys()
        .filter_map(|module| cycle_from(module, &imports))
        .map(|cycle| cycle.join(" -> "))
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn only_startup_imports_config() {
    let imports = imports(&modules());
    let importers: Vec<&String> = imports
        .iter()
        .filter(|(module, used)| !module.starts_with("config") && used.contains("config"))
        .map(|(module, _)| module)
        .collect();
    assert_eq!(importers, ["startup"]);
}

#[test]
fn no_file_holds_more_than_400_lines_outside_its_tests() {
    let long: Vec<String> = modules()
        .values()
        .map(|path| (path, outside_tests(path).lines().count()))
        .filter(|(_, lines)| *lines > MAX_LINES)
        .map(|(path, lines)| format!("{}: {lines}", path.display()))
        .collect();
    assert!(long.is_empty(), "over {MAX_LINES} lines: {long:?}");
}

#[test]
fn the_checks_see_a_cycle_and_an_import_of_config() {
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    imports.insert("config".into(), BTreeSet::from(["session".into()]));
    imports.insert("session".into(), BTreeSet::from(["config".into()]));
    assert_eq!(
        cycle_from("config", &imports),
        Some(vec!["config".into(), "session".into(), "config".into()])
    );
    let source = "use crate::config::{Env};\nlet x = super::y::Z; // not_crate::x\n";
    assert_eq!(
        paths_after(source, "crate::").collect::<Vec<_>>(),
        ["config"]
    );
}
