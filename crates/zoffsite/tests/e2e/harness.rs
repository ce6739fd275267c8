//! The harness the end-to-end tests share (every area's module uses it).
//!
//! Each test builds its own world: two pools on sparse files with unique
//! names, and the `e2e/topology.sh` network (a "home" namespace for the
//! source and a "friend" namespace for the box, joined by a veth "internet",
//! a WireGuard tunnel dialled by the box, sshd on the tunnel address only,
//! nftables, and the source's key forced to `zoffsite serve`). Everything is
//! torn down on drop, also when a test fails. Here too: the box user
//! `box init` makes, box configs, and the helpers that run commands and read
//! ZFS back.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_zoffsite");

pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

pub(crate) fn run(argv: &[&str]) -> Output {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"));
    out
}

/// Runs a command that must succeed; returns its stdout.
pub(crate) fn ok(argv: &[&str]) -> String {
    let out = run(argv);
    assert!(
        out.status.success(),
        "{argv:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub(crate) fn zfs(args: &[&str]) -> String {
    let mut argv = vec!["zfs"];
    argv.extend_from_slice(args);
    ok(&argv)
}

/// Random bytes as hex, from the kernel.
pub(crate) fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut buf).unwrap();
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// One isolated source + box + network.
pub(crate) struct World {
    pub(crate) dir: PathBuf,
    /// Source pool (plays `tank`).
    pub(crate) tank: String,
    /// Box pool (plays `offsite`).
    pub(crate) offsite: String,
    /// The box root `serve` is forced to.
    pub(crate) root: String,
    net: BTreeMap<String, String>,
    net_up: bool,
    /// A provisioned world's box user (`box apply` made it; `down` removes it).
    pub(crate) box_user: Option<String>,
}

impl World {
    pub(crate) fn new() -> World {
        let mut w = World::pools();
        let state = w.dir.join("net");
        w.topology("up", &state, &[]);
        w
    }

    /// A world whose network zoffsite made itself: `zoffsite box new` on the
    /// source (its config selects `datasets`, each made encrypted under the
    /// source pool first: `box new` reads their mountpoints), then `box apply`
    /// of each bundle in its machine's namespace, and the units' commands
    /// started as systemd would (`e2e/topology.sh up-provisioned`). The box
    /// user is unprivileged, as on a real box, and the world's own
    /// ([`World::box_user`]). The source's config is [`World::source_config`].
    pub(crate) fn provisioned(datasets: &[&str]) -> World {
        let mut w = World::pools();
        let user = format!("zp{}", w.tank.trim_start_matches("tank"));
        w.box_user = Some(user.clone());
        let full: Vec<String> = datasets.iter().map(|d| format!("{}/{d}", w.tank)).collect();
        for d in &full {
            w.create_encrypted(d);
        }
        let list = full.iter().map(|d| format!("{d:?}")).collect::<Vec<_>>().join(", ");
        std::fs::write(w.source_config(), format!("[source]\ndatasets = [{list}]\n")).unwrap();
        // The box user opens /dev/zfs itself (udev makes it 0666 on a real box).
        ok(&["chmod", "666", "/dev/zfs"]);
        let state = w.dir.join("net");
        let config = w.source_config();
        // box apply's useradd, beside box init's in other tests.
        let _g = BOX_INIT_LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        w.topology("up-provisioned", &state, &[("SOURCE_CONFIG", config.to_str().unwrap()), ("BOX_USER", &user)]);
        w
    }

    /// A provisioned world's box user.
    pub(crate) fn box_user(&self) -> &str {
        self.box_user.as_deref().expect("a provisioned world")
    }

    /// The source's config of a provisioned world (`box new` added its target).
    pub(crate) fn source_config(&self) -> PathBuf {
        self.dir.join("zoffsite.toml")
    }

    fn topology(&mut self, verb: &str, state: &Path, env: &[(&str, &str)]) {
        let out = Command::new(repo_root().join("e2e/topology.sh"))
            .arg(verb)
            .arg(state)
            .env("ZOFFSITE_BIN", BIN)
            .env("BOX_ROOT", &self.root)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        self.net_up = true;
        assert!(out.status.success(), "topology {verb} failed:\n{}", String::from_utf8_lossy(&out.stderr));
        for line in std::fs::read_to_string(state.join("env")).unwrap().lines() {
            if let Some((k, v)) = line.split_once('=') {
                self.net.insert(k.to_owned(), v.to_owned());
            }
        }
    }

