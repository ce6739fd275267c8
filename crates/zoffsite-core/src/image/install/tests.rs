use serde_json::{json, Value};

use super::*;

const GB: u64 = 1_000_000_000;
const ON: &[u8] = &[0x06, 0, 0, 0, 1];
const OFF: &[u8] = &[0x06, 0, 0, 0, 0];
const ROOT_TYPE: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";

macro_rules! fixture {
    ($f:literal) => {
        include_str!(concat!("../../../testdata/install/", $f))
    };
}

/// One device as lsblk 2.38 prints it (`--json --bytes`, the columns of
/// [`LSBLK_COLUMNS`]); `mounts` empty prints `[null]` as lsblk does.
fn dev(path: &str, kind: &str, size: u64, mounts: &[&str]) -> Value {
    let mountpoints: Vec<Value> =
        if mounts.is_empty() { vec![Value::Null] } else { mounts.iter().map(|m| json!(m)).collect() };
    json!({
        "name": path.rsplit('/').next().unwrap(), "path": path, "type": kind, "size": size,
        "rm": false, "ro": false, "pttype": null, "parttype": null, "fstype": null,
        "mountpoints": mountpoints, "tran": null, "model": null, "serial": null,
    })
}

fn set(mut v: Value, key: &str, value: Value) -> Value {
    v[key] = value;
    v
}

/// The stick: GPT, an ESP on /efi and the root partition on /.
fn stick() -> Value {
    let esp = set(
        set(dev("/dev/sda1", "part", 512 << 20, &["/efi"]), "parttype", json!(ESP_PARTTYPE)),
        "fstype",
        json!("vfat"),
    );
    let root =
        set(set(dev("/dev/sda2", "part", 3 << 30, &["/"]), "parttype", json!(ROOT_TYPE)), "fstype", json!("ext4"));
    let d = dev("/dev/sda", "disk", 32 * GB, &[]);
    let d = set(set(set(d, "rm", json!(true)), "tran", json!("usb")), "pttype", json!("gpt"));
    set(set(d, "model", json!("Cruzer Blade    ")), "children", json!([esp, root]))
}

fn blank(path: &str, size: u64, tran: &str, model: &str, serial: &str) -> Value {
    let d = set(dev(path, "disk", size, &[]), "tran", json!(tran));
    set(set(d, "model", json!(model)), "serial", json!(serial))
}

/// A mini PC: the stick, a 256 GB NVMe disk and a 2 TB SATA disk, blank.
fn mini_pc() -> Vec<Value> {
    vec![
        stick(),
        blank("/dev/nvme0n1", 256 * GB, "nvme", "Samsung SSD 980 250GB", "S64BNJ0R123456"),
        blank("/dev/sdb", 2000 * GB, "sata", "WDC WD20EFRX-68EUZN0", "WD-WCC4M1234567"),
    ]
}

fn lsblk(devices: &[Value]) -> Vec<u8> {
    serde_json::to_vec_pretty(&json!({ "blockdevices": devices })).unwrap()
}

fn link(name: &str, target: &str) -> ByIdLink {
    ByIdLink { name: name.into(), target: target.into() }
}

fn facts(devices: &[Value]) -> Facts {
    Facts {
        report_dir: Ok("/efi/zoffsite".into()),
        bundle: Ok(BundleFacts {
            name: "friend".into(),
            pool: Dataset::new("offsite").unwrap(),
            sha256: "ab".repeat(32),
        }),
        efi: true,
        secure_boot: Ok(Some(ON.to_vec())),
        setup_mode: Ok(Some(OFF.to_vec())),
        tpm_version: Ok(Some("2\n".into())),
        tpm_device: Ok(true),
        lsblk: parse_lsblk(&lsblk(devices)),
        by_id: Ok(vec![
            link("usb-SanDisk_Cruzer_Blade_4C53-0:0", "../../sda"),
            link("nvme-eui.002538b911b2c3d4", "../../nvme0n1"),
            link("nvme-Samsung_SSD_980_250GB_S64BNJ0R123456", "../../nvme0n1"),
            link("wwn-0x50014ee2b5a1c2d3", "../../sdb"),
            link("ata-WDC_WD20EFRX-68EUZN0_WD-WCC4M1234567", "../../sdb"),
        ]),
    }
}

