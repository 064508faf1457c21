//! `/v1/clusters`

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use slipway_core::{Cluster, ClusterDetail, ClusterNamespaces, ClusterSpec, NamespaceAllowlist};
use slipway_engine::intake;
use slipway_store::clusters;
use slipway_store::rollouts::ClusterRef;

use crate::auth::audit::AuditContext;
use crate::extract::{IdempotencyKey, JsonBody, Principal, Query};
use crate::idempotency::{self, KeyedRequest, Written};
use crate::pagination::{CursorKind, List, PageParams};
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

/// Register a cluster.
#[utoipa::path(post, path = "/v1/clusters", operation_id = "createCluster", tag = "clusters",
    params(IdempotencyKey),
    request_body(content = ClusterSpec, example = json!({"name": "prod-eu", "kind": "kubernetes", "kubeconfig_path": "/etc/slipway/kubeconfig", "context": "prod-eu"})),
    responses(
        (status = 201, description = "Registered", body = Cluster, headers(("Location" = String, description = "URL of the cluster"))),
        (status = 400, description = "Malformed JSON or header", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Name taken, or the same Idempotency-Key is in flight", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field, or Idempotency-Key reused with another body", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    audit: AuditContext,
    IdempotencyKey(key): IdempotencyKey,
    body: JsonBody<ClusterSpec>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let request = KeyedRequest {
        key: key.as_deref(),
        scope: format!("{principal} POST /v1/clusters"),
        digest: &body.digest,
        audit: &audit,
    };
    let spec = body.value;
    idempotency::run(&state, request, move |conn| {
        Box::pin(async move {
            let cluster = intake::register_cluster(conn, &spec).await?;
            let location = format!("/v1/clusters/{}", cluster.name);
            Written::created(&cluster, location)
        })
    })
    .await
}

/// List clusters by name.
#[utoipa::path(get, path = "/v1/clusters", operation_id = "listClusters", tag = "clusters",
    params(PageParams),
    responses(
        (status = 200, description = "A page of clusters", body = List<Cluster>),
        (status = 422, description = "Invalid limit or cursor", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(
    State(state): State<AppState>,
    _: Principal,
    Query(page): Query<PageParams>,
) -> Result<Json<List<Cluster>>, ApiError> {
    let limit = page.limit()?;
    let after = page.after(CursorKind::Name)?;
    let mut conn = state.pool.acquire().await?;
    let found = clusters::list(&mut conn, after.as_deref(), limit).await?;
    Ok(Json(List::from_page(found, CursorKind::Name)))
}

/// Get a cluster, with whether it answers now.
///
/// `status` comes from asking the cluster's API server for its version (Kubernetes
/// `GET /version`) with a 3 s timeout; a simulated cluster is always reachable and has no
/// version. Credentials are never part of the answer.
#[utoipa::path(get, path = "/v1/clusters/{cluster}", operation_id = "getCluster", tag = "clusters",
    params(("cluster" = String, Path, description = "Cluster name")),
    responses(
        (status = 200, description = "The cluster and its reachability", body = ClusterDetail),
        (status = 404, description = "No such cluster", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get(
    State(state): State<AppState>,
    _: Principal,
    Path(name): Path<String>,
) -> Result<Json<ClusterDetail>, ApiError> {
    let (cluster, id) = {
        let mut conn = state.pool.acquire().await?;
        let cluster = clusters::get(&mut conn, &name).await?;
        let id = clusters::id_of(&mut conn, &name).await?;
        (cluster, id)
    };
    let reference = ClusterRef {
        id,
        name: cluster.name.clone(),
        kind: cluster.kind,
        kubeconfig_path: cluster.kubeconfig_path.clone(),
        context: cluster.context.clone(),
    };
    let status = state.drivers.status(&reference).await;
    Ok(Json(ClusterDetail { cluster, status }))
}

/// Get which namespaces each app may use on a cluster (bootstrap admins only). A cluster
/// without an allowlist answers `{"apps": null}`: it is not restricted.
#[utoipa::path(get, path = "/v1/clusters/{cluster}/namespaces", tag = "clusters",
    operation_id = "getClusterNamespaces",
    params(("cluster" = String, Path, description = "Cluster name")),
    responses(
        (status = 200, description = "The cluster's namespace allowlist", body = ClusterNamespaces),
        (status = 403, description = "Not a bootstrap admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such cluster", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_namespaces(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<ClusterNamespaces>, ApiError> {
    principal.require_admin()?;
    let mut conn = state.pool.acquire().await?;
    let list = clusters::namespaces(&mut conn, &name).await?;
    Ok(Json(ClusterNamespaces {
        apps: list.map(|l| l.apps),
    }))
}

/// Set which namespaces each app may use on a cluster (bootstrap admins only). From then on
/// an environment of an app may use only the namespaces listed for it there (422 on
/// `/namespace` otherwise); an app the list does not name may use none. Environments put
/// before are not re-checked.
#[utoipa::path(put, path = "/v1/clusters/{cluster}/namespaces", tag = "clusters",
    operation_id = "setClusterNamespaces",
    params(("cluster" = String, Path, description = "Cluster name")),
    request_body(content = NamespaceAllowlist, example = json!({
        "apps": {"web": ["web", "web-staging"], "shop": ["shop"]}})),
    responses(
        (status = 200, description = "The allowlist now in force", body = ClusterNamespaces),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a bootstrap admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such cluster", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid app or namespace name (each named by JSON pointer)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn set_namespaces(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    audit: AuditContext,
    body: JsonBody<NamespaceAllowlist>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let mut tx = state.pool.begin().await?;
    let list = intake::set_cluster_namespaces(&mut tx, &name, &body.value).await?;
    let audited = audit.commit(tx, StatusCode::OK).await?;
    let body = Json(ClusterNamespaces {
        apps: Some(list.apps),
    });
    Ok((audited, body).into_response())
}
