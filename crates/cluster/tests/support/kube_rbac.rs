//! Shared by the Kubernetes test suites (`crates/cluster/tests/kube_driver`,
//! `crates/engine/tests/kube_e2e`, `kube_outage`), included with `#[path]`: the test
//! cluster's two kubeconfigs, and the binding of deploy/rbac's role to the e2e user in a test's
//! namespace, so that Slipway runs in these tests as exactly that role, never as cluster-admin
//! (docs/test-cluster.md, docs/kubernetes.md#rbac). The `scripts/cluster/grant` script does the
//! same by hand.
// Helpers, not #[test] functions: clippy's allow-*-in-tests does not cover them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    dead_code,
    reason = "test helpers fail the test with a message"
)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// The user the e2e kubeconfig authenticates as.
pub(crate) const E2E_USER: &str = "slipway-e2e";

/// The admin kubeconfig of the test cluster (`SLIPWAY_TEST_KUBECONFIG`); panics with how to
/// get one when it is not set.
pub(crate) fn kubeconfig() -> PathBuf {
    match std::env::var_os("SLIPWAY_TEST_KUBECONFIG") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => panic!(
            "SLIPWAY_TEST_KUBECONFIG is not set: these tests need the test cluster. Run \
             `scripts/cluster/build && scripts/cluster/start` and set SLIPWAY_TEST_KUBECONFIG to \
             the KUBECONFIG=... path it prints (docs/test-cluster.md)"
        ),
    }
}

/// The kubeconfig of user `slipway-e2e`, who may do only what deploy/rbac grants:
/// `SLIPWAY_K8S_KUBECONFIG_E2E`, else `kubeconfig-e2e` beside the admin kubeconfig (as
/// scripts/cluster/start writes them).
pub(crate) fn kubeconfig_e2e() -> PathBuf {
    match std::env::var_os("SLIPWAY_K8S_KUBECONFIG_E2E") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => kubeconfig().with_file_name("kubeconfig-e2e"),
    }
}

/// A kube-rs client from a kubeconfig file (its current context).
pub(crate) async fn client_from(path: &std::path::Path) -> Client {
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(path)
            .unwrap_or_else(|e| panic!("read kubeconfig {}: {e}", path.display())),
        &KubeConfigOptions::default(),
    )
    .await
    .expect("a kube config");
    Client::try_from(config).expect("a kube client")
}

/// Applies deploy/rbac with the admin client: the ClusterRole, and its RoleBinding to
/// [`E2E_USER`] in `namespace`. Then waits (up to 60 s) until the e2e user may list
/// Deployments there: the authorizer sees a new RoleBinding a moment later.
pub(crate) async fn grant_e2e(admin: &Client, namespace: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/rbac");
    for file in ["clusterrole.yaml", "rolebinding.yaml"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let text = text
            .replace("namespace: NAMESPACE", &format!("namespace: {namespace}"))
            .replace("name: SUBJECT", &format!("name: {E2E_USER}"));
        let doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        let object: DynamicObject = serde_json::from_value(doc.clone()).unwrap();
        let types = object.types.clone().unwrap();
        let (group, version) = types.api_version.split_once('/').unwrap();
        let gvk = GroupVersionKind::gvk(group, version, &types.kind);
        let plural = format!("{}s", types.kind.to_lowercase());
        let resource = ApiResource::from_gvk_with_plural(&gvk, &plural);
        let api: Api<DynamicObject> = match object.metadata.namespace.as_deref() {
            Some(ns) => Api::namespaced_with(admin.clone(), ns, &resource),
            None => Api::all_with(admin.clone(), &resource),
        };
        let name = object.metadata.name.clone().unwrap();
        api.patch(
            &name,
            &PatchParams::apply("slipway-tests").force(),
            &Patch::Apply(doc),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {file}: {e}"));
    }
    let e2e = client_from(&kubeconfig_e2e()).await;
    let mine: Api<Deployment> = Api::namespaced(e2e, namespace);
    let start = Instant::now();
    while let Err(e) = mine.list(&ListParams::default()).await {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{E2E_USER} still may not list Deployments in {namespace} after 60 s: {e}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
