//! What modelgate writes is readable by its own user only: folders 0700, files 0600. The
//! process's umask makes it so for everything it creates from start-up on (the database, blobs
//! in a local store, the runner's artifact cache, keys); the data folder and a SQLite database
//! made by an earlier version are tightened when found.

use std::path::Path;

use anyhow::Context as _;

/// From now on, files this process creates are 0600 and folders 0700, whatever library makes
/// them (SQLite, the local object store, the artifact cache).
pub fn own_files_only() {
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Creates `dir` (and its parents) if missing, and makes it 0700.
pub fn private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    set_mode(dir, 0o700)
}

/// Makes the files of the SQLite database at `url`, when it is one, 0600.
pub fn private_sqlite(url: &str) -> anyhow::Result<()> {
    let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) else { return Ok(()) };
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let file = format!("{path}{suffix}");
        if Path::new(&file).exists() {
            set_mode(Path::new(&file), 0o600)?;
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("making {} private (mode {mode:o})", path.display()))?;
    }
    Ok(())
}
