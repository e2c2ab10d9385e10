//! ARCHITECTURE.md's layer table, checked against the code's imports.
//!
//! The table lists each module (a row) and what it imports; layers are
//! strictly downward: a module imports only modules of rows above it. This
//! test reads every `crate::<module>` path in each module's source (comment
//! lines and test-only files aside) and fails on any import the table does
//! not allow, and on a table that lists an import from a row below (an
//! upward edge). "the rows above" in the table allows any earlier row.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// One row: the module's crate name, its files, what it may import.
struct Row {
    module: String,
    files: Vec<PathBuf>,
    /// `None`: any earlier row ("the rows above").
    imports: Option<BTreeSet<String>>,
}

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<_> = fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for entry in entries {
            rust_files(&entry, out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_owned());
    }
}

fn rows(root: &Path) -> Vec<Row> {
    let text = fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let table = text
        .split("| module | owns | imports |")
        .nth(1)
        .expect("ARCHITECTURE.md has the layer table");
    let mut rows = Vec::new();
    for line in table.lines().skip(2) {
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let path = cells[1].trim_matches('`');
        let module = path
            .trim_start_matches("src/")
            .trim_end_matches('/')
            .trim_end_matches(".rs")
            .to_owned();
        let mut files = Vec::new();
        rust_files(&root.join(path), &mut files);
        assert!(
            !files.is_empty(),
            "the table names {path}, which has no source"
        );
        let imports = match cells[3] {
            "–" | "-" => Some(BTreeSet::new()),
            "the rows above" => None,
            list => Some(
                list.split(',')
                    .map(|m| m.split_whitespace().next().unwrap().to_owned())
                    .collect(),
            ),
        };
        rows.push(Row {
            module,
            files,
            imports,
        });
    }
    rows
}

/// The crate modules a file's code (not its comments) names.
fn imported(file: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in fs::read_to_string(file).unwrap().lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        for (at, _) in code.match_indices("crate::") {
            let name: String = code[at + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
                found.insert(name);
            }
        }
    }
    found
}

#[test]
fn imports_follow_the_layer_table_downward() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rows = rows(root);
    let mut errors = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let above: BTreeSet<&str> = rows[..i].iter().map(|r| r.module.as_str()).collect();
        if let Some(listed) = &row.imports {
            for m in listed {
                if !above.contains(m.as_str()) {
                    errors.push(format!(
                        "table: {} lists {m}, which is not a row above it",
                        row.module
                    ));
                }
            }
        }
        for file in &row.files {
            // Test-only files may reach anywhere.
            let name = file.file_name().unwrap().to_str().unwrap();
            if name == "tests.rs" || name.ends_with("_tests.rs") {
                continue;
            }
            for m in imported(file) {
                let allowed = m == row.module
                    || match &row.imports {
                        Some(listed) => listed.contains(&m),
                        None => above.contains(m.as_str()),
                    };
                if !allowed {
                    errors.push(format!(
                        "{} imports crate::{m}, which the table does not allow for {}",
                        file.strip_prefix(root).unwrap().display(),
                        row.module
                    ));
                }
            }
        }
    }
    assert!(
        errors.is_empty(),
        "layer violations:\n{}",
        errors.join("\n")
    );
}
