//! `zoffsite box new`, the whole command, against a fake source: the fake
//! zfs (first in PATH) and the real `wg` and `ssh-keygen`. Without those
//! tools the tests skip with a message, unless `ZOFFSITE_REQUIRE_TOOLS=1`,
//! which makes that a failure (as `zoffsite-core/tests/provision_tools.rs`).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use zoffsite_core::config::Config;
use zoffsite_core::provision::bundle::{self, Bundle, Side};
use zoffsite_testkit::FakeZfs;

const CONFIG: &str = "# My backups. Comments and layout stay as they are.\n\
[source]\n\
datasets = [\"tank/data\", \"tank/home\"]   # two roots\n\
\n\
[source.keep]\n\
last = 24\n";

fn tools() -> bool {
    let missing: Vec<_> = ["wg", "ssh-keygen"]
        .into_iter()
        .filter(|t| !Command::new("which").arg(t).output().is_ok_and(|o| o.status.success()))
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!("{missing:?} not installed");
    assert!(std::env::var_os("ZOFFSITE_REQUIRE_TOOLS").is_none_or(|v| v != "1"), "{why}, and ZOFFSITE_REQUIRE_TOOLS=1");
    eprintln!("SKIPPED: {why} (ZOFFSITE_REQUIRE_TOOLS=1 makes this a failure)");
    false
}

/// A source: the fake zfs with two encrypted datasets (one mounted
/// elsewhere), a config, and where box new is to write.
struct Source {
    fake: FakeZfs,
    tmp: tempfile::TempDir,
}

impl Source {
    fn new() -> Source {
        let fake = FakeZfs::new();
        fake.create("tank/data", true).create("tank/home", true).set("tank/home", "mountpoint", "/home");
        let tmp = tempfile::tempdir().unwrap();
        let s = Source { fake, tmp };
        std::fs::write(s.config(), CONFIG).unwrap();
        std::fs::set_permissions(s.config(), std::fs::Permissions::from_mode(0o640)).unwrap();
        s
    }

    fn config(&self) -> PathBuf {
        self.tmp.path().join("zoffsite.toml")
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.tmp.path().join("boxes").join(name)
    }

    /// `zoffsite box new NAME --endpoint ... -c CONFIG --dir DIR EXTRA...`.
    fn box_new(&self, name: &str, extra: &[&str]) -> Output {
        let path = format!("{}:{}", self.fake.dir().display(), std::env::var("PATH").unwrap_or_default());
        Command::new(env!("CARGO_BIN_EXE_zoffsite"))
            .args([
                "box",
                "new",
                name,
                "--endpoint",
                "home.example.org:51820",
                "--source-exe",
                "/usr/local/bin/zoffsite",
            ])
            .arg("-c")
            .arg(self.config())
            .arg("--dir")
            .arg(self.dir(name))
            .args(extra)
            .env("PATH", path)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    })
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Every file under `dir` (and `extra`) with its bytes and mode.
fn snapshot(dir: &Path, extra: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
    let mut all = BTreeMap::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd {
            let p = e.unwrap().path();
            all.insert(p.clone(), (std::fs::read(&p).unwrap(), mode(&p)));
        }
    }
    all.insert(extra.to_owned(), (std::fs::read(extra).unwrap(), mode(extra)));
    all
}

fn run_with_stdin(cmd: &mut Command, input: &str) -> String {
    use std::io::Write as _;
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{cmd:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn wg_pubkey(private: &str) -> String {
    run_with_stdin(Command::new("wg").arg("pubkey"), private).trim().to_owned()
}

fn secret<'a>(b: &'a Bundle, path: &str) -> &'a str {
    b.secrets.iter().find(|s| s.path.as_str() == path).unwrap_or_else(|| panic!("no secret {path}")).text.expose()
}

fn file<'a>(b: &'a Bundle, path: &str) -> &'a str {
    &b.files.iter().find(|f| f.path == path).unwrap_or_else(|| panic!("no file {path}")).text
}

