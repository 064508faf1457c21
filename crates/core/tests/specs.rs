//! Parsing and validation of the documents users send: environments, strategies, deployments.

use serde_json::{Value, json};
use slipway_core::{
    Channel, DeploymentRequest, EnvironmentSpec, PlanError, SourceKind, StrategySpec,
    ValidationError,
};

fn env(strategy: Value) -> Result<EnvironmentSpec, String> {
    serde_json::from_value(json!({
        "cluster": "prod-eu", "namespace": "web",
        "workload": {"name": "web", "container": "web", "replicas": 4, "port": 8080},
        "strategy": strategy,
    }))
    .map_err(|e| e.to_string())
}

fn pointers(e: &ValidationError) -> Vec<&str> {
    e.errors.iter().map(|f| f.pointer.as_str()).collect()
}

fn invalid(spec: &EnvironmentSpec) -> Vec<String> {
    match spec.validate() {
        Ok(()) => vec![],
        Err(e) => pointers(&e).into_iter().map(str::to_owned).collect(),
    }
}

#[test]
fn design_examples_parse_and_validate() {
    let canary = env(json!({"type": "canary",
        "steps": [{"set_weight": 10}, {"pause": {"duration": "5m"}}, {"set_weight": 50}, {"pause": {}}],
        "traffic": {"router": "replicas"}}))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(invalid(&canary), Vec::<String>::new());
    assert_eq!(canary.progress_deadline.to_string(), "10m");

    let rolling = env(json!({"type": "rolling", "max_surge": "25%", "max_unavailable": 0}))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(invalid(&rolling).is_empty());

    let bg = env(
        json!({"type": "blue_green", "auto_promote": false, "auto_promote_after": "2m",
        "scale_down_delay": "30s", "preview_replicas": 2}),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(invalid(&bg).is_empty());

    for traffic in [
        json!({"router": "gateway_api", "http_route": "web"}),
        json!({"router": "nginx", "ingress": "web"}),
    ] {
        let spec =
            env(json!({"type": "canary", "steps": [{"set_weight": 20}], "traffic": traffic}))
                .unwrap_or_else(|e| panic!("{e}"));
        assert!(invalid(&spec).is_empty());
    }
}

#[test]
fn strategy_round_trips_through_json() {
    let raw = json!({"type": "canary",
        "steps": [{"set_weight": 10}, {"pause": {"duration": "1h30m"}}, {"set_canary_scale": {"replicas": 2}}, {"pause": {}}],
        "traffic": {"router": "gateway_api", "http_route": "web"}});
    let spec: StrategySpec = serde_json::from_value(raw.clone()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(serde_json::to_value(&spec).ok(), Some(raw));
}

#[test]
fn unknown_fields_are_rejected_at_every_level() {
    assert!(env(json!({"type": "rolling", "max_surge": 1, "surge": 2})).is_err());
    assert!(env(json!({"type": "canary", "steps": [{"set_weight": 10, "extra": 1}]})).is_err());
    assert!(
        env(json!({"type": "canary", "steps": [{"pause": {"duration": "1m", "until": "x"}}]}))
            .is_err()
    );
    assert!(env(json!({"type": "canary", "steps": [], "traffic": {"router": "nginx", "ingress": "a", "x": 1}})).is_err());
    assert!(env(json!({"type": "bogus"})).is_err());
    assert!(env(json!({"type": "rolling", "max_surge": "25"})).is_err());
    assert!(
        env(json!({"type": "canary", "steps": [{"pause": {"duration": "5 minutes"}}]})).is_err()
    );
}

#[test]
fn canary_rules_name_the_step() {
    let spec = env(json!({"type": "canary", "steps": [
        {"set_weight": 50}, {"set_weight": 20}, {"set_weight": 0}, {"set_weight": 101},
        {"pause": {"duration": "8d"}}, {"pause": {"duration": "0s"}},
        {"set_canary_scale": {}}, {"set_canary_scale": {"replicas": 9}},
        {"analysis": {"template": "success-rate"}}
    ]}))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        invalid(&spec),
        vec![
            "/strategy/steps/1/set_weight",
            "/strategy/steps/2/set_weight",
            "/strategy/steps/3/set_weight",
            "/strategy/steps/4/pause/duration",
            "/strategy/steps/5/pause/duration",
            "/strategy/steps/6/set_canary_scale",
            "/strategy/steps/7/set_canary_scale/replicas",
            "/strategy/steps/8/analysis",
        ]
    );
    let empty = env(json!({"type": "canary", "steps": []})).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(invalid(&empty), vec!["/strategy/steps"]);
    let route = env(json!({"type": "canary", "steps": [{"set_weight": 5}], "traffic": {"router": "gateway_api", "http_route": "Bad_Name"}}))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(invalid(&route), vec!["/strategy/traffic/http_route"]);
}

#[test]
fn environment_rules() {
    let mut spec = env(json!({"type": "rolling", "max_surge": 0, "max_unavailable": "0%"}))
        .unwrap_or_else(|e| panic!("{e}"));
    spec.cluster = "Prod".into();
    spec.namespace = String::new();
    spec.workload.replicas = 0;
    spec.workload.port = 0;
    spec.progress_deadline = "5s".parse().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        invalid(&spec),
        vec![
            "/cluster",
            "/namespace",
            "/workload/replicas",
            "/workload/port",
            "/strategy/max_unavailable",
            "/progress_deadline"
        ]
    );
    let bg = env(json!({"type": "blue_green", "preview_replicas": 5, "scale_down_delay": "2d"}))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        invalid(&bg),
        vec!["/strategy/scale_down_delay", "/strategy/preview_replicas"]
    );
}

