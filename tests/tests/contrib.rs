//! contrib/: the systemd units, the logrotate snippet and the fail2ban filter
//! work as shipped: systemd-analyze accepts the units, plug runs the way the
//! socket-activated unit starts it, logrotate rotates a live session file, and
//! fail2ban's own matcher finds the refused clients in plug's real syslog lines.

use plug_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn contrib(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../contrib")
        .join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(contrib(rel)).unwrap()
}

/// The value of `key=` in a unit file (the last one, as systemd takes it).
fn setting(unit: &str, key: &str) -> Option<String> {
    unit.lines()
        .rev()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
}

const UNITS: &[&str] = &[
    "plug.service",
    "plug-forking.service",
    "plug-notify.service",
    "plug-activated.socket",
    "plug-activated.service",
    "plug-config.service",
];

#[test]
fn the_example_config_file_passes_check_opt_13_opt_14() {
    each_binary(|bin| {
        let conf = contrib("config/plug.conf");
        let said = succeeded(Command::new(&bin.path).args([
            "--check",
            "--config",
            conf.to_str().unwrap(),
        ]));
        assert_eq!(
            said.trim_end(),
            format!("{}: configuration OK (3 listeners)", bin.name)
        );
    });
    // The unit checks the file before it starts plug and before each reload.
    let unit = read("systemd/plug-config.service");
    assert!(unit.contains("ExecReload=/usr/local/bin/plug --check --config /etc/plug/plug.conf"));
}

#[test]
fn the_units_pass_systemd_analyze_verify() {
    let Some(analyze) = optional_program("systemd-analyze", "systemd") else {
        return;
    };
    let plug = &binaries()[1];
    let dir = TempDir::new("units");
    let mut paths = vec![];
    for unit in UNITS {
        let text = read(&format!("systemd/{unit}"));
        // Where the binary is on this machine; everything else as shipped.
        let text = text.replace("/usr/local/bin/plug", &plug.path.to_string_lossy());
        let path = dir.path(unit);
        std::fs::write(&path, text).unwrap();
        paths.push(path);
    }
    let out = Command::new(analyze)
        .args(["verify", "--man=no"])
        .args(&paths)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| UNITS.iter().any(|u| l.contains(u)))
        .collect();
    assert!(ours.is_empty(), "systemd-analyze: {ours:?}");
    for unit in UNITS.iter().filter(|u| u.ends_with(".service")) {
        let text = read(&format!("systemd/{unit}"));
        // A usage error cannot be fixed by restarting; readiness is real.
        assert_eq!(
            setting(&text, "RestartPreventExitStatus").as_deref(),
            Some("5"),
            "{unit}"
        );
        assert_eq!(
            setting(&text, "Wants").as_deref(),
            Some("network-online.target"),
            "{unit}"
        );
        for hardening in [
            "NoNewPrivileges",
            "ProtectSystem",
            "PrivateTmp",
            "ProtectHome",
        ] {
            assert!(
                setting(&text, hardening).is_some(),
                "{unit} lacks {hardening}"
            );
        }
    }
}

#[test]
fn plug_runs_as_the_socket_activated_unit_starts_it_opt_7() {
    let service = read("systemd/plug-activated.service");
    assert_eq!(setting(&service, "DynamicUser").as_deref(), Some("yes"));
    assert_eq!(
        setting(&service, "CapabilityBoundingSet").as_deref(),
        Some("")
    );
    assert_eq!(setting(&service, "Type").as_deref(), Some("notify"));
    let nonblocking = setting(&service, "NonBlocking").as_deref() == Some("yes");
    let exec = setting(&service, "ExecStart").unwrap();
    let words: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(words[0], "/usr/local/bin/plug");
    // As root, plug then runs as an unprivileged account, as DynamicUser makes.
    let uid = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .contains("\nUid:\t0\t")
        .then_some(65534);
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        // The unit's own arguments, with this test's backend as every destination.
        let args: Vec<String> = words[1..]
            .iter()
            .map(|w| match w.contains(':') && !w.starts_with('-') {
                true => backend.dest(),
                false => w.to_string(),
            })
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let port = free_port();
        let launch = socket_activation_as(port, nonblocking, uid);
        // The unprivileged account must be able to reach the binary.
        let (_dir, copy) = reachable_copy(bin);
        let bin = &copy;
        let plug = Plug::start_quiet_with(bin, &launch, &args);
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!(exchange(connect(addr), b"activated".to_vec()), b"activated");
        if uid.is_some() {
            let ids = proc_status(plug.pid(), "Uid");
            assert_eq!(ids.as_deref(), Some("65534\t65534\t65534\t65534"));
        }
        assert_eq!(
            proc_status(plug.pid(), "CapEff").as_deref(),
            Some("0000000000000000"),
            "no capabilities"
        );
    });
}