/// The value of `key = VALUE` in an INI-style WireGuard file.
fn ini(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.trim_start().strip_prefix('=')).map(|v| v.trim().to_owned()))
        .unwrap_or_else(|| panic!("no {key} in {text}"))
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let s = s.trim_end_matches('=');
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        acc = (acc << 6) | u32::from(val(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).unwrap());
        }
    }
    Some(out)
}

/// Reads an SSH wire string (a big-endian u32 length, then the bytes) at
/// `*at`, moving past it.
fn wire_string(blob: &[u8], at: &mut usize) -> Vec<u8> {
    let n = u32::from_be_bytes(blob[*at..*at + 4].try_into().unwrap()) as usize;
    let v = blob[*at + 4..*at + 4 + n].to_vec();
    *at += 4 + n;
    v
}

/// The 32-byte seed of an unencrypted OpenSSH ed25519 private key (its
/// secret half; the rest of its 64 private bytes is the public key).
fn ed25519_seed(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let blob = base64_decode(&body).unwrap();
    let magic = b"openssh-key-v1\0";
    assert_eq!(&blob[..magic.len()], magic);
    let mut at = magic.len();
    assert_eq!(wire_string(&blob, &mut at), b"none", "cipher");
    assert_eq!(wire_string(&blob, &mut at), b"none", "kdf");
    wire_string(&blob, &mut at); // kdf options
    at += 4; // the number of keys: 1
    wire_string(&blob, &mut at); // the public key
    let private = wire_string(&blob, &mut at);
    // Two check integers, the type, the public key, then seed and public key.
    let mut p = 8;
    assert_eq!(wire_string(&private, &mut p), b"ssh-ed25519");
    wire_string(&private, &mut p);
    let sk = wire_string(&private, &mut p);
    assert_eq!(sk.len(), 64);
    sk[..32].to_vec()
}

