//! Reading the files plug is given (`--config`, OPT-13; `--proxy-auth-file`,
//! OPT-5): at start and again on SIGHUP, bounded and never blocking (FAULT-7).

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The most a `--config` file may hold.
const MAX_CONFIG_FILE: u64 = 1024 * 1024;

/// Reads at most `max` bytes of `path`, which must be a regular file: it is
/// opened non-blocking, so a FIFO or a device there is an error, not a hang.
/// The error says why, without the path.
pub(crate) fn read_regular_file(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mut contents = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut contents)
        .map_err(|e| e.to_string())?;
    if contents.len() as u64 > max {
        return Err(format!("larger than {} KiB", max / 1024));
    }
    Ok(contents)
}

/// Reads the `--config` file as text (an invalid byte becomes U+FFFD, which no
/// word accepts, so the line is reported).
pub(crate) fn read_config_file(path: &Path) -> Result<String, String> {
    read_regular_file(path, MAX_CONFIG_FILE)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .map_err(|why| format!("cannot read config file {}: {why}", path.display()))
}
