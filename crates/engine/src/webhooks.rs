//! Triggers and webhook deliveries: creating triggers with sealed secrets, reading them back
//! (opened) to verify a delivery, refusing downgrades, and taking a verified, matched delivery
//! in — de-duplicated by its delivery id (and signed content) in the same transaction that
//! records its deployments and what the delivery said about them (trigger, human actor,
//! commit).

use chrono::{DateTime, Utc};
use slipway_core::trigger::MAX_TRIGGERS_PER_APP;
use slipway_core::trigger_match::{GithubDeployment, Matched, older_than_serving};
use slipway_core::{
    Channel, DeliveryAccepted, NewTrigger, Trigger, TriggerSource, TriggerSpec, TriggeredDeployment,
};
use slipway_store::deliveries::{self, DeliveryKey, WebhookDeployment};
use slipway_store::deployments::Requester;
use slipway_store::{PgConnection, StoreError, apps, triggers};
use uuid::Uuid;

use crate::intake::{self, IntakeError};
use crate::secrets::{SecretsError, SecretsKey};

/// Creates a trigger; its secret is sealed with `key` and never stored in the clear.
pub async fn create_trigger(
    conn: &mut PgConnection,
    app: &str,
    new: NewTrigger,
    key: Option<&SecretsKey>,
    created_by: &str,
) -> Result<Trigger, IntakeError> {
    let (spec, secret) = new.validate()?;
    let key = key.ok_or_else(|| {
        IntakeError::Conflict(format!(
            "{}: triggers cannot be created until it is set",
            SecretsError::NoKey
        ))
    })?;
    let (app_id, _) = apps::lock(conn, app).await?;
    if triggers::count(conn, app_id).await? >= MAX_TRIGGERS_PER_APP {
        return Err(IntakeError::Conflict(format!(
            "app {app:?} already has {MAX_TRIGGERS_PER_APP} triggers, the most an app may have"
        )));
    }
    let id = Uuid::now_v7();
    let sealed = key
        .seal(secret.as_bytes(), id.as_bytes())
        .map_err(|e| IntakeError::Store(StoreError::Corrupt(e.to_string())))?;
    triggers::insert(conn, id, app_id, &spec, &sealed, created_by).await?;
    Ok(triggers::get(conn, app, id).await?)
}

/// A trigger with its secret opened, to check a delivery's signature with.
#[derive(Debug, Clone)]
pub struct OpenTrigger {
    pub id: Uuid,
    pub app_id: Uuid,
    pub spec: TriggerSpec,
    pub secret: Vec<u8>,
}

/// Every trigger of `source` of the app `app`, with its secret. A secret that does not open
/// (the key changed) is logged and left out: no delivery verifies against it.
pub async fn triggers_for(
    conn: &mut PgConnection,
    app: &str,
    source: TriggerSource,
    key: Option<&SecretsKey>,
) -> Result<Vec<OpenTrigger>, IntakeError> {
    let Some(key) = key else {
        return Ok(Vec::new());
    };
    let sealed = triggers::for_source(conn, app, source).await?;
    Ok(sealed
        .into_iter()
        .filter_map(|t| match key.open(&t.secret_sealed, t.id.as_bytes()) {
            Ok(secret) => Some(OpenTrigger {
                id: t.id,
                app_id: t.app_id,
                spec: t.spec,
                secret,
            }),
            Err(e) => {
                tracing::error!(trigger = %t.id, error = %e, "a trigger's secret does not open");
                None
            }
        })
        .collect())
}

/// A deployment a delivery asks for, from one matching trigger.
#[derive(Debug, Clone)]
pub struct PlannedDeployment {
    pub trigger: Uuid,
    pub matched: Matched,
    /// The GitHub deployment to report statuses to (`repository`, deployment).
    pub github: Option<(String, GithubDeployment)>,
    /// When the delivery's commit was made, as its signed payload says.
    pub committed_at: Option<DateTime<Utc>>,
    /// The trigger deploys commits older than the one it serves.
    pub allow_older: bool,
}

/// The planned deployments that are not downgrades, and why the others are refused: a
/// delivery whose commit is older than that of the deployment its trigger serves (the newest
/// one it made that succeeded) deploys nothing unless the trigger allows older commits (a
/// captured delivery replayed later, or a force-push back, needs a human).
pub async fn refuse_older(
    conn: &mut PgConnection,
    planned: Vec<PlannedDeployment>,
) -> Result<(Vec<PlannedDeployment>, Vec<String>), IntakeError> {
    let mut kept = Vec::with_capacity(planned.len());
    let mut refused = Vec::new();
    for plan in planned {
        let serving = match plan.committed_at {
            Some(_) if !plan.allow_older => {
                deliveries::serving_commit_time(conn, plan.trigger).await?
            }
            _ => None,
        };
        match older_than_serving(plan.allow_older, plan.committed_at, serving) {
            Some(reason) => refused.push(format!("trigger {} {reason}", plan.trigger)),
            None => kept.push(plan),
        }
    }
    Ok((kept, refused))
}

