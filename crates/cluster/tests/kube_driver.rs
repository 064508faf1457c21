//! The Kubernetes driver against a real API server (scripts/cluster: kube-apiserver, the
//! controllers and kwok's fake kubelets). Run with
//!
//! ```sh
//! scripts/cluster/build && eval "export $(scripts/cluster/start)"
//! SLIPWAY_TEST_KUBECONFIG=$KUBECONFIG cargo test -p slipway-cluster --test kube_driver
//! scripts/cluster/stop
//! ```
//!
//! Each test works in its own namespace and deletes it at the end. The driver under test
//! authenticates as `slipway-e2e`, bound in that namespace to exactly deploy/rbac's role; the
//! tests set up and check with the admin's client.

#[path = "kube_driver/env.rs"]
mod env;
#[path = "kube_driver/faults.rs"]
mod faults;
#[path = "support/kube_rbac.rs"]
mod kube_rbac;
#[path = "kube_driver/routers.rs"]
mod routers;

use std::time::{Duration, Instant};

use env::{
    ENVIRONMENT, Env, apply_workload, kubeconfig, kubeconfig_e2e, kubeconfig_with, poll, release,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use slipway_cluster::{ClusterDriver, KubeDriver, Target};
use slipway_core::rollout::{Action, Observation, ServiceRole, Track};
use slipway_core::{TrafficRouting, Workload};

#[tokio::test]
async fn applies_rolls_scales_and_deletes_a_workload() {
    let env = Env::new("roll").await;
    let t = env.target("web", 3);
    assert_eq!(env.observe(&t).await, Observation::default());

    env.apply(&t, &[apply_workload(Track::Stable, "v1", 3)])
        .await;
    let o = env
        .observe_until(&t, "v1 complete", |o| {
            o.workload(Track::Stable)
                .is_some_and(|w| w.is_complete(&release("v1"), 3))
        })
        .await;
    let first = o.workload(Track::Stable).unwrap().clone();
    assert_eq!(first.generation, 1);
    assert!(!first.progress_deadline_exceeded);

    // Labels, annotation and the field manager on what was written.
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.namespace);
    let d = deployments.get("web").await.unwrap();
    let labels = d.metadata.labels.clone().unwrap();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "slipway");
    assert_eq!(labels["app.kubernetes.io/name"], "web");
    assert_eq!(labels["slipway.dev/track"], "stable");
    assert_eq!(
        d.metadata.annotations.as_ref().unwrap()["slipway.dev/version"],
        "v1"
    );
    let managers: Vec<_> = d
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(managers.iter().any(|m| m == "slipway"), "{managers:?}");
    let ru = d
        .spec
        .strategy
        .as_ref()
        .unwrap()
        .rolling_update
        .as_ref()
        .unwrap();
    assert_eq!(
        format!("{:?}/{:?}", ru.max_surge, ru.max_unavailable),
        "Some(Int(1))/Some(Int(0))"
    );

    // Applying the same release again changes nothing.
    env.apply(&t, &[apply_workload(Track::Stable, "v1", 3)])
        .await;
    assert_eq!(
        env.observe(&t)
            .await
            .workload(Track::Stable)
            .unwrap()
            .generation,
        1
    );

    // A new release rolls: a new generation, then every pod on v2 and the v1 pods gone.
    env.apply(&t, &[apply_workload(Track::Stable, "v2", 3)])
        .await;
    let o = env.observe(&t).await;
    let w = o.workload(Track::Stable).unwrap();
    assert_eq!((w.generation, w.release.clone()), (2, Some(release("v2"))));
    assert!(
        !w.is_complete(&release("v2"), 3),
        "complete before the controller saw it: {w:?}"
    );
    let o = env
        .observe_until(&t, "v2 complete", |o| {
            o.workload(Track::Stable)
                .is_some_and(|w| w.is_complete(&release("v2"), 3))
        })
        .await;
    assert_eq!(o.workload(Track::Stable).unwrap().old, 0);
    poll("v1 pods gone", || async {
        let pods = env.pods("web").await;
        let versions: Vec<_> = pods
            .iter()
            .map(|p| {
                p.metadata
                    .annotations
                    .as_ref()
                    .map(|a| a["slipway.dev/version"].clone())
            })
            .collect();
        versions
            .iter()
            .all(|v| v.as_deref() == Some("v2"))
            .then_some(())
    })
    .await;

    // Scale to zero: the pods go away.
    env.apply(
        &t,
        &[Action::ScaleWorkload {
            track: Track::Stable,
            replicas: 0,
        }],
    )
    .await;
    env.observe_until(&t, "scaled to 0", |o| {
        o.workload(Track::Stable)
            .is_some_and(|w| w.desired == 0 && w.ready == 0 && w.old == 0 && w.updated == 0)
    })
    .await;
    poll("no pods", || async {
        env.pods("web").await.is_empty().then_some(())
    })
    .await;
    // The scale kept the rest of the spec (an apply of replicas alone would have dropped it).
    let d = deployments.get("web").await.unwrap();
    assert_eq!(
        d.spec.template.spec.as_ref().unwrap().containers[0]
            .image
            .as_deref(),
        Some("registry.test/web:v2")
    );

    // Scaling a track that does not exist is permanent.
    let e = env
        .driver
        .apply(
            &t,
            &[Action::ScaleWorkload {
                track: Track::Canary,
                replicas: 1,
            }],
        )
        .await
        .unwrap_err();
    assert!(!e.is_retryable());
    assert_eq!(e.reason(), "workload_not_found");

    // Delete, twice.
    for _ in 0..2 {
        env.apply(
            &t,
            &[Action::DeleteWorkload {
                track: Track::Stable,
            }],
        )
        .await;
    }
    assert!(env.observe(&t).await.workloads.is_empty());
    env.finish().await;
}

