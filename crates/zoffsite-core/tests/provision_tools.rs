//! The provisioning renderers' files, checked by the real tools that read
//! them: `sshd -t` and `sshd -T`, `systemd-analyze verify`, `calendar`
//! and `security`, `nft -c` and `nft -f` in a network namespace,
//! `wg-quick strip`; and `wg setconf` on a real interface, which needs the
//! wireguard kernel module (`#[ignore]`d: for the VM).
//!
//! A tool that is not installed, or a kernel without nf_tables or network
//! namespaces, skips its test with a message (the unit tests run before
//! `make setup` installs the VM's tools on a fresh machine), unless
//! `ZOFFSITE_REQUIRE_TOOLS=1`, which makes it a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use zoffsite_core::boxinit::PublicKey;
use zoffsite_core::names::Dataset;
use zoffsite_core::provision::values::{AbsPath, BoxName, BoxRoot, Endpoint, HostKey, WgKey};
use zoffsite_core::provision::{self, nft, sshd, units, wireguard, Inputs, Keys};

const SOURCE_WG: &str = "dRxa9htU+RVUuCymxLHBa675zq3mKpdXLAGKijKxuTo=";
const BOX_WG: &str = "Hz64cXtZeK1304qYfOILdM5dNHCFy3q7C2DJM+rRU04=";
const BOX_HOST: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIju/YVsKQHDF/eu9Sr8hjh1SzVn3gBUhwpLjT5zxG2B box-host";
const SOURCE_SSH: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH0nK8sOTxp3TwKquMXrnsesaBBFG1ALsl9V95Jhbzm4 root@home";

fn inputs(endpoint: &str) -> Inputs {
    let keys = Keys {
        source_wg: WgKey::new(SOURCE_WG).unwrap(),
        box_wg: WgKey::new(BOX_WG).unwrap(),
        box_host: HostKey::new(PublicKey::parse(BOX_HOST).unwrap()).unwrap(),
        source_ssh: PublicKey::parse(SOURCE_SSH).unwrap(),
    };
    let mut i = Inputs::new(
        BoxName::new("friend").unwrap(),
        Endpoint::parse(endpoint).unwrap(),
        BoxRoot::new(Dataset::new("offsite/home").unwrap()).unwrap(),
        keys,
    );
    i.backup_write_paths = vec![AbsPath::new("/tank/data").unwrap()];
    i
}

/// The tool at the first of `candidates` that exists, or `None` (and a
/// message) when none does and tools are not required.
fn tool(candidates: &[&str]) -> Option<PathBuf> {
    if let Some(p) = candidates.iter().map(Path::new).find(|p| p.exists()) {
        return Some(p.to_owned());
    }
    skip(&format!("{candidates:?} not installed"))
}

