//! End-to-end area `package`: the Debian package (`make deb`'s metadata,
//! built by `scripts/e2e` with `scripts/deb --dev` and named by
//! `ZOFFSITE_DEB`) installed with dpkg as an operator would: the binary
//! runs, the man pages are found, the completions load, the packaged units
//! pass `systemd-analyze verify` against the installed binary and are not
//! enabled, no maintainer script exists, and it removes cleanly.
//!
//! It installs into the system, so it runs only in the project's VM
//! (`ZOFFSITE_VM=1`, whose root is a throwaway overlay), or where
//! `ZOFFSITE_E2E_DPKG=1` says a real host may get the package:
//! `scripts/e2e --area package`.

use std::path::Path;

use crate::harness::*;

const UNIT_DIR: &str = "/usr/lib/systemd/system";

fn sh(argv: &[&str]) -> (bool, String) {
    let out = run(argv);
    (out.status.success(), text(&out))
}

#[test]
#[ignore = "needs root and installs a package: run `scripts/e2e --area package`"]
fn the_deb_installs_runs_and_its_units_verify() {
    let deb = std::env::var("ZOFFSITE_DEB")
        .expect("ZOFFSITE_DEB names the .deb to install: run `scripts/e2e --area package`, which builds it");
    assert!(
        std::env::var("ZOFFSITE_VM").as_deref() == Ok("1") || std::env::var("ZOFFSITE_E2E_DPKG").as_deref() == Ok("1"),
        "this test installs a package into the system: it runs in the VM, or with ZOFFSITE_E2E_DPKG=1"
    );
    let (installed_before, _) = sh(&["dpkg-query", "-W", "zoffsite"]);
    assert!(!installed_before, "zoffsite is already installed here: the test would remove it");

    // dpkg -i, with nothing else: its only dependency is libc6.
    let started = std::time::Instant::now();
    let (ok_install, said) = sh(&["env", "DEBIAN_FRONTEND=noninteractive", "dpkg", "-i", &deb]);
    assert!(ok_install, "dpkg -i {deb}:\n{said}");
    eprintln!("dpkg -i took {:?}", started.elapsed());
    let status = ok(&["dpkg-query", "-W", "-f", "${Status} ${Version}", "zoffsite"]);
    assert_eq!(status, format!("install ok installed {}-1", env!("CARGO_PKG_VERSION")));

    // No maintainer script: nothing is enabled or started on install.
    let control = ok(&["dpkg-query", "--control-list", "zoffsite"]);
    for script in ["preinst", "postinst", "prerm", "postrm"] {
        assert!(!control.lines().any(|l| l == script), "the package has a {script}: {control}");
    }

    // The binary, where the packaged units run it.
    let version = ok(&["/usr/bin/zoffsite", "--version"]);
    assert_eq!(version.trim(), format!("zoffsite {}", env!("CARGO_PKG_VERSION")));

    // The man pages, one per command, found by man.
    let files = ok(&["dpkg-query", "-L", "zoffsite"]);
    let pages: Vec<&str> = files.lines().filter(|l| l.starts_with("/usr/share/man/man1/")).collect();
    let committed = std::fs::read_dir(repo_root().join("dist/man")).unwrap().count();
    assert_eq!(pages.len(), committed, "{pages:?}");
    if Path::new("/usr/bin/man").exists() {
        assert_eq!(ok(&["man", "-w", "zoffsite"]).trim(), "/usr/share/man/man1/zoffsite.1.gz");
        assert_eq!(ok(&["man", "-w", "zoffsite-box-new"]).trim(), "/usr/share/man/man1/zoffsite-box-new.1.gz");
        let page = ok(&["env", "MANWIDTH=80", "man", "--pager=cat", "zoffsite-box-new"]);
        assert!(page.contains("--endpoint"), "{page}");
    } else {
        eprintln!("no man-db here: checking the files only");
        assert!(pages.contains(&"/usr/share/man/man1/zoffsite.1.gz"), "{pages:?}");
    }

    // The bash completion loads and completes the command.
    let complete =
        ok(&["bash", "-c", "source /usr/share/bash-completion/completions/zoffsite && complete -p zoffsite"]);
    assert!(complete.contains("-F _zoffsite zoffsite"), "{complete}");
    for f in ["/usr/share/zsh/vendor-completions/_zoffsite", "/usr/share/fish/vendor_completions.d/zoffsite.fish"] {
        assert!(files.lines().any(|l| l == f), "{f} not installed:\n{files}");
    }
    for f in ["/usr/share/doc/zoffsite/examples/zoffsite.toml", "/usr/share/doc/zoffsite/copyright"] {
        assert!(Path::new(f).is_file(), "{f}");
    }

    // The units: exactly dist/systemd's, verified by systemd against the
    // installed binary (ExecStart= must exist), and not enabled.
    let mut units: Vec<&str> =
        files.lines().filter(|l| l.starts_with(UNIT_DIR) && l.len() > UNIT_DIR.len() + 1).collect();
    units.sort_unstable();
    let mut expected: Vec<String> = std::fs::read_dir(repo_root().join("dist/systemd"))
        .unwrap()
        .map(|e| format!("{UNIT_DIR}/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    expected.sort();
    assert_eq!(units, expected);
    let mut verify = vec!["systemd-analyze", "verify", "--man=no"];
    verify.extend(&units);
    let started = std::time::Instant::now();
    let (verified, said) = sh(&verify);
    eprintln!("systemd-analyze verify took {:?}", started.elapsed());
    assert!(verified, "systemd-analyze verify failed:\n{said}");
    let ours: Vec<&str> = said.lines().filter(|l| l.contains("zoffsite")).collect();
    assert!(ours.is_empty(), "systemd-analyze verify warns about the packaged units:\n{}", ours.join("\n"));
    // The timers (which have an [Install] section) are disabled; the
    // services have none ("static": only their timers start them).
    for unit in &units {
        let name = Path::new(unit).file_name().unwrap().to_str().unwrap();
        let (_, said) = sh(&["systemctl", "--root=/", "is-enabled", name]);
        let want = if name.ends_with(".timer") { "disabled" } else { "static" };
        assert!(said.contains(&format!("stdout:\n{want}\n")), "{name} should be {want} after install:\n{said}");
    }
    assert!(units.iter().filter(|u| u.ends_with(".timer")).count() >= 4, "{units:?}");

    // It removes cleanly, binary and units with it.
    let (removed, said) = sh(&["env", "DEBIAN_FRONTEND=noninteractive", "dpkg", "--purge", "zoffsite"]);
    assert!(removed, "dpkg --purge zoffsite:\n{said}");
    assert!(!Path::new("/usr/bin/zoffsite").exists());
    assert!(units.iter().all(|u| !Path::new(u).exists()));
}