/// Every byte string base64 in `text` could decode to: each run of base64
/// characters, and each PEM block's body joined across its lines.
fn decoded_forms(text: &str) -> Vec<Vec<u8>> {
    let is_b64 = |c: char| c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '=';
    let mut forms: Vec<Vec<u8>> =
        text.split(|c: char| !is_b64(c)).filter(|t| t.len() >= 8).filter_map(base64_decode).collect();
    let mut body = None::<String>;
    for line in text.lines() {
        if line.starts_with("-----BEGIN") {
            body = Some(String::new());
        } else if line.starts_with("-----END") {
            forms.extend(body.take().and_then(|b| base64_decode(&b)));
        } else if let Some(b) = body.as_mut() {
            b.push_str(line.trim());
        }
    }
    forms
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn box_new_makes_both_machines_keys_and_the_box_never_gets_a_source_secret() {
    if !tools() {
        return;
    }
    let s = Source::new();
    let out = s.box_new("friend", &["--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}\n{}", String::from_utf8_lossy(&out.stdout));
    let doc = json(&out);
    assert_eq!(
        (doc["made"].as_bool(), doc["dry_run"].as_bool(), doc["exit_code"].as_i64()),
        (Some(true), Some(false), Some(0))
    );
    assert_eq!(doc["root"], "offsite/".to_owned() + doc["root"].as_str().unwrap().trim_start_matches("offsite/"));

    // The directory and its files, with their modes.
    let dir = s.dir("friend");
    assert_eq!(mode(&dir), 0o700);
    for (f, m) in [("box.bundle", 0o600), ("source.bundle", 0o600), ("id_ed25519", 0o600)] {
        assert_eq!(mode(&dir.join(f)), m, "{f}");
    }
    let mut names: Vec<_> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(
        names,
        ["box.bundle", "id_ed25519", "id_ed25519.pub", "known_hosts", "source.bundle"],
        "no host key file left"
    );
    let written: Vec<_> =
        doc["writes"].as_array().unwrap().iter().map(|v| PathBuf::from(v.as_str().unwrap())).collect();
    assert!(written.iter().all(|p| p.exists()) && written.len() == 5, "{written:?}");

    // Both bundles parse, each for its side.
    let box_text = std::fs::read_to_string(dir.join(bundle::BOX_FILE)).unwrap();
    let source_text = std::fs::read_to_string(dir.join(bundle::SOURCE_FILE)).unwrap();
    let boxb = bundle::parse(&box_text).unwrap();
    let source = bundle::parse(&source_text).unwrap();
    // Each bundle's SHA-256, to compare with what `box apply` prints.
    assert_eq!(doc["bundles"]["box"]["sha256"], bundle::sha256(box_text.as_bytes()).as_str(), "{doc}");
    assert_eq!(doc["bundles"]["source"]["sha256"], bundle::sha256(source_text.as_bytes()).as_str(), "{doc}");
    assert_eq!((boxb.side, source.side), (Side::Box, Side::Source));
    assert_eq!((boxb.name.as_str(), source.name.as_str()), ("friend", "friend"));

    // The pinned host key is the public half of the box's host key.
    let known_hosts = std::fs::read_to_string(dir.join("known_hosts")).unwrap();
    let host_key = secret(&boxb, "/etc/ssh/ssh_host_zoffsite_ed25519_key");
    let key_file = s.tmp.path().join("host_key");
    std::fs::write(&key_file, host_key).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let derived = Command::new("ssh-keygen").arg("-y").arg("-f").arg(&key_file).output().unwrap();
    assert!(derived.status.success(), "{}", String::from_utf8_lossy(&derived.stderr));
    let derived = String::from_utf8(derived.stdout).unwrap();
    let derived: Vec<_> = derived.split_whitespace().take(2).collect();
    assert_eq!(known_hosts.trim(), format!("10.77.0.2 {} {}", derived[0], derived[1]));

    // Each end's WireGuard peer key is the other end's private key's public half.
    let box_wg = secret(&boxb, "/etc/wireguard/zo-friend.key");
    let source_wg = secret(&source, "/etc/wireguard/zo-friend.key");
    assert_eq!(ini(file(&source, "/etc/wireguard/zo-friend.conf"), "PublicKey"), wg_pubkey(box_wg));
    assert_eq!(ini(file(&boxb, "/etc/wireguard/zo-friend.conf"), "PublicKey"), wg_pubkey(source_wg));
    assert_eq!(doc["keys"]["box_wg"], wg_pubkey(box_wg));

    // The box lets in this source's new key, from the tunnel only.
    let init = boxb.init.as_ref().unwrap();
    let source_pub = std::fs::read_to_string(dir.join("id_ed25519.pub")).unwrap();
    assert_eq!(init.key.body, source_pub.split_whitespace().nth(1).unwrap());
    assert_eq!(init.from.as_str(), "10.77.0.1");

    // No source secret, raw or base64-decoded, anywhere in the box's bundle
    // (which holds every file meant for the box).
    let source_ssh = std::fs::read_to_string(dir.join("id_ed25519")).unwrap();
    let ssh_seed = ed25519_seed(&source_ssh);
    let wg_raw = base64_decode(source_wg.trim()).unwrap();
    assert_eq!((ssh_seed.len(), wg_raw.len()), (32, 32));
    assert!(!box_text.contains(source_wg.trim()), "the source's WireGuard key is in the box bundle");
    assert!(!box_text.contains(source_ssh.trim()), "the source's SSH key is in the box bundle");
    for line in source_ssh.lines().filter(|l| !l.starts_with("-----")).skip(1) {
        assert!(!box_text.contains(line), "a line of the source's SSH key is in the box bundle: {line}");
    }
    for secret in [&ssh_seed, &wg_raw] {
        assert!(!contains(box_text.as_bytes(), secret));
        for form in decoded_forms(&box_text) {
            assert!(!contains(&form, secret), "a source secret decodes out of the box bundle");
        }
    }
    // ...while the checks find the box's own secrets there (so they would see one).
    let box_seed = ed25519_seed(host_key);
    assert!(decoded_forms(&box_text).iter().any(|f| contains(f, &box_seed)));
    assert!(decoded_forms(&box_text).iter().any(|f| contains(f, &base64_decode(box_wg.trim()).unwrap())));
    // And the source's bundle holds no secret of the box.
    assert!(!source_text.contains(box_wg.trim()) && !source_text.contains(host_key.trim()));

    // The config: every old byte, then the target, valid; mode kept.
    let config = std::fs::read_to_string(s.config()).unwrap();
    assert!(config.starts_with(CONFIG), "{config}");
    assert_eq!(mode(&s.config()), 0o640);
    let parsed = Config::parse(&config).unwrap();
    let t = &parsed.targets[0];
    assert_eq!((t.name.as_str(), t.host.as_str(), t.user.as_str()), ("friend", "10.77.0.2", "zoffsite"));
    assert_eq!(
        (t.identity_file.as_path(), t.known_hosts.as_path()),
        (dir.join("id_ed25519").as_path(), dir.join("known_hosts").as_path())
    );
    assert_eq!(parsed.source.keep.map(|k| k.last), Some(24));

    // Both datasets' mountpoints are writable by the backup unit.
    let unit = file(&source, "/etc/systemd/system/zoffsite-backup.service");
    assert!(unit.contains("ReadWritePaths=-/tank/data\n") && unit.contains("ReadWritePaths=-/home\n"), "{unit}");
    assert!(unit.contains(&format!("--config {}", s.config().display())), "{unit}");

    // A second run refuses, and changes nothing: the same name (the config
    // has it), or another name into the same directory (its keys).
    let before = snapshot(&dir, &s.config());
    let again = s.box_new("friend", &[]);
    assert_eq!(again.status.code(), Some(2), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already has a target named \"friend\""));
    let path = format!("{}:{}", s.fake.dir().display(), std::env::var("PATH").unwrap_or_default());
    let other = Command::new(env!("CARGO_BIN_EXE_zoffsite"))
        .args(["box", "new", "other", "--endpoint", "home.example.org:51821", "--tunnel", "10.77.1.0/24"])
        .arg("-c")
        .arg(s.config())
        .arg("--dir")
        .arg(&dir)
        .env("PATH", path)
        .output()
        .unwrap();
    assert_eq!(other.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&other.stderr).contains("refuses to overwrite an existing box's keys"));
    assert_eq!(snapshot(&dir, &s.config()), before, "a refused run changed something");
}