fn refused(f: &Facts) -> Box<Refused> {
    plan(f).expect_err("refused")
}

fn role(r: &[DiskSeen], path: &str) -> Role {
    r.iter().find(|d| d.path == path).unwrap_or_else(|| panic!("{path} not seen")).role.clone()
}

// ---- the plan ----

#[test]
fn a_mini_pc_with_two_blank_disks_gets_the_smaller_for_the_system_and_the_larger_for_the_pool() {
    let p = plan(&facts(&mini_pc())).expect("a plan");
    assert!(p.checks.iter().all(|c| c.ok && c.fix.is_none()), "{:?}", p.checks);
    assert_eq!(p.system.path, "/dev/nvme0n1");
    assert_eq!(p.data.path, "/dev/sdb");
    assert_eq!(p.data.stable, "/dev/disk/by-id/ata-WDC_WD20EFRX-68EUZN0_WD-WCC4M1234567", "readable over wwn-");
    assert_eq!(p.system.stable, "/dev/disk/by-id/nvme-Samsung_SSD_980_250GB_S64BNJ0R123456", "readable over eui");
    assert_eq!(p.root_partition, "/dev/nvme0n1p2");
    assert_eq!(p.esp_mount, "/efi");
    assert_eq!(role(&p.disks, "/dev/nvme0n1"), Role::System);
    assert_eq!(role(&p.disks, "/dev/sdb"), Role::Data);
    assert!(
        matches!(role(&p.disks, "/dev/sda"), Role::NotTaken { why, fix: None } if why.contains("installer's own disk"))
    );
    for d in &p.definitions {
        insta::assert_snapshot!(format!("definition_{}", d.file), d.text);
    }
    let cmds: Vec<String> = p
        .commands("/run/zoffsite/install/repart.d", "/run/zoffsite/install/key")
        .iter()
        .map(|c| c.argv.join(" "))
        .collect();
    insta::assert_snapshot!("commands", cmds.join("\n"));
    insta::assert_snapshot!("report_dry_run", render_text(&Report::planned(&p, 1_796_000_000, Outcome::DryRun)));
}

#[test]
fn the_smaller_disk_is_the_system_whichever_order_lsblk_lists_them_and_equal_sizes_go_by_path() {
    let mut devs = mini_pc();
    devs.swap(1, 2);
    let p = plan(&facts(&devs)).unwrap();
    assert_eq!((p.system.path.as_str(), p.data.path.as_str()), ("/dev/nvme0n1", "/dev/sdb"));
    let devs =
        vec![stick(), blank("/dev/sdc", 500 * GB, "sata", "B", "2"), blank("/dev/sdb", 500 * GB, "sata", "A", "1")];
    let p = plan(&facts(&devs)).unwrap();
    assert_eq!((p.system.path.as_str(), p.data.path.as_str()), ("/dev/sdb", "/dev/sdc"));
    assert_eq!(p.root_partition, "/dev/sdb2");
    assert_eq!(p.data.stable, "/dev/sdc", "no by-id link: the kernel's name");
}

#[test]
fn a_disk_with_a_partition_table_is_refused_with_the_wipefs_fix() {
    let mut devs = mini_pc();
    devs[2] = set(devs[2].clone(), "pttype", json!("gpt"));
    let r = refused(&facts(&devs));
    assert!(r.reason.starts_with("disks: one blank internal disk (/dev/nvme0n1), not two"), "{}", r.reason);
    let Role::NotTaken { why, fix } = role(&r.disks, "/dev/sdb") else { panic!() };
    assert_eq!(
        format!("/dev/sdb: {why}: {}", fix.unwrap()),
        "/dev/sdb: has a partition table (gpt): zoffsite installs only onto blank disks; wipe it with `wipefs -a /dev/sdb` on another machine if it holds nothing you need"
    );
    let text = render_text(&Report::refused(*r, 1_796_000_000));
    assert!(text.contains("wipefs -a /dev/sdb") && text.contains("Nothing was changed on any disk"), "{text}");
    insta::assert_snapshot!("report_refused_partition_table", text);
}

