//! The host's modules depend on each other in one direction.
//!
//! The rule: no module of `host/src` refers, by a `crate::` or `super::`
//! path in its code, to a module that refers back to it, directly or
//! through others. Comments, doc links and `#[cfg(test)]` items do not
//! count (a doc link explains; a test may reach anywhere), and neither do
//! references between a module and its own ancestors or descendants (a
//! parent declares its children and re-exports their items; a child may
//! use what its parent defines). A cycle is reported with every edge of
//! it, so that the helper in the wrong place can be moved.
//!
//! The parser is deliberately small: it reads `crate::a::b` and
//! `super::a` paths and `use crate::{a, b::{c, d}}` trees, and resolves
//! each to the longest module prefix that exists.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`report::markdown`; the crate root is empty) -> its
/// source, without comments and test items.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    let mut test_files = BTreeSet::new();
    let mut files = Vec::new();
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read host/src") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    for p in &files {
        let rel = p.strip_prefix(src).unwrap().with_extension("");
        let mut parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if matches!(
            parts.last().map(String::as_str),
            Some("mod" | "lib" | "main")
        ) {
            parts.pop();
        }
        let (code, tests) = code_of(&std::fs::read_to_string(p).expect("read source"));
        let name = parts.join("::");
        for t in tests {
            // `#[cfg(test)] mod t;`: the file of child `t` is a test.
            test_files.insert(if name.is_empty() {
                t
            } else {
                format!("{name}::{t}")
            });
        }
        out.insert(name, code);
    }
    out.retain(|m, _| !test_files.contains(m));
    out
}

/// The source without `//` comments and `#[cfg(test)]` items, and the
/// names of child modules declared as tests (`#[cfg(test)] mod x;`).
fn code_of(text: &str) -> (String, Vec<String>) {
    let lines: Vec<&str> = text
        .lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect();
    let mut code = String::new();
    let mut tests = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() == "#[cfg(test)]" {
            i += 1;
            // Skip the item: one line ending in `;`, or up to its closing
            // brace.
            let mut depth = 0i32;
            let mut opened = false;
            while i < lines.len() {
                let l = lines[i];
                if !opened && l.trim_end().ends_with(';') {
                    if let Some(rest) = l.trim().strip_prefix("mod ") {
                        tests.push(rest.trim_end_matches(';').trim().to_string());
                    }
                    i += 1;
                    break;
                }
                depth += l.matches('{').count() as i32 - l.matches('}').count() as i32;
                opened |= l.contains('{');
                i += 1;
                if opened && depth <= 0 {
                    break;
                }
            }
            continue;
        }
        code.push_str(lines[i]);
        code.push('\n');
        i += 1;
    }
    (code, tests)
}

/// Every `crate::`/`super::` path in `code`, as segments (`crate` or
/// `super` first), with `{...}` use trees expanded.
fn paths(code: &str) -> Vec<Vec<String>> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let start_ok = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        let head = ["crate::", "super::"]
            .into_iter()
            .find(|h| b[i..].starts_with(h.as_bytes()));
        match head {
            Some(h) if start_ok => {
                let (tree, end) = use_tree(code, i + h.len());
                for mut p in tree {
                    p.insert(0, h.trim_end_matches("::").to_string());
                    out.push(p);
                }
                i = end;
            }
            _ => i += 1,
        }
    }
    out
}

/// Parses a path or a `{...}` tree at `i`; returns its paths (segments)
/// and where it ends.
fn use_tree(code: &str, mut i: usize) -> (Vec<Vec<String>>, usize) {
    let b = code.as_bytes();
    let mut prefix = Vec::new();
    loop {
        if b.get(i) == Some(&b'{') {
            let mut all = Vec::new();
            i += 1;
            loop {
                while b
                    .get(i)
                    .is_some_and(|c| c.is_ascii_whitespace() || *c == b',')
                {
                    i += 1;
                }
                if b.get(i).is_none_or(|c| *c == b'}') {
                    return (
                        all.into_iter()
                            .map(|p: Vec<String>| [prefix.clone(), p].concat())
                            .collect(),
                        i + 1,
                    );
                }
                let (sub, end) = use_tree(code, i);
                all.extend(sub);
                // Skip `as name` and anything else up to `,` or `}`.
                i = end;
                while b.get(i).is_some_and(|c| *c != b',' && *c != b'}') {
                    if b[i] == b'{' {
                        break;
                    }
                    i += 1;
                }
            }
        }
        let s = i;
        while b
            .get(i)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
        {
            i += 1;
        }
        if i == s {
            return (vec![prefix], i);
        }
        prefix.push(code[s..i].to_string());
        if code[i..].starts_with("::") {
            i += 2;
        } else {
            return (vec![prefix], i);
        }
    }
}

/// Module -> the modules it refers to (resolved, self and ancestors and
/// descendants left out).
fn edges(mods: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let related = |a: &str, b: &str| {
        a == b
            || a.is_empty()
            || b.is_empty()
            || a.starts_with(&format!("{b}::"))
            || b.starts_with(&format!("{a}::"))
    };
    let mut out = BTreeMap::new();
    for (m, code) in mods {
        let here: Vec<&str> = if m.is_empty() {
            vec![]
        } else {
            m.split("::").collect()
        };
        let mut to = BTreeSet::new();
        for p in paths(code) {
            let mut segs: Vec<String> = match p[0].as_str() {
                "crate" => vec![],
                _ => here[..here.len().saturating_sub(1)]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            };
            segs.extend(p[1..].iter().filter(|s| *s != "self").cloned());
            let target = (1..=segs.len())
                .rev()
                .map(|k| segs[..k].join("::"))
                .find(|c| mods.contains_key(c));
            if let Some(t) = target.filter(|t| !related(m, t)) {
                to.insert(t);
            }
        }
        out.insert(m.clone(), to);
    }
    out
}

