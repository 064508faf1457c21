//! Test harness: serves the real API on a loopback port over a per-test database, with a
//! client and helpers that return status, headers and JSON body.
//!
//! Every response sent through the harness is checked never to be a 500: whatever a client
//! sends, the API answers with a deliberate status.
//!
//! Authentication is on, with the HS256 secret [`SECRET`]; the harness sends a token of the
//! bootstrap admin [`ADMIN`] by default. [`TestApp::as_user`] acts as someone else, and
//! [`TestApp::without_token`] as nobody.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Once;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use slipway_api::auth::{AuthSettings, BootstrapAdmins, TokenVerifier, issue_hs256};
use slipway_api::{ApiSettings, AppState};
use slipway_core::DeploymentStatus;
use sqlx::PgPool;
use uuid::Uuid;

/// Installs the process-wide rustls provider reqwest needs (it is built without one).
fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Another test binary or crate may have installed one already: that is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The HS256 secret the app under test verifies tokens with.
pub(crate) const SECRET: &[u8] = b"test-secret-test-secret-test-secret!";
/// The bootstrap admin the harness acts as by default.
pub(crate) const ADMIN: &str = "admin";

/// An HS256 token of the test secret for `sub` in `groups`, valid for an hour.
pub(crate) fn token(sub: &str, groups: &[&str]) -> String {
    let groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
    issue_hs256(
        SECRET,
        "slipway",
        "slipway",
        sub,
        &groups,
        Duration::from_secs(3600),
    )
    .expect("issue a token")
}

/// The authentication of the app under test: the test secret, `admin` and the group
/// `platform` as bootstrap admins.
pub(crate) fn test_auth() -> AuthSettings {
    let verifier = TokenVerifier::new("slipway", "slipway")
        .with_secret(SECRET)
        .expect("a valid secret");
    AuthSettings::jwt(verifier, BootstrapAdmins::parse(&[ADMIN, "group:platform"]))
}

fn client(token: Option<&str>) -> reqwest::Client {
    let mut headers = HeaderMap::new();
    if let Some(token) = token {
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).expect("a header value"),
        );
    }
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::limited(5))
        .default_headers(headers)
        .build()
        .expect("build reqwest client")
}

/// Settings for the app under test; starts from the defaults.
#[derive(Debug)]
pub(crate) struct TestAppBuilder {
    pool: PgPool,
    settings: ApiSettings,
}

impl TestAppBuilder {
    pub(crate) fn body_limit(mut self, bytes: usize) -> Self {
        self.settings.body_limit = bytes;
        self
    }

    pub(crate) fn request_timeout(mut self, timeout: Duration) -> Self {
        self.settings.request_timeout = timeout;
        self
    }

    pub(crate) fn cors(mut self, origins: &[&str]) -> Self {
        self.settings.cors_allowed_origins = origins.iter().map(|o| (*o).to_owned()).collect();
        self
    }

    /// Another way of authenticating (the harness still sends the admin's HS256 token).
    pub(crate) fn auth(mut self, auth: AuthSettings) -> Self {
        self.settings.auth = auth;
        self
    }

    /// The key webhook secrets are sealed with (base64 of 32 bytes).
    pub(crate) fn secrets_key(mut self, base64: &str) -> Self {
        self.settings.secrets_key = Some(
            slipway_engine::secrets::SecretsKey::from_base64(base64).expect("a valid secrets key"),
        );
        self
    }

    /// Per-principal rate limit (off unless set).
    pub(crate) fn rate_limit(mut self, per_second: u32, burst: u32) -> Self {
        self.settings.rate_limit = slipway_api::rate_limit::RateLimit { per_second, burst };
        self
    }

    /// Webhook deliveries per app (off unless set).
    pub(crate) fn webhook_rate_limit(mut self, per_second: u32, burst: u32) -> Self {
        self.settings.webhook_rate_limit = slipway_api::rate_limit::RateLimit { per_second, burst };
        self
    }

    pub(crate) fn idempotency_ttl(mut self, ttl: Duration) -> Self {
        self.settings.idempotency_ttl = ttl;
        self
    }

    /// Binds a loopback port, then serves the app on it. The listener is bound before this
    /// returns, so requests can be sent at once: connections queue until the server accepts.
    pub(crate) async fn start(self) -> TestApp {
        install_crypto_provider();
        let state = AppState::new(self.pool.clone(), self.settings);
        let router = slipway_api::app(state);
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.expect("serve the API");
        });
        TestApp {
            base: format!("http://{addr}"),
            client: client(Some(&token(ADMIN, &[]))),
            pool: self.pool,
            server: Some(server),
        }
    }
}

/// The API under test.
#[derive(Debug)]
pub(crate) struct TestApp {
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
    pub(crate) pool: PgPool,
    /// `None` for a view of another app's server as another caller.
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.abort();
        }
    }
}

