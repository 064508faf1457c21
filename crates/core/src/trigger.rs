//! Triggers: which CI event of which repository deploys which image to which environment of
//! an app. A trigger also holds the secret that authenticates its webhook deliveries; the
//! secret is write-only (taken here, never part of [`TriggerSpec`] or [`Trigger`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::image::ImageRef;
use crate::names::check_name;
use crate::trigger_match::{Template, Variable};
use crate::validation::{ValidationError, Violations};

/// The system that sends a trigger's webhooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TriggerSource {
    Github,
    Gitlab,
    Generic,
}

impl TriggerSource {
    pub const ALL: [Self; 3] = [Self::Github, Self::Gitlab, Self::Generic];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Github => "github",
            Self::Gitlab => "gitlab",
            Self::Generic => "generic",
        }
    }

    /// What a deployment made by a delivery of this source records as `source.kind`.
    pub fn source_kind(self) -> crate::deployment::SourceKind {
        use crate::deployment::SourceKind;
        match self {
            Self::Github => SourceKind::Github,
            Self::Gitlab => SourceKind::Gitlab,
            Self::Generic => SourceKind::Webhook,
        }
    }
}

/// The CI event a trigger reacts to.
///
/// GitHub: `deployment` (created), `release` (published), `workflow_run` (completed with
/// success), `push`. GitLab: `pipeline` (status success), `tag_push`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TriggerEvent {
    Deployment,
    Release,
    WorkflowRun,
    Push,
    Pipeline,
    TagPush,
}

impl TriggerEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "deployment",
            Self::Release => "release",
            Self::WorkflowRun => "workflow_run",
            Self::Push => "push",
            Self::Pipeline => "pipeline",
            Self::TagPush => "tag_push",
        }
    }

    fn source(self) -> TriggerSource {
        match self {
            Self::Deployment | Self::Release | Self::WorkflowRun | Self::Push => {
                TriggerSource::Github
            }
            Self::Pipeline | Self::TagPush => TriggerSource::Gitlab,
        }
    }

    /// Whether deliveries of the event say when their commit was made (a release: when it
    /// was published), so that an older one can be told from a newer one.
    pub fn has_commit_time(self) -> bool {
        matches!(
            self,
            Self::Push | Self::Release | Self::WorkflowRun | Self::Pipeline
        )
    }

    /// Which ref filters the event allows: (branch, tag).
    fn filters(self) -> (bool, bool) {
        match self {
            Self::Deployment | Self::Push | Self::Pipeline => (true, true),
            Self::Release | Self::TagPush => (false, true),
            Self::WorkflowRun => (true, false),
        }
    }
}

/// Longest ref pattern, repository or workflow name.
pub const MAX_PATTERN_LEN: usize = 255;
/// Longest image template.
pub const MAX_TEMPLATE_LEN: usize = 512;
/// Longest secret.
pub const MAX_SECRET_LEN: usize = 1_024;
/// Shortest plain (non-`whsec_`) secret.
pub const MIN_SECRET_LEN: usize = 16;
/// Most triggers one app may have (a delivery is checked against all of a source's secrets).
pub const MAX_TRIGGERS_PER_APP: i64 = 100;

/// What a trigger does, as stored and returned (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TriggerSpec {
    pub source: TriggerSource,
    /// The event (GitHub and GitLab triggers; absent for generic ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<TriggerEvent>,
    /// `owner/name` on GitHub, the project's full path on GitLab.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Glob over the branch name: `*` any characters but `/`, `**` any characters, `?` one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Glob over the tag name, as `branch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Name of the workflow (`workflow_run` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// The GitHub deployment's environment (`deployment` only), e.g. `production`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_environment: Option<String>,
    /// Image template, e.g. `ghcr.io/acme/web:${sha}`; variables `${sha}`, `${short_sha}`,
    /// `${ref}`, `${branch}`, `${tag}`, `${version}`. Generic deliveries name their image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The environment of the app the trigger deploys to.
    pub environment: String,
    /// Deploy a delivery whose commit is older than the one the trigger's serving deployment
    /// was made from (a downgrade); by default that needs a human.
    #[serde(default)]
    pub allow_older: bool,
}

