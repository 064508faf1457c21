//! How API documents read for people: a deployment's summary and progress, an event line,
//! tables. Documents stay `serde_json::Value`s so `--output json` prints exactly what the
//! server sent and a newer server's extra fields pass through.

use serde_json::Value;

/// Text of `v[key]`, or "" when absent or not a string.
pub(super) fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

pub(super) fn status(d: &Value) -> &str {
    text(d, "status")
}

/// Will never change again (until a `retry`).
pub(super) fn is_terminal(d: &Value) -> bool {
    matches!(
        status(d),
        "succeeded" | "failed" | "rolled_back" | "cancelled" | "superseded"
    )
}

/// `step 1: pause 10s` while a canary works through its steps (indexed from 0, as the
/// engine's events count them), else nothing.
fn step(d: &Value) -> Option<String> {
    if !matches!(text(d, "phase"), "canary_step" | "paused_step") {
        return None;
    }
    let index = d.get("step").and_then(Value::as_u64)?;
    let steps = d
        .get("strategy")
        .and_then(|s| s.get("steps"))
        .and_then(Value::as_array);
    let what = steps
        .and_then(|steps| steps.get(usize::try_from(index).ok()?))
        .map(describe_step);
    Some(match (what, steps) {
        (Some(what), Some(steps)) if index + 1 == steps.len() as u64 => {
            format!("step {index} (last): {what}")
        }
        (Some(what), _) => format!("step {index}: {what}"),
        (None, _) => format!("step {index}"),
    })
}

/// `set_weight 25`, `pause 10s`, `pause until promoted`, `analysis`.
fn describe_step(step: &Value) -> String {
    let Some((kind, arg)) = step.as_object().and_then(|o| o.iter().next()) else {
        return step.to_string();
    };
    match (kind.as_str(), arg) {
        ("set_weight", w) => format!("set_weight {w}"),
        ("pause", p) => match p.get("duration").and_then(Value::as_str) {
            Some(d) => format!("pause {d}"),
            None => "pause until promoted".to_owned(),
        },
        (other, _) => other.to_owned(),
    }
}

/// What a paused deployment waits for, and the command that moves it on.
pub(super) fn waiting_for(d: &Value) -> Option<String> {
    let id = text(d, "id");
    match (status(d), text(d, "phase")) {
        ("paused", "awaiting_approval") => Some(format!("awaiting approval: slipway approve {id}")),
        ("paused", "awaiting_promotion" | "paused_step") => {
            Some(format!("awaiting promotion: slipway promote {id}"))
        }
        ("paused", _) => Some(format!("paused: slipway resume {id}")),
        _ => None,
    }
}

/// `running · canary_step · step 2/4` (and what it waits for, when paused).
pub(super) fn state_line(d: &Value) -> String {
    let mut parts = vec![status(d).to_owned()];
    let phase = text(d, "phase");
    if !phase.is_empty() && phase != status(d) {
        parts.push(phase.to_owned());
    }
    parts.extend(step(d));
    if let Some(wait) = waiting_for(d) {
        parts.push(wait);
    }
    if let Some(reason) = reason(d).filter(|_| !is_terminal(d)) {
        parts.push(reason);
    }
    parts.join(" · ")
}

/// `code: message` of the failure (or retryable trouble) reason.
fn reason(d: &Value) -> Option<String> {
    let r = d.get("reason").filter(|r| !r.is_null())?;
    Some(format!("{}: {}", text(r, "code"), text(r, "message")))
}

fn serving(d: &Value) -> String {
    let s = d.get("serving").unwrap_or(&Value::Null);
    match s.get("version").and_then(Value::as_str) {
        Some(v) => format!("{} serves {v} ({})", target(d), text(s, "health")),
        None => format!("{} ({})", target(d), text(s, "health")),
    }
}

fn target(d: &Value) -> String {
    format!("{}/{}", text(d, "app"), text(d, "environment"))
}

/// One line when a deployment was requested.
pub(super) fn created_line(d: &Value) -> String {
    format!(
        "deployment {} {}: {} ← {} ({})",
        text(d, "id"),
        status(d),
        target(d),
        text(d, "image"),
        text(d, "version"),
    )
}