fn request(body: Value) -> DeploymentRequest {
    serde_json::from_value(body).unwrap_or_else(|e| panic!("{e}"))
}

/// Invalid fields of a request that must not be planned for that reason.
fn invalid_request(e: PlanError) -> ValidationError {
    match e {
        PlanError::Invalid(v) => v,
        other => panic!("expected invalid fields, got {other}"),
    }
}

#[test]
fn deployment_plan_freezes_strategy_and_derives_version() {
    let mut environment = env(json!({"type": "rolling"})).unwrap_or_else(|e| panic!("{e}"));
    let plan = request(json!({"image": "ghcr.io/acme/web:1.4.2"}))
        .plan(&environment, Channel::Api)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.version, "1.4.2");
    assert_eq!(plan.strategy, environment.strategy);
    assert!(!plan.strategy_overridden);

    environment.allow_strategy_override = true;
    let plan = request(json!({"image": "ghcr.io/acme/web:1.4.2", "version": "v2",
        "strategy": {"type": "canary", "steps": [{"set_weight": 10}]},
        "source": {"kind": "cli", "commit": "3f2a9c1", "repository": "acme/web", "user": "alice"}}))
    .plan(&environment, Channel::Api)
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.version, "v2");
    assert_eq!(plan.strategy.kind(), "canary");
    assert!(plan.strategy_overridden);
    assert_eq!(plan.source.kind, SourceKind::Cli);
}

/// A strategy of the request's own is refused (as not allowed, naming `/strategy`) unless
/// the environment allows overrides.
#[test]
fn a_strategy_override_needs_the_environments_consent() {
    let mut environment = env(json!({"type": "canary", "steps": [{"set_weight": 10}]}))
        .unwrap_or_else(|e| panic!("{e}"));
    let body = json!({"image": "ghcr.io/acme/web:6.6.6", "strategy": {"type": "rolling"}});
    match request(body.clone()).plan(&environment, Channel::Api) {
        Err(PlanError::NotAllowed(v)) => assert_eq!(pointers(&v), vec!["/strategy"]),
        other => panic!("expected NotAllowed, got {other:?}"),
    }
    environment.allow_strategy_override = true;
    let plan = request(body)
        .plan(&environment, Channel::Api)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.strategy.kind(), "rolling");
    assert!(plan.strategy_overridden);
}

