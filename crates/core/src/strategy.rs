//! Strategy specifications: what a deployment does, step by step, frozen at creation.

use serde::{Deserialize, Serialize};

use crate::duration::DurationSpec;
use crate::environment::Workload;
use crate::names::dns_subdomain;
use crate::tagged;
use crate::validation::{Violations, pointer};

/// Most canary steps one strategy may have.
pub const MAX_CANARY_STEPS: usize = 64;
/// Longest timed pause of a canary step.
pub const MAX_PAUSE: DurationSpec = DurationSpec::from_secs(7 * 86_400);
/// Longest `scale_down_delay` / `auto_promote_after` of a blue-green strategy.
pub const MAX_BLUE_GREEN_DELAY: DurationSpec = DurationSpec::from_secs(86_400);

/// How a deployment moves an environment to the new version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StrategySpec {
    /// Replace pods in place, `max_surge` above and `max_unavailable` below the desired count.
    Rolling(RollingSpec),
    /// Deploy the new color beside the live one, expose it on a preview Service, then switch.
    BlueGreen(BlueGreenSpec),
    /// Shift traffic to the new version in ordered steps.
    Canary(CanarySpec),
}

impl Default for StrategySpec {
    fn default() -> Self {
        Self::Rolling(RollingSpec::default())
    }
}

/// A rolling update's surge and unavailability budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RollingSpec {
    #[serde(default = "RollingSpec::default_max_surge")]
    pub max_surge: IntOrPercent,
    #[serde(default)]
    pub max_unavailable: IntOrPercent,
}

impl RollingSpec {
    fn default_max_surge() -> IntOrPercent {
        IntOrPercent::Percent(25)
    }
}

impl Default for RollingSpec {
    fn default() -> Self {
        Self {
            max_surge: Self::default_max_surge(),
            max_unavailable: IntOrPercent::Count(0),
        }
    }
}

/// Blue-green promotion policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BlueGreenSpec {
    /// Switch the active Service without a human once the new color is available.
    #[serde(default = "default_true")]
    pub auto_promote: bool,
    /// Wait this long after the new color is available before switching automatically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_promote_after: Option<DurationSpec>,
    /// Keep the old color running this long after the switch, for a fast switch back.
    #[serde(default = "BlueGreenSpec::default_scale_down_delay")]
    pub scale_down_delay: DurationSpec,
    /// Replicas of the new color while it is only on preview (default: the workload's replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_replicas: Option<u32>,
}

fn default_true() -> bool {
    true
}

impl BlueGreenSpec {
    fn default_scale_down_delay() -> DurationSpec {
        DurationSpec::from_secs(30)
    }
}

/// A canary's ordered steps and how its traffic weight is carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CanarySpec {
    pub steps: Vec<CanaryStep>,
    #[serde(default)]
    pub traffic: TrafficRouting,
}

/// One canary step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CanaryStep {
    /// Send this percentage (1–100) of traffic to the canary.
    SetWeight(u32),
    /// Wait for `duration`, or until a human promotes when no duration is given.
    Pause(PauseStep),
    /// Run an analysis template; failure aborts and rolls back.
    Analysis(AnalysisStep),
    /// Scale the canary independently of its traffic weight.
    SetCanaryScale(CanaryScale),
}

/// A pause: timed, or until promoted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PauseStep {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<DurationSpec>,
}

/// An analysis gate, by template name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AnalysisStep {
    pub template: String,
}

/// The canary's size: exactly one of the three fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CanaryScale {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_traffic_weight: Option<bool>,
}

