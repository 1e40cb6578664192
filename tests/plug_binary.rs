//! The root package's own check of the `plug` binary; the conformance suite
//! (plug-tests) covers its behaviour in full.

use std::process::Command;

#[test]
fn plug_prints_its_version_cli_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_plug"))
        .arg("-V")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("plug: plug "), "{text}");
}

/// The manual page describes every option `--help` lists, and renders cleanly.
#[test]
fn manual_page_covers_every_option_and_renders() {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/plug.1")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_plug"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    let roff = page.replace("\\-", "-");
    let mut options: Vec<&str> = help
        .split(|c: char| c.is_whitespace() || c == '[' || c == ']')
        .filter(|w| {
            w.starts_with('-')
                && w.len() > 1
                && w.chars()
                    .nth(1)
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '-')
        })
        .collect();
    options.sort_unstable();
    options.dedup();
    assert!(
        options.len() > 20,
        "too few options found in --help: {options:?}"
    );
    for option in options {
        // Clusters such as -nklfod name several flags; check each letter.
        if !option.starts_with("--") && option.len() > 2 {
            for c in option[1..].chars().filter(char::is_ascii_alphabetic) {
                assert!(
                    roff.contains(&format!("-{c}")),
                    "plug.1 does not mention -{c}"
                );
            }
            continue;
        }
        assert!(roff.contains(option), "plug.1 does not mention {option}");
    }
    assert!(page.is_ascii(), "plug.1 must be plain ASCII roff");
    let render = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z", "plug.1"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    let render = render.expect("groff is needed to check plug.1: apt-get install groff-base");
    assert!(
        render.status.success() && render.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&render.stderr)
    );
}
