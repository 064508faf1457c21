//! Running the server binaries as the `postgres` system user when this process is root:
//! uid lookup, the traversal check on the state directory's parents, and `chown`.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use super::{EmbeddedPgError, io_err};

/// System user that runs the server when this process is root.
const SYSTEM_USER: &str = "postgres";

/// The identity the server binaries run under when this process is root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RunAs {
    pub(super) uid: u32,
    pub(super) gid: u32,
}

/// Effective uid of this process, from `/proc/self/status`, else from `id -u`.
pub(super) fn current_uid() -> u32 {
    let from_proc = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1))
                .and_then(|euid| euid.parse().ok())
        });
    from_proc
        .or_else(|| {
            let out = std::process::Command::new("id").arg("-u").output().ok()?;
            String::from_utf8(out.stdout).ok()?.trim().parse().ok()
        })
        .unwrap_or(u32::MAX)
}

pub(super) fn is_root() -> bool {
    current_uid() == 0
}

/// uid and gid of `user` according to the given `/etc/passwd` contents.
fn lookup_user(passwd: &str, user: &str) -> Option<RunAs> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != user {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some(RunAs { uid, gid })
    })
}

pub(super) fn system_user() -> Result<RunAs, EmbeddedPgError> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(io_err("reading /etc/passwd"))?;
    lookup_user(&passwd, SYSTEM_USER).ok_or(EmbeddedPgError::SystemUserMissing)
}

/// Checks that `user` can enter every ancestor of `state_dir` (the process drops supplementary
/// groups when it switches user, so only the primary group counts).
pub(super) fn check_traversable(state_dir: &Path, user: RunAs) -> Result<(), EmbeddedPgError> {
    for dir in state_dir.ancestors().skip(1) {
        if dir.as_os_str().is_empty() {
            continue;
        }
        let meta =
            std::fs::metadata(dir).map_err(io_err(format!("inspecting {}", dir.display())))?;
        let mode = meta.mode();
        let allowed = if meta.uid() == user.uid {
            mode & 0o100 != 0
        } else if meta.gid() == user.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !allowed {
            return Err(EmbeddedPgError::StateDirNotTraversable {
                state_dir: state_dir.to_path_buf(),
                dir: dir.to_path_buf(),
                mode: mode & 0o7777,
                uid: user.uid,
            });
        }
    }
    Ok(())
}

/// `chown -R` without following symbolic links.
pub(super) fn chown_tree(path: &Path, user: RunAs) -> Result<(), EmbeddedPgError> {
    std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid))
        .map_err(io_err(format!("changing the owner of {}", path.display())))?;
    let meta = std::fs::symlink_metadata(path)
        .map_err(io_err(format!("inspecting {}", path.display())))?;
    if meta.is_dir() {
        let entries =
            std::fs::read_dir(path).map_err(io_err(format!("listing {}", path.display())))?;
        for entry in entries {
            let entry = entry.map_err(io_err(format!("listing {}", path.display())))?;
            chown_tree(&entry.path(), user)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lookup() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\npostgres:x:101:104:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash\n";
        assert_eq!(
            lookup_user(passwd, "postgres"),
            Some(RunAs { uid: 101, gid: 104 })
        );
        assert_eq!(lookup_user(passwd, "nobody"), None);
    }
}