/// What carries a canary's traffic weight.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "router", rename_all = "snake_case")]
pub enum TrafficRouting {
    /// The ratio of canary to stable replicas behind one Service.
    #[default]
    Replicas,
    /// Backend weights of a Gateway API HTTPRoute.
    GatewayApi(GatewayApiRoute),
    /// NGINX ingress canary annotations on a copy of an Ingress.
    Nginx(NginxIngress),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct GatewayApiRoute {
    pub http_route: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NginxIngress {
    pub ingress: String,
}

/// A replica count or a percentage of the desired replicas (`3` or `"25%"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntOrPercent {
    Count(u32),
    Percent(u32),
}

impl Default for IntOrPercent {
    fn default() -> Self {
        Self::Count(0)
    }
}

impl IntOrPercent {
    fn is_zero(self) -> bool {
        matches!(self, Self::Count(0) | Self::Percent(0))
    }
}

impl Serialize for IntOrPercent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Count(n) => s.serialize_u32(*n),
            Self::Percent(p) => s.collect_str(&format_args!("{p}%")),
        }
    }
}

impl<'de> Deserialize<'de> for IntOrPercent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(u32),
            Text(String),
        }
        let invalid = || {
            serde::de::Error::custom(
                "expected a non-negative integer or a percentage such as \"25%\"",
            )
        };
        match Raw::deserialize(d).map_err(|_: D::Error| invalid())? {
            Raw::Count(n) => Ok(Self::Count(n)),
            Raw::Text(t) => {
                let digits = t.strip_suffix('%').ok_or_else(invalid)?;
                if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
                    return Err(invalid());
                }
                digits.parse().map(Self::Percent).map_err(|_| invalid())
            }
        }
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for IntOrPercent {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0)),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^[0-9]+%$")),
            )
            .description(Some(
                "A replica count or a percentage of the desired replicas.",
            ))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for IntOrPercent {}

impl<'de> Deserialize<'de> for StrategySpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (name, body) = tagged::split(serde_json::Value::deserialize(d)?, "type")?;
        match name.as_str() {
            "rolling" => tagged::variant(body).map(Self::Rolling),
            "blue_green" => tagged::variant(body).map(Self::BlueGreen),
            "canary" => tagged::variant(body).map(Self::Canary),
            other => Err(tagged::unknown(
                "type",
                other,
                &["rolling", "blue_green", "canary"],
            )),
        }
    }
}

impl<'de> Deserialize<'de> for TrafficRouting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (name, body) = tagged::split(serde_json::Value::deserialize(d)?, "router")?;
        match name.as_str() {
            "replicas" => match body.keys().next() {
                None => Ok(Self::Replicas),
                Some(extra) => Err(serde::de::Error::custom(tagged::nested_error(
                    &pointer("", extra),
                    "unknown field: the replicas router takes no settings",
                ))),
            },
            "gateway_api" => tagged::variant(body).map(Self::GatewayApi),
            "nginx" => tagged::variant(body).map(Self::Nginx),
            other => Err(tagged::unknown(
                "router",
                other,
                &["replicas", "gateway_api", "nginx"],
            )),
        }
    }
}

impl StrategySpec {
    /// The strategy's name as the API spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Rolling(_) => "rolling",
            Self::BlueGreen(_) => "blue_green",
            Self::Canary(_) => "canary",
        }
    }

    /// Records every rule this strategy breaks for `workload`, under the pointer `at`.
    pub fn validate(&self, v: &mut Violations, at: &str, workload: &Workload) {
        match self {
            Self::Rolling(r) => r.validate(v, at),
            Self::BlueGreen(b) => b.validate(v, at, workload),
            Self::Canary(c) => c.validate(v, at, workload),
        }
    }
}

impl RollingSpec {
    fn validate(&self, v: &mut Violations, at: &str) {
        check_budget(v, &pointer(at, "max_surge"), self.max_surge);
        check_budget(v, &pointer(at, "max_unavailable"), self.max_unavailable);
        if self.max_surge.is_zero() && self.max_unavailable.is_zero() {
            v.add(
                pointer(at, "max_unavailable"),
                "max_surge and max_unavailable must not both be 0: the rollout could never progress",
            );
        }
    }
}

fn check_budget(v: &mut Violations, at: &str, value: IntOrPercent) {
    match value {
        IntOrPercent::Percent(p) if p > 100 => {
            v.add(at, "a percentage must be between 0% and 100%")
        }
        IntOrPercent::Count(n) if n > crate::environment::MAX_REPLICAS => v.add(
            at,
            format!("must be at most {}", crate::environment::MAX_REPLICAS),
        ),
        _ => {}
    }
}

