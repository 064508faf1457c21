//! The Kubernetes driver: kube-rs against a real API server.
//!
//! Writes are server-side applies with field manager `slipway` (forced, so Slipway wins
//! conflicts on the fields it sets and leaves every other field alone). Every Deployment and
//! Service Slipway creates carries `app.kubernetes.io/managed-by=slipway`,
//! `app.kubernetes.io/name=<workload>` and, on Deployments and their pods,
//! `slipway.dev/track=<track>`, and every object Slipway writes carries its environment's id
//! (`slipway.dev/environment=<id>`, not on pods). An object carrying another environment's id
//! is never read as the target's, changed or deleted (`owned_by_other_environment`); one
//! without the managed-by label is left alone (`not_managed`) unless the environment adopts
//! (`adopt: true`): then an adopted Deployment is taken over whole, and an adopted Service (one
//! Slipway is to point at a track: blue-green's `<name>` and `<name>-preview`, a router's
//! stable `<name>`) gets only its `spec.selector` replaced and the environment's label. An
//! object with the managed-by label but no environment label (written by an older Slipway)
//! is claimed by the environment that writes it next. A Gateway API router's HTTPRoute gets
//! only its backend weights ([`traffic`]).
//!
//! Traffic: with the replica-ratio router the canary weight is the ratio of canary to stable
//! pods, so `SetCanaryWeight` changes nothing and observations carry no weight. With the
//! Gateway API and NGINX routers ([`traffic`]) the weight is written to the route or canary
//! Ingress, read back from the object, and reported in every observation; Slipway then also
//! applies the Services the router sends traffic to: `<name>` for the stable pods (only its
//! selector, if someone else created it) and `<name>-canary`.
//!
//! An observation is one `list` of the workload's Deployments by label, for blue-green also a
//! `get` of its active and preview Services and one `list` of their EndpointSlices (by
//! `kubernetes.io/service-name`; an endpoint's color comes from its pod's name), and with a
//! router a `get` of the HTTPRoute or canary Ingress: 1 request for rolling and replica-ratio
//! canaries, 4 for blue-green, 2 for routed canaries.
//!
//! The [`kube::Client`] is built on first use (building one needs the Tokio runtime, and
//! reading exec credentials is async) and then shared: one client per driver, behind a
//! client-side rate limit ([`KubeSettings`]). An action or observation the API server answers
//! with 409, 429 or 5xx is tried again after a doubling backoff, a few times, before the error
//! goes back to the engine; an unreachable server or a timeout goes back at once.

mod error;
pub mod objects;
mod settings;
mod status;
pub mod traffic;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PropagationPolicy};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use slipway_core::TrafficRouting;
use slipway_core::rollout::{Action, Observation, ServiceRole, Track};
use tokio::sync::OnceCell;

use crate::driver::{BoxFuture, ClusterDriver, DriverError, Target};
pub use error::{from_kube, from_status};
use objects::{FIELD_MANAGER, SERVICE_ROLES};
pub use settings::KubeSettings;

enum Source {
    Kubeconfig {
        path: PathBuf,
        kubeconfig: Box<Kubeconfig>,
        options: KubeConfigOptions,
    },
    InCluster,
}

/// A [`ClusterDriver`] for one Kubernetes cluster.
pub struct KubeDriver {
    source: Source,
    settings: KubeSettings,
    client: OnceCell<Client>,
}

impl std::fmt::Debug for KubeDriver {
    // Kubeconfigs hold credentials: only say where the driver connects from.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("KubeDriver");
        match &self.source {
            Source::Kubeconfig { path, options, .. } => d
                .field("kubeconfig", path)
                .field("context", &options.context),
            Source::InCluster => d.field("in_cluster", &true),
        };
        d.field("connected", &self.client.initialized()).finish()
    }
}

