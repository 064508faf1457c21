//! Canaries with a traffic router on the real cluster, driven by the engine through each step:
//! the Gateway API `HTTPRoute` backend weights and the NGINX canary Ingress annotations are
//! asserted on the objects at every step (no Gateway or ingress controller runs: the objects are
//! what a controller would act on). On promotion the canary goes to weight 0 before it is scaled
//! down, and an abort mid-canary puts all traffic back on stable at once.
// The test body is a shared helper, not a #[test] function: clippy's allow-*-in-tests does not
// cover it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail the test with a message"
)]

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::{Value, json};
use slipway_store::PgPool;
use tokio::sync::watch;

use crate::harness::*;

#[derive(Clone, Copy, Debug)]
enum Router {
    /// HTTPRoute `shop`, whose rule sends `/` to Service `web`.
    Gateway,
    /// Ingress `shop` with a path to Service `web`; Slipway writes `shop-canary`.
    Nginx,
}

impl Router {
    fn traffic(self) -> Value {
        match self {
            Self::Gateway => json!({"router": "gateway_api", "http_route": "shop"}),
            Self::Nginx => json!({"router": "nginx", "ingress": "shop"}),
        }
    }

    /// Creates the user's route or Ingress, as a user would before the first deployment.
    async fn create(self, e: &E2e) {
        match self {
            Self::Gateway => {
                let route: DynamicObject = serde_json::from_value(json!({
                    "apiVersion": "gateway.networking.k8s.io/v1",
                    "kind": "HTTPRoute",
                    "metadata": { "name": "shop" },
                    "spec": {
                        "parentRefs": [{ "name": "edge" }],
                        "hostnames": ["shop.test"],
                        "rules": [{
                            "matches": [{ "path": { "type": "PathPrefix", "value": "/" } }],
                            "backendRefs": [{ "name": "web", "port": 8080 }],
                        }],
                    },
                }))
                .unwrap();
                routes(e)
                    .create(&PostParams::default(), &route)
                    .await
                    .expect("create the HTTPRoute");
            }
            Self::Nginx => {
                let ingress: Ingress = serde_json::from_value(json!({
                    "metadata": { "name": "shop" },
                    "spec": {
                        "ingressClassName": "nginx",
                        "rules": [{ "host": "shop.test", "http": { "paths": [{
                            "path": "/", "pathType": "Prefix",
                            "backend": { "service": { "name": "web", "port": { "number": 8080 } } },
                        }] } }],
                    },
                }))
                .unwrap();
                ingresses(e)
                    .create(&PostParams::default(), &ingress)
                    .await
                    .expect("create the Ingress");
            }
        }
    }

    /// The canary's weight as the object on the cluster says it; `None` when the router sends
    /// the canary nothing at all (no canary backendRef, no canary Ingress).
    async fn weight(self, e: &E2e) -> Option<u32> {
        match self {
            Self::Gateway => {
                let (stable, canary) = route_weights(e).await;
                let canary = canary?;
                assert_eq!(stable + canary, 100, "route weights {stable}/{canary}");
                Some(canary)
            }
            Self::Nginx => {
                let i = ingresses(e).get_opt("shop-canary").await.unwrap()?;
                let a = i.metadata.annotations.unwrap_or_default();
                assert_eq!(
                    a.get("nginx.ingress.kubernetes.io/canary")
                        .map(String::as_str),
                    Some("true"),
                    "{a:?}"
                );
                Some(
                    a["nginx.ingress.kubernetes.io/canary-weight"]
                        .parse()
                        .unwrap(),
                )
            }
        }
    }

    /// What the route or the canary Ingress sends to: the canary Ingress leads to
    /// `web-canary` on the primary's port; the user's Ingress is untouched.
    async fn check_shape(self, e: &E2e) {
        if let Self::Nginx = self {
            let canary = ingresses(e).get("shop-canary").await.unwrap();
            let spec = serde_json::to_value(canary.spec).unwrap();
            assert_eq!(
                spec["rules"][0]["http"]["paths"][0]["backend"],
                json!({"service": {"name": "web-canary", "port": {"number": 8080}}}),
                "{spec}"
            );
            assert_eq!(spec["ingressClassName"], "nginx");
            let labels = canary.metadata.labels.unwrap_or_default();
            assert_eq!(labels["app.kubernetes.io/managed-by"], "slipway");
            let primary = ingresses(e).get("shop").await.unwrap();
            let paths =
                serde_json::to_value(primary.spec).unwrap()["rules"][0]["http"]["paths"].clone();
            assert_eq!(
                paths[0]["backend"]["service"]["name"], "web",
                "the user's Ingress is only read"
            );
        }
    }
}

