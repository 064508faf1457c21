//! Matching a verified webhook delivery against triggers, and rendering the image to deploy.
//!
//! A delivery is reduced to [`DeliveryFacts`] (event, repository, ref, commit, who and where)
//! by the API, which parses each source's payload; everything here is pure.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};

use crate::deployment::{DeploymentRequest, MAX_VERSION_LEN, Source};
use crate::trigger::{TriggerEvent, TriggerSource, TriggerSpec};

/// Prefix of a Standard Webhooks secret.
pub const WHSEC_PREFIX: &str = "whsec_";

/// The HMAC key of a Standard Webhooks secret (`whsec_<base64>`), when it is one: 24–64 bytes.
pub fn signing_key(secret: &str) -> Option<Vec<u8>> {
    let key = STANDARD.decode(secret.strip_prefix(WHSEC_PREFIX)?).ok()?;
    (24..=64).contains(&key.len()).then_some(key)
}

/// A variable of an image template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variable {
    /// The full commit SHA.
    Sha,
    /// Its first 7 characters.
    ShortSha,
    /// The short ref name: the branch or tag name (or the ref as sent, for a deployment).
    Ref,
    /// The branch name.
    Branch,
    /// The tag name.
    Tag,
    /// The tag without a leading `v` when there is a tag; else the short SHA.
    Version,
}

impl Variable {
    const ALL: [Self; 6] = [
        Self::Sha,
        Self::ShortSha,
        Self::Ref,
        Self::Branch,
        Self::Tag,
        Self::Version,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Sha => "sha",
            Self::ShortSha => "short_sha",
            Self::Ref => "ref",
            Self::Branch => "branch",
            Self::Tag => "tag",
            Self::Version => "version",
        }
    }

    /// A typical value, to check at creation that a template makes a valid image.
    pub fn sample(self) -> &'static str {
        match self {
            Self::Sha => "3f2a9c1d0b8e7f6a5c4d3e2f1a0b9c8d7e6f5a4b",
            Self::ShortSha => "3f2a9c1",
            Self::Ref | Self::Branch => "main",
            Self::Tag => "v1.4.2",
            Self::Version => "1.4.2",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(Variable),
}

/// A parsed image template: text with `${name}` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

impl Template {
    pub fn parse(input: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut rest = input;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                pieces.push(Piece::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| "a \"${\" is not closed by \"}\"".to_owned())?;
            let name = &after[..end];
            let var = Variable::ALL
                .into_iter()
                .find(|v| v.name() == name)
                .ok_or_else(|| {
                    format!(
                        "unknown variable ${{{name}}}; variables are {}",
                        Variable::ALL
                            .iter()
                            .map(|v| format!("${{{}}}", v.name()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?;
            pieces.push(Piece::Var(var));
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        if pieces.is_empty() {
            return Err("must not be empty".to_owned());
        }
        Ok(Self(pieces))
    }

    pub fn variables(&self) -> impl Iterator<Item = Variable> + '_ {
        self.0.iter().filter_map(|p| match p {
            Piece::Var(v) => Some(*v),
            Piece::Text(_) => None,
        })
    }

    /// The text with every variable replaced; `None` when one has no value.
    pub fn render(&self, value: &dyn Fn(Variable) -> Option<String>) -> Option<String> {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Var(v) => out.push_str(&value(*v)?),
            }
        }
        Some(out)
    }
}

/// Whether `text` matches the glob `pattern`: `*` is any run of characters but `/`, `**` any
/// run of characters, `?` one character but `/`; everything else stands for itself. Read left
/// to right, `**` is taken before `*` (so `***` is `**` then `*`).
///
/// Linear in the text: the pattern is run as a set of positions in it (an NFA simulation), at
/// most `pattern × (text + 1)` steps, so no pattern makes a match backtrack (a recursive
/// matcher spent minutes on `*a*a*a*a*a*a*a*a*b` against a 120-character ref).
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let tokens = glob_tokens(pattern);
    let n = tokens.len();
    // `at[i]`: some way of matching the text read so far ends before token `i`.
    let mut at = vec![false; n + 1];
    let mut next = vec![false; n + 1];
    at[0] = true;
    close_over_stars(&tokens, &mut at);
    for c in text.chars() {
        next.fill(false);
        let mut any = false;
        for (i, token) in tokens.iter().enumerate() {
            if !at[i] {
                continue;
            }
            let (stay, advance) = match token {
                GlobToken::AnyRun => (true, false),
                GlobToken::Run => (c != '/', false),
                GlobToken::One => (false, c != '/'),
                GlobToken::Char(l) => (false, *l == c),
            };
            next[i] |= stay;
            next[i + 1] |= advance;
            any |= stay || advance;
        }
        if !any {
            return false;
        }
        close_over_stars(&tokens, &mut next);
        std::mem::swap(&mut at, &mut next);
    }
    at[n]
}

/// A piece of a glob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GlobToken {
    /// `**`
    AnyRun,
    /// `*`
    Run,
    /// `?`
    One,
    Char(char),
}

