//! Snapshots of every rendered file for one fixed input, the validation
//! of every input type, and the property that no input can change a
//! file's shape.

use proptest::prelude::*;

use super::values::*;
use super::*;
use crate::boxinit::PublicKey;
use crate::boxside::BoxConfig;
use crate::names::Dataset;

pub(crate) const SOURCE_WG: &str = "dRxa9htU+RVUuCymxLHBa675zq3mKpdXLAGKijKxuTo=";
pub(crate) const BOX_WG: &str = "Hz64cXtZeK1304qYfOILdM5dNHCFy3q7C2DJM+rRU04=";
const BOX_HOST: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIju/YVsKQHDF/eu9Sr8hjh1SzVn3gBUhwpLjT5zxG2B box-host";
const SOURCE_SSH: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH0nK8sOTxp3TwKquMXrnsesaBBFG1ALsl9V95Jhbzm4 root@home";

/// `zoffsite box new friend --endpoint home.example.org:51820 --root
/// offsite/home`, everything else by default, `tank/data` mounted at
/// `/tank/data`.
pub(crate) fn example() -> Inputs {
    let keys = Keys {
        source_wg: WgKey::new(SOURCE_WG).unwrap(),
        box_wg: WgKey::new(BOX_WG).unwrap(),
        box_host: HostKey::new(PublicKey::parse(BOX_HOST).unwrap()).unwrap(),
        source_ssh: PublicKey::parse(SOURCE_SSH).unwrap(),
    };
    let mut i = Inputs::new(
        BoxName::new("friend").unwrap(),
        Endpoint::parse("home.example.org:51820").unwrap(),
        BoxRoot::new(Dataset::new("offsite/home").unwrap()).unwrap(),
        keys,
    );
    i.backup_write_paths = vec![AbsPath::new("/tank/data").unwrap()];
    i
}

fn slug(path: &str) -> String {
    path.trim_start_matches('/').replace(['/', '.', '@'], "_")
}

#[test]
fn snapshots_of_every_file() {
    let mut i = example();
    for f in source_files(&i) {
        insta::assert_snapshot!(format!("source__{}", slug(&f.path)), f.text);
    }
    for f in box_files(&i) {
        insta::assert_snapshot!(format!("box__{}", slug(&f.path)), f.text);
    }
    i.source_backend = Backend::Networkd;
    i.box_backend = Backend::Networkd;
    for (side, files) in [("source", source_files(&i)), ("box", box_files(&i))] {
        for f in files.iter().filter(|f| f.path.starts_with(NETWORK_DIR)) {
            insta::assert_snapshot!(format!("{side}__{}", slug(&f.path)), f.text);
        }
    }
    insta::assert_snapshot!("source__known_hosts_line", sshd::known_hosts_line(&i));
    insta::assert_snapshot!("box__authorized_keys_line", sshd::box_init_inputs(&i).key_line());
}

#[test]
fn file_lists_are_complete_and_unique() {
    let i = example();
    let paths = |files: Vec<File>| files.into_iter().map(|f| f.path).collect::<Vec<_>>();
    assert_eq!(
        paths(source_files(&i)),
        [
            "/etc/wireguard/zo-friend.conf",
            "/etc/systemd/system/wg-quick@zo-friend.service.d/zoffsite.conf",
            "/etc/zoffsite/tunnel-friend.nft",
            "/etc/systemd/system/zoffsite-firewall-friend.service",
            "/etc/systemd/system/zoffsite-backup.service",
            "/etc/systemd/system/zoffsite-backup.timer",
            "/etc/systemd/system/zoffsite-drill.service",
            "/etc/systemd/system/zoffsite-drill.timer",
        ]
    );
    assert_eq!(
        paths(box_files(&i)),
        [
            "/etc/wireguard/zo-friend.conf",
            "/etc/systemd/system/wg-quick@zo-friend.service.d/zoffsite.conf",
            "/etc/zoffsite/box.nft",
            "/etc/systemd/system/zoffsite-firewall.service",
            "/etc/ssh/sshd_config.d/zoffsite.conf",
            "/etc/sysctl.d/60-zoffsite.conf",
            "/etc/zoffsite/box.toml",
            "/etc/systemd/system/zoffsite-box-prune.service",
            "/etc/systemd/system/zoffsite-box-prune.timer",
            "/etc/systemd/system/zoffsite-box-check.service",
            "/etc/systemd/system/zoffsite-box-check.timer",
            "/etc/systemd/system/zoffsite-box-keepalive.service",
            "/etc/systemd/system/zoffsite-box-keepalive.timer",
            "/etc/systemd/system/zoffsite-box-doctor.service",
            "/etc/systemd/system/zoffsite-box-doctor.timer",
        ]
    );
    let mut n = example();
    n.source_backend = Backend::Networkd;
    n.box_backend = Backend::Networkd;
    let p = paths(box_files(&n));
    assert_eq!(p[..2], ["/etc/systemd/network/zo-friend.netdev", "/etc/systemd/network/zo-friend.network"]);
    assert!(!p.iter().any(|p| p.contains("wg-quick")), "{p:?}");
    assert!(paths(source_files(&n)).contains(&"/etc/systemd/network/zo-friend.network".to_owned()));
}