/// Provenance is the route's: the API takes `api` and `cli` only, a delivery records its own
/// kind whatever the request says.
#[test]
fn the_channel_decides_the_source_kind() {
    let environment = env(json!({"type": "rolling"})).unwrap_or_else(|e| panic!("{e}"));
    for kind in ["github", "gitlab", "webhook", "slack"] {
        let err = request(json!({"image": "ghcr.io/acme/web:1.0.0",
            "source": {"kind": kind, "user": "someone-else"}}))
        .plan(&environment, Channel::Api)
        .err()
        .unwrap_or_else(|| panic!("{kind} accepted over the API"));
        assert_eq!(
            pointers(&invalid_request(err)),
            vec!["/source/kind"],
            "{kind}"
        );
    }
    for (kind, want) in [("api", SourceKind::Api), ("cli", SourceKind::Cli)] {
        let plan = request(json!({"image": "ghcr.io/acme/web:1.0.0", "source": {"kind": kind}}))
            .plan(&environment, Channel::Api)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(plan.source.kind, want);
    }
    let plan = request(json!({"image": "ghcr.io/acme/web:1.0.0", "source": {"kind": "api"}}))
        .plan(&environment, Channel::Delivery(SourceKind::Gitlab))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.source.kind, SourceKind::Gitlab);
}

#[test]
fn deployment_request_rules() {
    let mut environment = env(json!({"type": "rolling"})).unwrap_or_else(|e| panic!("{e}"));
    environment.allow_strategy_override = true;
    let err = request(json!({"image": "ghcr.io/acme/web", "version": "has space",
        "reason": "x".repeat(1001),
        "strategy": {"type": "canary", "steps": [{"set_weight": 200}]},
        "source": {"commit": "xyz", "repository": "", "url": "ftp://x"}}))
    .plan(&environment, Channel::Api)
    .err()
    .map(invalid_request)
    .unwrap_or_else(|| panic!("expected errors"));
    assert_eq!(
        pointers(&err),
        vec![
            "/image",
            "/version",
            "/reason",
            "/strategy/steps/0/set_weight",
            "/source/commit",
            "/source/repository",
            "/source/url"
        ]
    );
}

#[test]
fn errors_inside_tagged_values_keep_their_path() {
    let err = |strategy: Value| {
        serde_json::from_value::<StrategySpec>(strategy)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let nested =
        err(json!({"type": "canary", "steps": [{"set_weight": 5}, {"set_weight": "ten"}]}));
    assert!(nested.starts_with("@/steps/1/set_weight: "), "{nested}");
    let deeper =
        err(json!({"type": "canary", "steps": [], "traffic": {"router": "nginx", "ingres": "x"}}));
    assert!(deeper.starts_with("@/traffic/ingres: "), "{deeper}");
    let unknown = err(json!({"type": "linear"}));
    assert!(
        unknown.starts_with("@/type: unknown variant `linear`"),
        "{unknown}"
    );
    let replicas =
        err(json!({"type": "canary", "steps": [], "traffic": {"router": "replicas", "weight": 1}}));
    assert!(replicas.starts_with("@/traffic/weight: "), "{replicas}");
    assert_eq!(err(json!({"steps": []})), "missing field `type`");
}

#[test]
fn pod_labels_follow_kubernetes_syntax_and_leave_slipways_own_alone() {
    let spec = |labels: Value| -> EnvironmentSpec {
        serde_json::from_value(json!({
            "cluster": "prod-eu", "namespace": "web",
            "workload": {"name": "web", "container": "web", "replicas": 4, "port": 8080,
                         "pod_labels": labels},
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let ok = spec(json!({"team": "shop", "slipway.dev/test-never-ready": "true", "tier": ""}));
    assert!(invalid(&ok).is_empty());
    assert_eq!(ok.workload.pod_labels["team"], "shop");
    let bad = spec(json!({
        "slipway.dev/track": "canary",
        "app.kubernetes.io/name": "other",
        "team": "not ok",
        "Bad Key": "x",
    }));
    assert_eq!(
        invalid(&bad),
        [
            "/workload/pod_labels/Bad Key",
            "/workload/pod_labels/app.kubernetes.io~1name",
            "/workload/pod_labels/slipway.dev~1track",
            "/workload/pod_labels/team",
        ]
    );
    // Absent labels stay absent when the spec is written back.
    let plain = env(json!({"type": "rolling"})).unwrap_or_else(|e| panic!("{e}"));
    let written = serde_json::to_value(&plain).unwrap_or_else(|e| panic!("{e}"));
    assert!(written["workload"].get("pod_labels").is_none(), "{written}");
}