fn routes(e: &E2e) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "httproutes");
    Api::namespaced_with(e.kube.clone(), &e.namespace, &resource)
}

fn ingresses(e: &E2e) -> Api<Ingress> {
    Api::namespaced(e.kube.clone(), &e.namespace)
}

/// Weights of the `web` and `web-canary` backendRefs of the route's rule (`weight` absent is 1,
/// as Gateway API defines it); the canary's `None` when it has no backendRef.
async fn route_weights(e: &E2e) -> (u32, Option<u32>) {
    let route = routes(e).get("shop").await.unwrap();
    let refs = route.data["spec"]["rules"][0]["backendRefs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let weight = |name: &str| {
        refs.iter()
            .find(|r| r["name"] == name)
            .map(|r| u32::try_from(r.get("weight").and_then(Value::as_u64).unwrap_or(1)).unwrap())
    };
    (
        weight("web").expect("the stable backendRef stays"),
        weight("web-canary"),
    )
}

async fn selector_track(e: &E2e, service: &str) -> Option<String> {
    let s = Api::<Service>::namespaced(e.kube.clone(), &e.namespace)
        .get_opt(service)
        .await
        .unwrap()?;
    s.spec?.selector?.get("slipway.dev/track").cloned()
}

/// `spec.replicas` of the canary Deployment (`None` when it does not exist).
async fn canary_replicas(e: &E2e) -> Option<i32> {
    e.k8s_deployment("web-canary")
        .await
        .map(|d| d.spec.replicas.unwrap_or(1))
}