/// Skips a test (`None`), or fails it when tools are required.
fn skip<T>(why: &str) -> Option<T> {
    assert!(std::env::var_os("ZOFFSITE_REQUIRE_TOOLS").is_none_or(|v| v != "1"), "{why}, and ZOFFSITE_REQUIRE_TOOLS=1");
    eprintln!("SKIPPED: {why} (ZOFFSITE_REQUIRE_TOOLS=1 makes this a failure)");
    None
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn abs(p: &Path) -> AbsPath {
    AbsPath::new(p.to_str().unwrap()).unwrap()
}

/// What Debian 12's /etc/ssh/sshd_config sets, with the include first, as
/// there: the drop-in must win where both set a keyword.
fn debian_sshd_config(dropins: &Path, pid: &Path) -> String {
    format!(
        "Include {}/*.conf
KbdInteractiveAuthentication no
UsePAM yes
X11Forwarding yes
PrintMotd no
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
PidFile {}
",
        dropins.display(),
        pid.display()
    )
}

#[test]
fn sshd_accepts_the_dropin_and_it_wins_over_debians_main_file() {
    let (Some(sshd_bin), Some(keygen)) = (tool(&["/usr/sbin/sshd"]), tool(&["/usr/bin/ssh-keygen"])) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("host_key");
    let out = run(Command::new(keygen).args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut i = inputs("home.example.org:51820");
    i.host_key_file = abs(&key);
    let dropins = dir.path().join("sshd_config.d");
    write(&dropins.join("zoffsite.conf"), &sshd::dropin(&i));
    let main = dir.path().join("sshd_config");
    write(&main, &debian_sshd_config(&dropins, &dir.path().join("sshd.pid")));
    // sshd insists on its privilege separation directory even for -t (root's,
    // writable by nobody else; made by systemd-tmpfiles where sshd is in use).
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o755)
        .create("/run/sshd")
        .unwrap();

    let out = run(Command::new(&sshd_bin).arg("-t").arg("-f").arg(&main));
    assert!(out.status.success() && out.stderr.is_empty(), "sshd -t: {}{}", text(&out.stdout), text(&out.stderr));

    let out = run(Command::new(&sshd_bin).arg("-T").arg("-f").arg(&main));
    assert!(out.status.success() && out.stderr.is_empty(), "sshd -T: {}", text(&out.stderr));
    let effective = text(&out.stdout);
    for want in [
        "listenaddress 10.77.0.2:22".to_owned(),
        "addressfamily inet".to_owned(),
        format!("hostkey {}", key.display()),
        "allowusers zoffsite@10.77.0.1".to_owned(),
        "permitrootlogin no".to_owned(),
        "authenticationmethods publickey".to_owned(),
        "pubkeyauthentication yes".to_owned(),
        "passwordauthentication no".to_owned(),
        "kbdinteractiveauthentication no".to_owned(),
        "hostbasedauthentication no".to_owned(),
        "disableforwarding yes".to_owned(),
        "permittunnel no".to_owned(),
        "permittty no".to_owned(),
        "permituserrc no".to_owned(),
        "usedns no".to_owned(),
        "maxauthtries 3".to_owned(),
    ] {
        assert!(effective.lines().any(|l| l == want), "sshd -T lacks {want:?}:\n{effective}");
    }
    // Exactly one listener and one host key: the drop-in's.
    assert_eq!(effective.lines().filter(|l| l.starts_with("listenaddress ")).count(), 1, "{effective}");
    assert_eq!(effective.lines().filter(|l| l.starts_with("hostkey ")).count(), 1, "{effective}");
}

/// Writes every unit of both sides under `dir`, rendered to run `exe`.
fn write_units(dir: &Path, exe: &AbsPath) -> Vec<PathBuf> {
    let mut i = inputs("home.example.org:51820");
    i.source_exe = exe.clone();
    i.box_exe = exe.clone();
    let mut units = Vec::new();
    for f in provision::source_files(&i).into_iter().chain(provision::box_files(&i)) {
        let Some(name) = f.path.strip_prefix("/etc/systemd/system/") else { continue };
        let path = dir.join(name);
        write(&path, &f.text);
        if !name.contains(".d/") {
            units.push(path);
        }
    }
    units
}

#[test]
fn systemd_analyze_verifies_every_unit() {
    let Some(analyze) = tool(&["/usr/bin/systemd-analyze"]) else { return };
    // nft, run by the firewall units from systemd's search path.
    if tool(&["/usr/sbin/nft", "/usr/bin/nft"]).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // ExecStart must name an existing executable.
    let units = write_units(dir.path(), &AbsPath::new("/bin/true").unwrap());
    assert_eq!(units.len(), 14, "{units:?}");
    let out = run(Command::new(&analyze).args(["verify", "--man=no"]).args(&units));
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "systemd-analyze verify failed:\n{said}");
    // Nothing at all about our units (other units it loads on the way may
    // have their own complaints on this host).
    let ours: Vec<&str> =
        said.lines().filter(|l| l.contains("zoffsite") || l.contains(dir.path().to_str().unwrap())).collect();
    assert!(ours.is_empty(), "systemd-analyze verify warns about our units:\n{}", ours.join("\n"));

    // The box's drop-in, on top of the distribution's wg-quick@.service.
    let template = ["/lib/systemd/system/wg-quick@.service", "/usr/lib/systemd/system/wg-quick@.service"];
    if tool(&template).is_some() {
        let instance = format!("wg-quick@{}.service", inputs("home.example.org:51820").interface());
        let out = run(Command::new(&analyze)
            .args(["verify", "--man=no", &instance])
            .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.path().display())));
        let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "systemd-analyze verify {instance} failed:\n{said}");
        let ours: Vec<&str> = said.lines().filter(|l| l.contains("wg-quick") || l.contains("zoffsite")).collect();
        assert!(ours.is_empty(), "systemd-analyze verify warns about {instance}:\n{}", ours.join("\n"));
    }
}

