//! Tests of [`EmbeddedPostgres`] against real PostgreSQL servers, and of its helpers.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

use super::cluster::conf_string;
use super::system_user::is_root;
use super::*;

#[tokio::test]
async fn start_with_empty_search_path_is_not_installed() {
    let dir = tempfile::tempdir().unwrap();
    let err = EmbeddedPostgres::start_with_search_path(dir.path(), &[])
        .await
        .unwrap_err();
    assert!(matches!(err, EmbeddedPgError::NotInstalled { .. }), "{err}");
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
