//! The packages' definitions checked against each other and against the
//! repository, without building either (`scripts/package-check` builds
//! both and compares their file lists; the `package` end-to-end area
//! installs the Debian one in the VM):
//!
//! - the Debian package (`[package.metadata.deb]` in crates/zoffsite's
//!   Cargo.toml) installs every generated file of dist/ and the binary where
//!   the packaged units run it ([`PACKAGE_EXE`]), and each of its sources
//!   exists;
//! - the Arch PKGBUILD builds this version;
//! - the license files are the manifest's (`MIT OR Apache-2.0`) and each
//!   published crate packages them.

use std::path::{Path, PathBuf};

use zoffsite_core::provision::PACKAGE_EXE;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn repo() -> PathBuf {
    crate_dir().join("../..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The deb's assets: (source relative to the crate, destination, mode).
fn deb_assets() -> Vec<(String, String, String)> {
    let manifest: toml::Table = read(&crate_dir().join("Cargo.toml")).parse().unwrap();
    let deb = &manifest["package"]["metadata"]["deb"];
    deb["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let a: Vec<&str> = a.as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
            assert_eq!(a.len(), 3, "{a:?}");
            (a[0].to_owned(), a[1].to_owned(), a[2].to_owned())
        })
        .collect()
}

/// Whether `name` matches `pattern`, whose only wildcard is `*` (as the
/// assets use it: in the last component).
fn matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((pre, post)) => {
            name.len() >= pre.len() + post.len()
                && name.starts_with(pre)
                && name.ends_with(post)
                && !name[pre.len()..name.len() - post.len()].contains('/')
        }
    }
}

#[test]
fn the_deb_installs_every_generated_file() {
    let assets = deb_assets();
    for sub in ["man", "completions", "systemd"] {
        let dir = repo().join("dist").join(sub);
        let entries: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(!entries.is_empty(), "{} is empty", dir.display());
        for name in entries {
            let source = format!("../../dist/{sub}/{}", name.to_string_lossy());
            assert!(
                assets.iter().any(|(pattern, _, _)| matches(pattern, &source)),
                "the deb does not install {source}"
            );
        }
    }
    for (source, dest, mode) in &assets {
        if source.starts_with("target/") {
            continue;
        }
        let dir = crate_dir().join(Path::new(source).parent().unwrap());
        let file = Path::new(source).file_name().unwrap().to_str().unwrap();
        let found = std::fs::read_dir(&dir).unwrap().any(|e| matches(file, e.unwrap().file_name().to_str().unwrap()));
        assert!(found, "asset {source} matches no file");
        assert!(!dest.starts_with('/') && !dest.starts_with("etc/"), "{dest}: under usr/, and no conffile");
        assert_eq!(mode, "644", "{source}");
    }
}

#[test]
fn the_deb_puts_the_binary_where_the_packaged_units_run_it() {
    let assets = deb_assets();
    let bin = assets.iter().find(|(s, _, _)| s == "target/release/zoffsite").expect("the binary is an asset");
    assert_eq!(format!("/{}zoffsite", bin.1), PACKAGE_EXE);
    assert_eq!(bin.2, "755");
    let manifest: toml::Table = read(&crate_dir().join("Cargo.toml")).parse().unwrap();
    let deb = manifest["package"]["metadata"]["deb"].as_table().unwrap();
    // Nothing is enabled or started on install: no maintainer scripts, and
    // not cargo-deb's systemd integration (which adds them).
    for key in ["maintainer-scripts", "systemd-units", "conf-files"] {
        assert!(!deb.contains_key(key), "[package.metadata.deb] has {key}");
    }
}

#[test]
fn the_pkgbuild_builds_this_version() {
    let pkgbuild = read(&repo().join("dist/arch/PKGBUILD"));
    let field = |name: &str| {
        pkgbuild
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("PKGBUILD has no {name}="))
            .to_owned()
    };
    assert_eq!(field("pkgver"), env!("CARGO_PKG_VERSION"), "dist/arch/PKGBUILD's pkgver");
    assert_eq!(field("pkgname"), "zoffsite");
    assert_eq!(field("license"), format!("('{}')", env!("CARGO_PKG_LICENSE")));
    // It installs the binary where the packaged units run it.
    assert!(pkgbuild.contains("install -Dm755 target/release/zoffsite -t \"$pkgdir/usr/bin/\""), "{pkgbuild}");
    assert_eq!(PACKAGE_EXE, "/usr/bin/zoffsite");
}

#[test]
fn license_files_match_the_manifest() {
    assert_eq!(env!("CARGO_PKG_LICENSE"), "MIT OR Apache-2.0");
    let mit = read(&repo().join("LICENSE-MIT"));
    assert!(mit.starts_with("MIT License\n\nCopyright (c) the zoffsite authors\n"), "{mit}");
    assert!(mit.contains("THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND"));
    let apache = read(&repo().join("LICENSE-APACHE"));
    assert!(apache.contains("Apache License\n                           Version 2.0, January 2004"), "LICENSE-APACHE");
    assert!(apache.contains("END OF TERMS AND CONDITIONS"));
    // Each published crate packages both (symbolic links, which `cargo
    // package` follows).
    for krate in ["zoffsite", "zoffsite-core", "zoffsite-exec"] {
        for file in ["LICENSE-MIT", "LICENSE-APACHE"] {
            let path = repo().join("crates").join(krate).join(file);
            assert_eq!(read(&path), read(&repo().join(file)), "{}", path.display());
        }
    }
}

#[test]
fn the_asset_pattern_matcher() {
    assert!(matches("../../dist/man/*.1", "../../dist/man/zoffsite-box-new.1"));
    assert!(!matches("../../dist/man/*.1", "../../dist/man/sub/x.1"));
    assert!(!matches("../../dist/man/*.1", "../../dist/man/zoffsite.1.gz"));
    assert!(matches("../../README.md", "../../README.md"));
    assert!(!matches("../../README.md", "../../README.mdx"));
}
