//! The Kubernetes objects Slipway writes, as server-side apply documents, and how their names
//! and labels follow from a [`Target`].

use std::collections::BTreeMap;

use serde_json::{Value, json};
use slipway_core::rollout::{Release, ServiceRole, Track, failure_code};

use crate::driver::{DriverError, Target};

/// The field manager of every write (`kubectl get --show-managed-fields` shows it).
pub const FIELD_MANAGER: &str = "slipway";
/// `app.kubernetes.io/managed-by=slipway` marks the objects Slipway owns.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "slipway";
/// `app.kubernetes.io/name=<workload name>`.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// `slipway.dev/environment=<environment id>`, on every object Slipway writes (not on pods:
/// a new pod template label would roll every workload when Slipway is upgraded).
pub const ENVIRONMENT_LABEL: &str = "slipway.dev/environment";
/// `slipway.dev/track=stable|canary|blue|green`, on Deployments and their pods.
pub const TRACK_LABEL: &str = "slipway.dev/track";
/// The release's version, on the Deployment and its pod template.
pub const VERSION_ANNOTATION: &str = "slipway.dev/version";
/// The name of the container port the Services target.
pub const PORT_NAME: &str = "http";

pub const TRACKS: [Track; 4] = [Track::Stable, Track::Canary, Track::Blue, Track::Green];
pub const SERVICE_ROLES: [ServiceRole; 2] = [ServiceRole::Active, ServiceRole::Preview];

/// The Deployment of a track: `<name>`, `<name>-canary`, `<name>-blue`, `<name>-green`.
pub fn deployment_name(workload: &str, track: Track) -> String {
    match track {
        Track::Stable => workload.to_owned(),
        other => format!("{workload}-{}", other.as_str()),
    }
}

/// The Service of a role: `<name>` (active) or `<name>-preview`.
pub fn service_name(workload: &str, role: ServiceRole) -> String {
    match role {
        ServiceRole::Active => workload.to_owned(),
        ServiceRole::Preview => format!("{workload}-preview"),
    }
}

/// The Service of a track for the traffic routers (Gateway API, NGINX): `<name>` selects the
/// stable pods, `<name>-canary` the canary's (blue and green use [`service_name`]).
pub fn track_service_name(workload: &str, track: Track) -> String {
    deployment_name(workload, track)
}

pub fn parse_track(value: &str) -> Option<Track> {
    TRACKS.into_iter().find(|t| t.as_str() == value)
}

/// `app.kubernetes.io/managed-by=slipway,app.kubernetes.io/name=<name>`: the workload's
/// Deployments.
pub fn managed_selector(workload: &str) -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE},{NAME_LABEL}={workload}")
}

/// The environment an object's labels say it belongs to.
pub fn environment_of(labels: Option<&BTreeMap<String, String>>) -> Option<&str> {
    labels
        .and_then(|l| l.get(ENVIRONMENT_LABEL))
        .map(String::as_str)
}

/// Whether an object's labels say Slipway manages it.
pub fn is_managed(labels: Option<&BTreeMap<String, String>>) -> bool {
    labels
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == MANAGED_BY_VALUE)
}

/// How Slipway may write an object that exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// It carries the managed-by label: Slipway writes all of it.
    Managed,
    /// Someone else made it and the environment adopts it (or adopted it before: it carries
    /// the environment's label only): Slipway writes only what it needs.
    Adopted,
}

