//! Reading Deployments and Services back into an [`Observation`](slipway_core::rollout::Observation).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use slipway_core::rollout::{Release, Track, WorkloadStatus};

use super::objects::{
    OWN_POD_LABELS, TRACK_LABEL, VERSION_ANNOTATION, deployment_name, parse_track,
};

/// The track of one of the workload's Deployments, when its label and name agree.
pub fn deployment_track(d: &Deployment, workload: &str) -> Option<Track> {
    let track = parse_track(d.metadata.labels.as_ref()?.get(TRACK_LABEL)?)?;
    (d.metadata.name.as_deref() == Some(deployment_name(workload, track).as_str())).then_some(track)
}

/// The track a Service's selector picks, if it selects one.
pub fn service_track(s: &Service) -> Option<Track> {
    parse_track(s.spec.as_ref()?.selector.as_ref()?.get(TRACK_LABEL)?)
}

fn count(n: Option<i32>) -> u32 {
    n.and_then(|n| u32::try_from(n).ok()).unwrap_or(0)
}

/// What a Deployment says about its rollout. `old` counts pods of older ReplicaSets
/// (`status.replicas - status.updatedReplicas`) and pods still terminating
/// (`status.terminatingReplicas`, beta since Kubernetes 1.35; absent counts as none).
pub fn workload_status(d: &Deployment, container: &str) -> WorkloadStatus {
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
    fn image_tags() {
        assert_eq!(image_tag("nginx:1.27"), "1.27");
        assert_eq!(image_tag("reg:5000/web"), "");
        assert_eq!(image_tag("web@sha256:abc"), "");
    }
}