#[test]
fn box_new_dry_run_shows_everything_and_leaves_no_file() {
    let s = Source::new();
    // The real tools are not run by -n: no key is made.
    let out = s.box_new("friend", &["-n"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    for want in [
        "/etc/wireguard/zo-friend.key",
        "/etc/ssh/ssh_host_zoffsite_ed25519_key",
        "/etc/systemd/system/zoffsite-backup.timer",
        "+[[target]]",
        "+host = \"10.77.0.2\"",
        "zoffsite box apply",
        "dry run",
    ] {
        assert!(text.contains(want), "{want:?} not in\n{text}");
    }
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    assert!(!s.tmp.path().join("boxes").exists(), "-n made the directory");
    assert_eq!(std::fs::read_to_string(s.config()).unwrap(), CONFIG);

    let doc = json(&s.box_new("friend", &["-n", "--json"]));
    assert_eq!(
        (doc["dry_run"].as_bool(), doc["made"].as_bool(), doc["exit_code"].as_i64()),
        (Some(true), Some(false), Some(0))
    );
    assert!(doc["keys"].is_null());
    assert!(doc["bundles"]["box"]["sha256"].is_null(), "-n makes no key, so no bundle");
    let secrets = doc["bundles"]["box"]["secrets"].as_array().unwrap();
    assert!(secrets.iter().any(|s| s["path"] == "/etc/ssh/ssh_host_zoffsite_ed25519_key" && s["mode"] == "0600"));
    assert!(doc["config_added"].as_str().unwrap().contains("[[target]]"));
    assert!(!s.tmp.path().join("boxes").exists());
}

#[test]
fn box_new_without_a_config_says_how_to_write_one_and_makes_nothing() {
    let s = Source::new();
    std::fs::remove_file(s.config()).unwrap();
    let out = s.box_new("friend", &["--json"]);
    assert_eq!(out.status.code(), Some(2));
    let doc = json(&out);
    let e = doc["errors"][0].as_str().unwrap();
    assert!(e.contains("does not exist") && e.contains("examples/zoffsite.toml"), "{e}");
    assert!(!s.tmp.path().join("boxes").exists());
    // A bad name is a usage error too.
    let out = s.box_new("Bad_Name", &[]);
    assert_eq!(out.status.code(), Some(2));
}
