//! Traffic routers: the canary's weight on a Gateway API `HTTPRoute` or an NGINX canary
//! Ingress, written and read back.
//!
//! Both routers send traffic to two Services Slipway applies for the workload: `<name>`
//! selects the stable track's pods and `<name>-canary` the canary's (see
//! [`track_service_name`](super::objects::track_service_name)).
//!
//! **Gateway API.** The route is the user's. Every rule with a `backendRef` to the stable
//! Service carries the split: the stable ref gets weight `100 - w`, the canary ref `w` (added
//! to the rule, with the stable ref's port, when missing). Nothing else of the route changes.
//! `spec.rules` is an atomic list in the CRD, so a server-side apply of the weights alone is
//! not possible: any write sends the whole list. Slipway reads the route, changes the weights
//! in the rules it read and writes them back with a merge patch guarded by the
//! `resourceVersion` it read, so the result differs from the route only in those weights; a
//! concurrent edit answers 409 and the action is retried on a fresh read.
//!
//! **NGINX.** The user's Ingress is only read. Slipway applies a copy, `<ingress>-canary`
//! (managed by it), whose paths to the stable Service lead to the canary Service, with
//! `nginx.ingress.kubernetes.io/canary: "true"` and `canary-weight: "<w>"`.
//!
//! The weight observed is the canary's share as the object says it: for a route, the largest
//! share over its rules (so 0 means no rule sends the canary anything).

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::Ingress;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};
use slipway_core::rollout::Track;

use super::from_kube;
use super::objects::{self, FIELD_MANAGER};
use crate::driver::{DriverError, Target};

pub const CANARY_ANNOTATION: &str = "nginx.ingress.kubernetes.io/canary";
pub const CANARY_WEIGHT_ANNOTATION: &str = "nginx.ingress.kubernetes.io/canary-weight";

fn http_routes(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "httproutes");
    Api::namespaced_with(client.clone(), namespace, &resource)
}

/// The name of the canary copy of an Ingress.
pub fn canary_ingress_name(ingress: &str) -> String {
    format!("{ingress}-canary")
}

// --- Gateway API ---------------------------------------------------------------------------------

/// Whether a backendRef points at Service `service` of the route's own namespace.
fn refers_to(backend: &Value, service: &str, namespace: &str) -> bool {
    let group_ok = backend
        .get("group")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty);
    let kind_ok = backend
        .get("kind")
        .and_then(Value::as_str)
        .is_none_or(|k| k == "Service");
    let ns_ok = backend
        .get("namespace")
        .and_then(Value::as_str)
        .is_none_or(|n| n == namespace);
    group_ok && kind_ok && ns_ok && backend.get("name").and_then(Value::as_str) == Some(service)
}

/// Gateway API's default weight of a backendRef is 1.
fn weight_of(backend: &Value) -> u64 {
    backend.get("weight").and_then(Value::as_u64).unwrap_or(1)
}

/// Per rule that sends traffic to the stable Service: (rule index, stable ref index, canary
/// ref index).
fn split_rules(
    route: &DynamicObject,
    stable: &str,
    canary: &str,
    namespace: &str,
) -> Vec<(usize, usize, Option<usize>)> {
    let rules = route
        .data
        .pointer("/spec/rules")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    rules
        .iter()
        .enumerate()
        .filter_map(|(i, rule)| {
            let refs = rule.get("backendRefs")?.as_array()?;
            let s = refs.iter().position(|b| refers_to(b, stable, namespace))?;
            let c = refs.iter().position(|b| refers_to(b, canary, namespace));
            Some((i, s, c))
        })
        .collect()
}

fn route_names(target: &Target) -> (String, String) {
    let name = &target.workload.name;
    (
        objects::track_service_name(name, Track::Stable),
        objects::track_service_name(name, Track::Canary),
    )
}

/// The canary's share on the route, or `None` when the route is missing or sends nothing to
/// the stable Service (the next `SetCanaryWeight` says why).
pub async fn route_weight(
    client: &Client,
    target: &Target,
    route: &str,
) -> Result<Option<u32>, DriverError> {
    let Some(object) = http_routes(client, &target.namespace)
        .get_opt(route)
        .await
        .map_err(from_kube)?
    else {
        return Ok(None);
    };
    Ok(observed_route_weight(&object, target))
}