#[tokio::test]
async fn select_track_points_services_at_a_color() {
    let env = Env::new("bluegreen").await;
    let t = Target {
        blue_green: true,
        ..env.target("web", 2)
    };
    env.apply(
        &t,
        &[
            apply_workload(Track::Blue, "v1", 2),
            apply_workload(Track::Green, "v2", 2),
        ],
    )
    .await;
    env.observe_until(&t, "blue and green complete", |o| {
        o.workload(Track::Blue)
            .is_some_and(|w| w.is_complete(&release("v1"), 2))
            && o.workload(Track::Green)
                .is_some_and(|w| w.is_complete(&release("v2"), 2))
    })
    .await;
    let blue = env.ready_pod_ips("web", Track::Blue).await;
    let green = env.ready_pod_ips("web", Track::Green).await;
    assert_eq!((blue.len(), green.len()), (2, 2));
    assert!(blue.is_disjoint(&green));

    env.apply(
        &t,
        &[
            Action::SelectTrack {
                service: ServiceRole::Active,
                track: Track::Blue,
            },
            Action::SelectTrack {
                service: ServiceRole::Preview,
                track: Track::Green,
            },
        ],
    )
    .await;
    let o = env.observe(&t).await;
    assert_eq!(o.services.get(&ServiceRole::Active), Some(&Track::Blue));
    assert_eq!(o.services.get(&ServiceRole::Preview), Some(&Track::Green));
    assert_eq!(o.canary_weight, None);
    // Strategies other than blue-green never read the Services: not looked up, not reported.
    let rolling = Target {
        blue_green: false,
        ..t.clone()
    };
    let o = env.observe(&rolling).await;
    assert!(o.services.is_empty(), "{o:?}");
    assert!(o.endpoints.is_empty(), "{o:?}");
    assert_eq!(o.workloads.len(), 2);
    poll("web -> blue endpoints", || async {
        (env.endpoint_ips("web").await == blue).then_some(())
    })
    .await;
    poll("web-preview -> green endpoints", || async {
        (env.endpoint_ips("web-preview").await == green).then_some(())
    })
    .await;
    // The observation says the same, by color: the slices' endpoints are the pods of the
    // selected color only.
    let o = env.observe(&t).await;
    let ready = |o: &Observation, role, track| o.ready_endpoints(role, track);
    assert_eq!(ready(&o, ServiceRole::Active, Track::Blue), 2, "{o:?}");
    assert_eq!(ready(&o, ServiceRole::Active, Track::Green), 0, "{o:?}");
    assert_eq!(ready(&o, ServiceRole::Preview, Track::Green), 2, "{o:?}");
    assert_eq!(ready(&o, ServiceRole::Preview, Track::Blue), 0, "{o:?}");
    assert_eq!(o.endpoints[&ServiceRole::Active].other, 0);

    // The switch.
    env.apply(
        &t,
        &[Action::SelectTrack {
            service: ServiceRole::Active,
            track: Track::Green,
        }],
    )
    .await;
    assert_eq!(
        env.observe(&t).await.services.get(&ServiceRole::Active),
        Some(&Track::Green)
    );
    let t0 = Instant::now();
    poll("web -> green endpoints", || async {
        (env.endpoint_ips("web").await == green).then_some(())
    })
    .await;
    eprintln!(
        "{}: endpoints followed the switch after {:.1?}",
        env.namespace,
        t0.elapsed()
    );
    let o = env
        .observe_until(&t, "the observed active endpoints are green only", |o| {
            o.ready_endpoints(ServiceRole::Active, Track::Blue) == 0
        })
        .await;
    assert_eq!(
        o.ready_endpoints(ServiceRole::Active, Track::Green),
        2,
        "{o:?}"
    );
    assert_eq!(
        o.ready_endpoints(ServiceRole::Preview, Track::Green),
        2,
        "{o:?}"
    );

    // Green scaled to one pod: the endpoints follow the ready pods.
    env.apply(
        &t,
        &[Action::ScaleWorkload {
            track: Track::Green,
            replicas: 1,
        }],
    )
    .await;
    env.observe_until(&t, "one green endpoint behind each Service", |o| {
        o.ready_endpoints(ServiceRole::Active, Track::Green) == 1
            && o.ready_endpoints(ServiceRole::Preview, Track::Green) == 1
    })
    .await;

    // A Service someone else created is left alone unless the environment adopts it; then
    // only its selector changes, and it is marked as the environment's.
    let services: Api<Service> = Api::namespaced(env.client.clone(), &env.namespace);
    let foreign: Service = serde_json::from_value(json!({
        "metadata": { "name": "shop", "labels": { "team": "shop" } },
        "spec": { "selector": { "app": "shop" }, "ports": [{ "name": "web", "port": 80, "targetPort": 9000 }] },
    })).unwrap();
    services
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    let switch = [Action::SelectTrack {
        service: ServiceRole::Active,
        track: Track::Blue,
    }];
    let shop = env.target("shop", 1);
    let e = env.driver.apply(&shop, &switch).await.unwrap_err();
    assert_eq!(
        (e.is_retryable(), e.reason()),
        (false, "not_managed"),
        "{e}"
    );
    let selector = |s: Service| format!("{:?}", s.spec.unwrap().selector.unwrap());
    assert_eq!(
        selector(services.get("shop").await.unwrap()),
        r#"{"app": "shop"}"#,
        "not adopted: untouched"
    );
    let adopting = Target {
        adopt: true,
        ..shop.clone()
    };
    env.apply(&adopting, &switch).await;
    let s = services.get("shop").await.unwrap();
    assert_eq!(
        format!("{:?}", s.metadata.labels.clone().unwrap()),
        format!(r#"{{"slipway.dev/environment": "{ENVIRONMENT}", "team": "shop"}}"#)
    );
    let spec = s.spec.unwrap();
    assert_eq!(
        format!("{:?}", spec.selector.unwrap()),
        r#"{"app.kubernetes.io/name": "shop", "slipway.dev/track": "blue"}"#
    );
    assert_eq!(spec.ports.unwrap()[0].port, 80);
    // Adopted once, it stays the environment's; no other environment may switch it.
    env.apply(&shop, &switch).await;
    let other = Target {
        environment: "another-environment".into(),
        adopt: true,
        ..shop.clone()
    };
    let e = env.driver.apply(&other, &switch).await.unwrap_err();
    assert_eq!(
        (e.is_retryable(), e.reason()),
        (false, "owned_by_other_environment"),
        "{e}"
    );
    env.finish().await;
}

#[tokio::test]
async fn objects_of_another_environment_are_left_alone() {
    let env = Env::new("owned").await;
    let t = Target {
        blue_green: true,
        ..env.target("web", 1)
    };
    env.apply(
        &t,
        &[
            apply_workload(Track::Blue, "v1", 1),
            Action::SelectTrack {
                service: ServiceRole::Active,
                track: Track::Blue,
            },
        ],
    )
    .await;
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.namespace);
    let services: Api<Service> = Api::namespaced(env.client.clone(), &env.namespace);
    let label = |labels: Option<std::collections::BTreeMap<String, String>>| {
        labels
            .unwrap_or_default()
            .get("slipway.dev/environment")
            .cloned()
    };
    let blue = deployments.get("web-blue").await.unwrap();
    assert_eq!(label(blue.metadata.labels), Some(ENVIRONMENT.to_owned()));
    let active = services.get("web").await.unwrap();
    assert_eq!(label(active.metadata.labels), Some(ENVIRONMENT.to_owned()));

    // Another environment naming the same workload (adopting or not) can neither read it as
    // its own nor change it.
    for adopt in [false, true] {
        let other = Target {
            environment: "another-environment".into(),
            adopt,
            ..t.clone()
        };
        let e = env.driver.observe(&other).await.unwrap_err();
        assert_eq!(
            (e.is_retryable(), e.reason()),
            (false, "owned_by_other_environment"),
            "{e}"
        );
        for action in [
            apply_workload(Track::Blue, "v6", 1),
            Action::ScaleWorkload {
                track: Track::Blue,
                replicas: 0,
            },
            Action::DeleteWorkload { track: Track::Blue },
            Action::SelectTrack {
                service: ServiceRole::Active,
                track: Track::Green,
            },
        ] {
            let e = env.driver.apply(&other, &[action]).await.unwrap_err();
            assert_eq!(
                (e.is_retryable(), e.reason()),
                (false, "owned_by_other_environment"),
                "{e}"
            );
        }
    }
    let blue = deployments.get("web-blue").await.unwrap();
    assert_eq!(blue.spec.replicas, Some(1));
    assert_eq!(
        blue.metadata.annotations.unwrap()["slipway.dev/version"],
        "v1",
        "untouched"
    );
    let web = services.get("web").await.unwrap();
    assert_eq!(
        format!("{:?}", web.spec.unwrap().selector.unwrap()),
        r#"{"app.kubernetes.io/name": "web", "slipway.dev/track": "blue"}"#
    );

    // A Deployment an older Slipway wrote (managed, without the environment's label) is
    // claimed by the environment that writes it next.
    let own = json!({
        "app.kubernetes.io/managed-by": "slipway",
        "app.kubernetes.io/name": "old",
        "slipway.dev/track": "stable",
    });
    let legacy: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "old", "labels": own },
        "spec": {
            "selector": { "matchLabels": {
                "app.kubernetes.io/name": "old", "slipway.dev/track": "stable" } },
            "template": { "metadata": { "labels": own },
                          "spec": { "containers": [{ "name": "app", "image": "old:1" }] } },
        },
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &legacy)
        .await
        .unwrap();
    let old = env.target("old", 1);
    assert_eq!(env.observe(&old).await.workloads.len(), 1);
    env.apply(&old, &[apply_workload(Track::Stable, "v2", 1)])
        .await;
    let claimed = deployments.get("old").await.unwrap();
    assert_eq!(label(claimed.metadata.labels), Some(ENVIRONMENT.to_owned()));
    env.finish().await;
}

