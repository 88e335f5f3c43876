//! The house rules a newcomer relies on, checked on the source tree: no
//! source file longer than 600 lines (its tests apart), no import circle
//! among the files of a crate (a file that uses another, through `crate::`
//! or `super::` paths, is never used back by it, directly or around a loop),
//! so each file can be read knowing only those below it, and a role core
//! (`roles/`) that depends on no runtime, socket, Raft or disk.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates whose sources the rules cover.
const CRATES: [&str; 6] = ["transport", "roles", "actors", "node", "cli", "client"];

/// The longest a source file may be, its `#[cfg(test)]` part not counted.
const MAX_LINES: usize = 600;

/// Every `.rs` file below `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The file's code before its tests, without line comments.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let before_tests = text.split("#[cfg(test)]").next().unwrap_or_default();
    before_tests
        .lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A test-only file: the tests of a module, kept beside it.
fn is_tests(path: &Path) -> bool {
    let name = path.file_name().unwrap().to_string_lossy();
    name == "tests.rs" || name.ends_with("_tests.rs")
}

/// The module path of a file below `src` (`a/b.rs` and `a/b/mod.rs` are `a::b`).
fn module_of(src: &Path, path: &Path) -> Vec<String> {
    let rel = path.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

/// The paths a file names through `crate::` or `super::`, resolved to
/// module paths (a `{a, b::c}` group gives one path per member).
fn named_paths(module: &[String], code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices("::") {
        let before = &code[..i];
        let word_start =
            before.rfind(|c: char| !(c.is_alphanumeric() || c == '_')).map_or(0, |k| k + 1);
        let base: Vec<String> = match &before[word_start..] {
            "crate" => Vec::new(),
            "super" => module[..module.len().saturating_sub(1)].to_vec(),
            _ => continue,
        };
        // Only where the path starts, not at `a::crate::b` (no such thing)
        // nor at the `::` of `super::super`.
        if before[..word_start].ends_with("::") {
            continue;
        }
        let rest = &code[i + 2..];
        let mut path = base.clone();
        let mut k = 0;
        let bytes = rest.as_bytes();
        loop {
            let start = k;
            while k < bytes.len() && (bytes[k].is_ascii_alphanumeric() || bytes[k] == b'_') {
                k += 1;
            }
            if k > start {
                path.push(rest[start..k].to_string());
            }
            // A group: `crate::{..}` right away, or `crate::a::{..}`.
            let group = if k == start && rest[k..].starts_with('{') {
                Some(k + 1)
            } else if rest[k..].starts_with("::{") {
                Some(k + 3)
            } else {
                None
            };
            if let Some(open) = group {
                let end = rest[open..].find('}').map_or(rest.len(), |e| open + e);
                for item in rest[open..end].split(',') {
                    let item = item.split(" as ").next().unwrap_or_default().trim();
                    if !item.is_empty() && item != "self" {
                        let mut p = path.clone();
                        p.extend(item.split("::").map(|s| s.trim().to_string()));
                        out.push(p);
                    }
                }
                break;
            }
            if rest[k..].starts_with("::") && k > start {
                k += 2;
                continue;
            }
            break;
        }
        out.push(path);
    }
    out
}

/// The longest prefix of `path` that is a file of the crate.
fn resolve<'a>(files: &'a BTreeSet<Vec<String>>, path: &[String]) -> Option<&'a Vec<String>> {
    (0..=path.len()).rev().find_map(|k| files.get(&path[..k]))
}

