//! The infrastructure in `infra/` is well-formed Bicep: every file parses with the tree-sitter Bicep
//! grammar, every module a file declares exists, and every parameter main.bicepparam sets is declared
//! in main.bicep, so a typo fails here rather than mid-deployment. The monitoring resources (action
//! group, log search alert rules, workbook) use only properties and values their API version has,
//! as extracted into `infra/types/` from Azure's published Bicep types; every file a Bicep file
//! loads exists, and every query default line it rewrites occurs in that query file.

use std::collections::{BTreeMap, BTreeSet};
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

/// The named children of `node`, comments left out.
fn named_children(node: Node<'_>) -> Vec<Node<'_>> {
    let mut cursor = node.walk();
    node.named_children(&mut cursor)
        .filter(|child| child.kind() != "comment")
        .collect()
}

/// Every node of the tree, depth first.
fn all_nodes(tree: &Tree) -> Vec<Node<'_>> {
    let mut nodes = Vec::new();
    let mut pending = vec![tree.root_node()];
    while let Some(node) = pending.pop() {
        nodes.push(node);
        let mut cursor = node.walk();
        pending.extend(node.named_children(&mut cursor));
    }
    nodes
}

impl BicepFile {
    fn text(&self, node: Node<'_>) -> &str {
        &self.source[node.byte_range()]
    }

    fn at(&self, node: Node<'_>) -> String {
        format!("{}:{}", self.path.display(), node.start_position().row + 1)
    }

    /// The value of a string literal without interpolation (\n, \r, \t and \x for x itself
    /// resolved); None otherwise.
    fn literal(&self, node: Node<'_>) -> Option<String> {
        if node.kind() != "string" {
            return None;
        }
        let mut value = String::new();
        for part in named_children(node) {
            match part.kind() {
                "string_content" => value.push_str(self.text(part)),
                "escape_sequence" => value.push_str(match self.text(part) {
                    "\\n" => "\n",
                    "\\r" => "\r",
                    "\\t" => "\t",
                    escaped => &escaped[1..],
                }),
                _ => return None,
            }
        }
        Some(value)
    }

    /// The name of a function call (`replace` in `replace(a, b, c)`) and its arguments.
    fn call<'t>(&self, node: Node<'t>) -> Option<(&str, Vec<Node<'t>>)> {
        if node.kind() != "call_expression" {
            return None;
        }
        let function = node.child_by_field_name("function")?;
        let arguments = node.child_by_field_name("arguments")?;
        Some((self.text(function), named_children(arguments)))
    }

    /// `resource` declarations (not `existing` ones): their type string and their body, the
    /// object inside any loop or condition.
    fn resources(&self) -> Vec<(Node<'_>, String, Node<'_>)> {
        fn body(node: Node<'_>) -> Option<Node<'_>> {
            match node.kind() {
                "object" => Some(node),
                "for_statement" => node.child_by_field_name("body").and_then(body),
                "if_statement" => named_children(node)
                    .into_iter()
                    .find(|child| child.kind() == "object"),
                _ => None,
            }
        }
        all_nodes(&self.tree)
            .into_iter()
            .filter(|node| node.kind() == "resource_declaration")
            .filter(|node| {
                let mut cursor = node.walk();
                let existing = node.children(&mut cursor).any(|c| c.kind() == "existing");
                !existing
            })
            .filter_map(|node| {
                let children = named_children(node);
                let type_string = children.iter().find(|c| c.kind() == "string")?;
                let body = children.iter().rev().find_map(|c| body(*c))?;
                Some((node, self.literal(*type_string)?, body))
            })
            .collect()
    }
}

/// What one property of a resource type accepts, as extracted into infra/types/*.json.
#[derive(serde::Deserialize)]
struct PropertyType {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    values: Vec<serde_json::Value>,
    items: Option<String>,
    #[serde(default)]
    required: bool,
}

