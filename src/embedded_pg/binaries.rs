//! Finding `initdb` and `pg_ctl`: the directories searched and Debian's version directories.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use super::EmbeddedPgError;

/// Where Debian's `postgresql` packages put the server binaries.
pub(super) const DEBIAN_PG_ROOT: &str = "/usr/lib/postgresql";

/// Directories searched for the server binaries, in order: every `PATH` entry, then
/// `/usr/lib/postgresql/<version>/bin` from the highest version down.
pub fn default_search_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default();
    dirs.extend(debian_bin_dirs(Path::new(DEBIAN_PG_ROOT)));
    dirs
}

/// `<root>/<version>/bin` for every numeric version directory under `root`, highest first.
fn debian_bin_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut versions: Vec<(Vec<u64>, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name();
            let key = parse_version(name.to_str()?)?;
            Some((key, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

pub(super) fn parse_version(name: &str) -> Option<Vec<u64>> {
    name.split('.')
        .map(|part| part.parse::<u64>().ok())
        .collect()
}

/// Where `initdb` and `pg_ctl` were found (always the same directory, so that they and the
/// `postgres` binary that `pg_ctl` runs belong to one installation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    /// Path of `initdb`.
    pub initdb: PathBuf,
    /// Path of `pg_ctl`.
    pub pg_ctl: PathBuf,
}

/// Finds the first directory of `search_dirs` that holds both `initdb` and `pg_ctl`.
pub fn find_binaries(search_dirs: &[PathBuf]) -> Result<PgBinaries, EmbeddedPgError> {
    search_dirs
        .iter()
        .find_map(|dir| {
            let initdb = dir.join("initdb");
            let pg_ctl = dir.join("pg_ctl");
            (is_executable(&initdb) && is_executable(&pg_ctl))
                .then_some(PgBinaries { initdb, pg_ctl })
        })
        .ok_or_else(|| EmbeddedPgError::NotInstalled {
            searched: search_dirs.to_vec(),
        })
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn not_installed_says_what_to_do() {
        let err = find_binaries(&[]).unwrap_err();
        assert!(matches!(err, EmbeddedPgError::NotInstalled { .. }));
        let msg = err.to_string();
        assert!(msg.contains("initdb, pg_ctl"), "{msg}");
        assert!(msg.contains("/usr/lib/postgresql/*/bin"), "{msg}");
        assert!(msg.contains("apt-get install -y postgresql"), "{msg}");
        assert!(msg.contains("DATABASE_URL"), "{msg}");
    }

    #[test]
    fn binaries_must_share_a_directory() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let only_initdb = dir.path().join("a");
        let both = dir.path().join("b");
        for (d, names) in [
            (&only_initdb, &["initdb"][..]),
            (&both, &["initdb", "pg_ctl"][..]),
        ] {
            std::fs::create_dir(d).unwrap();
            for name in names {
                let p = d.join(name);
                std::fs::write(&p, "#!/bin/sh\n").unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        let found =
            find_binaries(&[dir.path().join("missing"), only_initdb, both.clone()]).unwrap();
        assert_eq!(found.pg_ctl, both.join("pg_ctl"));
        assert_eq!(found.initdb, both.join("initdb"));
    }

    #[test]
    fn debian_versions_sort_highest_first() {
        let dir = tempfile::tempdir().unwrap();
        for v in ["9.6", "15", "10", "main", "16"] {
            std::fs::create_dir(dir.path().join(v)).unwrap();
        }
        let dirs = debian_bin_dirs(dir.path());
        let names: Vec<_> = dirs
            .iter()
            .map(|d| {
                d.parent()
                    .unwrap()
                    .file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(names, ["16", "15", "10", "9.6"]);
    }
}
