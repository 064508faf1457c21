//! Traffic routers on the real API server: the Gateway API HTTPRoute (CRDs installed by
//! scripts/cluster/addons) and the NGINX canary Ingress. No controller runs: what is asserted is
//! the objects the driver writes and reads back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};
use slipway_cluster::{ClusterDriver, Target};
use slipway_core::TrafficRouting;
use slipway_core::rollout::{Action, Track};
use slipway_core::strategy::{GatewayApiRoute, NginxIngress};

use crate::env::{Env, apply_workload, poll, release};

fn routes(env: &Env) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "httproutes");
    Api::namespaced_with(env.client.clone(), &env.namespace, &resource)
}

fn weight(w: u32) -> Action {
    Action::SetCanaryWeight { canary_weight: w }
}

async fn selector_track(env: &Env, service: &str) -> Option<String> {
    let services: Api<Service> = Api::namespaced(env.client.clone(), &env.namespace);
    let s = services.get(service).await.unwrap();
    s.spec?.selector?.get("slipway.dev/track").cloned()
}

#[tokio::test]
async fn gateway_api_route_weights_are_written_and_read_back() {
    let env = Env::new("gateway").await;
    let t = env.routed(
        "web",
        3,
        TrafficRouting::GatewayApi(GatewayApiRoute {
            http_route: "shop".into(),
        }),
    );
    // The user's route: a rule for another service, and the rule for web (with a filter and a
    // match Slipway must keep).
    let route: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": { "name": "shop", "labels": { "team": "shop" } },
        "spec": {
            "parentRefs": [{ "name": "edge", "namespace": "gateways" }],
            "hostnames": ["shop.test"],
            "rules": [
                { "matches": [{ "path": { "type": "PathPrefix", "value": "/api" } }],
                  "backendRefs": [{ "name": "api", "port": 80 }] },
                { "matches": [{ "path": { "type": "PathPrefix", "value": "/" } }],
                  "filters": [{ "type": "RequestHeaderModifier",
                                "requestHeaderModifier": { "add": [{ "name": "x-shop", "value": "1" }] } }],
                  "backendRefs": [{ "name": "web", "port": 8080 }] },
            ],
        },
    }))
    .unwrap();
    let routes = routes(&env);
    routes.create(&PostParams::default(), &route).await.unwrap();
    let before = routes.get("shop").await.unwrap();

    // No canary backend yet: all traffic on stable.
    assert_eq!(env.observe(&t).await.canary_weight, Some(0));

    env.apply(
        &t,
        &[
            apply_workload(Track::Stable, "v1", 3),
            apply_workload(Track::Canary, "v2", 1),
        ],
    )
    .await;
    env.observe_until(&t, "stable and canary complete", |o| {
        o.workload(Track::Stable)
            .is_some_and(|w| w.is_complete(&release("v1"), 3))
            && o.workload(Track::Canary)
                .is_some_and(|w| w.is_complete(&release("v2"), 1))
    })
    .await;
    env.apply(&t, &[weight(25)]).await;

    // Exactly the weights changed: the canary ref was added beside the stable one.
    let after = routes.get("shop").await.unwrap();
    let mut expected = before.data.clone();
    expected["spec"]["rules"][1]["backendRefs"] = json!([
        { "group": "", "kind": "Service", "name": "web", "port": 8080, "weight": 75 },
        { "group": "", "kind": "Service", "name": "web-canary", "port": 8080, "weight": 25 },
    ]);
    assert_eq!(after.data["spec"], expected["spec"]);
    assert_eq!(after.metadata.labels, before.metadata.labels);
    assert_eq!(env.observe(&t).await.canary_weight, Some(25));

    // The two Services the route sends traffic to select their track's pods.
    assert_eq!(selector_track(&env, "web").await.as_deref(), Some("stable"));
    assert_eq!(
        selector_track(&env, "web-canary").await.as_deref(),
        Some("canary")
    );
    let canary_pods = env.ready_pod_ips("web", Track::Canary).await;
    assert_eq!(canary_pods.len(), 1);
    poll("web-canary endpoints are the canary pod", || async {
        (env.endpoint_ips("web-canary").await == canary_pods).then_some(())
    })
    .await;
    let stable_pods = env.ready_pod_ips("web", Track::Stable).await;
    poll("web endpoints are the stable pods", || async {
        (env.endpoint_ips("web").await == stable_pods).then_some(())
    })
    .await;

    // Someone else edits the route meanwhile: their change stays, the weights move.
    routes
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "hostnames": ["shop.test", "www.shop.test"] } })),
        )
        .await
        .unwrap();
    env.apply(&t, &[weight(50)]).await;
    let r = routes.get("shop").await.unwrap();
    assert_eq!(
        r.data["spec"]["hostnames"],
        json!(["shop.test", "www.shop.test"])
    );
    let refs = &r.data["spec"]["rules"][1]["backendRefs"];
    assert_eq!(
        (refs[0]["weight"].as_u64(), refs[1]["weight"].as_u64()),
        (Some(50), Some(50))
    );
    assert_eq!(refs.as_array().map(Vec::len), Some(2));

    // What the route says is what Slipway reports, whoever wrote it.
    let mut edited = r.data["spec"]["rules"].clone();
    edited[1]["backendRefs"][0]["weight"] = json!(1);
    edited[1]["backendRefs"][1]["weight"] = json!(3);
    routes
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "rules": edited } })),
        )
        .await
        .unwrap();
    assert_eq!(env.observe(&t).await.canary_weight, Some(75));

    // Back to 0: the canary ref stays, with weight 0; setting it again writes nothing.
    env.apply(&t, &[weight(0)]).await;
    let r = routes.get("shop").await.unwrap();
    let refs = &r.data["spec"]["rules"][1]["backendRefs"];
    assert_eq!(
        (refs[0]["weight"].as_u64(), refs[1]["weight"].as_u64()),
        (Some(100), Some(0))
    );
    assert_eq!(env.observe(&t).await.canary_weight, Some(0));
    env.apply(&t, &[weight(0)]).await;
    let again = routes.get("shop").await.unwrap();
    assert_eq!(again.metadata.resource_version, r.metadata.resource_version);
    // The API server kept the api rule as it was.
    assert_eq!(
        again.data["spec"]["rules"][0],
        before.data["spec"]["rules"][0]
    );

    // A route that does not reach the stable Service, and a missing route: no weight to
    // report, and setting one fails for good, saying why.
    let other: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": { "name": "other" },
        "spec": { "rules": [{ "backendRefs": [{ "name": "api", "port": 80 }] }] },
    }))
    .unwrap();
    routes.create(&PostParams::default(), &other).await.unwrap();
    for (route, reason) in [
        ("other", "route_misconfigured"),
        ("missing", "route_not_found"),
    ] {
        let t = env.routed(
            "web",
            3,
            TrafficRouting::GatewayApi(GatewayApiRoute {
                http_route: route.into(),
            }),
        );
        assert_eq!(env.observe(&t).await.canary_weight, None, "{route}");
        let e = env.driver.apply(&t, &[weight(10)]).await.unwrap_err();
        assert_eq!((e.is_retryable(), e.reason()), (false, reason), "{e}");
        assert!(e.message().contains(route), "{e}");
    }
    let untouched = routes.get("other").await.unwrap();
    assert_eq!(
        untouched.data["spec"]["rules"][0]["backendRefs"][0].get("weight"),
        Some(&json!(1))
    );
    env.finish().await;
}

