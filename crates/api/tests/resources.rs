//! The happy path of every endpoint, against a real Postgres.

#![expect(
    clippy::expect_used,
    reason = "a failed expectation is the test failing"
)]

mod common;

use common::{ADMIN, DEPLOYMENTS, TestApp, canary_env, deployment_request, overridable_env};
use reqwest::StatusCode;
use serde_json::{Value, json};
use slipway_core::DeploymentStatus;
use sqlx::PgPool;
use uuid::Uuid;

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["name"].as_str().expect("name").to_owned())
        .collect()
}

fn ids(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["id"].as_str().expect("id").to_owned())
        .collect()
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn clusters_are_registered_read_and_listed(pool: PgPool) {
    let app = TestApp::spawn(pool).await;

    let created = app
        .post_json(
            "/v1/clusters",
            &json!({"name": "local", "kind": "simulated"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.header("location"), Some("/v1/clusters/local"));
    assert!(created.content_type().starts_with("application/json"));
    assert_eq!(created.body["name"], "local");
    assert_eq!(created.body["kind"], "simulated");
    assert!(created.body.get("kubeconfig_path").is_none());
    assert!(created.body["created_at"].is_string());

    let kube = app
        .post_json(
            "/v1/clusters",
            &json!({"name": "prod-eu", "kind": "kubernetes", "kubeconfig_path": "/etc/slipway/prod-eu.yaml", "context": "prod-eu"}),
        )
        .await;
    assert_eq!(kube.status, StatusCode::CREATED, "{}", kube.text);
    assert_eq!(kube.body["kubeconfig_path"], "/etc/slipway/prod-eu.yaml");
    assert_eq!(kube.body["context"], "prod-eu");

    let got = app.get("/v1/clusters/local").await;
    assert_eq!(got.status, StatusCode::OK);
    let mut registered = got.body.clone();
    registered.as_object_mut().expect("object").remove("status");
    assert_eq!(registered, created.body);
    // A simulated cluster is always there, and has no version to report.
    assert_eq!(got.body["status"]["reachable"], true);
    assert_eq!(got.body["status"]["server_version"], Value::Null);
    assert_eq!(got.body["status"]["error"], Value::Null);
    assert!(got.body["status"]["checked_at"].is_string());

    let list = app.get("/v1/clusters").await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(names(&list.body), ["local", "prod-eu"]);
    assert_eq!(list.body["next_cursor"], Value::Null);
}

/// The test cluster's kubeconfig (scripts/cluster/start; `scripts/test` sets the variable).
fn test_kubeconfig() -> String {
    std::fs::read_to_string(std::env::var("SLIPWAY_TEST_KUBECONFIG").expect(
        "SLIPWAY_TEST_KUBECONFIG is not set: this test needs the test cluster \
         (scripts/cluster/start, docs/test-cluster.md)",
    ))
    .expect("read the test kubeconfig")
}

/// Writes `text` as a kubeconfig file for one test; returns its path.
fn kubeconfig_file(name: &str, text: &str) -> String {
    let path = std::env::temp_dir().join(format!(
        "slipway-api-{name}-{}-{}.yaml",
        std::process::id(),
        Uuid::new_v4().simple()
    ));
    std::fs::write(&path, text).expect("write kubeconfig");
    path.to_str().expect("utf-8 path").to_owned()
}

/// The kubeconfig with each line starting (after indentation) with `key:` replaced.
fn with_line(text: &str, key: &str, value: &str) -> String {
    text.lines()
        .map(|l| {
            if l.trim_start().starts_with(&format!("{key}:")) {
                let indent = &l[..l.len() - l.trim_start().len()];
                format!("{indent}{key}: {value}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_cluster_reports_whether_it_answers_and_its_version(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let real = test_kubeconfig();
    let token = real
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("token:"))
        .expect("a token in the test kubeconfig")
        .trim()
        .to_owned();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            open.push(s);
        }
    });
    let files = [
        ("up", kubeconfig_file("up", &real)),
        (
            "down",
            kubeconfig_file(
                "down",
                &with_line(&real, "server", &format!("https://127.0.0.1:{closed}")),
            ),
        ),
        (
            "silent",
            kubeconfig_file(
                "silent",
                &with_line(&real, "server", &format!("http://127.0.0.1:{silent_port}")),
            ),
        ),
        (
            "badtoken",
            kubeconfig_file("badtoken", &with_line(&real, "token", "not-a-token")),
        ),
        ("nofile", "/nonexistent/slipway/kubeconfig".to_owned()),
    ];
    for (name, path) in &files {
        let created = app
            .post_json(
                "/v1/clusters",
                &json!({"name": name, "kind": "kubernetes", "kubeconfig_path": path}),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    }

    let up = app.get("/v1/clusters/up").await;
    assert_eq!(up.status, StatusCode::OK, "{}", up.text);
    let status = &up.body["status"];
    assert_eq!(status["reachable"], true, "{status}");
    let version = status["server_version"].as_str().expect("a version");
    assert!(version.starts_with("v1."), "{version}");
    assert_eq!(status["error"], Value::Null);
    assert!(!up.text.contains(&token), "the response holds the token");

    for (name, code) in [
        ("down", "cluster_unreachable"),
        ("silent", "timeout"),
        ("badtoken", "unauthorized"),
        ("nofile", "invalid_kubeconfig"),
    ] {
        let started = std::time::Instant::now();
        let got = app.get(&format!("/v1/clusters/{name}")).await;
        let took = started.elapsed();
        assert_eq!(got.status, StatusCode::OK, "{name}: {}", got.text);
        let status = &got.body["status"];
        assert_eq!(status["reachable"], false, "{name}: {status}");
        assert_eq!(status["server_version"], Value::Null, "{name}");
        assert_eq!(status["error"]["code"], code, "{name}: {status}");
        assert!(status["error"]["message"].is_string(), "{name}");
        assert!(
            took < std::time::Duration::from_secs(5),
            "{name} took {took:?}"
        );
        assert!(
            !got.text.contains(&token),
            "{name}: the response holds the token"
        );
    }
    held.abort();
    for (_, path) in &files {
        std::fs::remove_file(path).ok();
    }
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn apps_are_created_read_changed_deleted_and_listed(pool: PgPool) {
    let app = TestApp::spawn(pool).await;

    let created = app
        .post_json(
            "/v1/apps",
            &json!({"name": "web", "description": "storefront"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.header("location"), Some("/v1/apps/web"));
    assert_eq!(created.header("etag"), Some("\"1\""));
    assert_eq!(created.body["name"], "web");
    assert_eq!(created.body["description"], "storefront");

    let got = app.get("/v1/apps/web").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.header("etag"), Some("\"1\""));
    assert_eq!(got.body, created.body);

    let patched = app
        .patch_json("/v1/apps/web", &json!({"description": "the shop"}))
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.text);
    assert_eq!(patched.header("etag"), Some("\"2\""));
    assert_eq!(patched.body["description"], "the shop");
    assert_eq!(
        app.get("/v1/apps/web").await.body["description"],
        "the shop"
    );

    // An empty patch changes nothing and keeps the revision.
    let unchanged = app.patch_json("/v1/apps/web", &json!({})).await;
    assert_eq!(unchanged.status, StatusCode::OK);
    assert_eq!(unchanged.header("etag"), Some("\"2\""));

    app.post_json("/v1/apps", &json!({"name": "api"})).await;
    let list = app.get("/v1/apps").await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(names(&list.body), ["api", "web"]);
    assert_eq!(list.body["items"][0]["description"], "");

    let deleted = app.delete("/v1/apps/web").await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(deleted.text.is_empty());
    app.get("/v1/apps/web")
        .await
        .assert_problem(404, "not-found");
    assert_eq!(names(&app.get("/v1/apps").await.body), ["api"]);
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn environments_are_created_replaced_read_and_listed(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed_cluster("local").await;
    app.seed_app("web").await;

    let created = app
        .put_json("/v1/apps/web/environments/prod", &canary_env())
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.header("etag"), Some("\"1\""));
    assert_eq!(
        created.header("location"),
        Some("/v1/apps/web/environments/prod")
    );
    assert_eq!(created.body["app"], "web");
    assert_eq!(created.body["name"], "prod");
    assert_eq!(created.body["cluster"], "local");
    assert_eq!(created.body["workload"]["replicas"], 4);
    assert_eq!(created.body["strategy"]["type"], "canary");
    assert_eq!(
        created.body["strategy"]["steps"][1],
        json!({"pause": {"duration": "5m"}})
    );
    assert_eq!(created.body["progress_deadline"], "10m");
    assert_eq!(
        created.body["approval"],
        json!({"required": true, "distinct_approver": true})
    );

    let mut rolling = canary_env();
    rolling["strategy"] = json!({"type": "rolling", "max_surge": "25%", "max_unavailable": 0});
    let replaced = app
        .put_json("/v1/apps/web/environments/prod", &rolling)
        .await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.text);
    assert_eq!(replaced.header("etag"), Some("\"2\""));
    assert!(replaced.header("location").is_none());
    assert_eq!(
        replaced.body["strategy"],
        json!({"type": "rolling", "max_surge": "25%", "max_unavailable": 0})
    );

    let got = app.get("/v1/apps/web/environments/prod").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.header("etag"), Some("\"2\""));
    assert_eq!(got.body, replaced.body);

    let mut staging = canary_env();
    staging["workload"]["name"] = json!("web-staging");
    staging["strategy"] = json!({"type": "blue_green", "auto_promote": false, "auto_promote_after": "2m",
                                  "scale_down_delay": "30s", "preview_replicas": 2});
    let bg = app
        .put_json("/v1/apps/web/environments/staging", &staging)
        .await;
    assert_eq!(bg.status, StatusCode::CREATED, "{}", bg.text);

    let list = app.get("/v1/apps/web/environments").await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(names(&list.body), ["prod", "staging"]);
    assert_eq!(list.body["next_cursor"], Value::Null);
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_deployment_is_recorded_as_queued(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed().await;
    let env = app.get("/v1/apps/web/environments/prod").await.body;

    let created = app.post_json(DEPLOYMENTS, &deployment_request()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let d = &created.body;
    let id: Uuid = d["id"].as_str().expect("id").parse().expect("a UUID");
    assert_eq!(
        created.header("location"),
        Some(format!("/v1/deployments/{id}").as_str())
    );
    assert_eq!(d["app"], "web");
    assert_eq!(d["environment"], "prod");
    assert_eq!(d["image"], "ghcr.io/acme/web:1.4.2");
    assert_eq!(d["version"], "1.4.2", "the version comes from the tag");
    assert_eq!(
        d["strategy"], env["strategy"],
        "the environment's strategy is frozen"
    );
    assert_eq!(d["status"], "queued");
    assert_eq!(d["phase"], Value::Null);
    assert_eq!(d["step"], Value::Null);
    assert_eq!(d["outcome"], Value::Null);
    assert_eq!(d["serving"], json!({"health": "unknown", "version": null}));
    assert_eq!(d["reason"], Value::Null);
    assert_eq!(d["request_reason"], "release 1.4.2");
    assert_eq!(
        d["source"],
        json!({"kind": "api", "commit": "3f2a9c1", "repository": "acme/web", "user": "alice"})
    );
    assert_eq!(d["created_by"], ADMIN, "the token's subject asked");
    assert!(d["created_at"].is_string() && d["updated_at"].is_string());

    let got = app.get(&format!("/v1/deployments/{id}")).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(&got.body, d);

    assert_eq!(d["strategy_overridden"], false);

    // An explicit version and strategy (where the environment allows an override) win over
    // the derived ones, and stay frozen when the environment changes afterwards.
    let r = app
        .put_json("/v1/apps/web/environments/prod", &overridable_env())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let rolling = json!({"type": "rolling", "max_surge": 1, "max_unavailable": "10%"});
    let pinned = app
        .post_json(
            DEPLOYMENTS,
            &json!({"image": "ghcr.io/acme/web@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                    "version": "1.4.3-rc.1", "strategy": rolling}),
        )
        .await;
    assert_eq!(pinned.status, StatusCode::CREATED, "{}", pinned.text);
    assert_eq!(pinned.body["version"], "1.4.3-rc.1");
    assert_eq!(pinned.body["strategy"], rolling);
    assert_eq!(pinned.body["strategy_overridden"], true);
    assert_eq!(pinned.body["source"], json!({"kind": "api"}));

    let digest_only = app
        .post_json(
            DEPLOYMENTS,
            &json!({"image": "ghcr.io/acme/web@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}),
        )
        .await;
    assert_eq!(digest_only.body["version"], "0123456789ab");

    let mut changed = canary_env();
    changed["strategy"] = json!({"type": "rolling"});
    assert_eq!(
        app.put_json("/v1/apps/web/environments/prod", &changed)
            .await
            .status,
        StatusCode::OK
    );
    let again = app.get(&format!("/v1/deployments/{id}")).await;
    assert_eq!(again.body["strategy"], env["strategy"]);
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn deployments_are_listed_newest_first_with_filters(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed().await;
    app.seed_env("web", "staging").await;
    app.seed_app("api").await;
    app.seed_env("api", "prod").await;

    let web_prod_1 = app.deploy("web", "prod", "ghcr.io/acme/web:1").await;
    let web_staging = app.deploy("web", "staging", "ghcr.io/acme/web:2").await;
    let api_prod = app.deploy("api", "prod", "ghcr.io/acme/api:1").await;
    let web_prod_2 = app.deploy("web", "prod", "ghcr.io/acme/web:3").await;
    let id = |d: &Value| d["id"].as_str().expect("id").to_owned();

    // One of them runs.
    let running: Uuid = id(&web_prod_1).parse().expect("uuid");
    app.force_status(running, DeploymentStatus::Running)
        .await
        .expect("set running");

    let all = app.get("/v1/deployments").await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.text);
    assert_eq!(
        ids(&all.body),
        [
            id(&web_prod_2),
            id(&api_prod),
            id(&web_staging),
            id(&web_prod_1)
        ]
    );
    assert_eq!(all.body["next_cursor"], Value::Null);

    let web = app.get("/v1/deployments?app=web").await;
    assert_eq!(
        ids(&web.body),
        [id(&web_prod_2), id(&web_staging), id(&web_prod_1)]
    );

    let prod = app.get("/v1/deployments?environment=prod").await;
    assert_eq!(
        ids(&prod.body),
        [id(&web_prod_2), id(&api_prod), id(&web_prod_1)]
    );

    let web_prod = app.get("/v1/deployments?app=web&environment=prod").await;
    assert_eq!(ids(&web_prod.body), [id(&web_prod_2), id(&web_prod_1)]);

    let running_only = app.get("/v1/deployments?status=running").await;
    assert_eq!(ids(&running_only.body), [id(&web_prod_1)]);
    assert_eq!(running_only.body["items"][0]["status"], "running");

    let queued = app.get("/v1/deployments?status=queued&app=web").await;
    assert_eq!(ids(&queued.body), [id(&web_prod_2), id(&web_staging)]);

    let either = app
        .get("/v1/deployments?status=queued,running&environment=prod&app=web")
        .await;
    assert_eq!(ids(&either.body), [id(&web_prod_2), id(&web_prod_1)]);

    let none = app.get("/v1/deployments?status=succeeded").await;
    assert_eq!(none.status, StatusCode::OK);
    assert_eq!(none.body, json!({"items": [], "next_cursor": null}));

    let unknown_app = app.get("/v1/deployments?app=nope").await;
    assert_eq!(unknown_app.body["items"], json!([]));
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_new_deployment_has_its_queued_event(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed().await;
    let d = app.post_json(DEPLOYMENTS, &deployment_request()).await.body;
    let id = d["id"].as_str().expect("id");

    let events = app.get(&format!("/v1/deployments/{id}/events")).await;
    assert_eq!(events.status, StatusCode::OK, "{}", events.text);
    let items = events.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    let first = &items[0];
    assert_eq!(first["seq"], 1);
    assert_eq!(first["kind"], "queued");
    assert_eq!(first["deployment_id"], id);
    assert_eq!(first["actor"], ADMIN);
    assert!(
        first["message"]
            .as_str()
            .expect("message")
            .contains("1.4.2")
    );
    assert_eq!(first["data"]["strategy"], "canary");
    assert_eq!(first["data"]["version"], "1.4.2");
    assert_eq!(events.body["next_cursor"], Value::Null);

    let json_only = app
        .send(
            app.request(
                reqwest::Method::GET,
                &format!("/v1/deployments/{id}/events"),
            )
            .header("accept", "application/json"),
        )
        .await;
    assert_eq!(json_only.status, StatusCode::OK);
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn health_and_readiness_answer_when_migrated(pool: PgPool) {
    let app = TestApp::spawn(pool).await;

    let health = app.get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body, json!({"status": "ok"}));

    let ready = app.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    assert_eq!(ready.body, json!({"status": "ready"}));
    assert!(
        ready.header("x-request-id").is_some(),
        "every answer carries a request id"
    );
}

#[sqlx::test(migrations = false)]
async fn readiness_fails_on_an_unmigrated_database(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ready = app.get("/readyz").await;
    ready.assert_problem(503, "unavailable");
    assert!(
        ready.body["detail"]
            .as_str()
            .expect("detail")
            .contains("migrat")
    );
    // Liveness does not depend on the database.
    assert_eq!(app.get("/healthz").await.status, StatusCode::OK);
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn metrics_count_http_requests(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    assert_eq!(app.get("/healthz").await.status, StatusCode::OK);
    let metrics = app.get("/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(metrics.content_type().starts_with("text/plain"));
    assert!(
        metrics.text.contains("slipway_http_requests_total"),
        "{}",
        metrics.text
    );
    assert!(
        metrics.text.contains("route=\"/healthz\""),
        "{}",
        metrics.text
    );
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn the_api_is_described_and_browsable(pool: PgPool) {
    let app = TestApp::spawn(pool).await;

    let spec = app.get("/openapi.json").await;
    assert_eq!(spec.status, StatusCode::OK);
    assert!(spec.content_type().starts_with("application/json"));
    let version = spec.body["openapi"].as_str().expect("an openapi member");
    assert!(version.starts_with("3.1"), "{version}");
    let paths = spec.body["paths"].as_object().expect("paths");
    for path in [
        "/v1/clusters",
        "/v1/apps/{app}",
        "/v1/apps/{app}/environments/{env}",
        "/v1/apps/{app}/environments/{env}/deployments",
        "/v1/deployments/{id}/events",
        "/readyz",
    ] {
        assert!(paths.contains_key(path), "{path} is not described");
    }

    let docs = app.get("/docs/").await;
    assert_eq!(docs.status, StatusCode::OK);
    assert!(
        docs.content_type().starts_with("text/html"),
        "{}",
        docs.content_type()
    );
    assert!(docs.text.to_lowercase().contains("<html"));
    let docs = app.get("/docs").await;
    assert_eq!(docs.status, StatusCode::OK, "/docs redirects to the UI");
    assert!(docs.text.to_lowercase().contains("<html"));
}
