//! doctor's shell against a fake machine: a root directory of sysfs,
//! efivars, /proc and /etc files, and fake tools (scripts that log their
//! argv and print the fixtures of `crates/zoffsite-core/testdata/doctor/`).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use zoffsite_core::boxinit::PublicKey;
use zoffsite_core::doctor::{CheckId, Status};
use zoffsite_core::names::Dataset;
use zoffsite_core::provision::values::{BoxName, BoxRoot, Endpoint, HostKey, WgKey};
use zoffsite_core::provision::{self, Inputs, Keys};

use super::*;

const NOW: i64 = 1_796_000_000;
/// What `wg show IF dump` would print first: the interface's private key.
const PRIVATE_KEY: &str = "CHbCwzHZbQfBe0NGJIdEZ05ZGUq31tnDP4g4LYgnTVo=";
const ALLOW: &str = "---- Permissions on offsite/home ----\nLocal+Descendent permissions:\n\tuser zoffsite create,mount,receive:append,send,userprop\n";

fn fixture(name: &str) -> String {
    let p: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "zoffsite-core", "testdata", "doctor", name].iter().collect();
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The box `box new friend --endpoint source.example:51820 --root
/// offsite/home` makes, everything else by default.
fn inputs() -> Inputs {
    let pk = PublicKey::parse("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIju/YVsKQHDF/eu9Sr8hjh1SzVn3gBUhwpLjT5zxG2B box")
        .unwrap();
    Inputs::new(
        BoxName::new("friend").unwrap(),
        Endpoint::parse("source.example:51820").unwrap(),
        BoxRoot::new(Dataset::new("offsite/home").unwrap()).unwrap(),
        Keys {
            source_wg: WgKey::new("uD/VrD2KiUhDz2wi8Sq7AQh61AncKoYbPIY8geEV3ww=").unwrap(),
            box_wg: WgKey::new("Tpdl/iHuwKVkvB8TKa+S9UeCBWn3fJCF9/YNHqgj5CA=").unwrap(),
            box_host: HostKey::new(pk.clone()).unwrap(),
            source_ssh: pk,
        },
    )
}

/// One answer of a fake tool: for argv matching a shell `case` pattern,
/// print this on stdout and exit 0, or this on stderr and exit 1.
enum Answer {
    Out(String),
    Err(String),
}

struct Fake {
    _dir: tempfile::TempDir,
    root: PathBuf,
    bin: PathBuf,
    answers: PathBuf,
    log: PathBuf,
    /// Per tool: (pattern, answer), first match wins.
    tools: std::collections::BTreeMap<String, Vec<(String, Answer)>>,
}

