//! The TCP sockets that really listen on the box, from the kernel's own
//! tables `/proc/net/tcp` and `/proc/net/tcp6`: what `box.sshd-listen`
//! needs besides `sshd -T`.
//!
//! Why: `sshd -T` prints the `ListenAddress` of sshd's files, but on a
//! distribution that starts sshd from a socket (Ubuntu 22.10 and later:
//! `ssh.socket`), systemd owns the listening socket, bound where the
//! socket unit says (`0.0.0.0:22` and `[::]:22` by default); sshd's
//! `ListenAddress` then binds nothing. Only the kernel's table tells. It is
//! read from `/proc` rather than from `ss -ltn`: no tool to find or run,
//! and a format the kernel has kept since 2.6.
//!
//! The format (`net/ipv4/tcp_ipv4.c` `get_tcp4_sock`, `net/ipv6/tcp_ipv6.c`
//! `get_tcp6_sock`): a header line (`sl local_address rem_address st ...`),
//! then one line per socket: `N: ADDR:PORT ADDR:PORT ST ...` with the
//! address in hex as the kernel holds it (8 digits for IPv4, 32 for IPv6:
//! 32-bit words printed in this machine's byte order), the port 4 hex
//! digits, the state 2 (`0A`: `TCP_LISTEN`). Strict: anything else is
//! refused (the check is then unknown), never skipped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The state of a listening socket (`TCP_LISTEN`, include/net/tcp_states.h).
const LISTEN: &str = "0A";

/// The local addresses of the listening sockets in one `/proc/net/tcp`
/// or `/proc/net/tcp6` text.
pub fn parse_proc_net_tcp(text: &str) -> Result<Vec<SocketAddr>, String> {
    if text.len() > super::MAX_INPUT {
        return Err(format!("{} bytes, more than the {} doctor reads", text.len(), super::MAX_INPUT));
    }
    let mut lines = text.lines();
    let header = lines.next().ok_or("empty")?;
    let mut h = header.split_whitespace();
    if (h.next(), h.next()) != (Some("sl"), Some("local_address")) {
        return Err(format!("the first line is not the table's header: {}", super::quote(header)));
    }
    let mut out = Vec::new();
    for (i, line) in lines.enumerate() {
        let bad = |why: &str| format!("line {}: {why}: {}", i + 2, super::quote(line));
        let mut f = line.split_whitespace();
        let (Some(sl), Some(local), Some(remote), Some(st)) = (f.next(), f.next(), f.next(), f.next()) else {
            return Err(bad("fewer than four fields"));
        };
        let slot = sl.strip_suffix(':').unwrap_or("");
        if slot.is_empty() || !slot.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("no slot number"));
        }
        let local = socket(local).ok_or_else(|| bad("not a hex ADDRESS:PORT"))?;
        socket(remote).ok_or_else(|| bad("not a hex ADDRESS:PORT"))?;
        if st.len() != 2 || !st.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)) {
            return Err(bad("not a state"));
        }
        if st == LISTEN {
            out.push(local);
        }
    }
    Ok(out)
}

/// Upper-case hex of exactly `len` digits.
fn hex(s: &str, len: usize) -> Option<u32> {
    (s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)))
        .then(|| u32::from_str_radix(s, 16).ok())
        .flatten()
}

/// `ADDR:PORT` as the kernel prints it. Each 32-bit word of the address
/// is printed as this machine holds it in memory, so its bytes are the
/// word's native-endian bytes.
fn socket(s: &str) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::try_from(hex(port, 4)?).ok()?;
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(hex(addr, 8)?.to_ne_bytes())),
        32 => {
            let mut b = [0u8; 16];
            for (w, chunk) in b.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&hex(addr.get(w * 8..w * 8 + 8)?, 8)?.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::testutil::fixture;
    use proptest::prelude::*;

    fn addrs(v: &[&str]) -> Vec<SocketAddr> {
        v.iter().map(|a| a.parse().unwrap()).collect()
    }

    // The fixtures are as a little-endian machine (x86-64, arm64) prints them.
    #[cfg(target_endian = "little")]
    #[test]
    fn the_listening_sockets_of_a_good_and_a_socket_activated_box() {
        let good = parse_proc_net_tcp(&fixture("proc-net-tcp-box.txt")).unwrap();
        assert_eq!(good, addrs(&["127.0.0.53:53", "10.77.0.2:22"]), "not the established connection");
        assert_eq!(parse_proc_net_tcp(&fixture("proc-net-tcp6-box.txt")).unwrap(), addrs(&["[::1]:631"]));
        let socket = parse_proc_net_tcp(&fixture("proc-net-tcp-socket.txt")).unwrap();
        assert_eq!(socket, addrs(&["127.0.0.53:53", "0.0.0.0:22"]));
        assert_eq!(parse_proc_net_tcp(&fixture("proc-net-tcp6-socket.txt")).unwrap(), addrs(&["[::]:22"]));
    }

    #[test]
    fn strange_tables_are_refused() {
        let header =
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";
        let row = "   0: 0200000A:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n";
        assert_eq!(parse_proc_net_tcp(header).unwrap(), vec![]);
        assert_eq!(parse_proc_net_tcp(&format!("{header}{row}")).unwrap().len(), 1);
        assert!(parse_proc_net_tcp("").is_err());
        assert!(parse_proc_net_tcp(row).is_err(), "no header");
        for bad in [
            row.replace("0200000A:0016", "0200000a:0016"),
            row.replace("0200000A:0016", "200000A:0016"),
            row.replace("0200000A:0016", "0200000A:16"),
            row.replace("0200000A:0016", "0200000A:00016"),
            row.replace("0200000A:0016", "0200000A"),
            row.replace("0200000A:0016", "+200000A:0016"),
            row.replace("00000000:0000 0A", "00000000:0000 0A0"),
            row.replace("00000000:0000 0A", "00000000:0000 0x"),
            row.replace("00000000:0000", "0000000:0000"),
            row.replace("0:", "x:"),
            row.replace("0:", "0"),
            "   0: 0200000A:0016\n".to_owned(),
            "\n".to_owned(),
        ] {
            assert!(parse_proc_net_tcp(&format!("{header}{bad}")).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn random_input_never_panics(s in "\\PC{0,300}") {
            let _ = parse_proc_net_tcp(&s);
        }

        #[test]
        fn random_rows_never_panic(rows in proptest::collection::vec("[0-9: A-Fa-f]{0,60}", 0..10)) {
            let _ = parse_proc_net_tcp(&format!("  sl  local_address\n{}", rows.join("\n")));
        }
    }
}