/// A verified delivery of an app.
#[derive(Debug, Clone)]
pub struct Delivery<'a> {
    pub app: &'a str,
    pub app_id: Uuid,
    pub source: TriggerSource,
    pub delivery_id: &'a str,
    pub event: &'a str,
    pub metadata: Option<serde_json::Value>,
    /// For a source that does not sign its delivery id (GitHub): the digest of the event and
    /// the signed body, which identifies the delivery too, so a captured one resent under a
    /// new id is a redelivery.
    pub content_digest: Option<[u8; 32]>,
}

impl Delivery<'_> {
    fn key(&self) -> DeliveryKey<'_> {
        DeliveryKey {
            app_id: self.app_id,
            source: self.source.as_str(),
            delivery_id: self.delivery_id,
            content_digest: self.content_digest.as_ref(),
        }
    }
}

/// How a delivery was taken.
#[derive(Debug, Clone)]
pub struct Taken {
    pub answer: serde_json::Value,
    /// The delivery id had been taken before: nothing new was recorded.
    pub replayed: bool,
}

/// The stored answer of a delivery taken before, if it was.
pub async fn replay(
    conn: &mut PgConnection,
    delivery: &Delivery<'_>,
) -> Result<Option<Taken>, IntakeError> {
    Ok(deliveries::answered(conn, delivery.key())
        .await?
        .map(|answer| Taken {
            answer,
            replayed: true,
        }))
}

/// Records the deployments of a delivery, once per delivery id: in the caller's transaction,
/// the delivery id is claimed, each deployment recorded, GitHub deployments linked for status
/// reports, and the answer stored. A concurrent copy of the delivery waits for the claim and
/// then answers the stored answer.
pub async fn take(
    conn: &mut PgConnection,
    delivery: &Delivery<'_>,
    planned: Vec<PlannedDeployment>,
) -> Result<Taken, IntakeError> {
    if !deliveries::claim(
        conn,
        delivery.key(),
        delivery.event,
        delivery.metadata.as_ref(),
    )
    .await?
    {
        let answer = deliveries::answered(conn, delivery.key())
            .await?
            .unwrap_or_default();
        return Ok(Taken {
            answer,
            replayed: true,
        });
    }
    let mut created = Vec::with_capacity(planned.len());
    for plan in planned {
        let principal = format!("webhook:{}/{}", delivery.source.as_str(), plan.trigger);
        let by = Requester {
            principal: &principal,
            idempotency_key: None,
            traceparent: None,
        };
        let environment = plan.matched.environment;
        let actor = plan.matched.request.source.user.clone();
        let commit = plan.matched.request.source.commit.clone();
        let deployment = intake::record_deployment(
            conn,
            delivery.app,
            &environment,
            plan.matched.request,
            Channel::Delivery(delivery.source.source_kind()),
            &by,
        )
        .await
        .map_err(|e| match delivery.source {
            // A generic delivery named the image itself: its errors are the sender's.
            TriggerSource::Generic => e,
            _ => in_trigger(e, plan.trigger, &environment),
        })?;
        deliveries::record_webhook_deployment(
            conn,
            WebhookDeployment {
                deployment_id: deployment.id,
                trigger_id: plan.trigger,
                actor: actor.as_deref(),
                commit_sha: commit.as_deref(),
                committed_at: plan.committed_at,
            },
        )
        .await?;
        if let Some((repository, github)) = &plan.github {
            deliveries::link_github(
                conn,
                deployment.id,
                repository,
                github.id,
                &github.environment,
            )
            .await?;
        }
        created.push(TriggeredDeployment {
            id: deployment.id,
            app: deployment.app,
            environment: deployment.environment,
            trigger: plan.trigger,
        });
    }
    let answer = serde_json::to_value(DeliveryAccepted {
        delivery_id: delivery.delivery_id.to_owned(),
        deployments: created,
    })
    .map_err(StoreError::from)?;
    deliveries::complete(conn, delivery.key(), &answer).await?;
    Ok(Taken {
        answer,
        replayed: false,
    })
}

/// Says which trigger made a request that could not be recorded.
fn in_trigger(e: IntakeError, trigger: Uuid, environment: &str) -> IntakeError {
    match e {
        IntakeError::Invalid(v) => IntakeError::Conflict(format!(
            "trigger {trigger} made a deployment request that is not valid: {v}"
        )),
        IntakeError::NotFound(what) => IntakeError::Conflict(format!(
            "trigger {trigger} deploys to environment {environment:?}, which does not exist ({what} not found)"
        )),
        other => other,
    }
}
