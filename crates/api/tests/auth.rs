//! Authentication (bearer JWTs) and authorization (roles bound per app and environment), over
//! the real HTTP surface and a real PostgreSQL.

#![expect(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a failed expectation is the test failing"
)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{ADMIN, DEPLOYMENTS, SECRET, TestApp, canary_env, overridable_env, token};
use futures::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use slipway_api::auth::{AuthSettings, BootstrapAdmins, TokenVerifier};
use sqlx::PgPool;

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys");

fn key_file(name: &str) -> Vec<u8> {
    std::fs::read(format!("{KEYS}/{name}")).expect("a test key")
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

/// Claims of a token that is valid for an hour.
fn claims(sub: &str) -> Value {
    json!({"sub": sub, "iss": "slipway", "aud": "slipway", "iat": now(), "nbf": now(), "exp": now() + 3600})
}

fn sign_hs256(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret).unwrap(),
    )
    .unwrap()
}

/// Signs with the private key `key` of the fixtures, naming `kid`.
fn sign(alg: Algorithm, key: &str, kid: Option<&str>, claims: &Value) -> String {
    let pem = key_file(key);
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).unwrap(),
        other => panic!("no fixture for {other:?}"),
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

/// A token with any header, "signed" with HMAC-SHA256 over `secret` (or unsigned), as an
/// attacker would make it.
fn forge(header: &Value, claims: &Value, secret: Option<&[u8]>) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = secret.map_or_else(String::new, |s| hmac_sha256(s, message.as_bytes()));
    format!("{message}.{signature}")
}

/// HMAC-SHA256 (RFC 2104), base64url.
fn hmac_sha256(key: &[u8], message: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let inner: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let outer: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    let inner_hash = Sha256::new()
        .chain_update(&inner)
        .chain_update(message)
        .finalize();
    let mac = Sha256::new()
        .chain_update(&outer)
        .chain_update(inner_hash)
        .finalize();
    URL_SAFE_NO_PAD.encode(mac)
}

/// The secret, both RSA keys by file name and the JWKS document.
fn all_keys() -> AuthSettings {
    let verifier = TokenVerifier::new("slipway", "slipway")
        .with_secret(SECRET)
        .unwrap()
        .with_pem("rsa-2026", &key_file("rsa-2026.pem"))
        .unwrap()
        .with_pem("rsa-2027", &key_file("rsa-2027.pem"))
        .unwrap()
        .with_pem("ec-2026", &key_file("ec-2026.pem"))
        .unwrap()
        .with_jwks(&String::from_utf8(key_file("jwks.json")).unwrap())
        .unwrap();
    AuthSettings::jwt(verifier, BootstrapAdmins::parse(&[ADMIN]))
}

/// Asserts a 401 problem with a Bearer challenge.
#[track_caller]
fn assert_unauthorized(r: &common::Resp, why: &str) {
    r.assert_problem(401, "unauthorized");
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer "),
        "{why}: challenge {challenge:?}"
    );
}

