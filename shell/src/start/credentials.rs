//! `--proxy-auth-file` (OPT-5), read at start-up and again on SIGHUP (PROC-8).

use plug_core::connection::connect::ProxyCredentials;

/// The most `--proxy-auth-file` may hold (FAULT-7).
const MAX_CREDENTIALS_FILE: u64 = 64 * 1024;

/// Reads `--proxy-auth-file` (OPT-5): at start-up, and again on SIGHUP (PROC-8).
/// Bounded and never blocking (FAULT-7): the file is opened non-blocking and
/// must be a regular file, so a FIFO or a device there is an error, not a hang,
/// and at most 64 KiB is read.
pub(crate) fn read_credentials(path: &std::path::Path) -> Result<ProxyCredentials, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |why: String| format!("cannot read proxy credentials {}: {why}", path.display());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| fail(e.to_string()))?;
    let meta = file.metadata().map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() {
        return Err(fail("not a regular file".into()));
    }
    let mut contents = Vec::new();
    file.take(MAX_CREDENTIALS_FILE + 1)
        .read_to_end(&mut contents)
        .map_err(|e| fail(e.to_string()))?;
    if contents.len() as u64 > MAX_CREDENTIALS_FILE {
        return Err(fail("larger than 64 KiB".into()));
    }
    ProxyCredentials::from_file_contents(&contents).map_err(|e| format!("{}: {e}", path.display()))
}
