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

mod binaries;
mod cluster;
mod system_user;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

use std::fmt;
use std::io;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use sqlx::{Connection as _, Row as _};

pub use binaries::{PgBinaries, default_search_dirs, find_binaries};

use binaries::DEBIAN_PG_ROOT;
use cluster::{
    Paths, Runner, ensure_include_line, ensure_password, free_port, initdb, output_text,
    pg_ctl_start, write_settings,
};
use system_user::{check_traversable, chown_tree, current_uid, is_root, system_user};

/// Name of the role created by `initdb` and used in [`EmbeddedPostgres::database_url`].
const ROLE: &str = "slipway";
/// Name of the application database created on first start.
const DATABASE: &str = "slipway";
/// Start attempts when the freshly picked port was taken by someone else in the meantime.
const START_ATTEMPTS: u32 = 3;

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