impl BlueGreenSpec {
    fn validate(&self, v: &mut Violations, at: &str, workload: &Workload) {
        if self.scale_down_delay > MAX_BLUE_GREEN_DELAY {
            v.add(
                pointer(at, "scale_down_delay"),
                format!("must be at most {MAX_BLUE_GREEN_DELAY}"),
            );
        }
        if let Some(after) = self.auto_promote_after
            && after > MAX_BLUE_GREEN_DELAY
        {
            v.add(
                pointer(at, "auto_promote_after"),
                format!("must be at most {MAX_BLUE_GREEN_DELAY}"),
            );
        }
        if let Some(n) = self.preview_replicas
            && (n == 0 || n > workload.replicas)
        {
            v.add(
                pointer(at, "preview_replicas"),
                format!(
                    "must be between 1 and the workload's replicas ({})",
                    workload.replicas
                ),
            );
        }
    }
}

impl CanarySpec {
    fn validate(&self, v: &mut Violations, at: &str, workload: &Workload) {
        let steps_at = pointer(at, "steps");
        if self.steps.is_empty() {
            v.add(&steps_at, "a canary needs at least one step");
        }
        if self.steps.len() > MAX_CANARY_STEPS {
            v.add(&steps_at, format!("at most {MAX_CANARY_STEPS} steps"));
        }
        let mut last_weight: Option<u32> = None;
        for (i, step) in self.steps.iter().enumerate() {
            let step_at = pointer(&steps_at, i);
            match step {
                CanaryStep::SetWeight(w) => {
                    let at = pointer(&step_at, "set_weight");
                    if !(1..=100).contains(w) {
                        v.add(at, "weight must be between 1 and 100");
                    } else if let Some(prev) = last_weight.filter(|prev| w < prev) {
                        v.add(at, format!("weights must not decrease: {w} follows {prev}"));
                    }
                    last_weight = Some(*w);
                }
                CanaryStep::Pause(p) => {
                    if let Some(d) = p.duration {
                        let at = pointer(&pointer(&step_at, "pause"), "duration");
                        if d.as_secs() == 0 || d > MAX_PAUSE {
                            v.add(at, format!("must be between 1s and {MAX_PAUSE}"));
                        }
                    }
                }
                CanaryStep::Analysis(_) => v.add(
                    pointer(&step_at, "analysis"),
                    "analysis steps need an analysis provider, and this server has none configured",
                ),
                CanaryStep::SetCanaryScale(s) => {
                    s.validate(v, &pointer(&step_at, "set_canary_scale"), workload);
                }
            }
        }
        match &self.traffic {
            TrafficRouting::Replicas => {}
            TrafficRouting::GatewayApi(r) => {
                if let Err(e) = dns_subdomain(&r.http_route) {
                    v.add(pointer(&pointer(at, "traffic"), "http_route"), e);
                }
            }
            TrafficRouting::Nginx(n) => {
                if let Err(e) = dns_subdomain(&n.ingress) {
                    v.add(pointer(&pointer(at, "traffic"), "ingress"), e);
                }
            }
        }
    }
}

impl CanaryScale {
    fn validate(&self, v: &mut Violations, at: &str, workload: &Workload) {
        let set = [
            self.replicas.is_some(),
            self.weight.is_some(),
            self.match_traffic_weight.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if set != 1 {
            v.add(
                at,
                "set exactly one of replicas, weight or match_traffic_weight",
            );
        }
        if let Some(n) = self.replicas
            && n > workload.replicas
        {
            v.add(
                pointer(at, "replicas"),
                format!(
                    "must be at most the workload's replicas ({})",
                    workload.replicas
                ),
            );
        }
        if let Some(w) = self.weight
            && w > 100
        {
            v.add(pointer(at, "weight"), "must be between 0 and 100");
        }
        if self.match_traffic_weight == Some(false) {
            v.add(
                pointer(at, "match_traffic_weight"),
                "only `true` is meaningful; omit the step to keep the current scale",
            );
        }
    }
}
