//! `zoffsite box install` as the binary, on the machine running the tests
//! (it reads the real efivars, TPM and lsblk): it needs root, so the tests
//! are skipped (with a message) for another user. They can never install:
//! one runs with `-n`, the other with a bundle that does not exist, which
//! the installer refuses before anything else. On a machine that is not a
//! zoffsite stick the plan is refused anyway (no stick, no ESP).

use std::path::Path;
use std::process::{Command, Output};

use zoffsite_core::boxinit::PublicKey;
use zoffsite_core::names::Dataset;
use zoffsite_core::provision::bundle::{self, BoxSecrets, Secret};
use zoffsite_core::provision::values::{BoxName, BoxRoot, Endpoint, HostKey, WgKey};
use zoffsite_core::provision::{Inputs, Keys};

fn root() -> bool {
    let me = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap_or(1);
    if me != 0 {
        eprintln!("SKIPPED: box install needs root");
    }
    me == 0
}

fn write_bundle(path: &Path) {
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
    let b = bundle::for_box(&i, &BoxSecrets { wg: Secret::new("x=\n"), host_key: Secret::new("y\n") });
    std::fs::write(path, bundle::render(&b)).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
}

fn install(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zoffsite")).args(["box", "install"]).args(args).output().unwrap()
}

#[test]
fn a_dry_run_reads_the_bundles_pool_checks_everything_and_writes_nothing() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("box.bundle");
    write_bundle(&bundle);
    let report = dir.path().join("report");
    std::fs::create_dir(&report).unwrap();
    let out =
        install(&["-n", "--json", "--bundle", bundle.to_str().unwrap(), "--report-dir", report.to_str().unwrap()]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(doc["pool"], "offsite", "the first component of [init].root");
    assert_eq!(doc["box"], "friend");
    assert_eq!(doc["dry_run"], true);
    let names: Vec<&str> = doc["checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["report-dir", "bundle", "secure-boot", "tpm2", "disks"]);
    assert_eq!(doc["checks"][1]["ok"], true, "{}", doc["checks"][1]);
    let code = out.status.code().unwrap();
    match doc["outcome"].as_str().unwrap() {
        "refused" => assert_eq!(code, 1),
        "dry-run" => assert_eq!(code, 0),
        o => panic!("-n ended {o}"),
    }
    assert_eq!(doc["exit_code"], code);
    assert!(!doc["disks"].as_array().unwrap().is_empty(), "lsblk listed this machine's disks");
    assert!(std::str::from_utf8(&out.stdout).unwrap().is_ascii());
    assert_eq!(std::fs::read_dir(&report).unwrap().count(), 0, "-n writes no report");
}

#[test]
fn a_refusal_is_written_to_the_report_dir_and_printed() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("esp/zoffsite");
    let out = install(&["--bundle", "/nonexistent/box.bundle", "--report-dir", report.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = std::fs::read_to_string(report.join("zoffsite-install.txt")).expect("the report");
    assert!(text.starts_with("zoffsite box install: REFUSED (nothing was changed)\n"), "{text}");
    assert!(text.contains("REFUSED: bundle: cannot read the box's bundle"), "{text}");
    assert!(text.is_ascii() && !text.contains("RECOVERY KEY"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), text, "the console shows the same report");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("zoffsite-install.json")).unwrap()).unwrap();
    assert_eq!(json["outcome"], "refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("box install: refused: bundle:"));
}