#[tokio::test]
async fn nginx_canary_ingress_is_a_managed_copy() {
    let env = Env::new("nginx").await;
    let t = env.routed(
        "web",
        2,
        TrafficRouting::Nginx(NginxIngress {
            ingress: "shop".into(),
        }),
    );
    let ingresses: Api<Ingress> = Api::namespaced(env.client.clone(), &env.namespace);
    let primary: Ingress = serde_json::from_value(json!({
        "metadata": { "name": "shop", "annotations": { "nginx.ingress.kubernetes.io/rewrite-target": "/" } },
        "spec": {
            "ingressClassName": "nginx",
            "tls": [{ "hosts": ["shop.test"], "secretName": "shop-tls" }],
            "rules": [{ "host": "shop.test", "http": { "paths": [
                { "path": "/", "pathType": "Prefix",
                  "backend": { "service": { "name": "web", "port": { "number": 8080 } } } },
                { "path": "/api", "pathType": "Prefix",
                  "backend": { "service": { "name": "api", "port": { "number": 80 } } } },
            ] } }],
        },
    }))
    .unwrap();
    ingresses
        .create(&PostParams::default(), &primary)
        .await
        .unwrap();
    let before = ingresses.get("shop").await.unwrap();
    assert_eq!(env.observe(&t).await.canary_weight, Some(0));

    env.apply(
        &t,
        &[
            apply_workload(Track::Stable, "v1", 2),
            apply_workload(Track::Canary, "v2", 1),
            weight(10),
        ],
    )
    .await;
    let canary = ingresses.get("shop-canary").await.unwrap();
    let annotations = canary.metadata.annotations.clone().unwrap();
    assert_eq!(annotations["nginx.ingress.kubernetes.io/canary"], "true");
    assert_eq!(
        annotations["nginx.ingress.kubernetes.io/canary-weight"],
        "10"
    );
    assert_eq!(
        canary.metadata.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
        "slipway"
    );
    let spec = serde_json::to_value(canary.spec.clone().unwrap()).unwrap();
    assert_eq!(
        spec,
        json!({
            "ingressClassName": "nginx",
            "rules": [{ "host": "shop.test", "http": { "paths": [
                { "path": "/", "pathType": "Prefix",
                  "backend": { "service": { "name": "web-canary", "port": { "number": 8080 } } } },
            ] } }],
        })
    );
    let managers: Vec<_> = canary
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert_eq!(managers, ["slipway"]);
    assert_eq!(env.observe(&t).await.canary_weight, Some(10));
    assert_eq!(
        selector_track(&env, "web-canary").await.as_deref(),
        Some("canary")
    );

    env.apply(&t, &[weight(60), weight(0)]).await;
    let canary = ingresses.get("shop-canary").await.unwrap();
    assert_eq!(
        canary.metadata.annotations.unwrap()["nginx.ingress.kubernetes.io/canary-weight"],
        "0"
    );
    assert_eq!(env.observe(&t).await.canary_weight, Some(0));
    // The user's Ingress was only read.
    let after = ingresses.get("shop").await.unwrap();
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );

    // Another environment whose router names the same Ingress neither reads the weight of
    // this environment's canary copy nor writes it.
    let other = Target {
        environment: "another-environment".into(),
        ..env.routed(
            "api",
            1,
            TrafficRouting::Nginx(NginxIngress {
                ingress: "shop".into(),
            }),
        )
    };
    let e = env.driver.observe(&other).await.unwrap_err();
    assert_eq!(
        (e.is_retryable(), e.reason()),
        (false, "owned_by_other_environment"),
        "{e}"
    );
    let e = env.driver.apply(&other, &[weight(50)]).await.unwrap_err();
    assert_eq!(e.reason(), "owned_by_other_environment", "{e}");
    let canary = ingresses.get("shop-canary").await.unwrap();
    assert_eq!(
        canary.metadata.annotations.unwrap()["nginx.ingress.kubernetes.io/canary-weight"],
        "0"
    );

    // A canary Ingress name someone else uses is left alone; a missing Ingress fails for good.
    let foreign: Ingress = serde_json::from_value(json!({
        "metadata": { "name": "mall-canary" },
        "spec": { "defaultBackend": { "service": { "name": "x", "port": { "number": 80 } } } },
    }))
    .unwrap();
    ingresses
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    let mall: Ingress = serde_json::from_value(json!({
        "metadata": { "name": "mall" },
        "spec": { "defaultBackend": { "service": { "name": "web", "port": { "number": 8080 } } } },
    }))
    .unwrap();
    ingresses
        .create(&PostParams::default(), &mall)
        .await
        .unwrap();
    for (ingress, reason) in [("mall", "not_managed"), ("missing", "ingress_not_found")] {
        let t = env.routed(
            "web",
            2,
            TrafficRouting::Nginx(NginxIngress {
                ingress: ingress.into(),
            }),
        );
        let e = env.driver.apply(&t, &[weight(10)]).await.unwrap_err();
        assert_eq!((e.is_retryable(), e.reason()), (false, reason), "{e}");
    }
    let still: Value =
        serde_json::to_value(ingresses.get("mall-canary").await.unwrap().spec).unwrap();
    assert_eq!(still["defaultBackend"]["service"]["name"], "x");
    env.finish().await;
}