/// How Slipway may write the existing object `what` with `labels` for `target`: not at all
/// when another environment's label is on it (`owned_by_other_environment`), or when it has
/// no Slipway label and the environment does not adopt (`not_managed`).
pub fn may_write(
    target: &Target,
    what: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> Result<Write, DriverError> {
    let owner = environment_of(labels);
    target.check_owner(what, owner)?;
    if is_managed(labels) {
        Ok(Write::Managed)
    } else if target.adopt || owner.is_some() {
        Ok(Write::Adopted)
    } else {
        Err(DriverError::permanent(
            failure_code::NOT_MANAGED,
            format!(
                "{what} exists without the label {MANAGED_BY_LABEL}={MANAGED_BY_VALUE}; Slipway leaves it alone unless the environment sets `adopt: true`"
            ),
        ))
    }
}

/// The pod labels a track's Service selects (and the Deployment's immutable selector).
fn selector(workload: &str, track: Track) -> Value {
    json!({ NAME_LABEL: workload, TRACK_LABEL: track.as_str() })
}

/// The labels Slipway puts on a pod template itself; every other template label is one of the
/// release's `pod_labels`.
pub const OWN_POD_LABELS: [&str; 3] = [MANAGED_BY_LABEL, NAME_LABEL, TRACK_LABEL];

/// The labels of a pod template Slipway writes: managed-by, name and track.
pub fn own_pod_labels(workload: &str, track: Track) -> Value {
    json!({ MANAGED_BY_LABEL: MANAGED_BY_VALUE, NAME_LABEL: workload, TRACK_LABEL: track.as_str() })
}

/// The labels of an object Slipway writes: managed-by, name, the owning environment, and
/// the track when it has one.
pub fn labels(target: &Target, track: Option<Track>) -> Value {
    let mut l = json!({
        MANAGED_BY_LABEL: MANAGED_BY_VALUE,
        NAME_LABEL: target.workload.name,
        ENVIRONMENT_LABEL: target.environment,
    });
    if let (Some(track), Some(map)) = (track, l.as_object_mut()) {
        map.insert(TRACK_LABEL.into(), track.as_str().into());
    }
    l
}

/// The apps/v1 Deployment of `track` at `release`. Kubernetes refuses a rolling-update budget
/// of 0 and 0, so that becomes one unavailable pod (as the simulated cluster does).
pub fn deployment(
    target: &Target,
    track: Track,
    release: &Release,
    replicas: u32,
    max_surge: u32,
    max_unavailable: u32,
) -> Value {
    let w = &target.workload;
    let max_unavailable = if max_surge == 0 && max_unavailable == 0 {
        1
    } else {
        max_unavailable
    };
    // The release's extra pod labels first, so they can never replace Slipway's own.
    let mut pod_labels = serde_json::Map::new();
    for (key, value) in &release.pod_labels {
        pod_labels.insert(key.clone(), value.clone().into());
    }
    if let Value::Object(own) = own_pod_labels(&w.name, track) {
        pod_labels.extend(own);
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(&w.name, track),
            "namespace": target.namespace,
            "labels": labels(target, Some(track)),
            "annotations": { VERSION_ANNOTATION: release.version },
        },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": selector(&w.name, track) },
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": { "maxSurge": max_surge, "maxUnavailable": max_unavailable },
            },
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": { VERSION_ANNOTATION: release.version },
                },
                "spec": {
                    "containers": [{
                        "name": w.container,
                        "image": release.image,
                        "ports": [{ "name": PORT_NAME, "containerPort": w.port, "protocol": "TCP" }],
                    }],
                },
            },
        },
    })
}

/// A Service Slipway creates (or already manages) for `role`, selecting `track`'s pods.
pub fn service(target: &Target, role: ServiceRole, track: Track) -> Value {
    named_service(target, &service_name(&target.workload.name, role), track)
}

/// A Service Slipway creates (or already manages) named `name`, selecting `track`'s pods.
pub fn named_service(target: &Target, name: &str, track: Track) -> Value {
    let w = &target.workload;
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": target.namespace,
            "labels": labels(target, None),
        },
        "spec": {
            "selector": selector(&w.name, track),
            "ports": [{
                "name": PORT_NAME,
                "port": w.port,
                "targetPort": w.port,
                "protocol": "TCP",
            }],
        },
    })
}

/// Only the selector and the environment's label, for a Service someone else created that
/// the environment adopts: Slipway takes over `spec.selector` (an atomic map, so the whole
/// selector is replaced), marks the Service as its environment's, and leaves everything else
/// alone.
pub fn service_selector_only(target: &Target, role: ServiceRole, track: Track) -> Value {
    named_selector_only(target, &service_name(&target.workload.name, role), track)
}

