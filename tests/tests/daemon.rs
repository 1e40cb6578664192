//! SPEC §2 PROC-6..9: a daemon that is safe to run as root: files never opened
//! through links, a locked pid file, no inherited descriptors, `/` as working
//! directory, SIGHUP and SIGPIPE never fatal, `--user`.

use plug_tests::*;
use std::io::{Read, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;

/// Runs `bin` with `args` ({port}: a free port), bounded by the deadline.
fn run(bin: &Binary, args: &[&str]) -> (u16, std::process::Output) {
    run_on_free_port(bin, args)
}

#[test]
fn pid_and_session_files_are_never_opened_through_a_link_proc_6() {
    each_binary(|bin| {
        let dir = TempDir::new("links");
        let victim = dir.path("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let dangling = dir.path("nowhere");
        for target in [&victim, &dangling] {
            let link = dir.path("link");
            let _ = std::fs::remove_file(&link);
            symlink(target, &link).unwrap();
            let link = link.to_str().unwrap();
            for args in [
                &["-P", link, "-i", "127.0.0.1", "{port}", "127.0.0.1:9"][..],
                &["-n", "-P", link, "-i", "127.0.0.1", "{port}", "127.0.0.1:9"],
                &["-n", "-S", link, "-i", "127.0.0.1", "{port}", "127.0.0.1:9"],
            ] {
                let (_, out) = run(bin, args);
                let err = String::from_utf8_lossy(&out.stderr);
                assert_eq!(out.status.code(), Some(4), "{args:?}: {err}");
                assert!(
                    err.starts_with(&format!("{}: ", bin.name))
                        && err.contains(link)
                        && err.contains("symbolic link"),
                    "{args:?}: {err}"
                );
            }
        }
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        assert!(!dangling.exists(), "created through a dangling link");
    });
}

#[test]
fn a_session_file_replaced_by_a_link_is_not_written_through_proc_6_fault_4() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let dir = TempDir::new("relink");
        let file = dir.path("sessions");
        let victim = dir.path("victim");
        std::fs::write(&victim, "").unwrap();
        let plug = Plug::start(
            bin,
            &["-S", file.to_str().unwrap(), "{port}", &backend.dest()],
        );
        assert_eq!(exchange(connect(plug.addr()), b"a".to_vec()), b"a");
        assert!(eventually(
            || std::fs::read_to_string(&file).is_ok_and(|t| t.lines().count() == 1)
        ));
        std::fs::remove_file(&file).unwrap();
        symlink(&victim, &file).unwrap();
        for _ in 0..25 {
            assert_eq!(exchange(connect(plug.addr()), b"b".to_vec()), b"b");
        }
        // Every failure is told, ten a second at most, and the rest counted.
        let told = |l: &str| l.contains("cannot write session line") && l.contains("symbolic link");
        let suppressed = plug
            .stderr
            .expect(|l| l.ends_with("similar messages suppressed"));
        let lines = plug.stderr.all();
        let n: usize = suppressed.split(' ').nth(1).unwrap().parse().unwrap();
        let shown = lines.iter().filter(|l| told(l)).count();
        assert!((1..=20).contains(&shown), "{lines:?}");
        assert!(n + shown <= 25 && n >= 5, "{lines:?}");
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "",
            "written through"
        );
    });
}

#[test]
fn the_pid_file_is_0644_locked_and_a_second_plug_is_told_proc_6() {
    each_binary(|bin| {
        let dir = TempDir::new("lock");
        let pidfile = dir.path("plug.pid");
        let pid_arg = pidfile.to_str().unwrap();
        // A stale file (no plug holds its lock) is replaced, whatever it says.
        std::fs::write(&pidfile, "99999\nleft over\n").unwrap();
        std::fs::set_permissions(&pidfile, std::fs::Permissions::from_mode(0o600)).unwrap();
        let umask0 = "umask 0 && exec \"$0\" \"$@\"".to_string();
        let launch = Launch {
            env: vec![],
            via: Some(("/bin/sh".into(), vec!["-c".into(), umask0])),
        };
        let first = Plug::start_with(bin, &launch, &["-P", pid_arg, "{port}", "127.0.0.1:9"]);
        assert_eq!(
            std::fs::read_to_string(&pidfile).unwrap(),
            format!("{}\n", first.pid())
        );
        let mode = std::fs::metadata(&pidfile).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o644,
            "umask 0 and an old 0600 file: {mode:o}"
        );
        // A second plug on the same pid file, even on the same port, is told the
        // first is running, and exits 4 leaving the file alone.
        for port in [first.port.to_string(), "{port}".to_string()] {
            let (_, out) = run(bin, &["-P", pid_arg, &port, "127.0.0.1:9"]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(4), "{err}");
            assert!(
                err.contains(&format!("already running as PID {}", first.pid())),
                "{err}"
            );
        }
        assert_eq!(read_pid(&pidfile), first.pid());
    });
}