impl KubeDriver {
    /// A driver for the cluster of `context` (or the current context) in the kubeconfig at
    /// `path`. The file is read and the context checked now; the connection is made on the
    /// first call.
    pub fn from_kubeconfig(
        path: impl AsRef<Path>,
        context: Option<&str>,
    ) -> Result<Self, DriverError> {
        let path = path.as_ref();
        let kubeconfig = Kubeconfig::read_from(path).map_err(|e| {
            DriverError::permanent(
                "invalid_kubeconfig",
                format!("cannot read kubeconfig {}: {e}", path.display()),
            )
        })?;
        let name = context
            .map(str::to_owned)
            .or_else(|| kubeconfig.current_context.clone())
            .ok_or_else(|| {
                DriverError::permanent(
                    "invalid_kubeconfig",
                    format!(
                        "kubeconfig {} has no current context; name one",
                        path.display()
                    ),
                )
            })?;
        if !kubeconfig.contexts.iter().any(|c| c.name == name) {
            return Err(DriverError::permanent(
                "invalid_kubeconfig",
                format!("kubeconfig {} has no context {name:?}", path.display()),
            ));
        }
        Ok(Self::new(Source::Kubeconfig {
            path: path.to_owned(),
            kubeconfig: Box::new(kubeconfig),
            options: KubeConfigOptions {
                context: Some(name),
                ..KubeConfigOptions::default()
            },
        }))
    }

    /// A driver for the cluster this process runs in (its service account).
    pub fn in_cluster() -> Self {
        Self::new(Source::InCluster)
    }

    fn new(source: Source) -> Self {
        Self {
            source,
            settings: KubeSettings::default(),
            client: OnceCell::new(),
        }
    }

    /// The same driver with other connection settings (before its first call).
    #[must_use]
    pub fn with_settings(mut self, settings: KubeSettings) -> Self {
        self.settings = settings;
        self
    }

    pub fn settings(&self) -> &KubeSettings {
        &self.settings
    }

    /// The API server's version (`GET /version`, open to every authenticated user), e.g.
    /// `v1.36.3`. One attempt, no retries: it answers "is the cluster reachable now".
    pub async fn server_version(&self) -> Result<String, DriverError> {
        let info = self
            .client()
            .await?
            .apiserver_version()
            .await
            .map_err(from_kube)?;
        Ok(info.git_version)
    }