#[test]
fn every_kind_of_used_disk_is_not_taken_and_says_why() {
    let base = || blank("/dev/sdb", 2000 * GB, "sata", "M", "S");
    let child = dev("/dev/sdb1", "part", GB, &[]);
    let cases: Vec<(Value, &str)> = vec![
        (set(base(), "fstype", json!("zfs_member")), "has a file system signature (zfs_member)"),
        (set(base(), "children", json!([child])), "has devices below it (/dev/sdb1)"),
        (set(base(), "rm", json!(true)), "removable"),
        (set(base(), "ro", json!(true)), "read-only"),
        (set(base(), "mountpoints", json!(["/mnt"])), "mounted (/dev/sdb on /mnt)"),
        (set(base(), "size", json!(4 * GB)), "smaller than 8.0 GiB"),
        (set(base(), "type", json!("rom")), "a rom device, not a disk"),
    ];
    for (disk, want) in cases {
        let devs = vec![stick(), blank("/dev/nvme0n1", 256 * GB, "nvme", "M", "S"), disk];
        let r = refused(&facts(&devs));
        let Role::NotTaken { why, .. } = role(&r.disks, "/dev/sdb") else { panic!("{want}") };
        assert!(why.contains(want), "{why:?} lacks {want:?}");
        assert!(r.reason.contains("one blank internal disk"), "{}", r.reason);
    }
}

#[test]
fn zero_one_or_three_blank_disks_are_refused_and_each_is_listed() {
    let r = refused(&facts(&[stick()]));
    assert_eq!(r.reason, "disks: no blank internal disk");
    assert_eq!(r.disks.len(), 1);
    let mut three = mini_pc();
    three.push(blank("/dev/sdc", 4000 * GB, "sata", "M", "S"));
    let r = refused(&facts(&three));
    assert!(r.reason.contains("3 blank internal disks (/dev/nvme0n1, /dev/sdb, /dev/sdc), not two"), "{}", r.reason);
    assert!(r.fix.contains("exactly two"), "{}", r.fix);
    assert_eq!(role(&r.disks, "/dev/sdc"), Role::Blank, "not chosen, not used");
    assert_eq!(r.disks.len(), 4);
}

#[test]
fn the_stick_must_hold_root_and_one_mounted_esp_and_an_installed_box_is_not_a_stick() {
    // No disk holds / (a system running from memory): CopyBlocks=auto has
    // nothing to copy.
    let mut devs = mini_pc();
    devs[0]["children"][1]["mountpoints"] = json!([null]);
    assert!(refused(&facts(&devs)).reason.contains("0 disks hold the running system's /"));
    // The ESP not mounted.
    let mut devs = mini_pc();
    devs[0]["children"][0]["mountpoints"] = json!([null]);
    assert!(refused(&facts(&devs)).reason.contains("the stick's ESP (/dev/sda1) is not mounted"));
    // Two ESPs on the stick.
    let mut devs = mini_pc();
    devs[0]["children"][1]["parttype"] = json!(ESP_PARTTYPE);
    assert!(refused(&facts(&devs)).reason.contains("2 EFI System Partitions"));
    // An ESP mounted where a repart definition cannot name it.
    let mut devs = mini_pc();
    devs[0]["children"][0]["mountpoints"] = json!(["/boot/my efi%"]);
    assert!(refused(&facts(&devs)).reason.contains("a path the installer does not pass on"));
    // The installed box: / on the LUKS root of the system disk.
    let crypt = dev("/dev/mapper/root", "crypt", 200 * GB, &["/"]);
    let part = set(dev("/dev/nvme0n1p2", "part", 200 * GB, &[]), "children", json!([crypt]));
    let sys = set(set(dev("/dev/nvme0n1", "disk", 256 * GB, &[]), "pttype", json!("gpt")), "children", json!([part]));
    let devs = vec![sys, set(blank("/dev/sdb", 2000 * GB, "sata", "M", "S"), "fstype", json!("zfs_member"))];
    let r = refused(&facts(&devs));
    assert!(r.reason.contains("this is an installed box, not the installer stick"), "{}", r.reason);
}

