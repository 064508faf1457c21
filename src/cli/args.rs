//! The command line of the API client commands (`deploy`, `status`, commands, `events`,
//! lists). `main.rs` flattens [`ClientCommand`] into the binary's subcommands.

use clap::{Args, Subcommand, ValueEnum};
use slipway_core::DurationSpec;
use uuid::Uuid;

/// The client's subcommands.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Request a deployment of an image to an app's environment (optionally wait for its end).
    Deploy(Box<DeployArgs>),
    /// Show a deployment (optionally watch it until it ends).
    Status(StatusArgs),
    /// Move a deployment past a pause or promotion gate.
    Promote(CommandArgs),
    /// Give a deployment the approval it waits for.
    Approve(CommandArgs),
    /// Hold a deployment where it is.
    Pause(CommandArgs),
    /// Let a paused deployment go on.
    Resume(CommandArgs),
    /// Return traffic and replicas to the previous version (cancels a queued deployment).
    Abort(CommandArgs),
    /// Roll a deployment back to the previous version.
    Rollback(CommandArgs),
    /// Start a failed or rolled-back deployment again.
    Retry(CommandArgs),
    /// Print a deployment's events (optionally follow them live until it ends).
    Events(EventsArgs),
    /// Apps.
    Apps {
        #[command(subcommand)]
        command: AppsCommand,
    },
    /// Environments of an app.
    Envs {
        #[command(subcommand)]
        command: EnvsCommand,
    },
    /// Deployments.
    Deployments {
        #[command(subcommand)]
        command: DeploymentsCommand,
    },
}

/// Where the server is, who is asking, and how to print.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// Slipway server URL.
    #[arg(long, env = "SLIPWAY_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Bearer token (a JWT) sent as `Authorization: Bearer <token>`.
    #[arg(long, env = "SLIPWAY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// `human` (a live progress line on a terminal) or `json` (one JSON document; JSON lines
    /// for event streams).
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Human,
    Json,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    #[command(flatten)]
    pub conn: Connection,
    /// App to deploy.
    #[arg(long)]
    pub app: String,
    /// Environment of the app to deploy to.
    #[arg(long = "env")]
    pub env: String,
    /// OCI image reference, pinned by tag and/or digest.
    #[arg(long)]
    pub image: String,
    /// Version label (default: the image tag).
    #[arg(long)]
    pub version: Option<String>,
    /// Strategy for this deployment only: JSON, `@file`, or `@-` for standard input.
    #[arg(long, value_name = "JSON|@FILE")]
    pub strategy: Option<String>,
    /// Why this change is made, for the audit trail.
    #[arg(long)]
    pub reason: Option<String>,
    /// Commit the image was built from (recorded as the deployment's source).
    #[arg(long)]
    pub commit: Option<String>,
    /// Repository of that commit, e.g. `acme/web`.
    #[arg(long)]
    pub repository: Option<String>,
    /// Link back to the pipeline run.
    #[arg(long)]
    pub source_url: Option<String>,
    /// Makes the request safe to repeat: the same key never creates a second deployment
    /// (default: a new random key, reused by this command's own retries).
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Wait until the deployment ends; the exit code tells how.
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits (e.g. 90s, 15m, 1h).
    #[arg(long, default_value = "15m", requires = "wait")]
    pub timeout: DurationSpec,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub conn: Connection,
    /// Deployment id.
    pub id: Uuid,
    /// Watch until the deployment ends; the exit code tells how.
    #[arg(long)]
    pub watch: bool,
    /// How long `--watch` waits.
    #[arg(long, default_value = "15m", requires = "watch")]
    pub timeout: DurationSpec,
}

#[derive(Debug, Args)]
pub struct CommandArgs {
    #[command(flatten)]
    pub conn: Connection,
    /// Deployment id.
    pub id: Uuid,
    /// Why, for the audit trail.
    #[arg(long)]
    pub reason: Option<String>,
    /// Makes the command safe to repeat (default: a new random key).
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Then wait until the deployment ends (after `retry`: the new attempt); the exit code
    /// tells how.
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits.
    #[arg(long, default_value = "15m", requires = "wait")]
    pub timeout: DurationSpec,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    pub conn: Connection,
    /// Deployment id.
    pub id: Uuid,
    /// Keep printing events as they happen, until the deployment ends.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Stop following after this long (exit code 3).
    #[arg(long, requires = "follow")]
    pub timeout: Option<DurationSpec>,
}

#[derive(Debug, Subcommand)]
pub enum AppsCommand {
    /// List apps.
    List {
        #[command(flatten)]
        conn: Connection,
    },
}

#[derive(Debug, Subcommand)]
pub enum EnvsCommand {
    /// List an app's environments.
    List {
        #[command(flatten)]
        conn: Connection,
        /// The app.
        #[arg(long)]
        app: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeploymentsCommand {
    /// List deployments, newest first.
    List {
        #[command(flatten)]
        conn: Connection,
        /// Only this app's.
        #[arg(long)]
        app: Option<String>,
        /// Only to environments of this name.
        #[arg(long = "env")]
        env: Option<String>,
        /// Only in these statuses (comma-separated, e.g. `running,paused`).
        #[arg(long)]
        status: Option<String>,
        /// At most this many (default: all).
        #[arg(long)]
        limit: Option<usize>,
        /// Deployments asked for per request (1–500); pages are followed to the end.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u16).range(1..=500))]
        page_size: u16,
    },
}
