//! SPEC §6 OPT-4: the PROXY protocol header, read back by the suite's own parser.

use plug_tests::*;
use std::net::{IpAddr, SocketAddr};

/// Parses a v1 or v2 header at the start of `bytes`: (source, destination, rest).
fn parse_header(bytes: &[u8]) -> (SocketAddr, SocketAddr, Vec<u8>) {
    const SIG: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
    if let Some(body) = bytes.strip_prefix(SIG) {
        assert_eq!(body[0], 0x21, "version 2, PROXY");
        let len = u16::from_be_bytes([body[2], body[3]]) as usize;
        let a = &body[4..4 + len];
        let (src, dst, ports): (IpAddr, IpAddr, &[u8]) = match body[1] {
            0x11 => (
                <[u8; 4]>::try_from(&a[0..4]).unwrap().into(),
                <[u8; 4]>::try_from(&a[4..8]).unwrap().into(),
                &a[8..12],
            ),
            0x21 => (
                <[u8; 16]>::try_from(&a[0..16]).unwrap().into(),
                <[u8; 16]>::try_from(&a[16..32]).unwrap().into(),
                &a[32..36],
            ),
            other => panic!("family {other:#x}"),
        };
        let sp = u16::from_be_bytes([ports[0], ports[1]]);
        let dp = u16::from_be_bytes([ports[2], ports[3]]);
        return (
            SocketAddr::new(src, sp),
            SocketAddr::new(dst, dp),
            body[4 + len..].to_vec(),
        );
    }
    let end = bytes
        .windows(2)
        .position(|w| w == b"\r\n")
        .expect("v1 line end");
    let line = std::str::from_utf8(&bytes[..end]).unwrap();
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!(f[0], "PROXY", "{line}");
    assert!(f[1] == "TCP4" || f[1] == "TCP6", "{line}");
    let src = SocketAddr::new(f[2].parse().unwrap(), f[4].parse().unwrap());
    let dst = SocketAddr::new(f[3].parse().unwrap(), f[5].parse().unwrap());
    (src, dst, bytes[end + 2..].to_vec())
}

#[test]
fn the_header_names_the_real_client_before_any_byte_opt_4() {
    each_binary(|bin| {
        for version in ["v1", "v2"] {
            let backend = Backend::start(Behaviour::ReplyAfterEof(b"ok".to_vec()));
            let dir = TempDir::new("pp");
            let file = dir.path("s");
            let plug = Plug::start(
                bin,
                &[
                    "--proxy-protocol",
                    version,
                    "-S",
                    file.to_str().unwrap(),
                    "{port}",
                    &backend.dest(),
                ],
            );
            let s = connect_from("127.0.0.2", plug.addr());
            let client = s.local_addr().unwrap();
            assert_eq!(exchange(s, b"hello".to_vec()), b"ok");
            assert!(eventually(|| backend.received().len() == 1));
            let (src, dst, rest) = parse_header(&backend.received()[0]);
            assert_eq!(src, client, "{version}");
            assert_eq!(dst, plug.addr(), "{version}");
            assert_eq!(rest, b"hello", "{version}");
            if version == "v1" {
                let want = format!(
                    "PROXY TCP4 127.0.0.2 127.0.0.1 {} {}\r\nhello",
                    client.port(),
                    plug.port
                );
                assert_eq!(backend.received()[0], want.as_bytes());
            }
            assert!(eventually(
                || std::fs::read_to_string(&file).is_ok_and(|t| !t.is_empty())
            ));
            let line = std::fs::read_to_string(&file).unwrap();
            let f: Vec<&str> = line.trim_end().split(' ').collect();
            assert_eq!(f[6..8], ["5", "2"], "IN excludes the header: {line}");
        }
    });
}

#[test]
fn ipv6_clients_get_tcp6_headers_opt_4() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::ReplyAfterEof(b"ok".to_vec()));
        let plug = Plug::start(
            bin,
            &[
                "--proxy-protocol",
                "v1",
                "-i",
                "::",
                "{port}",
                &backend.dest(),
            ],
        );
        let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, plug.port));
        let s = connect(v6);
        let client = s.local_addr().unwrap();
        assert_eq!(exchange(s, b"six".to_vec()), b"ok");
        assert!(eventually(|| backend.received().len() == 1));
        let want = format!("PROXY TCP6 ::1 ::1 {} {}\r\nsix", client.port(), plug.port);
        assert_eq!(String::from_utf8_lossy(&backend.received()[0]), want);
    });
}

struct Nginx {
    child: std::process::Child,
    port: u16,
    _dir: TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real PROXY protocol peer: nginx accepting the header and answering with
/// the client address it read from it; `None` (said loudly) when not installed.
fn nginx() -> Option<Nginx> {
    let program = optional_program("nginx", "nginx-light")?;
    let dir = TempDir::new("nginx");
    let port = free_port();
    let d = dir.0.display();
    let conf = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log stderr;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           server {{\n    listen 127.0.0.1:{port} proxy_protocol;\n\
             location / {{ return 200 \"$proxy_protocol_addr $proxy_protocol_port\\n\"; }}\n  }}\n}}\n"
    );
    let path = dir.path("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let child = std::process::Command::new(program)
        .args(["-e", "stderr", "-p"])
        .arg(&dir.0)
        .arg("-c")
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run nginx");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        eventually(|| std::net::TcpStream::connect_timeout(
            &addr,
            std::time::Duration::from_millis(200)
        )
        .is_ok()),
        "nginx did not start listening"
    );
    Some(Nginx {
        child,
        port,
        _dir: dir,
    })
}

#[test]
fn a_real_peer_reads_the_header_opt_4() {
    let Some(nginx) = nginx() else { return };
    each_binary(|bin| {
        for version in ["v1", "v2"] {
            let dest = format!("127.0.0.1:{}", nginx.port);
            let plug = Plug::start(bin, &["--proxy-protocol", version, "{port}", &dest]);
            let s = connect_from("127.0.0.2", plug.addr());
            let client = s.local_addr().unwrap();
            let reply = exchange(s, b"GET / HTTP/1.0\r\nHost: test\r\n\r\n".to_vec());
            let reply = String::from_utf8_lossy(&reply);
            assert!(reply.starts_with("HTTP/1.1 200"), "{version}: {reply}");
            let want = format!("\r\n\r\n127.0.0.2 {}\n", client.port());
            assert!(reply.ends_with(&want), "{version}: nginx saw {reply:?}");
        }
    });
}
