//! The data directory holds a home's whole history: its folders are created 0700 and
//! its files 0600, and wider modes found at start are tightened. A leaf: it imports
//! nothing else of the crate, so every stage that writes under `data_dir` can use it.
//!
//! Two layers: the binary sets the process umask to `0o077` ([`restrict_umask`]),
//! which covers files created by libraries (redb, the cursor files); the library's
//! own folders and files are created with explicit modes, so programs embedding the
//! library get private files without touching their umask.

use std::fs::OpenOptions;
use std::io;
use std::path::Path;

/// Mode of every folder under the data directory: the owner only.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file under the data directory: the owner only, never executable.
pub const FILE_MODE: u32 = 0o600;

/// Sets the process umask to `0o077` so every file the process creates is private; returns the previous mask.
///
/// Called by the subcommands that write into `data_dir` (`run`, `demo`, `check`,
/// `replay`, `buffer`). Process-wide: library users decide for themselves.
#[cfg(unix)]
pub fn restrict_umask() -> u32 {
    // SAFETY: umask(2) cannot fail and touches no memory; it only swaps the process's mask.
    let previous = unsafe { libc::umask(0o077) };
    // `mode_t` is u32 on Linux, u16 on macOS.
    #[allow(clippy::useless_conversion)]
    u32::from(previous)
}

/// Without Unix modes there is no umask to set.
#[cfg(not(unix))]
pub fn restrict_umask() -> u32 {
    0
}

/// Creates `dir` and its missing parents with mode [`DIR_MODE`] (existing ones are left as they are).
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(DIR_MODE);
    }
    builder.create(dir)
}

/// `OpenOptions` whose newly created files get mode [`FILE_MODE`]; the caller adds create/append/write.
pub fn file_options() -> OpenOptions {
    #[allow(unused_mut)]
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(FILE_MODE);
    }
    options
}

/// What [`tighten`] changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tightened {
    /// Folders whose group/other bits were removed.
    pub dirs: u64,
    /// Files whose group/other bits were removed.
    pub files: u64,
}

/// Removes the group and other permission bits from `dir` and everything under it.
///
/// Symbolic links are neither followed nor changed (they may point outside the data
/// directory); an entry that cannot be read or changed is logged at WARN and skipped.
pub fn tighten(dir: &Path) -> io::Result<Tightened> {
    let mut done = Tightened::default();
    tighten_one(dir, &mut done)?;
    Ok(done)
}

#[cfg(unix)]
fn tighten_one(path: &Path, done: &mut Tightened) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        let private = mode & !0o077;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(private))?;
        tracing::debug!(
            message = "Made a data file private.",
            path = %path.display(),
            was = format!("{mode:o}"),
            now = format!("{private:o}")
        );
        if meta.is_dir() {
            done.dirs += 1;
        } else {
            done.files += 1;
        }
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            let child = entry.path();
            if let Err(error) = tighten_one(&child, done) {
                tracing::warn!(message = "Cannot make a data file private.", path = %child.display(), %error);
            }
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn tighten_one(_path: &Path, _done: &mut Tightened) -> io::Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn created_folders_and_files_are_private_and_wider_ones_are_tightened() {
        let root = tempfile::tempdir().unwrap();
        let nested = root.path().join("a/b");
        create_dir_all(&nested).unwrap();
        assert_eq!(mode(&root.path().join("a")), DIR_MODE);
        assert_eq!(mode(&nested), DIR_MODE);
        let file = nested.join("f");
        file_options()
            .create(true)
            .append(true)
            .open(&file)
            .unwrap();
        assert_eq!(mode(&file), FILE_MODE);

        let wide = root.path().join("wide");
        std::fs::create_dir(&wide).unwrap();
        std::fs::set_permissions(&wide, std::fs::Permissions::from_mode(0o755)).unwrap();
        let script = wide.join("x");
        std::fs::write(&script, b"x").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let done = tighten(&wide).unwrap();
        assert_eq!(done, Tightened { dirs: 1, files: 1 });
        assert_eq!(mode(&wide), 0o700);
        assert_eq!(mode(&script), 0o700);
        assert_eq!(tighten(&wide).unwrap(), Tightened::default());
    }
}
