//! A private PostgreSQL instance for `slipway dev`.
//!
//! [`EmbeddedPostgres::start`] runs the server binaries that are already installed on the
//! machine (`initdb`, `pg_ctl`; Debian's `apt-get install -y postgresql` provides them under
//! `/usr/lib/postgresql/<version>/bin`). Nothing is downloaded. The cluster lives in
//! `<state_dir>/pgdata` and persists across runs; the password of its `slipway` role is kept in
//! `<state_dir>/password` (mode 0600) and the server log in `<state_dir>/postgres.log`.
//!
//! The server listens on `127.0.0.1` only, on a free port picked at every start, with its unix
//! socket inside `<state_dir>/run`.
//!
//! # Running as root
//!
//! `initdb` and `postgres` refuse to run as root. When this process runs as root, the server
//! binaries are run as the `postgres` system user instead, and the state directory is chowned
//! to that user. Every parent of the state directory must then be traversable by `postgres`,
//! so root should use a directory such as `/var/lib/slipway/dev` (see [`default_state_dir`]),
//! not one under `/root`.

use std::fmt;
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output};

use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use sqlx::{Connection as _, Row as _};

/// Name of the role created by `initdb` and used in [`EmbeddedPostgres::database_url`].
const ROLE: &str = "slipway";
/// Name of the application database created on first start.
const DATABASE: &str = "slipway";
/// System user that runs the server when this process is root.
const SYSTEM_USER: &str = "postgres";
/// Where Debian's `postgresql` packages put the server binaries.
const DEBIAN_PG_ROOT: &str = "/usr/lib/postgresql";
/// File (inside the data directory) with the settings slipway rewrites at every start.
const SETTINGS_FILE: &str = "slipway.conf";
const INCLUDE_LINE: &str = "include_if_exists = 'slipway.conf'";
/// Seconds `pg_ctl -w` waits for start-up / shutdown.
const PG_CTL_TIMEOUT_SECS: &str = "120";
/// `sizeof(sockaddr_un.sun_path)` on Linux, including the terminating NUL.
const UNIX_SOCKET_PATH_MAX: usize = 108;
/// Start attempts when the freshly picked port was taken by someone else in the meantime.
const START_ATTEMPTS: u32 = 3;
/// How much of a log or of a command's output an error message quotes.
const TAIL_LINES: usize = 30;