/// A resource type at one API version, by property path: `properties.criteria.allOf[].query` is
/// `query` in an element of the array `allOf`; `tags.*` is any property of `tags`.
#[derive(serde::Deserialize)]
struct ApiType {
    #[serde(rename = "resourceType")]
    resource_type: String,
    properties: BTreeMap<String, PropertyType>,
}

fn api_types(infra: &Path) -> Vec<ApiType> {
    let dir = infra.join("types");
    let mut types = Vec::new();
    for entry in
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
    {
        let path = entry.expect("a readable directory entry").path();
        if path.extension().is_some_and(|ext| ext == "json") {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let api: ApiType = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
            types.push(api);
        }
    }
    types
}

/// Keys of a resource body that are Bicep's, not the API's.
const BICEP_KEYWORDS: [&str; 3] = ["dependsOn", "parent", "scope"];

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Checks a resource body against its API type. Literal values are checked against the type and,
/// where the API lists them, its values (also where the API accepts other strings too, so that a
/// misspelt `LogAlert` does not pass); expressions are not evaluated.
struct TypeCheck<'a> {
    file: &'a BicepFile,
    api: &'a ApiType,
    problems: Vec<String>,
}

impl TypeCheck<'_> {
    fn object(&mut self, node: Node<'_>, path: &str) {
        let mut present = BTreeSet::new();
        for property in named_children(node) {
            if property.kind() != "object_property" {
                continue;
            }
            let parts = named_children(property);
            let (Some(key), Some(value)) = (parts.first(), parts.last()) else {
                continue;
            };
            let key = match key.kind() {
                "string" => match self.file.literal(*key) {
                    Some(key) => key,
                    None => continue,
                },
                _ => self.file.text(*key).to_owned(),
            };
            present.insert(key.clone());
            if path.is_empty() && BICEP_KEYWORDS.contains(&key.as_str()) {
                continue;
            }
            let exact = join(path, &key);
            let any = join(path, "*");
            let resolved = if self.api.properties.contains_key(&exact) {
                exact
            } else if self.api.properties.contains_key(&any) {
                any
            } else {
                self.problem(property, format!("{exact} is not a property"));
                continue;
            };
            self.value(*value, &resolved);
        }
        for (required, _) in self.api.properties.iter().filter(|(_, t)| t.required) {
            let (parent, name) = required.rsplit_once('.').unwrap_or(("", required));
            if parent == path && !present.contains(name) {
                self.problem(node, format!("{required} is required"));
            }
        }
    }

    fn value(&mut self, node: Node<'_>, path: &str) {
        let expected = &self.api.properties[path];
        let kind = expected.kind.clone();
        match node.kind() {
            "object" => self.nested(node, path, &kind),
            "array" | "for_statement" => {
                let items = expected.items.clone().unwrap_or_else(|| "any".to_owned());
                self.array(node, path, &kind, &items);
            }
            "ternary_expression" => {
                for branch in ["consequence", "alternative"] {
                    if let Some(branch) = node.child_by_field_name(branch) {
                        self.value(branch, path);
                    }
                }
            }
            "string" | "number" | "boolean" => {
                let values = expected.values.clone();
                self.literal(node, path, &kind, &values);
            }
            // Anything else is an expression this check does not evaluate.
            _ => {}
        }
    }

    /// An object literal as the value at `path`, which takes `kind`.
    fn nested(&mut self, node: Node<'_>, path: &str, kind: &str) {
        if self.kind_matches(node, path, kind, "object") {
            self.object(node, path);
        }
    }

    /// An array literal or `[for ...]` as the value at `path`, which takes `kind` of `items`.
    fn array(&mut self, node: Node<'_>, path: &str, kind: &str, items: &str) {
        if !self.kind_matches(node, path, kind, "array") {
            return;
        }
        let elements = if node.kind() == "array" {
            named_children(node)
        } else {
            node.child_by_field_name("body").into_iter().collect()
        };
        for element in elements {
            self.element(element, path, items);
        }
    }

    fn element(&mut self, node: Node<'_>, path: &str, items: &str) {
        let items_path = format!("{path}[]");
        match node.kind() {
            "object" => self.nested(node, &items_path, items),
            "if_statement" => {
                for child in named_children(node) {
                    self.element(child, path, items);
                }
            }
            "string" | "number" | "boolean" => self.literal(node, &items_path, items, &[]),
            _ => {}
        }
    }

    fn literal(&mut self, node: Node<'_>, path: &str, kind: &str, values: &[serde_json::Value]) {
        let (actual, value) = match node.kind() {
            "string" => (
                "string",
                self.file.literal(node).map(serde_json::Value::String),
            ),
            "number" => (
                "integer",
                self.file
                    .text(node)
                    .parse::<i64>()
                    .ok()
                    .map(serde_json::Value::from),
            ),
            _ => (
                "boolean",
                Some(serde_json::Value::Bool(self.file.text(node) == "true")),
            ),
        };
        if !self.kind_matches(node, path, kind, actual) {
            return;
        }
        if let Some(value) = value
            && !values.is_empty()
            && !values.contains(&value)
        {
            self.problem(node, format!("{path} is {value}, not one of {values:?}"));
        }
    }

    fn kind_matches(&mut self, node: Node<'_>, path: &str, expected: &str, actual: &str) -> bool {
        if expected == actual || expected == "any" {
            return true;
        }
        self.problem(node, format!("{path} takes {expected}, not {actual}"));
        false
    }

    fn problem(&mut self, node: Node<'_>, what: String) {
        self.problems.push(format!(
            "{}: {} {what}",
            self.file.at(node),
            self.api.resource_type
        ));
    }
}