#[tokio::test]
async fn reports_a_progress_deadline_and_refuses_unmanaged_deployments() {
    let env = Env::new("stuck").await;
    let t = env.target("web", 2);
    env.apply(&t, &[apply_workload(Track::Stable, "v1", 2)])
        .await;
    env.observe_until(&t, "v1 complete", |o| {
        o.workload(Track::Stable)
            .is_some_and(|w| w.is_complete(&release("v1"), 2))
    })
    .await;
    // kwok makes every scheduled pod Ready and the start script has no stage that keeps one
    // unready, so the test makes the new pods unschedulable (a node selector no node has) and
    // gives the Deployment a 2 s progress deadline, as another field manager.
    env.apply(&t, &[apply_workload(Track::Stable, "v2", 2)])
        .await;
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.namespace);
    let patch = json!({ "spec": { "progressDeadlineSeconds": 2,
        "template": { "spec": { "nodeSelector": { "slipway.test/none": "nowhere" } } } } });
    let params = PatchParams {
        field_manager: Some("slipway-test".into()),
        ..PatchParams::default()
    };
    deployments
        .patch("web", &params, &Patch::Merge(patch))
        .await
        .unwrap();
    let o = env
        .observe_until(&t, "ProgressDeadlineExceeded", |o| {
            o.workload(Track::Stable)
                .is_some_and(|w| w.progress_deadline_exceeded)
        })
        .await;
    let w = o.workload(Track::Stable).unwrap();
    assert!(!w.is_complete(&release("v2"), 2));
    assert_eq!(
        (w.available, w.old),
        (2, 2),
        "the v1 pods keep serving: {w:?}"
    );

    // A Deployment without the managed-by label is left alone.
    let foreign: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "api" },
        "spec": {
            "selector": { "matchLabels": { "app": "api" } },
            "template": { "metadata": { "labels": { "app": "api" } },
                          "spec": { "containers": [{ "name": "app", "image": "api:1" }] } },
        },
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    let api = env.target("api", 1);
    for action in [
        apply_workload(Track::Stable, "v9", 1),
        Action::ScaleWorkload {
            track: Track::Stable,
            replicas: 0,
        },
        Action::DeleteWorkload {
            track: Track::Stable,
        },
    ] {
        let e = env.driver.apply(&api, &[action]).await.unwrap_err();
        assert_eq!(
            (e.is_retryable(), e.reason()),
            (false, "not_managed"),
            "{e}"
        );
    }
    assert!(env.observe(&api).await.workloads.is_empty());
    assert_eq!(
        deployments
            .get("api")
            .await
            .unwrap()
            .spec
            .template
            .spec
            .unwrap()
            .containers[0]
            .image
            .as_deref(),
        Some("api:1")
    );

    // The API server's validation: permanent, with its message.
    let bad = Target {
        workload: Workload {
            container: "Not_A_Name".into(),
            ..t.workload.clone()
        },
        ..t.clone()
    };
    let e = env
        .driver
        .apply(&bad, &[apply_workload(Track::Canary, "v1", 1)])
        .await
        .unwrap_err();
    assert_eq!((e.is_retryable(), e.reason()), (false, "invalid"), "{e}");
    assert!(e.message().contains("Not_A_Name"), "{e}");
    env.finish().await;
}