/// Errors from starting or stopping the embedded PostgreSQL server.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedPgError {
    /// `initdb` and `pg_ctl` were not found.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) were not found on PATH or under \
         /usr/lib/postgresql/*/bin; install them with `apt-get install -y postgresql`, \
         or set DATABASE_URL to use an existing server"
    )]
    NotInstalled {
        /// The directories that were searched.
        searched: Vec<PathBuf>,
    },

    /// This process is root and there is no `postgres` user to run the server as.
    #[error(
        "running as root, but PostgreSQL refuses to run as root and there is no `postgres` \
         system user in /etc/passwd to run it as; install PostgreSQL with \
         `apt-get install -y postgresql` (which creates that user), run slipway as a non-root \
         user, or set DATABASE_URL to use an existing server"
    )]
    SystemUserMissing,

    /// A parent of the state directory cannot be entered by the `postgres` user.
    #[error(
        "the `postgres` user (uid {uid}) cannot traverse {dir} (mode {mode:o}), a parent of the \
         state directory {state_dir}; when running as root use a state directory whose parents \
         are world-traversable, e.g. /var/lib/slipway/dev (the default)"
    )]
    StateDirNotTraversable {
        /// The state directory asked for.
        state_dir: PathBuf,
        /// The ancestor that cannot be traversed.
        dir: PathBuf,
        /// That ancestor's permission bits.
        mode: u32,
        /// The `postgres` user's uid.
        uid: u32,
    },

    /// The cluster exists but the file with its password is gone.
    #[error(
        "the PostgreSQL data directory {data_dir} exists but its password file {password_file} \
         is missing or empty; restore the file, or delete {state_dir} to start over with an \
         empty database"
    )]
    PasswordMissing {
        /// `<state_dir>/pgdata`.
        data_dir: PathBuf,
        /// `<state_dir>/password`.
        password_file: PathBuf,
        /// The state directory.
        state_dir: PathBuf,
    },

    /// A file-system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// `initdb` (or another helper command) failed.
    #[error("{command} failed ({status}):\n{output}")]
    CommandFailed {
        /// The command line, for the message.
        command: String,
        /// Its exit status.
        status: String,
        /// The tail of its stdout and stderr.
        output: String,
    },

    /// The server did not start.
    #[error(
        "PostgreSQL did not start: {detail}\nserver log: {log}\n--- last lines of {log} ---\n{log_tail}"
    )]
    StartFailed {
        /// What `pg_ctl` said.
        detail: String,
        /// `<state_dir>/postgres.log`.
        log: PathBuf,
        /// The lines this start attempt wrote to the log.
        log_tail: String,
    },

    /// The server did not stop.
    #[error("PostgreSQL did not stop: {detail}\nserver log: {log}")]
    StopFailed {
        /// What `pg_ctl` said.
        detail: String,
        /// `<state_dir>/postgres.log`.
        log: PathBuf,
    },

    /// The server started but a database operation on it failed.
    #[error("{context} (server log: {log}): {source}")]
    Database {
        /// What was being done.
        context: String,
        /// `<state_dir>/postgres.log`.
        log: PathBuf,
        /// The underlying error.
        #[source]
        source: sqlx::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> EmbeddedPgError {
    let context = context.into();
    move |source| EmbeddedPgError::Io { context, source }
}

/// The directory [`EmbeddedPostgres`] should use when the user names none.
///
/// Root gets `/var/lib/slipway/dev` (its parents are traversable by the `postgres` user);
/// everyone else `$XDG_STATE_HOME/slipway/dev`, falling back to `~/.local/state/slipway/dev`.
pub fn default_state_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from("/var/lib/slipway/dev");
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map(|home| home.join(".local").join("state"))
        })
        .unwrap_or_else(|| std::env::temp_dir().join(format!("slipway-{}", current_uid())));
    base.join("slipway").join("dev")
}

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

fn parse_version(name: &str) -> Option<Vec<u64>> {
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

/// The identity the server binaries run under when this process is root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RunAs {
    uid: u32,
    gid: u32,
}

/// Effective uid of this process, from `/proc/self/status`, else from `id -u`.
fn current_uid() -> u32 {
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

fn is_root() -> bool {
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

fn system_user() -> Result<RunAs, EmbeddedPgError> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(io_err("reading /etc/passwd"))?;
    lookup_user(&passwd, SYSTEM_USER).ok_or(EmbeddedPgError::SystemUserMissing)
}

/// Checks that `user` can enter every ancestor of `state_dir` (the process drops supplementary
/// groups when it switches user, so only the primary group counts).
fn check_traversable(state_dir: &Path, user: RunAs) -> Result<(), EmbeddedPgError> {
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
fn chown_tree(path: &Path, user: RunAs) -> Result<(), EmbeddedPgError> {
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

/// Reads the stored password, or creates one (mode 0600) if the cluster does not exist yet.
fn ensure_password(paths: &Paths) -> Result<String, EmbeddedPgError> {
    match std::fs::read_to_string(&paths.password_file) {
        Ok(contents) if !contents.trim().is_empty() => return Ok(contents.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(format!("reading {}", paths.password_file.display()))(e)),
    }
    if paths.is_initialised() {
        return Err(EmbeddedPgError::PasswordMissing {
            data_dir: paths.data_dir.clone(),
            password_file: paths.password_file.clone(),
            state_dir: paths.state_dir.clone(),
        });
    }
    let password = uuid::Uuid::new_v4().simple().to_string();
    let context = format!("writing {}", paths.password_file.display());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&paths.password_file)
        .map_err(io_err(context.clone()))?;
    file.write_all(password.as_bytes())
        .map_err(io_err(context.clone()))?;
    file.sync_all().map_err(io_err(context))?;
    Ok(password)
}

/// Quotes `value` as a postgresql.conf string.
fn conf_string(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn url_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The last [`TAIL_LINES`] lines of `text`.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

fn output_text(output: &Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !text.is_empty() && !stderr.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&stderr);
    tail(text.trim_end())
}

fn status_text(status: ExitStatus) -> String {
    status.to_string()
}

/// Whether `pid` is a running (not zombie) process called `postgres`, according to /proc.
/// Without /proc the answer is yes, which leaves the decision to `pg_ctl` and the server.
fn process_is_live_postgres(pid: u32) -> bool {
    if !Path::new("/proc/self/stat").exists() {
        return true;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "<pid> (<comm>) <state> ...": comm may hold spaces and parentheses.
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return false;
    };
    let comm = stat.get(open + 1..close).unwrap_or_default();
    let state = stat
        .get(close + 1..)
        .unwrap_or_default()
        .split_whitespace()
        .next();
    matches!(comm, "postgres" | "postmaster") && !matches!(state, Some("Z" | "X" | "x"))
}

fn free_port() -> Result<u16, EmbeddedPgError> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(io_err("picking a free port on 127.0.0.1"))?;
    let port = listener
        .local_addr()
        .map_err(io_err("picking a free port on 127.0.0.1"))?
        .port();
    Ok(port)
}

/// Every path [`EmbeddedPostgres`] uses.
#[derive(Debug, Clone)]
struct Paths {
    state_dir: PathBuf,
    data_dir: PathBuf,
    password_file: PathBuf,
    log_file: PathBuf,
    socket_dir: PathBuf,
}

impl Paths {
    fn new(state_dir: &Path) -> Self {
        Self {
            state_dir: state_dir.to_path_buf(),
            data_dir: state_dir.join("pgdata"),
            password_file: state_dir.join("password"),
            log_file: state_dir.join("postgres.log"),
            socket_dir: state_dir.join("run"),
        }
    }

    fn is_initialised(&self) -> bool {
        self.data_dir.join("PG_VERSION").is_file()
    }

    /// The major version the existing cluster was made with, if any.
    fn cluster_version(&self) -> Option<String> {
        let version = std::fs::read_to_string(self.data_dir.join("PG_VERSION")).ok()?;
        let version = version.trim();
        parse_version(version).map(|_| version.to_owned())
    }

    /// Removes `postmaster.pid` when the process it names is gone, a zombie, or not a
    /// PostgreSQL server (after a reboot or a restored machine the pid may belong to another
    /// program, and the server would then refuse to start).
    fn remove_stale_pid_file(&self) -> Result<(), EmbeddedPgError> {
        let pid_file = self.data_dir.join("postmaster.pid");
        let Ok(contents) = std::fs::read_to_string(&pid_file) else {
            return Ok(());
        };
        let Some(pid) = contents
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<u32>().ok())
        else {
            return Ok(());
        };
        if process_is_live_postgres(pid) {
            return Ok(());
        }
        tracing::warn!(pid_file = %pid_file.display(), pid, "removing a stale PostgreSQL pid file");
        match std::fs::remove_file(&pid_file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(format!("removing {}", pid_file.display()))(e)),
        }
    }

    fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log_file)
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// The tail of what the log gained after it was `from` bytes long.
    fn log_tail_since(&self, from: u64) -> String {
        match std::fs::read(&self.log_file) {
            Ok(bytes) => {
                let start = usize::try_from(from).unwrap_or(0);
                let new = bytes
                    .get(start..)
                    .filter(|b| !b.is_empty())
                    .unwrap_or(&bytes);
                tail(String::from_utf8_lossy(new).trim_end())
            }
            Err(e) => format!("(could not read the log: {e})"),
        }
    }
}

/// How to run the server binaries: where they are and as whom.
#[derive(Debug, Clone)]
struct Runner {
    bins: PgBinaries,
    run_as: Option<RunAs>,
    cwd: PathBuf,
}

impl Runner {
    fn command(&self, program: &Path) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(program);
        self.prepare(cmd.as_std_mut());
        cmd.stdin(std::process::Stdio::null());
        cmd.kill_on_drop(false);
        cmd
    }

    fn std_command(&self, program: &Path) -> std::process::Command {
        let mut cmd = std::process::Command::new(program);
        self.prepare(&mut cmd);
        cmd.stdin(std::process::Stdio::null());
        cmd
    }

    fn prepare(&self, cmd: &mut std::process::Command) {
        use std::os::unix::process::CommandExt as _;
        if let Some(user) = self.run_as {
            cmd.uid(user.uid).gid(user.gid);
        }
        // The server's settings come from the data directory, never from the caller's libpq
        // environment; the locale is fixed by `initdb --no-locale`.
        for var in [
            "PGDATA",
            "PGPORT",
            "PGHOST",
            "PGUSER",
            "PGPASSWORD",
            "PGDATABASE",
            "PGOPTIONS",
        ] {
            cmd.env_remove(var);
        }
        cmd.current_dir(&self.cwd);
    }

    async fn output(
        &self,
        program: &Path,
        args: &[&std::ffi::OsStr],
    ) -> Result<Output, EmbeddedPgError> {
        self.command(program)
            .args(args)
            .output()
            .await
            .map_err(io_err(format!("running {}", program.display())))
    }

    /// `pg_ctl status`: whether a server is running on the data directory.
    async fn is_running(&self, data_dir: &Path) -> Result<bool, EmbeddedPgError> {
        let out = self
            .output(
                &self.bins.pg_ctl,
                &["status".as_ref(), "-D".as_ref(), data_dir.as_os_str()],
            )
            .await?;
        Ok(out.status.success())
    }

    /// `pg_ctl stop -m fast`, waiting until the server is down.
    fn stop_args(data_dir: &Path) -> [&std::ffi::OsStr; 8] {
        [
            "stop".as_ref(),
            "-D".as_ref(),
            data_dir.as_os_str(),
            "-m".as_ref(),
            "fast".as_ref(),
            "-w".as_ref(),
            "-t".as_ref(),
            PG_CTL_TIMEOUT_SECS.as_ref(),
        ]
    }

    async fn stop(&self, paths: &Paths) -> Result<(), EmbeddedPgError> {
        let out = self
            .output(&self.bins.pg_ctl, &Self::stop_args(&paths.data_dir))
            .await?;
        if out.status.success() || !self.is_running(&paths.data_dir).await? {
            return Ok(());
        }
        Err(EmbeddedPgError::StopFailed {
            detail: output_text(&out),
            log: paths.log_file.clone(),
        })
    }
}

/// A PostgreSQL server run from the machine's own binaries, private to `slipway dev`.
///
/// Dropping it without calling [`EmbeddedPostgres::stop`] stops the server synchronously
/// (best effort).
pub struct EmbeddedPostgres {
    paths: Paths,
    runner: Runner,
    port: u16,
    url: String,
    stopped: bool,
}

impl fmt::Debug for EmbeddedPostgres {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedPostgres")
            .field("state_dir", &self.paths.state_dir)
            .field("port", &self.port)
            .field("bin", &self.runner.bins.pg_ctl.parent())
            .field("run_as", &self.runner.run_as)
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}

impl EmbeddedPostgres {
    /// Finds `initdb`/`pg_ctl` (PATH first, then the highest `/usr/lib/postgresql/*/bin`; an
    /// existing cluster prefers the installation of its own major version), initialises
    /// `state_dir/pgdata` on first use (it persists across runs), picks a free 127.0.0.1 port,
    /// starts the server with `pg_ctl -w start` (listening only on 127.0.0.1, unix socket in
    /// `state_dir/run`), creates the database `slipway` if missing, and returns once the server
    /// accepts connections.
    ///
    /// When this process is root the server runs as the `postgres` user; every parent of
    /// `state_dir` must be traversable by it (use e.g. `/var/lib/slipway/dev`, see
    /// [`default_state_dir`]).
    pub async fn start(state_dir: &Path) -> Result<Self, EmbeddedPgError> {
        let mut dirs = Vec::new();
        if let Some(version) = Paths::new(state_dir).cluster_version() {
            dirs.push(Path::new(DEBIAN_PG_ROOT).join(version).join("bin"));
        }
        dirs.extend(default_search_dirs());
        Self::start_with_search_path(state_dir, &dirs).await
    }

    /// [`EmbeddedPostgres::start`] with an explicit list of directories to look for `initdb`
    /// and `pg_ctl` in (the first directory holding both wins).
    pub async fn start_with_search_path(
        state_dir: &Path,
        search_dirs: &[PathBuf],
    ) -> Result<Self, EmbeddedPgError> {
        let bins = find_binaries(search_dirs)?;
        let run_as = if is_root() {
            Some(system_user()?)
        } else {
            None
        };

        let state_dir = if state_dir.is_absolute() {
            state_dir.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(io_err("reading the current directory"))?
                .join(state_dir)
        };
        if let Some(parent) = state_dir.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io_err(format!("creating {}", parent.display())))?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(&state_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && state_dir.is_dir() => {}
            Err(e) => return Err(io_err(format!("creating {}", state_dir.display()))(e)),
        }
        let state_dir = state_dir
            .canonicalize()
            .map_err(io_err(format!("resolving {}", state_dir.display())))?;
        if let Some(user) = run_as {
            check_traversable(&state_dir, user)?;
        }
        let paths = Paths::new(&state_dir);
        let runner = Runner {
            bins,
            run_as,
            cwd: state_dir.clone(),
        };
        tracing::debug!(state_dir = %state_dir.display(), pg_ctl = %runner.bins.pg_ctl.display(), ?run_as, "starting embedded PostgreSQL");

        let password = ensure_password(&paths)?;
        std::fs::create_dir_all(&paths.socket_dir)
            .map_err(io_err(format!("creating {}", paths.socket_dir.display())))?;
        if let Some(user) = run_as {
            chown_tree(&state_dir, user)?;
        }

        if !paths.is_initialised() {
            initdb(&runner, &paths).await?;
        }
        ensure_include_line(&paths)?;

        paths.remove_stale_pid_file()?;
        if runner.is_running(&paths.data_dir).await? {
            // Left over from a run that was killed: its port is unknown to us, so restart it.
            tracing::warn!(data_dir = %paths.data_dir.display(), "embedded PostgreSQL is already running; restarting it");
            runner.stop(&paths).await?;
        }

        let mut attempt = 1;
        let port = loop {
            let port = free_port()?;
            write_settings(&paths, port, run_as)?;
            match pg_ctl_start(&runner, &paths).await {
                Ok(()) => break port,
                Err(EmbeddedPgError::StartFailed { log_tail, .. })
                    if attempt < START_ATTEMPTS && log_tail.contains("Address already in use") =>
                {
                    tracing::warn!(
                        port,
                        "port was taken before PostgreSQL could bind it; trying another"
                    );
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };

        let url = format!(
            "postgres://{ROLE}:{}@127.0.0.1:{port}/{DATABASE}",
            url_encode(&password)
        );
        let pg = Self {
            paths,
            runner,
            port,
            url,
            stopped: false,
        };
        // On error `pg` is dropped here, which stops the server again.
        pg.ensure_database(&password).await?;
        tracing::info!(port, state_dir = %pg.paths.state_dir.display(), "embedded PostgreSQL is up");
        Ok(pg)
    }

    /// `postgres://slipway:<password>@127.0.0.1:<port>/slipway`
    pub fn database_url(&self) -> &str {
        &self.url
    }

    /// The TCP port the server listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The state directory (absolute) holding `pgdata`, `password`, `postgres.log` and `run`.
    pub fn state_dir(&self) -> &Path {
        &self.paths.state_dir
    }

    /// The server log, `<state_dir>/postgres.log`.
    pub fn log_file(&self) -> &Path {
        &self.paths.log_file
    }

    /// Stops the server (`pg_ctl stop -m fast`) and waits until it is down.
    pub async fn stop(mut self) -> Result<(), EmbeddedPgError> {
        self.stopped = true;
        self.runner.stop(&self.paths).await?;
        tracing::info!(state_dir = %self.paths.state_dir.display(), "embedded PostgreSQL stopped");
        Ok(())
    }

    async fn ensure_database(&self, password: &str) -> Result<(), EmbeddedPgError> {
        let db_err = |context: &str| {
            let context = context.to_owned();
            let log = self.paths.log_file.clone();
            move |source| EmbeddedPgError::Database {
                context,
                log,
                source,
            }
        };
        let options = PgConnectOptions::new_without_pgpass()
            .host("127.0.0.1")
            .port(self.port)
            .username(ROLE)
            .password(password)
            .database("postgres")
            .ssl_mode(PgSslMode::Disable);
        let mut conn = PgConnection::connect_with(&options)
            .await
            .map_err(db_err("connecting to the embedded PostgreSQL"))?;
        let exists = sqlx::query("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(DATABASE)
            .fetch_one(&mut conn)
            .await
            .map_err(db_err("looking up the slipway database"))?
            .try_get::<bool, _>(0)
            .map_err(db_err("looking up the slipway database"))?;
        if !exists {
            sqlx::raw_sql("CREATE DATABASE slipway")
                .execute(&mut conn)
                .await
                .map_err(db_err("creating the slipway database"))?;
            tracing::info!("created database {DATABASE}");
        }
        conn.close()
            .await
            .map_err(db_err("closing the set-up connection"))?;
        Ok(())
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        let args = Runner::stop_args(&self.paths.data_dir);
        match self
            .runner
            .std_command(&self.runner.bins.pg_ctl)
            .args(args)
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                tracing::warn!(output = %output_text(&out), "stopping embedded PostgreSQL failed")
            }
            Err(e) => tracing::warn!(error = %e, "stopping embedded PostgreSQL failed"),
        }
    }
}