/// Problems in the resources of `files` whose type has an extract in `types`, and any such resource
/// at an API version with no extract; also the names of the types that were checked.
fn type_problems(files: &[BicepFile], types: &[ApiType]) -> (Vec<String>, BTreeSet<String>) {
    let mut problems = Vec::new();
    let mut checked = BTreeSet::new();
    for file in files {
        for (node, type_string, body) in file.resources() {
            let name = type_string.split('@').next().unwrap_or_default();
            let known = |api: &&ApiType| {
                api.resource_type
                    .split('@')
                    .next()
                    .is_some_and(|t| t.eq_ignore_ascii_case(name))
            };
            if !types.iter().any(|api| known(&api)) {
                continue;
            }
            let Some(api) = types.iter().find(|api| {
                known(api) && api.resource_type.split('@').nth(1) == type_string.split('@').nth(1)
            }) else {
                problems.push(format!(
                    "{}: {type_string} has no extract of its API version in infra/types/",
                    file.at(node)
                ));
                continue;
            };
            let mut check = TypeCheck {
                file,
                api,
                problems: Vec::new(),
            };
            check.object(body, "");
            problems.extend(check.problems);
            checked.insert(api.resource_type.clone());
        }
    }
    (problems, checked)
}

#[test]
fn the_monitoring_resources_use_only_properties_and_values_their_api_version_has() {
    let infra = Path::new(env!("CARGO_MANIFEST_DIR")).join("infra");
    let files: Vec<_> = bicep_files_under(&infra)
        .into_iter()
        .map(BicepFile::parse)
        .collect();
    let types = api_types(&infra);

    let (problems, checked) = type_problems(&files, &types);

    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let extracted: BTreeSet<_> = types.iter().map(|api| api.resource_type.clone()).collect();
    assert_eq!(
        checked, extracted,
        "every extract in infra/types/ should be the type of a resource in infra/"
    );
}