#[tokio::test]
async fn errors_say_whether_to_retry() {
    let t = Target {
        namespace: "default".into(),
        workload: Workload {
            name: "web".into(),
            container: "app".into(),
            replicas: 1,
            port: 80,
            pod_labels: Default::default(),
        },
        traffic: TrafficRouting::Replicas,
        blue_green: false,
        environment: ENVIRONMENT.into(),
        adopt: false,
    };

    let path = kubeconfig_with("badtoken", |k| {
        for u in &mut k.auth_infos {
            if let Some(a) = u.auth_info.as_mut() {
                a.token = Some("not-a-token".to_owned().into());
            }
        }
    });
    let e = KubeDriver::from_kubeconfig(&path, None)
        .unwrap()
        .observe(&t)
        .await
        .unwrap_err();
    assert_eq!(
        (e.is_retryable(), e.reason()),
        (false, "unauthorized"),
        "{e}"
    );
    std::fs::remove_file(&path).ok();

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = kubeconfig_with("closed", |k| {
        for c in &mut k.clusters {
            if let Some(c) = c.cluster.as_mut() {
                c.server = Some(format!("https://127.0.0.1:{closed}"));
            }
        }
    });
    let driver = KubeDriver::from_kubeconfig(&path, None).unwrap();
    let started = Instant::now();
    let e = driver.observe(&t).await.unwrap_err();
    assert_eq!(
        (e.is_retryable(), e.reason()),
        (true, "cluster_unreachable"),
        "{e}"
    );
    let e = driver
        .apply(&t, &[apply_workload(Track::Stable, "v1", 1)])
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "cluster_unreachable", "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    std::fs::remove_file(&path).ok();

    let e = KubeDriver::from_kubeconfig(kubeconfig(), Some("no-such-context")).unwrap_err();
    assert_eq!(
        (e.is_retryable(), e.reason()),
        (false, "invalid_kubeconfig"),
        "{e}"
    );
    let e = KubeDriver::from_kubeconfig("/nonexistent/kubeconfig", None).unwrap_err();
    assert_eq!(
        (e.is_retryable(), e.reason()),
        (false, "invalid_kubeconfig"),
        "{e}"
    );
}