async fn initdb(runner: &Runner, paths: &Paths) -> Result<(), EmbeddedPgError> {
    if paths.data_dir.exists() {
        // initdb removes its directory when it fails, so this is a leftover of an interrupted
        // first start: it holds no data yet.
        tracing::warn!(data_dir = %paths.data_dir.display(), "removing a half-initialised PostgreSQL data directory");
        std::fs::remove_dir_all(&paths.data_dir)
            .map_err(io_err(format!("removing {}", paths.data_dir.display())))?;
    }
    let mut pwfile = std::ffi::OsString::from("--pwfile=");
    pwfile.push(&paths.password_file);
    let args: [&std::ffi::OsStr; 8] = [
        "-D".as_ref(),
        paths.data_dir.as_os_str(),
        "-U".as_ref(),
        ROLE.as_ref(),
        "--auth=scram-sha-256".as_ref(),
        &pwfile,
        "--encoding=UTF8".as_ref(),
        "--no-locale".as_ref(),
    ];
    tracing::info!(data_dir = %paths.data_dir.display(), "initialising a PostgreSQL cluster");
    let out = runner.output(&runner.bins.initdb, &args).await?;
    if !out.status.success() {
        let command = std::iter::once(runner.bins.initdb.as_os_str())
            .chain(args.iter().copied())
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        return Err(EmbeddedPgError::CommandFailed {
            command,
            status: status_text(out.status),
            output: output_text(&out),
        });
    }
    Ok(())
}