fn glob_tokens(pattern: &str) -> Vec<GlobToken> {
    let mut tokens = Vec::with_capacity(pattern.len());
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                GlobToken::AnyRun
            }
            '*' => GlobToken::Run,
            '?' => GlobToken::One,
            other => GlobToken::Char(other),
        });
    }
    tokens
}

/// A run may be empty: being before it is being after it too.
fn close_over_stars(tokens: &[GlobToken], at: &mut [bool]) {
    for (i, token) in tokens.iter().enumerate() {
        if at[i] && matches!(token, GlobToken::AnyRun | GlobToken::Run) {
            at[i + 1] = true;
        }
    }
}

/// What a delivery's ref names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitRef {
    Branch(String),
    Tag(String),
    /// A ref whose kind the event does not say (a GitHub deployment's `ref`).
    Unknown(String),
}

impl GitRef {
    /// From a full ref (`refs/heads/main`, `refs/tags/v1`), or a short one of unknown kind.
    pub fn from_full(full: &str) -> Self {
        if let Some(b) = full.strip_prefix("refs/heads/") {
            Self::Branch(b.to_owned())
        } else if let Some(t) = full.strip_prefix("refs/tags/") {
            Self::Tag(t.to_owned())
        } else {
            Self::Unknown(full.to_owned())
        }
    }

    pub fn short(&self) -> &str {
        match self {
            Self::Branch(s) | Self::Tag(s) | Self::Unknown(s) => s,
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Branch(b) => format!("branch {b}"),
            Self::Tag(t) => format!("tag {t}"),
            Self::Unknown(r) => format!("ref {r}"),
        }
    }
}

/// A GitHub deployment a delivery announced, to report statuses to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GithubDeployment {
    pub id: i64,
    pub environment: String,
}

/// What a verified CI delivery says, whatever its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryFacts {
    pub source: TriggerSource,
    pub event: TriggerEvent,
    pub repository: String,
    pub git_ref: GitRef,
    /// The commit, when the event names one (a release does not).
    pub sha: Option<String>,
    /// The workflow's name (`workflow_run`).
    pub workflow: Option<String>,
    /// The human the delivery names as its actor (GitHub `sender.login`, GitLab
    /// `user_username` / `user.username`): the requester of its deployments for the
    /// distinct-approver rule.
    pub user: Option<String>,
    pub url: Option<String>,
    pub github_deployment: Option<GithubDeployment>,
    /// When the commit was made (a release: when it was published), as the signed payload
    /// says; orders deliveries of one trigger ([`older_than_serving`]).
    pub committed_at: Option<DateTime<Utc>>,
}

/// Why a delivery whose commit was made at `committed_at` is not deployed by a trigger whose
/// serving deployment was made from a commit of `serving` (the newest deployment the trigger
/// made that succeeded): it is older, so it is a downgrade (or a replayed old delivery), which
/// needs a human unless the trigger allows older commits. `None`: it may deploy (not older,
/// allowed, or a time is unknown).
pub fn older_than_serving(
    allow_older: bool,
    committed_at: Option<DateTime<Utc>>,
    serving: Option<DateTime<Utc>>,
) -> Option<String> {
    let (Some(at), Some(serving)) = (committed_at, serving) else {
        return None;
    };
    (!allow_older && at < serving).then(|| {
        format!(
            "refused a commit from {} older than the {} one it serves (a downgrade needs a human, or allow_older on the trigger)",
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            serving.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    })
}

/// A trigger that matched, and the deployment it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    pub environment: String,
    pub request: DeploymentRequest,
}

/// Replaces every character not allowed in an image tag or version label with `-`.
fn tag_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

impl DeliveryFacts {
    fn value(&self, var: Variable) -> Option<String> {
        let short_sha = || self.sha.as_ref().map(|s| s.chars().take(7).collect());
        match var {
            Variable::Sha => self.sha.clone(),
            Variable::ShortSha => short_sha(),
            Variable::Ref => Some(tag_safe(self.git_ref.short())),
            Variable::Branch => match &self.git_ref {
                GitRef::Branch(b) => Some(tag_safe(b)),
                _ => None,
            },
            Variable::Tag => match &self.git_ref {
                GitRef::Tag(t) => Some(tag_safe(t)),
                _ => None,
            },
            Variable::Version => match &self.git_ref {
                GitRef::Tag(t) => Some(tag_safe(t.strip_prefix('v').unwrap_or(t))),
                _ => short_sha(),
            },
        }
    }

