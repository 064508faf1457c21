//! One managed workload as a Kubernetes Deployment behaves: a spec with a generation, pods
//! counted per pod template, and a controller that replaces old pods with new ones within the
//! surge and unavailability budget.
//!
//! Nothing runs in the background: [`WorkloadSim::advance`] replays, in order, every instant at
//! which something changed (a pod became ready, a pod finished terminating, the controller saw
//! the spec) between the last look and now.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use slipway_core::rollout::{Release, WorkloadStatus};

use super::SimSettings;
use super::clock::after;

/// Most controller passes in one instant (a safety net; a rollout needs about
/// `replicas / (max_surge + max_unavailable)`).
const MAX_PASSES_PER_INSTANT: usize = 10_000;

/// What a workload was last applied with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadSpec {
    pub release: Release,
    pub replicas: u32,
    pub max_surge: u32,
    pub max_unavailable: u32,
}

/// What the controller needs to know besides the workload itself.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Env<'a> {
    pub settings: &'a SimSettings,
    /// Releases whose pods never become ready (a fault).
    pub never_ready: &'a [Release],
}

/// Pods that share an instant: they become ready (or finish terminating) at `at`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Batch {
    at: DateTime<Utc>,
    count: u32,
}

/// The pods of one pod template (a ReplicaSet), ordered by when they become ready.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Template {
    release: Release,
    batches: Vec<Batch>,
}

impl Template {
    fn pods(&self) -> u32 {
        self.batches.iter().map(|b| b.count).sum()
    }

    fn ready(&self, t: DateTime<Utc>, env: Env<'_>) -> u32 {
        if env.never_ready.contains(&self.release) {
            return 0;
        }
        self.batches
            .iter()
            .filter(|b| b.at <= t)
            .map(|b| b.count)
            .sum()
    }

    fn add(&mut self, count: u32, ready_at: DateTime<Utc>) {
        if count == 0 {
            return;
        }
        let i = self.batches.partition_point(|b| b.at <= ready_at);
        match i.checked_sub(1).and_then(|j| self.batches.get_mut(j)) {
            Some(last) if last.at == ready_at => last.count += count,
            _ => self.batches.insert(
                i,
                Batch {
                    at: ready_at,
                    count,
                },
            ),
        }
    }

    /// Removes up to `count` pods, the least ready first; returns how many.
    fn remove(&mut self, count: u32) -> u32 {
        let mut left = count;
        while left > 0 {
            let Some(last) = self.batches.last_mut() else {
                break;
            };
            let n = last.count.min(left);
            last.count -= n;
            left -= n;
            if last.count == 0 {
                self.batches.pop();
            }
        }
        count - left
    }
}

/// A managed workload and its pods.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WorkloadSim {
    spec: WorkloadSpec,
    generation: i64,
    /// `observed_generation` until `observed_at`, when it catches up with `generation`.
    observed_before: i64,
    observed_at: DateTime<Utc>,
    /// The current template must be complete by then.
    deadline_at: DateTime<Utc>,
    /// The current spec has been complete at some point since it was applied.
    completed: bool,
    /// Oldest first; the one whose release is the spec's is the current template.
    templates: Vec<Template>,
    /// Pods removed but not yet gone, by when they are gone.
    terminating: Vec<Batch>,
    /// The instant the workload has been simulated up to.
    at: DateTime<Utc>,
}

impl WorkloadSim {
    pub(super) fn new(spec: WorkloadSpec, now: DateTime<Utc>, env: Env<'_>) -> Self {
        let mut sim = Self {
            spec,
            generation: 1,
            observed_before: 0,
            observed_at: after(now, env.settings.observe_delay),
            deadline_at: after(now, env.settings.progress_deadline),
            completed: false,
            templates: Vec::new(),
            terminating: Vec::new(),
            at: now,
        };
        sim.settle(now, env);
        sim
    }

