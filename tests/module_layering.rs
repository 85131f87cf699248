//! No import circles between courtline's folders: the top-level modules, the
//! switchboard's parts and the records service's parts may only import one way
//! (see ARCHITECTURE.md). Reads every `src/**/*.rs`, collects each `crate::…`
//! and `super::…` path (also inside `use crate::{a, b::c}` groups), resolves it
//! to the module it names, and fails naming every circle with the lines behind
//! it, and every import the layering forbids outright. Line scanning, not a
//! parser: comments and string literals are blanked first, which is enough for
//! this code base.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The modules whose children must not import each other in a circle
/// (`[]` is the crate root: the top-level modules).
const LEVELS: [&[&str]; 3] = [&[], &["switchboard"], &["records"]];

/// Imports that go up a floor, forbidden even before they close a circle:
/// (importing module, imported module).
const FORBIDDEN: [(&str, &str); 16] = [
    ("contract", "config"),
    ("contract", "records"),
    ("contract", "switchboard"),
    ("contract", "cli"),
    ("config", "switchboard"),
    ("config", "cli"),
    ("records", "config"),
    ("records", "switchboard"),
    ("records", "cli"),
    ("switchboard", "records"),
    ("switchboard", "cli"),
    ("switchboard::sip", "switchboard::call"),
    ("switchboard::sip", "switchboard::endpoint"),
    ("switchboard::delivery", "switchboard::call"),
    ("switchboard::media", "switchboard::sip"),
    ("switchboard::media", "switchboard::call"),
];

/// A module path, `["switchboard", "call", "flow"]`.
type ModulePath = Vec<String>;

/// One reference from a file to a module: where it is and what it names.
#[derive(Debug, Clone)]
struct Reference {
    /// `switchboard/call/session.rs:33`.
    place: String,
    /// The module it resolved to.
    target: ModulePath,
}

#[test]
fn no_import_circles_between_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    read_tree(&src, &src, &mut files);
    assert!(
        files.len() > 20,
        "read only {} files under src/",
        files.len()
    );
    let uses = uses(&files);
    let circles = circles(&uses);
    assert!(
        circles.is_empty(),
        "import circles between modules (shared types must flow down):\n{}",
        circles.join("\n")
    );
    let upward = forbidden(&uses);
    assert!(
        upward.is_empty(),
        "imports that go up a floor (see ARCHITECTURE.md, Layering):\n{}",
        upward.join("\n")
    );
}

/// Every `.rs` file under `dir` as (path relative to `src`, text).
fn read_tree(src: &Path, dir: &Path, files: &mut Vec<(String, String)>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            read_tree(src, &path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let relative = path.strip_prefix(src).expect("under src");
            files.push((relative.to_string_lossy().replace('\\', "/"), text));
        }
    }
}

/// The module a file under `src/` defines (`None` for `main.rs`, another crate).
fn module_of(file: &str) -> Option<ModulePath> {
    let stem = file.strip_suffix(".rs")?;
    if stem == "main" {
        return None;
    }
    let mut path: ModulePath = stem.split('/').map(str::to_owned).collect();
    if matches!(path.last().map(String::as_str), Some("mod" | "lib")) {
        path.pop();
    }
    Some(path)
}

/// Every reference in `files`, with the module it is made from.
fn uses(files: &[(String, String)]) -> Vec<(ModulePath, Reference)> {
    let modules: BTreeSet<ModulePath> = files.iter().filter_map(|(f, _)| module_of(f)).collect();
    let mut uses = Vec::new();
    for (file, text) in files {
        if let Some(module) = module_of(file) {
            for reference in references(file, &module, text, &modules) {
                uses.push((module.clone(), reference));
            }
        }
    }
    uses
}

/// Each use [`FORBIDDEN`] names, as `a must not use b: <place> uses <module>`.
fn forbidden(uses: &[(ModulePath, Reference)]) -> Vec<String> {
    let within = |module: &[String], prefix: &str| {
        let prefix: Vec<&str> = prefix.split("::").collect();
        module.len() >= prefix.len() && module.iter().zip(&prefix).all(|(a, b)| a == b)
    };
    let mut found = Vec::new();
    for (from, reference) in uses {
        for (lower, upper) in FORBIDDEN {
            if within(from, lower) && within(&reference.target, upper) {
                found.push(format!(
                    "{lower} must not use {upper}: {} uses {}",
                    reference.place,
                    reference.target.join("::")
                ));
            }
        }
    }
    found
}

