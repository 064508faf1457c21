//! Reading Deployments, Services and EndpointSlices back into an
//! [`Observation`](slipway_core::rollout::Observation).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use slipway_core::rollout::{Release, ServiceEndpoints, ServiceRole, Track, WorkloadStatus};

use super::objects::{
    OWN_POD_LABELS, SERVICE_ROLES, TRACK_LABEL, VERSION_ANNOTATION, deployment_name, parse_track,
    service_name,
};

/// The label the endpoint controller puts on every EndpointSlice of a Service.
pub(super) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// `kubernetes.io/service-name in (<name>,<name>-preview)`: the EndpointSlices of the
/// workload's blue-green Services, in one list.
pub(super) fn blue_green_slices_selector(workload: &str) -> String {
    let names: Vec<String> = SERVICE_ROLES
        .iter()
        .map(|r| service_name(workload, *r))
        .collect();
    format!("{SERVICE_NAME_LABEL} in ({})", names.join(","))
}

/// The color of a pod, from its name: a pod of Deployment `<name>-blue` is named
/// `<name>-blue-<replicaset hash>-<suffix>`. Cheaper than reading the pod's labels, and exact:
/// the two parts after the Deployment's name are one word each.
pub(super) fn pod_color(pod: &str, workload: &str) -> Option<Track> {
    [Track::Blue, Track::Green].into_iter().find(|color| {
        pod.strip_prefix(deployment_name(workload, *color).as_str())
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|rest| rest.split_once('-'))
            .is_some_and(|(hash, suffix)| {
                let word = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric());
                word(hash) && word(suffix)
            })
    })
}

/// The ready endpoints behind each of the workload's blue-green Services, by color. An endpoint
/// counts once however many slices list it (dual-stack Services have one slice per address
/// family); `ready` absent counts as ready, as the EndpointSlice API says.
pub(super) fn service_endpoints(
    slices: &[EndpointSlice],
    workload: &str,
) -> BTreeMap<ServiceRole, ServiceEndpoints> {
    type Seen = (BTreeMap<Track, BTreeSet<String>>, BTreeSet<String>);
    let mut seen: BTreeMap<ServiceRole, Seen> = BTreeMap::new();
    for slice in slices {
        let service = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL));
        let Some(role) = SERVICE_ROLES
            .into_iter()
            .find(|r| service.is_some_and(|s| *s == service_name(workload, *r)))
        else {
            continue;
        };
        let (colors, other) = seen.entry(role).or_default();
        for e in slice.endpoints.iter().flatten() {
            if e.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            let pod = e
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| r.name.clone());
            match pod
                .as_deref()
                .and_then(|p| Some((pod_color(p, workload)?, p)))
            {
                Some((color, p)) => {
                    colors.entry(color).or_default().insert(p.to_owned());
                }
                None => {
                    let key = pod.unwrap_or_else(|| e.addresses.join(","));
                    other.insert(key);
                }
            }
        }
    }
    let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    seen.into_iter()
        .map(|(role, (colors, other))| {
            let endpoints = ServiceEndpoints {
                ready: colors
                    .into_iter()
                    .map(|(color, pods)| (color, len(pods.len())))
                    .collect(),
                other: len(other.len()),
            };
            (role, endpoints)
        })
        .collect()
}

/// The track of one of the workload's Deployments, when its label and name agree.
pub(super) fn deployment_track(d: &Deployment, workload: &str) -> Option<Track> {
    let track = parse_track(d.metadata.labels.as_ref()?.get(TRACK_LABEL)?)?;
    (d.metadata.name.as_deref() == Some(deployment_name(workload, track).as_str())).then_some(track)
}

/// The track a Service's selector picks, if it selects one.
pub(super) fn service_track(s: &Service) -> Option<Track> {
    parse_track(s.spec.as_ref()?.selector.as_ref()?.get(TRACK_LABEL)?)
}

fn count(n: Option<i32>) -> u32 {
    n.and_then(|n| u32::try_from(n).ok()).unwrap_or(0)
}

/// What a Deployment says about its rollout. `old` counts pods of older ReplicaSets
/// (`status.replicas - status.updatedReplicas`) and pods still terminating
/// (`status.terminatingReplicas`, beta since Kubernetes 1.35; absent counts as none).
pub(super) fn workload_status(d: &Deployment, container: &str) -> WorkloadStatus {
    let status = d.status.as_ref();
    let total = count(status.and_then(|s| s.replicas));
    let updated = count(status.and_then(|s| s.updated_replicas));
    WorkloadStatus {
        release: release(d, container),
        // The API server defaults an absent `replicas` to 1.
        desired: d.spec.replicas.map_or(1, |r| count(Some(r))),
        generation: d.metadata.generation.unwrap_or(0),
        observed_generation: status.and_then(|s| s.observed_generation).unwrap_or(0),
        updated,
        ready: count(status.and_then(|s| s.ready_replicas)),
        available: count(status.and_then(|s| s.available_replicas)),
        old: total
            .saturating_sub(updated)
            .saturating_add(count(status.and_then(|s| s.terminating_replicas))),
        progress_deadline_exceeded: status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.type_.as_deref() == Some("Progressing")
                        && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
                })
            }),
    }
}

