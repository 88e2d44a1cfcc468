//! The store's disk I/O: a bounded read of `pairing.json` at open, and the
//! durable replace of every change (temp file 0600 in the same directory,
//! fsync, rename over the file, fsync of the directory), so a crash or power
//! loss at any instant leaves the old file or the new one, never a torn
//! one. Knows nothing of the format; never writes the file in place.

use std::fs::{self, DirBuilder, File};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::MAX_FILE_BYTES;
use crate::util::durable;
pub(super) use crate::util::durable::dir_of;

/// The mode of a state directory the store creates.
const DIR_MODE: u32 = 0o700;

/// The temp file a write goes through: `pairing.json.tmp` beside the file,
/// so the rename never crosses a file system.
pub(super) fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Creates the directory (and its parents) with mode 0700 if missing.
pub(super) fn ensure_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Removes a temp file a crash left behind; it never holds the only copy of
/// anything (the rename, not the temp file, is the commit).
pub(super) fn remove_stale_temp(path: &Path) -> io::Result<()> {
    match fs::remove_file(temp_path(path)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// What `read` found.
#[derive(Debug)]
pub(super) enum Found {
    /// No file: an empty store.
    Missing,
    /// The file's bytes, and whether others may read it (mode wider than 0600).
    Bytes(Vec<u8>, bool),
}

/// Reads the whole file, refusing one that is not a regular file or is
/// larger than [`MAX_FILE_BYTES`] (without reading past the bound).
pub(super) fn read(path: &Path) -> io::Result<Found> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Missing),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("larger than {MAX_FILE_BYTES} bytes")));
    }
    Ok(Found::Bytes(bytes, meta.permissions().mode() & 0o077 != 0))
}

/// Replaces the file with `bytes`, durably ([`durable::replace`] through
/// [`temp_path`], which the next open clears if a crash left it).
pub(super) fn write_durable(path: &Path, bytes: &[u8]) -> io::Result<()> {
    durable::replace(path, &temp_path(path), bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::durable::FILE_MODE;
    use std::fs::Permissions;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("goclaw-pairing-file-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn writes_replace_whole_files_with_mode_0600() {
        let dir = scratch("write");
        ensure_dir(&dir.join("state")).unwrap();
        assert_eq!(fs::metadata(dir.join("state")).unwrap().permissions().mode() & 0o777, DIR_MODE);
        let path = dir.join("state").join("pairing.json");
        assert!(matches!(read(&path).unwrap(), Found::Missing));
        // A leftover temp file with a wide mode is neither kept nor trusted.
        fs::write(temp_path(&path), b"junk").unwrap();
        fs::set_permissions(temp_path(&path), Permissions::from_mode(0o666)).unwrap();
        write_durable(&path, b"first").unwrap();
        write_durable(&path, b"second, longer").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second, longer");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, FILE_MODE);
        assert!(!temp_path(&path).exists());
        assert!(matches!(read(&path).unwrap(), Found::Bytes(b, false) if b == b"second, longer"));
        fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(read(&path).unwrap(), Found::Bytes(_, true)));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_are_bounded_and_regular_files_only() {
        let dir = scratch("read");
        ensure_dir(&dir).unwrap();
        let path = dir.join("pairing.json");
        fs::write(&path, vec![b' '; MAX_FILE_BYTES]).unwrap();
        assert!(matches!(read(&path).unwrap(), Found::Bytes(b, _) if b.len() == MAX_FILE_BYTES));
        fs::write(&path, vec![b' '; MAX_FILE_BYTES + 1]).unwrap();
        assert!(read(&path).unwrap_err().to_string().contains("larger than"));
        fs::remove_file(&path).unwrap();
        fs::create_dir(&path).unwrap();
        assert!(read(&path).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn paths() {
        assert_eq!(dir_of(Path::new("pairing.json")), Path::new("."));
        assert_eq!(dir_of(Path::new("/var/lib/goclaw/pairing.json")), Path::new("/var/lib/goclaw"));
        assert_eq!(temp_path(Path::new("/s/pairing.json")), Path::new("/s/pairing.json.tmp"));
    }
}