#[test]
fn secure_boot_must_be_enabled_and_enforcing() {
    let want = |f: Facts, text: &str| {
        let r = refused(&f);
        assert!(r.reason.starts_with("secure-boot: ") && r.reason.contains(text), "{}", r.reason);
        assert_eq!(r.checks.iter().find(|c| !c.ok).unwrap().name, CheckName::SecureBoot);
    };
    let f = facts(&mini_pc());
    want(Facts { efi: false, ..f.clone() }, "did not boot through UEFI");
    want(Facts { secure_boot: Ok(Some(OFF.to_vec())), ..f.clone() }, "Secure Boot is disabled");
    want(Facts { setup_mode: Ok(Some(ON.to_vec())), ..f.clone() }, "setup mode");
    want(Facts { secure_boot: Ok(None), ..f.clone() }, "no SecureBoot EFI variable");
    want(Facts { setup_mode: Ok(None), ..f.clone() }, "no SetupMode EFI variable");
    want(Facts { secure_boot: Ok(Some(vec![0x06, 0, 0, 0, 2])), ..f.clone() }, "neither 0 nor 1");
    want(Facts { secure_boot: Ok(Some(vec![0x07, 0, 0, 0, 1])), ..f.clone() }, "attributes 0x7");
    want(Facts { secure_boot: Ok(Some(vec![1])), ..f.clone() }, "not 5");
    want(Facts { setup_mode: Err("permission denied".into()), ..f }, "permission denied");
}

#[test]
fn a_tpm_2_with_its_resource_manager_is_required() {
    let want = |f: Facts, text: &str| {
        let r = refused(&f);
        assert!(r.reason.starts_with("tpm2: ") && r.reason.contains(text), "{}", r.reason);
    };
    let f = facts(&mini_pc());
    want(Facts { tpm_version: Ok(None), ..f.clone() }, "no TPM");
    want(Facts { tpm_version: Ok(Some("1\n".into())), ..f.clone() }, "version 1, not 2");
    want(Facts { tpm_version: Ok(Some("2.0\n".into())), ..f.clone() }, "version 2.0, not 2");
    want(Facts { tpm_device: Ok(false), ..f.clone() }, "no /dev/tpmrm0");
    want(Facts { tpm_version: Err("I/O error".into()), ..f }, "I/O error");
}

#[test]
fn the_report_dir_and_the_bundle_come_first_and_every_problem_is_listed() {
    let f = Facts {
        report_dir: Err("/efi/zoffsite: read-only file system".into()),
        bundle: Err("/usr/lib/zoffsite/box.bundle: no such file".into()),
        efi: false,
        ..facts(&[stick()])
    };
    let r = refused(&f);
    assert!(r.reason.starts_with("report-dir: cannot write the report"), "{}", r.reason);
    let failed: Vec<CheckName> = r.checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
    assert_eq!(failed, [CheckName::ReportDir, CheckName::Bundle, CheckName::SecureBoot, CheckName::Disks]);
    assert!(r.checks.iter().all(|c| c.ok == c.fix.is_none()));
    assert!(r.bundle.is_none());
}

#[test]
fn an_unreadable_lsblk_or_by_id_refuses() {
    let f = Facts { lsblk: Err("lsblk: not found".into()), ..facts(&mini_pc()) };
    assert!(refused(&f).reason.contains("cannot list the disks: lsblk: not found"));
    let f = Facts { by_id: Err("too many entries".into()), ..facts(&mini_pc()) };
    assert!(refused(&f).reason.contains("too many entries"));
}

