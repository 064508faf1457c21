//! The kube-apiserver of the test cluster stopped mid-rollout for 30 s: the deployment waits
//! with reason `cluster_unreachable` (not failed, nothing lost) and completes when the API
//! server is back. Its own test binary, because it takes the shared cluster's API server away:
//! cargo runs test binaries one after another, so no other cluster test runs meanwhile.
//!
//! ```sh
//! SLIPWAY_TEST_KUBECONFIG=$KUBECONFIG cargo test -p slipway-engine --test kube_outage
//! ```
//!
//! The API server is stopped and started with `scripts/cluster/apiserver` (the command line
//! `scripts/cluster/start` launched it with); a guard starts it again however the test ends.

#![expect(
    clippy::expect_used,
    reason = "tests fail with a message, like the helpers they call"
)]

#[path = "kube_e2e/harness.rs"]
mod harness;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use harness::*;
use serde_json::json;
use slipway_store::PgPool;

/// How long the API server stays down.
const OUTAGE: Duration = Duration::from_secs(30);

fn apiserver_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/cluster/apiserver")
}

fn apiserver(action: &str) {
    let status = Command::new(apiserver_script())
        .arg(action)
        .status()
        .expect("run scripts/cluster/apiserver");
    assert!(
        status.success(),
        "scripts/cluster/apiserver {action}: {status}"
    );
}

/// Stops the API server; starts it again when dropped, even when the test panics.
struct Outage {
    down: bool,
}

impl Outage {
    fn begin() -> Self {
        apiserver("stop");
        Self { down: true }
    }

    fn end(&mut self) {
        apiserver("start");
        self.down = false;
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        if self.down {
            // Blocking is fine here: the test is over either way.
            let status = Command::new(apiserver_script()).arg("start").status();
            eprintln!("outage guard: restarted the kube-apiserver: {status:?}");
        }
    }
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_deployment_waits_out_an_apiserver_outage_and_completes(pool: PgPool) {
    let e = E2e::start(pool, "outage").await;
    let strategy = json!({"type": "canary", "steps": [
        {"set_weight": 50}, {"pause": {"duration": "3s"}}, {"set_weight": 100}
    ]});
    e.put_env(2, strategy, json!({})).await;
    let v1 = e.deploy("1.0.0", json!({})).await;
    e.wait_status(v1, "succeeded").await;

    // Mid-rollout: the canary is up at 50 % and a timed pause runs.
    let v2 = e.deploy("2.0.0", json!({})).await;
    e.wait_phase(v2, "running", "paused_step").await;
    let c = e.k8s_deployment("web-canary").await.unwrap();
    assert_eq!(deployment_image(&c), image("2.0.0"));

    let mut outage = Outage::begin();
    let down = Instant::now();
    // The pause ends while the API server is away: the engine cannot go on, and says why.
    let d = e
        .wait(v2, "reason cluster_unreachable", |d| {
            d["reason"]["code"] == "cluster_unreachable"
        })
        .await;
    assert_eq!(d["status"], "running", "{d}");
    assert_eq!(d["serving"]["version"], "1.0.0", "{d}");
    eprintln!(
        "{}: cluster_unreachable {:.1?} after the API server stopped: {}",
        e.namespace,
        down.elapsed(),
        d["reason"]["message"]
    );
    // It keeps waiting, however long the outage lasts.
    while down.elapsed() < OUTAGE {
        let d = e.deployment(v2).await;
        assert_eq!(d["status"], "running", "{d}\n{}", e.log(v2).await);
        assert_eq!(d["reason"]["code"], "cluster_unreachable", "{d}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    outage.end();
    let back = Instant::now();

    // Until it succeeds: what Slipway and the cluster show, printed on every change.
    // Slipway goes on within a second or two of the API server's return; the cluster's own
    // controllers take longer (their watches back off during the outage: 30-40 s here).
    let mut last = String::new();
    let mut resumed = None;
    while back.elapsed() < PATIENCE {
        let d = e.deployment(v2).await;
        if resumed.is_none() && d["reason"].is_null() {
            resumed = Some(back.elapsed());
        }
        let counts = |dep: Option<k8s_openapi::api::apps::v1::Deployment>| {
            dep.map(|d| deployment_counts(&d))
        };
        let now = format!(
            "{} {} step {} reason {} | stable {:?} canary {:?}",
            d["status"],
            d["phase"],
            d["step"],
            d["reason"]["code"],
            counts(e.k8s_deployment("web").await),
            counts(e.k8s_deployment("web-canary").await),
        );
        if now != last {
            eprintln!("{}: +{:.1?} {now}", e.namespace, back.elapsed());
            last = now;
        }
        if d["status"] != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let resumed = resumed.expect("the reason cleared");
    assert!(
        resumed < Duration::from_secs(10),
        "Slipway took {resumed:?} to go on after the API server came back"
    );
    let d = e.wait_status(v2, "succeeded").await;
    eprintln!(
        "{}: succeeded {:.1?} after the API server came back",
        e.namespace,
        back.elapsed()
    );
    assert_eq!(d["reason"], json!(null), "{d}");
    assert_eq!(
        d["serving"],
        json!({"health": "healthy", "version": "2.0.0"})
    );
    let s = e.k8s_deployment("web").await.unwrap();
    assert_eq!(deployment_image(&s), image("2.0.0"));
    assert_eq!(deployment_counts(&s), (2, 2, 2));
    e.until("the canary at 0, its pods gone", || async {
        let c = e.k8s_deployment("web-canary").await?;
        let pods = e
            .all_pods("app.kubernetes.io/name=web,slipway.dev/track=canary")
            .await;
        (deployment_counts(&c).0 == 0 && pods.is_empty()).then_some(())
    })
    .await;

    let log = e.events(v2).await;
    let errors: Vec<_> = log
        .iter()
        .filter(|ev| ev["kind"] == "cluster_error")
        .map(|ev| ev["data"]["reason"].clone())
        .collect();
    assert!(!errors.is_empty(), "no cluster_error events");
    assert!(
        errors.iter().all(|r| r == "cluster_unreachable"),
        "{errors:?}"
    );
    // Retried about every second (the harness's retry delay), not in a tight loop.
    assert!(errors.len() < 60, "{} retries in {OUTAGE:?}", errors.len());
    e.finish().await;
}
