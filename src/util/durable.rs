//! Whole files that survive a crash at any instant, for the pairing store
//! and the client's device state: the bytes go to a temp file beside the
//! file (mode 0600, fsynced), which is then renamed or linked into place,
//! and the directory is fsynced. Never leaves a partly written file under
//! the real name; the caller chooses the temp file's name.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of every file written here: owner only.
pub const FILE_MODE: u32 = 0o600;

/// The directory holding `path` (`.` for a bare file name).
pub fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Writes `bytes` to `temp`, mode [`FILE_MODE`] (a leftover's too), and
/// fsyncs it.
pub fn write_temp(temp: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(FILE_MODE).open(temp)?;
    // `mode` applies only when the file is created; a leftover may be wider.
    file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Makes a rename or link in the directory holding `path` durable.
pub fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(dir_of(path))?.sync_all()
}

/// Replaces `path` with `bytes` through `temp`, durably: when this returns
/// `Ok` the new content survives a crash or power loss; when it returns
/// `Err` the file is the old one, unless only the last step (the
/// directory's fsync) failed, in which case either may survive a crash.
pub fn replace(path: &Path, temp: &Path, bytes: &[u8]) -> io::Result<()> {
    let renamed = write_temp(temp, bytes).and_then(|()| fs::rename(temp, path));
    if renamed.is_err() {
        // Best effort: callers also clear their leftovers when they open.
        let _ = fs::remove_file(temp);
    }
    renamed?;
    sync_dir(path)
}