/// [`service_selector_only`] for the Service `name`.
pub fn named_selector_only(target: &Target, name: &str, track: Track) -> Value {
    let w = &target.workload;
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": target.namespace,
            "labels": { ENVIRONMENT_LABEL: target.environment },
        },
        "spec": { "selector": selector(&w.name, track) },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            namespace: "prod".into(),
            workload: slipway_core::Workload {
                name: "web".into(),
                container: "app".into(),
                replicas: 3,
                port: 8080,
                pod_labels: Default::default(),
            },
            traffic: slipway_core::TrafficRouting::Replicas,
            blue_green: false,
            environment: "env-a".into(),
            adopt: false,
        }
    }

    #[test]
    fn names_follow_the_tracks() {
        assert_eq!(deployment_name("web", Track::Stable), "web");
        assert_eq!(deployment_name("web", Track::Canary), "web-canary");
        assert_eq!(deployment_name("web", Track::Blue), "web-blue");
        assert_eq!(deployment_name("web", Track::Green), "web-green");
        assert_eq!(service_name("web", ServiceRole::Active), "web");
        assert_eq!(service_name("web", ServiceRole::Preview), "web-preview");
        assert_eq!(parse_track("green"), Some(Track::Green));
        assert_eq!(parse_track("purple"), None);
    }

    #[test]
    fn deployment_carries_labels_release_and_budget() {
        let release = Release {
            image: "nginx:1.27".into(),
            version: "v7".into(),
            pod_labels: [("team".to_owned(), "shop".to_owned())].into(),
        };
        let d = deployment(&target(), Track::Canary, &release, 2, 0, 0);
        assert_eq!(d["metadata"]["name"], "web-canary");
        assert_eq!(d["metadata"]["labels"][MANAGED_BY_LABEL], "slipway");
        assert_eq!(d["metadata"]["labels"][ENVIRONMENT_LABEL], "env-a");
        assert!(
            d["spec"]["template"]["metadata"]["labels"]
                .get(ENVIRONMENT_LABEL)
                .is_none(),
            "pods do not carry it: upgrading Slipway must not roll every workload"
        );
        assert_eq!(d["metadata"]["annotations"][VERSION_ANNOTATION], "v7");
        assert_eq!(d["spec"]["selector"]["matchLabels"][TRACK_LABEL], "canary");
        assert_eq!(
            d["spec"]["template"]["metadata"]["labels"][TRACK_LABEL],
            "canary"
        );
        assert_eq!(d["spec"]["template"]["metadata"]["labels"]["team"], "shop");
        assert!(d["metadata"]["labels"].get("team").is_none());
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["name"], "app");
        assert_eq!(c["image"], "nginx:1.27");
        assert_eq!(c["ports"][0]["containerPort"], 8080);
        let ru = &d["spec"]["strategy"]["rollingUpdate"];
        assert_eq!(
            (ru["maxSurge"].as_u64(), ru["maxUnavailable"].as_u64()),
            (Some(0), Some(1))
        );
    }

    #[test]
    fn objects_of_another_environment_or_unmanaged_ones_are_refused() {
        let t = target();
        let with = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let mine = with(&[
            (MANAGED_BY_LABEL, MANAGED_BY_VALUE),
            (ENVIRONMENT_LABEL, "env-a"),
        ]);
        assert_eq!(
            may_write(&t, "Deployment web", Some(&mine)),
            Ok(Write::Managed)
        );
        let legacy = with(&[(MANAGED_BY_LABEL, MANAGED_BY_VALUE)]);
        assert_eq!(
            may_write(&t, "Deployment web", Some(&legacy)),
            Ok(Write::Managed),
            "an object of an older Slipway is claimed"
        );
        let theirs = with(&[
            (MANAGED_BY_LABEL, MANAGED_BY_VALUE),
            (ENVIRONMENT_LABEL, "env-b"),
        ]);
        let adopting = Target {
            adopt: true,
            ..target()
        };
        for t in [&t, &adopting] {
            let e = may_write(t, "Deployment web", Some(&theirs)).expect_err("another's");
            assert_eq!(e.reason(), failure_code::OWNED_BY_OTHER_ENVIRONMENT);
            assert!(!e.is_retryable());
        }
        let e = may_write(&t, "Service web", None).expect_err("unmanaged");
        assert_eq!(e.reason(), failure_code::NOT_MANAGED);
        assert_eq!(
            may_write(&adopting, "Service web", None),
            Ok(Write::Adopted)
        );
        let adopted = with(&[(ENVIRONMENT_LABEL, "env-a")]);
        assert_eq!(
            may_write(&t, "Service web", Some(&adopted)),
            Ok(Write::Adopted)
        );
    }

    #[test]
    fn services_select_a_track() {
        let s = service(&target(), ServiceRole::Preview, Track::Green);
        assert_eq!(s["metadata"]["name"], "web-preview");
        assert_eq!(s["spec"]["selector"][TRACK_LABEL], "green");
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 8080);
        assert_eq!(s["metadata"]["labels"][ENVIRONMENT_LABEL], "env-a");
        let only = service_selector_only(&target(), ServiceRole::Active, Track::Blue);
        assert_eq!(
            only["metadata"]["labels"],
            json!({ ENVIRONMENT_LABEL: "env-a" }),
            "an adopted Service gets only the environment's label"
        );
        assert!(only["spec"].get("ports").is_none());
        assert_eq!(only["spec"]["selector"][NAME_LABEL], "web");
    }
}