#[test]
fn repart_definitions_leave_out_the_reports_when_they_are_on_the_esp() {
    let d = definitions("/efi", "/efi/zoffsite");
    assert!(d[0].text.contains("ExcludeFiles=/efi/zoffsite/\n"), "the whole report directory");
    assert!(d[0].text.contains("ExcludeFiles=/efi/loader/keys/\n"), "no enrollment files on the box");
    let d = definitions("/efi", "/efi");
    assert!(d[0].text.contains("ExcludeFiles=/efi/zoffsite-install.txt\n"), "the ESP's top");
    let d = definitions("/efi", "/run/report");
    assert!(!d[0].text.contains("zoffsite-install"), "not on the ESP: nothing to leave out");
    let d = definitions("/efi", "/efi2/x");
    assert!(!d[0].text.contains("zoffsite-install"), "a prefix is not a parent");
    assert!(d[1].text.contains("CopyBlocks=auto\n") && d[1].text.contains("Encrypt=key-file+tpm2\n"));
}

#[test]
fn partitions_are_named_as_the_kernel_names_them() {
    assert_eq!(partition_path("/dev/sda", 2), "/dev/sda2");
    assert_eq!(partition_path("/dev/vda", 2), "/dev/vda2");
    assert_eq!(partition_path("/dev/nvme0n1", 2), "/dev/nvme0n1p2");
    assert_eq!(partition_path("/dev/mmcblk0", 2), "/dev/mmcblk0p2");
}

#[test]
fn by_id_links_resolve_by_text() {
    assert_eq!(link("x", "../../sdb").resolved(), "/dev/sdb");
    assert_eq!(link("x", "../../nvme0n1p1").resolved(), "/dev/nvme0n1p1");
    assert_eq!(link("x", "/dev/sdc").resolved(), "/dev/sdc");
    assert_eq!(link("x", "./../..//sdd").resolved(), "/dev/sdd");
}

// ---- lsblk ----

#[test]
fn real_lsblk_output_parses() {
    let d = parse_lsblk(fixture!("lsblk-vm.json").as_bytes()).expect("lsblk 2.38 of the VM");
    let vda = d.iter().find(|d| d.path == "/dev/vda").expect("vda");
    assert_eq!((vda.kind.as_str(), vda.removable, vda.read_only), ("disk", false, false));
    assert!(vda.holds_root() && vda.size > 0 && vda.children.is_empty());
    assert!(d.iter().all(|d| d.model.is_none() && d.pttype.is_none()));
    // This VM's one disk is the running system's, without an ESP: no plan.
    let r = refused(&Facts { lsblk: Ok(d), ..facts(&[]) });
    assert!(r.reason.contains("0 EFI System Partitions"), "{}", r.reason);
    assert!(matches!(role(&r.disks, "/dev/vda"), Role::NotTaken { why, .. } if why.contains("own disk")));
    assert!(matches!(role(&r.disks, "/dev/zram0"), Role::NotTaken { why, .. } if why.contains("0 bytes")));
}