/// The body of `POST /v1/apps/{app}/triggers`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewTrigger {
    pub source: TriggerSource,
    /// Required for GitHub and GitLab triggers; not allowed for generic ones.
    #[serde(default)]
    pub event: Option<TriggerEvent>,
    /// `owner/name` on GitHub, the project's full path on GitLab (required for both).
    #[serde(default)]
    pub repository: Option<String>,
    /// Glob over the branch name (`*` any characters but `/`, `**` any, `?` one); a push
    /// trigger needs a branch or a tag pattern. Not for `release` / `tag_push`.
    #[serde(default)]
    pub branch: Option<String>,
    /// Glob over the tag name. Not for `workflow_run`; at most one of `branch` and `tag`.
    #[serde(default)]
    pub tag: Option<String>,
    /// Only runs of the workflow of this name (`workflow_run` only).
    #[serde(default)]
    pub workflow: Option<String>,
    /// Only GitHub deployments to the GitHub environment of this name (`deployment` only);
    /// absent: any.
    #[serde(default)]
    pub deployment_environment: Option<String>,
    /// Image template (GitHub and GitLab): `${sha}`, `${short_sha}`, `${ref}`, `${version}`
    /// always (a release has no `${sha}`), `${tag}` when the trigger matches tags, `${branch}`
    /// when it matches branches. Must make a valid image reference.
    #[serde(default)]
    pub image: Option<String>,
    /// The app's environment to deploy to.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::names::name_schema))]
    pub environment: String,
    /// `push`, `release`, `workflow_run` and `pipeline` triggers: also deploy a delivery whose
    /// commit (a release: its publication) is older than that of the deployment the trigger
    /// last made that succeeded. Default `false`: such a delivery (a replayed old one, a
    /// force-push back) deploys nothing, and a downgrade is asked for by a human.
    #[serde(default)]
    pub allow_older: bool,
    /// Write-only. GitHub: the webhook secret (≥ 16 characters). GitLab: the secret token
    /// (`X-Gitlab-Token`), or a signing token `whsec_…` (Standard Webhooks signatures).
    /// Generic: a Standard Webhooks secret `whsec_<base64 of 24–64 bytes>`.
    #[cfg_attr(feature = "openapi", schema(write_only))]
    pub secret: String,
}

