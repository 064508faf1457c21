//! Blue-green on the real cluster: the preview Service's endpoints are the new pods, the switch
//! moves the active Service's endpoints, the old color goes after the delay, and an abort after
//! the switch puts the active Service back at once.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::json;
use slipway_store::PgPool;

use crate::harness::*;

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn blue_green_previews_switches_scales_down_and_aborts_back(pool: PgPool) {
    let e = E2e::start(pool, "bluegreen").await;
    // Long enough that the EndpointSlice controller follows the switch well within it, even on a
    // busy machine, so blue is seen still up after the switch.
    let delay = Duration::from_secs(8);
    e.put_env(
        2,
        json!({"type": "blue_green", "auto_promote": false, "scale_down_delay": "8s"}),
        // The third deployment brings its own strategy.
        json!({"allow_strategy_override": true}),
    )
    .await;

    // First deployment: blue goes live, both Services on it.
    let v1 = e.deploy("1.0.0", json!({})).await;
    e.wait_status(v1, "succeeded").await;
    let blue = e.ready_ips("blue").await;
    assert_eq!(blue.len(), 2);
    e.until("web -> blue endpoints", || async {
        (e.endpoint_ips("web").await == blue).then_some(())
    })
    .await;

    // Second: green comes up on the preview Service only.
    let v2 = e.deploy("2.0.0", json!({})).await;
    e.wait_phase(v2, "paused", "awaiting_promotion").await;
    let green = e.ready_ips("green").await;
    assert_eq!(green.len(), 2);
    assert!(green.is_disjoint(&blue));
    let green_pods = e
        .pods("app.kubernetes.io/name=web,slipway.dev/track=green")
        .await;
    assert!(
        green_pods
            .iter()
            .all(|p| p.spec.as_ref().unwrap().containers[0].image.as_deref()
                == Some(image("2.0.0").as_str())),
        "the preview pods run 2.0.0"
    );
    e.until("web-preview -> green endpoints", || async {
        (e.endpoint_ips("web-preview").await == green).then_some(())
    })
    .await;
    assert_eq!(
        e.endpoint_ips("web").await,
        blue,
        "production stays on blue"
    );

    // Promote: the active Service's endpoints move to green; blue stays up for the delay.
    e.accepted(v2, "promote").await;
    e.until("web -> green endpoints", || async {
        (e.endpoint_ips("web").await == green).then_some(())
    })
    .await;
    let switched = Instant::now();
    let blue_dep = e.k8s_deployment("web-blue").await.unwrap();
    assert_eq!(
        deployment_counts(&blue_dep).0,
        2,
        "blue is kept during scale_down_delay"
    );
    let d = e.wait_status(v2, "succeeded").await;
    assert_eq!(d["serving"]["version"], "2.0.0");
    e.until("blue at 0 replicas, its pods gone", || async {
        let d = e.k8s_deployment("web-blue").await?;
        let pods = e
            .all_pods("app.kubernetes.io/name=web,slipway.dev/track=blue")
            .await;
        (deployment_counts(&d).0 == 0 && pods.is_empty()).then_some(())
    })
    .await;
    // The delay was honoured: from the switch to the scale-down (events carry the times).
    let log = e.events(v2).await;
    let at = |kind: &str, needle: &str| {
        log.iter()
            .find(|ev| ev["kind"] == kind && ev["message"].as_str().unwrap_or("").contains(needle))
            .and_then(|ev| ev["at"].as_str())
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .unwrap_or_else(|| panic!("no {kind} {needle:?} event in {log:?}"))
    };
    // The delay starts once the machine saw the active Service's EndpointSlices hold green only.
    let shifted = at("traffic_shifted", "endpoints are green pods only");
    let waited = at("step_started", "scaling down blue") - shifted;
    assert!(
        waited >= chrono::Duration::milliseconds(7_500),
        "scaled down {waited} after the switch"
    );
    eprintln!(
        "{}: blue gone {:.1?} after the endpoints switched (delay {delay:?})",
        e.namespace,
        switched.elapsed()
    );
    assert_eq!(e.endpoint_ips("web").await, green);

    // Third, with a long delay: promoted at once, then aborted while blue (now 3.0.0) is live
    // and green still up: the active Service goes back to green at once.
    let v3 = e
        .deploy(
            "3.0.0",
            json!({"strategy": {"type": "blue_green", "auto_promote": true, "scale_down_delay": "10m"}}),
        )
        .await;
    e.wait_phase(v3, "running", "scaling_down_old").await;
    let new_blue = e.ready_ips("blue").await;
    assert_eq!(new_blue.len(), 2);
    e.until("web -> blue (3.0.0) endpoints", || async {
        (e.endpoint_ips("web").await == new_blue).then_some(())
    })
    .await;
    assert_eq!(
        e.ready_ips("green").await,
        green,
        "green is kept during the delay"
    );

    let aborted = Instant::now();
    e.accepted(v3, "abort").await;
    e.until("web -> green endpoints again", || async {
        (e.endpoint_ips("web").await == green).then_some(())
    })
    .await;
    let back = aborted.elapsed();
    assert!(
        back < Duration::from_secs(30),
        "switched back after {back:?}"
    );
    let d = e.wait_status(v3, "rolled_back").await;
    assert_eq!(d["outcome"], "aborted", "{d}");
    assert_eq!(
        d["serving"],
        json!({"health": "healthy", "version": "2.0.0"})
    );
    e.until("blue (3.0.0) at 0 replicas", || async {
        let d = e.k8s_deployment("web-blue").await?;
        let pods = e
            .pods("app.kubernetes.io/name=web,slipway.dev/track=blue")
            .await;
        (deployment_counts(&d).0 == 0 && pods.is_empty()).then_some(())
    })
    .await;
    let green_dep = e.k8s_deployment("web-green").await.unwrap();
    assert_eq!(deployment_image(&green_dep), image("2.0.0"));
    assert_eq!(deployment_counts(&green_dep), (2, 2, 2));
    assert_eq!(e.endpoint_ips("web").await, green);
    assert_eq!(e.endpoint_ips("web-preview").await, green);
    let _: BTreeSet<String> = new_blue;
    e.finish().await;
}