#[test]
fn a_property_or_value_the_api_does_not_have_is_reported() {
    let infra = Path::new(env!("CARGO_MANIFEST_DIR")).join("infra");
    let types = api_types(&infra);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("rule.bicep");
    std::fs::write(
        &path,
        "resource rule 'Microsoft.Insights/scheduledQueryRules@2026-03-01' = [for q in qs: {\n  name: q\n  location: 'westeurope'\n  kind: 'Logalert'\n  properties: {\n    severity: 5\n    enabled: 'yes'\n    scopes: [\n      id\n    ]\n    criteria: {\n      allOf: [\n        {\n          query: q\n          operator: 'GreaterOrEqual'\n          treshold: 1\n        }\n      ]\n    }\n  }\n}]\nresource old 'Microsoft.Insights/actionGroups@2019-06-01' = {\n  name: 'ag'\n}\n",
    )
    .expect("writing the file");

    let (problems, _) = type_problems(&[BicepFile::parse(path)], &types);

    let expected = [
        ":4: Microsoft.Insights/scheduledQueryRules@2026-03-01 kind is \"Logalert\"",
        ":6: Microsoft.Insights/scheduledQueryRules@2026-03-01 properties.severity is 5",
        ":7: Microsoft.Insights/scheduledQueryRules@2026-03-01 properties.enabled takes boolean, not string",
        ":15: Microsoft.Insights/scheduledQueryRules@2026-03-01 properties.criteria.allOf[].operator is \"GreaterOrEqual\"",
        ":16: Microsoft.Insights/scheduledQueryRules@2026-03-01 properties.criteria.allOf[].treshold is not a property",
        ":22: Microsoft.Insights/actionGroups@2019-06-01 has no extract",
    ];
    for fragment in expected {
        assert!(
            problems.iter().any(|problem| problem.contains(fragment)),
            "no problem containing {fragment:?} in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
}

/// A chain of `replace(...)` calls on a loaded file.
struct Rewrite<'t> {
    /// The loaded file, relative to the Bicep file.
    path: String,
    /// The text each call replaces, and its value when it is a string literal.
    targets: Vec<(Node<'t>, Option<String>)>,
}

/// The rewrite `node` makes, when it is `replace(...)` of a loaded file (directly or through
/// other replace calls).
fn rewrite<'t>(file: &BicepFile, node: Node<'t>) -> Option<Rewrite<'t>> {
    let (function, arguments) = file.call(node)?;
    match function {
        "loadTextContent" => Some(Rewrite {
            path: file.literal(*arguments.first()?)?,
            targets: Vec::new(),
        }),
        "replace" => {
            let mut rewrite = rewrite(file, *arguments.first()?)?;
            let target = *arguments.get(1)?;
            rewrite.targets.push((target, file.literal(target)));
            Some(rewrite)
        }
        _ => None,
    }
}

