//! `--proxy-auth-file` (OPT-5), read at start-up and again on SIGHUP (PROC-8).

use plug_core::connection::connect::ProxyCredentials;

use crate::start::config_file::read_regular_file;

/// The most `--proxy-auth-file` may hold (FAULT-7).
const MAX_CREDENTIALS_FILE: u64 = 64 * 1024;

/// Reads `--proxy-auth-file` (OPT-5): at start-up, and again on SIGHUP (PROC-8).
/// Bounded and never blocking (FAULT-7): the file is opened non-blocking and
/// must be a regular file, so a FIFO or a device there is an error, not a hang,
/// and at most 64 KiB is read.
pub(crate) fn read_credentials(path: &std::path::Path) -> Result<ProxyCredentials, String> {
    let contents = read_regular_file(path, MAX_CREDENTIALS_FILE)
        .map_err(|why| format!("cannot read proxy credentials {}: {why}", path.display()))?;
    ProxyCredentials::from_file_contents(&contents).map_err(|e| format!("{}: {e}", path.display()))
}