/// Watches the cluster every 50 ms until told to stop: fails when the canary Deployment is
/// seen scaled to zero while the router still gives it traffic. The replicas are read before
/// the weight, so a zero seen was written before the weight read: the weight read must be 0.
/// Returns how many samples saw the weight at 0 with canary pods still asked for.
async fn never_scaled_down_before_weight_zero(
    e: &E2e,
    router: Router,
    mut stop: watch::Receiver<bool>,
) -> usize {
    let mut drained_first = 0;
    loop {
        let replicas = canary_replicas(e).await;
        let weight = router.weight(e).await;
        if replicas == Some(0) {
            assert!(
                weight.is_none_or(|w| w == 0),
                "{router:?}: canary scaled to 0 while its weight was {weight:?}"
            );
        } else if replicas.is_some_and(|r| r > 0) && weight == Some(0) {
            drained_first += 1;
        }
        if *stop.borrow() {
            return drained_first;
        }
        tokio::select! {
            _ = stop.changed() => {}
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

async fn canary_walks_promotes_and_aborts(pool: PgPool, router: Router) {
    let test = match router {
        Router::Gateway => "gateway",
        Router::Nginx => "nginx",
    };
    let e = E2e::start(pool, test).await;
    router.create(&e).await;
    let strategy = json!({"type": "canary", "steps": [
        {"set_weight": 20}, {"pause": {}},
        {"set_weight": 50}, {"pause": {}},
    ], "traffic": router.traffic()});
    e.put_env(4, strategy, json!({})).await;

    let v1 = e.deploy("1.0.0", json!({})).await;
    e.wait_status(v1, "succeeded").await;
    assert_eq!(e.ready_ips("stable").await.len(), 4);
    let before = router.weight(&e).await;
    assert!(
        before.is_none_or(|w| w == 0),
        "no canary traffic after the first deployment: {before:?}"
    );

    // Each step: the weight on the object, the canary's size, stable untouched, and the two
    // Services the router sends to selecting their track's pods.
    let v2 = e.deploy("2.0.0", json!({})).await;
    for (step, weight, canary) in [(1, 20, 1), (3, 50, 2)] {
        let d = e
            .wait(v2, &format!("paused at step {step}"), |d| {
                d["status"] == "paused" && d["phase"] == "paused_step" && d["step"] == step
            })
            .await;
        assert_eq!(d["serving"]["version"], "1.0.0", "{d}");
        assert_eq!(router.weight(&e).await, Some(weight), "step {step}");
        if let Router::Gateway = router {
            assert_eq!(route_weights(&e).await, (100 - weight, Some(weight)));
        }
        router.check_shape(&e).await;
        let c = e.k8s_deployment("web-canary").await.unwrap();
        assert_eq!(deployment_image(&c), image("2.0.0"));
        assert_eq!(deployment_counts(&c), (canary, canary, canary), "{weight}%");
        let s = e.k8s_deployment("web").await.unwrap();
        assert_eq!(deployment_image(&s), image("1.0.0"));
        assert_eq!(
            deployment_counts(&s),
            (4, 4, 4),
            "stable whole at {weight}%"
        );
        assert_eq!(selector_track(&e, "web").await.as_deref(), Some("stable"));
        assert_eq!(
            selector_track(&e, "web-canary").await.as_deref(),
            Some("canary")
        );
        let canary_ips = e.ready_ips("canary").await;
        assert_eq!(canary_ips.len(), usize::try_from(canary).unwrap());
        e.until(&format!("web-canary endpoints at {weight}%"), || async {
            (e.endpoint_ips("web-canary").await == canary_ips).then_some(())
        })
        .await;
        if step == 3 {
            break;
        }
        e.accepted(v2, "promote").await;
    }

    // Promote past the last pause: stable takes the new version, the weight goes to 0 and is
    // read back, and only then is the canary scaled down.
    let (stop, stopped) = watch::channel(false);
    let (drained_first, ()) = tokio::join!(
        never_scaled_down_before_weight_zero(&e, router, stopped),
        async {
            e.accepted(v2, "promote").await;
            let d = e.wait_status(v2, "succeeded").await;
            assert_eq!(
                d["serving"],
                json!({"health": "healthy", "version": "2.0.0"})
            );
            let _ = stop.send(true);
        }
    );
    eprintln!(
        "{}: {drained_first} samples saw weight 0 with the canary still up",
        e.namespace
    );
    assert_eq!(router.weight(&e).await, Some(0));
    if let Router::Gateway = router {
        assert_eq!(
            route_weights(&e).await,
            (100, Some(0)),
            "route back to 100/0"
        );
    }
    router.check_shape(&e).await;
    let s = e.k8s_deployment("web").await.unwrap();
    assert_eq!(deployment_image(&s), image("2.0.0"));
    assert_eq!(deployment_counts(&s), (4, 4, 4));
    assert_eq!(canary_replicas(&e).await, Some(0));
    e.until("canary pods gone, web on the new stable pods", || async {
        let canary_left = e
            .all_pods("app.kubernetes.io/name=web,slipway.dev/track=canary")
            .await;
        let stable_now = e.ready_ips("stable").await;
        (canary_left.is_empty()
            && stable_now.len() == 4
            && e.endpoint_ips("web").await == stable_now)
            .then_some(())
    })
    .await;
    let shifted: Vec<String> = e
        .events(v2)
        .await
        .iter()
        .filter(|ev| ev["kind"] == "traffic_shifted")
        .filter_map(|ev| ev["message"].as_str().map(str::to_owned))
        .collect();
    assert!(
        shifted.iter().any(|m| m == "all traffic on stable"),
        "{shifted:?}"
    );

    // Abort mid-canary: the weight goes back to 0 at once, then the canary is scaled down and
    // stable (2.0.0) serves on.
    let v3 = e.deploy("3.0.0", json!({})).await;
    e.wait(v3, "paused at step 1", |d| {
        d["status"] == "paused" && d["phase"] == "paused_step" && d["step"] == 1
    })
    .await;
    assert_eq!(router.weight(&e).await, Some(20));
    assert_eq!(canary_replicas(&e).await, Some(1));
    let (stop, stopped) = watch::channel(false);
    let ((), ()) = tokio::join!(
        async {
            never_scaled_down_before_weight_zero(&e, router, stopped).await;
        },
        async {
            let aborted = Instant::now();
            e.accepted(v3, "abort").await;
            e.until("canary weight 0 after the abort", || async {
                (router.weight(&e).await == Some(0)).then_some(())
            })
            .await;
            let back = aborted.elapsed();
            assert!(
                back < Duration::from_secs(10),
                "traffic back after {back:?}"
            );
            let d = e.wait_status(v3, "rolled_back").await;
            assert_eq!(d["outcome"], "aborted", "{d}");
            assert_eq!(
                d["serving"],
                json!({"health": "healthy", "version": "2.0.0"})
            );
            let _ = stop.send(true);
        }
    );
    if let Router::Gateway = router {
        assert_eq!(route_weights(&e).await, (100, Some(0)));
    }
    assert_eq!(canary_replicas(&e).await, Some(0));
    let s = e.k8s_deployment("web").await.unwrap();
    assert_eq!(deployment_image(&s), image("2.0.0"));
    assert_eq!(deployment_counts(&s), (4, 4, 4));
    e.finish().await;
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn canary_by_gateway_api_route_weights(pool: PgPool) {
    canary_walks_promotes_and_aborts(pool, Router::Gateway).await;
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn canary_by_nginx_ingress_annotations(pool: PgPool) {
    canary_walks_promotes_and_aborts(pool, Router::Nginx).await;
}
