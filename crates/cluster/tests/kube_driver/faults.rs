//! What the driver does when the API server asks it to try again (409, 429, 5xx), refuses
//! (401, 403, 404, 422), is slow, or is gone; and its client-side rate limit.
//!
//! 429 and 5xx cannot be had from a healthy API server on demand, so a proxy in front of the
//! real one answers a given number of requests itself, with a Kubernetes `Status` as the API
//! server would write it, and forwards every other request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use slipway_cluster::{ClusterDriver, KubeDriver, KubeSettings};
use slipway_core::rollout::{Action, Track};

use crate::env::{Env, apply_workload, kubeconfig_e2e, kubeconfig_with_base, release};

/// An answer the proxy gives instead of forwarding: to the next requests with `method`.
#[derive(Debug, Clone)]
struct Injected {
    method: Method,
    /// Only requests whose path ends so (any path when empty).
    path_suffix: &'static str,
    code: u16,
    reason: &'static str,
    message: &'static str,
}

#[derive(Default)]
struct ProxyState {
    upstream: String,
    injected: Mutex<VecDeque<Injected>>,
    /// (method, path, when) of every request that reached the proxy.
    seen: Mutex<Vec<(Method, String, Instant)>>,
    http: Option<reqwest::Client>,
}

struct Proxy {
    state: Arc<ProxyState>,
    kubeconfig: PathBuf,
}

impl Proxy {
    async fn start(name: &str) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let base = kube::config::Kubeconfig::read_from(kubeconfig_e2e()).unwrap();
        let upstream = base.clusters[0]
            .cluster
            .as_ref()
            .unwrap()
            .server
            .clone()
            .unwrap();
        let http = reqwest::Client::builder()
            .tls_danger_accept_invalid_certs(true)
            .build()
            .unwrap();
        let state = Arc::new(ProxyState {
            upstream,
            http: Some(http),
            ..ProxyState::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let kubeconfig = kubeconfig_with_base(&kubeconfig_e2e(), name, |k| {
            for c in &mut k.clusters {
                if let Some(c) = c.cluster.as_mut() {
                    c.server = Some(format!("http://127.0.0.1:{port}"));
                    c.insecure_skip_tls_verify = None;
                }
            }
        });
        Self { state, kubeconfig }
    }

    fn inject(
        &self,
        n: usize,
        method: Method,
        code: u16,
        reason: &'static str,
        message: &'static str,
    ) {
        self.inject_at(n, method, "", code, reason, message);
    }

    fn inject_at(
        &self,
        n: usize,
        method: Method,
        path_suffix: &'static str,
        code: u16,
        reason: &'static str,
        message: &'static str,
    ) {
        let mut q = self.state.injected.lock().unwrap();
        for _ in 0..n {
            q.push_back(Injected {
                method: method.clone(),
                path_suffix,
                code,
                reason,
                message,
            });
        }
    }

    fn seen(&self, method: &Method) -> Vec<(String, Instant)> {
        let seen = self.state.seen.lock().unwrap();
        seen.iter()
            .filter(|(m, _, _)| m == method)
            .map(|(_, p, t)| (p.clone(), *t))
            .collect()
    }

    fn driver(&self, settings: KubeSettings) -> KubeDriver {
        KubeDriver::from_kubeconfig(&self.kubeconfig, None)
            .unwrap()
            .with_settings(settings)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        std::fs::remove_file(&self.kubeconfig).ok();
    }
}

async fn forward(
    State(state): State<Arc<ProxyState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state
        .seen
        .lock()
        .unwrap()
        .push((method.clone(), uri.path().to_owned(), Instant::now()));
    let injected = {
        let mut q = state.injected.lock().unwrap();
        match q.front() {
            Some(i) if i.method == method && uri.path().ends_with(i.path_suffix) => q.pop_front(),
            _ => None,
        }
    };
    if let Some(i) = injected {
        let status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": i.message, "reason": i.reason, "code": i.code,
        });
        return (
            StatusCode::from_u16(i.code).unwrap(),
            [("content-type", "application/json")],
            status.to_string(),
        )
            .into_response();
    }
    let url = format!(
        "{}{}",
        state.upstream,
        uri.path_and_query().map_or("", |p| p.as_str())
    );
    let mut request = state.http.as_ref().unwrap().request(method, url).body(body);
    for (k, v) in &headers {
        if k != "host" && k != "content-length" {
            request = request.header(k, v);
        }
    }
    let answer = request.send().await.unwrap();
    let code = StatusCode::from_u16(answer.status().as_u16()).unwrap();
    let content_type = answer
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    let bytes = answer.bytes().await.unwrap();
    (code, [("content-type", content_type)], bytes).into_response()
}