#[test]
fn lsblk_is_parsed_strictly() {
    let ok = lsblk(&mini_pc());
    assert_eq!(parse_lsblk(&ok).unwrap().len(), 3);
    let text = String::from_utf8(ok).unwrap();
    let refuse = |t: &str, why: &str| {
        let e = parse_lsblk(t.as_bytes()).expect_err(why);
        assert!(!e.is_empty() && !e.contains('\n'), "{e:?}");
        e
    };
    refuse(&text.replacen("\"rm\": false", "\"rm\": \"0\"", 1), "rm as a string (an older lsblk)");
    refuse(&text.replacen("\"size\": 256000000000", "\"size\": \"256G\"", 1), "a size that is not bytes");
    refuse(&text.replacen("\"size\": 256000000000", "\"size\": -1", 1), "a negative size");
    let e = refuse(&text.replacen("\"rm\": false", "\"rm\": false, \"hotplug\": false", 1), "a column not asked for");
    assert!(e.contains("hotplug"), "{e}");
    let e = refuse(&text.replacen("\"ro\": false", "\"ro\": false, \"ro\": true", 1), "a key twice");
    assert!(e.contains("duplicate"), "{e}");
    refuse(&text.replacen("\"tran\": \"nvme\",", "", 1), "a column missing");
    refuse(&text.replacen("\"path\": \"/dev/sdb\"", "\"path\": \"/etc/passwd\"", 1), "not a device node");
    refuse(&text.replacen("\"path\": \"/dev/sdb\"", "\"path\": \"/dev/../sdb\"", 1), "..");
    refuse(&text.replacen("\"path\": \"/dev/sdb\"", "\"path\": \"/dev/sd b\"", 1), "a blank in a path");
    refuse(&text.replacen("\"/efi\"", "\"/efi\\nx\"", 1), "a control character in a mountpoint");
    refuse(&text.replacen("\"/dev/sdb\"", "\"/dev/nvme0n1\"", 1), "a disk listed twice");
    refuse(&text.replacen("\"type\": \"disk\"", "\"type\": \"Disk!\"", 1), "a strange type");
    refuse(&text.replacen("\"blockdevices\"", "\"devices\"", 1), "not lsblk's");
    refuse("", "empty");
    refuse(&"x".repeat(LSBLK_MAX_BYTES + 1), "too large");
}

#[test]
fn lsblk_trees_are_bounded_in_depth_and_count() {
    let mut d = dev("/dev/dm-0", "crypt", GB, &[]);
    for i in 1..=MAX_DEPTH + 1 {
        d = set(dev(&format!("/dev/dm-{i}"), "lvm", GB, &[]), "children", json!([d]));
    }
    let e = parse_lsblk(&lsblk(&[d])).unwrap_err();
    assert!(e.contains("deeper than"), "{e}");
    let many: Vec<Value> = (0..=MAX_DEVICES).map(|i| dev(&format!("/dev/loop{i}"), "loop", GB, &[])).collect();
    let e = parse_lsblk(&lsblk(&many)).unwrap_err();
    assert!(e.contains("more than 1024 block devices"), "{e}");
}

#[test]
fn a_disks_own_words_are_shown_as_plain_ascii() {
    let d = set(blank("/dev/sdb", 2000 * GB, "sata", "  Evil\u{1b}[2J\u{202e}Disk  ", "S\tN"), "serial", json!("S\tN"));
    let devs = vec![stick(), blank("/dev/nvme0n1", 256 * GB, "nvme", "M", "S"), d];
    let p = plan(&facts(&devs)).unwrap();
    let sdb = p.disks.iter().find(|d| d.path == "/dev/sdb").unwrap();
    assert_eq!(sdb.model.as_deref(), Some("Evil?[2J?Disk"));
    assert_eq!(sdb.serial.as_deref(), Some("S?N"));
    let text = render_text(&Report::planned(&p, 0, Outcome::DryRun));
    assert!(text.is_ascii() && !text.contains('\u{1b}'));
    assert_eq!(display(&"x".repeat(100)).len(), MAX_SHOWN + 3);
    assert_eq!(display("   "), "");
}

// ---- the recovery key and the header ----