/// The files of one crate that lie on an import circle, one circle per entry.
fn circles(src: &Path) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    sources(src, &mut paths);
    let mut code_of = BTreeMap::new();
    for p in paths.iter().filter(|p| !is_tests(p)) {
        code_of.insert(module_of(src, p), code(p));
    }
    let files: BTreeSet<Vec<String>> = code_of.keys().cloned().collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (m, code) in &code_of {
        let deps = named_paths(m, code)
            .iter()
            .filter_map(|p| resolve(&files, p))
            .filter(|d| *d != m && !d.is_empty())
            .cloned()
            .collect();
        edges.insert(m.clone(), deps);
    }
    // A file is on a circle when it reaches itself; one circle per start.
    let mut found: Vec<Vec<String>> = Vec::new();
    for start in edges.keys() {
        let mut seen = BTreeSet::new();
        let mut stack = vec![(start.clone(), vec![start.join("::")])];
        while let Some((at, trail)) = stack.pop() {
            for next in &edges[&at] {
                if next == start {
                    let mut circle = trail.clone();
                    circle.sort();
                    if !found.contains(&circle) {
                        found.push(circle);
                    }
                } else if seen.insert(next.clone()) {
                    let mut t = trail.clone();
                    t.push(next.join("::"));
                    stack.push((next.clone(), t));
                }
            }
        }
    }
    found
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What the deterministic core must not depend on: an async runtime, an
/// actor system, sockets and TLS, Raft, RocksDB.
const IO_CRATES: [&str; 8] =
    ["tokio", "mio", "ractor", "quinn", "rustls", "openraft", "rocksdb", "librocksdb-sys"];

/// The crates of [`IO_CRATES`] that `package` depends on (normal
/// dependencies, with the features a build of `package` alone resolves),
/// from `cargo tree`.
fn io_dependencies_of(package: &str) -> BTreeSet<String> {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["tree", "--offline", "-p", package, "-e", "normal", "--prefix", "none"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo tree: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let names: BTreeSet<&str> = text.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(names.contains(package), "cargo tree did not list {package} itself: {text}");
    IO_CRATES.iter().filter(|c| names.contains(**c)).map(|c| c.to_string()).collect()
}

/// The role core stays free of I/O, so its logic runs the same under a
/// test, the simulation and a node; and the check finds such dependencies
/// where they are (the actors crate, which hosts the core).
#[test]
fn the_role_core_depends_on_no_runtime_socket_raft_or_disk() {
    let core = io_dependencies_of("mlsd-roles");
    assert!(core.is_empty(), "mlsd-roles depends on {core:?}");
    let shells = io_dependencies_of("mlsd-actors");
    assert!(
        shells.len() == IO_CRATES.len(),
        "the check missed some of the shells' I/O: {shells:?}"
    );
}

#[test]
fn no_source_file_is_longer_than_600_lines_besides_its_tests() {
    let mut long = Vec::new();
    for c in CRATES {
        let mut paths = Vec::new();
        sources(&root().join(c).join("src"), &mut paths);
        for p in paths.iter().filter(|p| !is_tests(p)) {
            let n = code(p).lines().count();
            if n > MAX_LINES {
                long.push(format!("{} ({n} lines)", p.strip_prefix(root()).unwrap().display()));
            }
        }
    }
    assert!(long.is_empty(), "longer than {MAX_LINES} lines: {long:?}");
}

#[test]
fn no_file_imports_one_that_imports_it_back() {
    let mut all = Vec::new();
    for c in CRATES {
        for circle in circles(&root().join(c).join("src")) {
            all.push(format!("{c}: {}", circle.join(" <-> ")));
        }
    }
    assert!(all.is_empty(), "import circles: {all:#?}");
}

/// The check can fail: a crate of three files where `a` uses `b`, `b` uses
/// `c` and `c` uses `a` again through `super::` is one circle.
#[test]
fn a_circle_through_super_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\npub mod c;\n").unwrap();
    std::fs::write(src.join("a.rs"), "use crate::b::thing;\n").unwrap();
    std::fs::write(src.join("b.rs"), "use crate::{c::other, c::more as m};\n").unwrap();
    std::fs::write(src.join("c.rs"), "fn f() { super::a::g() }\n").unwrap();
    let found = circles(src);
    assert_eq!(found, vec![vec!["a".to_string(), "b".into(), "c".into()]]);
}
