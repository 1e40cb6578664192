//! SPEC §6 OPT-7: systemd readiness notification and socket activation.

use plug_tests::*;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

#[test]
fn ready_and_stopping_are_notified_opt_7() {
    each_binary(|bin| {
        let dir = TempDir::new("notify");
        let path = dir.path("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(DEADLINE)).unwrap();
        let launch = Launch {
            env: vec![("NOTIFY_SOCKET".into(), path.to_string_lossy().into_owned())],
            via: None,
        };
        let mut plug = Plug::start_with(bin, &launch, &["{port}", "127.0.0.1:9"]);
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf).expect("no READY=1");
        assert_eq!(
            String::from_utf8_lossy(&buf[..n]),
            format!("READY=1\nMAINPID={}", plug.pid())
        );
        plug.signal(libc::SIGTERM);
        let n = sock.recv(&mut buf).expect("no STOPPING=1");
        assert_eq!(&buf[..n], b"STOPPING=1");
        assert_eq!(plug.wait_exit().code(), Some(0));
    });
}

#[test]
fn socket_activation_serves_the_passed_socket_opt_7() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let activated = free_port();
        let launch = socket_activation(activated, false);
        let plug = Plug::start_with(bin, &launch, &["-l", "{port}", &backend.dest()]);
        let listening = format!("listening on 127.0.0.1:{activated}");
        assert!(
            plug.stderr.all().iter().any(|l| l.ends_with(&listening)),
            "{:?}",
            plug.stderr.all()
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], activated));
        assert_eq!(exchange(connect(addr), b"activated".to_vec()), b"activated");
        // Nothing was bound on the source port, which still names the listener.
        assert!(TcpStream::connect_timeout(&plug.addr(), Duration::from_secs(1)).is_err());
        assert!(TcpListener::bind(plug.addr()).is_ok());
        let complete = format!("({}): Complete.", plug.port);
        plug.stderr.expect(|l| l.ends_with(&complete));
    });
}