/// A stored trigger as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Trigger {
    pub id: Uuid,
    pub app: String,
    #[serde(flatten)]
    pub spec: TriggerSpec,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl NewTrigger {
    /// Validates the request; returns what is stored in the clear and the secret to seal.
    pub fn validate(self) -> Result<(TriggerSpec, String), ValidationError> {
        let mut v = Violations::new();
        check_name(&mut v, "/environment", &self.environment);
        check_secret(&mut v, self.source, &self.secret);
        if self.source == TriggerSource::Generic {
            for (field, present) in [
                ("event", self.event.is_some()),
                ("repository", self.repository.is_some()),
                ("branch", self.branch.is_some()),
                ("tag", self.tag.is_some()),
                ("workflow", self.workflow.is_some()),
                (
                    "deployment_environment",
                    self.deployment_environment.is_some(),
                ),
                ("image", self.image.is_some()),
            ] {
                if present {
                    v.add(
                        format!("/{field}"),
                        "not allowed for a generic trigger: its deliveries name the environment and image",
                    );
                }
            }
        } else {
            self.validate_ci(&mut v);
        }
        if self.allow_older && !self.event.is_some_and(TriggerEvent::has_commit_time) {
            v.add(
                "/allow_older",
                "only push, release, workflow_run and pipeline triggers compare commit times",
            );
        }
        v.into_result()?;
        let spec = TriggerSpec {
            allow_older: self.allow_older,
            source: self.source,
            event: self.event,
            repository: self.repository,
            branch: self.branch,
            tag: self.tag,
            workflow: self.workflow,
            deployment_environment: self.deployment_environment,
            image: self.image,
            environment: self.environment,
        };
        Ok((spec, self.secret))
    }

    fn validate_ci(&self, v: &mut Violations) {
        let source = self.source.as_str();
        match self.event {
            None => v.add("/event", format!("required for a {source} trigger")),
            Some(event) if event.source() != self.source => v.add(
                "/event",
                format!(
                    "{} is not a {source} event; {source} events are {}",
                    event.as_str(),
                    if self.source == TriggerSource::Github {
                        "deployment, release, workflow_run, push"
                    } else {
                        "pipeline, tag_push"
                    }
                ),
            ),
            Some(_) => {}
        }
        match &self.repository {
            None => v.add("/repository", format!("required for a {source} trigger")),
            Some(repo) => check_repository(v, self.source, repo),
        }
        for (field, pattern) in [("branch", &self.branch), ("tag", &self.tag)] {
            if let Some(p) = pattern {
                check_pattern(v, &format!("/{field}"), p);
            }
        }
        if self.branch.is_some() && self.tag.is_some() {
            v.add("/tag", "give a branch or a tag pattern, not both");
        }
        if let Some(event) = self.event.filter(|e| e.source() == self.source) {
            let (branch_ok, tag_ok) = event.filters();
            if self.branch.is_some() && !branch_ok {
                v.add(
                    "/branch",
                    format!("{} events have no branch to match", event.as_str()),
                );
            }
            if self.tag.is_some() && !tag_ok {
                v.add(
                    "/tag",
                    format!("{} events have no tag to match", event.as_str()),
                );
            }
            if event == TriggerEvent::Push && self.branch.is_none() && self.tag.is_none() {
                v.add(
                    "/branch",
                    "a push trigger needs a branch or a tag pattern (\"**\" for any branch)",
                );
            }
            if self.workflow.is_some() && event != TriggerEvent::WorkflowRun {
                v.add("/workflow", "only a workflow_run trigger names a workflow");
            }
            if self.deployment_environment.is_some() && event != TriggerEvent::Deployment {
                v.add(
                    "/deployment_environment",
                    "only a deployment trigger names a GitHub environment",
                );
            }
        }
        for (field, value) in [
            ("workflow", &self.workflow),
            ("deployment_environment", &self.deployment_environment),
        ] {
            if let Some(w) = value
                && (w.is_empty() || w.len() > MAX_PATTERN_LEN || w.chars().any(char::is_control))
            {
                v.add(
                    format!("/{field}"),
                    format!("must be 1-{MAX_PATTERN_LEN} printable characters"),
                );
            }
        }
        match &self.image {
            None => v.add(
                "/image",
                format!("required for a {source} trigger: the image template to deploy"),
            ),
            Some(image) => {
                let available = self.event.map(|e| self.variables(e)).unwrap_or_default();
                check_template(v, image, &available);
            }
        }
    }

    /// The template variables a delivery of `event` to this trigger always has.
    fn variables(&self, event: TriggerEvent) -> Vec<Variable> {
        let mut vars = vec![Variable::Ref, Variable::Version];
        if event != TriggerEvent::Release {
            vars.extend([Variable::Sha, Variable::ShortSha]);
        }
        let tag_known = matches!(event, TriggerEvent::Release | TriggerEvent::TagPush)
            || (matches!(event, TriggerEvent::Push | TriggerEvent::Pipeline) && self.tag.is_some());
        let branch_known = event == TriggerEvent::WorkflowRun
            || (matches!(event, TriggerEvent::Push | TriggerEvent::Pipeline)
                && self.branch.is_some());
        if tag_known {
            vars.push(Variable::Tag);
        }
        if branch_known {
            vars.push(Variable::Branch);
        }
        vars
    }
}

fn check_secret(v: &mut Violations, source: TriggerSource, secret: &str) {
    let signing = secret.starts_with(crate::trigger_match::WHSEC_PREFIX);
    if signing || source == TriggerSource::Generic {
        if crate::trigger_match::signing_key(secret).is_none() {
            v.add(
                "/secret",
                "must be a Standard Webhooks secret: \"whsec_\" and the base64 of 24-64 random bytes",
            );
        }
        return;
    }
    let printable = secret.bytes().all(|b| b.is_ascii_graphic());
    if secret.len() < MIN_SECRET_LEN || secret.len() > MAX_SECRET_LEN || !printable {
        v.add(
            "/secret",
            format!(
                "must be {MIN_SECRET_LEN}-{MAX_SECRET_LEN} visible ASCII characters (use a random one)"
            ),
        );
    }
}