#[tokio::test]
async fn rbac_allows_exactly_what_deploy_rbac_grants() {
    let env = Env::new("rbac").await;
    let e2e = env.driver.client().await.unwrap().clone();

    // A Secret in the bound namespace: not in the role, a permanent 403 with the API's words.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(e2e.clone(), &env.namespace);
    let e = slipway_cluster::kube::from_kube(secrets.get("anything").await.unwrap_err());
    assert_eq!((e.is_retryable(), e.reason()), (false, "forbidden"), "{e}");
    assert!(
        e.message()
            .contains(r#"User "slipway-e2e" cannot get resource "secrets""#),
        "{e}"
    );

    // A namespace without the binding: the driver is refused, for good, with the API's message.
    let bare = format!("{}-unbound", env.namespace);
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({ "metadata": { "name": bare } })).unwrap();
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(env.client.clone());
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let t = Target {
        namespace: bare.clone(),
        ..env.target("web", 1)
    };
    let e = env
        .driver
        .apply(&t, &[apply_workload(Track::Stable, "v1", 1)])
        .await
        .unwrap_err();
    assert_eq!((e.is_retryable(), e.reason()), (false, "forbidden"), "{e}");
    assert!(
        e.message().contains(&format!(
            r#"User "slipway-e2e" cannot get resource "deployments" in API group "apps" in the namespace "{bare}""#
        )),
        "{e}"
    );
    let e = env.driver.observe(&t).await.unwrap_err();
    assert_eq!((e.is_retryable(), e.reason()), (false, "forbidden"), "{e}");
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &bare);
    assert!(deployments.get_opt("web").await.unwrap().is_none());
    namespaces
        .delete(&bare, &kube::api::DeleteParams::default())
        .await
        .unwrap();

    // Cluster-scoped reads are not granted either; the version is (every authenticated user).
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(e2e);
    let e = slipway_cluster::kube::from_kube(nodes.list(&Default::default()).await.unwrap_err());
    assert_eq!(e.reason(), "forbidden", "{e}");
    let version = KubeDriver::from_kubeconfig(kubeconfig_e2e(), None)
        .unwrap()
        .server_version()
        .await
        .unwrap();
    assert!(version.starts_with("v1."), "{version}");
    env.finish().await;
}