    /// Why `trigger` does not apply to this delivery, or the deployment it asks for.
    pub fn apply(&self, trigger: &TriggerSpec) -> Result<Matched, String> {
        if trigger.event != Some(self.event) {
            return Err(format!(
                "listens to {} events, not {}",
                trigger.event.map_or("no", TriggerEvent::as_str),
                self.event.as_str()
            ));
        }
        let same_repo = trigger
            .repository
            .as_deref()
            .is_some_and(|r| r.eq_ignore_ascii_case(&self.repository));
        if !same_repo {
            return Err(format!(
                "is for repository {}, not {}",
                trigger.repository.as_deref().unwrap_or("-"),
                self.repository
            ));
        }
        let name = self.git_ref.short();
        if let Some(pattern) = &trigger.branch {
            let is_branch = matches!(self.git_ref, GitRef::Branch(_) | GitRef::Unknown(_));
            if !is_branch || !glob_matches(pattern, name) {
                return Err(format!(
                    "wants a branch matching {pattern:?}, got {}",
                    self.git_ref.describe()
                ));
            }
        }
        if let Some(pattern) = &trigger.tag {
            let is_tag = matches!(self.git_ref, GitRef::Tag(_) | GitRef::Unknown(_));
            if !is_tag || !glob_matches(pattern, name) {
                return Err(format!(
                    "wants a tag matching {pattern:?}, got {}",
                    self.git_ref.describe()
                ));
            }
        }
        if let Some(workflow) = &trigger.workflow
            && self.workflow.as_deref() != Some(workflow.as_str())
        {
            return Err(format!(
                "wants workflow {workflow:?}, got {:?}",
                self.workflow.as_deref().unwrap_or("")
            ));
        }
        if let Some(wanted) = &trigger.deployment_environment {
            let got = self
                .github_deployment
                .as_ref()
                .map(|g| g.environment.as_str());
            if got != Some(wanted.as_str()) {
                return Err(format!(
                    "wants GitHub deployments to {wanted:?}, got {:?}",
                    got.unwrap_or("")
                ));
            }
        }
        let template = trigger
            .image
            .as_deref()
            .map(Template::parse)
            .transpose()?
            .ok_or_else(|| "has no image template".to_owned())?;
        let image = template
            .render(&|v| self.value(v))
            .ok_or_else(|| "its image template uses a variable this delivery lacks".to_owned())?;
        let version = self
            .value(Variable::Version)
            .map(|v| v.chars().take(MAX_VERSION_LEN).collect::<String>())
            .filter(|v| !v.is_empty());
        let kind = self.source.source_kind();
        let request = DeploymentRequest {
            image,
            version,
            strategy: None,
            reason: Some(format!(
                "{} {} of {} ({})",
                self.source.as_str(),
                self.event.as_str(),
                self.repository,
                self.git_ref.describe()
            )),
            source: Source {
                kind,
                commit: self.sha.clone(),
                repository: Some(self.repository.clone()),
                user: self.user.clone(),
                url: self.url.clone(),
            },
        };
        Ok(Matched {
            environment: trigger.environment.clone(),
            request,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_matches("main", "main"));
        assert!(!glob_matches("main", "mainline"));
        assert!(glob_matches("release/*", "release/1.2"));
        assert!(!glob_matches("release/*", "release/1/2"));
        assert!(glob_matches("release/**", "release/1/2"));
        assert!(glob_matches("**", "feature/x/y"));
        assert!(glob_matches("v?.*", "v1.4"));
        assert!(!glob_matches("v?", "v12"));
        assert!(glob_matches("v*", "v1.4.2"));
        assert!(!glob_matches("v*", "1.4.2"));
    }

    /// The matcher before it was made linear (it backtracks, exponentially on patterns like
    /// `*a*a*a*b`): the oracle the linear one must agree with.
    fn backtracking_glob(pattern: &str, text: &str) -> bool {
        fn go(p: &[char], t: &[char]) -> bool {
            match p.first() {
                None => t.is_empty(),
                Some('*') if p.get(1) == Some(&'*') => (0..=t.len()).any(|i| go(&p[2..], &t[i..])),
                Some('*') => {
                    for i in 0..=t.len() {
                        if go(&p[1..], &t[i..]) {
                            return true;
                        }
                        if t.get(i) == Some(&'/') {
                            return false;
                        }
                    }
                    false
                }
                Some('?') => t.first().is_some_and(|c| *c != '/') && go(&p[1..], &t[1..]),
                Some(c) => t.first() == Some(c) && go(&p[1..], &t[1..]),
            }
        }
        let p: Vec<char> = pattern.chars().collect();
        let t: Vec<char> = text.chars().collect();
        go(&p, &t)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        /// Small patterns and refs over an alphabet that makes wildcards, `/` and literals
        /// collide often: the linear matcher answers what the backtracking one did.
        #[test]
        fn the_linear_matcher_agrees_with_the_backtracking_one(
            pattern in "[ab/*?]{0,10}",
            text in "[ab/]{0,12}",
        ) {
            proptest::prop_assert_eq!(
                glob_matches(&pattern, &text),
                backtracking_glob(&pattern, &text),
                "pattern {:?} text {:?}", pattern, text
            );
        }
    }

    #[test]
    fn the_reported_pathological_pattern_is_answered_at_once() {
        // The pattern of the report (accepted by trigger validation), and the longest one
        // validation accepts, against a 120-character ref and a far longer one: the
        // backtracking matcher ran for over 18 minutes on the first. Run on a thread so a
        // regression fails by the (generous) deadline instead of hanging the suite.
        let reported = "*a*a*a*a*a*a*a*a*b".to_owned();
        let longest = format!("{}b", "*a".repeat(127));
        assert!(longest.len() <= crate::trigger::MAX_PATTERN_LEN);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for pattern in [&reported, &longest] {
                let wanted = pattern.matches('a').count();
                for len in [120, 4096] {
                    let text = "a".repeat(len);
                    let _ = tx.send((glob_matches(pattern, &text), false));
                    let ending = format!("{text}b");
                    let _ = tx.send((glob_matches(pattern, &ending), len >= wanted));
                }
            }
        });
        for _ in 0..8 {
            let (got, wanted) = rx
                .recv_timeout(std::time::Duration::from_secs(20))
                .expect("answered within 20 s");
            assert_eq!(got, wanted);
        }
    }

    #[test]
    fn templates() {
        let t = Template::parse("ghcr.io/acme/web:${short_sha}-${ref}").ok();
        let rendered = t.and_then(|t| {
            t.render(&|v| match v {
                Variable::ShortSha => Some("abc1234".into()),
                Variable::Ref => Some("main".into()),
                _ => None,
            })
        });
        assert_eq!(rendered.as_deref(), Some("ghcr.io/acme/web:abc1234-main"));
        assert!(Template::parse("x:${nope}").is_err());
        assert!(Template::parse("x:${sha").is_err());
    }

    #[test]
    fn version_of_a_tag_drops_the_v_and_branches_are_tag_safe() {
        let facts = DeliveryFacts {
            source: TriggerSource::Github,
            event: TriggerEvent::Push,
            repository: "acme/web".into(),
            git_ref: GitRef::Tag("v1.4.2".into()),
            sha: Some("3f2a9c1d0b8e7f6a5c4d3e2f1a0b9c8d7e6f5a4b".into()),
            workflow: None,
            user: None,
            url: None,
            github_deployment: None,
            committed_at: None,
        };
        assert_eq!(facts.value(Variable::Version).as_deref(), Some("1.4.2"));
        let branch = DeliveryFacts {
            git_ref: GitRef::Branch("feature/x".into()),
            ..facts
        };
        assert_eq!(branch.value(Variable::Branch).as_deref(), Some("feature-x"));
        assert_eq!(branch.value(Variable::Version).as_deref(), Some("3f2a9c1"));
        assert_eq!(branch.value(Variable::Tag), None);
    }

    #[test]
    fn an_older_commit_than_the_serving_one_is_refused_unless_allowed() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).ok().map(|t| t.to_utc());
        let serving = at("2026-12-08T12:00:00+01:00");
        let older = at("2026-12-08T10:59:59Z");
        let same = at("2026-12-08T11:00:00Z");
        let reason = older_than_serving(false, older, serving).unwrap_or_default();
        assert!(reason.contains("older"), "{reason}");
        assert!(reason.contains("2026-12-08T10:59:59Z"), "{reason}");
        assert_eq!(older_than_serving(true, older, serving), None);
        assert_eq!(older_than_serving(false, same, serving), None);
        assert_eq!(older_than_serving(false, None, serving), None);
        assert_eq!(older_than_serving(false, older, None), None);
    }
}
