//! The API client commands of `slipway`: request and command deployments, watch them, read
//! events and lists. For pipelines: `--output json`, and exit codes that tell how a
//! deployment ended (see [`Exit`]).

mod args;
mod exit;
mod progress;
mod view;
mod watch;

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

use serde_json::{Map, Value, json};
use tokio::time::Instant;
use uuid::Uuid;

pub use args::{
    AppsCommand, ClientCommand, CommandArgs, Connection, DeployArgs, DeploymentsCommand,
    EnvsCommand, EventsArgs, OutputFormat, StatusArgs,
};
pub use exit::Exit;

use crate::client::{Client, ClientError};
use progress::{EventPrinter, Progress, Style};
use watch::Ended;

/// Why a command stopped early.
#[derive(Debug)]
enum Failure {
    /// Arguments the server was never asked about.
    Usage(String),
    Client(ClientError),
    /// A keyed request got no usable answer: it may or may not have been recorded.
    Unanswered {
        error: ClientError,
        key: String,
    },
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Self::Client(e)
    }
}

/// Runs a client command and tells how it ended. Needs a Tokio runtime and an installed
/// rustls crypto provider.
pub async fn run(command: ClientCommand) -> ExitCode {
    let token_given = connection(&command)
        .token
        .as_ref()
        .is_some_and(|t| !t.is_empty());
    let exit = match dispatch(command).await {
        Ok(exit) => exit,
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            Exit::Usage
        }
        Err(Failure::Client(e)) => {
            let exit = Exit::of_error(&e);
            eprintln!("error: {e}");
            if exit == Exit::Auth && !token_given && e.status() == Some(401) {
                eprintln!("hint: pass a token with --token or SLIPWAY_TOKEN");
            }
            exit
        }
        Err(Failure::Unanswered { error, key }) => {
            eprintln!("error: {error}");
            eprintln!(
                "the request may or may not have been recorded; repeating it with \
                 --idempotency-key {key} is safe"
            );
            Exit::of_error(&error)
        }
    };
    exit.into()
}

fn connection(command: &ClientCommand) -> &Connection {
    match command {
        ClientCommand::Deploy(a) => &a.conn,
        ClientCommand::Status(a) => &a.conn,
        ClientCommand::Promote(a)
        | ClientCommand::Approve(a)
        | ClientCommand::Pause(a)
        | ClientCommand::Resume(a)
        | ClientCommand::Abort(a)
        | ClientCommand::Rollback(a)
        | ClientCommand::Retry(a) => &a.conn,
        ClientCommand::Events(a) => &a.conn,
        ClientCommand::Apps {
            command: AppsCommand::List { conn },
        }
        | ClientCommand::Envs {
            command: EnvsCommand::List { conn, .. },
        }
        | ClientCommand::Deployments {
            command: DeploymentsCommand::List { conn, .. },
        } => conn,
    }
}

async fn dispatch(command: ClientCommand) -> Result<Exit, Failure> {
    match command {
        ClientCommand::Deploy(a) => deploy(a).await,
        ClientCommand::Status(a) => status(a).await,
        ClientCommand::Promote(a) => send("promote", a).await,
        ClientCommand::Approve(a) => send("approve", a).await,
        ClientCommand::Pause(a) => send("pause", a).await,
        ClientCommand::Resume(a) => send("resume", a).await,
        ClientCommand::Abort(a) => send("abort", a).await,
        ClientCommand::Rollback(a) => send("rollback", a).await,
        ClientCommand::Retry(a) => send("retry", a).await,
        ClientCommand::Events(a) => events(a).await,
        ClientCommand::Apps {
            command: AppsCommand::List { conn },
        } => list_apps(conn).await,
        ClientCommand::Envs {
            command: EnvsCommand::List { conn, app },
        } => list_envs(conn, &app).await,
        ClientCommand::Deployments {
            command:
                DeploymentsCommand::List {
                    conn,
                    app,
                    env,
                    status,
                    limit,
                    page_size,
                },
        } => {
            let filter = DeploymentFilter {
                app,
                env,
                status,
                limit,
                page_size,
            };
            list_deployments(conn, filter).await
        }
    }
}

fn client(conn: &Connection) -> Result<Client, Failure> {
    Client::new(&conn.url, conn.token.clone()).map_err(|e| Failure::Usage(e.to_string()))
}

async fn deploy(a: Box<DeployArgs>) -> Result<Exit, Failure> {
    let client = client(&a.conn)?;
    let mut body = Map::new();
    body.insert("image".into(), json!(a.image));
    if let Some(version) = a.version {
        body.insert("version".into(), json!(version));
    }
    if let Some(strategy) = &a.strategy {
        body.insert("strategy".into(), read_strategy(strategy)?);
    }
    if let Some(reason) = a.reason {
        body.insert("reason".into(), json!(reason));
    }
    let mut source = Map::new();
    source.insert("kind".into(), json!("cli"));
    for (key, value) in [
        ("commit", a.commit),
        ("repository", a.repository),
        ("url", a.source_url),
    ] {
        if let Some(value) = value {
            source.insert(key.into(), json!(value));
        }
    }
    body.insert("source".into(), Value::Object(source));
    let key = a
        .idempotency_key
        .unwrap_or_else(|| Uuid::new_v4().to_string());
    let path = format!(
        "v1/apps/{}/environments/{}/deployments",
        segment(&a.app),
        segment(&a.env)
    );
    let d = keyed(client.post(&path, &Value::Object(body), &key).await, &key)?;
    let format = a.conn.output;
    if !a.wait {
        match format {
            OutputFormat::Json => document(&d),
            OutputFormat::Human => out(&view::created_line(&d)),
        }
        return Ok(Exit::Succeeded);
    }
    if format == OutputFormat::Human {
        out(&view::created_line(&d));
    }
    let id = deployment_id(&d)?;
    wait_for(&client, id, a.timeout, format, 0, false).await
}