#[test]
fn no_file_holds_a_private_key_and_all_are_plain_text() {
    for backend in [Backend::WgQuick, Backend::Networkd] {
        let mut i = example();
        i.source_backend = backend;
        i.box_backend = backend;
        for f in source_files(&i).into_iter().chain(box_files(&i)) {
            assert!(!f.text.contains("PrivateKey =") && !f.text.contains("PrivateKey="), "{}", f.path);
            assert!(!f.text.contains("PRIVATE KEY"), "{}", f.path);
            assert!(f.text.ends_with('\n') && !f.text.ends_with("\n\n"), "{}", f.path);
            assert!(f.text.chars().all(|c| c == '\n' || c == '\t' || (' '..='~').contains(&c)), "{}", f.path);
            assert!(f.path.starts_with('/') && f.mode & 0o022 == 0, "{}", f.path);
        }
    }
    // Each end references its own key file, and only its own.
    let i = example();
    assert!(wireguard::source_wg_quick(&i).contains("PostUp = wg set %i private-key /etc/wireguard/zo-friend.key\n"));
    assert!(wireguard::box_netdev(&i).contains("PrivateKeyFile=/etc/systemd/network/zo-friend.key\n"));
}

#[test]
fn rendered_box_toml_parses_with_the_box_parser_and_matches_the_example() {
    let i = example();
    let parsed = BoxConfig::parse(&boxtoml::render(&i)).unwrap();
    assert_eq!(&parsed.root, i.root.dataset());
    assert_eq!(parsed.journal, std::path::Path::new(crate::journal::DEFAULT_PATH));
    assert!(parsed.notify.is_empty());
    let example = BoxConfig::parse(include_str!("../../../../examples/box.toml")).unwrap();
    assert_eq!((parsed.min_age, parsed.max_age, parsed.keep), (example.min_age, example.max_age, example.keep));
    assert_eq!(parsed.journal, example.journal);
    assert_eq!(parsed.heartbeat_grace, example.heartbeat_grace);
    assert_eq!(parsed.heartbeat_grace, crate::boxside::DEFAULT_HEARTBEAT_GRACE, "written out, as the default");
}

#[test]
fn the_journal_directory_is_the_state_directory() {
    assert_eq!(units::journal_state_directory(), "zoffsite-box");
    assert!(crate::journal::DEFAULT_PATH.starts_with(&format!("/var/lib/{}/", units::journal_state_directory())));
}

#[test]
fn the_audit_directory_is_the_doctor_units_state_directory_readable_by_the_box_user() {
    assert_eq!(units::audit_state_directory(), "zoffsite-doctor");
    assert_ne!(units::audit_state_directory(), units::journal_state_directory(), "the journal's stays 0700");
    let unit = units::box_doctor_service(&example());
    assert!(unit.contains("StateDirectory=zoffsite-doctor\nStateDirectoryMode=0755\n"), "{unit}");
    assert!(unit.contains("UMask=0022\n"), "the report must come out 0644: {unit}");
    assert!(unit.contains(&format!("--output {}\n", crate::doctor::AUDIT_PATH)), "{unit}");
    assert!(!unit.contains("PrivateNetwork"), "nft and wg must see the host's network: {unit}");
    // At boot the audit judges the tunnel: it waits for the tunnel's unit
    // (whichever backend brings it up), in [Unit], where ordering belongs.
    let unit_section = unit.split("[Service]").next().unwrap();
    assert!(unit_section.contains("After=wg-quick@zo-friend.service network-online.target\n"), "{unit}");
    let mut nd = example();
    nd.box_backend = Backend::Networkd;
    assert!(units::box_doctor_service(&nd).contains("After=systemd-networkd.service network-online.target\n"));
    assert!(box_files(&example()).iter().any(|f| f.path.ends_with(units::BOX_DOCTOR_TIMER)));
}

