//! The infrastructure in `infra/` is well-formed Bicep: every file parses with the tree-sitter Bicep
//! grammar, every module a file declares exists, and every parameter main.bicepparam sets is declared
//! in main.bicep, so a typo fails here rather than mid-deployment.

use std::path::{Path, PathBuf};

use tree_sitter::{Node, Parser, Tree};

/// A parsed `.bicep` file.
struct BicepFile {
    path: PathBuf,
    source: String,
    tree: Tree,
}

impl BicepFile {
    fn parse(path: PathBuf) -> Self {
        let source = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let mut parser = Parser::new();
        parser
            .set_language(&tree_sitter_bicep::LANGUAGE.into())
            .expect("tree-sitter-bicep's grammar ABI is supported by this tree-sitter");
        let tree = parser
            .parse(&source, None)
            .expect("a parser with a language and no timeout always returns a tree");
        Self { path, source, tree }
    }

    /// `file:line:col: ...` for every ERROR or MISSING node.
    fn syntax_errors(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let mut cursor = self.tree.walk();
        let mut pending = vec![self.tree.root_node()];
        while let Some(node) = pending.pop() {
            if node.is_error() || node.is_missing() {
                let at = node.start_position();
                let what = if node.is_missing() {
                    format!("missing {}", node.kind())
                } else {
                    "syntax error".to_owned()
                };
                errors.push(format!(
                    "{}:{}:{}: {what}",
                    self.path.display(),
                    at.row + 1,
                    at.column + 1
                ));
            }
            // Only subtrees that contain an error are worth walking.
            if node.has_error() {
                pending.extend(node.children(&mut cursor));
            }
        }
        errors
    }

    /// The files named by this file's `module x '<path>' = ...` declarations.
    fn module_paths(&self) -> Vec<PathBuf> {
        let root = self.tree.root_node();
        let mut cursor = root.walk();
        root.children(&mut cursor)
            .filter(|node| node.kind() == "module_declaration")
            .filter_map(|module| first_child_of_kind(module, "string"))
            .filter_map(|string| first_child_of_kind(string, "string_content"))
            .map(|content| {
                let relative = &self.source[content.byte_range()];
                self.path
                    .parent()
                    .expect("a file has a parent directory")
                    .join(relative)
            })
            .collect()
    }

    /// The names of this file's `param` declarations.
    fn parameter_names(&self) -> Vec<&str> {
        let root = self.tree.root_node();
        let mut cursor = root.walk();
        root.children(&mut cursor)
            .filter(|node| node.kind() == "parameter_declaration")
            .filter_map(|param| first_child_of_kind(param, "identifier"))
            .map(|name| &self.source[name.byte_range()])
            .collect()
    }
}

fn first_child_of_kind<'t>(node: Node<'t>, kind: &str) -> Option<Node<'t>> {
    let mut cursor = node.walk();
    node.children(&mut cursor)
        .find(|child| child.kind() == kind)
}

fn bicep_files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries =
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a readable directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == "bicep") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_bicep_file_parses_and_every_module_it_declares_exists() {
    let infra = Path::new(env!("CARGO_MANIFEST_DIR")).join("infra");
    let files: Vec<_> = bicep_files_under(&infra)
        .into_iter()
        .map(BicepFile::parse)
        .collect();

    let main = infra.join("main.bicep");
    assert!(
        files.iter().any(|file| file.path == main),
        "{} is missing",
        main.display()
    );
    let modules: Vec<_> = files.iter().flat_map(BicepFile::module_paths).collect();
    assert!(
        !modules.is_empty(),
        "the Bicep files declare no modules, yet main.bicep is built from infra/modules/"
    );

    let mut problems: Vec<_> = files.iter().flat_map(BicepFile::syntax_errors).collect();
    problems.extend(
        modules
            .iter()
            .filter(|module| !files.iter().any(|file| &file.path == *module))
            .map(|module| format!("{}: declared as a module but missing", module.display())),
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_parameter_main_bicepparam_sets_is_declared_in_main_bicep() {
    let infra = Path::new(env!("CARGO_MANIFEST_DIR")).join("infra");
    let main = BicepFile::parse(infra.join("main.bicep"));
    let declared = main.parameter_names();
    let params_path = infra.join("main.bicepparam");
    let params = std::fs::read_to_string(&params_path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", params_path.display()));

    // The grammar has no rule for a .bicepparam file's untyped `param name = value`, so by line.
    let set: Vec<&str> = params
        .lines()
        .filter_map(|line| line.strip_prefix("param "))
        .filter_map(|rest| rest.split('=').next())
        .map(str::trim)
        .collect();

    assert!(
        !set.is_empty(),
        "{} sets no parameters",
        params_path.display()
    );
    let unknown: Vec<_> = set.iter().filter(|name| !declared.contains(name)).collect();
    assert!(
        unknown.is_empty(),
        "{} sets parameters that main.bicep does not declare: {unknown:?}",
        params_path.display()
    );
}

#[test]
fn a_syntax_error_is_reported_at_its_line_and_column() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("broken.bicep");
    std::fs::write(
        &path,
        "param name string\nresource site 'Microsoft.Web/sites@2024-11-01' = {\n  name: name,,\n}\n",
    )
    .expect("writing the broken file");

    let errors = BicepFile::parse(path.clone()).syntax_errors();

    assert!(!errors.is_empty(), "no error found in a broken file");
    let prefix = format!("{}:3:", path.display());
    assert!(
        errors.iter().any(|error| error.starts_with(&prefix)),
        "expected an error on line 3, got {errors:?}"
    );
}