async fn status(a: StatusArgs) -> Result<Exit, Failure> {
    let client = client(&a.conn)?;
    if a.watch {
        return wait_for(&client, a.id, a.timeout, a.conn.output, 0, true).await;
    }
    let d = client.get(&format!("v1/deployments/{}", a.id), &[]).await?;
    match a.conn.output {
        OutputFormat::Json => document(&d),
        OutputFormat::Human => out(&view::summary(&d)),
    }
    Ok(Exit::of_status(view::status(&d)))
}

/// Waits for deployment `id` to end, showing progress, and prints how it ended.
async fn wait_for(
    client: &Client,
    id: Uuid,
    timeout: slipway_core::DurationSpec,
    format: OutputFormat,
    min_seq: i64,
    full_summary: bool,
) -> Result<Exit, Failure> {
    let style = match format {
        OutputFormat::Json => Style::Silent,
        OutputFormat::Human if std::io::stdout().is_terminal() => Style::Live,
        OutputFormat::Human => Style::Lines,
    };
    let mut progress = Progress::new(style);
    let deadline = Instant::now() + timeout.as_std();
    let ended = watch::watch(client, id, Some(deadline), min_seq, &mut progress).await;
    progress.finish();
    match ended? {
        Ended::Finished(d) => {
            match format {
                OutputFormat::Json => document(&d),
                OutputFormat::Human if full_summary => out(&view::summary(&d)),
                OutputFormat::Human => out(&view::outcome_line(&d)),
            }
            Ok(Exit::of_status(view::status(&d)))
        }
        Ended::TimedOut(d) => {
            if format == OutputFormat::Json && !d.is_null() {
                document(&d);
            }
            let state = if d.is_null() {
                "no answer from the server".to_owned()
            } else {
                view::state_line(&d)
            };
            eprintln!("timed out after {timeout} waiting for deployment {id} to end: {state}");
            Ok(Exit::TimedOut)
        }
    }
}

async fn send(kind: &str, a: CommandArgs) -> Result<Exit, Failure> {
    let client = client(&a.conn)?;
    let body = match a.reason {
        Some(reason) => json!({ "reason": reason }),
        None => json!({}),
    };
    let key = a
        .idempotency_key
        .unwrap_or_else(|| Uuid::new_v4().to_string());
    // A retried deployment is still at its old end until the engine requeues it, which it
    // logs: the wait is for an end after that.
    let min_seq = if a.wait && kind == "retry" {
        watch::last_seq(&client, a.id).await?
    } else {
        0
    };
    let path = format!("v1/deployments/{}/{kind}", a.id);
    let accepted = keyed(client.post(&path, &body, &key).await, &key)?;
    if a.wait {
        if a.conn.output == OutputFormat::Human {
            out(&format!("{kind} recorded for deployment {}", a.id));
        }
        return wait_for(&client, a.id, a.timeout, a.conn.output, min_seq, false).await;
    }
    match a.conn.output {
        OutputFormat::Json => document(&accepted),
        OutputFormat::Human => {
            let d = accepted.get("deployment").unwrap_or(&Value::Null);
            out(&format!(
                "{kind} recorded for deployment {} (command {}); the engine applies it \
                 (the deployment was {})",
                a.id,
                view::text(&accepted, "command_id"),
                view::status(d)
            ));
        }
    }
    Ok(Exit::Succeeded)
}

async fn events(a: EventsArgs) -> Result<Exit, Failure> {
    let client = client(&a.conn)?;
    let json = a.conn.output == OutputFormat::Json;
    if !a.follow {
        let events = client
            .list_all(&format!("v1/deployments/{}/events", a.id), &[], None)
            .await?;
        if json {
            document(&Value::Array(events));
        } else {
            for e in &events {
                out(&view::event_line(e));
            }
        }
        return Ok(Exit::Succeeded);
    }
    let deadline = a.timeout.map(|t| Instant::now() + t.as_std());
    let mut printer = EventPrinter { json };
    match watch::watch(&client, a.id, deadline, 0, &mut printer).await? {
        Ended::Finished(d) => Ok(Exit::of_status(view::status(&d))),
        Ended::TimedOut(_) => {
            eprintln!("stopped following deployment {}: timed out", a.id);
            Ok(Exit::TimedOut)
        }
    }
}