/// Each circle found, as a line naming its modules and the uses behind each step.
fn circles(uses: &[(ModulePath, Reference)]) -> Vec<String> {
    let mut found = Vec::new();
    for level in LEVELS {
        let level: ModulePath = level.iter().map(|s| s.to_string()).collect();
        // node → (node it uses → first use seen).
        let mut graph: BTreeMap<String, BTreeMap<String, Reference>> = BTreeMap::new();
        for (from, reference) in uses {
            if let (Some(a), Some(b)) =
                (child_of(&level, from), child_of(&level, &reference.target))
            {
                if a != b {
                    graph
                        .entry(a)
                        .or_default()
                        .entry(b)
                        .or_insert_with(|| reference.clone());
                }
            }
        }
        found.extend(cycles(&graph));
    }
    found
}

/// The child of `level` that `module` lies in (`switchboard::call` for
/// `switchboard::call::flow` under `switchboard`), as `a::b` text.
fn child_of(level: &[String], module: &[String]) -> Option<String> {
    (module.len() > level.len() && module.starts_with(level))
        .then(|| module[..=level.len()].join("::"))
}

/// The circles in `graph`, each once, as text.
fn cycles(graph: &BTreeMap<String, BTreeMap<String, Reference>>) -> Vec<String> {
    let mut seen: BTreeSet<BTreeSet<String>> = BTreeSet::new();
    let mut out = Vec::new();
    for start in graph.keys() {
        // Depth-first from `start`, looking for a way back to it.
        let mut stack: Vec<(String, Vec<String>)> = vec![(start.clone(), vec![start.clone()])];
        let mut visited = BTreeSet::new();
        while let Some((node, path)) = stack.pop() {
            for next in graph.get(&node).into_iter().flat_map(|edges| edges.keys()) {
                if next == start {
                    let members: BTreeSet<String> = path.iter().cloned().collect();
                    if seen.insert(members) {
                        out.push(describe(graph, &path));
                    }
                } else if visited.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    out
}

/// `a ⇄ b: <use>; <use>` or `a → b → c → a: <use>; <use>; <use>`.
fn describe(graph: &BTreeMap<String, BTreeMap<String, Reference>>, path: &[String]) -> String {
    let steps: Vec<String> = (0..path.len())
        .map(|i| {
            let (from, to) = (&path[i], &path[(i + 1) % path.len()]);
            let reference = &graph[from][to];
            format!("{} uses {}", reference.place, reference.target.join("::"))
        })
        .collect();
    let names = if path.len() == 2 {
        format!("{} ⇄ {}", path[0], path[1])
    } else {
        let mut names = path.join(" → ");
        names.push_str(&format!(" → {}", path[0]));
        names
    };
    format!("{names}: {}", steps.join("; "))
}

/// The `crate::` and `super::` paths in `text` (the file `file`, defining
/// `module`), each resolved to the longest module in `modules` it names.
fn references(
    file: &str,
    module: &[String],
    text: &str,
    modules: &BTreeSet<ModulePath>,
) -> Vec<Reference> {
    let code = blank_comments_and_strings(text);
    let bytes = code.as_bytes();
    let mut found = Vec::new();
    // Inline `mod name {` blocks open at these brace depths; `super` inside them
    // starts from the inline module.
    let mut inline: Vec<(usize, String)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' => depth += 1,
            b'}' => {
                if inline.last().is_some_and(|(open, _)| *open == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
        let at_word = i == 0 || !is_ident(bytes[i - 1]) && bytes[i - 1] != b':';
        if at_word && bytes[i..].starts_with(b"mod ") {
            let (name, after) = ident(bytes, skip_space(bytes, i + 4));
            if !name.is_empty() && bytes.get(skip_space(bytes, after)) == Some(&b'{') {
                inline.push((depth + 1, name));
            }
        }
        let root = if at_word && bytes[i..].starts_with(b"crate::") {
            Some((Vec::new(), i + "crate::".len()))
        } else if at_word && bytes[i..].starts_with(b"super::") {
            let mut base: ModulePath = module.to_vec();
            base.extend(inline.iter().map(|(_, name)| name.clone()));
            let mut j = i;
            while bytes[j..].starts_with(b"super::") {
                base.pop();
                j += "super::".len();
            }
            Some((base, j))
        } else {
            None
        };
        if let Some((base, start)) = root {
            let line = bytes[..i].iter().filter(|&&b| b == b'\n').count() + 1;
            let mut paths = Vec::new();
            let end = path_tree(bytes, start, &base, &mut paths);
            for path in paths {
                if let Some(target) = (1..=path.len())
                    .rev()
                    .map(|n| path[..n].to_vec())
                    .find(|prefix| modules.contains(prefix))
                {
                    found.push(Reference {
                        place: format!("{file}:{line}"),
                        target,
                    });
                }
            }
            i = end.max(i + 1);
            continue;
        }
        i += 1;
    }
    found
}

/// Reads `a::b::{c, d::{e, self}}` from `at`, pushing each full path (after
/// `prefix`) to `out`; returns where it stopped.
fn path_tree(bytes: &[u8], at: usize, prefix: &[String], out: &mut Vec<ModulePath>) -> usize {
    let mut path = prefix.to_vec();
    let mut i = at;
    loop {
        i = skip_space(bytes, i);
        if bytes.get(i) == Some(&b'{') {
            i += 1;
            loop {
                i = skip_space(bytes, i);
                match bytes.get(i) {
                    None => return i,
                    Some(b'}') => return i + 1,
                    Some(b',') => i += 1,
                    Some(_) => {
                        let before = i;
                        i = path_tree(bytes, i, &path, out);
                        if i == before {
                            i += 1;
                        }
                    }
                }
            }
        }
        let (name, after) = ident(bytes, i);
        if name.is_empty() {
            break;
        }
        if name != "self" {
            path.push(name);
        }
        i = after;
        if bytes[i..].starts_with(b"::") {
            i += 2;
        } else {
            break;
        }
    }
    out.push(path);
    i
}

fn is_ident(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

fn skip_space(bytes: &[u8], mut i: usize) -> usize {
    while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

/// The identifier at `at` and the index after it (empty if none).
fn ident(bytes: &[u8], at: usize) -> (String, usize) {
    let mut end = at;
    while bytes.get(end).copied().is_some_and(is_ident) {
        end += 1;
    }
    (String::from_utf8_lossy(&bytes[at..end]).into_owned(), end)
}

/// `text` with comments, string and char literals replaced by spaces (newlines
/// kept, so line numbers still hold). Rough: raw strings `r"…"`/`r#"…"#` and
/// escapes are handled, lifetimes are told from char literals by their closing quote.
fn blank_comments_and_strings(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let start = i;
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                i += 1;
            }
            i = (i + 2).min(chars.len());
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && (i == 0 || !is_ident_char(chars[i - 1]))
        {
            let hashes = chars[i + 1..].iter().take_while(|&&h| h == '#').count();
            if chars.get(i + 1 + hashes) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            i += 2 + hashes;
            let closing: Vec<char> = std::iter::once('"')
                .chain((0..hashes).map(|_| '#'))
                .collect();
            while i < chars.len() && !chars[i..].starts_with(&closing) {
                i += 1;
            }
            i = (i + closing.len()).min(chars.len());
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i = (i + 1).min(chars.len());
        } else if c == '\'' && next == Some('\\') {
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i = (i + 1).min(chars.len());
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            i += 3;
        } else {
            out.push(c);
            i += 1;
            continue;
        }
        out.extend(chars[start..i].iter().map(|&c| blank(c)));
    }
    out
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

#[cfg(test)]
mod checker {
    use super::*;

    /// A tiny tree in memory: (path under src, text).
    fn tree(files: &[(&str, &str)]) -> Vec<(String, String)> {
        files
            .iter()
            .map(|(path, text)| (path.to_string(), text.to_string()))
            .collect()
    }

    fn small_tree(sip_guard: &str) -> Vec<(String, String)> {
        tree(&[
            ("lib.rs", "pub mod contract;\npub mod switchboard;\n"),
            ("contract/mod.rs", "pub mod pb {}\n"),
            ("switchboard/mod.rs", "pub mod call;\npub mod sip;\n"),
            (
                "switchboard/call/mod.rs",
                "pub mod flow;\npub mod session;\n",
            ),
            (
                "switchboard/call/flow.rs",
                "use crate::contract::pb::CallRecord;\n",
            ),
            (
                "switchboard/call/session.rs",
                "use super::flow::CallFlow;\nuse crate::switchboard::{sip::leg, call::flow};\n",
            ),
            ("switchboard/sip/mod.rs", "pub mod guard;\npub mod leg;\n"),
            ("switchboard/sip/leg.rs", "use crate::contract::pb;\n"),
            ("switchboard/sip/guard.rs", sip_guard),
        ])
    }

    #[test]
    fn a_tree_that_imports_one_way_passes() {
        let guard = "use super::leg;\n// crate::switchboard::call::flow in a comment\n\
                     const A: &str = \"crate::switchboard::call::flow\";\n";
        assert_eq!(circles(&uses(&small_tree(guard))), Vec::<String>::new());
    }

    #[test]
    fn a_planted_circle_is_named_with_its_lines() {
        let guard = "use super::leg;\n\nfn f() { crate::switchboard::call::flow::run() }\n";
        let found = circles(&uses(&small_tree(guard)));
        assert_eq!(
            found,
            vec!["switchboard::call ⇄ switchboard::sip: \
                 switchboard/call/session.rs:2 uses switchboard::sip::leg; \
                 switchboard/sip/guard.rs:3 uses switchboard::call::flow"
                .to_string()]
        );
    }

    #[test]
    fn circles_through_super_groups_and_longer_rings_are_found() {
        let files = tree(&[
            ("lib.rs", "pub mod a;\npub mod b;\npub mod c;\n"),
            ("a.rs", "use crate::{b::X, b::inner};\n"),
            ("b/mod.rs", "pub mod inner;\n"),
            (
                "b/inner.rs",
                "mod tests {\n    use super::super::super::c::Y;\n}\n",
            ),
            ("c.rs", "fn f() { let _ = crate::a::Z; }\n"),
        ]);
        let found = circles(&uses(&files));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("a → b → c → a: a.rs:1 uses b;"),
            "{found:?}"
        );
        assert!(found[0].contains("b/inner.rs:2 uses c"), "{found:?}");
    }

    #[test]
    fn an_upward_import_is_named_even_without_a_circle() {
        let files = tree(&[
            ("lib.rs", "pub mod switchboard;\n"),
            ("switchboard/mod.rs", "pub mod call;\npub mod sip;\n"),
            ("switchboard/call/mod.rs", "pub mod flow;\n"),
            ("switchboard/call/flow.rs", ""),
            (
                "switchboard/sip/mod.rs",
                "\nuse crate::switchboard::call::flow::CallFlow;\n",
            ),
        ]);
        let found = uses(&files);
        assert_eq!(circles(&found), Vec::<String>::new());
        assert_eq!(
            forbidden(&found),
            vec!["switchboard::sip must not use switchboard::call: \
                 switchboard/sip/mod.rs:2 uses switchboard::call::flow"
                .to_string()]
        );
        assert_eq!(
            forbidden(&uses(&small_tree("use super::leg;\n"))),
            Vec::<String>::new()
        );
    }

    #[test]
    fn comments_strings_and_chars_are_blanked_keeping_lines() {
        let text = "a // crate::x\nb \"crate::y\\\"\" '\"' r#\"crate::z\"# 'a' c /* crate::w */";
        let blanked = blank_comments_and_strings(text);
        assert!(!blanked.contains("crate"), "{blanked}");
        assert_eq!(blanked.lines().count(), 2);
        assert!(blanked.contains('c'));
    }
}
