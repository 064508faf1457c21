//! The cluster on disk and the commands that manage it: the state directory's paths, the
//! password file, the settings file, `initdb`, and `pg_ctl` start / status / stop run through
//! the [`Runner`].

use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output};

use super::binaries::{PgBinaries, parse_version};
use super::system_user::RunAs;
use super::{EmbeddedPgError, ROLE, io_err};

/// File (inside the data directory) with the settings slipway rewrites at every start.
const SETTINGS_FILE: &str = "slipway.conf";
const INCLUDE_LINE: &str = "include_if_exists = 'slipway.conf'";
/// Seconds `pg_ctl -w` waits for start-up / shutdown.
const PG_CTL_TIMEOUT_SECS: &str = "120";
/// `sizeof(sockaddr_un.sun_path)` on Linux, including the terminating NUL.
const UNIX_SOCKET_PATH_MAX: usize = 108;
/// How much of a log or of a command's output an error message quotes.
const TAIL_LINES: usize = 30;

/// Reads the stored password, or creates one (mode 0600) if the cluster does not exist yet.
pub(super) fn ensure_password(paths: &Paths) -> Result<String, EmbeddedPgError> {
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
pub(super) fn conf_string(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// The last [`TAIL_LINES`] lines of `text`.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

pub(super) fn output_text(output: &Output) -> String {
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

pub(super) fn free_port() -> Result<u16, EmbeddedPgError> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(io_err("picking a free port on 127.0.0.1"))?;
    let port = listener
        .local_addr()
        .map_err(io_err("picking a free port on 127.0.0.1"))?
        .port();
    Ok(port)
}

/// Every path [`EmbeddedPostgres`](super::EmbeddedPostgres) uses.
#[derive(Debug, Clone)]
pub(super) struct Paths {
    pub(super) state_dir: PathBuf,
    pub(super) data_dir: PathBuf,
    pub(super) password_file: PathBuf,
    pub(super) log_file: PathBuf,
    pub(super) socket_dir: PathBuf,
}

impl Paths {
    pub(super) fn new(state_dir: &Path) -> Self {
        Self {
            state_dir: state_dir.to_path_buf(),
            data_dir: state_dir.join("pgdata"),
            password_file: state_dir.join("password"),
            log_file: state_dir.join("postgres.log"),
            socket_dir: state_dir.join("run"),
        }
    }

    pub(super) fn is_initialised(&self) -> bool {
        self.data_dir.join("PG_VERSION").is_file()
    }

    /// The major version the existing cluster was made with, if any.
    pub(super) fn cluster_version(&self) -> Option<String> {
        let version = std::fs::read_to_string(self.data_dir.join("PG_VERSION")).ok()?;
        let version = version.trim();
        parse_version(version).map(|_| version.to_owned())
    }

    /// Removes `postmaster.pid` when the process it names is gone, a zombie, or not a
    /// PostgreSQL server (after a reboot or a restored machine the pid may belong to another
    /// program, and the server would then refuse to start).
    pub(super) fn remove_stale_pid_file(&self) -> Result<(), EmbeddedPgError> {
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
pub(super) struct Runner {
    pub(super) bins: PgBinaries,
    pub(super) run_as: Option<RunAs>,
    pub(super) cwd: PathBuf,
}

impl Runner {
    fn command(&self, program: &Path) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(program);
        self.prepare(cmd.as_std_mut());
        cmd.stdin(std::process::Stdio::null());
        cmd.kill_on_drop(false);
        cmd
    }

    pub(super) fn std_command(&self, program: &Path) -> std::process::Command {
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
    pub(super) async fn is_running(&self, data_dir: &Path) -> Result<bool, EmbeddedPgError> {
        let out = self
            .output(
                &self.bins.pg_ctl,
                &["status".as_ref(), "-D".as_ref(), data_dir.as_os_str()],
            )
            .await?;
        Ok(out.status.success())
    }

    /// `pg_ctl stop -m fast`, waiting until the server is down.
    pub(super) fn stop_args(data_dir: &Path) -> [&std::ffi::OsStr; 8] {
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

    pub(super) async fn stop(&self, paths: &Paths) -> Result<(), EmbeddedPgError> {
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

pub(super) async fn initdb(runner: &Runner, paths: &Paths) -> Result<(), EmbeddedPgError> {
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
pub(super) fn ensure_include_line(paths: &Paths) -> Result<(), EmbeddedPgError> {
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
pub(super) fn write_settings(
    paths: &Paths,
    port: u16,
    run_as: Option<RunAs>,
) -> Result<(), EmbeddedPgError> {
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

pub(super) async fn pg_ctl_start(runner: &Runner, paths: &Paths) -> Result<(), EmbeddedPgError> {
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