/// One line on how a deployment ended.
pub(super) fn outcome_line(d: &Value) -> String {
    let mut line = format!(
        "deployment {} {}: {} {}",
        text(d, "id"),
        status(d),
        target(d),
        text(d, "version")
    );
    if let Some(reason) = reason(d) {
        line.push_str(&format!(" — {reason}"));
    }
    line.push_str(&format!("; {}", serving(d)));
    line
}

/// The full, labelled summary of `slipway status`.
pub(super) fn summary(d: &Value) -> String {
    let source = d.get("source").unwrap_or(&Value::Null);
    let mut rows: Vec<(&str, String)> = vec![
        ("deployment", text(d, "id").to_owned()),
        ("target", target(d)),
        (
            "image",
            format!("{} (version {})", text(d, "image"), text(d, "version")),
        ),
        (
            "strategy",
            text(d.get("strategy").unwrap_or(&Value::Null), "type").to_owned(),
        ),
        ("status", state_line(d)),
    ];
    if let Some(outcome) = d.get("outcome").and_then(Value::as_str) {
        rows.push(("outcome", outcome.to_owned()));
    }
    if let Some(reason) = reason(d) {
        rows.push(("reason", reason));
    }
    rows.push(("serving", serving(d)));
    let mut requested = format!("{} by {}", text(d, "created_at"), text(d, "created_by"));
    let kind = text(source, "kind");
    if !kind.is_empty() {
        requested.push_str(&format!(" via {kind}"));
    }
    if let Some(why) = d.get("request_reason").and_then(Value::as_str) {
        requested.push_str(&format!(": {why}"));
    }
    rows.push(("requested", requested));
    rows.push(("updated", text(d, "updated_at").to_owned()));
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{k:<width$}  {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `2026-11-28T22:59:01Z  #7  step_completed  canary at 25%  (engine)`.
pub(super) fn event_line(e: &Value) -> String {
    let at = text(e, "at");
    // Whole seconds are enough on a line: 2026-11-28T22:59:01.123456Z → …:01Z.
    let at = match at.split_once('.') {
        Some((head, _)) => format!("{head}Z"),
        None => at.to_owned(),
    };
    format!(
        "{at}  #{:<3} {:<18} {}  ({})",
        e.get("seq").and_then(Value::as_i64).unwrap_or(0),
        text(e, "kind"),
        text(e, "message"),
        text(e, "actor")
    )
}

/// Left-aligned columns under a header.
pub(super) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = vec![line(header.to_vec())];
    out.extend(
        rows.iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn canary(status: &str, phase: &str, step: u64) -> Value {
        json!({"id": "d1", "app": "web", "environment": "prod", "image": "i:2", "version": "2",
               "status": status, "phase": phase, "step": step,
               "strategy": {"type": "canary", "steps": [{"set_weight": 25}, {"pause": {}}]},
               "serving": {"health": "healthy", "version": "1"}, "reason": null})
    }

    #[test]
    fn a_paused_canary_says_what_moves_it_on() {
        let d = canary("paused", "paused_step", 1);
        assert_eq!(
            state_line(&d),
            "paused · paused_step · step 1 (last): pause until promoted · awaiting promotion: \
             slipway promote d1"
        );
        let d = canary("running", "canary_step", 0);
        assert_eq!(
            state_line(&d),
            "running · canary_step · step 0: set_weight 25"
        );
        let d = canary("paused", "awaiting_approval", 1);
        assert!(state_line(&d).ends_with("awaiting approval: slipway approve d1"));
        assert_eq!(waiting_for(&canary("running", "canary_step", 0)), None);
    }

    #[test]
    fn an_ending_names_reason_and_what_serves() {
        let mut d = canary("rolled_back", "rolled_back", 0);
        d["reason"] = json!({"code": "progress_deadline_exceeded", "message": "stuck"});
        assert!(is_terminal(&d));
        assert_eq!(
            outcome_line(&d),
            "deployment d1 rolled_back: web/prod 2 — progress_deadline_exceeded: stuck; \
             web/prod serves 1 (healthy)"
        );
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["NAME", "DESCRIPTION"],
            &[
                vec!["web".into(), "shop".into()],
                vec!["a".into(), "".into()],
            ],
        );
        assert_eq!(t, "NAME  DESCRIPTION\nweb   shop\na");
    }
}