#[test]
fn logrotate_rotates_a_live_session_file() {
    let Some(logrotate) = optional_program("logrotate", "logrotate") else {
        return;
    };
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let dir = TempDir::new("rotate");
        let file = dir.path("sessions.log");
        let conf = dir.path("logrotate.conf");
        let text =
            read("logrotate/plug").replace("/var/log/plug/sessions.log", file.to_str().unwrap());
        std::fs::write(&conf, text).unwrap();
        let plug = Plug::start(
            bin,
            &["-S", file.to_str().unwrap(), "{port}", &backend.dest()],
        );
        let lines = |p: &Path| std::fs::read_to_string(p).map_or(0, |t| t.lines().count());
        assert_eq!(
            exchange(connect(plug.addr()), b"before".to_vec()),
            b"before"
        );
        assert!(eventually(|| lines(&file) == 1));
        succeeded(
            Command::new(&logrotate)
                .arg("-f")
                .arg("-s")
                .arg(dir.path("state"))
                .arg(&conf),
        );
        let rotated = dir.path("sessions.log.1");
        assert_eq!(lines(&rotated), 1);
        assert!(!file.exists(), "nocreate: plug makes the new file");
        // No signal: the next line re-creates the file.
        assert_eq!(exchange(connect(plug.addr()), b"after".to_vec()), b"after");
        assert!(eventually(|| lines(&file) == 1));
        assert_eq!(lines(&rotated), 1);
    });
}

#[test]
fn fail2ban_finds_refused_clients_in_real_syslog_lines() {
    if !private_dev("reading plug's syslog lines") {
        return;
    }
    let Some(regex) = optional_program("fail2ban-regex", "fail2ban") else {
        return;
    };
    let filters = TempDir::new("f2b");
    std::fs::create_dir(filters.path("filter.d")).unwrap();
    let common = Path::new("/etc/fail2ban/filter.d/common.conf");
    std::fs::copy(common, filters.path("filter.d/common.conf")).unwrap();
    let filter = filters.path("filter.d/plug.conf");
    std::fs::copy(contrib("fail2ban/filter.d/plug.conf"), &filter).unwrap();
    each_binary(|bin| {
        let backend = Backend::start(Behaviour::Echo);
        let dev = TempDir::new("dev");
        let mut syslog = SyslogReceiver::bind(&dev);
        let plug = Plug::start_quiet_with(
            bin,
            &private_dev_launch(&dev.0),
            &[
                "-n",
                "-l",
                "-a",
                "127.0.0.1",
                "--max-conns-per-ip",
                "1",
                "{port}",
                &backend.dest(),
            ],
        );
        let held = connect(plug.addr());
        for _ in 0..3 {
            let mut s = connect_from("127.0.0.2", plug.addr());
            assert!(closed_without_data(&mut s));
        }
        for _ in 0..2 {
            let mut s = connect(plug.addr());
            assert!(closed_without_data(&mut s));
        }
        drop(held);
        let complete = format!("({}): Complete.", plug.port);
        syslog.expect(|d| d.ends_with(&complete));
        let refusals = syslog.seen.iter().filter(|d| d.contains("efused")).count();
        assert_eq!(refusals, 5, "{:?}", syslog.seen);
        // As rsyslog writes them: the datagram's time stamp, a host name, the rest.
        let file: String = syslog
            .seen
            .iter()
            .map(|d| {
                let line = d.split_once('>').unwrap().1;
                let (stamp, rest) = line.split_at(15);
                format!("{stamp} testhost{rest}\n")
            })
            .collect();
        let log = dev.path("syslog.txt");
        std::fs::write(&log, &file).unwrap();
        let text = succeeded(
            Command::new(&regex)
                .arg("--print-all-matched")
                .arg(&log)
                .arg(&filter),
        );
        let total = syslog.seen.len();
        let want = format!(
            "Lines: {total} lines, 0 ignored, 5 matched, {} missed",
            total - 5
        );
        assert!(text.contains(&want), "want {want:?}:\n{file}\n{text}");
    });
}

#[test]
fn the_units_run_plug_where_the_readme_installs_it() {
    // Following the README must give a plug the shipped units can start.
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"),
    )
    .unwrap();
    let install = readme
        .lines()
        .find(|l| l.starts_with("cargo install --locked --path . "))
        .expect("the README's install command");
    let words: Vec<&str> = install.split_whitespace().collect();
    let root = words
        .iter()
        .position(|w| *w == "--root")
        .and_then(|i| words.get(i + 1))
        .expect("the install command names its --root");
    let installed = format!("{root}/bin/plug");
    for unit in UNITS.iter().filter(|u| u.ends_with(".service")) {
        let text = read(&format!("systemd/{unit}"));
        let exec = setting(&text, "ExecStart").unwrap();
        assert_eq!(
            exec.split_whitespace().next(),
            Some(installed.as_str()),
            "{unit} runs plug where the README does not install it"
        );
    }
}