/// Makes postgresql.conf read [`SETTINGS_FILE`].
fn ensure_include_line(paths: &Paths) -> Result<(), EmbeddedPgError> {
    let conf = paths.data_dir.join("postgresql.conf");
    let text =
        std::fs::read_to_string(&conf).map_err(io_err(format!("reading {}", conf.display())))?;
    if text.lines().any(|line| line.trim() == INCLUDE_LINE) {
        return Ok(());
    }
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&conf)
        .map_err(io_err(format!("opening {}", conf.display())))?;
    let separator = if text.ends_with('\n') || text.is_empty() {
        ""
    } else {
        "\n"
    };
    write!(file, "{separator}\n# Per-run settings written by slipway (port, listen address, socket directory).\n{INCLUDE_LINE}\n")
        .map_err(io_err(format!("writing {}", conf.display())))
}

/// Writes the per-run settings: loopback only, the chosen port, the private socket directory.
fn write_settings(paths: &Paths, port: u16, run_as: Option<RunAs>) -> Result<(), EmbeddedPgError> {
    let socket_path_len =
        paths.socket_dir.as_os_str().len() + "/.s.PGSQL.".len() + port.to_string().len();
    let socket_dirs = if socket_path_len < UNIX_SOCKET_PATH_MAX {
        paths.socket_dir.to_string_lossy().into_owned()
    } else {
        tracing::warn!(socket_dir = %paths.socket_dir.display(), "state directory path too long for a unix socket; TCP only");
        String::new()
    };
    let settings = format!(
        "# Written by slipway at every start of the embedded server; edits are overwritten.\n\
         listen_addresses = '127.0.0.1'\n\
         port = {port}\n\
         unix_socket_directories = {}\n\
         unix_socket_permissions = 0700\n",
        conf_string(&socket_dirs)
    );
    let file = paths.data_dir.join(SETTINGS_FILE);
    std::fs::write(&file, settings).map_err(io_err(format!("writing {}", file.display())))?;
    if let Some(user) = run_as {
        std::os::unix::fs::lchown(&file, Some(user.uid), Some(user.gid))
            .map_err(io_err(format!("changing the owner of {}", file.display())))?;
    }
    Ok(())
}

