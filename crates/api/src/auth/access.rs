//! Authorization checks a handler makes, one call each:
//!
//! ```text
//! principal.require(&state, &app, Some(&env), Role::Deployer).await?;
//! ```

use slipway_core::access::{Access, decide};
use slipway_core::rollout::CommandKind;
use slipway_store::StoreError;
use slipway_store::access::{self as store_access, DeploymentPlace, Member};
use uuid::Uuid;

use super::{Principal, Role};
use crate::problem::{ApiError, ProblemType};
use crate::state::AppState;

/// The role each command needs. `promote` moves past pauses the strategy itself defines, as
/// part of driving a rollout, so a deployer may send it; `approve` is the human gate.
pub fn role_for(kind: CommandKind) -> Role {
    match kind {
        CommandKind::Approve => Role::Approver,
        _ => Role::Deployer,
    }
}

impl Principal {
    /// Whom lists are filtered for: `None` when the caller sees everything.
    pub fn visible_to(&self) -> Option<Member<'_>> {
        if self.superuser {
            None
        } else {
            Some(Member {
                subject: &self.subject,
                groups: &self.groups,
            })
        }
    }

    /// Requires admin of everything (creating apps, registering clusters, reading the audit
    /// trail): 403 otherwise.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.superuser {
            Ok(())
        } else {
            Err(ApiError::new(
                ProblemType::Forbidden,
                "this needs a bootstrap admin (configuration key bootstrap_admins)",
            ))
        }
    }

    /// Requires `role` in app `app`, in `environment` or app-wide when `None`. An app in
    /// which the caller holds no binding (or that does not exist) answers 404; a binding
    /// below `role` answers 403.
    pub async fn require(
        &self,
        state: &AppState,
        app: &str,
        environment: Option<&str>,
        role: Role,
    ) -> Result<(), ApiError> {
        self.check(state, app, environment, role, "app").await
    }

    async fn check(
        &self,
        state: &AppState,
        app: &str,
        environment: Option<&str>,
        role: Role,
        what: &str,
    ) -> Result<(), ApiError> {
        let Some(member) = self.visible_to() else {
            return Ok(());
        };
        let mut conn = state.pool.acquire().await?;
        let bindings = store_access::bindings_in_app(&mut conn, app, &member).await?;
        match decide(&bindings, environment, role) {
            Access::Granted => Ok(()),
            Access::Hidden => Err(ApiError::not_found(what)),
            Access::Below => Err(ApiError::new(
                ProblemType::Forbidden,
                match environment {
                    Some(env) => format!("this needs the {role} role in {app}/{env}"),
                    None => format!("this needs the {role} role in app {app}"),
                },
            )),
        }
    }

    /// Requires `role` where deployment `id` is; a deployment the caller cannot see (or that
    /// does not exist) answers 404.
    pub async fn require_deployment(
        &self,
        state: &AppState,
        id: Uuid,
        role: Role,
    ) -> Result<DeploymentPlace, ApiError> {
        let place = self.place(state, id).await?;
        self.check(
            state,
            &place.app,
            Some(&place.environment),
            role,
            "deployment",
        )
        .await?;
        Ok(place)
    }

    /// Requires what command `kind` on deployment `id` needs: its role there, and for
    /// `approve` under a distinct-approver policy, not being the deployment's requester (403).
    pub async fn require_command(
        &self,
        state: &AppState,
        id: Uuid,
        kind: CommandKind,
    ) -> Result<(), ApiError> {
        let place = self.require_deployment(state, id, role_for(kind)).await?;
        if kind == CommandKind::Approve
            && place.distinct_approver
            && place.requester == self.subject
        {
            return Err(ApiError::new(
                ProblemType::Forbidden,
                "the environment requires the approver to be someone other than the requester",
            ));
        }
        Ok(())
    }

    async fn place(&self, state: &AppState, id: Uuid) -> Result<DeploymentPlace, ApiError> {
        let mut conn = state.pool.acquire().await?;
        match store_access::deployment_place(&mut conn, id).await {
            Ok(place) => Ok(place),
            Err(StoreError::NotFound(_)) => Err(ApiError::not_found("deployment")),
            Err(e) => Err(e.into()),
        }
    }
}