/// A cycle through `start`, as its modules in order, if there is one.
fn cycle_from(start: &str, g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn dfs(
        v: &str,
        start: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for w in &g[v] {
            if w == start {
                return true;
            }
            if seen.insert(w.clone()) {
                path.push(w.clone());
                if dfs(w, start, g, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    dfs(start, start, g, &mut path, &mut BTreeSet::new()).then_some(path)
}

/// Asserts that the modules under `src` (a crate's `src/`) form no cycle,
/// after checking that the parser found at least `min` modules and the
/// `known` edges.
fn assert_no_cycle(src: &Path, min: usize, known: &[(&str, &str)]) {
    let mods = modules(src);
    assert!(
        mods.len() >= min,
        "found {} modules in {}",
        mods.len(),
        src.display()
    );
    let g = edges(&mods);
    // The parser sees the edges it must: a few known ones.
    for (a, b) in known {
        assert!(g[*a].contains(*b), "{a} -> {b} not found: {:?}", g[*a]);
    }
    let cycles: Vec<String> = g
        .keys()
        .filter_map(|m| cycle_from(m, &g))
        .map(|c| format!("{} -> {}", c.join(" -> "), c[0]))
        .collect();
    assert!(
        cycles.is_empty(),
        "module cycles in {} (move the helper that closes each to a module below both):\n{}",
        src.display(),
        cycles.join("\n")
    );
}

#[test]
fn the_host_modules_have_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    assert_no_cycle(
        &src,
        20,
        &[
            ("run::runner", "run::launch"),
            ("run::cell", "measure::scenario"),
        ],
    );
}

#[test]
fn the_report_modules_have_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../report/src");
    assert_no_cycle(
        &src,
        10,
        &[("markdown", "lifecycle"), ("compare", "analysis")],
    );
}

#[test]
fn the_parser_reads_paths_trees_and_tests() {
    let (code, tests) = code_of(
        "use crate::{a::X, b::{c, d::Y as Z}};\n// crate::commented\nfn f() { super::e::g(); }\n#[cfg(test)]\nmod t;\n#[cfg(test)]\nmod tests {\n    use crate::h;\n}\n",
    );
    assert_eq!(tests, vec!["t".to_string()]);
    let got: Vec<String> = paths(&code).iter().map(|p| p.join("::")).collect();
    assert_eq!(
        got,
        vec![
            "crate::a::X",
            "crate::b::c",
            "crate::b::d::Y",
            "super::e::g"
        ]
    );
    // A cycle is found, with its modules in order.
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(cycle_from("a", &g).unwrap(), vec!["a", "b", "c"]);
    assert_eq!(cycle_from("d", &g), None);
}

/// The workspace's packages, from `cargo metadata --no-deps`.
fn packages() -> Vec<serde_json::Value> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let o = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(&root)
        .output()
        .expect("run cargo metadata");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&o.stdout).expect("metadata JSON");
    meta["packages"].as_array().expect("packages").clone()
}

/// The result schema is read by reports, `compare`, dashboards and CI
/// gates: it stays pure data, with no way to the plugins, telemetry
/// back-ends or HTTP stacks of the binary.
#[test]
fn the_result_schema_depends_only_on_the_format_and_statistics() {
    let extra = extra_dependencies(
        "engine-matrix-results",
        &[
            "engine-matrix-format",
            "engine-matrix-stats",
            "serde",
            "serde_json",
            "thiserror",
        ],
    );
    assert!(
        extra.is_empty(),
        "engine-matrix-results depends on {extra:?}"
    );
}

/// The normal (not dev, not build) dependencies of workspace crate
/// `name` that are not in `allowed`.
fn extra_dependencies(name: &str, allowed: &[&str]) -> Vec<String> {
    let packages = packages();
    let p = packages
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{name} is a workspace member"));
    p["dependencies"]
        .as_array()
        .expect("dependencies")
        .iter()
        .filter(|d| d["kind"].is_null())
        .filter_map(|d| d["name"].as_str())
        .filter(|n| !allowed.contains(n))
        .map(str::to_string)
        .collect()
}

/// The reports read results only: no plugins, telemetry back-ends, HTTP
/// or async runtime. The grade crate is pure too (a target's value and
/// verdict from a cell's results); the dashboard's trend reads metrics
/// through it.
#[test]
fn the_reports_depend_only_on_results_and_drawing() {
    let extra = extra_dependencies(
        "engine-matrix-reports",
        &[
            "engine-matrix-format",
            "engine-matrix-grade",
            "engine-matrix-results",
            "engine-matrix-stats",
            "plotters",
            "serde",
            "serde_json",
            "thiserror",
        ],
    );
    assert!(
        extra.is_empty(),
        "engine-matrix-reports depends on {extra:?}"
    );
}

/// Crates: cargo refuses a cycle of normal dependencies itself, but not
/// one closed through a dev-dependency. The rule here: no workspace crate
/// depends on the `engine-matrix` binary crate in any way (engines' tests
/// use `engine-matrix-test-support`), so the host stays the top of the
/// graph.
#[test]
fn no_crate_depends_on_the_host() {
    let packages = packages();
    assert!(packages.len() > 10, "{} packages", packages.len());
    let users: Vec<&str> = packages
        .iter()
        .filter(|p| {
            p["dependencies"]
                .as_array()
                .is_some_and(|d| d.iter().any(|d| d["name"] == "engine-matrix"))
        })
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        users.is_empty(),
        "crates that depend on the host: {users:?}"
    );
}
