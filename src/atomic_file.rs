//! Files other programs read while weftd may rewrite them (subnet.env, the docker options
//! file): written through a temporary file and a rename, never seen half-written.

use std::io::Write;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// A file could not be written.
#[derive(Debug, Error)]
#[error("cannot write {path}: {source}")]
pub struct AtomicWriteError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Writes `content` to `path` through a temporary file and a rename, so readers never see half
/// of it, with mode 0644. Returns whether the content changed (an identical file is left alone).
///
/// # Errors
/// The directory, the temporary file or the rename failed.
pub fn write_if_changed(path: &Path, content: &str) -> Result<bool, AtomicWriteError> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == content) {
        return Ok(false);
    }
    let error = |source| AtomicWriteError { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(error)?;
    }
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = PathBuf::from(temp);
    let mut file = std::fs::File::create(&temp).map_err(error)?;
    file.write_all(content.as_bytes()).map_err(error)?;
    file.sync_all().map_err(error)?;
    std::fs::set_permissions(&temp, std::os::unix::fs::PermissionsExt::from_mode(0o644)).map_err(error)?;
    std::fs::rename(&temp, path).map_err(error)?;
    Ok(true)
}