impl Fake {
    fn new() -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let (root, bin, answers) = (dir.path().join("root"), dir.path().join("bin"), dir.path().join("answers"));
        for d in [&root, &bin, &answers] {
            std::fs::create_dir_all(d).unwrap();
        }
        let log = dir.path().join("argv.log");
        Fake { _dir: dir, root, bin, answers, log, tools: Default::default() }
    }

    fn file(&self, abs: &str, bytes: impl AsRef<[u8]>) {
        let p = self.root.join(abs.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    fn dir(&self, abs: &str) {
        std::fs::create_dir_all(self.root.join(abs.trim_start_matches('/'))).unwrap();
    }

    fn answer(&mut self, tool: &str, pattern: &str, a: Answer) {
        let list = self.tools.entry(tool.to_owned()).or_default();
        list.retain(|(p, _)| p != pattern);
        list.insert(0, (pattern.to_owned(), a));
    }

    fn out(&mut self, tool: &str, pattern: &str, text: impl Into<String>) {
        self.answer(tool, pattern, Answer::Out(text.into()));
    }

    fn remove_tool(&mut self, tool: &str) {
        self.tools.remove(tool);
    }

    /// Writes the scripts.
    fn host(&self) -> Host {
        for e in std::fs::read_dir(&self.bin).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
        for (tool, answers) in &self.tools {
            let mut s =
                format!("#!/bin/sh\nprintf '%s\\n' \"{tool} $*\" >> '{}'\ncase \"$*\" in\n", self.log.display());
            for (i, (pattern, a)) in answers.iter().enumerate() {
                let f = self.answers.join(format!("{tool}-{i}"));
                match a {
                    Answer::Out(t) => {
                        std::fs::write(&f, t).unwrap();
                        s.push_str(&format!("  {pattern}) cat '{}'; exit 0;;\n", f.display()));
                    }
                    Answer::Err(t) => {
                        std::fs::write(&f, t).unwrap();
                        s.push_str(&format!("  {pattern}) cat '{}' >&2; exit 1;;\n", f.display()));
                    }
                }
            }
            s.push_str(&format!("esac\necho \"fake {tool}: no answer for $*\" >&2\nexit 99\n"));
            let p = self.bin.join(tool);
            std::fs::write(&p, s).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Host { root: self.root.clone(), bin: Some(self.bin.clone()), deadline: Duration::from_secs(20) }
    }

    fn argv_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A well set up box: Secure Boot on in user mode, TPM 2.0 with PCR 7
/// measured, the root on LUKS2 (dm-0 on sda2) with a PCR 7 token, `box
/// apply`'s files, and tools that say everything is as installed.
fn good_box() -> Fake {
    let mut f = Fake::new();
    let i = inputs();
    let guid = firmware::EFI_GLOBAL_GUID;
    f.file(&format!("/sys/firmware/efi/efivars/SecureBoot-{guid}"), [6, 0, 0, 0, 1]);
    f.file(&format!("/sys/firmware/efi/efivars/SetupMode-{guid}"), [6, 0, 0, 0, 0]);
    f.file("/sys/class/tpm/tpm0/tpm_version_major", "2\n");
    f.file("/sys/class/tpm/tpm0/pcr-sha256/7", format!("{}\n", "1A".repeat(32)));
    f.file(
        "/proc/self/mountinfo",
        "22 1 0:21 / /sys rw - sysfs sysfs rw\n26 1 253:0 / / rw,relatime shared:1 - ext4 /dev/mapper/root rw\n",
    );
    f.file("/sys/dev/block/253:0/dm/uuid", "CRYPT-LUKS2-0123456789abcdef-root\n");
    f.dir("/sys/dev/block/253:0/slaves/sda2");
    f.file("/etc/wireguard/zo-friend.conf", provision::wireguard::box_wg_quick(&i));
    f.file(provision::sshd::DROPIN_PATH, provision::sshd::dropin(&i));
    // `sshd -T` of the installed drop-in: AllowUsers names the source too.
    let sshd_t = fixture("sshd-T-box.txt").replace("allowusers zoffsite\n", "allowusers zoffsite@10.77.0.1\n");
    assert!(sshd_t.contains("zoffsite@10.77.0.1") && sshd_t.contains("listenaddress 10.77.0.2:22\n"));
    f.out("sshd", "-T", sshd_t.clone());
    f.out("sshd", "'-T -C user=zoffsite,addr=10.77.0.1,host=10.77.0.1,laddr=10.77.0.2,lport=22'", sshd_t);
    f.out("nft", "'-j list ruleset'", fixture("nft-box.json").replace("\"wg0\"", "\"zo-friend\""));
    f.file("/proc/net/tcp", fixture("proc-net-tcp-box.txt"));
    f.file("/proc/net/tcp6", fixture("proc-net-tcp6-box.txt"));
    // Asked for a dump (or anything else), the fake would give the
    // private key away. (Later answers are tried first.)
    f.out("wg", "*", format!("{PRIVATE_KEY}\n"));
    f.out(
        "wg",
        "'show zo-friend dump'",
        format!("{PRIVATE_KEY}\tTpdl/iHuwKVkvB8TKa+S9UeCBWn3fJCF9/YNHqgj5CA=\t51820\toff\n"),
    );
    for what in wireguard::Show::WHAT {
        f.out("wg", &format!("'show zo-friend {what}'"), fixture(&format!("wg-box.{what}.txt")));
    }
    f.out("cryptsetup", "'luksDump --dump-json-metadata /dev/sda2'", fixture("luks2-tpm2-pcr7.json"));
    f.out("zfs", "version", "zfs-2.3.4-1\nzfs-kmod-2.3.4-1\n");
    f.out("zfs", "'list -H -o name -t filesystem,volume offsite/home'", "offsite/home\n");
    f.out("zfs", "'allow offsite/home'", ALLOW);
    f.out("zfs", "'get -H -p -o value filesystem_limit offsite/home'", "1000\n");
    f.out("zfs", "'get -H -p -o value snapshot_limit offsite/home'", "100000\n");
    f.out("zpool", "'list -H -o health offsite'", "ONLINE\n");
    let t = NOW - 86_400;
    f.out(
        "zpool",
        "'status -j --json-int offsite'",
        format!(r#"{{"pools":{{"offsite":{{"scan_stats":{{"function":"SCRUB","state":"FINISHED","start_time":{t},"end_time":{t},"errors":0}}}}}}}}"#),
    );
    f.out("systemctl", "'is-enabled '*", "enabled\n");
    f
}

fn box_cfg() -> BoxConfig {
    BoxConfig::parse("root = \"offsite/home\"\n").unwrap()
}

fn run_box(f: &Fake) -> Report {
    box_report(&f.host(), &box_cfg(), NOW)
}

fn status_of(r: &Report, id: CheckId) -> Status {
    let c: Vec<_> = r.checks().iter().filter(|c| c.id() == id).collect();
    assert_eq!(c.len(), 1, "{id}: {r:#?}");
    c[0].status()
}

fn not_ok(r: &Report) -> Vec<(CheckId, Status)> {
    r.checks().iter().filter(|c| c.status() != Status::Ok).map(|c| (c.id(), c.status())).collect()
}

#[test]
fn a_well_set_up_box_is_all_ok_but_the_bios_password() {
    let f = good_box();
    let r = run_box(&f);
    for c in r.checks() {
        println!("{:8} {:26} {}", c.status().as_str(), c.id().as_str(), c.summary());
    }
    assert_eq!(not_ok(&r), [(CheckId::BiosPassword, Status::Unknown)], "{r:#?}");
    let ids: Vec<CheckId> = r.checks().iter().map(Check::id).collect();
    assert_eq!(ids, CheckId::ALL[..19], "every box check once, in order");
    let log = f.argv_log();
    assert!(log.contains("sshd -T -C user=zoffsite,addr=10.77.0.1,"), "{log}");
    assert!(log.contains("cryptsetup luksDump --dump-json-metadata /dev/sda2"), "{log}");
    assert!(
        log.contains("systemctl is-enabled wg-quick@zo-friend.service")
            && log.contains("systemctl is-enabled zoffsite-firewall.service")
            && log.contains("systemctl is-enabled zoffsite-box-keepalive.timer"),
        "{log}"
    );
}

#[test]
fn a_bios_password_the_firmware_shows_is_ok() {
    let f = good_box();
    f.file("/sys/class/firmware-attributes/thinklmi/authentication/Admin/role", "bios-admin\n");
    f.file("/sys/class/firmware-attributes/thinklmi/authentication/Admin/is_enabled", "1\n");
    let r = run_box(&f);
    assert_eq!(not_ok(&r), [], "{r:#?}");
    f.file("/sys/class/firmware-attributes/thinklmi/authentication/Admin/is_enabled", "0\n");
    assert_eq!(status_of(&run_box(&f), CheckId::BiosPassword), Status::Fail);
}

/// How a test breaks the good box.
type Break = Box<dyn Fn(&mut Fake)>;

/// Each broken variant the issue names flips its own check to fail.
#[test]
fn each_broken_variant_fails_its_check() {
    let sshd_all = fixture("sshd-T-box.txt")
        .replace("allowusers zoffsite\n", "allowusers zoffsite@10.77.0.1\n")
        .replace("listenaddress 10.77.0.2:22\n", "listenaddress [::]:22\nlistenaddress 0.0.0.0:22\n");
    let wide = ALLOW.replace("create,mount", "create,destroy,mount");
    let variants: Vec<(&str, Break, Vec<CheckId>)> = vec![
        (
            "sshd on all addresses",
            Box::new(move |f: &mut Fake| {
                f.out("sshd", "-T", sshd_all.clone());
                f.out("sshd", "'-T -C '*", sshd_all.clone());
            }),
            vec![CheckId::SshdListen],
        ),
        (
            "sshd started from ssh.socket (sshd -T shows the tunnel address only)",
            Box::new(|f: &mut Fake| {
                f.file("/proc/net/tcp", fixture("proc-net-tcp-socket.txt"));
                f.file("/proc/net/tcp6", fixture("proc-net-tcp6-socket.txt"));
            }),
            vec![CheckId::SshdListen],
        ),
        (
            "firewall flushed",
            Box::new(|f: &mut Fake| f.out("nft", "'-j list ruleset'", fixture("nft-flushed.json"))),
            vec![CheckId::Firewall],
        ),
        (
            "keepalive off",
            Box::new(|f: &mut Fake| {
                let off = fixture("wg-box.persistent-keepalive.txt").replace("\t1\n", "\toff\n");
                f.out("wg", "'show zo-friend persistent-keepalive'", off);
            }),
            vec![CheckId::WgKeepalive],
        ),
        (
            "delegation widened",
            Box::new(move |f: &mut Fake| f.out("zfs", "'allow offsite/home'", wide.clone())),
            vec![CheckId::ZfsDelegation],
        ),
        (
            "no limits",
            Box::new(|f: &mut Fake| {
                f.out("zfs", "'get -H -p -o value filesystem_limit offsite/home'", "none\n");
                f.out("zfs", "'get -H -p -o value snapshot_limit offsite/home'", format!("{}\n", u64::MAX));
            }),
            vec![CheckId::ZfsLimits],
        ),
        (
            "passwords for the source's connection only (a Match block)",
            Box::new(|f: &mut Fake| {
                let t = fixture("sshd-T-box.txt")
                    .replace("allowusers zoffsite\n", "allowusers zoffsite@10.77.0.1\n")
                    .replace("passwordauthentication no", "passwordauthentication yes");
                f.out("sshd", "'-T -C '*", t);
            }),
            vec![CheckId::SshdPasswordAuth],
        ),
        (
            "the tunnel is down",
            Box::new(|f: &mut Fake| {
                f.answer(
                    "wg",
                    "'show zo-friend '*",
                    Answer::Err("Unable to access interface: No such device\n".into()),
                );
            }),
            vec![CheckId::WgKeepalive, CheckId::WgHandshake, CheckId::WgEndpoint],
        ),
        (
            "an empty TPM policy",
            Box::new(|f: &mut Fake| {
                f.out(
                    "cryptsetup",
                    "'luksDump --dump-json-metadata /dev/sda2'",
                    fixture("luks2-tpm2-empty-policy.json"),
                );
            }),
            vec![CheckId::LuksTpm],
        ),
        (
            "Secure Boot in setup mode",
            Box::new(|f: &mut Fake| {
                f.file(&format!("/sys/firmware/efi/efivars/SetupMode-{}", firmware::EFI_GLOBAL_GUID), [6, 0, 0, 0, 1]);
            }),
            vec![CheckId::SecureBoot],
        ),
        (
            "a timer disabled",
            Box::new(|f: &mut Fake| f.out("systemctl", "'is-enabled zoffsite-box-prune.timer'", "disabled\n")),
            vec![CheckId::Timers],
        ),
    ];
    for (what, broken, ids) in variants {
        let mut f = good_box();
        broken(&mut f);
        let r = run_box(&f);
        let mut want: Vec<(CheckId, Status)> = ids.iter().map(|id| (*id, Status::Fail)).collect();
        want.insert(0, (CheckId::BiosPassword, Status::Unknown));
        want.sort();
        let mut got = not_ok(&r);
        got.sort();
        assert_eq!(got, want, "{what}: {r:#?}");
    }
}

#[test]
fn the_root_on_a_plain_disk_or_lvm_without_luks_fails() {
    let f = good_box();
    std::fs::remove_file(f.root.join("sys/dev/block/253:0/dm/uuid")).unwrap();
    // LVM on sda2, no dm-crypt anywhere.
    f.file("/sys/dev/block/253:0/dm/uuid", "LVM-abc\n");
    f.file("/sys/class/block/sda2/dev", "8:2\n");
    f.file("/sys/dev/block/8:2/uevent", "MAJOR=8\nMINOR=2\nDEVNAME=sda2\n");
    assert_eq!(status_of(&run_box(&f), CheckId::LuksTpm), Status::Fail);
    // LVM on LUKS2 on sda2: followed down to the header.
    std::fs::remove_dir(f.root.join("sys/dev/block/253:0/slaves/sda2")).unwrap();
    f.dir("/sys/dev/block/253:0/slaves/dm-1");
    f.file("/sys/class/block/dm-1/dev", "253:1\n");
    f.file("/sys/dev/block/253:1/dm/uuid", "CRYPT-LUKS2-0123-crypt\n");
    f.dir("/sys/dev/block/253:1/slaves/sda2");
    assert_eq!(status_of(&run_box(&f), CheckId::LuksTpm), Status::Ok);
}

/// A missing tool or file is unknown with the reason, never ok.
#[test]
fn missing_tools_and_files_are_unknown() {
    let mut f = good_box();
    f.remove_tool("nft");
    f.remove_tool("cryptsetup");
    let r = run_box(&f);
    for id in [CheckId::Firewall, CheckId::LuksTpm] {
        assert_eq!(status_of(&r, id), Status::Unknown, "{id}: {r:#?}");
    }
    let fw = r.checks().iter().find(|c| c.id() == CheckId::Firewall).unwrap();
    assert!(fw.summary().contains("`nft` is not installed"), "{fw:?}");

    // Nothing at all: no tools, no files.
    let empty = Fake::new();
    let r = box_report(&empty.host(), &box_cfg(), NOW);
    let ids: Vec<CheckId> = r.checks().iter().map(Check::id).collect();
    assert_eq!(ids, CheckId::ALL[..19]);
    for c in r.checks() {
        assert_eq!(c.status(), Status::Unknown, "{c:?}");
        assert!(c.fix().is_some());
    }

    // No zoffsite tunnel installed: the checks that compare with it say so.
    let f = good_box();
    std::fs::remove_file(f.root.join("etc/wireguard/zo-friend.conf")).unwrap();
    let r = run_box(&f);
    for id in [CheckId::SshdListen, CheckId::Firewall, CheckId::WgHandshake] {
        let c = r.checks().iter().find(|c| c.id() == id).unwrap();
        assert_eq!(c.status(), Status::Unknown, "{c:?}");
        assert!(c.summary().contains("box apply"), "{c:?}");
    }
}

#[test]
fn a_hung_tool_is_killed_and_unknown() {
    let mut f = good_box();
    f.out("nft", "*", "x");
    let host = f.host();
    // Replace the fake with one that never answers.
    std::fs::write(host.bin.as_ref().unwrap().join("nft"), "#!/bin/sh\nexec sleep 30\n").unwrap();
    let host = Host { deadline: Duration::from_millis(300), ..host };
    let c = firewall(&host, &Ok(BoxExpect::new(box_tunnel(&host).unwrap().0, &DropIn::default())));
    assert_eq!(c.status(), Status::Unknown);
    assert!(c.summary().contains("did not finish"), "{c:?}");
}

/// WireGuard is read from the three listings only: `dump` (whose first
/// line is the private key) is never asked for, and the key appears in no
/// output.
#[test]
fn the_wireguard_private_key_is_never_asked_for() {
    let f = good_box();
    let r = run_box(&f);
    let log = f.argv_log();
    let wg: Vec<&str> = log.lines().filter(|l| l.starts_with("wg ")).collect();
    assert_eq!(wg.len(), 3, "{log}");
    for l in wg {
        let what = l.rsplit(' ').next().unwrap();
        assert!(wireguard::Show::WHAT.contains(&what) && !l.contains("dump"), "{l}");
    }
    for c in r.checks() {
        assert!(!c.summary().contains(PRIVATE_KEY) && !c.fix().unwrap_or("").contains(PRIVATE_KEY), "{c:?}");
    }
}

#[test]
fn the_report_file_is_0644_atomic_and_refuses_an_open_directory() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("audit/doctor.json");
    write_report(&p, b"{\"status\":\"ok\"}\n").unwrap();
    let m = std::fs::metadata(&p).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o644);
    assert_eq!(std::fs::metadata(p.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o755);
    write_report(&p, b"{}\n").unwrap();
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "{}\n");
    std::fs::set_permissions(p.parent().unwrap(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = write_report(&p, b"{}\n").unwrap_err();
    assert!(e.contains("writable by others"), "{e}");
    // A symlinked directory is not followed.
    let link = d.path().join("link");
    std::os::unix::fs::symlink(d.path().join("audit"), &link).unwrap();
    assert!(write_report(&link.join("doctor.json"), b"{}").is_err());
}

fn source_cfg(dir: &Path) -> Config {
    let key = dir.join("id");
    std::fs::write(&key, "").unwrap();
    Config::parse(&format!(
        "[source]\ndatasets = [\"tank/data\"]\n\n[[target]]\nname = \"friend\"\nhost = \"127.0.0.1\"\nport = 9\nuser = \"zoffsite\"\nidentity_file = \"{k}\"\nknown_hosts = \"{k}\"\nconnect_timeout = \"2s\"\n",
        k = key.display()
    ))
    .unwrap()
}

/// The source: the tunnel per target from the listings, an unreachable
/// box is a failure of source.box-ssh (and leaves the last run unknown,
/// not ok), missing tools are unknown.
#[test]
fn the_source_checks_each_target() {
    let mut f = Fake::new();
    f.file("/etc/wireguard/zo-friend.conf", provision::wireguard::source_wg_quick(&inputs()));
    for what in wireguard::Show::WHAT {
        let one = fixture(&format!("wg-source.{what}.txt")).lines().next().unwrap().to_owned() + "\n";
        f.out("wg", &format!("'show zo-friend {what}'"), one);
    }
    f.out("systemctl", "'is-enabled '*", "enabled\n");
    f.out("zfs", "version", "zfs-2.3.4-1\nzfs-kmod-2.3.4-1\n");
    let cfg = source_cfg(&f.root);
    let r = source_report(&f.host(), &cfg, Path::new("/etc/zoffsite/zoffsite.toml"), NOW);
    for c in r.checks() {
        println!("{:8} {:26} {}", c.status().as_str(), c.id().as_str(), c.summary());
    }
    let ids: Vec<CheckId> = r.checks().iter().map(Check::id).collect();
    assert_eq!(ids, CheckId::ALL[19..], "every source check once, in order");
    assert_eq!(status_of(&r, CheckId::SourceWgHandshake), Status::Ok);
    assert_eq!(status_of(&r, CheckId::SourceBoxSsh), Status::Fail);
    assert_eq!(status_of(&r, CheckId::SourceLastRun), Status::Unknown);
    assert_eq!(status_of(&r, CheckId::SourceZfsVersion), Status::Ok);
    assert_eq!(status_of(&r, CheckId::SourceTimers), Status::Ok);
    // The fake zfs lists nothing: the selection is unknown, never ok.
    assert_eq!(status_of(&r, CheckId::SourceEncryption), Status::Unknown);
    let log = f.argv_log();
    assert!(log.contains("systemctl is-enabled zoffsite-firewall-friend.service"), "{log}");
    assert!(log.contains("systemctl is-enabled zoffsite-backup.timer"), "{log}");
    assert!(log.lines().filter(|l| l.starts_with("wg ")).all(|l| !l.contains("dump")), "{log}");
}

/// Key files: the encryption roots of the selection, their `keylocation`,
/// and the file's owner and mode (lstat; never read).
#[test]
fn a_key_file_others_can_read_fails() {
    let mut f = Fake::new();
    f.out("systemctl", "'is-enabled '*", "enabled\n");
    f.out("zfs", "version", "zfs-2.3.4-1\nzfs-kmod-2.3.4-1\n");
    f.out(
        "zfs",
        "'list -H -p -r -t filesystem,volume -o name,guid,encryption,written,zoffsite:backup tank/data'",
        "tank/data\t123\taes-256-gcm\t0\t-\ntank/data/plain\t124\toff\t0\t-\n",
    );
    f.out("zfs", "'get -H -p -o name,value encryptionroot tank/data'", "tank/data\ttank/data\n");
    f.out("zfs", "'get -H -p -o name,value keylocation tank/data'", "tank/data\tfile:///etc/zfs/tank.key\n");
    f.file("/etc/zfs/tank.key", "never read");
    let key = f.root.join("etc/zfs/tank.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = source_cfg(&f.root);
    let r = source_report(&f.host(), &cfg, Path::new("/etc/zoffsite/zoffsite.toml"), NOW);
    let c = r.checks().iter().find(|c| c.id() == CheckId::SourceKeyFiles).unwrap();
    assert_eq!(c.status(), Status::Fail, "{r:#?}");
    assert!(c.summary().contains("/etc/zfs/tank.key") && c.summary().contains("0644"), "{c:?}");
    let e = r.checks().iter().find(|c| c.id() == CheckId::SourceEncryption).unwrap();
    assert_eq!(e.status(), Status::Fail, "{e:?}");
    assert!(e.summary().contains("tank/data/plain"), "{e:?}");
    // Root's alone (as far as the mode says: the test does not run as root,
    // so only the mode is fixed here).
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).unwrap();
    let r = source_report(&f.host(), &cfg, Path::new("/etc/zoffsite/zoffsite.toml"), NOW);
    let want = if rustix::process::geteuid().is_root() { Status::Ok } else { Status::Fail };
    assert_eq!(status_of(&r, CheckId::SourceKeyFiles), want);
}