async fn list_apps(conn: Connection) -> Result<Exit, Failure> {
    let items = client(&conn)?.list_all("v1/apps", &[], None).await?;
    print_list(conn.output, &items, &["NAME", "DESCRIPTION"], |a| {
        vec![
            view::text(a, "name").into(),
            view::text(a, "description").into(),
        ]
    });
    Ok(Exit::Succeeded)
}

async fn list_envs(conn: Connection, app: &str) -> Result<Exit, Failure> {
    let path = format!("v1/apps/{}/environments", segment(app));
    let items = client(&conn)?.list_all(&path, &[], None).await?;
    let header = ["NAME", "CLUSTER", "NAMESPACE", "WORKLOAD", "STRATEGY"];
    print_list(conn.output, &items, &header, |e| {
        let workload = e.get("workload").unwrap_or(&Value::Null);
        let replicas = workload
            .get("replicas")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        vec![
            view::text(e, "name").into(),
            view::text(e, "cluster").into(),
            view::text(e, "namespace").into(),
            format!("{} ×{replicas}", view::text(workload, "name")),
            view::text(e.get("strategy").unwrap_or(&Value::Null), "type").into(),
        ]
    });
    Ok(Exit::Succeeded)
}

struct DeploymentFilter {
    app: Option<String>,
    env: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
    page_size: u16,
}

async fn list_deployments(conn: Connection, f: DeploymentFilter) -> Result<Exit, Failure> {
    let mut query: Vec<(&str, &str)> = Vec::new();
    for (key, value) in [
        ("app", &f.app),
        ("environment", &f.env),
        ("status", &f.status),
    ] {
        if let Some(value) = value {
            query.push((key, value));
        }
    }
    let items = client(&conn)?
        .with_page_size(usize::from(f.page_size))
        .list_all("v1/deployments", &query, f.limit)
        .await?;
    let header = ["ID", "APP", "ENV", "VERSION", "STATUS", "CREATED"];
    print_list(conn.output, &items, &header, |d| {
        vec![
            view::text(d, "id").into(),
            view::text(d, "app").into(),
            view::text(d, "environment").into(),
            view::text(d, "version").into(),
            view::status(d).into(),
            view::text(d, "created_at").into(),
        ]
    });
    Ok(Exit::Succeeded)
}

/// A JSON array for machines, a table for people.
fn print_list(
    format: OutputFormat,
    items: &[Value],
    header: &[&str],
    row: impl Fn(&Value) -> Vec<String>,
) {
    match format {
        OutputFormat::Json => document(&Value::Array(items.to_vec())),
        OutputFormat::Human => {
            let rows: Vec<Vec<String>> = items.iter().map(row).collect();
            out(&view::table(header, &rows));
        }
    }
}

/// The answer to a keyed POST; without one, the failure carries the key to repeat it with.
fn keyed(answer: Result<Value, ClientError>, key: &str) -> Result<Value, Failure> {
    answer.map_err(|error| {
        if Exit::of_error(&error) == Exit::Unavailable {
            Failure::Unanswered {
                error,
                key: key.to_owned(),
            }
        } else {
            Failure::Client(error)
        }
    })
}

fn deployment_id(d: &Value) -> Result<Uuid, Failure> {
    view::text(d, "id").parse().map_err(|_| {
        Failure::Client(ClientError::Decode {
            what: "the created deployment".into(),
            message: "no deployment id in the answer".into(),
        })
    })
}

/// The `--strategy` argument: JSON, `@file`, or `@-` (standard input).
fn read_strategy(arg: &str) -> Result<Value, Failure> {
    let (text, from) = if arg == "@-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|e| {
            Failure::Usage(format!("--strategy @-: cannot read standard input: {e}"))
        })?;
        (text, "standard input".to_owned())
    } else if let Some(path) = arg.strip_prefix('@') {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Failure::Usage(format!("--strategy: cannot read {path}: {e}")))?;
        (text, path.to_owned())
    } else {
        (arg.to_owned(), "the value".to_owned())
    };
    let strategy: Value = serde_json::from_str(&text)
        .map_err(|e| Failure::Usage(format!("--strategy: {from} is not JSON: {e}")))?;
    if !strategy.is_object() {
        return Err(Failure::Usage(format!(
            "--strategy: {from} must be a JSON object like {{\"type\": \"rolling\"}}"
        )));
    }
    Ok(strategy)
}

/// `name` as one URL path segment (percent-encoded beyond the unreserved characters).
fn segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One JSON document on stdout.
fn document(v: &Value) {
    out(&serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()));
}

/// A line on stdout; a closed pipe (`| head`) is not an error worth a panic.
fn out(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_as_path_segments() {
        assert_eq!(segment("web-1.a_b~"), "web-1.a_b~");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn a_strategy_must_be_a_json_object() {
        assert!(read_strategy(r#"{"type": "rolling"}"#).is_ok());
        assert!(matches!(read_strategy("[1]"), Err(Failure::Usage(_))));
        assert!(matches!(read_strategy("{nope"), Err(Failure::Usage(_))));
        assert!(matches!(
            read_strategy("@/nonexistent/strategy.json"),
            Err(Failure::Usage(m)) if m.contains("/nonexistent/strategy.json")
        ));
    }
}