#[test]
fn a_draining_plug_leaves_its_successors_pid_file_alone_proc_6_proc_4() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let dir = TempDir::new("succession");
        let pidfile = dir.path("plug.pid");
        let pid_arg = pidfile.to_str().unwrap();
        let mut old = Plug::start(bin, &["-P", pid_arg, "{port}", &backend.dest()]);
        let mut open = connect(old.addr());
        open.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        open.read_exact(&mut b).unwrap();
        old.signal(libc::SIGTERM);
        old.stderr.expect(|l| l.contains("stopping"));
        assert!(eventually(|| !pidfile.exists()));
        assert!(eventually(|| std::net::TcpListener::bind((
            "0.0.0.0", old.port
        ))
        .is_ok()));
        // The successor takes the port and the pid file while the old one drains.
        let port = old.port.to_string();
        let words = [
            "-d".to_string(),
            "-P".into(),
            pid_arg.into(),
            port,
            backend.dest(),
        ];
        let new = Plug::spawn(bin, &words, old.port);
        new.stderr.expect(|l| l.contains("listening on"));
        assert_eq!(read_pid(&pidfile), new.pid());
        drop(open);
        assert_eq!(old.wait_exit().code(), Some(0));
        assert_eq!(
            read_pid(&pidfile),
            new.pid(),
            "the old plug removed its successor's file"
        );
        // A file that no longer holds plug's PID is not plug's to remove.
        std::fs::write(&pidfile, "1\n").unwrap();
        new.signal(libc::SIGTERM);
        assert!(eventually(|| !process_alive(new.pid())));
        assert_eq!(std::fs::read_to_string(&pidfile).unwrap(), "1\n");
    });
}

#[test]
fn inherited_descriptors_are_closed_so_the_caller_does_not_hang_proc_7() {
    each_binary(|bin| {
        let dir = TempDir::new("inherit");
        let pidfile = dir.path("plug.pid");
        // `x=$(plug ...)` with the pipe also on descriptor 7: the caller reads
        // until every holder of the pipe's write end is gone.
        let script = "exec 7>&1 8</dev/null && exec \"$0\" \"$@\"";
        let port = free_port().to_string();
        let mut child = Command::new("/bin/sh")
            .args(["-c", script])
            .arg(&bin.path)
            .args([
                "-P",
                pidfile.to_str().unwrap(),
                "-i",
                "127.0.0.1",
                &port,
                "127.0.0.1:9",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let pipe = {
            use std::os::fd::AsRawFd;
            std::fs::read_link(format!("/proc/self/fd/{}", stdout.as_raw_fd())).unwrap()
        };
        let (done, read) = mpsc::channel();
        thread::spawn(move || {
            let mut all = vec![];
            let _ = stdout.read_to_end(&mut all);
            let _ = done.send(all);
        });
        let got = read.recv_timeout(DEADLINE);
        let status = child.wait().unwrap();
        let mut err = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut err);
        assert_eq!(status.code(), Some(0), "{err}");
        let pid = read_pid(&pidfile);
        let fds: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_str()?.parse().ok()?;
                Some((n, std::fs::read_link(e.path()).ok()?))
            })
            .collect();
        stop_daemon(pid);
        assert!(got.is_ok(), "the caller still waits for plug's output");
        assert!(
            !fds.iter().any(|(_, l)| *l == pipe),
            "the pipe is held: {fds:?}"
        );
        assert!(
            !fds.iter()
                .any(|(n, l)| *n > 2 && l == Path::new("/dev/null")),
            "descriptor 8 inherited: {fds:?}"
        );
    });
}

#[test]
fn a_detached_plug_works_from_root_with_relative_paths_proc_7() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let dir = TempDir::new("cwd");
        let port = free_port();
        let pid = start_detached(
            Command::new(&bin.path)
                .current_dir(&dir.0)
                .args(["-P", "plug.pid", "-S", "sessions", "-i", "127.0.0.1"])
                .arg(port.to_string())
                .arg(backend.dest()),
            &dir.path("plug.pid"),
        );
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
        assert_eq!(
            cwd,
            Path::new("/"),
            "a detached plug keeps no directory busy"
        );
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        assert_eq!(exchange(connect(addr), b"rel".to_vec()), b"rel");
        let sessions = dir.path("sessions");
        assert!(eventually(
            || std::fs::read_to_string(&sessions).is_ok_and(|t| t.lines().count() == 1)
        ));
        stop_daemon(pid);
        assert!(
            !dir.path("plug.pid").exists(),
            "removed by its absolute path"
        );
    });
}