fn fast() -> KubeSettings {
    KubeSettings {
        attempts: 3,
        backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(400),
        ..KubeSettings::default()
    }
}

fn scale(replicas: u32) -> Action {
    Action::ScaleWorkload {
        track: Track::Stable,
        replicas,
    }
}

#[tokio::test]
async fn conflicts_throttling_and_server_errors_are_retried_with_backoff() {
    let env = Env::new("retry").await;
    let proxy = Proxy::start("retry").await;
    let driver = proxy.driver(fast());
    let t = env.target("web", 2);
    env.apply(&t, &[apply_workload(Track::Stable, "v1", 2)])
        .await;

    // Two 503s, then the real API server: the scale goes through on the third PATCH, after
    // backoffs of about 100 ms and 200 ms.
    proxy.inject(2, Method::PATCH, 503, "ServiceUnavailable", "etcd is busy");
    driver.apply(&t, &[scale(3)]).await.unwrap();
    let patches = proxy.seen(&Method::PATCH);
    assert_eq!(patches.len(), 3, "{patches:?}");
    let gap = |i: usize| patches[i].1 - patches[i - 1].1;
    assert!(gap(1) >= Duration::from_millis(100), "{:?}", gap(1));
    assert!(gap(2) >= Duration::from_millis(200), "{:?}", gap(2));
    assert!(
        patches
            .iter()
            .all(|(p, _)| p.ends_with("/deployments/web/scale"))
    );
    env.observe_until(&t, "scaled to 3", |o| {
        o.workload(Track::Stable)
            .is_some_and(|w| w.is_complete(&release("v1"), 3))
    })
    .await;

    // A 409 once: retried, and the apply lands.
    proxy.inject(
        1,
        Method::PATCH,
        409,
        "Conflict",
        "the object has been modified",
    );
    driver.apply(&t, &[scale(2)]).await.unwrap();
    assert_eq!(proxy.seen(&Method::PATCH).len(), 5);

    // 429 on every try: after `attempts` GETs the error goes back, retryable, with the
    // API server's reason and message.
    proxy.inject(
        3,
        Method::GET,
        429,
        "TooManyRequests",
        "too many requests, slow down",
    );
    let gets = proxy.seen(&Method::GET).len();
    let e = driver.observe(&t).await.unwrap_err();
    assert_eq!(
        (e.is_retryable(), e.reason()),
        (true, "too_many_requests"),
        "{e}"
    );
    assert_eq!(e.message(), "too many requests, slow down");
    assert_eq!(proxy.seen(&Method::GET).len() - gets, 3);

    // 500 on every try of an apply: retryable `internal_error` once the attempts are spent.
    proxy.inject(3, Method::GET, 500, "InternalError", "boom");
    let e = driver.apply(&t, &[scale(2)]).await.unwrap_err();
    assert_eq!(
        (e.is_retryable(), e.reason()),
        (true, "internal_error"),
        "{e}"
    );

    // Refusals are permanent at once: one request each, the API's message kept.
    for (code, reason, want) in [
        (401, "Unauthorized", "unauthorized"),
        (403, "Forbidden", "forbidden"),
        (404, "NotFound", "not_found"),
        (422, "Invalid", "invalid"),
    ] {
        proxy.inject(1, Method::GET, code, reason, "refused by the test proxy");
        let gets = proxy.seen(&Method::GET).len();
        let e = driver.observe(&t).await.unwrap_err();
        assert_eq!((e.is_retryable(), e.reason()), (false, want), "{code}: {e}");
        assert_eq!(e.message(), "refused by the test proxy");
        assert_eq!(
            proxy.seen(&Method::GET).len() - gets,
            1,
            "{code} was retried"
        );
    }
    // And the real thing still works through the proxy.
    assert!(
        driver
            .observe(&t)
            .await
            .unwrap()
            .workload(Track::Stable)
            .is_some()
    );
    env.finish().await;
}

#[tokio::test]
async fn a_real_conflict_is_retryable() {
    // A write with a stale resourceVersion, as the HTTPRoute weights are written: the real API
    // server answers 409, which the driver classifies as worth retrying.
    let env = Env::new("conflict").await;
    let t = env.target("web", 1);
    env.apply(&t, &[apply_workload(Track::Stable, "v1", 1)])
        .await;
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(env.client.clone(), &env.namespace);
    let d = deployments.get("web").await.unwrap();
    let stale = d.metadata.resource_version.clone().unwrap();
    env.apply(&t, &[scale(2)]).await;
    let e = deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "metadata": { "resourceVersion": stale, "labels": { "x": "y" } } }),
            ),
        )
        .await
        .unwrap_err();
    let e = slipway_cluster::kube::from_kube(e);
    assert_eq!((e.is_retryable(), e.reason()), (true, "conflict"), "{e}");
    env.finish().await;
}

