//! The simulated cluster's state in a directory, so that several processes on one machine
//! drive one coherent simulated cluster (a development and benchmark feature: several
//! `slipway serve` processes on one database, `SLIPWAY_SIM_STATE_DIR`).
//!
//! One JSON file per target (`<namespace>~<workload>.json`), read, changed and written back by
//! every call that changes the target while the caller holds an exclusive `flock` on the
//! target's `.lock` file; the new state is written to a temporary file and renamed over the
//! old one, so a crash never leaves half a file and a reader (an observe, which changes
//! nothing) sees one whole version without the lock. A target with nothing in the cluster has
//! no file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};

use super::TargetState;

/// A directory of target files shared by the processes that name it.
#[derive(Debug, Clone)]
pub(crate) struct SharedDir {
    dir: PathBuf,
}

/// A target's state loaded under its lock; [`Locked::store`] writes it back.
pub(crate) struct Locked {
    data: PathBuf,
    /// Held for the guard's life: dropping the file releases the lock.
    _lock: File,
}

impl SharedDir {
    /// Creates the directory if needed.
    pub(crate) fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }

    /// Locks the target and reads its state (empty when it has no file).
    pub(crate) fn load(&self, namespace: &str, name: &str) -> io::Result<(Locked, TargetState)> {
        let stem = file_stem(namespace, name);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(format!("{stem}.lock")))?;
        lock.lock()?;
        let data = self.dir.join(format!("{stem}.json"));
        let state = parse(fs::read(&data))?;
        Ok((Locked { data, _lock: lock }, state))
    }

    /// Reads the target's state without locking it, for a call that changes nothing: every
    /// file is renamed into place whole, so this sees one complete version.
    pub(crate) fn read(&self, namespace: &str, name: &str) -> io::Result<TargetState> {
        let data = self
            .dir
            .join(format!("{}.json", file_stem(namespace, name)));
        parse(fs::read(&data))
    }

    /// Target files present (targets with anything in the cluster).
    pub(crate) fn count(&self) -> io::Result<usize> {
        let mut n = 0;
        for entry in fs::read_dir(&self.dir)? {
            if entry?.path().extension().is_some_and(|e| e == "json") {
                n += 1;
            }
        }
        Ok(n)
    }
}

impl Locked {
    /// Writes `state` back (removes the file when the target is empty), then unlocks.
    pub(crate) fn store(self, state: &TargetState) -> io::Result<()> {
        if state.is_empty() {
            return match fs::remove_file(&self.data) {
                Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        let bytes = serde_json::to_vec(state).map_err(io::Error::other)?;
        let tmp = self
            .data
            .with_extension(format!("json.tmp.{}", std::process::id()));
        fs::write(&tmp, bytes)?;
        fs::rename(&tmp, &self.data)
    }
}

/// A target file's contents; a missing file is an empty target.
fn parse(read: io::Result<Vec<u8>>) -> io::Result<TargetState> {
    match read {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(io::Error::other),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(TargetState::default()),
        Err(e) => Err(e),
    }
}

/// `<namespace>~<name>`, with any byte outside `[A-Za-z0-9._-]` as `%XX` (Kubernetes names
/// never need it; it keeps any name a file name).
fn file_stem(namespace: &str, name: &str) -> String {
    let mut out = String::with_capacity(namespace.len() + name.len() + 1);
    push_escaped(&mut out, namespace);
    out.push('~');
    push_escaped(&mut out, name);
    out
}

fn push_escaped(out: &mut String, s: &str) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::file_stem;

    #[test]
    fn file_stems_are_distinct_and_plain() {
        assert_eq!(file_stem("team-a", "web"), "team-a~web");
        assert_ne!(file_stem("a~b", "c"), file_stem("a", "b~c"));
        assert_eq!(file_stem("../x", "y"), "..%2Fx~y");
    }
}
