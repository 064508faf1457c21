//! `/v1/apps/{app}/triggers`: strict validation with pointers, pagination, deletion, and
//! secrets that are sealed at rest and never returned.

#![expect(
    clippy::expect_used,
    reason = "a failed expectation is the test failing"
)]

mod common;

use common::TestApp;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

pub(crate) const KEY: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";
const SECRET: &str = "s3cr3t-do-not-leak-0123456789";

async fn app(pool: PgPool) -> TestApp {
    let app = TestApp::builder(pool).secrets_key(KEY).start().await;
    app.seed().await;
    app
}

fn github_trigger() -> Value {
    json!({
        "source": "github",
        "event": "push",
        "repository": "acme/web",
        "branch": "main",
        "image": "ghcr.io/acme/web:${sha}",
        "environment": "prod",
        "secret": SECRET
    })
}

const TRIGGERS: &str = "/v1/apps/web/triggers";

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_trigger_is_created_read_listed_and_deleted_without_its_secret(pool: PgPool) {
    let app = app(pool).await;
    let created = app.post_json(TRIGGERS, &github_trigger()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created.header("location"),
        Some(format!("{TRIGGERS}/{id}").as_str())
    );
    assert_eq!(created.body["app"], "web");
    assert_eq!(created.body["source"], "github");
    assert_eq!(created.body["event"], "push");
    assert_eq!(created.body["branch"], "main");
    assert_eq!(created.body["image"], "ghcr.io/acme/web:${sha}");
    assert_eq!(created.body["environment"], "prod");
    assert!(created.body.get("secret").is_none());
    assert!(!created.text.contains(SECRET));

    let got = app.get(&format!("{TRIGGERS}/{id}")).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, created.body);
    assert!(!got.text.contains(SECRET));

    // Sealed at rest: the stored bytes do not hold the secret.
    let sealed: Vec<u8> = sqlx::query_scalar("SELECT secret_sealed FROM triggers")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(!sealed.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()));
    let spec: String = sqlx::query_scalar("SELECT spec::text FROM triggers")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(!spec.contains(SECRET));

    for branch in ["release/*", "hotfix/**"] {
        let mut t = github_trigger();
        t["branch"] = json!(branch);
        let r = app.post_json(TRIGGERS, &t).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    let page = app.get(&format!("{TRIGGERS}?limit=2")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.body["items"].as_array().unwrap().len(), 2);
    assert_eq!(page.body["items"][0]["id"], json!(id));
    let cursor = page.body["next_cursor"].as_str().unwrap().to_owned();
    let rest = app
        .get(&format!("{TRIGGERS}?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(rest.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest.body["items"][0]["branch"], "hotfix/**");
    assert!(rest.body["next_cursor"].is_null());
    assert!(!page.text.contains(SECRET) && !rest.text.contains(SECRET));
    // Another list's cursor is refused.
    app.get(&format!("{TRIGGERS}?cursor=bjE6d2Vi"))
        .await
        .assert_invalid_parameter("cursor");

    let deleted = app.delete(&format!("{TRIGGERS}/{id}")).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    app.get(&format!("{TRIGGERS}/{id}"))
        .await
        .assert_problem(404, "not-found");
    app.delete(&format!("{TRIGGERS}/{id}"))
        .await
        .assert_problem(404, "not-found");
    app.get(&format!("{TRIGGERS}/not-a-uuid"))
        .await
        .assert_problem(404, "not-found");
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn invalid_triggers_name_the_field(pool: PgPool) {
    let app = app(pool).await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"event": null}), "/event"),
        (json!({"event": "pipeline"}), "/event"),
        (json!({"event": "nope"}), "/event"),
        (json!({"repository": "acme"}), "/repository"),
        (json!({"repository": null}), "/repository"),
        (json!({"branch": null}), "/branch"),
        (json!({"branch": "ma in"}), "/branch"),
        (json!({"tag": "v*"}), "/tag"),
        (json!({"image": "ghcr.io/acme/web:${nope}"}), "/image"),
        (json!({"image": "ghcr.io/acme/web:${sha"}), "/image"),
        (json!({"image": "ghcr.io/acme/web:${tag}"}), "/image"),
        (json!({"image": "not an image ${sha}"}), "/image"),
        (json!({"image": null}), "/image"),
        (json!({"environment": "Prod!"}), "/environment"),
        (json!({"secret": "short"}), "/secret"),
        (json!({"workflow": "build"}), "/workflow"),
        (
            json!({"deployment_environment": "production"}),
            "/deployment_environment",
        ),
        (json!({"surprise": 1}), "/surprise"),
    ];
    for (change, pointer) in cases {
        let mut body = github_trigger();
        for (k, v) in change.as_object().unwrap() {
            if v.is_null() {
                body.as_object_mut().unwrap().remove(k);
            } else {
                body[k] = v.clone();
            }
        }
        app.post_json(TRIGGERS, &body)
            .await
            .assert_invalid_field(pointer);
    }
    // Generic triggers name only the environment and a Standard Webhooks secret.
    let generic = json!({"source": "generic", "environment": "prod", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "image": "x:1"});
    app.post_json(TRIGGERS, &generic)
        .await
        .assert_invalid_field("/image");
    let generic = json!({"source": "generic", "environment": "prod", "secret": SECRET});
    app.post_json(TRIGGERS, &generic)
        .await
        .assert_invalid_field("/secret");
    let generic = json!({"source": "generic", "environment": "prod", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"});
    let r = app.post_json(TRIGGERS, &generic).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // A tag variable is known when the trigger matches tags.
    let mut tagged = github_trigger();
    tagged.as_object_mut().unwrap().remove("branch");
    tagged["tag"] = json!("v*");
    tagged["image"] = json!("ghcr.io/acme/web:${version}");
    let r = app.post_json(TRIGGERS, &tagged).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // GitLab events and project paths.
    let gitlab = json!({"source": "gitlab", "event": "tag_push", "repository": "acme/platform/web",
        "tag": "v*", "image": "registry.gitlab.com/acme/web:${tag}", "environment": "prod", "secret": SECRET});
    let r = app.post_json(TRIGGERS, &gitlab).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // Unknown app: 404.
    app.post_json("/v1/apps/nope/triggers", &github_trigger())
        .await
        .assert_problem(404, "not-found");
    app.get("/v1/apps/nope/triggers")
        .await
        .assert_problem(404, "not-found");
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn without_a_secrets_key_no_trigger_is_created(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed().await;
    let r = app.post_json(TRIGGERS, &github_trigger()).await;
    r.assert_problem(409, "conflict");
    assert!(r.text.contains("SLIPWAY_SECRETS_KEY"), "{}", r.text);
    assert_eq!(app.count("triggers").await, 0);
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn only_the_apps_admins_manage_its_triggers(pool: PgPool) {
    let app = app(pool).await;
    let created = app.post_json(TRIGGERS, &github_trigger()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let one = format!("{TRIGGERS}/{}", created.body["id"].as_str().expect("id"));

    // A deployer of the app sees that it exists, but its triggers are the admins' (403).
    app.bind("web", "dora", "deployer", None).await;
    let dora = app.as_user("dora", &[]);
    dora.post_json(TRIGGERS, &github_trigger())
        .await
        .assert_problem(403, "forbidden");
    dora.get(TRIGGERS).await.assert_problem(403, "forbidden");
    dora.get(&one).await.assert_problem(403, "forbidden");

    // Someone without a binding in the app does not learn it exists (404).
    let stranger = app.as_user("stranger", &[]);
    stranger
        .get(TRIGGERS)
        .await
        .assert_problem(404, "not-found");
    stranger.get(&one).await.assert_problem(404, "not-found");

    // An admin bound to the app (not a bootstrap admin) manages them.
    app.bind("web", "ada", "admin", None).await;
    let ada = app.as_user("ada", &[]);
    assert_eq!(ada.get(TRIGGERS).await.status, StatusCode::OK);
    assert_eq!(ada.get(&one).await.status, StatusCode::OK);
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn repositories_follow_the_forges_own_rules(pool: PgPool) {
    let app = app(pool).await;
    // GitHub statuses are posted under /repos/{owner}/{name}: a `..` (or any segment GitHub
    // would not allow) must not get that far.
    for repository in [
        "../web",
        "acme/..",
        "./web",
        "acme/.",
        "..",
        "-acme/web",
        "acme_corp/web",
        "acme/web.git/x",
        "acme/we b",
        "acme/web%2F..",
        &format!("{}/web", "a".repeat(40)),
        &format!("acme/{}", "w".repeat(101)),
    ] {
        let mut body = github_trigger();
        body["repository"] = json!(repository);
        app.post_json(TRIGGERS, &body)
            .await
            .assert_invalid_field("/repository");
    }
    for repository in [
        "acme/web",
        "Acme-Corp/web.site",
        "a/.github",
        "acme/_web-1.x",
    ] {
        let mut body = github_trigger();
        body["repository"] = json!(repository);
        let r = app.post_json(TRIGGERS, &body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{repository}: {}", r.text);
    }
    // GitLab paths: groups and subgroups, but no `.`/`..` segment and none starting with '-'.
    let gitlab = |repository: &str| {
        json!({"source": "gitlab", "event": "tag_push", "repository": repository, "tag": "v*",
               "image": "registry.gitlab.com/acme/web:${tag}", "environment": "prod", "secret": SECRET})
    };
    for repository in ["acme/../web", "acme/./web", "acme/-web", "../acme/web"] {
        app.post_json(TRIGGERS, &gitlab(repository))
            .await
            .assert_invalid_field("/repository");
    }
    let r = app
        .post_json(TRIGGERS, &gitlab("acme/platform.team/web_site"))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn the_stored_request_hash_does_not_reveal_the_secret(pool: PgPool) {
    use sha2::Digest;
    let app = app(pool).await;
    // A low-entropy secret: were the request hash an unsalted SHA-256 of the body, anyone
    // reading idempotency_keys could try candidate secrets offline until one matched.
    let mut body = github_trigger();
    body["secret"] = json!("password12345678");
    let created = app.post_keyed(TRIGGERS, "t-1", &body).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let stored: Vec<u8> = sqlx::query_scalar("SELECT request_hash FROM idempotency_keys")
        .fetch_one(&app.pool)
        .await
        .expect("the key's row");
    // What the guesser computes: the canonical body (sorted keys) with the right secret.
    let canonical = serde_json::to_vec(&body).expect("json");
    let guess: [u8; 32] = sha2::Sha256::digest(&canonical).into();
    assert_ne!(
        stored,
        guess.to_vec(),
        "the stored hash is the body's plain SHA-256"
    );
    let without_secret = {
        let mut b = body.clone();
        b.as_object_mut().expect("object").remove("secret");
        let digest: [u8; 32] = sha2::Sha256::digest(serde_json::to_vec(&b).expect("json")).into();
        digest
    };
    assert_ne!(stored, without_secret.to_vec());

    // Keys still work: the same body replays, another secret under the same key is refused.
    let again = app.post_keyed(TRIGGERS, "t-1", &body).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text);
    assert_eq!(again.body["id"], created.body["id"]);
    let mut other = body.clone();
    other["secret"] = json!("password12345679");
    app.post_keyed(TRIGGERS, "t-1", &other)
        .await
        .assert_problem(422, "idempotency-key-reused");
    assert_eq!(app.count("triggers").await, 1);
}