#[test]
fn the_recovery_key_is_parsed_from_real_cryptenroll_output() {
    let k = parse_recovery_key(fixture!("cryptenroll-recovery-key.stdout").as_bytes()).expect("systemd 254's output");
    assert_eq!(k.expose().len(), 71);
    assert_eq!(format!("{k:?}"), "RecoveryKey(..)", "Debug never shows it");
    // What it prints on stderr is not the key.
    assert!(parse_recovery_key(fixture!("cryptenroll-recovery-key.stderr").as_bytes()).is_err());
    let good = "fjfhcgbd-kkbnvfrv-cvhgcdtn-jhvtnvkb-lctetbvh-ekdkrvtd-ehtrcrnj-uurvtlhi";
    assert!(parse_recovery_key(good.as_bytes()).is_ok());
    for bad in [
        "",
        "fjfhcgbd-kkbnvfrv-cvhgcdtn-jhvtnvkb-lctetbvh-ekdkrvtd-ehtrcrnj\n",
        "fjfhcgbd-kkbnvfrv-cvhgcdtn-jhvtnvkb-lctetbvh-ekdkrvtd-ehtrcrnj-uurvtlhi-fjfhcgbd\n",
        "FJFHCGBD-kkbnvfrv-cvhgcdtn-jhvtnvkb-lctetbvh-ekdkrvtd-ehtrcrnj-uurvtlhi\n",
        "fjfhcgba-kkbnvfrv-cvhgcdtn-jhvtnvkb-lctetbvh-ekdkrvtd-ehtrcrnj-uurvtlhi\n",
        "fjfhcgbd-kkbnvfrv-cvhgcdtn-jhvtnvkb-lctetbvh-ekdkrvtd-ehtrcrnj-uurvtlhi\n\n",
        "fjfhcgbd-kkbnvfrv-cvhgcdtn-jhvtnvkb-lctetbvh-ekdkrvtd-ehtrcrnj-uurvtlh\n",
        " fjfhcgbd-kkbnvfrv-cvhgcdtn-jhvtnvkb-lctetbvh-ekdkrvtd-ehtrcrnj-uurvtlhi\n",
    ] {
        let e = parse_recovery_key(bad.as_bytes()).expect_err(bad);
        assert!(!e.contains("fjfh"), "the error never echoes a key: {e}");
    }
}

#[test]
fn the_key_files_slot_is_the_one_no_token_names_and_only_tpm_and_recovery_remain() {
    let before = parse_keyslots(fixture!("luks2-keyfile-tpm2-recovery.json")).expect("real header");
    assert_eq!(before.key_file_slot(), Ok(0));
    assert!(before.check_final().is_err(), "the key file's slot is still there");
    let after = parse_keyslots(fixture!("luks2-tpm2-recovery.json")).expect("real header");
    assert_eq!(after.check_final(), Ok(()));
    assert!(after.key_file_slot().is_err(), "nothing left to wipe");
    assert_eq!(check_tpm2_pcr7(fixture!("luks2-tpm2-recovery.json")), Ok(()));
    let pcr02 = include_str!("../../../testdata/doctor/luks2-tpm2-pcr0+2.json");
    assert!(check_tpm2_pcr7(pcr02).unwrap_err().contains("not PCR 7 and a signed policy on 11"));
}

#[test]
fn a_header_not_as_expected_refuses_to_pick_a_slot() {
    let ks = |slots: &[u32], tokens: &[(&str, &[u32])]| Keyslots {
        slots: slots.iter().copied().collect(),
        tokens: tokens
            .iter()
            .enumerate()
            .map(|(i, (k, s))| (u32::try_from(i).unwrap(), ((*k).to_owned(), s.to_vec())))
            .collect(),
    };
    let t = TPM2_TOKEN;
    let r = RECOVERY_TOKEN;
    assert_eq!(ks(&[0, 1, 2], &[(t, &[1]), (r, &[2])]).key_file_slot(), Ok(0));
    assert_eq!(ks(&[3, 1, 2], &[(t, &[1]), (r, &[2])]).key_file_slot(), Ok(3));
    assert!(ks(&[0, 1, 2, 3], &[(t, &[1]), (r, &[2])]).key_file_slot().is_err(), "two tokenless slots");
    assert!(ks(&[0, 1], &[(t, &[1])]).key_file_slot().is_err(), "no recovery key");
    assert!(ks(&[0, 1, 2], &[(t, &[1]), (t, &[2])]).key_file_slot().is_err(), "two TPM tokens");
    assert!(ks(&[0, 1, 2], &[(t, &[1, 2]), (r, &[2])]).key_file_slot().is_err(), "a token of two slots");
    assert!(ks(&[0, 1, 2, 3], &[(t, &[1]), (r, &[2]), ("systemd-fido2", &[3])]).key_file_slot().is_err());
    assert!(ks(&[1, 2, 3], &[(t, &[1]), (r, &[2])]).check_final().is_err());
    let header = fixture!("luks2-keyfile-tpm2-recovery.json");
    let dangling = header.replacen("\"keyslots\":[\n        \"1\"", "\"keyslots\":[\n        \"9\"", 1);
    assert_ne!(dangling, header, "the fixture's TPM token names slot 1");
    assert!(parse_keyslots(&dangling).unwrap_err().contains("does not exist"));
    assert!(parse_keyslots(&header.replacen("\"keyslots\":{", "\"keyslots\":{\"01\":{},", 1)).is_err());
    assert!(parse_keyslots("{\"keyslots\":{},\"keyslots\":{}}").is_err(), "a key twice");
}

