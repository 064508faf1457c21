//! Slipway's domain: clusters, environments, deployments and their strategies, with the rules
//! that make a request valid. Pure: no I/O, no async, no database or HTTP types.

pub mod access;
mod app;
mod cluster;
pub mod deployment;
mod duration;
mod environment;
mod event;
mod image;
pub mod names;
mod resources;
pub mod rollout;
pub mod strategy;
pub mod tagged;
pub mod trigger;
pub mod trigger_match;
pub mod validation;

pub use access::{NewRoleBinding, Role, RoleBinding};
pub use app::{AppPatch, NewApp};
pub use cluster::{ClusterKind, ClusterNamespaces, ClusterSpec, NamespaceAllowlist};
pub use deployment::{
    Channel, DeploymentPlan, DeploymentRequest, DeploymentStatus, FailureReason, Outcome,
    PlanError, Serving, ServingHealth, Source, SourceKind,
};
pub use duration::DurationSpec;
pub use environment::{ApprovalPolicy, EnvironmentSpec, Workload};
pub use event::EventKind;
pub use image::ImageRef;
pub use resources::{
    App, Cluster, ClusterDetail, ClusterStatus, Deployment, DeploymentEvent, Environment,
};
pub use strategy::{CanaryStep, StrategySpec, TrafficRouting};
pub use trigger::{
    DeliveryAccepted, NewTrigger, Trigger, TriggerEvent, TriggerSource, TriggerSpec,
    TriggeredDeployment,
};
pub use validation::{FieldError, ValidationError, Violations};