async fn get_apps_with(app: &TestApp, token: &str) -> common::Resp {
    app.with_token(Some(token)).get("/v1/apps").await
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn every_bad_token_is_a_401_problem(pool: PgPool) {
    let app = TestApp::builder(pool).auth(all_keys()).start().await;
    let r = app.without_token().get("/v1/apps").await;
    assert_unauthorized(&r, "no token");
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer realm="slipway""#)
    );
    let r = app
        .send(
            app.without_token()
                .request(Method::GET, "/v1/apps")
                .header("authorization", "Basic YWRtaW46YWRtaW4="),
        )
        .await;
    assert_unauthorized(&r, "not a bearer token");

    let mut expired = claims(ADMIN);
    expired["exp"] = json!(now() - 3600);
    let mut not_yet = claims(ADMIN);
    not_yet["nbf"] = json!(now() + 3600);
    let mut wrong_aud = claims(ADMIN);
    wrong_aud["aud"] = json!("another-service");
    let mut wrong_iss = claims(ADMIN);
    wrong_iss["iss"] = json!("https://evil.example");
    let mut no_exp = claims(ADMIN);
    no_exp.as_object_mut().unwrap().remove("exp");
    let mut no_aud = claims(ADMIN);
    no_aud.as_object_mut().unwrap().remove("aud");
    let mut no_iss = claims(ADMIN);
    no_iss.as_object_mut().unwrap().remove("iss");
    let mut empty_sub = claims(ADMIN);
    empty_sub["sub"] = json!("");
    let valid = sign_hs256(&claims("someone"), SECRET);
    let (head, rest) = valid.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let tampered = format!(
        "{head}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(claims(ADMIN).to_string())
    );
    let rsa_public = key_file("rsa-2026.pem");
    let cases: Vec<(&str, String)> = vec![
        ("expired", sign_hs256(&expired, SECRET)),
        ("not yet valid", sign_hs256(&not_yet, SECRET)),
        ("wrong aud", sign_hs256(&wrong_aud, SECRET)),
        ("wrong iss", sign_hs256(&wrong_iss, SECRET)),
        ("no exp", sign_hs256(&no_exp, SECRET)),
        ("no aud", sign_hs256(&no_aud, SECRET)),
        ("no iss", sign_hs256(&no_iss, SECRET)),
        ("empty sub", sign_hs256(&empty_sub, SECRET)),
        (
            "another secret",
            sign_hs256(&claims(ADMIN), b"another-secret-another-secret-!!"),
        ),
        (
            "alg none",
            forge(&json!({"alg": "none", "typ": "JWT"}), &claims(ADMIN), None),
        ),
        (
            "alg none with a kid",
            forge(
                &json!({"alg": "none", "kid": "rsa-2026"}),
                &claims(ADMIN),
                None,
            ),
        ),
        (
            "HS256 signed with the RSA public key (key confusion)",
            forge(
                &json!({"alg": "HS256", "typ": "JWT", "kid": "rsa-2026"}),
                &claims(ADMIN),
                Some(&rsa_public),
            ),
        ),
        (
            "RS256 claimed for the shared secret",
            forge(
                &json!({"alg": "RS256", "typ": "JWT"}),
                &claims(ADMIN),
                Some(SECRET),
            ),
        ),
        (
            "unknown kid",
            sign(
                Algorithm::RS256,
                "rsa-2026.key",
                Some("rsa-1999"),
                &claims(ADMIN),
            ),
        ),
        (
            "kid of another key",
            sign(
                Algorithm::RS256,
                "rsa-2026.key",
                Some("rsa-2027"),
                &claims(ADMIN),
            ),
        ),
        ("tampered claims", tampered),
        ("garbage", "not.a.token".to_owned()),
    ];
    for (why, bad) in &cases {
        let r = get_apps_with(&app, bad).await;
        assert_unauthorized(&r, why);
        assert_eq!(
            r.header("www-authenticate"),
            Some(r#"Bearer realm="slipway", error="invalid_token""#),
            "{why}"
        );
    }
    // The same claims, correctly signed, pass: the failures above are the tokens' own.
    assert_eq!(
        get_apps_with(&app, &sign_hs256(&claims(ADMIN), SECRET))
            .await
            .status,
        StatusCode::OK
    );
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn clocks_get_sixty_seconds_of_leeway(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut just_expired = claims(ADMIN);
    just_expired["exp"] = json!(now() - 20);
    let mut almost_valid = claims(ADMIN);
    almost_valid["nbf"] = json!(now() + 20);
    for token in [just_expired, almost_valid] {
        let r = get_apps_with(&app, &sign_hs256(&token, SECRET)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let mut long_expired = claims(ADMIN);
    long_expired["exp"] = json!(now() - 120);
    assert_unauthorized(
        &get_apps_with(&app, &sign_hs256(&long_expired, SECRET)).await,
        "2 min",
    );
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn keys_rotate_by_kid(pool: PgPool) {
    let app = TestApp::builder(pool).auth(all_keys()).start().await;
    // Two RSA keys at once: tokens of the old and of the new key both verify.
    for (key, kid) in [("rsa-2026.key", "rsa-2026"), ("rsa-2027.key", "rsa-2027")] {
        let token = sign(Algorithm::RS256, key, Some(kid), &claims(ADMIN));
        let r = get_apps_with(&app, &token).await;
        assert_eq!(r.status, StatusCode::OK, "{kid}: {}", r.text);
    }
    let es = sign(
        Algorithm::ES256,
        "ec-2026.key",
        Some("ec-2026"),
        &claims(ADMIN),
    );
    assert_eq!(get_apps_with(&app, &es).await.status, StatusCode::OK);
    // An RS256 token without a kid is not tried against every key.
    let no_kid = sign(Algorithm::RS256, "rsa-2026.key", None, &claims(ADMIN));
    assert_unauthorized(&get_apps_with(&app, &no_kid).await, "no kid");
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn keys_come_from_a_jwks_document(pool: PgPool) {
    let verifier = TokenVerifier::new("slipway", "slipway")
        .with_secret(SECRET)
        .unwrap()
        .with_jwks(&String::from_utf8(key_file("jwks.json")).unwrap())
        .unwrap();
    assert_eq!(
        verifier.kids(),
        ["jwks-ec-2026", "jwks-rsa-2026", "jwks-rsa-2027"]
    );
    let app = TestApp::builder(pool)
        .auth(AuthSettings::jwt(
            verifier,
            BootstrapAdmins::parse(&[ADMIN]),
        ))
        .start()
        .await;
    for (alg, key, kid) in [
        (Algorithm::RS256, "rsa-2026.key", "jwks-rsa-2026"),
        (Algorithm::RS256, "rsa-2027.key", "jwks-rsa-2027"),
        (Algorithm::ES256, "ec-2026.key", "jwks-ec-2026"),
    ] {
        let r = get_apps_with(&app, &sign(alg, key, Some(kid), &claims(ADMIN))).await;
        assert_eq!(r.status, StatusCode::OK, "{kid}: {}", r.text);
    }
    // The RSA key of the file is not there under its PEM name.
    let pem_kid = sign(
        Algorithm::RS256,
        "rsa-2026.key",
        Some("rsa-2026"),
        &claims(ADMIN),
    );
    assert_unauthorized(&get_apps_with(&app, &pem_kid).await, "kid not in the JWKS");
    // A JWKS with a symmetric key or a key without kid is refused when loaded.
    let symmetric = r#"{"keys":[{"kty":"oct","kid":"k","k":"c2VjcmV0"}]}"#;
    assert!(TokenVerifier::new("a", "b").with_jwks(symmetric).is_err());
    let no_kid = r#"{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}]}"#;
    assert!(TokenVerifier::new("a", "b").with_jwks(no_kid).is_err());
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn public_endpoints_need_no_token(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let nobody = app.without_token();
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs/"] {
        let r = nobody.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
    }
    // Webhooks authenticate by their own signatures, never by a bearer token.
    let r = nobody.post_json("/v1/webhooks/github", &json!({})).await;
    assert_ne!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    for path in ["/v1/apps", "/v1/clusters", "/v1/deployments", "/v1/audit"] {
        assert_unauthorized(&nobody.get(path).await, path);
    }
    // Spellings of a path that skip the layer's prefix check reach no handler.
    for path in ["//v1/apps", "/v1/webhooks/../apps", "/v1//apps", "/V1/apps"] {
        let r = nobody.get(path).await;
        assert!(
            matches!(r.status.as_u16(), 401 | 404),
            "{path}: {} {}",
            r.status,
            r.text
        );
    }
    // The OpenAPI document says which operations take the bearer token.
    let doc = nobody.get("/openapi.json").await.body;
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(
        doc["paths"]["/v1/apps"]["post"]["security"],
        json!([{"bearer": []}])
    );
    // Required at the top level; the probes (and webhooks) opt out with an empty list.
    assert_eq!(doc["security"], json!([{"bearer": []}]));
    assert_eq!(doc["paths"]["/healthz"]["get"]["security"], json!([]));
    assert_eq!(
        doc["paths"]["/v1/webhooks/github"]["post"]["security"],
        json!([])
    );
}

/// Two apps, `web` (environments `prod` and `staging`) and `shop` (`prod`), each with a
/// queued deployment to prod made by the admin.
async fn two_apps(app: &TestApp) -> (Value, Value) {
    app.seed().await;
    app.seed_env("web", "staging").await;
    app.seed_app("shop").await;
    app.seed_env("shop", "prod").await;
    let web = app.deploy("web", "prod", "ghcr.io/acme/web:1.0.0").await;
    let shop = app.deploy("shop", "prod", "ghcr.io/acme/shop:1.0.0").await;
    (web, shop)
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_viewer_reads_but_cannot_change(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (web, _) = two_apps(&app).await;
    app.bind("web", "vera", "viewer", None).await;
    let vera = app.as_user("vera", &[]);
    let id = web["id"].as_str().unwrap();
    assert_eq!(
        vera.get(&format!("/v1/deployments/{id}")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        vera.get(&format!("/v1/deployments/{id}/events"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(vera.get("/v1/apps/web").await.status, StatusCode::OK);
    assert_eq!(
        vera.get("/v1/apps/web/environments/prod").await.status,
        StatusCode::OK
    );
    vera.post_json(DEPLOYMENTS, &json!({"image": "ghcr.io/acme/web:2.0.0"}))
        .await
        .assert_problem(403, "forbidden");
    vera.post_json(&format!("/v1/deployments/{id}/abort"), &json!({}))
        .await
        .assert_problem(403, "forbidden");
    vera.put_json("/v1/apps/web/environments/prod", &canary_env())
        .await
        .assert_problem(403, "forbidden");
    vera.patch_json("/v1/apps/web", &json!({"description": "mine"}))
        .await
        .assert_problem(403, "forbidden");
    vera.delete("/v1/apps/web")
        .await
        .assert_problem(403, "forbidden");
    vera.get("/v1/apps/web/role-bindings")
        .await
        .assert_problem(403, "forbidden");
    // Creating apps and registering clusters is for bootstrap admins.
    vera.post_json("/v1/apps", &json!({"name": "vera-app"}))
        .await
        .assert_problem(403, "forbidden");
    vera.post_json("/v1/clusters", &json!({"name": "c2", "kind": "simulated"}))
        .await
        .assert_problem(403, "forbidden");
    assert_eq!(app.count("deployments").await, 2, "nothing was created");
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_deployer_deploys_but_cannot_approve(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    two_apps(&app).await;
    app.bind("web", "dora", "deployer", None).await;
    let dora = app.as_user("dora", &[]);
    let r = dora
        .post_json(DEPLOYMENTS, &json!({"image": "ghcr.io/acme/web:2.0.0"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["created_by"], "dora");
    let id = r.body["id"].as_str().unwrap().to_owned();
    let events = app.get(&format!("/v1/deployments/{id}/events")).await;
    assert_eq!(events.body["items"][0]["actor"], "dora");
    dora.post_json(&format!("/v1/deployments/{id}/approve"), &json!({}))
        .await
        .assert_problem(403, "forbidden");
    // Abort is a deployer's command: it passes authorization (and cancels the queued one).
    let r = dora
        .post_json(&format!("/v1/deployments/{id}/abort"), &json!({}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    // Still not an admin of the app.
    dora.put_json("/v1/apps/web/environments/prod", &canary_env())
        .await
        .assert_problem(403, "forbidden");
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn the_approver_must_not_be_the_requester_where_required(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed().await;
    let mut relaxed = canary_env();
    relaxed["approval"] = json!({"required": true, "distinct_approver": false});
    relaxed["workload"]["name"] = json!("web-dev");
    let r = app
        .put_json("/v1/apps/web/environments/dev", &relaxed)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    app.bind("web", "ann", "approver", None).await;
    app.bind("web", "abe", "approver", None).await;
    let ann = app.as_user("ann", &[]);
    let abe = app.as_user("abe", &[]);
    let prod = ann
        .post_json(DEPLOYMENTS, &json!({"image": "ghcr.io/acme/web:2.0.0"}))
        .await;
    assert_eq!(prod.status, StatusCode::CREATED, "{}", prod.text);
    let prod = prod.body["id"].as_str().unwrap().to_owned();
    // prod requires a distinct approver: the requester is refused, whatever the state.
    let r = ann
        .post_json(&format!("/v1/deployments/{prod}/approve"), &json!({}))
        .await;
    r.assert_problem(403, "forbidden");
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("other than the requester")
    );
    // Another approver passes authorization; the queued deployment is not awaiting approval.
    abe.post_json(&format!("/v1/deployments/{prod}/approve"), &json!({}))
        .await
        .assert_problem(409, "conflict");
    // dev does not require it: the requester's approval passes authorization too.
    let dev = ann
        .post_json(
            "/v1/apps/web/environments/dev/deployments",
            &json!({"image": "ghcr.io/acme/web:2.0.0"}),
        )
        .await;
    let dev = dev.body["id"].as_str().unwrap().to_owned();
    ann.post_json(&format!("/v1/deployments/{dev}/approve"), &json!({}))
        .await
        .assert_problem(409, "conflict");
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn another_apps_objects_are_not_found(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (_, shop) = two_apps(&app).await;
    app.bind("web", "wes", "admin", None).await;
    let wes = app.as_user("wes", &[]);
    let id = shop["id"].as_str().unwrap();
    for path in [
        format!("/v1/deployments/{id}"),
        format!("/v1/deployments/{id}/events"),
        "/v1/apps/shop".to_owned(),
        "/v1/apps/shop/environments".to_owned(),
        "/v1/apps/shop/environments/prod".to_owned(),
        "/v1/apps/shop/role-bindings".to_owned(),
        "/v1/apps/nonexistent".to_owned(),
    ] {
        wes.get(&path).await.assert_problem(404, "not-found");
    }
    let stream = wes
        .send(
            wes.request(Method::GET, &format!("/v1/deployments/{id}/events"))
                .header("accept", "text/event-stream"),
        )
        .await;
    stream.assert_problem(404, "not-found");
    for command in ["promote", "approve", "abort"] {
        wes.post_json(&format!("/v1/deployments/{id}/{command}"), &json!({}))
            .await
            .assert_problem(404, "not-found");
    }
    wes.post_json(
        "/v1/apps/shop/environments/prod/deployments",
        &json!({"image": "ghcr.io/acme/shop:2.0.0"}),
    )
    .await
    .assert_problem(404, "not-found");
    wes.delete("/v1/apps/shop")
        .await
        .assert_problem(404, "not-found");
    wes.post_json(
        "/v1/apps/shop/role-bindings",
        &json!({"subject": "wes", "role": "admin"}),
    )
    .await
    .assert_problem(404, "not-found");
    // A deployment id that does not exist looks the same.
    wes.get(&format!("/v1/deployments/{}", uuid::Uuid::now_v7()))
        .await
        .assert_problem(404, "not-found");
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn lists_show_only_what_the_caller_may_see(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (web, _) = two_apps(&app).await;
    app.bind("web", "vic", "viewer", None).await;
    let vic = app.as_user("vic", &[]);
    let apps: Vec<Value> = vic.get("/v1/apps").await.body["items"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(apps.len(), 1);
    assert_eq!(apps[0]["name"], "web");
    let deployments = vic.get("/v1/deployments").await.body["items"].clone();
    assert_eq!(deployments.as_array().unwrap().len(), 1);
    assert_eq!(deployments[0]["id"], web["id"]);
    let filtered = vic.get("/v1/deployments?app=shop").await.body["items"].clone();
    assert_eq!(filtered, json!([]));
    // Someone without any binding sees empty lists, not errors.
    let nobody = app.as_user("stranger", &[]);
    assert_eq!(nobody.get("/v1/apps").await.body["items"], json!([]));
    assert_eq!(nobody.get("/v1/deployments").await.body["items"], json!([]));
    // The admin sees everything.
    assert_eq!(
        app.get("/v1/deployments").await.body["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn the_event_feed_carries_only_visible_deployments(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    // shop's deployment is created first, so its event comes first in the feed.
    app.seed().await;
    app.seed_app("shop").await;
    app.seed_env("shop", "prod").await;
    app.deploy("shop", "prod", "ghcr.io/acme/shop:1.0.0").await;
    let web = app.deploy("web", "prod", "ghcr.io/acme/web:1.0.0").await;
    app.bind("web", "vic", "viewer", None).await;
    let vic = app.as_user("vic", &[]);
    let response = vic
        .request(Method::GET, "/v1/events")
        .header("accept", "text/event-stream")
        .header("last-event-id", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut bytes = response.bytes_stream();
    let mut buffer = String::new();
    let data = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(line) = buffer.lines().find(|l| l.starts_with("data:")) {
                return line.trim_start_matches("data:").trim().to_owned();
            }
            let chunk = bytes.next().await.unwrap().unwrap();
            buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    })
    .await
    .expect("an event within 10 s");
    let event: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(
        event["deployment_id"], web["id"],
        "shop's event is not for vic"
    );
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn environment_bindings_count_only_there(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    two_apps(&app).await;
    app.bind("web", "sam", "deployer", Some("staging")).await;
    let sam = app.as_user("sam", &[]);
    let r = sam
        .post_json(
            "/v1/apps/web/environments/staging/deployments",
            &json!({"image": "ghcr.io/acme/web:2.0.0"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    sam.post_json(DEPLOYMENTS, &json!({"image": "ghcr.io/acme/web:2.0.0"}))
        .await
        .assert_problem(403, "forbidden");
    // The binding lets sam see the app, but not prod's deployments.
    assert_eq!(sam.get("/v1/apps/web").await.status, StatusCode::OK);
    let listed = sam.get("/v1/deployments").await.body["items"].clone();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["environment"], "staging");
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn groups_carry_roles_and_bootstrap_admins(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    two_apps(&app).await;
    let r = app
        .post_json(
            "/v1/apps/web/role-bindings",
            &json!({"group": "ci", "role": "deployer"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["group"], "ci");
    let robot = app.as_user("github-actions", &["ci"]);
    let r = robot
        .post_json(DEPLOYMENTS, &json!({"image": "ghcr.io/acme/web:3.0.0"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["created_by"], "github-actions");
    // Without the group, the same subject is a stranger.
    app.as_user("github-actions", &[])
        .post_json(DEPLOYMENTS, &json!({"image": "ghcr.io/acme/web:3.0.0"}))
        .await
        .assert_problem(404, "not-found");
    // The `platform` group is a bootstrap admin of the harness: it may create apps.
    let r = app
        .as_user("pat", &["platform"])
        .post_json("/v1/apps", &json!({"name": "pat-app"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn role_bindings_are_managed_by_app_admins(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    two_apps(&app).await;
    app.bind("web", "ada", "admin", None).await;
    let ada = app.as_user("ada", &[]);
    let r = ada
        .post_json(
            "/v1/apps/web/role-bindings",
            &json!({"subject": "bob", "role": "approver", "environment": "prod"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["created_by"], "ada");
    assert_eq!(r.body["environment"], "prod");
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        r.header("location"),
        Some(format!("/v1/apps/web/role-bindings/{id}").as_str())
    );
    ada.post_json(
        "/v1/apps/web/role-bindings",
        &json!({"subject": "bob", "role": "viewer", "environment": "prod"}),
    )
    .await
    .assert_problem(409, "already-exists");
    let listed = ada.get("/v1/apps/web/role-bindings").await;
    assert_eq!(listed.status, StatusCode::OK);
    let subjects: Vec<&str> = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["subject"].as_str())
        .collect();
    assert_eq!(subjects, ["ada", "bob"]);
    // Invalid bindings name the field.
    for (body, pointer) in [
        (
            json!({"subject": "x", "group": "y", "role": "viewer"}),
            "/group",
        ),
        (json!({"role": "viewer"}), "/subject"),
        (json!({"subject": "x", "role": "root"}), "/role"),
        (
            json!({"subject": "x", "role": "viewer", "environment": "Prod!"}),
            "/environment",
        ),
        (json!({"subject": "", "role": "viewer"}), "/subject"),
        (
            json!({"subject": "x", "role": "viewer", "extra": 1}),
            "/extra",
        ),
    ] {
        ada.post_json("/v1/apps/web/role-bindings", &body)
            .await
            .assert_invalid_field(pointer);
    }
    // bob is an approver in prod: he sees the app and may approve there.
    let bob = app.as_user("bob", &[]);
    assert_eq!(bob.get("/v1/apps/web").await.status, StatusCode::OK);
    ada.delete(&format!("/v1/apps/web/role-bindings/{id}"))
        .await;
    ada.delete(&format!("/v1/apps/web/role-bindings/{id}"))
        .await
        .assert_problem(404, "not-found");
    // Without a binding left, the app is gone for bob.
    bob.get("/v1/apps/web")
        .await
        .assert_problem(404, "not-found");
    // Bindings of one app cannot be removed through another.
    let other = app
        .post_json(
            "/v1/apps/shop/role-bindings",
            &json!({"subject": "x", "role": "viewer"}),
        )
        .await;
    let other = other.body["id"].as_str().unwrap().to_owned();
    app.delete(&format!("/v1/apps/web/role-bindings/{other}"))
        .await
        .assert_problem(404, "not-found");
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn every_mutating_request_is_audited_with_its_subject(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (web, _) = two_apps(&app).await;
    app.bind("web", "dora", "deployer", None).await;
    let dora = app.as_user("dora", &[]);
    let id = web["id"].as_str().unwrap();
    let reads_before = app.count("audit_log").await;
    dora.get(&format!("/v1/deployments/{id}")).await;
    assert_eq!(
        app.count("audit_log").await,
        reads_before,
        "reads are not audited"
    );
    let r = dora
        .post_json(
            &format!("/v1/deployments/{id}/abort"),
            &json!({"reason": "bad build"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    dora.post_json(&format!("/v1/deployments/{id}/approve"), &json!({}))
        .await
        .assert_problem(403, "forbidden");
    app.without_token()
        .post_json("/v1/apps", &json!({"name": "x"}))
        .await;
    let trail = app.get("/v1/audit?subject=dora").await;
    assert_eq!(trail.status, StatusCode::OK, "{}", trail.text);
    let entries: Vec<(String, String, u64)> = trail.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["method"].as_str().unwrap().to_owned(),
                e["path"].as_str().unwrap().to_owned(),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            (
                "POST".to_owned(),
                format!("/v1/deployments/{id}/approve"),
                403
            ),
            (
                "POST".to_owned(),
                format!("/v1/deployments/{id}/abort"),
                202
            ),
        ]
    );
    assert!(trail.body["items"][0]["request_id"].is_string());
    // The admin's own writes are there too (the seeding: cluster, apps, environments, ...).
    let admin = app
        .get(&format!("/v1/audit?subject={ADMIN}&limit=500"))
        .await;
    let paths: Vec<&str> = admin.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["path"].as_str())
        .collect();
    assert!(paths.contains(&"/v1/clusters"), "{paths:?}");
    assert!(
        paths.contains(&"/v1/apps/web/environments/prod/deployments"),
        "{paths:?}"
    );
    // Unauthenticated requests name nobody and are not recorded.
    let total: i64 = app
        .count("audit_log WHERE path = '/v1/apps' AND subject <> 'admin'")
        .await;
    assert_eq!(total, 0);
    // The trail is for bootstrap admins only.
    dora.get("/v1/audit").await.assert_problem(403, "forbidden");
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_token_issued_for_the_harness_names_its_subject(pool: PgPool) {
    // The token helper and the server agree: the subject and groups travel intact.
    let app = TestApp::spawn(pool).await;
    app.seed().await;
    let t = token("ci-bot", &["platform"]);
    let r = app
        .with_token(Some(&t))
        .post_json(DEPLOYMENTS, &json!({"image": "ghcr.io/acme/web:9.0.0"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["created_by"], "ci-bot");
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_successful_keyed_write_and_its_audit_row_commit_together(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let before = app.count("audit_log").await;
    let created = app
        .send(
            app.request(Method::POST, "/v1/apps")
                .header("x-request-id", "req-app-1")
                .json(&json!({"name": "audited"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    // One row (the handler's, not a second from the layer), in the app's own transaction.
    assert_eq!(app.count("audit_log").await, before + 1);
    let (same_tx, subject, status): (bool, String, i16) = sqlx::query_as(
        "SELECT a.xmin::text = p.xmin::text, a.subject, a.status FROM audit_log a, apps p
         WHERE a.request_id = 'req-app-1' AND p.name = 'audited'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("the audit row");
    assert!(same_tx, "the audit row and the app commit together");
    assert_eq!((subject.as_str(), status), (ADMIN, 201));

    // A refused write changes nothing, and the layer still audits it.
    app.post_json("/v1/apps", &json!({"name": "audited"}))
        .await
        .assert_problem(409, "already-exists");
    assert_eq!(app.count("audit_log").await, before + 2);
}

/// Makes every insert into the audit trail fail, as when its write cannot be done (a full
/// disk, a lock timeout): the database refuses it with an error.
async fn break_the_audit_trail(pool: &PgPool) {
    for sql in [
        "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'the audit trail is unavailable'; END $$",
        "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log
             FOR EACH ROW EXECUTE FUNCTION refuse_audit()",
    ] {
        sqlx::query(sql)
            .execute(pool)
            .await
            .expect("break the trail");
    }
}

/// PATCH, PUT and DELETE write their audit row in the transaction of their change: when the
/// row cannot be written the change is not made and not acknowledged, and a refusal is not
/// answered without its row either. When the row can be written, it is one row, committed
/// with the change.
#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_change_is_never_acknowledged_without_its_audit_row(pool: PgPool) {
    let app = TestApp::builder(pool)
        .secrets_key("q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=")
        .start()
        .await;
    app.seed().await;
    let binding = app.bind("web", "dora", "viewer", None).await;
    let binding = binding["id"].as_str().unwrap().to_owned();
    let trigger = app
        .post_json(
            "/v1/apps/web/triggers",
            &json!({"source": "github", "event": "push", "repository": "acme/web",
                    "branch": "main", "image": "ghcr.io/acme/web:${sha}",
                    "environment": "prod", "secret": "a-webhook-secret-for-the-audit-test"}),
        )
        .await;
    assert_eq!(trigger.status, StatusCode::CREATED, "{}", trigger.text);
    let trigger = trigger.body["id"].as_str().unwrap().to_owned();
    let state = async |app: &TestApp| -> Value {
        sqlx::query_scalar(
            "SELECT jsonb_build_object(
                 'app', (SELECT to_jsonb(a) FROM apps a WHERE name = 'web'),
                 'environments', (SELECT jsonb_agg(to_jsonb(e) ORDER BY e.name) FROM environments e),
                 'bindings', (SELECT count(*) FROM role_bindings),
                 'triggers', (SELECT count(*) FROM triggers))",
        )
        .fetch_one(&app.pool)
        .await
        .expect("the state")
    };
    let before = state(&app).await;
    let rows = app.count("audit_log").await;

    break_the_audit_trail(&app.pool).await;
    let mut replaced = canary_env();
    replaced["progress_deadline"] = json!("20m");
    let changes = [
        app.json_request(
            Method::PATCH,
            "/v1/apps/web",
            &json!({"description": "changed"}),
        ),
        app.json_request(
            Method::PUT,
            "/v1/apps/web/environments/staging",
            &canary_env(),
        ),
        app.json_request(Method::PUT, "/v1/apps/web/environments/prod", &replaced),
        app.json_request(
            Method::POST,
            "/v1/apps/web/role-bindings",
            &json!({"subject": "erin", "role": "viewer"}),
        ),
        app.request(
            Method::DELETE,
            &format!("/v1/apps/web/role-bindings/{binding}"),
        ),
        app.request(Method::DELETE, &format!("/v1/apps/web/triggers/{trigger}")),
        // A refusal: the ETag does not match.
        app.json_request(Method::PATCH, "/v1/apps/web", &json!({"description": "x"}))
            .header("if-match", "\"999\""),
    ];
    for request in changes {
        let request = request.build().expect("a request");
        let what = format!("{} {}", request.method(), request.url().path());
        let answer = app.client.execute(request).await.expect("an answer");
        let status = answer.status();
        assert!(
            status.is_server_error(),
            "{what} answered {status} without its audit row: {}",
            answer.text().await.unwrap_or_default()
        );
    }
    let deleted = app
        .request(Method::DELETE, "/v1/apps/web")
        .build()
        .expect("a request");
    let status = app
        .client
        .execute(deleted)
        .await
        .expect("an answer")
        .status();
    assert!(
        status.is_server_error(),
        "DELETE /v1/apps/web answered {status}"
    );
    assert_eq!(
        state(&app).await,
        before,
        "a change was made without its audit row"
    );
    assert_eq!(app.count("audit_log").await, rows);

    // With the trail back, a change writes one row, in its own transaction.
    sqlx::query("DROP TRIGGER refuse_audit ON audit_log")
        .execute(&app.pool)
        .await
        .expect("mend the trail");
    let changed = app
        .send(
            app.json_request(
                Method::PATCH,
                "/v1/apps/web",
                &json!({"description": "changed"}),
            )
            .header("x-request-id", "req-patch-1"),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    assert_eq!(app.count("audit_log").await, rows + 1);
    let (same_tx, status): (bool, i16) = sqlx::query_as(
        "SELECT a.xmin::text = p.xmin::text, a.status FROM audit_log a, apps p
         WHERE a.request_id = 'req-patch-1' AND p.name = 'web'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("the audit row");
    assert!(same_tx, "the audit row and the change commit together");
    assert_eq!(status, 200);
}

/// Each principal has its own bucket: past its burst a caller gets 429 problem+json with
/// `Retry-After`, while another caller (and the health endpoints) are still served; after the
/// wait the first caller is served again.
#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_principal_over_its_rate_limit_gets_429_with_retry_after(pool: PgPool) {
    let app = TestApp::builder(pool).rate_limit(2, 3).start().await;
    let alice = app.as_user("alice", &[]);
    for _ in 0..3 {
        assert_eq!(alice.get("/v1/apps").await.status, StatusCode::OK);
    }
    let refused = alice.get("/v1/apps").await;
    refused.assert_problem(429, "too-many-requests");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(
        refused.body["detail"].as_str().unwrap().contains("alice"),
        "{}",
        refused.text
    );
    // Writes are limited as well, and a refused write changes nothing.
    let create = alice
        .post_json("/v1/apps", &json!({"name": "limited"}))
        .await;
    create.assert_problem(429, "too-many-requests");
    let admin = app.as_user(ADMIN, &[]);
    assert_eq!(
        admin.get("/v1/apps/limited").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.without_token().get("/healthz").await.status,
        StatusCode::OK
    );
    // Two tokens a second: one is back after half a second.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(alice.get("/v1/apps").await.status, StatusCode::OK);
}

/// The environment list shows exactly the environments a direct read would: a binding limited
/// to staging shows staging's spec and not prod's, which a GET refuses (403).
#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn the_environment_list_follows_the_rule_of_a_direct_read(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    two_apps(&app).await;
    app.bind("web", "sam", "deployer", Some("staging")).await;
    let sam = app.as_user("sam", &[]);
    sam.get("/v1/apps/web/environments/prod")
        .await
        .assert_problem(403, "forbidden");
    assert_eq!(
        sam.get("/v1/apps/web/environments/staging").await.status,
        StatusCode::OK
    );
    let listed = sam.get("/v1/apps/web/environments").await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    let names: Vec<&str> = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(names, ["staging"], "{}", listed.text);
    // An app-wide viewer reads both, by list and by GET.
    app.bind("web", "vic", "viewer", None).await;
    let vic = app.as_user("vic", &[]);
    let listed = vic.get("/v1/apps/web/environments").await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 2);
    assert_eq!(
        vic.get("/v1/apps/web/environments/prod").await.status,
        StatusCode::OK
    );
}

/// The reported bypass, at the API: a deployer's strategy override on an environment that
/// requires approval is refused unless the environment allows overrides, and is recorded.
#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_strategy_override_needs_the_environments_consent(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed().await;
    app.bind("web", "dora", "deployer", None).await;
    let dora = app.as_user("dora", &[]);
    let body = json!({"image": "ghcr.io/acme/web:6.6.6", "strategy": {"type": "rolling"}});
    let r = dora.post_json(DEPLOYMENTS, &body).await;
    r.assert_problem(403, "forbidden");
    assert_eq!(r.pointers(), ["/strategy"], "{}", r.text);
    assert_eq!(app.count("deployments").await, 0);

    let r = app
        .put_json("/v1/apps/web/environments/prod", &overridable_env())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["allow_strategy_override"], true);
    let r = dora.post_json(DEPLOYMENTS, &body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["strategy"]["type"], "rolling");
    assert_eq!(r.body["strategy_overridden"], true);
    let id = r.body["id"].as_str().unwrap();
    let events = app.get(&format!("/v1/deployments/{id}/events")).await;
    assert_eq!(events.body["items"][0]["data"]["strategy_overridden"], true);
    let plain = dora
        .post_json(DEPLOYMENTS, &json!({"image": "ghcr.io/acme/web:6.6.7"}))
        .await;
    assert_eq!(plain.body["strategy_overridden"], false, "{}", plain.text);
}

/// Provenance is the route's: over the API `source.kind` is `api` or `cli`, never a webhook
/// source with someone else's name on it.
#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn an_api_request_cannot_claim_a_webhook_source(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed().await;
    app.bind("web", "dora", "deployer", None).await;
    let dora = app.as_user("dora", &[]);
    for kind in ["github", "gitlab", "webhook", "slack"] {
        dora.post_json(
            DEPLOYMENTS,
            &json!({"image": "ghcr.io/acme/web:2.0.0",
                    "source": {"kind": kind, "user": "alice", "repository": "acme/web"}}),
        )
        .await
        .assert_invalid_field("/source/kind");
    }
    assert_eq!(app.count("deployments").await, 0);
    for kind in ["api", "cli"] {
        let r = dora
            .post_json(
                DEPLOYMENTS,
                &json!({"image": "ghcr.io/acme/web:2.0.0", "source": {"kind": kind}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.body["source"]["kind"], kind);
        assert_eq!(r.body["created_by"], "dora");
    }
}