    /// Two pools on sparse files and the box root; no network yet.
    fn pools() -> World {
        static N: AtomicU32 = AtomicU32::new(0);
        let id = format!("{}{}", std::process::id() % 100_000, N.fetch_add(1, Ordering::Relaxed));
        let dir = std::env::temp_dir().join(format!("zoffsite-e2e-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        let tank = format!("tank{id}");
        let offsite = format!("offsite{id}");
        let w = World {
            root: format!("{offsite}/home"),
            dir,
            tank,
            offsite,
            net: BTreeMap::new(),
            net_up: false,
            box_user: None,
        };
        for pool in [&w.tank, &w.offsite] {
            let vdev = w.vdev(pool);
            ok(&["truncate", "-s", "256M", vdev.to_str().unwrap()]);
            // compression=off so that the positive control of the canary test
            // finds its plaintext on disk.
            ok(&["zpool", "create", "-O", "compression=off", "-O", "mountpoint=none", pool, vdev.to_str().unwrap()]);
        }
        std::fs::write(w.dir.join("key"), random_hex(32)).unwrap();
        zfs(&["create", "-o", "canmount=off", "-o", "mountpoint=none", &w.root]);
        w
    }

    pub(crate) fn vdev(&self, pool: &str) -> PathBuf {
        self.dir.join(format!("{pool}.img"))
    }

    pub(crate) fn env(&self, k: &str) -> &str {
        self.net.get(k).unwrap_or_else(|| panic!("{k} missing from topology env"))
    }

    /// An encrypted dataset (its own encryption root) with a mountpoint in
    /// the world's directory.
    pub(crate) fn create_encrypted(&self, ds: &str) {
        let mnt = self.dir.join("mnt").join(ds);
        zfs(&[
            "create",
            "-p",
            "-o",
            "encryption=aes-256-gcm",
            "-o",
            "keyformat=hex",
            "-o",
            &format!("keylocation=file://{}", self.dir.join("key").display()),
            "-o",
            &format!("mountpoint={}", mnt.display()),
            ds,
        ]);
    }

    /// A child that inherits its parent's encryption and mountpoint.
    pub(crate) fn create_child(&self, ds: &str) {
        zfs(&["create", ds]);
    }

    pub(crate) fn create_plain(&self, ds: &str) {
        let mnt = self.dir.join("mnt").join(ds);
        zfs(&["create", "-p", "-o", "encryption=off", "-o", &format!("mountpoint={}", mnt.display()), ds]);
    }

    pub(crate) fn mountpoint(&self, ds: &str) -> PathBuf {
        PathBuf::from(zfs(&["get", "-H", "-o", "value", "mountpoint", ds]).trim())
    }

    pub(crate) fn write(&self, ds: &str, file: &str, content: &[u8]) {
        std::fs::write(self.mountpoint(ds).join(file), content).unwrap();
    }

    /// Writes the config file and returns its path.
    pub(crate) fn config(&self, datasets: &[&str], exclude: &[&str]) -> PathBuf {
        self.config_with(datasets, exclude, "")
    }

    pub(crate) fn config_with(&self, datasets: &[&str], exclude: &[&str], target_extra: &str) -> PathBuf {
        let list = |v: &[&str]| v.iter().map(|d| format!("{d:?}")).collect::<Vec<_>>().join(", ");
        let text = format!(
            "[source]\ndatasets = [{}]\nexclude = [{}]\n\n[[target]]\nname = \"friend\"\nhost = \"{}\"\nuser = \"root\"\nidentity_file = \"{}\"\nknown_hosts = \"{}\"\n{target_extra}",
            list(datasets),
            list(exclude),
            self.env("BOX_ADDR"),
            self.env("IDENTITY"),
            self.env("KNOWN_HOSTS"),
        );
        let p = self.dir.join("zoffsite.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Runs a command in the source's network namespace.
    pub(crate) fn at_home(&self, argv: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", self.env("HOME_NS")];
        full.extend_from_slice(argv);
        run(&full)
    }

    /// Runs a command in the box's network namespace.
    pub(crate) fn at_box(&self, argv: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", self.env("FRIEND_NS")];
        full.extend_from_slice(argv);
        run(&full)
    }

    /// `zoffsite backup` on the source, in the background.
    pub(crate) fn spawn_backup(&self, config: &Path, extra: &[&str]) -> std::process::Child {
        Command::new("ip")
            .args(["netns", "exec", self.env("HOME_NS"), BIN, "backup", "-c", config.to_str().unwrap()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// `zoffsite backup` on the source.
    pub(crate) fn backup(&self, config: &Path, extra: &[&str]) -> Output {
        let mut argv = vec![BIN, "backup", "-c", config.to_str().unwrap()];
        argv.extend_from_slice(extra);
        self.at_home(&argv)
    }

    /// The box's view: snapshot name -> GUID, for everything under `pool`.
    pub(crate) fn snapshots(&self, pool: &str) -> BTreeMap<String, String> {
        zfs(&["list", "-H", "-p", "-r", "-t", "snapshot", "-o", "name,guid", pool])
            .lines()
            .map(|l| {
                let (n, g) = l.split_once('\t').unwrap();
                (n.to_owned(), g.to_owned())
            })
            .collect()
    }

    pub(crate) fn datasets(&self, pool: &str) -> Vec<String> {
        zfs(&["list", "-H", "-r", "-o", "name", pool]).lines().map(str::to_owned).collect()
    }

    /// Replaces the box's forced command for the source's key (sshd reads
    /// authorized_keys at each login).
    pub(crate) fn set_forced_command(&self, command: &str) {
        let key = std::fs::read_to_string(format!("{}.pub", self.env("IDENTITY"))).unwrap();
        let line = format!("restrict,command=\"{command}\" {}\n", key.trim());
        std::fs::write(self.env("AUTHORIZED_KEYS"), line).unwrap();
    }

    /// Everything on the source pool: name -> GUID, snapshots, bookmarks
    /// and datasets alike, with each snapshot's holds.
    pub(crate) fn source_state(&self) -> BTreeMap<String, String> {
        let mut all: BTreeMap<String, String> =
            zfs(&["list", "-H", "-p", "-r", "-t", "all", "-o", "name,guid", &self.tank])
                .lines()
                .map(|l| {
                    let (n, g) = l.split_once('\t').unwrap();
                    (n.to_owned(), g.to_owned())
                })
                .collect();
        let snaps: Vec<String> = all.keys().filter(|n| n.contains('@')).cloned().collect();
        for s in snaps {
            let holds = zfs(&["holds", "-H", &s]);
            all.insert(format!("{s} holds"), holds);
        }
        all
    }

    pub(crate) fn prop(&self, ds: &str, prop: &str) -> String {
        zfs(&["get", "-H", "-p", "-o", "value", prop, ds]).trim().to_owned()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // `down` removes a provisioned world's box user: not beside a useradd.
        let _g =
            self.box_user.as_ref().map(|_| BOX_INIT_LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        if self.net_up {
            let _ = run(&[
                repo_root().join("e2e/topology.sh").to_str().unwrap(),
                "down",
                self.dir.join("net").to_str().unwrap(),
            ]);
        }
        for pool in [&self.tank, &self.offsite] {
            let _ = run(&["zpool", "destroy", "-f", pool]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub(crate) fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("bad JSON ({e}):\n{}", text(o)))
}

/// Plants partial-receive state on the box as a compromised box root could:
/// an interrupted receive of `stream_of` (full, raw or not) at the box
/// location of `at`.
pub(crate) fn plant_partial(w: &World, args: &[&str], at: &str) {
    let status = Command::new("sh")
        .args(["-c", "zfs send \"$@\" | head -c 20000 | zfs receive -s -u \"$0\"", at])
        .args(args)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the planted receive must be interrupted");
    assert_ne!(w.prop(at, "receive_resume_token"), "-", "partial state planted at {at}");
}

// ---- box side: `box prune`, `box check` ----

/// Writes a box config (`root` is the world's box root) and returns its path.
pub(crate) fn box_config(w: &World, body: &str) -> PathBuf {
    let p = w.dir.join("box.toml");
    // Each world's journal of its own: tests run side by side in one VM.
    let journal = w.dir.join("state/txg-journal");
    std::fs::write(&p, format!("root = \"{}\"\njournal = \"{}\"\n{body}", w.root, journal.display())).unwrap();
    p
}

/// `zoffsite box SUB -c CONFIG ...` as root on the box.
pub(crate) fn box_cmd(sub: &str, cfg: &Path, extra: &[&str]) -> Output {
    let mut argv = vec![BIN, "box", sub, "-c", cfg.to_str().unwrap()];
    argv.extend_from_slice(extra);
    run(&argv)
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs().try_into().unwrap()
}

pub(crate) fn rfc3339(t: i64) -> String {
    jiff::Timestamp::from_second(t).unwrap().to_string()
}

/// The snapshot names (after `@`) the box holds for `box_ds`.
pub(crate) fn box_snap_names(w: &World, box_ds: &str) -> Vec<String> {
    w.snapshots(&w.offsite)
        .into_keys()
        .filter_map(|k| k.strip_prefix(&format!("{box_ds}@")).map(str::to_owned))
        .collect()
}

/// `box init` is run by root on the box; concurrent `useradd`s in parallel
/// tests would fight over /etc/passwd's lock.
static BOX_INIT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The box user made by `box init` for one world, removed on drop.
pub(crate) struct BoxUser {
    pub(crate) name: String,
    pub(crate) uid: String,
    pub(crate) gid: String,
    pub(crate) root: String,
}

impl Drop for BoxUser {
    fn drop(&mut self) {
        let _ = run(&["userdel", "-r", &self.name]);
    }
}

impl BoxUser {
    /// Runs `argv` as this user (no PAM, no supplementary groups).
    pub(crate) fn run(&self, argv: &[&str]) -> Output {
        let mut full = vec!["setpriv", "--reuid", &self.uid, "--regid", &self.gid, "--clear-groups", "--"];
        full.extend_from_slice(argv);
        run(&full)
    }
}

/// `zoffsite box init` for `<offsite>/home2` and user `zo<id>`, writing the
/// line into the test sshd's shared authorized_keys (it replaces the
/// topology's root line: same key). Returns the user; also returns the
/// output of each run (dry run, first, second).
pub(crate) fn box_init(w: &World) -> (BoxUser, [Output; 3]) {
    let name = format!("zo{}", w.tank.trim_start_matches("tank"));
    let root = format!("{}/home2", w.offsite);
    let state = w.dir.join("net");
    // The box user opens /dev/zfs itself (udev makes it 0666 on a real box).
    ok(&["chmod", "666", "/dev/zfs"]);
    // sshd reads authorized_keys as the user logging in: let it through
    // the (0700, root's) state directory; the files in it stay 0600.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    let key = state.join("id_ed25519.pub");
    let ak = state.join("authorized_keys");
    let init = |extra: &[&str]| {
        let mut argv = vec![
            BIN,
            "box",
            "init",
            "--root",
            &root,
            "--user",
            &name,
            "--source-key",
            key.to_str().unwrap(),
            "--from",
            "10.77.0.1",
            "--authorized-keys",
            ak.to_str().unwrap(),
        ];
        argv.extend_from_slice(extra);
        run(&argv)
    };
    let _g = BOX_INIT_LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dry = init(&["--dry-run"]);
    let first = init(&[]);
    let user = BoxUser {
        uid: ok(&["id", "-u", &name]).trim().to_owned(),
        gid: ok(&["id", "-g", &name]).trim().to_owned(),
        name: name.clone(),
        root: root.clone(),
    };
    let second = init(&[]);
    (user, [dry, first, second])
}

/// `box init` run again on `w`'s box for `user`, with `extra` options.
pub(crate) fn box_init_again(w: &World, user: &BoxUser, extra: &[&str]) -> Output {
    let state = w.dir.join("net");
    let (key, ak) = (state.join("id_ed25519.pub"), state.join("authorized_keys"));
    let mut argv = vec![BIN, "box", "init", "--root", &user.root, "--user", &user.name];
    argv.extend([
        "--source-key",
        key.to_str().unwrap(),
        "--from",
        "10.77.0.1",
        "--authorized-keys",
        ak.to_str().unwrap(),
    ]);
    argv.extend_from_slice(extra);
    let _g = BOX_INIT_LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    run(&argv)
}