    /// Runs `op` until it succeeds, fails for good, or has been tried `settings.attempts`
    /// times; only answers that say "try again" (409, 429, 5xx) are retried here.
    async fn with_retries<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, DriverError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, DriverError>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Err(e) if attempt < self.settings.attempts && retry_here(&e) => {
                    let wait = self.settings.backoff_before(attempt);
                    tracing::debug!(%e, attempt, ?wait, what, "Kubernetes API asks to retry");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// The client, built on first use.
    pub async fn client(&self) -> Result<&Client, DriverError> {
        self.client.get_or_try_init(|| self.connect()).await
    }

    async fn connect(&self) -> Result<Client, DriverError> {
        let invalid =
            |e: &dyn std::fmt::Display| DriverError::permanent("invalid_kubeconfig", e.to_string());
        let mut config = match &self.source {
            Source::Kubeconfig {
                kubeconfig,
                options,
                path,
            } => Config::from_custom_kubeconfig((**kubeconfig).clone(), options)
                .await
                .map_err(|e| invalid(&format!("kubeconfig {}: {e}", path.display())))?,
            Source::InCluster => Config::incluster().map_err(|e| invalid(&e))?,
        };
        config.connect_timeout = Some(self.settings.connect_timeout);
        config.read_timeout = Some(self.settings.call_timeout);
        config.write_timeout = Some(self.settings.call_timeout);
        // kube-rs would otherwise retry 429/503/504 itself, up to 15 times with a backoff
        // growing to minutes, under the rate limit and out of sight: retries are the driver's
        // (`with_retries`), bounded by `KubeSettings`.
        config.default_retry = false;
        let (burst, window) = self.settings.rate_window();
        let builder = kube::client::ClientBuilder::try_from(config).map_err(from_kube)?;
        Ok(builder
            .with_layer(&tower::limit::RateLimitLayer::new(burst, window))
            .build())
    }

    async fn observe_now(&self, target: &Target) -> Result<Observation, DriverError> {
        let client = self.client().await?;
        let name = &target.workload.name;
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &target.namespace);
        let listed = deployments
            .list(&ListParams::default().labels(&objects::managed_selector(name)))
            .await
            .map_err(from_kube)?;
        for d in &listed.items {
            let what = format!("Deployment {}", d.metadata.name.as_deref().unwrap_or(name));
            target.check_owner(&what, objects::environment_of(d.metadata.labels.as_ref()))?;
        }
        let workloads = listed
            .items
            .iter()
            .filter_map(|d| {
                let track = status::deployment_track(d, name)?;
                Some((
                    track,
                    status::workload_status(d, &target.workload.container),
                ))
            })
            .collect();
        let services_api: Api<Service> = Api::namespaced(client.clone(), &target.namespace);
        let mut services = BTreeMap::new();
        // Only blue-green reads which color its Services select.
        let roles = if target.blue_green {
            &SERVICE_ROLES[..]
        } else {
            &[]
        };
        for &role in roles {
            let object = objects::service_name(name, role);
            let found = services_api.get_opt(&object).await.map_err(from_kube)?;
            if let Some(s) = &found {
                target.check_owner(
                    &format!("Service {object}"),
                    objects::environment_of(s.metadata.labels.as_ref()),
                )?;
            }
            if let Some(track) = found.as_ref().and_then(status::service_track) {
                services.insert(role, track);
            }
        }
        // Only blue-green reads what the Services' EndpointSlices hold: one list for both.
        let endpoints = if target.blue_green {
            let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &target.namespace);
            let listed = slices
                .list(&ListParams::default().labels(&status::blue_green_slices_selector(name)))
                .await
                .map_err(from_kube)?;
            status::service_endpoints(&listed.items, name)
        } else {
            BTreeMap::new()
        };
        let canary_weight = match &target.traffic {
            TrafficRouting::Replicas => None,
            TrafficRouting::GatewayApi(r) => {
                traffic::route_weight(client, target, &r.http_route).await?
            }
            TrafficRouting::Nginx(n) => traffic::ingress_weight(client, target, &n.ingress).await?,
        };
        Ok(Observation {
            workloads,
            services,
            endpoints,
            canary_weight,
        })
    }

    async fn apply_one(&self, target: &Target, action: &Action) -> Result<(), DriverError> {
        let client = self.client().await?;
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &target.namespace);
        let apply = PatchParams::apply(FIELD_MANAGER).force();
        let name = &target.workload.name;
        match action {
            Action::ApplyWorkload {
                track,
                release,
                replicas,
                max_surge,
                max_unavailable,
            } => {
                let object = objects::deployment_name(name, *track);
                writable_deployment(target, &deployments, &object).await?;
                let doc = objects::deployment(
                    target,
                    *track,
                    release,
                    *replicas,
                    *max_surge,
                    *max_unavailable,
                );
                deployments
                    .patch(&object, &apply, &Patch::Apply(doc))
                    .await
                    .map_err(from_kube)?;
                if routed(target) && matches!(track, Track::Stable | Track::Canary) {
                    self.apply_track_service(client, target, *track).await?;
                }
            }
            Action::ScaleWorkload { track, replicas } => {
                let object = objects::deployment_name(name, *track);
                if writable_deployment(target, &deployments, &object)
                    .await?
                    .is_none()
                {
                    return Err(DriverError::permanent(
                        "workload_not_found",
                        format!(
                            "cannot scale the {} workload: Deployment {object} does not exist",
                            track.as_str()
                        ),
                    ));
                }
                // A merge patch of the scale subresource: an apply without the rest of the
                // spec would drop the fields the `slipway` manager owns.
                let params = PatchParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..PatchParams::default()
                };
                let doc = serde_json::json!({ "spec": { "replicas": replicas } });
                deployments
                    .patch_scale(&object, &params, &Patch::Merge(doc))
                    .await
                    .map_err(from_kube)?;
            }
            Action::SelectTrack { service, track } => {
                self.select_track(client, target, *service, *track, &apply)
                    .await?;
            }
            Action::SetCanaryWeight { canary_weight } => {
                if *canary_weight > 100 {
                    return Err(DriverError::permanent(
                        "invalid_weight",
                        format!("canary weight {canary_weight} is not between 0 and 100"),
                    ));
                }
                if routed(target) {
                    for track in [Track::Stable, Track::Canary] {
                        self.apply_track_service(client, target, track).await?;
                    }
                }
                match &target.traffic {
                    TrafficRouting::Replicas => {}
                    TrafficRouting::GatewayApi(r) => {
                        traffic::set_route_weight(client, target, &r.http_route, *canary_weight)
                            .await?;
                    }
                    TrafficRouting::Nginx(n) => {
                        traffic::set_ingress_weight(client, target, &n.ingress, *canary_weight)
                            .await?;
                    }
                }
            }
            Action::DeleteWorkload { track } => {
                let object = objects::deployment_name(name, *track);
                if writable_deployment(target, &deployments, &object)
                    .await?
                    .is_some()
                {
                    let params = DeleteParams {
                        propagation_policy: Some(PropagationPolicy::Background),
                        ..DeleteParams::default()
                    };
                    match deployments.delete(&object, &params).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(s)) if s.code == 404 => {}
                        Err(e) => return Err(from_kube(e)),
                    }
                }
            }
        }
        Ok(())
    }

    async fn select_track(
        &self,
        client: &Client,
        target: &Target,
        role: ServiceRole,
        track: Track,
        apply: &PatchParams,
    ) -> Result<(), DriverError> {
        let object = objects::service_name(&target.workload.name, role);
        point_service(client, target, &object, track, apply).await
    }

    /// The Service a traffic router sends `track`'s share to (`<name>`, `<name>-canary`).
    async fn apply_track_service(
        &self,
        client: &Client,
        target: &Target,
        track: Track,
    ) -> Result<(), DriverError> {
        let object = objects::track_service_name(&target.workload.name, track);
        let apply = PatchParams::apply(FIELD_MANAGER).force();
        point_service(client, target, &object, track, &apply).await
    }
}