#[test]
fn every_loaded_file_exists_and_every_default_line_replaced_in_it_occurs_there() {
    let infra = Path::new(env!("CARGO_MANIFEST_DIR")).join("infra");
    let mut problems = Vec::new();
    let mut replaced = 0;
    for file in bicep_files_under(&infra).into_iter().map(BicepFile::parse) {
        let dir = file.path.parent().expect("a file has a parent directory");
        for node in all_nodes(&file.tree) {
            let Some((function, arguments)) = file.call(node) else {
                continue;
            };
            if function.starts_with("load") {
                match arguments.first().and_then(|a| file.literal(*a)) {
                    Some(relative) if dir.join(&relative).is_file() => {}
                    Some(relative) => problems.push(format!(
                        "{}: {function} loads {relative}, which does not exist",
                        file.at(node)
                    )),
                    None => problems.push(format!(
                        "{}: {function} of something other than a string literal",
                        file.at(node)
                    )),
                }
            }
            // Only the outermost replace of a chain, so each target is checked once.
            let outer = node
                .parent()
                .and_then(|arguments| arguments.parent())
                .and_then(|call| file.call(call))
                .is_some_and(|(name, _)| name == "replace");
            if function != "replace" || outer {
                continue;
            }
            let Some(Rewrite {
                path: relative,
                targets,
            }) = rewrite(&file, node)
            else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(dir.join(&relative)) else {
                continue; // reported above
            };
            for (target, literal) in targets {
                replaced += 1;
                match literal {
                    Some(line) if text.lines().any(|l| l.trim_end() == line) => {}
                    Some(line) => problems.push(format!(
                        "{}: {relative} has no line {line:?} to replace, so the setting would not reach the query",
                        file.at(target)
                    )),
                    None => problems.push(format!(
                        "{}: the text replaced in {relative} is not a string literal",
                        file.at(target)
                    )),
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        replaced >= 17,
        "expected the alerts' and the workbook's default lines to be rewritten, found {replaced} replacements"
    );
}

/// The object literal a `var` is declared as, by name.
fn variable<'t>(file: &'t BicepFile, name: &str) -> Option<Node<'t>> {
    named_children(file.tree.root_node())
        .into_iter()
        .filter(|node| node.kind() == "variable_declaration")
        .find_map(|node| {
            let children = named_children(node);
            if file.text(*children.first()?) == name {
                children.last().copied()
            } else {
                None
            }
        })
}

/// The properties of an object literal whose values are literals, by key.
fn literal_properties(file: &BicepFile, object: Node<'_>) -> BTreeMap<String, String> {
    named_children(object)
        .into_iter()
        .filter(|node| node.kind() == "object_property")
        .filter_map(|property| {
            let parts = named_children(property);
            let key = parts.first()?;
            let key = file
                .literal(*key)
                .unwrap_or_else(|| file.text(*key).to_owned());
            let value = parts.last()?;
            let value = file
                .literal(*value)
                .unwrap_or_else(|| file.text(*value).to_owned());
            Some((key, value))
        })
        .collect()
}

#[test]
fn every_alert_query_has_a_rule_whose_defaults_the_api_accepts() {
    let infra = Path::new(env!("CARGO_MANIFEST_DIR")).join("infra");
    let alerts = BicepFile::parse(infra.join("modules/alerts.bicep"));
    let types = api_types(&infra);
    let rules_api = types
        .iter()
        .find(|api| {
            api.resource_type
                .starts_with("Microsoft.Insights/scheduledQueryRules@")
        })
        .expect("an extract of scheduledQueryRules");
    let severities = &rules_api.properties["properties.severity"].values;

    let queries: BTreeSet<String> = std::fs::read_dir(infra.join("queries"))
        .expect("infra/queries/")
        .map(|entry| entry.expect("a readable directory entry").file_name())
        .filter_map(|name| {
            let name = name.to_string_lossy();
            Some(
                name.strip_prefix("alert-")?
                    .strip_suffix(".kql")?
                    .to_owned(),
            )
        })
        .collect();
    let defaults = variable(&alerts, "defaults").expect("var defaults in alerts.bicep");
    let rules = variable(&alerts, "rules").expect("var rules in alerts.bicep");
    let rule_names: BTreeSet<String> = named_children(rules)
        .into_iter()
        .filter_map(|rule| literal_properties(&alerts, rule).remove("name"))
        .collect();
    assert_eq!(
        rule_names, queries,
        "one rule per infra/queries/alert-*.kql"
    );

    let mut problems = Vec::new();
    let mut names = BTreeSet::new();
    for alert in named_children(defaults) {
        let parts = named_children(alert);
        let name = alerts
            .literal(parts[0])
            .unwrap_or_else(|| alerts.text(parts[0]).to_owned());
        let settings = literal_properties(&alerts, parts[parts.len() - 1]);
        let number = |key: &str| settings.get(key).and_then(|v| v.parse::<i64>().ok());
        let (Some(severity), Some(frequency), Some(window)) = (
            number("severity"),
            number("evaluationFrequencyMinutes"),
            number("windowMinutes"),
        ) else {
            problems.push(format!("{name}: severity, evaluationFrequencyMinutes and windowMinutes must be numbers: {settings:?}"));
            continue;
        };
        if !severities.contains(&serde_json::Value::from(severity)) {
            problems.push(format!(
                "{name}: severity {severity} is not one of {severities:?}"
            ));
        }
        if window < frequency {
            problems.push(format!("{name}: a {window}-minute window evaluated every {frequency} minutes would skip data"));
        }
        if number("threshold").is_some_and(|t| t < 1) {
            problems.push(format!("{name}: a threshold below 1 would always fire"));
        }
        names.insert(name);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(
        names, queries,
        "default settings for every alert, and only those"
    );
}