#[test]
fn sighup_is_never_fatal_and_says_reloaded_proc_8() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let dir = TempDir::new("hup");
        let pidfile = dir.path("plug.pid");
        let mut plug = Plug::start(
            bin,
            &["-P", pidfile.to_str().unwrap(), "{port}", &backend.dest()],
        );
        let mut open = connect(plug.addr());
        open.write_all(b"1").unwrap();
        let mut b = [0u8; 1];
        open.read_exact(&mut b).unwrap();
        for n in 1..=3 {
            plug.signal(libc::SIGHUP);
            let said = ": reloaded: nothing to reload; destinations change only with --config";
            let seen = plug.stderr.wait_for_count(n, |l| l.ends_with(said));
            assert_eq!(seen.len(), n, "{:?}", plug.stderr.all());
        }
        assert!(plug.running(), "SIGHUP killed plug");
        assert_eq!(read_pid(&pidfile), plug.pid());
        // The open connection and new ones go on.
        open.write_all(b"2").unwrap();
        open.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"2");
        assert_eq!(exchange(connect(plug.addr()), b"new".to_vec()), b"new");
    });
}

#[test]
fn a_closed_session_pipe_does_not_kill_plug_proc_8() {
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        // -S - writes session lines to stdout: a pipe whose reader is gone.
        let (mut child, port) = (0..5)
            .find_map(|_| {
                let port = free_port();
                let mut child = Command::new(&bin.path)
                    .args([
                        "-d",
                        "-S",
                        "-",
                        "-i",
                        "127.0.0.1",
                        &port.to_string(),
                        &backend.dest(),
                    ])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                // Readiness is plug's own line, not just something on the port.
                let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
                let (tx, rx) = mpsc::channel();
                thread::spawn(move || {
                    use std::io::BufRead;
                    for line in stderr.lines().map_while(Result::ok) {
                        let _ = tx.send(line);
                    }
                });
                let deadline = std::time::Instant::now() + DEADLINE;
                while let Ok(line) = rx.recv_timeout(deadline - std::time::Instant::now()) {
                    if line.contains("listening on") {
                        return Some((child, port));
                    }
                }
                let _ = child.kill();
                let _ = child.wait();
                None
            })
            .expect("plug did not start");
        drop(child.stdout.take());
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        for k in 0..3 {
            let data = format!("after {k}").into_bytes();
            assert_eq!(exchange(connect(addr), data.clone()), data);
        }
        assert!(child.try_wait().unwrap().is_none(), "SIGPIPE killed plug");
        let _ = child.kill();
        let _ = child.wait();
    });
}

#[test]
fn user_drops_root_after_start_up_proc_9() {
    if !running_as_root("--user") {
        return;
    }
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let dir = TempDir::new("user");
        let pidfile = dir.path("plug.pid");
        let sessions = dir.path("sessions");
        let args = |port: &str| {
            vec![
                "--user".to_string(),
                "nobody:nogroup".into(),
                "-P".into(),
                pidfile.to_string_lossy().into_owned(),
                "-S".into(),
                sessions.to_string_lossy().into_owned(),
                "-i".into(),
                "127.0.0.1".into(),
                port.to_string(),
                backend.dest(),
            ]
        };
        // The session file must be writable by that user: here it cannot be
        // created, and the detached plug's parent says so.
        let words = args("{port}");
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let (_, out) = run(bin, &words);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{err}");
        assert!(
            err.contains("cannot open session file") && err.contains("denied"),
            "{err}"
        );
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let (port, out) = run(bin, &words);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pid = read_pid(&pidfile);
        let nobody = "65534\t65534\t65534\t65534";
        assert_eq!(proc_status(pid, "Uid").as_deref(), Some(nobody));
        assert_eq!(proc_status(pid, "Gid").as_deref(), Some(nobody));
        assert_eq!(proc_status(pid, "Groups").as_deref(), Some("65534"));
        assert_eq!(
            proc_status(pid, "CapEff").as_deref(),
            Some("0000000000000000")
        );
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        assert_eq!(exchange(connect(addr), b"low".to_vec()), b"low");
        assert!(eventually(
            || std::fs::read_to_string(&sessions).is_ok_and(|t| t.lines().count() == 1)
        ));
        let owner = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(&sessions).unwrap().uid()
        };
        assert_eq!(owner, 65534, "the session file is written as the user");
        stop_daemon(pid);
        // nobody may not remove root's file from a sticky directory: it stays,
        // unlocked, and the next plug takes it over.
        assert_eq!(read_pid(&pidfile), pid);
        let (_, out) = run(bin, &words);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stop_daemon(read_pid(&pidfile));
    });
}

#[test]
fn a_user_that_cannot_be_had_is_fatal_proc_9() {
    each_binary(|bin| {
        for (spec, why) in [
            ("no-such-user-plug", "no such user"),
            ("nobody:no-such-group-plug", "no such group"),
            ("root", "root"),
            ("0", "root"),
        ] {
            let (_, out) = run(bin, &["--user", spec, "-n", "{port}", "127.0.0.1:9"]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(4), "{spec}: {err}");
            assert!(
                err.starts_with(&format!("{}: --user {spec}", bin.name)),
                "{err}"
            );
            assert!(err.contains(why), "{spec}: {err}");
        }
        for spec in ["", "a:b:c", "a:", ":b", "a b"] {
            let (_, out) = run(bin, &["--user", spec, "{port}", "127.0.0.1:9"]);
            assert_eq!(out.status.code(), Some(5), "{spec:?} is a usage error");
        }
    });
}
