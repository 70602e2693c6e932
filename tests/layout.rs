//! The source tree keeps the shape `docs/design.md` describes: the memory
//! tier knows nothing of the disk or the on-disk format, `unsafe` code lives
//! only in the named modules, and no source file outgrows what one reader
//! holds in mind.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn crate_sources(sub: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join(sub), &mut out);
    out.sort();
    assert!(!out.is_empty(), "no sources under {sub}");
    out
}

fn relative(path: &Path) -> String {
    path.strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn the_memory_tier_uses_neither_the_disk_tier_nor_the_format() {
    for path in crate_sources("src/memory") {
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap();
            for forbidden in ["disk::", "format::", "tiers::"] {
                assert!(
                    !code.contains(forbidden),
                    "{}:{}: the memory tier reaches into `{forbidden}`: {line}",
                    relative(&path),
                    n + 1
                );
            }
        }
    }
}

#[test]
fn unsafe_code_is_allowed_only_in_the_named_modules() {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    assert!(
        lib.contains("#![deny(unsafe_code)]"),
        "lib.rs denies unsafe code"
    );
    let allowed: Vec<String> = crate_sources("src")
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .contains("allow(unsafe_code)")
        })
        .map(|p| relative(&p))
        .collect();
    assert_eq!(
        allowed,
        ["src/disk/image.rs", "src/disk/io.rs", "src/disk/mapped.rs"]
    );
}

#[test]
fn no_source_file_is_over_800_lines() {
    let mut files = crate_sources("src");
    for sub in ["tests", "cli/src", "benches/benches"] {
        files.extend(crate_sources(sub));
    }
    let long: Vec<String> = files
        .iter()
        .map(|p| {
            (
                relative(p),
                std::fs::read_to_string(p).unwrap().lines().count(),
            )
        })
        .filter(|(_, lines)| *lines > 800)
        .map(|(p, lines)| format!("{p}: {lines} lines"))
        .collect();
    assert!(long.is_empty(), "files over 800 lines: {long:?}");
}
