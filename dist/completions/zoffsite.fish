# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_zoffsite_global_optspecs
    string join \n v/verbose q/quiet c/config= h/help V/version
end

function __fish_zoffsite_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_zoffsite_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_zoffsite_using_subcommand
    set -l cmd (__fish_zoffsite_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c zoffsite -n "__fish_zoffsite_needs_command" -s c -l config -d 'The configuration file, before or after the subcommand: the source\'s (default /etc/zoffsite/zoffsite.toml), or for box prune, box check and box keepalive the box\'s (default /etc/zoffsite/box.toml); doctor reads the one of its side. -c wins over ZOFFSITE_CONFIG, which wins over the default' -r -F
complete -c zoffsite -n "__fish_zoffsite_needs_command" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug). ZOFFSITE_LOG overrides'
complete -c zoffsite -n "__fish_zoffsite_needs_command" -s q -l quiet -d 'Print only warnings and errors (and, with --json, the document): no narrative, tables or progress. The exit code says the rest'
complete -c zoffsite -n "__fish_zoffsite_needs_command" -s h -l help -d 'Print help'
complete -c zoffsite -n "__fish_zoffsite_needs_command" -s V -l version -d 'Print version'
complete -c zoffsite -n "__fish_zoffsite_needs_command" -f -a "backup" -d 'Snapshot the selected datasets and send them, raw, to every target'
complete -c zoffsite -n "__fish_zoffsite_needs_command" -f -a "prune" -d 'Apply source retention ([source.keep]) to zoffsite\'s own snapshots'
complete -c zoffsite -n "__fish_zoffsite_needs_command" -f -a "status" -d 'For every target and dataset: newest snapshot on the source and on the box, its age, bytes behind. Exits 6 when any is older than max_age'
complete -c zoffsite -n "__fish_zoffsite_needs_command" -f -a "restore" -d 'Bring a dataset (and its children) back from a box, raw, without ever giving the box a key: over the network (--target) or from the box\'s pool imported here (--from-pool)'
complete -c zoffsite -n "__fish_zoffsite_needs_command" -f -a "verify" -d 'Without any key: check that every target holds what it confirmed, with the source\'s GUIDs, on a healthy, scrubbed pool'
complete -c zoffsite -n "__fish_zoffsite_needs_command" -f -a "doctor" -d 'Audit the security posture of the box (--box, as root) or of the source (--source): one line per check, ok/warn/unknown/fail, with the fix. Exits 0 when all are ok, 6 on a warning or an unknown, 3 on a failure'
complete -c zoffsite -n "__fish_zoffsite_needs_command" -f -a "box" -d 'Boxes: make one (new), build its installer image (image), wait for it and back up to it the first time (wait), all on the source; install a bundle (apply, both machines); and the box-side tasks run by root on the box (init, prune, check, keepalive, install)'
complete -c zoffsite -n "__fish_zoffsite_needs_command" -f -a "serve" -d 'The box side: speak the zoffsite protocol on stdin/stdout. Meant to be the forced command of the source\'s key in the box\'s authorized_keys'
complete -c zoffsite -n "__fish_zoffsite_needs_command" -f -a "config" -d 'The configuration file: `config check` validates it and says what it means, touching neither ZFS nor the network'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand backup" -l target -d 'Send only to this target of the config (default: every target)' -r
complete -c zoffsite -n "__fish_zoffsite_using_subcommand backup" -s c -l config -d 'The configuration file, before or after the subcommand: the source\'s (default /etc/zoffsite/zoffsite.toml), or for box prune, box check and box keepalive the box\'s (default /etc/zoffsite/box.toml); doctor reads the one of its side. -c wins over ZOFFSITE_CONFIG, which wins over the default' -r -F
complete -c zoffsite -n "__fish_zoffsite_using_subcommand backup" -s n -l dry-run -d 'Show what would be snapshotted and sent; change nothing anywhere'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand backup" -l json -d 'Print the result (or, with -n, the plan) as JSON on stdout'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand backup" -l force-snapshot -d 'Take a new snapshot even if no selected dataset changed since its last zoffsite snapshot'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand backup" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug). ZOFFSITE_LOG overrides'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand backup" -s q -l quiet -d 'Print only warnings and errors (and, with --json, the document): no narrative, tables or progress. The exit code says the rest'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand backup" -s h -l help -d 'Print help'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand prune" -l now -d 'Pretend it is this time (RFC 3339, e.g. 2026-11-26T07:30:00Z), for what-if runs' -r
complete -c zoffsite -n "__fish_zoffsite_using_subcommand prune" -s c -l config -d 'The configuration file, before or after the subcommand: the source\'s (default /etc/zoffsite/zoffsite.toml), or for box prune, box check and box keepalive the box\'s (default /etc/zoffsite/box.toml); doctor reads the one of its side. -c wins over ZOFFSITE_CONFIG, which wins over the default' -r -F
complete -c zoffsite -n "__fish_zoffsite_using_subcommand prune" -s n -l dry-run -d 'List every snapshot with keep/destroy and the reason; destroy nothing'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand prune" -l json -d 'Print the decisions as JSON on stdout'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand prune" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug). ZOFFSITE_LOG overrides'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand prune" -s q -l quiet -d 'Print only warnings and errors (and, with --json, the document): no narrative, tables or progress. The exit code says the rest'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand prune" -s h -l help -d 'Print help'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand status" -l target -d 'Only this target of the config (default: every target)' -r
complete -c zoffsite -n "__fish_zoffsite_using_subcommand status" -s c -l config -d 'The configuration file, before or after the subcommand: the source\'s (default /etc/zoffsite/zoffsite.toml), or for box prune, box check and box keepalive the box\'s (default /etc/zoffsite/box.toml); doctor reads the one of its side. -c wins over ZOFFSITE_CONFIG, which wins over the default' -r -F
complete -c zoffsite -n "__fish_zoffsite_using_subcommand status" -l json -d 'Print the status as JSON on stdout (on failure too)'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand status" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug). ZOFFSITE_LOG overrides'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand status" -s q -l quiet -d 'Print only warnings and errors (and, with --json, the document): no narrative, tables or progress. The exit code says the rest'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand status" -s h -l help -d 'Print help'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand restore" -l target -d 'Restore over the network from this target of the config' -r
complete -c zoffsite -n "__fish_zoffsite_using_subcommand restore" -l from-pool -d 'Restore from the box\'s pool imported on this machine: its root dataset as imported (e.g. offsite2/home)' -r
complete -c zoffsite -n "__fish_zoffsite_using_subcommand restore" -l dataset -d 'The dataset to restore, named as on the source (e.g. tank/data)' -r
complete -c zoffsite -n "__fish_zoffsite_using_subcommand restore" -l snapshot -d 'The snapshot to restore (default: the newest on the box)' -r
complete -c zoffsite -n "__fish_zoffsite_using_subcommand restore" -l to -d 'Where to restore it (default: in place, as SRC). Never overwritten: it must not exist' -r
complete -c zoffsite -n "__fish_zoffsite_using_subcommand restore" -l keylocation -d 'Set this keylocation on every restored dataset (each its own encryption root, wrapped as the box holds it), load the keys, and mount (default: leave it locked and say how)' -r
complete -c zoffsite -n "__fish_zoffsite_using_subcommand restore" -l apply-properties -d 'Which recorded properties to set again: `data` (compression, recordsize, atime, xattr, acltype, ..., user properties) or `all` (also mountpoint, sharenfs, setuid, quotas, ...: only for a point you trust, since the manifest was written by the source)' -r -f -a "data\t''
all\t''"
complete -c zoffsite -n "__fish_zoffsite_using_subcommand restore" -l max-bytes -d 'Accept at most this many stream bytes from the box in all, e.g. 2T (default: what the destination pool has available, less a twentieth, so a lying box cannot fill it)' -r
complete -c zoffsite -n "__fish_zoffsite_using_subcommand restore" -l max-time -d 'Give up after this long, e.g. "3d" (default: 30 min plus the byte limit at 256 KiB/s)' -r
complete -c zoffsite -n "__fish_zoffsite_using_subcommand restore" -s c -l config -d 'The configuration file, before or after the subcommand: the source\'s (default /etc/zoffsite/zoffsite.toml), or for box prune, box check and box keepalive the box\'s (default /etc/zoffsite/box.toml); doctor reads the one of its side. -c wins over ZOFFSITE_CONFIG, which wins over the default' -r -F
complete -c zoffsite -n "__fish_zoffsite_using_subcommand restore" -l no-children -d 'Restore only SRC, not the datasets below it'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand restore" -l children-unverified -d 'Bring back the children the box holds under the snapshot\'s name even when the restored point\'s manifest cannot say which were part of it (no --keylocation, or a snapshot from before the manifest listed its datasets). By default only the children it lists come back'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand restore" -s n -l dry-run -d 'Show what would be restored where; change nothing'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand restore" -l json -d 'Print what was (or, with -n, would be) restored as JSON on stdout (on failure too)'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand restore" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug). ZOFFSITE_LOG overrides'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand restore" -s q -l quiet -d 'Print only warnings and errors (and, with --json, the document): no narrative, tables or progress. The exit code says the rest'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand restore" -s h -l help -d 'Print help'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand verify" -l target -d 'Only this target (default: all; with --drill, the first)' -r
complete -c zoffsite -n "__fish_zoffsite_using_subcommand verify" -l dataset -d 'With --drill: the dataset (default: the first selected)' -r
complete -c zoffsite -n "__fish_zoffsite_using_subcommand verify" -l max-time -d 'With --drill: give up (and destroy the scratch) after this long, e.g. "2h" (default: 30 min plus the stream\'s size at 256 KiB/s)' -r
complete -c zoffsite -n "__fish_zoffsite_using_subcommand verify" -s c -l config -d 'The configuration file, before or after the subcommand: the source\'s (default /etc/zoffsite/zoffsite.toml), or for box prune, box check and box keepalive the box\'s (default /etc/zoffsite/box.toml); doctor reads the one of its side. -c wins over ZOFFSITE_CONFIG, which wins over the default' -r -F
complete -c zoffsite -n "__fish_zoffsite_using_subcommand verify" -l json -d 'Print the result as JSON on stdout'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand verify" -l drill -d 'A restore drill: pull a snapshot back into a scratch dataset, load the key, compare every file with the source\'s snapshot, destroy the scratch'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand verify" -l random -d 'With --drill: a random snapshot the box holds (default: the newest it confirmed)'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand verify" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug). ZOFFSITE_LOG overrides'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand verify" -s q -l quiet -d 'Print only warnings and errors (and, with --json, the document): no narrative, tables or progress. The exit code says the rest'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand verify" -s h -l help -d 'Print help'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand doctor" -l output -d 'Also write the JSON report to FILE, atomically and mode 0644 (for the box\'s audit timer: `serve` hands it to the source), e.g. /var/lib/zoffsite-doctor/box.json' -r -F
complete -c zoffsite -n "__fish_zoffsite_using_subcommand doctor" -s c -l config -d 'The configuration file, before or after the subcommand: the source\'s (default /etc/zoffsite/zoffsite.toml), or for box prune, box check and box keepalive the box\'s (default /etc/zoffsite/box.toml); doctor reads the one of its side. -c wins over ZOFFSITE_CONFIG, which wins over the default' -r -F
complete -c zoffsite -n "__fish_zoffsite_using_subcommand doctor" -l box -d 'Audit this machine as the box (default when /etc/zoffsite/box.toml exists and /etc/zoffsite/zoffsite.toml does not)'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand doctor" -l source -d 'Audit this machine as the source (default when /etc/zoffsite/zoffsite.toml exists and /etc/zoffsite/box.toml does not)'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand doctor" -l json -d 'Print the report as JSON on stdout'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand doctor" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug). ZOFFSITE_LOG overrides'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand doctor" -s q -l quiet -d 'Print only warnings and errors (and, with --json, the document): no narrative, tables or progress. The exit code says the rest'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand doctor" -s h -l help -d 'Print help'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and not __fish_seen_subcommand_from new init prune check apply keepalive image wait install" -s c -l config -d 'The configuration file, before or after the subcommand: the source\'s (default /etc/zoffsite/zoffsite.toml), or for box prune, box check and box keepalive the box\'s (default /etc/zoffsite/box.toml); doctor reads the one of its side. -c wins over ZOFFSITE_CONFIG, which wins over the default' -r -F
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and not __fish_seen_subcommand_from new init prune check apply keepalive image wait install" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug). ZOFFSITE_LOG overrides'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and not __fish_seen_subcommand_from new init prune check apply keepalive image wait install" -s q -l quiet -d 'Print only warnings and errors (and, with --json, the document): no narrative, tables or progress. The exit code says the rest'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and not __fish_seen_subcommand_from new init prune check apply keepalive image wait install" -s h -l help -d 'Print help'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and not __fish_seen_subcommand_from new init prune check apply keepalive image wait install" -f -a "new" -d 'On the source: make a new box\'s keys (both ends\' WireGuard keys, the box\'s SSH host key, this source\'s SSH key for it) and its files, as two bundles for `box apply`, and add its [[target]] to the config'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and not __fish_seen_subcommand_from new init prune check apply keepalive image wait install" -f -a "init" -d 'Prepare the box: the unprivileged user, the root dataset, the append-only delegation and the forced-command authorized_keys line'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and not __fish_seen_subcommand_from new init prune check apply keepalive image wait install" -f -a "prune" -d 'Box retention by the box\'s own receive times ([keep] in box.toml)'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and not __fish_seen_subcommand_from new init prune check apply keepalive image wait install" -f -a "check" -d 'Dead-man\'s switch: fail (and notify) when nothing arrived within max_age, the pool is unhealthy, or a partial receive was abandoned'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and not __fish_seen_subcommand_from new init prune check apply keepalive image wait install" -f -a "apply" -d 'Install a bundle made by `zoffsite box new` (box.bundle on the box, source.bundle on the source), idempotently: its files and keys, what `box init` does (box, under /), and its units, enabled'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and not __fish_seen_subcommand_from new init prune check apply keepalive image wait install" -f -a "keepalive" -d 'Follow the source\'s address: when the tunnel\'s last handshake is stale and the source\'s name now resolves elsewhere, set the peer\'s endpoint (WireGuard resolves it only once). Run by a timer'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and not __fish_seen_subcommand_from new init prune check apply keepalive image wait install" -f -a "image" -d 'On the source: build box NAME\'s installer image with mkosi (its bundle, this zoffsite, OpenZFS signed with your Secure Boot db key, a signed unified kernel image, your PK/KEK/db enrollment files) and write it to a file or a USB stick'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and not __fish_seen_subcommand_from new init prune check apply keepalive image wait install" -f -a "wait" -d 'On the source, once the box is powered on: wait for its tunnel and a session with its pinned host key, show its audit, enable the backup timer and run the first backup to it. Stops (exit 3) when the box\'s audit has a failed check, unless --force'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and not __fish_seen_subcommand_from new init prune check apply keepalive image wait install" -f -a "install" -d 'On the box\'s USB stick (its unit runs it at boot): check Secure Boot and the TPM 2.0, put the system on the smaller of exactly two blank internal disks (LUKS2 unlocked by the TPM, and a recovery key written only to the report on the stick) and the pool on the larger'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from new" -l endpoint -d 'The source\'s WireGuard server as the box dials it: HOST:PORT, HOST a DNS name (re-resolved by the box when it changes) or an address' -r
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from new" -l tunnel -d 'The tunnel\'s private IPv4 network: the source is its first address, the box its second' -r
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from new" -l root -d 'The box\'s root dataset, under which this source\'s datasets are kept (default: offsite/HOST, HOST this machine\'s short host name)' -r
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from new" -l dir -d 'Where the bundles and keys are written (0700; default /etc/zoffsite/boxes/NAME). It must be new or empty' -r -F
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from new" -l user -d 'The box user that runs `zoffsite serve`' -r
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from new" -l identity -d 'Use this existing SSH key of the source (its FILE.pub is read) instead of making DIR/id_ed25519' -r -F
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from new" -l ssh-port -d 'The box\'s sshd port, inside the tunnel' -r
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from new" -l keepalive -d 'The box\'s WireGuard PersistentKeepalive, in seconds' -r
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from new" -l source-backend -d 'How this machine brings up the tunnel' -r -f -a "wg-quick\t'/etc/wireguard/IF.conf and wg-quick@IF.service'
networkd\t'/etc/systemd/network/IF.netdev and IF.network'"
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from new" -l box-backend -d 'How the box brings up the tunnel' -r -f -a "wg-quick\t'/etc/wireguard/IF.conf and wg-quick@IF.service'
networkd\t'/etc/systemd/network/IF.netdev and IF.network'"
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from new" -l schedule -d 'When `zoffsite backup` runs: a systemd calendar expression' -r
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from new" -l box-exe -d 'zoffsite on the box (its forced command and timers run it)' -r
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from new" -l source-exe -d 'zoffsite on this machine, as its timers run it (default: this binary)' -r
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from new" -s c -l config -d 'The configuration file, before or after the subcommand: the source\'s (default /etc/zoffsite/zoffsite.toml), or for box prune, box check and box keepalive the box\'s (default /etc/zoffsite/box.toml); doctor reads the one of its side. -c wins over ZOFFSITE_CONFIG, which wins over the default' -r -F
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from new" -s n -l dry-run -d 'Show every file the bundles would install and the config change; make no key, write nothing'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from new" -l json -d 'Print the result (or, with -n, the plan) as JSON on stdout'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from new" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug). ZOFFSITE_LOG overrides'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from new" -s q -l quiet -d 'Print only warnings and errors (and, with --json, the document): no narrative, tables or progress. The exit code says the rest'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from new" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from init" -l root -d 'The box dataset the source\'s key is forced to serve' -r
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from init" -l user -d 'The unprivileged user that runs `zoffsite serve`' -r
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from init" -l source-key -d 'The source\'s SSH public key (one line, `ssh-ed25519 AAAA...`)' -r -F
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from init" -l from -d 'Only accept the key from this address (the source\'s VPN address)' -r
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from init" -l authorized-keys -d 'Write the forced-command line here instead of the user\'s ~/.ssh/authorized_keys' -r -F
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from init" -l snapshot-limit -d 'Cap the number of snapshots under the root (ZFS snapshot_limit), or `none` (default: 100000 where the root has no limit yet)' -r
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from init" -l filesystem-limit -d 'Cap the number of datasets under the root, placeholders included (ZFS filesystem_limit), or `none` (default: 1000 where the root has no limit yet)' -r
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from init" -l quota -d 'Cap the space the source can take from the box\'s pool (ZFS quota on the root), e.g. 2T, or `none` (default: leave the quota as it is)' -r
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from init" -s c -l config -d 'The configuration file, before or after the subcommand: the source\'s (default /etc/zoffsite/zoffsite.toml), or for box prune, box check and box keepalive the box\'s (default /etc/zoffsite/box.toml); doctor reads the one of its side. -c wins over ZOFFSITE_CONFIG, which wins over the default' -r -F
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from init" -s n -l dry-run -d 'Print what would be done; change nothing'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from init" -l json -d 'Print the plan and what was done as JSON on stdout (on failure too)'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from init" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug). ZOFFSITE_LOG overrides'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from init" -s q -l quiet -d 'Print only warnings and errors (and, with --json, the document): no narrative, tables or progress. The exit code says the rest'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from init" -s h -l help -d 'Print help'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from prune" -l now -d 'Pretend it is this time (RFC 3339), for what-if runs' -r
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from prune" -s c -l config -d 'The configuration file, before or after the subcommand: the source\'s (default /etc/zoffsite/zoffsite.toml), or for box prune, box check and box keepalive the box\'s (default /etc/zoffsite/box.toml); doctor reads the one of its side. -c wins over ZOFFSITE_CONFIG, which wins over the default' -r -F
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from prune" -s n -l dry-run -d 'List every snapshot with keep/destroy and the reason; destroy nothing'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from prune" -l json -d 'Print the decisions as JSON on stdout'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from prune" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug). ZOFFSITE_LOG overrides'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from prune" -s q -l quiet -d 'Print only warnings and errors (and, with --json, the document): no narrative, tables or progress. The exit code says the rest'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from prune" -s h -l help -d 'Print help'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from check" -l now -d 'Pretend it is this time (RFC 3339)' -r
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from check" -s c -l config -d 'The configuration file, before or after the subcommand: the source\'s (default /etc/zoffsite/zoffsite.toml), or for box prune, box check and box keepalive the box\'s (default /etc/zoffsite/box.toml); doctor reads the one of its side. -c wins over ZOFFSITE_CONFIG, which wins over the default' -r -F
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from check" -l json -d 'Print the findings as JSON on stdout'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from check" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug). ZOFFSITE_LOG overrides'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from check" -s q -l quiet -d 'Print only warnings and errors (and, with --json, the document): no narrative, tables or progress. The exit code says the rest'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from check" -s h -l help -d 'Print help'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from apply" -l root -d 'Install under this directory instead of / (an image being built, a test); implies --offline and runs as any user' -r -F
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from apply" -s c -l config -d 'The configuration file, before or after the subcommand: the source\'s (default /etc/zoffsite/zoffsite.toml), or for box prune, box check and box keepalive the box\'s (default /etc/zoffsite/box.toml); doctor reads the one of its side. -c wins over ZOFFSITE_CONFIG, which wins over the default' -r -F
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from apply" -l offline -d 'Ask no running systemd anything: enable the units with `systemctl --root=DIR enable`, start and reload nothing'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from apply" -s n -l dry-run -d 'Show every file and command; change nothing'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from apply" -l json -d 'Print the plan and the outcome as JSON on stdout'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from apply" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug). ZOFFSITE_LOG overrides'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from apply" -s q -l quiet -d 'Print only warnings and errors (and, with --json, the document): no narrative, tables or progress. The exit code says the rest'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from apply" -s h -l help -d 'Print help'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from keepalive" -l interface -d 'The WireGuard interface (default: the one zo-* interface installed, /etc/wireguard/zo-*.conf or /etc/systemd/network/zo-*.netdev)' -r
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from keepalive" -s c -l config -d 'The configuration file, before or after the subcommand: the source\'s (default /etc/zoffsite/zoffsite.toml), or for box prune, box check and box keepalive the box\'s (default /etc/zoffsite/box.toml); doctor reads the one of its side. -c wins over ZOFFSITE_CONFIG, which wins over the default' -r -F
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from keepalive" -s n -l dry-run -d 'Decide and say what would be set; change nothing'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from keepalive" -l json -d 'Print what was found and done as JSON on stdout'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from keepalive" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug). ZOFFSITE_LOG overrides'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from keepalive" -s q -l quiet -d 'Print only warnings and errors (and, with --json, the document): no narrative, tables or progress. The exit code says the rest'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from keepalive" -s h -l help -d 'Print help'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from image" -l output -d 'Write the image to this file (0600: it holds the box\'s private keys)' -r -F
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from image" -l write -d 'Write the image to this USB stick (a whole removable disk, nothing mounted), e.g. /dev/sdb' -r -F
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from image" -l dir -d 'The box\'s directory from `box new` (default /etc/zoffsite/boxes/NAME)' -r -F
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from image" -l keys -d 'Your Secure Boot keys (made there on first use; default /etc/zoffsite/secureboot). Keep a copy offline: every box trusts them' -r -F
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from image" -l work -d 'The build tree and mkosi\'s cache (default /var/cache/zoffsite/image/NAME)' -r -F
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from image" -s c -l config -d 'The configuration file, before or after the subcommand: the source\'s (default /etc/zoffsite/zoffsite.toml), or for box prune, box check and box keepalive the box\'s (default /etc/zoffsite/box.toml); doctor reads the one of its side. -c wins over ZOFFSITE_CONFIG, which wins over the default' -r -F
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from image" -l serial-console -d 'Make the serial port the console (a box with one, or a VM): the screen is otherwise'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from image" -s n -l dry-run -d 'Show what would be made and run; make no key, build nothing'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from image" -l json -d 'Print the outcome as JSON on stdout'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from image" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug). ZOFFSITE_LOG overrides'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from image" -s q -l quiet -d 'Print only warnings and errors (and, with --json, the document): no narrative, tables or progress. The exit code says the rest'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from image" -s h -l help -d 'Print help'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from wait" -l timeout -d 'Give up waiting for the box after this long, e.g. "10m", "2h"' -r
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from wait" -s c -l config -d 'The configuration file, before or after the subcommand: the source\'s (default /etc/zoffsite/zoffsite.toml), or for box prune, box check and box keepalive the box\'s (default /etc/zoffsite/box.toml); doctor reads the one of its side. -c wins over ZOFFSITE_CONFIG, which wins over the default' -r -F
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from wait" -l force -d 'Back up even when the box\'s audit has a failed check (the exit code still says 3)'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from wait" -s n -l dry-run -d 'Wait and show the box\'s audit; enable nothing, only plan the backup'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from wait" -l json -d 'Print what was reached and done as JSON on stdout (on failure too)'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from wait" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug). ZOFFSITE_LOG overrides'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from wait" -s q -l quiet -d 'Print only warnings and errors (and, with --json, the document): no narrative, tables or progress. The exit code says the rest'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from wait" -s h -l help -d 'Print help'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from install" -l bundle -d 'The box\'s bundle (its [init].root names the pool)' -r -F
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from install" -l report-dir -d 'Where the report goes (zoffsite-install.txt and .json): a directory on the stick\'s ESP. The recovery key is written there and nowhere else' -r -F
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from install" -s c -l config -d 'The configuration file, before or after the subcommand: the source\'s (default /etc/zoffsite/zoffsite.toml), or for box prune, box check and box keepalive the box\'s (default /etc/zoffsite/box.toml); doctor reads the one of its side. -c wins over ZOFFSITE_CONFIG, which wins over the default' -r -F
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from install" -s n -l dry-run -d 'Check and show the plan (also systemd-repart\'s own dry run); change nothing and write no report'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from install" -l json -d 'Print the report as JSON on stdout'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from install" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug). ZOFFSITE_LOG overrides'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from install" -s q -l quiet -d 'Print only warnings and errors (and, with --json, the document): no narrative, tables or progress. The exit code says the rest'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand box; and __fish_seen_subcommand_from install" -s h -l help -d 'Print help'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand serve" -l root -d 'The box dataset under which source dataset `tank/x` is stored as `ROOT/tank/x`. Nothing outside it is ever touched' -r
complete -c zoffsite -n "__fish_zoffsite_using_subcommand serve" -s c -l config -d 'The configuration file, before or after the subcommand: the source\'s (default /etc/zoffsite/zoffsite.toml), or for box prune, box check and box keepalive the box\'s (default /etc/zoffsite/box.toml); doctor reads the one of its side. -c wins over ZOFFSITE_CONFIG, which wins over the default' -r -F
complete -c zoffsite -n "__fish_zoffsite_using_subcommand serve" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug). ZOFFSITE_LOG overrides'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand serve" -s q -l quiet -d 'Print only warnings and errors (and, with --json, the document): no narrative, tables or progress. The exit code says the rest'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand serve" -s h -l help -d 'Print help'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand config; and not __fish_seen_subcommand_from check" -s c -l config -d 'The configuration file, before or after the subcommand: the source\'s (default /etc/zoffsite/zoffsite.toml), or for box prune, box check and box keepalive the box\'s (default /etc/zoffsite/box.toml); doctor reads the one of its side. -c wins over ZOFFSITE_CONFIG, which wins over the default' -r -F
complete -c zoffsite -n "__fish_zoffsite_using_subcommand config; and not __fish_seen_subcommand_from check" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug). ZOFFSITE_LOG overrides'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand config; and not __fish_seen_subcommand_from check" -s q -l quiet -d 'Print only warnings and errors (and, with --json, the document): no narrative, tables or progress. The exit code says the rest'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand config; and not __fish_seen_subcommand_from check" -s h -l help -d 'Print help'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand config; and not __fish_seen_subcommand_from check" -f -a "check" -d 'Validate the config (-c FILE, ZOFFSITE_CONFIG or the default) and print what it means: the datasets, each target, retention in words, the backup timer\'s schedule and bandwidth limits. Reads only files: no zfs, no ssh. Exits 0 when it is valid, 2 when not'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand config; and __fish_seen_subcommand_from check" -s c -l config -d 'The configuration file, before or after the subcommand: the source\'s (default /etc/zoffsite/zoffsite.toml), or for box prune, box check and box keepalive the box\'s (default /etc/zoffsite/box.toml); doctor reads the one of its side. -c wins over ZOFFSITE_CONFIG, which wins over the default' -r -F
complete -c zoffsite -n "__fish_zoffsite_using_subcommand config; and __fish_seen_subcommand_from check" -l box -d 'Check the box\'s config (box.toml, default /etc/zoffsite/box.toml) instead of the source\'s'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand config; and __fish_seen_subcommand_from check" -l json -d 'Print what it means as JSON on stdout (on failure too)'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand config; and __fish_seen_subcommand_from check" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug). ZOFFSITE_LOG overrides'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand config; and __fish_seen_subcommand_from check" -s q -l quiet -d 'Print only warnings and errors (and, with --json, the document): no narrative, tables or progress. The exit code says the rest'
complete -c zoffsite -n "__fish_zoffsite_using_subcommand config; and __fish_seen_subcommand_from check" -s h -l help -d 'Print help'