/// An answer of the API, read in full.
#[derive(Debug, Clone)]
pub(crate) struct Resp {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    /// The body as JSON (`Null` when it is empty or not JSON).
    pub(crate) body: Value,
    pub(crate) text: String,
}

impl Resp {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub(crate) fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or("")
    }

    /// The `pointer` of each field error of a problem.
    pub(crate) fn pointers(&self) -> Vec<String> {
        self.errors("pointer")
    }

    /// The `parameter` of each field error of a problem.
    pub(crate) fn parameters(&self) -> Vec<String> {
        self.errors("parameter")
    }

    fn errors(&self, key: &str) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .filter_map(|e| e[key].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Asserts the answer has `status` and is a problem document of type `slug`.
    #[track_caller]
    pub(crate) fn assert_problem(&self, status: u16, slug: &str) -> &Self {
        assert_eq!(self.status.as_u16(), status, "status of {}", self.text);
        assert!(
            self.content_type().starts_with("application/problem+json"),
            "content type {:?} of {}",
            self.content_type(),
            self.text
        );
        let type_uri = self.body["type"].as_str().unwrap_or_default();
        assert!(
            type_uri.ends_with(&format!("/{slug}")),
            "problem type {type_uri:?} should end with /{slug}: {}",
            self.text
        );
        assert_eq!(
            self.body["status"],
            json!(status),
            "status member of {}",
            self.text
        );
        assert!(self.body["title"].is_string(), "title of {}", self.text);
        assert!(self.body["detail"].is_string(), "detail of {}", self.text);
        self
    }

    /// Asserts a 422 validation problem that names `pointer` among its field errors.
    #[track_caller]
    pub(crate) fn assert_invalid_field(&self, pointer: &str) -> &Self {
        self.assert_problem(422, "validation-failed");
        let pointers = self.pointers();
        assert!(
            pointers.iter().any(|p| p == pointer),
            "expected an error at {pointer:?}, got {pointers:?}: {}",
            self.text
        );
        self
    }

    /// Asserts a 422 validation problem whose first error names the query parameter `name`.
    #[track_caller]
    pub(crate) fn assert_invalid_parameter(&self, name: &str) -> &Self {
        self.assert_problem(422, "validation-failed");
        assert_eq!(
            self.body["errors"][0]["parameter"],
            json!(name),
            "{}",
            self.text
        );
        self
    }
}

impl TestApp {
    pub(crate) fn builder(pool: PgPool) -> TestAppBuilder {
        TestAppBuilder {
            pool,
            settings: ApiSettings {
                auth: test_auth(),
                ..ApiSettings::default()
            },
        }
    }

    /// The same server, called with `token` (or none): for as long as the app lives.
    pub(crate) fn with_token(&self, token: Option<&str>) -> TestApp {
        TestApp {
            base: self.base.clone(),
            client: client(token),
            pool: self.pool.clone(),
            server: None,
        }
    }

    /// The same server, called as `sub` in `groups` (a token of the test secret).
    pub(crate) fn as_user(&self, sub: &str, groups: &[&str]) -> TestApp {
        self.with_token(Some(&token(sub, groups)))
    }

    /// The same server, called without an `Authorization` header.
    pub(crate) fn without_token(&self) -> TestApp {
        self.with_token(None)
    }