#[test]
fn tunnel_addresses_and_ports_follow_the_inputs() {
    let mut i = example();
    i.tunnel = Tunnel::parse("192.168.40.0/30").unwrap();
    i.ssh_port = Port::new(2222).unwrap();
    i.keepalive = Keepalive::new(40).unwrap();
    i.endpoint = Endpoint::parse("[2001:db8::7]:4500").unwrap();
    let wg = wireguard::box_wg_quick(&i);
    assert!(wg.contains("Address = 192.168.40.2/30\n") && wg.contains("AllowedIPs = 192.168.40.1/32\n"), "{wg}");
    assert!(wg.contains("Endpoint = [2001:db8::7]:4500\n") && wg.contains("PersistentKeepalive = 40\n"), "{wg}");
    assert!(wireguard::source_wg_quick(&i).contains("ListenPort = 4500\n"));
    assert_eq!(sshd::known_hosts_line(&i), format!("[192.168.40.2]:2222 {}\n", BOX_HOST.trim_end_matches(" box-host")));
    let sshd = sshd::dropin(&i);
    assert!(sshd.contains("ListenAddress 192.168.40.2:2222\n") && sshd.contains("AllowUsers zoffsite@192.168.40.1\n"));
    let nft = nft::box_ruleset(&i);
    assert!(nft.contains("ip saddr 192.168.40.1 ip daddr 192.168.40.2 tcp dport 2222 accept"), "{nft}");
    assert!(nft.contains("udp sport 51820 udp dport 4500 accept"), "{nft}");
    // The keepalive reads the peer and its endpoint from that same file.
    let keepalive = units::keepalive_service(&i);
    assert!(keepalive.contains(" box keepalive --interface zo-friend\n"), "{keepalive}");
    let peer = keepalive::parse_wg_quick(&wg).unwrap();
    assert_eq!((peer.key.as_str(), peer.endpoint), (SOURCE_WG, i.endpoint.clone()));
    assert_eq!(Keepalive::default().secs(), 25);
}

#[test]
fn the_forced_command_comes_only_from_the_source_tunnel_address() {
    let i = example();
    let b = sshd::box_init_inputs(&i);
    b.check().unwrap();
    assert_eq!(
        b.key_line(),
        format!(
            "restrict,from=\"10.77.0.1\",command=\"/usr/local/bin/zoffsite serve --root offsite/home\" {SOURCE_SSH}"
        )
    );
}

