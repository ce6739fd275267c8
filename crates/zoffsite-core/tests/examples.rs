//! Every configuration a user may copy parses: the shipped examples
//! (`examples/`), and every ```toml block in README.md, docs/ and the
//! module docs of this crate. A block the test cannot place fails it, so a
//! new kind of example cannot go unchecked.

use std::path::{Path, PathBuf};

use zoffsite_core::boxside::BoxConfig;
use zoffsite_core::config::Config;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The ```toml blocks of a Markdown text, or of Rust module docs (`//! `).
fn toml_blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut block: Option<String> = None;
    for line in text.lines() {
        let line = line.strip_prefix("//!").map_or(line, |l| l.strip_prefix(' ').unwrap_or(l));
        match (&mut block, line.trim_end()) {
            (None, "```toml") => block = Some(String::new()),
            (Some(b), "```") => {
                out.push(std::mem::take(b));
                block = None;
            }
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(block.is_none(), "an unclosed ```toml block");
    out
}

fn has_line(text: &str, start: &str) -> bool {
    text.lines().any(|l| l.trim_start().starts_with(start))
}

/// A whole source config without `[source.keep]` or `[notify]`, that a
/// fragment (a `[source.keep]`, a `[notify]`, a target's bandwidth keys) is
/// checked inside.
const BASE: &str = "[source]\ndatasets = [\"tank/data\"]\n\n[[target]]\nname = \"friend\"\nhost = \"10.77.0.2\"\nuser = \"zoffsite\"\nidentity_file = \"/k\"\nknown_hosts = \"/h\"\n";

/// Parses `block` as what it is.
fn check(origin: &str, block: &str) {
    let r = if has_line(block, "[source]") {
        Config::parse(block).map(drop).map_err(|e| e.to_string())
    } else if has_line(block, "root =") {
        BoxConfig::parse(block).map(drop).map_err(|e| e.to_string())
    } else if block.trim_start().starts_with("[source.keep]")
        || block.trim_start().starts_with("[notify]")
        || block.trim_start().starts_with("bandwidth_limit")
        || block.trim_start().starts_with("congestion_control")
        || has_line(block, "[[target.bandwidth_window]]")
    {
        // A fragment: the keep policy, [notify], or a target's bandwidth or
        // congestion control keys (BASE
        // ends inside its [[target]]).
        Config::parse(&format!("{BASE}\n{block}")).map(drop).map_err(|e| e.to_string())
    } else {
        panic!("{origin}: a ```toml block this test cannot place; teach it:\n{block}")
    };
    if let Err(e) = r {
        panic!("{origin}: does not parse ({e}):\n{block}");
    }
}

#[test]
fn the_shipped_examples_parse_and_set_every_key() {
    let source = read("examples/zoffsite.toml");
    let c = Config::parse(&source).unwrap();
    let t = &c.targets[0];
    assert!(c.source.keep.is_some() && !t.bandwidth.windows().is_empty(), "the example shows the optional keys too");
    assert_ne!(t.bandwidth.default_limit(), zoffsite_core::bandwidth::Limit::Unlimited);
    // `[notify]` is shown commented out (it needs the user's own program
    // and URL); uncommented, it parses and sets every key.
    let notify: String = source
        .lines()
        .skip_while(|l| *l != "# [notify]")
        .map_while(|l| l.strip_prefix("# "))
        .map(|l| format!("{l}\n"))
        .collect();
    let n = Config::parse(&format!("{source}\n{notify}")).unwrap().notify;
    assert!(
        n.on_failure.is_some() && n.on_success.is_some() && n.on_start.is_some() && n.ping_url.is_some(),
        "{notify}"
    );
    let boxed = BoxConfig::parse(&read("examples/box.toml")).unwrap();
    assert!(boxed.keep.is_some() && !boxed.notify.is_empty());
    assert_eq!(boxed.journal, Path::new(zoffsite_core::journal::DEFAULT_PATH), "the example names the default");
}

#[test]
fn every_config_shown_in_the_docs_parses() {
    let mut files: Vec<String> = vec!["README.md".into()];
    for dir in ["docs", "crates/zoffsite-core/src"] {
        let mut names: Vec<String> = std::fs::read_dir(repo().join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".md") || n.ends_with(".rs"))
            .map(|n| format!("{dir}/{n}"))
            .collect();
        names.sort();
        files.extend(names);
    }
    let mut checked = 0;
    for f in &files {
        for (i, b) in toml_blocks(&read(f)).iter().enumerate() {
            check(&format!("{f}, block {}", i + 1), b);
            checked += 1;
        }
    }
    // README's source config, its [source.keep] and box.toml; the box
    // config and retention examples in the module docs.
    assert!(checked >= 5, "only {checked} blocks found: did the docs move?");
}

#[test]
fn a_wrong_example_is_caught() {
    // The test itself: a typo in a shown config must fail it, and the
    // fragment base on its own is a valid config.
    check("base", BASE);
    check("test", "[source.keep]\nlast = 3\n");
    let r = std::panic::catch_unwind(|| check("test", "[source.keep]\nlsat = 3\n"));
    assert!(r.is_err());
    let r = std::panic::catch_unwind(|| check("test", "root = \"offsite/home\"\nmin_age = \"a week\"\n"));
    assert!(r.is_err());
    check("test", "[[target.bandwidth_window]]\nfrom = \"01:00\"\nto = \"06:00\"\nlimit = \"unlimited\"\n");
    let r = std::panic::catch_unwind(|| {
        check("test", "[[target.bandwidth_window]]\nfrom = \"01:00\"\nto = \"06:00\"\nlimit = \"20Mb/s\"\n");
    });
    assert!(r.is_err());
}
