//! The box image's units checked by the real `systemd-analyze verify`
//! (what the stick and the box's systemd will read). Skipped without the
//! tool unless `ZOFFSITE_REQUIRE_TOOLS=1`, which makes it a failure.

use std::path::Path;
use std::process::Command;

use zoffsite_core::image::build::{self, Inputs};
use zoffsite_core::names::Dataset;
use zoffsite_core::provision::values::{AbsPath, BoxName};

#[test]
fn systemd_analyze_verifies_the_installer_and_first_boot_units() {
    let analyze = Path::new("/usr/bin/systemd-analyze");
    // zpool: the first-boot unit's ExecStart must name an existing program.
    if !analyze.exists() || !Path::new("/usr/sbin/zpool").exists() {
        assert!(
            std::env::var_os("ZOFFSITE_REQUIRE_TOOLS").is_none_or(|v| v != "1"),
            "systemd-analyze or zpool not installed, and ZOFFSITE_REQUIRE_TOOLS=1"
        );
        eprintln!("SKIPPED: systemd-analyze or zpool not installed");
        return;
    }
    let i = Inputs::new(
        BoxName::new("friend").unwrap(),
        AbsPath::new("/bin/true").unwrap(),
        &Dataset::new("offsite/home").unwrap(),
        AbsPath::new("/etc/zoffsite/secureboot").unwrap(),
        AbsPath::new("/var/cache/zoffsite/image/friend").unwrap(),
        false,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut units = Vec::new();
    for (name, text) in
        [(build::INSTALL_UNIT, build::install_unit(&i)), (build::FIRSTBOOT_UNIT, build::firstboot_unit(&i))]
    {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        units.push(p);
    }
    let out = Command::new(analyze).args(["verify", "--man=no"]).args(&units).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "systemd-analyze verify failed:\n{said}");
    let ours: Vec<&str> =
        said.lines().filter(|l| l.contains("zoffsite") || l.contains(dir.path().to_str().unwrap())).collect();
    assert!(ours.is_empty(), "systemd-analyze verify warns about the image's units:\n{}", ours.join("\n"));
}