#[tokio::test]
async fn a_silent_server_times_out_without_retries_here() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        loop {
            if let Ok((s, _)) = listener.accept().await {
                open.push(s);
            }
        }
    });
    let path = kubeconfig_with_base(&kubeconfig_e2e(), "silent", |k| {
        for c in &mut k.clusters {
            if let Some(c) = c.cluster.as_mut() {
                c.server = Some(format!("http://127.0.0.1:{port}"));
                c.insecure_skip_tls_verify = None;
            }
        }
    });
    let driver = KubeDriver::from_kubeconfig(&path, None)
        .unwrap()
        .with_settings(KubeSettings {
            call_timeout: Duration::from_secs(1),
            ..fast()
        });
    let t = crate::env::plain_target();
    let started = Instant::now();
    let e = driver.observe(&t).await.unwrap_err();
    let took = started.elapsed();
    assert!(e.is_retryable(), "{e}");
    assert_eq!(e.reason(), "timeout", "{e}");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(3),
        "{took:?}: a timeout goes back to the engine at once"
    );
    held.abort();
    std::fs::remove_file(&path).ok();
}

#[tokio::test]
async fn the_client_keeps_to_its_rate_limit() {
    let proxy = Proxy::start("rate").await;
    let driver = proxy.driver(KubeSettings {
        qps: 5,
        burst: 5,
        ..KubeSettings::default()
    });
    let started = Instant::now();
    for _ in 0..15 {
        driver.probe().await.unwrap();
    }
    let took = started.elapsed();
    // 5 at once, 5 more a second later, the last 5 after two seconds.
    assert!(took >= Duration::from_millis(1900), "{took:?}");
    let seen = proxy.seen(&Method::GET);
    assert_eq!(seen.len(), 15);
    for window in seen.windows(6) {
        let span = window[5].1 - window[0].1;
        assert!(
            span >= Duration::from_millis(900),
            "6 requests within {span:?}"
        );
    }
    let version = driver.probe().await.unwrap().unwrap();
    assert!(version.starts_with("v1."), "{version}");
}

#[tokio::test]
async fn a_route_edited_between_read_and_write_is_read_again() {
    let env = Env::new("route409").await;
    let proxy = Proxy::start("route409").await;
    let driver = proxy.driver(fast());
    let t = env.routed(
        "web",
        1,
        slipway_core::TrafficRouting::GatewayApi(slipway_core::strategy::GatewayApiRoute {
            http_route: "shop".into(),
        }),
    );
    let gvk = kube::api::GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    let resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, "httproutes");
    let routes: Api<kube::api::DynamicObject> =
        Api::namespaced_with(env.client.clone(), &env.namespace, &resource);
    let route: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": { "name": "shop" },
        "spec": { "rules": [{ "backendRefs": [{ "name": "web", "port": 8080 }] }] },
    }))
    .unwrap();
    routes
        .create(&kube::api::PostParams::default(), &route)
        .await
        .unwrap();

    // The route's write answers 409 once, as it does when someone edits the route between
    // Slipway's read and write: the action is tried again from a fresh read.
    let on_route = |seen: Vec<(String, Instant)>| -> usize {
        seen.iter()
            .filter(|(p, _)| p.ends_with("/httproutes/shop"))
            .count()
    };
    let (gets, patches) = (
        on_route(proxy.seen(&Method::GET)),
        on_route(proxy.seen(&Method::PATCH)),
    );
    proxy.inject_at(
        1,
        Method::PATCH,
        "/httproutes/shop",
        409,
        "Conflict",
        "Operation cannot be fulfilled: the object has been modified",
    );
    driver
        .apply(&t, &[Action::SetCanaryWeight { canary_weight: 30 }])
        .await
        .unwrap();
    assert_eq!(on_route(proxy.seen(&Method::PATCH)) - patches, 2);
    assert_eq!(on_route(proxy.seen(&Method::GET)) - gets, 2);
    let r = routes.get("shop").await.unwrap();
    let refs = &r.data["spec"]["rules"][0]["backendRefs"];
    assert_eq!(
        (refs[0]["weight"].as_u64(), refs[1]["weight"].as_u64()),
        (Some(70), Some(30))
    );
    assert_eq!(driver.observe(&t).await.unwrap().canary_weight, Some(30));
    env.finish().await;
}