/// The release of the pod template: the image of `container`, the version annotation (of
/// the template, else the Deployment, else the image tag), and the template's labels other
/// than Slipway's own.
fn release(d: &Deployment, container: &str) -> Option<Release> {
    let template = &d.spec.template;
    let image = template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == container)?
        .image
        .clone()?;
    let annotation = |m: Option<&std::collections::BTreeMap<String, String>>| {
        m.and_then(|a| a.get(VERSION_ANNOTATION)).cloned()
    };
    let version = annotation(
        template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref()),
    )
    .or_else(|| annotation(d.metadata.annotations.as_ref()))
    .unwrap_or_else(|| image_tag(&image).to_owned());
    let pod_labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref())
        .map(|l| {
            l.iter()
                .filter(|(k, _)| !OWN_POD_LABELS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    Some(Release {
        image,
        version,
        pod_labels,
    })
}

fn image_tag(image: &str) -> &str {
    let name = image.split('@').next().unwrap_or(image);
    match name.rsplit_once(':') {
        Some((_, tag)) if !tag.contains('/') => tag,
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(v: serde_json::Value) -> Deployment {
        serde_json::from_value(v).unwrap_or_else(|e| panic!("bad fixture: {e}"))
    }

    #[test]
    fn reads_a_rolling_deployment() {
        let d = deployment(serde_json::json!({
            "metadata": {
                "name": "web-canary", "generation": 3,
                "labels": { "slipway.dev/track": "canary" },
                "annotations": { "slipway.dev/version": "old" },
            },
            "spec": {
                "replicas": 4,
                "selector": {},
                "template": {
                    "metadata": {
                        "annotations": { "slipway.dev/version": "v2" },
                        "labels": { "slipway.dev/track": "canary", "team": "shop" },
                    },
                    "spec": { "containers": [
                        { "name": "sidecar", "image": "envoy:1" },
                        { "name": "app", "image": "reg:5000/web:2.0" },
                    ] },
                },
            },
            "status": {
                "observedGeneration": 2, "replicas": 6, "updatedReplicas": 2,
                "readyReplicas": 5, "availableReplicas": 4, "terminatingReplicas": 1,
                "conditions": [{ "type": "Progressing", "status": "False",
                                 "reason": "ProgressDeadlineExceeded" }],
            },
        }));
        assert_eq!(deployment_track(&d, "web"), Some(Track::Canary));
        assert_eq!(deployment_track(&d, "api"), None);
        let s = workload_status(&d, "app");
        assert_eq!(
            s,
            WorkloadStatus {
                release: Some(Release {
                    image: "reg:5000/web:2.0".into(),
                    version: "v2".into(),
                    pod_labels: [("team".to_owned(), "shop".to_owned())].into(),
                }),
                desired: 4,
                generation: 3,
                observed_generation: 2,
                updated: 2,
                ready: 5,
                available: 4,
                old: 5,
                progress_deadline_exceeded: true,
            }
        );
        assert_eq!(workload_status(&d, "missing").release, None);
    }

    #[test]
    fn pod_colors_come_from_the_deployment_name() {
        assert_eq!(
            pod_color("web-blue-794f5d6999-wv45z", "web"),
            Some(Track::Blue)
        );
        assert_eq!(
            pod_color("web-green-5d8b9c-x2x9q", "web"),
            Some(Track::Green)
        );
        // Another workload whose name starts like a color of this one.
        assert_eq!(pod_color("web-blue-api-794f5d6999-wv45z", "web"), None);
        assert_eq!(pod_color("web-blue-794f5d6999", "web"), None);
        assert_eq!(pod_color("web-794f5d6999-wv45z", "web"), None);
        assert_eq!(pod_color("api-blue-794f5d6999-wv45z", "web"), None);
    }

    #[test]
    fn counts_ready_endpoints_by_color_once_each() {
        let slice = |service: &str, endpoints: serde_json::Value| -> EndpointSlice {
            serde_json::from_value(serde_json::json!({
                "metadata": { "name": format!("{service}-x"),
                              "labels": { "kubernetes.io/service-name": service } },
                "addressType": "IPv4",
                "endpoints": endpoints,
            }))
            .unwrap_or_else(|e| panic!("bad fixture: {e}"))
        };
        let pod = |name: &str, ready: Option<bool>| {
            serde_json::json!({
                "addresses": ["10.0.0.1"],
                "conditions": { "ready": ready },
                "targetRef": { "kind": "Pod", "name": name },
            })
        };
        let slices = [
            slice(
                "web",
                serde_json::json!([
                    pod("web-green-abc-1", Some(true)),
                    pod("web-green-abc-2", None),
                    pod("web-blue-def-1", Some(false)),
                    pod("stray-1", Some(true)),
                ]),
            ),
            // A second slice (another address family) listing the same pod.
            slice(
                "web",
                serde_json::json!([pod("web-green-abc-1", Some(true))]),
            ),
            slice(
                "web-preview",
                serde_json::json!([pod("web-blue-def-1", Some(true))]),
            ),
            slice(
                "api",
                serde_json::json!([pod("api-blue-def-1", Some(true))]),
            ),
        ];
        let seen = service_endpoints(&slices, "web");
        let active = &seen[&ServiceRole::Active];
        assert_eq!(active.ready, [(Track::Green, 2)].into());
        assert_eq!(active.other, 1);
        let preview = &seen[&ServiceRole::Preview];
        assert_eq!(preview.ready, [(Track::Blue, 1)].into());
        assert_eq!(preview.other, 0);
        assert_eq!(seen.len(), 2);
        assert_eq!(
            blue_green_slices_selector("web"),
            "kubernetes.io/service-name in (web,web-preview)"
        );
    }

    #[test]
    fn image_tags() {
        assert_eq!(image_tag("nginx:1.27"), "1.27");
        assert_eq!(image_tag("reg:5000/web"), "");
        assert_eq!(image_tag("web@sha256:abc"), "");
    }
}
