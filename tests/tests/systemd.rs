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
        let n = restarting(|| sock.recv(&mut buf)).expect("no READY=1");
        assert_eq!(
            String::from_utf8_lossy(&buf[..n]),
            format!("READY=1\nMAINPID={}", plug.pid())
        );
        plug.signal(libc::SIGTERM);
        let n = restarting(|| sock.recv(&mut buf)).expect("no STOPPING=1");
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

/// Passes a listening socket as descriptor 3 with LISTEN_FDS=1, but LISTEN_PID
/// naming another process (as when a service started by socket activation starts
/// a child of its own): the socket is not plug's to serve.
const NOT_MINE: &str = r#"
import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
s.listen(16)
print(s.getsockname()[1], flush=True, file=sys.stderr)
fd = s.detach()
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.set_inheritable(3, True)
os.environ["LISTEN_PID"] = "1"
os.environ["LISTEN_FDS"] = "1"
os.execv(sys.argv[1], sys.argv[1:])
"#;

#[test]
fn listen_pid_naming_another_process_is_ignored_opt_7() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let launch = Launch {
            env: vec![],
            via: Some(("python3".into(), vec!["-c".into(), NOT_MINE.into()])),
        };
        let plug = Plug::start_with(bin, &launch, &["{port}", &backend.dest()]);
        // plug bound its own port and serves it.
        let listening = format!("listening on 0.0.0.0:{}", plug.port);
        let all = plug.stderr.all();
        assert!(all.iter().any(|l| l.ends_with(&listening)), "{all:?}");
        assert_eq!(exchange(connect(plug.addr()), b"own".to_vec()), b"own");
        // The passed socket was closed with the other inherited descriptors
        // (PROC-7): nobody accepts on it.
        let passed: u16 = all[0].trim().parse().expect("the wrapper's port line");
        let addr = SocketAddr::from(([127, 0, 0, 1], passed));
        assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
    });
}