fn observed_route_weight(object: &DynamicObject, target: &Target) -> Option<u32> {
    let (stable, canary) = route_names(target);
    let rules = split_rules(object, &stable, &canary, &target.namespace);
    if rules.is_empty() {
        return None;
    }
    let refs = |i: usize| {
        object
            .data
            .pointer(&format!("/spec/rules/{i}/backendRefs"))
            .and_then(Value::as_array)
    };
    rules
        .iter()
        .map(|&(i, s, c)| {
            let Some(refs) = refs(i) else { return 0 };
            let sw = refs.get(s).map_or(0, weight_of);
            let cw = c.and_then(|c| refs.get(c)).map_or(0, weight_of);
            match sw.saturating_add(cw) {
                0 => 0,
                total => u32::try_from((cw * 100 + total / 2) / total).unwrap_or(100),
            }
        })
        .max()
}

/// Sets the split on every rule of `route` that reaches the stable Service.
pub async fn set_route_weight(
    client: &Client,
    target: &Target,
    route: &str,
    weight: u32,
) -> Result<(), DriverError> {
    let api = http_routes(client, &target.namespace);
    let object = api
        .get_opt(route)
        .await
        .map_err(from_kube)?
        .ok_or_else(|| {
            DriverError::permanent(
                "route_not_found",
                format!(
                    "HTTPRoute {route} does not exist in namespace {}",
                    target.namespace
                ),
            )
        })?;
    let (stable, canary) = route_names(target);
    let rules = split_rules(&object, &stable, &canary, &target.namespace);
    if rules.is_empty() {
        return Err(DriverError::permanent(
            "route_misconfigured",
            format!(
                "HTTPRoute {route} has no rule with a backendRef to Service {stable}: \
                 Slipway splits the traffic of the rules that send it to the stable Service"
            ),
        ));
    }
    let mut rules_doc = object
        .data
        .pointer("/spec/rules")
        .cloned()
        .unwrap_or(Value::Null);
    for &(i, s, c) in &rules {
        let Some(refs) = rules_doc
            .pointer_mut(&format!("/{i}/backendRefs"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        let stable_ref = refs.get(s).cloned().unwrap_or(Value::Null);
        if let Some(map) = refs.get_mut(s).and_then(Value::as_object_mut) {
            map.insert("weight".into(), json!(100 - weight));
        }
        match c
            .and_then(|c| refs.get_mut(c))
            .and_then(Value::as_object_mut)
        {
            Some(map) => {
                map.insert("weight".into(), json!(weight));
            }
            None => {
                let mut added = json!({ "name": canary, "weight": weight });
                for key in ["group", "kind", "port"] {
                    if let (Some(v), Some(map)) = (stable_ref.get(key), added.as_object_mut()) {
                        map.insert(key.into(), v.clone());
                    }
                }
                refs.push(added);
            }
        }
    }
    if object.data.pointer("/spec/rules") == Some(&rules_doc) {
        return Ok(());
    }
    // `rules` is an atomic list: a merge patch sends it whole, identical to what was read but
    // for the weights, with the resourceVersion that was read as a precondition, so an edit in
    // between answers 409 instead of being overwritten.
    let patch = json!({
        "metadata": { "resourceVersion": object.metadata.resource_version },
        "spec": { "rules": rules_doc },
    });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let written = api
        .patch(route, &params, &Patch::Merge(patch))
        .await
        .map_err(from_kube)?;
    verify(
        observed_route_weight(&written, target),
        weight,
        "HTTPRoute",
        route,
    )
}

fn verify(seen: Option<u32>, weight: u32, kind: &str, name: &str) -> Result<(), DriverError> {
    if seen == Some(weight) {
        Ok(())
    } else {
        Err(DriverError::retryable(
            "weight_not_applied",
            format!("{kind} {name} reads back a canary weight of {seen:?} after setting {weight}"),
        ))
    }
}

// --- NGINX ----------------------------------------------------------------------------------------

/// The canary's weight on the NGINX canary Ingress: 0 when there is no canary copy (or it is
/// not marked canary), `None` when the user's Ingress is missing.
pub async fn ingress_weight(
    client: &Client,
    target: &Target,
    ingress: &str,
) -> Result<Option<u32>, DriverError> {
    let api: Api<Ingress> = Api::namespaced(client.clone(), &target.namespace);
    if api.get_opt(ingress).await.map_err(from_kube)?.is_none() {
        return Ok(None);
    }
    let name = canary_ingress_name(ingress);
    let canary = api.get_opt(&name).await.map_err(from_kube)?;
    if let Some(c) = &canary {
        target.check_owner(
            &format!("Ingress {name}"),
            objects::environment_of(c.metadata.labels.as_ref()),
        )?;
    }
    Ok(Some(canary.as_ref().map_or(0, observed_ingress_weight)))
}

fn observed_ingress_weight(canary: &Ingress) -> u32 {
    let annotations = canary.metadata.annotations.as_ref();
    let get = |k: &str| annotations.and_then(|a| a.get(k)).map(String::as_str);
    if get(CANARY_ANNOTATION) != Some("true") {
        return 0;
    }
    get(CANARY_WEIGHT_ANNOTATION)
        .and_then(|w| w.trim().parse::<u32>().ok())
        .unwrap_or(0)
        .min(100)
}

/// Applies the canary copy of `ingress` at `weight`.
pub async fn set_ingress_weight(
    client: &Client,
    target: &Target,
    ingress: &str,
    weight: u32,
) -> Result<(), DriverError> {
    let api: Api<Ingress> = Api::namespaced(client.clone(), &target.namespace);
    let primary = api
        .get_opt(ingress)
        .await
        .map_err(from_kube)?
        .ok_or_else(|| {
            DriverError::permanent(
                "ingress_not_found",
                format!(
                    "Ingress {ingress} does not exist in namespace {}",
                    target.namespace
                ),
            )
        })?;
    let name = canary_ingress_name(ingress);
    if let Some(existing) = api.get_opt(&name).await.map_err(from_kube)? {
        objects::may_write(
            target,
            &format!("Ingress {name}"),
            existing.metadata.labels.as_ref(),
        )?;
    }
    let doc = canary_ingress(target, &primary, ingress, weight)?;
    let written = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(doc),
        )
        .await
        .map_err(from_kube)?;
    verify(
        Some(observed_ingress_weight(&written)),
        weight,
        "Ingress",
        &name,
    )
}

/// The canary copy: the primary's class and the rules' paths that reach the stable Service,
/// pointed at the canary Service.
fn canary_ingress(
    target: &Target,
    primary: &Ingress,
    ingress: &str,
    weight: u32,
) -> Result<Value, DriverError> {
    let (stable, canary) = route_names(target);
    let spec = serde_json::to_value(primary.spec.clone().unwrap_or_default())
        .map_err(|e| DriverError::permanent("unexpected_response", e.to_string()))?;
    let retarget = |backend: &Value| -> Option<Value> {
        let service = backend.get("service")?;
        (service.get("name")?.as_str()? == stable).then(|| {
            let mut b = backend.clone();
            if let Some(s) = b.get_mut("service").and_then(Value::as_object_mut) {
                s.insert("name".into(), Value::String(canary.clone()));
            }
            b
        })
    };
    let mut rules = Vec::new();
    for rule in spec
        .get("rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let paths: Vec<Value> = rule
            .pointer("/http/paths")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| {
                let backend = retarget(p.get("backend")?)?;
                let mut p = p.clone();
                if let Some(map) = p.as_object_mut() {
                    map.insert("backend".into(), backend);
                }
                Some(p)
            })
            .collect();
        if paths.is_empty() {
            continue;
        }
        let mut r = json!({ "http": { "paths": paths } });
        if let (Some(host), Some(map)) = (rule.get("host"), r.as_object_mut()) {
            map.insert("host".into(), host.clone());
        }
        rules.push(r);
    }
    let default_backend = spec.get("defaultBackend").and_then(retarget);
    if rules.is_empty() && default_backend.is_none() {
        return Err(DriverError::permanent(
            "ingress_misconfigured",
            format!(
                "Ingress {ingress} has no path to Service {stable}: the NGINX canary copies the \
                 paths that lead to the stable Service"
            ),
        ));
    }
    let mut new_spec = json!({ "rules": rules });
    if let Some(map) = new_spec.as_object_mut() {
        if let Some(class) = spec.get("ingressClassName") {
            map.insert("ingressClassName".into(), class.clone());
        }
        if let Some(b) = default_backend {
            map.insert("defaultBackend".into(), b);
        }
    }
    let mut annotations = BTreeMap::new();
    annotations.insert(CANARY_ANNOTATION, "true".to_owned());
    annotations.insert(CANARY_WEIGHT_ANNOTATION, weight.to_string());
    Ok(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": canary_ingress_name(ingress),
            "namespace": target.namespace,
            "labels": objects::labels(target, Some(Track::Canary)),
            "annotations": annotations,
        },
        "spec": new_spec,
    }))
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
                replicas: 4,
                port: 8080,
                pod_labels: Default::default(),
            },
            traffic: slipway_core::TrafficRouting::Replicas,
            blue_green: false,
            environment: "env-a".into(),
            adopt: false,
        }
    }

    fn route(rules: Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": { "name": "r" }, "spec": { "rules": rules },
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn route_weight_is_the_largest_canary_share() {
        let t = target();
        let r = route(json!([
            { "backendRefs": [{ "name": "other", "port": 80 }] },
            { "backendRefs": [{ "name": "web", "port": 80, "weight": 90 },
                              { "name": "web-canary", "port": 80, "weight": 10 }] },
            { "backendRefs": [{ "name": "web", "port": 80 }] },
        ]));
        assert_eq!(observed_route_weight(&r, &t), Some(10));
        // Default weights are 1 each: half.
        let r = route(json!([{ "backendRefs": [{ "name": "web" }, { "name": "web-canary" }] }]));
        assert_eq!(observed_route_weight(&r, &t), Some(50));
        // A ref to another namespace's or kind's "web" is not the stable Service.
        let r = route(json!([{ "backendRefs": [
            { "name": "web", "namespace": "elsewhere" },
            { "name": "web", "kind": "ServiceImport", "group": "multicluster.x-k8s.io" },
        ] }]));
        assert_eq!(observed_route_weight(&r, &t), None);
        let r = route(
            json!([{ "backendRefs": [{ "name": "web", "weight": 0 }, { "name": "web-canary", "weight": 0 }] }]),
        );
        assert_eq!(observed_route_weight(&r, &t), Some(0));
    }

    #[test]
    fn canary_ingress_copies_only_the_stable_paths() {
        let primary: Ingress = serde_json::from_value(json!({
            "metadata": { "name": "shop", "annotations": { "team": "x" } },
            "spec": {
                "ingressClassName": "nginx",
                "tls": [{ "hosts": ["shop.test"], "secretName": "tls" }],
                "rules": [
                    { "host": "shop.test", "http": { "paths": [
                        { "path": "/", "pathType": "Prefix",
                          "backend": { "service": { "name": "web", "port": { "number": 80 } } } },
                        { "path": "/api", "pathType": "Prefix",
                          "backend": { "service": { "name": "api", "port": { "number": 80 } } } },
                    ] } },
                    { "host": "admin.test", "http": { "paths": [
                        { "path": "/", "pathType": "Prefix",
                          "backend": { "service": { "name": "admin", "port": { "number": 80 } } } },
                    ] } },
                ],
            },
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let doc = canary_ingress(&target(), &primary, "shop", 25).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(doc["metadata"]["name"], "shop-canary");
        assert_eq!(doc["metadata"]["annotations"][CANARY_ANNOTATION], "true");
        assert_eq!(
            doc["metadata"]["annotations"][CANARY_WEIGHT_ANNOTATION],
            "25"
        );
        assert_eq!(
            doc["metadata"]["labels"][objects::MANAGED_BY_LABEL],
            "slipway"
        );
        assert_eq!(doc["spec"]["ingressClassName"], "nginx");
        assert!(doc["spec"].get("tls").is_none());
        let rules = doc["spec"]["rules"].as_array().map(Vec::len);
        assert_eq!(rules, Some(1));
        let paths = &doc["spec"]["rules"][0]["http"]["paths"];
        assert_eq!(paths.as_array().map(Vec::len), Some(1));
        assert_eq!(paths[0]["backend"]["service"]["name"], "web-canary");
        assert_eq!(paths[0]["backend"]["service"]["port"]["number"], 80);
        assert_eq!(doc["spec"]["rules"][0]["host"], "shop.test");

        let unrelated: Ingress = serde_json::from_value(json!({
            "metadata": { "name": "x" },
            "spec": { "defaultBackend": { "service": { "name": "api", "port": { "number": 80 } } } },
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let e = canary_ingress(&target(), &unrelated, "x", 5).err();
        assert_eq!(
            e.map(|e| e.reason().to_owned()).as_deref(),
            Some("ingress_misconfigured")
        );
    }
}