    pub(super) fn spec(&self) -> &WorkloadSpec {
        &self.spec
    }

    /// Applies `spec`; returns whether anything changed (the same spec again changes nothing).
    pub(super) fn set_spec(
        &mut self,
        spec: WorkloadSpec,
        now: DateTime<Utc>,
        env: Env<'_>,
    ) -> bool {
        self.advance(now, env);
        if spec == self.spec {
            return false;
        }
        let t = self.at;
        self.observed_before = self.observed_generation(t);
        self.generation += 1;
        self.observed_at = after(t, env.settings.observe_delay);
        self.deadline_at = after(t, env.settings.progress_deadline);
        self.completed = false;
        self.spec = spec;
        self.settle(t, env);
        true
    }

    /// Brings the workload up to `now` (never backwards).
    pub(super) fn advance(&mut self, now: DateTime<Utc>, env: Env<'_>) {
        let mut t = self.at;
        loop {
            self.settle(t, env);
            match self.next_event(t, env) {
                Some(next) if next <= now => t = next,
                _ => break,
            }
        }
        self.at = self.at.max(now);
    }

    /// What `observe` reports, as of the instant simulated up to.
    pub(super) fn status(&self, env: Env<'_>) -> WorkloadStatus {
        let t = self.at;
        let (updated, old) = self.split_pods();
        let ready = self.templates.iter().map(|tpl| tpl.ready(t, env)).sum();
        WorkloadStatus {
            release: Some(self.spec.release.clone()),
            desired: self.spec.replicas,
            generation: self.generation,
            observed_generation: self.observed_generation(t),
            updated,
            ready,
            available: ready,
            old: old + self.terminating_pods(),
            progress_deadline_exceeded: !self.completed && t >= self.deadline_at,
        }
    }

    /// Pods per template (oldest first) as `(release, pods, ready)`, and pods terminating.
    pub(super) fn pods(&self, env: Env<'_>) -> (Vec<(Release, u32, u32)>, u32) {
        let templates = self
            .templates
            .iter()
            .map(|tpl| (tpl.release.clone(), tpl.pods(), tpl.ready(self.at, env)))
            .collect();
        (templates, self.terminating_pods())
    }

    fn observed_generation(&self, t: DateTime<Utc>) -> i64 {
        if t >= self.observed_at {
            self.generation
        } else {
            self.observed_before
        }
    }

    /// Pods of the current template, and of older ones (not counting terminating pods).
    fn split_pods(&self) -> (u32, u32) {
        self.templates.iter().fold((0, 0), |(cur, old), tpl| {
            if tpl.release == self.spec.release {
                (cur + tpl.pods(), old)
            } else {
                (cur, old + tpl.pods())
            }
        })
    }

    fn terminating_pods(&self) -> u32 {
        self.terminating.iter().map(|b| b.count).sum()
    }

    /// Everything that happens at instant `t`: terminations end, the controller acts until it
    /// has nothing left to do, and completion is noted.
    fn settle(&mut self, t: DateTime<Utc>, env: Env<'_>) {
        self.terminating.retain(|b| b.at > t);
        if t >= self.observed_at {
            for _ in 0..MAX_PASSES_PER_INSTANT {
                if !self.reconcile(t, env) {
                    break;
                }
            }
        }
        if !self.completed && self.is_complete_at(t, env) {
            self.completed = true;
        }
    }

    fn is_complete_at(&self, t: DateTime<Utc>, env: Env<'_>) -> bool {
        let replicas = self.spec.replicas;
        let (updated, old) = self.split_pods();
        let ready: u32 = self.templates.iter().map(|tpl| tpl.ready(t, env)).sum();
        t >= self.observed_at
            && updated == replicas
            && ready == replicas
            && old == 0
            && self.terminating.is_empty()
    }

