//! `zoffsite box apply` installing a real bundle (`bundle::for_box` over
//! fixed inputs) into a temporary `--root`, as any user: `--root` implies
//! `--offline`, and a fake `systemctl` first on PATH records its argv.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use zoffsite_core::boxinit::PublicKey;
use zoffsite_core::names::Dataset;
use zoffsite_core::provision::bundle::{self, BoxSecrets, Bundle, Secret};
use zoffsite_core::provision::values::{BoxName, BoxRoot, Endpoint, HostKey, WgKey};
use zoffsite_core::provision::{Inputs, Keys};

const WG_SECRET: &str = "eBoxWgPrivateKeyBase64xxxxxxxxxxxxxxxxxxxxx=\n";
const HOST_SECRET: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nboxhostkey\n-----END OPENSSH PRIVATE KEY-----\n";

fn the_bundle() -> Bundle {
    let keys = Keys {
        source_wg: WgKey::new("dRxa9htU+RVUuCymxLHBa675zq3mKpdXLAGKijKxuTo=").unwrap(),
        box_wg: WgKey::new("Hz64cXtZeK1304qYfOILdM5dNHCFy3q7C2DJM+rRU04=").unwrap(),
        box_host: HostKey::new(
            PublicKey::parse(
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIju/YVsKQHDF/eu9Sr8hjh1SzVn3gBUhwpLjT5zxG2B box-host",
            )
            .unwrap(),
        )
        .unwrap(),
        source_ssh: PublicKey::parse(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH0nK8sOTxp3TwKquMXrnsesaBBFG1ALsl9V95Jhbzm4 root@home",
        )
        .unwrap(),
    };
    let i = Inputs::new(
        BoxName::new("friend").unwrap(),
        Endpoint::parse("home.example.org:51820").unwrap(),
        BoxRoot::new(Dataset::new("offsite/home").unwrap()).unwrap(),
        keys,
    );
    bundle::for_box(&i, &BoxSecrets { wg: Secret::new(WG_SECRET), host_key: Secret::new(HOST_SECRET) })
}

struct World {
    _dir: tempfile::TempDir,
    root: PathBuf,
    bundle: PathBuf,
    bin: PathBuf,
    log: PathBuf,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        let log = dir.path().join("systemctl.log");
        let fake = bin.join("systemctl");
        std::fs::write(&fake, format!("#!/bin/sh\necho \"$@\" >> '{}'\n", log.display())).unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bundle = dir.path().join("box.bundle");
        write_bundle(&bundle, &bundle::render(&the_bundle()), 0o600);
        World { root, bundle, bin, log, _dir: dir }
    }

    fn apply(&self, extra: &[&str]) -> Output {
        let path = format!("{}:{}", self.bin.display(), std::env::var("PATH").unwrap_or_default());
        Command::new(env!("CARGO_BIN_EXE_zoffsite"))
            .args(["box", "apply"])
            .arg(&self.bundle)
            .arg("--root")
            .arg(&self.root)
            .args(extra)
            .env("PATH", path)
            .output()
            .unwrap()
    }

    fn json(&self, extra: &[&str]) -> (serde_json::Value, Output) {
        let mut a = vec!["--json"];
        a.extend_from_slice(extra);
        let out = self.apply(&a);
        let doc = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}\n{}", String::from_utf8_lossy(&out.stdout), stderr(&out)));
        (doc, out)
    }

    fn at(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    fn systemctl_calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log).unwrap_or_default().lines().map(str::to_owned).collect()
    }
}

fn write_bundle(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn everything_under(root: &Path) -> Vec<(PathBuf, u64, i64, i64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p.clone());
            }
            out.push((p, m.ino(), m.mtime(), m.mtime_nsec()));
        }
    }
    out.sort();
    out
}

#[test]
fn every_file_lands_with_its_mode_and_text_and_a_second_apply_rewrites_nothing() {
    let w = World::new();
    let b = the_bundle();
    let (doc, out) = w.json(&[]);
    assert!(out.status.success(), "{doc}\n{}", stderr(&out));
    assert_eq!((doc["offline"].as_bool(), doc["applied"].as_bool()), (Some(true), Some(true)), "{doc}");
    assert_eq!(doc["init"]["state"], "deferred", "box init runs on the box itself");
    for f in &b.files {
        let p = w.at(&f.path);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), f.text, "{}", f.path);
        assert_eq!(std::fs::symlink_metadata(&p).unwrap().permissions().mode() & 0o7777, f.mode, "{}", f.path);
    }
    for s in &b.secrets {
        let p = w.at(s.path.as_str());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), s.text.expose());
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777, 0o600, "{}", s.path);
    }
    assert_eq!(std::fs::metadata(w.at("/etc/wireguard")).unwrap().permissions().mode() & 0o7777, 0o700);
    assert_eq!(std::fs::metadata(w.at("/etc/ssh")).unwrap().permissions().mode() & 0o7777, 0o755);
    let root = w.root.canonicalize().unwrap();
    assert_eq!(w.systemctl_calls(), [format!("--root={} enable -- {}", root.display(), b.enable.join(" "))]);
    let json = doc.to_string();
    assert!(!json.contains("boxhostkey") && !json.contains("eBoxWg"), "no secret in the report: {json}");

    let before = everything_under(&w.root);
    let (doc, out) = w.json(&[]);
    assert!(out.status.success(), "{doc}\n{}", stderr(&out));
    assert_eq!(doc["changes"], false, "{doc}");
    assert!(doc["files"].as_array().unwrap().iter().all(|f| f["action"] == "unchanged"), "{doc}");
    assert!(doc["directories"].as_array().unwrap().is_empty());
    assert_eq!(everything_under(&w.root), before, "nothing rewritten: same inodes and mtimes");
    assert_eq!(w.systemctl_calls().len(), 2, "enabling again is harmless and said so");
    let text = w.apply(&[]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("nothing to change"), "{}", stderr(&text));
}