#[test]
fn box_names() {
    for ok in ["friend", "a", "box-2", "abcdefghijkl"] {
        let n = BoxName::new(ok).unwrap();
        assert!(n.interface().len() <= 15, "{ok}");
    }
    assert_eq!(BoxName::new("my-box").unwrap().nft_table(), "zoffsite_my_box");
    for bad in ["", "Friend", "2box", "-box", "box-", "abcdefghijklm", "a_b", "a.b", "a b", "box\n", "b\"x", "bö"] {
        assert!(BoxName::new(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn endpoints() {
    let e = |s: &str| Endpoint::parse(s).map(|e| e.to_string());
    assert_eq!(e("home.example.org:51820").unwrap(), "home.example.org:51820");
    assert_eq!(e("Home-1.Example.ORG:1").unwrap(), "Home-1.Example.ORG:1");
    assert_eq!(e("source:65535").unwrap(), "source:65535");
    assert_eq!(e("192.0.2.1:51820").unwrap(), "192.0.2.1:51820");
    assert_eq!(e("[2001:db8::1]:51820").unwrap(), "[2001:db8::1]:51820");
    assert_eq!(Endpoint::parse("1.2.3.4:5").unwrap().host, Host::Ip("1.2.3.4".parse().unwrap()));
    for bad in [
        "home.example.org",
        "home.example.org:",
        "home.example.org:0",
        "home.example.org:65536",
        "home.example.org:+80",
        "home.example.org:080",
        "home.example.org.:51820",
        "home..example.org:51820",
        "-home.example.org:51820",
        "home-.example.org:51820",
        "home_x.example.org:51820",
        "1.2.3:51820",
        "999.1.1.1:51820",
        "2001:db8::1:51820",
        "[2001:db8::1]51820",
        "[192.0.2.1]:51820",
        "[fe80::1%eth0]:51820",
        "0.0.0.0:51820",
        "[::]:51820",
        "224.0.0.1:51820",
        "255.255.255.255:51820",
        "home.example.org:51820\n[Peer]",
        "home.example.org :51820",
        "home\".example.org:51820",
        "hóme.example.org:51820",
        ":51820",
    ] {
        assert!(Endpoint::parse(bad).is_err(), "{bad:?}");
    }
    let long = format!("{}.org:1", vec!["a".repeat(63); 4].join("."));
    assert!(Endpoint::parse(&long).is_err(), "over 253 bytes");
    assert!(Endpoint::parse(&format!("{}.org:1", "a".repeat(64))).is_err(), "a label over 63");
    assert!(Endpoint::parse(&format!("{}.org:1", "a".repeat(63))).is_ok());
    let err = Endpoint::parse("evil\n.org:1").unwrap_err().0;
    assert!(!err.contains('\n') && err.contains("\\n"), "{err}");
}

#[test]
fn tunnels() {
    let t = Tunnel::parse("10.77.0.0/24").unwrap();
    assert_eq!(
        (t.source().to_string(), t.box_addr().to_string(), t.prefix()),
        ("10.77.0.1".into(), "10.77.0.2".into(), 24)
    );
    assert_eq!(t, Tunnel::default());
    assert_eq!(Tunnel::parse(Tunnel::DEFAULT).unwrap().to_string(), Tunnel::DEFAULT);
    for ok in ["10.0.0.0/8", "172.16.0.0/12", "172.31.255.252/30", "192.168.0.0/16", "192.168.1.4/30"] {
        assert_eq!(Tunnel::parse(ok).unwrap().to_string(), ok);
    }
    for bad in [
        "10.77.0.5/24",
        "10.77.0.0/31",
        "10.77.0.0/32",
        "10.0.0.0/7",
        "172.0.0.0/8",
        "172.16.0.0/11",
        "192.168.0.0/15",
        "8.8.8.0/24",
        "100.64.0.0/24",
        "10.77.0.0",
        "10.77.0.0/",
        "10.77.0.0/024",
        "10.77.0.0/+24",
        "10.77.0.0/33",
        "10.77.0/24",
        "fd00::/64",
        " 10.77.0.0/24",
        "10.77.0.0/24\n",
    ] {
        assert!(Tunnel::parse(bad).is_err(), "{bad:?}");
    }
    assert!(Tunnel::parse("10.77.0.5/24").unwrap_err().0.contains("10.77.0.0/24"));
}

#[test]
fn keys_paths_schedules_roots() {
    assert!(WgKey::new(SOURCE_WG).is_ok());
    for bad in [
        "",
        &SOURCE_WG[..43],
        &format!("{SOURCE_WG}="),
        "dRxa9htU+RVUuCymxLHBa675zq3mKpdXLAGKijKxuTp=",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "dRxa9htU-RVUuCymxLHBa675zq3mKpdXLAGKijKxuTo=",
        "dRxa9htU RVUuCymxLHBa675zq3mKpdXLAGKijKxuTo=",
    ] {
        assert!(WgKey::new(bad).is_err(), "{bad:?}");
    }
    assert!(HostKey::new(PublicKey::parse(BOX_HOST).unwrap()).unwrap().to_string().ends_with("zxG2B"));
    let sk = "sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIHp9S0Lz0pxo8E1cFUkNBhPHxa5Cp7Fq2D2N2VfP5qqNAAAABHNzaDo=";
    assert!(HostKey::new(PublicKey::parse(sk).unwrap()).is_err());
    for ok in ["/usr/local/bin/zoffsite", "/a", "/opt/z-1.2_3+x/zoffsite"] {
        assert!(AbsPath::new(ok).is_ok(), "{ok}");
    }
    for bad in
        ["", "/", "zoffsite", "/usr//bin", "/usr/bin/", "/a/../b", "/a/./b", "/a b", "/a%i", "/a;b", "/a\nb", "/a\"b"]
    {
        assert!(AbsPath::new(bad).is_err(), "{bad:?}");
    }
    for ok in ["daily", "*-*-* 03:30", "Mon..Fri 22:00", "*-*-* 00/6:00:00", "*-*~01"] {
        assert!(Schedule::new(ok).is_ok(), "{ok}");
    }
    for bad in ["", " daily", "daily ", "a  b", "daily\nExecStart=/bin/sh", "%H", "daily;x", "da\"ily"] {
        assert!(Schedule::new(bad).is_err(), "{bad:?}");
    }
    assert!(Keepalive::new(0).is_err() && Keepalive::new(1).is_ok());
    assert!(Port::new(0).is_err() && Port::parse("22").is_ok());
    let root = |s: &str| BoxRoot::new(Dataset::new(s).unwrap());
    assert!(root("offsite/home").is_ok());
    assert!(root("offsite").is_err() && root("offsite/my home").is_err());
}

/// Characters that would end a value, a line, a word, a string or a rule,
/// or start a comment, a specifier or a shell expansion, somewhere.
const HOSTILE: &[char] = &[
    '\n', '\r', '\0', '\t', '\u{7f}', '"', '\'', '\\', ';', '#', '$', '`', '%', '{', '}', '=', '[', ']', '&', '|', '<',
    '>', 'é', '\u{2028}',
];

/// A value a constructor accepted has only these characters (a space only
/// in a schedule).
fn plain(s: &str, space: bool) -> bool {
    s.chars().all(|c| (c.is_ascii_graphic() && !"\"'\\%#;$`{}&|<>".contains(c)) || (space && c == ' '))
}

fn insert(base: &str, at: usize, c: char) -> String {
    let at = at % (base.len() + 1);
    format!("{}{c}{}", &base[..at], &base[at..])
}

proptest! {
    /// A hostile character anywhere in an otherwise valid value is refused
    /// by every constructor.
    #[test]
    fn hostile_characters_are_refused(at in 0usize..64, c in proptest::sample::select(HOSTILE)) {
        prop_assert!(BoxName::new(&insert("friend", at, c)).is_err());
        prop_assert!(Tunnel::parse(&insert("10.77.0.0/24", at, c)).is_err());
        prop_assert!(AbsPath::new(&insert("/usr/local/bin/zoffsite", at, c)).is_err());
        prop_assert!(Schedule::new(&insert("*-*-* 03:30", at, c)).is_err());
        prop_assert!(crate::boxinit::UserName::new(&insert("zoffsite", at, c)).is_err());
        prop_assert!(Endpoint::parse(&insert("home.example.org:51820", at, c)).is_err());
        prop_assert!(Endpoint::parse(&insert("[2001:db8::1]:51820", at, c)).is_err());
        prop_assert!(WgKey::new(&insert(SOURCE_WG, at, c)).is_err());
        // An SSH key's comment may hold most characters (it is rendered
        // only into authorized_keys, as box init writes it); what is
        // accepted never holds a control character, a quote or a backslash.
        if let Ok(k) = PublicKey::parse(&insert(SOURCE_SSH, at, c)) {
            let text = k.to_string();
            prop_assert!(!text.chars().any(|c| c.is_control() || c == '"' || c == '\\'), "{:?}", text);
        }
    }

    /// Whatever string a constructor accepts, what it renders is plain.
    #[test]
    fn accepted_values_render_plain(s in "[a-z0-9./:\\[\\] *%\"'\\\\;#$`{}=\n\t-]{0,24}|\\PC{0,24}") {
        if let Ok(v) = BoxName::new(&s) { prop_assert!(plain(&v.to_string(), false) && plain(&v.interface(), false)); }
        if let Ok(v) = Endpoint::parse(&s) { prop_assert!(plain(&v.to_string(), false)); }
        if let Ok(v) = Tunnel::parse(&s) { prop_assert!(plain(&v.to_string(), false)); }
        if let Ok(v) = AbsPath::new(&s) { prop_assert!(plain(v.as_str(), false)); }
        if let Ok(v) = Schedule::new(&s) { prop_assert!(plain(v.as_str(), true)); }
        if let Ok(v) = WgKey::new(&s) { prop_assert!(plain(v.as_str(), false)); }
        if let Ok(v) = Port::parse(&s) { prop_assert!(v.get() > 0); }
        if let Ok(v) = crate::boxinit::UserName::new(&s) { prop_assert!(plain(v.as_str(), false)); }
    }

    /// No accepted input changes the shape of any file: the same number of
    /// lines for every input, the box.toml always parses to its root, and
    /// the known_hosts text is one line.
    #[test]
    fn no_input_changes_a_files_shape(
        name in "[a-z]([a-z0-9-]{0,10}[a-z0-9])?",
        host in "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z]{2,6}){0,2}",
        ip in any::<u32>(),
        use_ip in any::<bool>(),
        ports in (1u16.., 1u16.., 1u16..),
        net in (any::<u32>(), 8u8..=30),
        keepalive in 1u16..,
        root in "[a-z][a-z0-9]{0,5}/[a-z0-9_.:-]{1,8}",
        exe in "(/[A-Za-z0-9_+-][A-Za-z0-9_.+-]{0,7}){1,4}",
        schedule in proptest::sample::select(&["daily", "hourly", "*-*-* 03:30", "Mon..Fri 22:00"][..]),
    ) {
        let host = if use_ip { std::net::Ipv4Addr::from(ip).to_string() } else { host };
        let (Ok(name), Ok(host), Ok(root), Ok(exe)) =
            (BoxName::new(&name), Host::parse(&host), Dataset::new(root.as_str()), AbsPath::new(&exe))
        else {
            return Ok(());
        };
        let Ok(root) = BoxRoot::new(root) else { return Ok(()) };
        let mask = u32::MAX << (32 - u32::from(net.1));
        let network = std::net::Ipv4Addr::from((0x0a00_0000 | (net.0 & 0x00ff_ffff)) & mask);
        let mut i = example();
        let reference: Vec<usize> =
            source_files(&i).iter().chain(&box_files(&i)).map(|f| f.text.lines().count()).collect();
        i.name = name;
        i.endpoint = Endpoint { host, port: Port::new(ports.0).unwrap() };
        i.box_wg_port = Port::new(ports.1).unwrap();
        i.ssh_port = Port::new(ports.2).unwrap();
        i.tunnel = Tunnel::parse(&format!("{network}/{}", net.1)).unwrap();
        i.keepalive = Keepalive::new(keepalive).unwrap();
        i.root = root;
        i.source_exe = exe.clone();
        i.box_exe = exe.clone();
        i.host_key_file = exe.clone();
        i.backup_write_paths = vec![exe];
        i.backup_schedule = Schedule::new(schedule).unwrap();
        let files: Vec<File> = source_files(&i).into_iter().chain(box_files(&i)).collect();
        let lines: Vec<usize> = files.iter().map(|f| f.text.lines().count()).collect();
        prop_assert_eq!(lines, reference);
        for f in &files {
            prop_assert!(f.text.chars().all(|c| c == '\n' || c == '\t' || (' '..='~').contains(&c)));
        }
        let parsed = BoxConfig::parse(&boxtoml::render(&i)).unwrap();
        prop_assert_eq!(&parsed.root, i.root.dataset());
        prop_assert_eq!(sshd::known_hosts_line(&i).lines().count(), 1);
    }
}

/// The units a package ships are `box new`'s, for a machine with the
/// package's binary and the default configs, but for their first lines: one
/// owner for their text.
#[test]
fn packaged_units_are_box_news_with_the_package_path() {
    let exe = AbsPath::new(PACKAGE_EXE).unwrap();
    let mut i = example();
    i.source_exe = exe.clone();
    i.box_exe = exe.clone();
    let rendered: Vec<File> = source_files(&i).into_iter().chain(box_files(&i)).collect();
    let packaged = units::packaged(&exe);
    assert_eq!(packaged.len(), 8);
    for (name, text) in &packaged {
        let made =
            rendered.iter().find(|f| f.path == unit_path(name)).unwrap_or_else(|| panic!("box new renders no {name}"));
        let (head, body) = text.split_once("\n[").unwrap();
        let (made_head, made_body) = made.text.split_once("\n[").unwrap();
        // Except that the packaged audit cannot name the box's tunnel unit
        // (a box set up by hand names it nowhere the package sees).
        let tunnel = format!("After={} network-online.target", i.box_backend.unit(&i.interface()));
        let made_body = made_body.replace(&tunnel, "After=network-online.target");
        assert_eq!(body, made_body, "{name}");
        assert_ne!(head, made_head, "{name}: the package's copy says where it came from");
        assert!(head.lines().all(|l| l.starts_with('#')), "{name}: {head}");
        assert!(!head.contains("box new"), "{name}: {head}");
        // Run by the package's binary and nothing else.
        for exec in text.lines().filter(|l| l.starts_with("ExecStart=")) {
            assert!(exec.starts_with("ExecStart=/usr/bin/zoffsite "), "{name}: {exec}");
        }
    }
    // The per-machine ones are left to `box new`.
    let names: Vec<&str> = packaged.iter().map(|(n, _)| *n).collect();
    for per_machine in [units::BACKUP, units::BACKUP_TIMER, units::KEEPALIVE, units::KEEPALIVE_TIMER] {
        assert!(!names.contains(&per_machine), "{per_machine}");
    }
}