/// Longest GitHub account (user or organization) name.
pub const MAX_GITHUB_OWNER_LEN: usize = 39;
/// Longest GitHub repository name.
pub const MAX_GITHUB_NAME_LEN: usize = 100;

/// A GitHub `owner/name` split in two, when it follows GitHub's own rules: the owner 1–39
/// letters, digits and hyphens, not starting with a hyphen; the name 1–100 letters, digits,
/// `.`, `_` and `-`, and not `.` or `..`. Statuses are posted under
/// `/repos/{owner}/{name}/…`, so nothing else may reach a URL.
pub fn github_repository(repo: &str) -> Option<(&str, &str)> {
    let (owner, name) = repo.split_once('/')?;
    let owner_ok = (1..=MAX_GITHUB_OWNER_LEN).contains(&owner.len())
        && !owner.starts_with('-')
        && owner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let name_ok = (1..=MAX_GITHUB_NAME_LEN).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    (owner_ok && name_ok).then_some((owner, name))
}

/// Whether `repo` is a GitLab project's full path: groups, subgroups and the project, each
/// 1–255 letters, digits, `.`, `_` and `-`, not starting with `-` and not `.` or `..`.
fn gitlab_path(repo: &str) -> bool {
    let mut segments = 0;
    let all_ok = repo.split('/').all(|segment| {
        segments += 1;
        !segment.is_empty()
            && segment != "."
            && segment != ".."
            && !segment.starts_with('-')
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    });
    all_ok && segments >= 2
}

fn check_repository(v: &mut Violations, source: TriggerSource, repo: &str) {
    let (ok, form) = match source {
        TriggerSource::Github => (
            github_repository(repo).is_some(),
            "owner/name as GitHub allows them: an owner of 1-39 letters, digits and '-' (not first), a name of 1-100 letters, digits, '.', '_' and '-' (not \".\" or \"..\")",
        ),
        _ => (
            gitlab_path(repo),
            "group/project (the project's full path): segments of letters, digits, '.', '_' and '-', none starting with '-' or being \".\" or \"..\"",
        ),
    };
    if repo.len() > MAX_PATTERN_LEN || !ok {
        v.add(
            "/repository",
            format!("must be {form}, at most {MAX_PATTERN_LEN} characters"),
        );
    }
}

fn check_pattern(v: &mut Violations, at: &str, pattern: &str) {
    if pattern.is_empty()
        || pattern.len() > MAX_PATTERN_LEN
        || pattern
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "~^:\\[".contains(c))
    {
        v.add(
            at,
            format!(
                "must be a glob of 1-{MAX_PATTERN_LEN} characters valid in a git ref ('*', '**' and '?' as wildcards)"
            ),
        );
    }
}

fn check_template(v: &mut Violations, image: &str, available: &[Variable]) {
    if image.len() > MAX_TEMPLATE_LEN {
        v.add(
            "/image",
            format!("must be at most {MAX_TEMPLATE_LEN} characters"),
        );
        return;
    }
    let template = match Template::parse(image) {
        Ok(t) => t,
        Err(e) => {
            v.add("/image", e);
            return;
        }
    };
    if let Some(missing) = template.variables().find(|var| !available.contains(var)) {
        v.add(
            "/image",
            format!(
                "${{{}}} is not known for this trigger's deliveries; available: {}",
                missing.name(),
                available
                    .iter()
                    .map(|var| format!("${{{}}}", var.name()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        return;
    }
    let sample = template.render(&|var| Some(var.sample().to_owned()));
    if let Some(Err(e)) = sample.map(|s| ImageRef::parse(&s)) {
        v.add(
            "/image",
            format!("does not make a valid image reference: {e}"),
        );
    }
}

/// A deployment a webhook delivery created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TriggeredDeployment {
    /// The deployment's id (`GET /v1/deployments/{id}`).
    pub id: Uuid,
    pub app: String,
    pub environment: String,
    /// The trigger that matched.
    pub trigger: Uuid,
}

/// The answer to a webhook delivery that created deployments (also replayed, unchanged, to a
/// redelivery of the same delivery id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryAccepted {
    /// The sender's delivery id.
    pub delivery_id: String,
    pub deployments: Vec<TriggeredDeployment>,
}
