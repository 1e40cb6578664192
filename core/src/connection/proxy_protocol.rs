//! The PROXY protocol header (`--proxy-protocol v1|v2`, OPT-4): sent to the
//! destination before any client byte so it sees the real client.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;

use crate::config::addr::canonical_ip;
use crate::config::cli::ProxyProtocol;

/// The 12-byte signature that starts every v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Returns the header announcing a connection from `client` to plug's listening
/// address `local` (the address the client connected to). Addresses are
/// canonical (an IPv4 client on a dual-stack listener is TCP4); if the two are of
/// different families the header says UNKNOWN (v1) or UNSPEC (v2).
pub fn header(version: ProxyProtocol, client: SocketAddr, local: SocketAddr) -> Bytes {
    let (src, dst) = (canonical_ip(client.ip()), canonical_ip(local.ip()));
    match version {
        ProxyProtocol::V1 => Bytes::from(match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                format!("PROXY TCP4 {s} {d} {} {}\r\n", client.port(), local.port())
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                format!("PROXY TCP6 {s} {d} {} {}\r\n", client.port(), local.port())
            }
            _ => "PROXY UNKNOWN\r\n".to_string(),
        }),
        ProxyProtocol::V2 => {
            let mut out = V2_SIGNATURE.to_vec();
            // Version 2, command PROXY.
            out.push(0x21);
            let ports = [client.port().to_be_bytes(), local.port().to_be_bytes()].concat();
            match (src, dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    out.push(0x11); // AF_INET, STREAM
                    out.extend_from_slice(&12u16.to_be_bytes());
                    out.extend_from_slice(&s.octets());
                    out.extend_from_slice(&d.octets());
                    out.extend_from_slice(&ports);
                }
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    out.push(0x21); // AF_INET6, STREAM
                    out.extend_from_slice(&36u16.to_be_bytes());
                    out.extend_from_slice(&s.octets());
                    out.extend_from_slice(&d.octets());
                    out.extend_from_slice(&ports);
                }
                _ => {
                    out.push(0x00); // AF_UNSPEC: the receiver uses the real addresses
                    out.extend_from_slice(&0u16.to_be_bytes());
                }
            }
            Bytes::from(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_text_opt_4() {
        let h = header(ProxyProtocol::V1, sa("192.0.2.7:51000"), sa("10.0.0.1:80"));
        assert_eq!(&h[..], b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 80\r\n");
        let h = header(
            ProxyProtocol::V1,
            sa("[2001:db8::7]:51000"),
            sa("[::1]:8080"),
        );
        assert_eq!(&h[..], b"PROXY TCP6 2001:db8::7 ::1 51000 8080\r\n");
        // An IPv4 client on a dual-stack listener is TCP4.
        let h = header(
            ProxyProtocol::V1,
            sa("[::ffff:192.0.2.7]:1"),
            sa("[::ffff:10.0.0.1]:2"),
        );
        assert_eq!(&h[..], b"PROXY TCP4 192.0.2.7 10.0.0.1 1 2\r\n");
        let h = header(ProxyProtocol::V1, sa("192.0.2.7:1"), sa("[::1]:2"));
        assert_eq!(&h[..], b"PROXY UNKNOWN\r\n");
    }

    #[test]
    fn v2_binary_opt_4() {
        let h = header(ProxyProtocol::V2, sa("192.0.2.7:51000"), sa("10.0.0.1:80"));
        let mut want = V2_SIGNATURE.to_vec();
        want.extend_from_slice(&[
            0x21, 0x11, 0, 12, 192, 0, 2, 7, 10, 0, 0, 1, 0xC7, 0x38, 0, 80,
        ]);
        assert_eq!(&h[..], &want[..]);
        let h = header(ProxyProtocol::V2, sa("[2001:db8::7]:1"), sa("[::1]:2"));
        assert_eq!(h.len(), 16 + 36);
        assert_eq!(&h[12..16], &[0x21, 0x21, 0, 36]);
        assert_eq!(&h[48..52], &[0, 1, 0, 2]);
    }
}
