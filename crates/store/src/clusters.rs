//! Registered clusters.

use chrono::{DateTime, Utc};
use slipway_core::{Cluster, ClusterKind, ClusterSpec, NamespaceAllowlist};
use sqlx::{AssertSqlSafe, PgConnection};
use uuid::Uuid;

use crate::StoreError;
use crate::codec::decode;
use crate::page::{Page, fetch_limit};

const KINDS: [ClusterKind; 3] = [
    ClusterKind::Kubernetes,
    ClusterKind::InCluster,
    ClusterKind::Simulated,
];

#[derive(sqlx::FromRow)]
struct ClusterRow {
    name: String,
    kind: String,
    kubeconfig_path: Option<String>,
    context: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<ClusterRow> for Cluster {
    type Error = StoreError;

    fn try_from(r: ClusterRow) -> Result<Self, StoreError> {
        Ok(Cluster {
            name: r.name,
            kind: decode(&r.kind, &KINDS, ClusterKind::as_str)?,
            kubeconfig_path: r.kubeconfig_path,
            context: r.context,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

const COLUMNS: &str = "name, kind::text AS kind, kubeconfig_path, context, created_at, updated_at";

/// Registers a cluster; a taken name fails on `clusters_name_key`.
#[tracing::instrument(skip_all, fields(cluster = %spec.name))]
pub async fn insert(conn: &mut PgConnection, spec: &ClusterSpec) -> Result<Cluster, StoreError> {
    let sql = format!(
        "INSERT INTO clusters (id, name, kind, kubeconfig_path, context)
         VALUES ($1, $2, $3::cluster_kind, $4, $5) RETURNING {COLUMNS}"
    );
    let row: ClusterRow = sqlx::query_as(AssertSqlSafe(sql))
        .bind(Uuid::now_v7())
        .bind(&spec.name)
        .bind(spec.kind.as_str())
        .bind(&spec.kubeconfig_path)
        .bind(&spec.context)
        .fetch_one(conn)
        .await?;
    row.try_into()
}

#[tracing::instrument(skip_all, fields(cluster = name))]
pub async fn get(conn: &mut PgConnection, name: &str) -> Result<Cluster, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM clusters WHERE name = $1");
    let row: Option<ClusterRow> = sqlx::query_as(AssertSqlSafe(sql))
        .bind(name)
        .fetch_optional(conn)
        .await?;
    row.ok_or(StoreError::NotFound("cluster"))?.try_into()
}

/// Clusters by name, after the name `after`.
#[tracing::instrument(skip_all)]
pub async fn list(
    conn: &mut PgConnection,
    after: Option<&str>,
    limit: i64,
) -> Result<Page<Cluster, String>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM clusters WHERE ($1::text IS NULL OR name > $1) ORDER BY name LIMIT $2"
    );
    let rows: Vec<ClusterRow> = sqlx::query_as(AssertSqlSafe(sql))
        .bind(after)
        .bind(fetch_limit(limit))
        .fetch_all(conn)
        .await?;
    let items = rows
        .into_iter()
        .map(Cluster::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Page::from_rows(items, limit, |c| c.name.clone()))
}

/// The id of the cluster named `name`.
pub async fn id_of(conn: &mut PgConnection, name: &str) -> Result<Uuid, StoreError> {
    sqlx::query_scalar("SELECT id FROM clusters WHERE name = $1")
        .bind(name)
        .fetch_optional(conn)
        .await?
        .ok_or(StoreError::NotFound("cluster"))
}

/// The namespace allowlist of the cluster named `name`: `None` when it has none (not
/// restricted).
#[tracing::instrument(skip_all, fields(cluster = name))]
pub async fn namespaces(
    conn: &mut PgConnection,
    name: &str,
) -> Result<Option<NamespaceAllowlist>, StoreError> {
    let row: Option<(Option<serde_json::Value>,)> =
        sqlx::query_as("SELECT namespaces FROM clusters WHERE name = $1")
            .bind(name)
            .fetch_optional(conn)
            .await?;
    let (list,) = row.ok_or(StoreError::NotFound("cluster"))?;
    list.map(|apps| {
        Ok(NamespaceAllowlist {
            apps: serde_json::from_value(apps)?,
        })
    })
    .transpose()
}

/// Replaces the namespace allowlist of the cluster named `name`.
#[tracing::instrument(skip_all, fields(cluster = name))]
pub async fn set_namespaces(
    conn: &mut PgConnection,
    name: &str,
    list: &NamespaceAllowlist,
) -> Result<(), StoreError> {
    let updated =
        sqlx::query("UPDATE clusters SET namespaces = $2, updated_at = now() WHERE name = $1")
            .bind(name)
            .bind(serde_json::to_value(&list.apps)?)
            .execute(conn)
            .await?
            .rows_affected();
    if updated == 0 {
        return Err(StoreError::NotFound("cluster"));
    }
    Ok(())
}

/// The id of the cluster named `name`, and whether `app` may use `namespace` on it (always,
/// when the cluster has no allowlist).
pub async fn placement(
    conn: &mut PgConnection,
    name: &str,
    app: &str,
    namespace: &str,
) -> Result<(Uuid, bool), StoreError> {
    sqlx::query_as(
        "SELECT id, namespaces IS NULL OR coalesce(namespaces -> $2 ? $3, false)
         FROM clusters WHERE name = $1",
    )
    .bind(name)
    .bind(app)
    .bind(namespace)
    .fetch_optional(conn)
    .await?
    .ok_or(StoreError::NotFound("cluster"))
}
