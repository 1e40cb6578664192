//! plug-smol's own check of its binary; the conformance suite (plug-tests) covers
//! its behaviour in full. Building this test makes `cargo test` build the binary.

use std::process::Command;

#[test]
fn plug_smol_prints_its_version_cli_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_plug-smol"))
        .arg("-V")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("plug-smol: plug "), "{text}");
}