fn routed(target: &Target) -> bool {
    !matches!(target.traffic, TrafficRouting::Replicas)
}

/// Whether to retry an error within the call: the API server answered and asked to try again
/// (409, 429, 5xx). An unreachable server or a timeout goes back to the engine at once.
fn retry_here(e: &DriverError) -> bool {
    e.is_retryable() && !matches!(e.reason(), "cluster_unreachable" | "timeout")
}

/// Applies Service `object` selecting `track`'s pods; of a Service someone else created that
/// the environment adopts, only the selector (and the environment's label). Another
/// environment's Service, or an unmanaged one the environment does not adopt, is refused.
async fn point_service(
    client: &Client,
    target: &Target,
    object: &str,
    track: Track,
    apply: &PatchParams,
) -> Result<(), DriverError> {
    let services: Api<Service> = Api::namespaced(client.clone(), &target.namespace);
    let existing = services.get_opt(object).await.map_err(from_kube)?;
    let write = match &existing {
        Some(s) => objects::may_write(
            target,
            &format!("Service {object}"),
            s.metadata.labels.as_ref(),
        )?,
        None => objects::Write::Managed,
    };
    let doc = match write {
        objects::Write::Adopted => {
            tracing::info!(namespace = %target.namespace, service = %object, track = track.as_str(),
                "switching the selector of a Service the environment adopts");
            objects::named_selector_only(target, object, track)
        }
        objects::Write::Managed => objects::named_service(target, object, track),
    };
    services
        .patch(object, apply, &Patch::Apply(doc))
        .await
        .map_err(from_kube)?;
    Ok(())
}

/// The Deployment `name` if it exists; an error if it exists and the target may not write it
/// (another environment's, or unmanaged and not adopted: [`objects::may_write`]).
async fn writable_deployment(
    target: &Target,
    api: &Api<Deployment>,
    name: &str,
) -> Result<Option<Deployment>, DriverError> {
    let found = api.get_opt(name).await.map_err(from_kube)?;
    if let Some(d) = &found {
        objects::may_write(
            target,
            &format!("Deployment {name}"),
            d.metadata.labels.as_ref(),
        )?;
    }
    Ok(found)
}

impl ClusterDriver for KubeDriver {
    fn observe<'a>(
        &'a self,
        target: &'a Target,
    ) -> BoxFuture<'a, Result<Observation, DriverError>> {
        Box::pin(self.with_retries("observe", || self.observe_now(target)))
    }

    fn apply<'a>(
        &'a self,
        target: &'a Target,
        actions: &'a [Action],
    ) -> BoxFuture<'a, Result<(), DriverError>> {
        Box::pin(async move {
            for action in actions {
                self.with_retries("apply", || self.apply_one(target, action))
                    .await?;
            }
            Ok(())
        })
    }

    fn probe(&self) -> BoxFuture<'_, Result<Option<String>, DriverError>> {
        Box::pin(async move { self.server_version().await.map(Some) })
    }
}
