//! The source's shape, read from its `use` lines: no import cycles between top-level
//! modules, the data path never reaching into the control plane (they meet at the
//! snapshot), and no source file over 500 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The data path's modules and the control plane's: the first may not import the second.
const DATA_PATH: [&str; 4] = ["proxy", "routes", "shadow", "upstream"];
const CONTROL_PLANE: [&str; 3] = ["control", "admin", "cli"];
const MAX_LINES: usize = 500;

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to (`src/proxy/fast/mod.rs` → `proxy`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_string())
}

/// Every `crate::name` a file's code mentions (comments left out).
fn imports(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
            rest = after;
        }
    }
    found
}

struct Tree {
    /// module → (module it imports → files that do)
    edges: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    long_files: Vec<(String, usize)>,
}

fn read_tree() -> Tree {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 50, "the source tree was not found at {src:?}");
    let mut edges: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    let mut long_files = Vec::new();
    for file in &files {
        let text = fs::read_to_string(file).expect("source file");
        let rel = file
            .strip_prefix(&src)
            .unwrap_or(file)
            .display()
            .to_string();
        let lines = text.lines().count();
        if lines > MAX_LINES {
            long_files.push((rel.clone(), lines));
        }
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        for target in imports(&text) {
            if target != module {
                edges
                    .entry(module.clone())
                    .or_default()
                    .entry(target)
                    .or_default()
                    .insert(rel.clone());
            }
        }
    }
    Tree { edges, long_files }
}

/// A cycle through `start`, if there is one, as the modules along it.
fn cycle_from(tree: &Tree, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_string(), vec![start.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for next in tree.edges.get(&at).into_iter().flat_map(|m| m.keys()) {
            if next == start {
                let mut cycle = path.clone();
                cycle.push(next.clone());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                let mut p = path.clone();
                p.push(next.clone());
                stack.push((next.clone(), p));
            }
        }
    }
    None
}

#[test]
fn top_level_modules_import_each_other_without_cycles() {
    let tree = read_tree();
    let mut cycles = Vec::new();
    for module in tree.edges.keys() {
        if let Some(cycle) = cycle_from(&tree, module) {
            let hops: Vec<String> = cycle
                .windows(2)
                .map(|w| {
                    let files = &tree.edges[&w[0]][&w[1]];
                    format!("{} -> {} ({files:?})", w[0], w[1])
                })
                .collect();
            cycles.push(hops.join("; "));
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_data_path_does_not_import_the_control_plane() {
    let tree = read_tree();
    let mut wrong = Vec::new();
    for data in DATA_PATH {
        for control in CONTROL_PLANE {
            if let Some(files) = tree.edges.get(data).and_then(|m| m.get(control)) {
                wrong.push(format!("{data} -> {control}: {files:?}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn no_source_file_is_over_500_lines() {
    let tree = read_tree();
    assert!(
        tree.long_files.is_empty(),
        "split these by concern: {:?}",
        tree.long_files
    );
}

#[test]
fn the_reader_sees_imports_and_skips_comments() {
    let text = "use crate::routes::{A, B};\n// crate::control is only named here\nlet x = crate::clock::now_ms(); // crate::admin\n";
    let got: Vec<String> = imports(text).into_iter().collect();
    assert_eq!(got, ["clock", "routes"]);
}