async fn pg_ctl_start(runner: &Runner, paths: &Paths) -> Result<(), EmbeddedPgError> {
    let log_start = paths.log_len();
    let args: [&std::ffi::OsStr; 9] = [
        "start".as_ref(),
        "-w".as_ref(),
        "-t".as_ref(),
        PG_CTL_TIMEOUT_SECS.as_ref(),
        "-D".as_ref(),
        paths.data_dir.as_os_str(),
        "-l".as_ref(),
        paths.log_file.as_os_str(),
        "-s".as_ref(),
    ];
    let out = runner.output(&runner.bins.pg_ctl, &args).await?;
    if out.status.success() {
        return Ok(());
    }
    let detail = match output_text(&out) {
        text if text.is_empty() => format!("pg_ctl start exited with {}", status_text(out.status)),
        text => text,
    };
    Err(EmbeddedPgError::StartFailed {
        detail,
        log: paths.log_file.clone(),
        log_tail: paths.log_tail_since(log_start),
    })
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

    #[tokio::test]
    async fn start_with_empty_search_path_is_not_installed() {
        let dir = tempfile::tempdir().unwrap();
        let err = EmbeddedPostgres::start_with_search_path(dir.path(), &[])
            .await
            .unwrap_err();
        assert!(matches!(err, EmbeddedPgError::NotInstalled { .. }), "{err}");
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

    #[test]
    fn passwd_lookup() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\npostgres:x:101:104:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash\n";
        assert_eq!(
            lookup_user(passwd, "postgres"),
            Some(RunAs { uid: 101, gid: 104 })
        );
        assert_eq!(lookup_user(passwd, "nobody"), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(conf_string("/a b/it's\\"), "'/a b/it''s\\\\'");
        assert_eq!(url_encode("abc-123_~."), "abc-123_~.");
        assert_eq!(url_encode("p@ss:w/rd"), "p%40ss%3Aw%2Frd");
    }

    #[test]
    fn default_state_dir_is_absolute() {
        let dir = default_state_dir();
        assert!(dir.is_absolute(), "{}", dir.display());
        assert!(dir.ends_with("slipway/dev"), "{}", dir.display());
        if is_root() {
            assert_eq!(dir, Path::new("/var/lib/slipway/dev"));
        }
    }

    /// A scratch directory the `postgres` user can traverse when the tests run as root.
    fn scratch_dir() -> tempfile::TempDir {
        use std::os::unix::fs::PermissionsExt as _;
        let base = if is_root() {
            PathBuf::from("/var/tmp")
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("slipway-embedded-pg-")
            .tempdir_in(base)
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    #[tokio::test]
    async fn starts_persists_and_restarts() {
        let scratch = scratch_dir();
        let state_dir = scratch.path().join("dev");

        let pg = EmbeddedPostgres::start(&state_dir).await.unwrap();
        let url = pg.database_url().to_owned();
        assert!(url.starts_with("postgres://slipway:"), "{url}");
        assert!(
            url.ends_with(&format!("@127.0.0.1:{}/slipway", pg.port())),
            "{url}"
        );
        let mode = std::fs::metadata(state_dir.join("password"))
            .unwrap()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let mut conn = PgConnection::connect(&url).await.unwrap();
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(one, 1);
        let addr: String = sqlx::query_scalar("SELECT current_setting('listen_addresses')")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(addr, "127.0.0.1");
        sqlx::raw_sql("CREATE TABLE persisted (v text); INSERT INTO persisted VALUES ('kept')")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        pg.stop().await.unwrap();

        let pg = EmbeddedPostgres::start(&state_dir).await.unwrap();
        assert_eq!(
            pg.database_url().split('@').next(),
            url.split('@').next(),
            "the password is reused"
        );
        let mut conn = PgConnection::connect(pg.database_url()).await.unwrap();
        let v: String = sqlx::query_scalar("SELECT v FROM persisted")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(v, "kept");
        conn.close().await.unwrap();
        pg.stop().await.unwrap();

        // A pid file left behind whose pid now belongs to another program does not block a start.
        let pid_file = state_dir.join("pgdata").join("postmaster.pid");
        std::fs::write(
            &pid_file,
            format!("1\n{}\n", state_dir.join("pgdata").display()),
        )
        .unwrap();

        // Dropping without stop() also shuts the server down.
        let pg = EmbeddedPostgres::start(&state_dir).await.unwrap();
        let runner = pg.runner.clone();
        let data_dir = pg.paths.data_dir.clone();
        drop(pg);
        assert!(!runner.is_running(&data_dir).await.unwrap());
    }

    #[tokio::test]
    async fn start_failure_reports_the_log() {
        let scratch = scratch_dir();
        let state_dir = scratch.path().join("dev");
        EmbeddedPostgres::start(&state_dir)
            .await
            .unwrap()
            .stop()
            .await
            .unwrap();

        let conf = state_dir.join("pgdata").join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap();
        text.push_str("\nshared_buffers = 'not a size'\n");
        std::fs::write(&conf, text).unwrap();

        let err = EmbeddedPostgres::start(&state_dir).await.unwrap_err();
        assert!(matches!(err, EmbeddedPgError::StartFailed { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains(&state_dir.join("postgres.log").display().to_string()),
            "{msg}"
        );
        assert!(msg.contains("shared_buffers"), "{msg}");
    }

    #[tokio::test]
    async fn root_needs_a_traversable_state_dir() {
        use std::os::unix::fs::PermissionsExt as _;
        if !is_root() {
            return;
        }
        let scratch = tempfile::Builder::new()
            .prefix("slipway-embedded-pg-private-")
            .tempdir_in("/var/tmp")
            .unwrap();
        std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let err = EmbeddedPostgres::start(&scratch.path().join("dev"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, EmbeddedPgError::StateDirNotTraversable { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("/var/lib/slipway/dev"), "{err}");
    }
}