    /// Binds `role` to `subject` in `app` (app-wide, or in `environment`), as the admin.
    pub(crate) async fn bind(
        &self,
        app: &str,
        subject: &str,
        role: &str,
        environment: Option<&str>,
    ) -> Value {
        let mut body = json!({"subject": subject, "role": role});
        if let Some(env) = environment {
            body["environment"] = json!(env);
        }
        let admin = self.as_user(ADMIN, &[]);
        let r = admin
            .post_json(&format!("/v1/apps/{app}/role-bindings"), &body)
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "bind a role: {}", r.text);
        r.body
    }

    /// The app with default settings.
    pub(crate) async fn spawn(pool: PgPool) -> Self {
        Self::builder(pool).start().await
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request to `path`, to add headers or a body to before [`TestApp::send`].
    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// Sends a request and reads the whole answer. Fails the test on a 500.
    pub(crate) async fn send(&self, request: RequestBuilder) -> Resp {
        let response = request.send().await.expect("send the request");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("read the body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert_ne!(
            status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "the API answered 500: {text}"
        );
        Resp {
            status,
            headers,
            body,
            text,
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Resp {
        self.send(self.request(Method::GET, path)).await
    }

    pub(crate) async fn delete(&self, path: &str) -> Resp {
        self.send(self.request(Method::DELETE, path)).await
    }

    /// A request with `body` as its JSON document.
    pub(crate) fn json_request(&self, method: Method, path: &str, body: &Value) -> RequestBuilder {
        self.request(method, path)
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string())
    }

    pub(crate) async fn post_json(&self, path: &str, body: &Value) -> Resp {
        self.send(self.json_request(Method::POST, path, body)).await
    }

    pub(crate) async fn put_json(&self, path: &str, body: &Value) -> Resp {
        self.send(self.json_request(Method::PUT, path, body)).await
    }

    pub(crate) async fn patch_json(&self, path: &str, body: &Value) -> Resp {
        self.send(self.json_request(Method::PATCH, path, body))
            .await
    }

    /// POST with an `Idempotency-Key`.
    pub(crate) async fn post_keyed(&self, path: &str, key: &str, body: &Value) -> Resp {
        self.send(
            self.json_request(Method::POST, path, body)
                .header("idempotency-key", key),
        )
        .await
    }

    /// Registers the simulated cluster `local`, the app `web` and its environment `prod`.
    pub(crate) async fn seed(&self) {
        self.seed_cluster("local").await;
        self.seed_app("web").await;
        self.seed_env("web", "prod").await;
    }

    pub(crate) async fn seed_cluster(&self, name: &str) -> Resp {
        let r = self
            .post_json("/v1/clusters", &json!({"name": name, "kind": "simulated"}))
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "register cluster: {}",
            r.text
        );
        r
    }

    pub(crate) async fn seed_app(&self, name: &str) -> Resp {
        let r = self
            .post_json(
                "/v1/apps",
                &json!({"name": name, "description": "storefront"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "create app: {}", r.text);
        r
    }

    /// Puts the DESIGN.md canary example as environment `env` of `app`, on cluster `local`,
    /// in namespace `app`: its workload is named `app` for `prod`, `app-env` for the others
    /// (one workload belongs to one environment).
    pub(crate) async fn seed_env(&self, app: &str, env: &str) -> Resp {
        let mut spec = canary_env();
        spec["namespace"] = json!(app);
        if env != "prod" {
            spec["workload"]["name"] = json!(format!("{app}-{env}"));
        }
        let r = self
            .put_json(&format!("/v1/apps/{app}/environments/{env}"), &spec)
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "create environment: {}",
            r.text
        );
        r
    }

    /// Requests a deployment of `image` to `app`/`env` and returns the created deployment.
    pub(crate) async fn deploy(&self, app: &str, env: &str, image: &str) -> Value {
        let r = self
            .post_json(
                &format!("/v1/apps/{app}/environments/{env}/deployments"),
                &json!({"image": image}),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "create deployment: {}",
            r.text
        );
        r.body
    }

    /// Rows in a table, counted in the database itself.
    pub(crate) async fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT count(*) FROM {table}");
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await
            .expect("count rows")
    }

    /// Moves deployment `id` to `status` by a plain UPDATE, as a test's stand-in for the
    /// engine, whose transitions are fenced writes of a claimed deployment
    /// (`rollouts::write_step`). The database's own refusal (a constraint) is returned; a
    /// missing deployment fails the test.
    pub(crate) async fn force_status(
        &self,
        id: Uuid,
        status: DeploymentStatus,
    ) -> Result<(), sqlx::Error> {
        let done = sqlx::query(
            "UPDATE deployments SET status = $2::deployment_status, updated_at = now() WHERE id = $1",
        )
        .bind(id)
        .bind(status.as_str())
        .execute(&self.pool)
        .await?;
        assert_eq!(done.rows_affected(), 1, "no deployment {id}");
        Ok(())
    }
}

/// The environment of DESIGN.md's API section: a canary with a timed and an open pause.
pub(crate) fn canary_env() -> Value {
    json!({
        "cluster": "local",
        "namespace": "web",
        "workload": {"name": "web", "container": "web", "replicas": 4, "port": 8080},
        "strategy": {
            "type": "canary",
            "steps": [{"set_weight": 10}, {"pause": {"duration": "5m"}}, {"set_weight": 50}, {"pause": {}}],
            "traffic": {"router": "replicas"}
        },
        "progress_deadline": "10m",
        "approval": {"required": true, "distinct_approver": true},
        "supersede_queued": true
    })
}

/// [`canary_env`] where a deployment may bring its own strategy.
pub(crate) fn overridable_env() -> Value {
    let mut env = canary_env();
    env["allow_strategy_override"] = json!(true);
    env
}

/// A deployment request of DESIGN.md's API section, without a version (derived from the tag).
pub(crate) fn deployment_request() -> Value {
    json!({
        "image": "ghcr.io/acme/web:1.4.2",
        "reason": "release 1.4.2",
        "source": {"kind": "api", "commit": "3f2a9c1", "repository": "acme/web", "user": "alice"}
    })
}

pub(crate) const DEPLOYMENTS: &str = "/v1/apps/web/environments/prod/deployments";
