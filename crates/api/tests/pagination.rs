//! Cursor pagination: pages in order, no repeats, nothing lost while rows are added.

#![expect(
    clippy::expect_used,
    reason = "a failed expectation is the test failing"
)]

mod common;

use std::collections::HashSet;

use common::TestApp;
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;

/// Walks a list page by page; returns each page's items.
async fn walk(app: &TestApp, path: &str, limit: u32) -> Vec<Vec<Value>> {
    let separator = if path.contains('?') { '&' } else { '?' };
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}{separator}limit={limit}&cursor={c}"),
            None => format!("{path}{separator}limit={limit}"),
        };
        let page = app.get(&url).await;
        assert_eq!(page.status, StatusCode::OK, "{url}: {}", page.text);
        pages.push(page.body["items"].as_array().expect("items").clone());
        match &page.body["next_cursor"] {
            Value::Null => return pages,
            Value::String(next) => cursor = Some(next.clone()),
            other => panic!("next_cursor must be a string or null, got {other}"),
        }
        assert!(pages.len() < 100, "the walk does not end");
    }
}

fn field(items: &[Value], key: &str) -> Vec<String> {
    items
        .iter()
        .map(|i| i[key].as_str().expect("string field").to_owned())
        .collect()
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn apps_are_paged_by_name(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut names: Vec<String> = ["web", "api", "billing", "search", "auth", "cart", "mail"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    for name in &names {
        app.seed_app(name).await;
    }
    names.sort();

    let pages = walk(&app, "/v1/apps", 3).await;
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [3, 3, 1]);
    let seen: Vec<String> = pages.iter().flat_map(|p| field(p, "name")).collect();
    assert_eq!(seen, names, "every name once, in order");

    // A page that ends exactly at the last item says there is no more.
    let pages = walk(&app, "/v1/apps", 7).await;
    assert_eq!(pages.len(), 1);
    assert_eq!(pages[0].len(), 7);
    let pages = walk(&app, "/v1/apps", 1).await;
    assert_eq!(pages.len(), 7);
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn clusters_and_environments_are_paged(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    for name in ["c-5", "c-1", "c-4", "c-2", "c-3"] {
        app.seed_cluster(name).await;
    }
    let pages = walk(&app, "/v1/clusters", 2).await;
    let seen: Vec<String> = pages.iter().flat_map(|p| field(p, "name")).collect();
    assert_eq!(seen, ["c-1", "c-2", "c-3", "c-4", "c-5"]);
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);

    app.seed_cluster("local").await;
    app.seed_app("web").await;
    for env in ["prod", "dev", "staging", "qa"] {
        app.seed_env("web", env).await;
    }
    let pages = walk(&app, "/v1/apps/web/environments", 3).await;
    let seen: Vec<String> = pages.iter().flat_map(|p| field(p, "name")).collect();
    assert_eq!(seen, ["dev", "prod", "qa", "staging"]);
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn deployments_are_paged_while_new_ones_arrive(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed().await;
    app.seed_env("web", "staging").await;
    let mut before = HashSet::new();
    for n in 0..8 {
        let env = if n % 2 == 0 { "prod" } else { "staging" };
        let d = app
            .deploy("web", env, &format!("ghcr.io/acme/web:{n}"))
            .await;
        before.insert(d["id"].as_str().expect("id").to_owned());
    }

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut added = 0;
    loop {
        let url = match &cursor {
            Some(c) => format!("/v1/deployments?limit=3&cursor={c}"),
            None => "/v1/deployments?limit=3".to_owned(),
        };
        let page = app.get(&url).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        seen.extend(field(page.body["items"].as_array().expect("items"), "id"));
        // New deployments arrive between page fetches.
        for _ in 0..2 {
            app.deploy("web", "prod", &format!("ghcr.io/acme/web:new-{added}"))
                .await;
            added += 1;
        }
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }

    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "no deployment is repeated: {seen:?}"
    );
    for id in &before {
        assert!(
            seen.contains(id),
            "{id} existed before the walk and was not seen"
        );
    }
    assert_eq!(app.count("deployments").await, 8 + added);

    // Filters page the same way.
    let pages = walk(&app, "/v1/deployments?environment=staging", 3).await;
    let staging: Vec<String> = pages.iter().flat_map(|p| field(p, "id")).collect();
    assert_eq!(staging.len(), 4);
    let mut newest_first = staging.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(staging, newest_first, "newest first (ids are time-ordered)");
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn events_are_paged_by_sequence(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    app.seed().await;
    let d = app.deploy("web", "prod", "web:1").await;
    let id: uuid::Uuid = d["id"].as_str().expect("id").parse().expect("uuid");
    let mut conn = pool.acquire().await.expect("connection");
    for n in 0..4 {
        let event = slipway_store::events::NewEvent {
            kind: slipway_core::EventKind::StepCompleted,
            actor: "test",
            message: format!("note {n}"),
            data: serde_json::json!({"n": n}),
        };
        slipway_store::events::append(&mut conn, id, &event)
            .await
            .expect("append");
    }
    drop(conn);

    let pages = walk(&app, &format!("/v1/deployments/{id}/events"), 2).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
    let seqs: Vec<i64> = pages
        .iter()
        .flatten()
        .map(|e| e["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
}