#[test]
fn a_dry_run_shows_every_file_and_command_and_writes_nothing() {
    let w = World::new();
    let out = w.apply(&["-n"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for f in &the_bundle().files {
        assert!(text.contains(&format!("create     {} ({:04o})", f.path, f.mode)), "{}\n{text}", f.path);
    }
    assert!(text.contains("/etc/wireguard/zo-friend.key (0600, secret: not shown)"), "{text}");
    assert!(text.contains("systemctl --root="), "{text}");
    assert!(!text.contains("boxhostkey") && !text.contains("eBoxWg"), "{text}");
    assert!(everything_under(&w.root).is_empty(), "nothing written");
    assert!(w.systemctl_calls().is_empty(), "nothing run");
    // -v: the text of each new public file, still no secret.
    let out = w.apply(&["-n", "-v"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("+ AllowUsers zoffsite@10.77.0.1"), "{text}");
    assert!(!text.contains("boxhostkey") && !text.contains("eBoxWg"), "{text}");
}

#[test]
fn a_symlink_planted_at_a_target_is_replaced_not_followed() {
    let w = World::new();
    let outside = w.root.parent().unwrap().join("outside");
    std::fs::write(&outside, "theirs\n").unwrap();
    let target = w.at("/etc/ssh/sshd_config.d/zoffsite.conf");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&outside, &target).unwrap();
    let (doc, out) = w.json(&[]);
    assert!(out.status.success(), "{doc}\n{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "theirs\n", "the link's target is untouched");
    assert!(std::fs::symlink_metadata(&target).unwrap().is_file());
    let f = doc["files"].as_array().unwrap().iter().find(|f| f["path"] == "/etc/ssh/sshd_config.d/zoffsite.conf");
    assert_eq!(f.unwrap()["changes"][0], "a symlink is replaced (not followed)");

    // A symlinked directory below the root is refused whole.
    let w = World::new();
    std::fs::create_dir_all(w.root.parent().unwrap().join("elsewhere")).unwrap();
    std::os::unix::fs::symlink(w.root.parent().unwrap().join("elsewhere"), w.at("/etc")).unwrap();
    let out = w.apply(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("/etc is a symlink"));
    assert!(std::fs::read_dir(w.root.parent().unwrap().join("elsewhere")).unwrap().next().is_none());
}

#[test]
fn a_bundle_others_can_read_or_one_tampered_with_changes_nothing() {
    let w = World::new();
    std::fs::set_permissions(&w.bundle, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (doc, out) = w.json(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(doc["errors"][0].as_str().unwrap().contains("open to other users (mode 0644)"), "{doc}");
    assert!(everything_under(&w.root).is_empty());

    let text = bundle::render(&the_bundle());
    for (from, to) in [
        ("mode = \"0644\"", "mode = \"0666\""),
        ("path = \"/etc/zoffsite/box.toml\"", "path = \"/etc/../etc/passwd\""),
        ("version = 1", "version = 1\nextra = 1"),
        ("path = \"/etc/zoffsite/box.toml\"", "path = \"/etc/sudoers.d/zoffsite\""),
        ("\"zoffsite-box-check.timer\"", "\"debug-shell.service\""),
    ] {
        assert!(text.contains(from), "{from}");
        write_bundle(&w.bundle, &text.replacen(from, to, 1), 0o600);
        let out = w.apply(&[]);
        assert_eq!(out.status.code(), Some(2), "{from}: {}", stderr(&out));
        assert!(everything_under(&w.root).is_empty(), "{from}");
    }
    assert!(w.systemctl_calls().is_empty());
}

#[test]
fn without_root_or_dash_dash_root_it_refuses() {
    if zoffsite_exec_is_root() {
        return;
    }
    let w = World::new();
    let out = Command::new(env!("CARGO_BIN_EXE_zoffsite")).args(["box", "apply"]).arg(&w.bundle).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("run it as root"), "{}", stderr(&out));
    let out = Command::new(env!("CARGO_BIN_EXE_zoffsite"))
        .args(["box", "apply", "-n", "--root", "/"])
        .arg(&w.bundle)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "--root / is the machine itself");
    assert!(stderr(&out).contains("run it as root"), "{}", stderr(&out));
}

#[test]
fn the_bundles_sha256_is_printed_and_reported() {
    let w = World::new();
    let want = bundle::sha256(&std::fs::read(&w.bundle).unwrap());
    let (doc, out) = w.json(&["-n"]);
    assert!(out.status.success(), "{doc}\n{}", stderr(&out));
    assert_eq!(doc["sha256"], want.as_str(), "{doc}");
    let out = w.apply(&["-n"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("bundle SHA-256: {want}")), "{}", stderr(&out));
}

fn zoffsite_exec_is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}