#[test]
fn systemd_understands_every_schedule() {
    let Some(analyze) = tool(&["/usr/bin/systemd-analyze"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let units = write_units(dir.path(), &AbsPath::new("/bin/true").unwrap());
    let mut n = 0;
    for u in units.iter().filter(|u| u.extension().is_some_and(|e| e == "timer")) {
        for spec in std::fs::read_to_string(u).unwrap().lines().filter_map(|l| l.strip_prefix("OnCalendar=")) {
            let out = run(Command::new(&analyze).args(["calendar", spec]));
            assert!(out.status.success(), "{}: {spec:?}: {}", u.display(), text(&out.stderr));
            n += 1;
        }
    }
    assert_eq!(n, 4, "backup, drill, box prune, box check (box doctor runs after boot and hourly)");
}

/// The services' sandboxes, as systemd scores them (0 best, 10 worst; "OK"
/// is below 5): the ZFS services and the box doctor, root with CAP_SYS_ADMIN, at most 3.0;
/// the keepalive, which may only change interfaces, at most 2.0. A change
/// that loosens a sandbox fails here.
#[test]
fn systemd_scores_the_sandboxes() {
    let Some(analyze) = tool(&["/usr/bin/systemd-analyze"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let units = write_units(dir.path(), &AbsPath::new("/bin/true").unwrap());
    for u in units.iter().filter(|u| {
        let name = u.file_name().unwrap().to_str().unwrap();
        name.ends_with(".service") && !name.starts_with("zoffsite-firewall")
    }) {
        let threshold = if u.ends_with(units::KEEPALIVE) { "20" } else { "30" };
        let out = run(Command::new(&analyze)
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(format!("--threshold={threshold}"))
            .arg(u));
        let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
        let overall = said.lines().find(|l| l.contains("Overall exposure level")).unwrap_or("(no score)");
        eprintln!("{}: {overall}", u.file_name().unwrap().to_str().unwrap());
        assert!(out.status.success(), "{} scores above {threshold}/100:\n{said}", u.display());
    }
}

/// nftables in this kernel, or `None` (and a message) when the kernel
/// cannot even check a trivial table.
fn nft_tool() -> Option<PathBuf> {
    let nft = tool(&["/usr/sbin/nft", "/usr/bin/nft"])?;
    let dir = tempfile::tempdir().unwrap();
    let probe = dir.path().join("probe.nft");
    write(&probe, "table inet zoffsite_probe {\n\tchain c {\n\t\ttype filter hook input priority filter; policy accept;\n\t}\n}\n");
    let out = run(Command::new(&nft).arg("-c").arg("-f").arg(&probe));
    if out.status.success() {
        return Some(nft);
    }
    skip(&format!("nft -c cannot check a trivial table here (no nf_tables?): {}", text(&out.stderr)))
}

#[test]
fn nft_checks_both_rule_sets() {
    let Some(nft) = nft_tool() else { return };
    let dir = tempfile::tempdir().unwrap();
    for endpoint in ["home.example.org:51820", "[2001:db8::1]:4500"] {
        let i = inputs(endpoint);
        for (name, rules) in [("source.nft", nft::source_table(&i)), ("box.nft", nft::box_ruleset(&i))] {
            let path = dir.path().join(name);
            write(&path, &rules);
            let out = run(Command::new(&nft).arg("-c").arg("-f").arg(&path));
            assert!(out.status.success() && out.stderr.is_empty(), "nft -c -f {name}:\n{}\n{rules}", text(&out.stderr));
        }
    }
}

/// A network namespace for one test, removed when dropped.
struct Netns {
    name: String,
    ip: PathBuf,
}

impl Netns {
    /// `None` (skipped) where namespaces cannot be made (not root).
    fn new(ip: PathBuf, tag: &str) -> Option<Netns> {
        let name = format!("zoffsite-{tag}-{}", std::process::id());
        let out = run(Command::new(&ip).args(["netns", "add", &name]));
        if !out.status.success() {
            return skip(&format!("ip netns add: {}", text(&out.stderr)));
        }
        Some(Netns { name, ip })
    }

    fn exec(&self, program: &Path) -> Command {
        let mut c = Command::new(&self.ip);
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new(&self.ip).args(["netns", "del", &self.name]).status();
    }
}

#[test]
fn nft_loads_both_rule_sets_twice_into_a_namespace_and_the_second_changes_nothing() {
    let (Some(nft), Some(ip)) = (nft_tool(), tool(&["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"])) else { return };
    let dir = tempfile::tempdir().unwrap();
    let i = inputs("home.example.org:51820");
    for (name, rules) in [("source.nft", nft::source_table(&i)), ("box.nft", nft::box_ruleset(&i))] {
        let Some(ns) = Netns::new(ip.clone(), "nft") else { return };
        let path = dir.path().join(name);
        write(&path, &rules);
        let list = || {
            let out = run(ns.exec(&nft).args(["list", "ruleset"]));
            assert!(out.status.success(), "{}", text(&out.stderr));
            text(&out.stdout)
        };
        let mut loaded = Vec::new();
        for _ in 0..2 {
            let out = run(ns.exec(&nft).arg("-f").arg(&path));
            assert!(out.status.success() && out.stderr.is_empty(), "nft -f {name}: {}", text(&out.stderr));
            loaded.push(list());
        }
        assert_eq!(loaded[0], loaded[1], "loading {name} again changed the rule set");
        assert!(loaded[0].contains("table inet zoffsite_"), "{}", loaded[0]);
    }
}

#[test]
fn wg_quick_strips_both_configs() {
    let Some(wg_quick) = tool(&["/usr/bin/wg-quick"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let i = inputs("home.example.org:51820");
    for (side, conf, want) in [
        ("source", wireguard::source_wg_quick(&i), vec!["ListenPort = 51820", "AllowedIPs = 10.77.0.2/32"]),
        (
            "box",
            wireguard::box_wg_quick(&i),
            vec!["Endpoint = home.example.org:51820", "AllowedIPs = 10.77.0.1/32", "PersistentKeepalive = 25"],
        ),
    ] {
        // wg-quick takes the interface's name from the file's.
        let path = dir.path().join(side).join(format!("{}.conf", i.interface()));
        write(&path, &conf);
        let out = run(Command::new(&wg_quick).arg("strip").arg(&path));
        assert!(out.status.success(), "wg-quick strip ({side}): {}", text(&out.stderr));
        let stripped = text(&out.stdout);
        for w in want {
            assert!(stripped.lines().any(|l| l == w), "{side}: {w:?} missing from\n{stripped}");
        }
        // What wg-quick keeps for itself never reaches `wg`.
        assert!(!stripped.lines().any(|l| l.starts_with("Address") || l.starts_with("PostUp")), "{stripped}");
    }
}

#[test]
#[ignore = "needs the wireguard kernel module: run in the VM (scripts/e2e), as root"]
fn wg_setconf_takes_both_configs_on_a_real_interface() {
    let (Some(wg), Some(wg_quick), Some(ip)) =
        (tool(&["/usr/bin/wg"]), tool(&["/usr/bin/wg-quick"]), tool(&["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"]))
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // A name (resolved through /etc/hosts, no DNS needed) and an address.
    for endpoint in ["localhost:51820", "192.0.2.1:51820"] {
        let i = inputs(endpoint);
        let interface = i.interface();
        for (side, conf) in [("source", wireguard::source_wg_quick(&i)), ("box", wireguard::box_wg_quick(&i))] {
            let Some(ns) = Netns::new(ip.clone(), "wg") else { return };
            let path = dir.path().join(side).join(format!("{interface}.conf"));
            write(&path, &conf);
            let stripped = dir.path().join(side).join("stripped.conf");
            let out = run(Command::new(&wg_quick).arg("strip").arg(&path));
            assert!(out.status.success(), "{}", text(&out.stderr));
            write(&stripped, &text(&out.stdout));
            let out = run(ns.exec(&ip).args(["link", "add", &interface, "type", "wireguard"]));
            assert!(out.status.success(), "ip link add: {}", text(&out.stderr));
            let out = run(ns.exec(&wg).arg("setconf").arg(&interface).arg(&stripped));
            assert!(out.status.success(), "wg setconf ({side}, {endpoint}): {}", text(&out.stderr));
            // What PostUp does, with a key file of the test's.
            let key = run(Command::new(&wg).arg("genkey"));
            let key_file = dir.path().join(side).join("private.key");
            write(&key_file, &text(&key.stdout));
            let out = run(ns.exec(&wg).args(["set", &interface, "private-key"]).arg(&key_file));
            assert!(out.status.success(), "wg set private-key: {}", text(&out.stderr));
            let out = run(ns.exec(&wg).args(["show", &interface, "dump"]));
            let dump = text(&out.stdout);
            let rows: Vec<Vec<&str>> = dump.lines().map(|l| l.split('\t').collect()).collect();
            // Interface: private, public, port, fwmark; peer: public, psk,
            // endpoint, allowed ips, handshake, rx, tx, keepalive.
            assert_eq!(rows.len(), 2, "{dump}");
            assert_eq!(rows[0][0], text(&key.stdout).trim(), "the private key PostUp set is kept");
            let (port, peer) = (rows[0][2], &rows[1]);
            match side {
                "source" => {
                    assert_eq!(
                        (port, peer[0], peer[2], peer[3], peer[7]),
                        ("51820", BOX_WG, "(none)", "10.77.0.2/32", "off")
                    );
                }
                _ => {
                    assert_eq!((port, peer[0], peer[3], peer[7]), ("51820", SOURCE_WG, "10.77.0.1/32", "25"));
                    assert!(peer[2].ends_with(":51820") && peer[2] != "(none)", "{dump}");
                }
            }
            // Why the drop-ins take wg-quick's reload away: it is a
            // syncconf of the stripped file, which has no key, and that
            // clears the key PostUp set.
            let out = run(ns.exec(&wg).arg("syncconf").arg(&interface).arg(&stripped));
            assert!(out.status.success(), "wg syncconf: {}", text(&out.stderr));
            let out = run(ns.exec(&wg).args(["show", &interface, "private-key"]));
            assert_eq!(text(&out.stdout).trim(), "(none)", "syncconf cleared the key");
            let dropin =
                if side == "source" { wireguard::source_wg_quick_dropin() } else { wireguard::box_wg_quick_dropin() };
            assert!(dropin.contains("\nExecReload=\n"), "{dropin}");
        }
    }
}