// ---- the report ----

fn installed_report() -> Report {
    let p = plan(&facts(&mini_pc())).unwrap();
    let mut r = Report::planned(&p, 1_796_000_000, Outcome::Installed);
    r.recovery_key =
        Some(parse_recovery_key(b"fjfhcgbd-kkbnvfrv-cvhgcdtn-jhvtnvkb-lctetbvh-ekdkrvtd-ehtrcrnj-uurvtlhi\n").unwrap());
    r.done = p.commands("/run/x", "/run/x/key").iter().map(|c| c.why.to_owned()).collect();
    r
}

#[test]
fn the_recovery_key_is_loud_in_the_report_and_ascii() {
    let r = installed_report();
    let text = render_text(&r);
    assert!(text.contains("WRITE THIS DOWN, THEN DELETE THIS FILE"), "{text}");
    assert!(text.contains("#     fjfhcgbd-kkbnvfrv-cvhgcdtn-jhvtnvkb-lctetbvh-ekdkrvtd-ehtrcrnj-uurvtlhi\n"));
    assert!(text.is_ascii());
    insta::assert_snapshot!("report_installed", text);
    let j: Value = serde_json::from_str(&render_json_text(&r)).unwrap();
    assert_eq!(j["outcome"], "installed");
    assert_eq!(j["recovery_key"], "fjfhcgbd-kkbnvfrv-cvhgcdtn-jhvtnvkb-lctetbvh-ekdkrvtd-ehtrcrnj-uurvtlhi");
    assert_eq!(j["pool"], "offsite");
    assert_eq!(j["plan"]["data_disk"]["stable"], "/dev/disk/by-id/ata-WDC_WD20EFRX-68EUZN0_WD-WCC4M1234567");
    assert_eq!(j["time"], "2026-11-30T00:53:20Z");
    assert!(render_json_text(&r).is_ascii());
}

#[test]
fn a_failure_after_the_disks_changed_keeps_the_key_and_says_what_was_done() {
    let mut r = installed_report();
    r.outcome = Outcome::Failed {
        step: "create the pool".into(),
        error: "zpool: \u{2026} busy".into(),
        fix: "wipe both".into(),
    };
    let text = render_text(&r);
    assert!(text.contains("FAILED at: create the pool") && text.contains("WRITE THIS DOWN"), "{text}");
    assert!(text.contains("error: zpool: ? busy"), "non-ASCII becomes ?: {text}");
    let j = render_json(&r);
    assert_eq!((j["outcome"].as_str(), j["failed_step"].as_str()), (Some("failed"), Some("create the pool")));
}

#[test]
fn a_refusal_report_has_no_key_and_its_json_the_reason() {
    let f = Facts { tpm_version: Ok(None), ..facts(&mini_pc()) };
    let r = Report::refused(*refused(&f), 1_796_000_000);
    let j = render_json(&r);
    assert_eq!(j["outcome"], "refused");
    assert!(j["reason"].as_str().unwrap().starts_with("tpm2: no TPM"));
    assert_eq!(j["recovery_key"], Value::Null);
    assert_eq!(j["plan"], Value::Null);
    assert_eq!(j["disks"].as_array().unwrap().len(), 3, "the disks are listed even when the TPM refuses");
    assert!(!render_text(&r).contains("RECOVERY KEY"));
}
