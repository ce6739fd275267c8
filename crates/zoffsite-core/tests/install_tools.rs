//! The installer's repart definitions (`image::install::definitions`)
//! and its own `systemd-repart` argv, checked by the real systemd-repart
//! (254 on Debian 12 from bookworm-backports) with `--dry-run=yes` on a
//! plain file: it reads every setting (an unknown one is only a warning
//! there, so the test also fails on any warning), places the partitions on
//! the empty "disk" and writes nothing to it.
//!
//! `CopyBlocks=auto` copies the partition the running `/` is on, and only
//! when that partition is of type root: on a machine that is not the stick
//! repart refuses it ("Unable to automatically discover suitable partition
//! to copy blocks from"). So the definitions are checked twice: as rendered
//! (repart must either accept them or refuse exactly that), and with
//! `CopyBlocks=` pointing at a file system image, which must pass.
//!
//! Skipped (with a message) when systemd-repart is not installed, unless
//! `ZOFFSITE_REQUIRE_TOOLS=1`.

use std::path::{Path, PathBuf};
use std::process::Command;

use zoffsite_core::image::install::{self, BundleFacts, Facts, InstallPlan, ESP_PARTTYPE};
use zoffsite_core::names::Dataset;

fn skip<T>(why: &str) -> Option<T> {
    assert!(std::env::var_os("ZOFFSITE_REQUIRE_TOOLS").is_none_or(|v| v != "1"), "{why}, and ZOFFSITE_REQUIRE_TOOLS=1");
    eprintln!("SKIPPED: {why} (ZOFFSITE_REQUIRE_TOOLS=1 makes this a failure)");
    None
}

fn repart() -> Option<PathBuf> {
    ["/usr/bin/systemd-repart", "/bin/systemd-repart"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .or_else(|| skip("systemd-repart not installed"))
}

/// A plan for a mini PC whose stick's ESP is mounted at `esp` (a real
/// directory: CopyFiles= reads it), reports in `esp/zoffsite`.
fn plan_with_esp(esp: &Path) -> InstallPlan {
    let esp = esp.to_str().unwrap();
    let dev = |path: &str, kind: &str, size: u64, mounts: serde_json::Value| {
        serde_json::json!({
            "name": path.rsplit('/').next().unwrap(), "path": path, "type": kind, "size": size, "rm": false, "ro": false,
            "pttype": null, "parttype": null, "fstype": null, "mountpoints": mounts, "tran": null, "model": null, "serial": null,
        })
    };
    let mut efi = dev("/dev/sda1", "part", 512 << 20, serde_json::json!([esp]));
    efi["parttype"] = ESP_PARTTYPE.into();
    let root = dev("/dev/sda2", "part", 4 << 30, serde_json::json!(["/"]));
    let mut stick = dev("/dev/sda", "disk", 32 << 30, serde_json::json!([null]));
    stick["pttype"] = "gpt".into();
    stick["children"] = serde_json::json!([efi, root]);
    let tree = serde_json::json!({"blockdevices": [
        stick,
        dev("/dev/nvme0n1", "disk", 256 << 30, serde_json::json!([null])),
        dev("/dev/sdb", "disk", 2048 << 30, serde_json::json!([null])),
    ]});
    let facts = Facts {
        report_dir: Ok(format!("{esp}/zoffsite")),
        bundle: Ok(BundleFacts {
            name: "friend".into(),
            pool: Dataset::new("offsite").unwrap(),
            sha256: "00".repeat(32),
        }),
        efi: true,
        secure_boot: Ok(Some(vec![6, 0, 0, 0, 1])),
        setup_mode: Ok(Some(vec![6, 0, 0, 0, 0])),
        tpm_version: Ok(Some("2\n".into())),
        tpm_device: Ok(true),
        lsblk: install::parse_lsblk(&serde_json::to_vec(&tree).unwrap()),
        by_id: Ok(Vec::new()),
    };
    install::plan(&facts).expect("a plan")
}

/// Runs the plan's own `systemd-repart --dry-run=yes` argv on `disk`
/// instead of the system disk: (success, stdout, stderr).
fn dry_run(repart: &Path, plan: &InstallPlan, defs: &Path, key: &Path, disk: &Path) -> (bool, String, String) {
    let cmd = plan.repart(defs.to_str().unwrap(), key.to_str().unwrap(), true);
    assert_eq!(cmd.argv.last().map(String::as_str), Some("/dev/nvme0n1"));
    let mut args: Vec<String> = cmd.argv[1..cmd.argv.len() - 1].to_vec();
    args.push(disk.to_str().unwrap().to_owned());
    let out = Command::new(repart).args(&args).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

fn write_definitions(dir: &Path, plan: &InstallPlan, copy_blocks: Option<&Path>) {
    std::fs::create_dir_all(dir).unwrap();
    for d in &plan.definitions {
        let text = match copy_blocks {
            Some(f) => d.text.replace("CopyBlocks=auto", &format!("CopyBlocks={}", f.display())),
            None => d.text.clone(),
        };
        std::fs::write(dir.join(d.file), text).unwrap();
    }
}

#[test]
fn systemd_repart_takes_the_installers_definitions_and_argv() {
    let Some(repart) = repart() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let esp = tmp.path().join("esp");
    std::fs::create_dir_all(esp.join("EFI/BOOT")).unwrap();
    std::fs::write(esp.join("EFI/BOOT/BOOTX64.EFI"), b"MZ").unwrap();
    let plan = plan_with_esp(&esp);
    let key = tmp.path().join("key");
    std::fs::write(&key, [7u8; 64]).unwrap();
    let disk = tmp.path().join("disk.img");
    std::fs::File::create(&disk).unwrap().set_len(16 << 30).unwrap();

    // As rendered: accepted (on a machine booted from a root partition),
    // or refused only because / is not on one.
    let defs = tmp.path().join("as-rendered");
    write_definitions(&defs, &plan, None);
    let (ok, out, err) = dry_run(&repart, &plan, &defs, &key, &disk);
    assert!(
        ok || err.contains("Unable to automatically discover suitable partition to copy blocks from"),
        "repart refused the definitions for another reason:\n{out}\n{err}"
    );

    // With the root's blocks from a file: the rest must pass, with no
    // warning about any setting.
    let rootfs = tmp.path().join("root.img");
    std::fs::File::create(&rootfs).unwrap().set_len(64 << 20).unwrap();
    let defs = tmp.path().join("copy-from-file");
    write_definitions(&defs, &plan, Some(&rootfs));
    let (ok, out, err) = dry_run(&repart, &plan, &defs, &key, &disk);
    assert!(ok, "repart refused:\n{out}\n{err}");
    for bad in ["Unknown", "unknown", "ignoring", "Failed", "Invalid", "invalid"] {
        assert!(!err.contains(bad), "repart warned ({bad}):\n{err}");
    }
    assert!(out.contains("esp") && out.contains("00-esp.conf"), "{out}");
    assert!(out.contains("root-") && out.contains("10-root.conf"), "{out}");
    assert!(out.contains("512.0M"), "the ESP's fixed size: {out}");
    // Partition 2 is the root: the plan names it so.
    assert!(out.contains(&format!("{}2", disk.display())), "{out}");
    assert_eq!(plan.root_partition, "/dev/nvme0n1p2");
    // A dry run wrote nothing: the "disk" is still all zeros at its start.
    let mut head = vec![1u8; 1 << 20];
    std::io::Read::read_exact(&mut std::fs::File::open(&disk).unwrap(), &mut head).unwrap();
    assert!(head.iter().all(|&x| x == 0), "the dry run wrote to the disk image");
}
