//! The state file: its format read tolerantly (fields written by a newer veer are named in a
//! warning, not refused), written atomically (a crash leaves the old file or the new one whole,
//! and a failed write leaves nothing behind), and owned by one process at a time through an
//! advisory lock beside it.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::{Runtime, StateFileError};

/// Reads the runtime state saved at `path`; a missing file is an empty state.
pub(super) fn read_state_file(path: &Path) -> Result<Runtime, StateFileError> {
    let shown = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Runtime::default()),
        Err(source) => {
            return Err(StateFileError::Read {
                path: shown,
                source,
            })
        }
    };
    let mut unknown = Vec::new();
    let mut de = serde_json::Deserializer::from_str(&text);
    let runtime: Runtime = serde_ignored::deserialize(&mut de, |field| {
        unknown.push(field.to_string());
    })
    .and_then(|runtime| de.end().map(|()| runtime))
    .map_err(|e| StateFileError::Corrupt {
        path: shown.clone(),
        message: e.to_string(),
    })?;
    if !unknown.is_empty() {
        tracing::warn!(
            file = %shown,
            fields = %unknown.join(", "),
            "the state file has fields this version does not know (written by a newer veer?): they are ignored"
        );
    }
    Ok(runtime)
}

/// Writes the state file so that a crash leaves the old or the new one whole: a temporary
/// file in the same directory (named for this process, so two processes never share one),
/// readable by the owner only (it may hold a token), fsync, rename over the old, fsync of the
/// directory. A write that fails at any step removes its temporary file. Once the rename is
/// done the change is on disk, so a failing directory fsync is logged, not reported.
pub(super) fn write_state_file(path: &Path, runtime: &Runtime) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(runtime).map_err(std::io::Error::other)?;
    let dir = parent(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "veer-state".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    if let Err(e) = write_synced(&tmp, &json).and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Err(e) = File::open(&dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), error = %e, "state file written, but its directory could not be synced");
    }
    Ok(())
}

fn write_synced(path: &Path, json: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(json)?;
    f.write_all(b"\n")?;
    f.sync_all()
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Ownership of a state file: an exclusive advisory lock (`flock`) on `<state_file>.lock`,
/// held while the process takes changes. The state file itself is replaced by rename, so it
/// cannot carry the lock. Released when dropped, or when the process ends however it ends.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Takes the lock, or says that another process holds it.
    pub fn acquire(state_file: &Path) -> Result<StateLock, StateFileError> {
        use rustix::fs::{flock, FlockOperation};
        use std::os::unix::fs::OpenOptionsExt;
        let mut name = state_file.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|source| StateFileError::Read {
                path: path.display().to_string(),
                source,
            })?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(StateLock { _file: file }),
            Err(rustix::io::Errno::WOULDBLOCK) => Err(StateFileError::Locked {
                path: state_file.display().to_string(),
            }),
            Err(e) => Err(StateFileError::Read {
                path: path.display().to_string(),
                source: e.into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("veer-persist-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn fields_from_a_newer_version_are_ignored_not_refused() {
        let dir = temp_dir("newer");
        let path = dir.join("state.json");
        let text = r#"{"version": 7, "shiny": {"a": 1},
            "routes": {"web": {"base": "x", "split": {"blue": 1}, "weights_v2": [1]}}}"#;
        std::fs::write(&path, text).unwrap();
        let runtime = read_state_file(&path).unwrap();
        assert_eq!(runtime.version, 7);
        assert_eq!(runtime.routes["web"].split.as_ref().unwrap()["blue"], 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file() {
        let dir = temp_dir("failed-write");
        // The state file's name is taken by a directory that is not empty: the rename fails.
        let path = dir.join("state.json");
        std::fs::create_dir_all(path.join("occupied")).unwrap();
        assert!(write_state_file(&path, &Runtime::default()).is_err());
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("state.json")]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn one_process_at_a_time_owns_the_state_file() {
        let dir = temp_dir("lock");
        let path = dir.join("state.json");
        let held = StateLock::acquire(&path).unwrap();
        // flock locks belong to the open file: a second open, as by another process, is refused.
        let err = StateLock::acquire(&path).unwrap_err();
        assert!(matches!(err, StateFileError::Locked { .. }), "{err}");
        drop(held);
        assert!(StateLock::acquire(&path).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
