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