    /// The earliest instant after `t` at which something changes by itself.
    fn next_event(&self, t: DateTime<Utc>, env: Env<'_>) -> Option<DateTime<Utc>> {
        let readiness = self
            .templates
            .iter()
            .filter(|tpl| !env.never_ready.contains(&tpl.release))
            .flat_map(|tpl| tpl.batches.iter());
        readiness
            .chain(self.terminating.iter())
            .map(|b| b.at)
            .chain(std::iter::once(self.observed_at))
            .filter(|at| *at > t)
            .min()
    }

    /// One pass of the Deployment controller's rolling update at `t`; returns whether it
    /// changed anything.
    fn reconcile(&mut self, t: DateTime<Utc>, env: Env<'_>) -> bool {
        let WorkloadSpec {
            release,
            replicas,
            max_surge,
            max_unavailable,
        } = self.spec.clone();
        // Kubernetes refuses a budget of 0 and 0 by allowing one unavailable pod.
        let max_unavailable = if max_surge == 0 && max_unavailable == 0 {
            1
        } else {
            max_unavailable
        };
        self.templates
            .retain(|tpl| tpl.release == release || tpl.pods() > 0);
        let current = match self.templates.iter().position(|tpl| tpl.release == release) {
            Some(i) => i,
            None => {
                self.templates.push(Template {
                    release,
                    batches: Vec::new(),
                });
                self.templates.len() - 1
            }
        };
        let mut changed = false;

        // Scale the current template up within the surge budget (terminating pods count, so
        // the total never exceeds replicas + max_surge), or down to the desired count.
        let all: u32 = self.templates.iter().map(Template::pods).sum();
        let present = all + self.terminating_pods();
        let cur_pods = self.templates[current].pods();
        let max_total = replicas.saturating_add(max_surge);
        if cur_pods > replicas {
            let removed = self.templates[current].remove(cur_pods - replicas);
            self.terminate(removed, t, env.settings.terminate_after);
            changed = true;
        } else if present < max_total && cur_pods < replicas {
            let n = (max_total - present).min(replicas - cur_pods);
            let ready_at = after(t, env.settings.ready_after);
            self.templates[current].add(n, ready_at);
            changed = true;
        }

        // Scale old templates down, never taking availability below replicas - max_unavailable.
        let min_available = replicas.saturating_sub(max_unavailable);
        let all: u32 = self.templates.iter().map(Template::pods).sum();
        let cur = &self.templates[current];
        let new_unavailable = cur.pods() - cur.ready(t, env);
        let max_scaled_down = all.saturating_sub(min_available + new_unavailable);
        if max_scaled_down == 0 {
            return changed;
        }
        let mut budget = max_scaled_down;
        let mut removed = 0;
        // First the old pods that are not ready anyway.
        for (i, tpl) in self.templates.iter_mut().enumerate() {
            if i == current || budget == 0 {
                continue;
            }
            let unhealthy = tpl.pods() - tpl.ready(t, env);
            let n = tpl.remove(unhealthy.min(budget));
            budget -= n;
            removed += n;
        }
        // Then ready ones, as far as the ready count allows.
        let available: u32 = self.templates.iter().map(|tpl| tpl.ready(t, env)).sum();
        let mut excess = available.saturating_sub(min_available);
        for (i, tpl) in self.templates.iter_mut().enumerate() {
            if i == current || excess == 0 {
                continue;
            }
            let n = tpl.remove(tpl.pods().min(excess));
            excess -= n;
            removed += n;
        }
        if removed > 0 {
            self.terminate(removed, t, env.settings.terminate_after);
            changed = true;
        }
        changed
    }

    fn terminate(&mut self, count: u32, t: DateTime<Utc>, terminate_after: Duration) {
        if count == 0 || terminate_after.is_zero() {
            return;
        }
        let gone_at = after(t, terminate_after);
        match self.terminating.iter_mut().find(|b| b.at == gone_at) {
            Some(b) => b.count += count,
            None => self.terminating.push(Batch { at: gone_at, count }),
        }
    }
}
