//! What a waiting command shows while it waits: a live line redrawn in place on a terminal,
//! plain lines (one per event and per change of state) otherwise, nothing on stdout for
//! `--output json`.

use std::io::Write;
use std::time::Instant;

use serde_json::Value;

use super::view;

/// Told what a watch sees.
pub(super) trait Observer {
    fn deployment(&mut self, _d: &Value) {}
    fn event(&mut self, _e: &Value) {}
    /// The connection failed and is being retried.
    fn trouble(&mut self, message: &str) {
        eprintln!("warning: {message}");
    }
    /// About once a second, for a clock.
    fn tick(&mut self) {}
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Style {
    /// One line, redrawn in place (stdout is a terminal).
    Live,
    /// A line per event and per change of state (stdout is a file or a pipe).
    Lines,
    /// Nothing on stdout (`--output json`).
    Silent,
}

/// Progress of a deployment being waited for.
#[derive(Debug)]
pub(super) struct Progress {
    style: Style,
    started: Instant,
    state: String,
    /// What a paused deployment waits for: shown instead of the detail, so it fits.
    waiting: Option<String>,
    status: String,
    message: String,
    trouble: Option<String>,
    drawn: bool,
}

impl Progress {
    pub(super) fn new(style: Style) -> Self {
        Self {
            style,
            started: Instant::now(),
            state: String::new(),
            waiting: None,
            status: String::new(),
            message: String::new(),
            trouble: None,
            drawn: false,
        }
    }

    /// Removes the live line, so what follows starts on a clean line.
    pub(super) fn finish(&mut self) {
        if self.drawn {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "\r\x1b[2K");
            let _ = out.flush();
            self.drawn = false;
        }
    }

    fn draw(&mut self) {
        if self.state.is_empty() {
            return;
        }
        let mut line = match &self.waiting {
            Some(waiting) => format!("[{}] {} · {waiting}", elapsed(self.started), self.status),
            None => format!("[{}] {}", elapsed(self.started), self.state),
        };
        if let Some(trouble) = &self.trouble {
            line.push_str(&format!(" · {trouble}"));
        } else if !self.message.is_empty() && self.waiting.is_none() {
            line.push_str(&format!(" · {}", self.message));
        }
        let width = terminal_width().saturating_sub(1);
        let line: String = line.chars().take(width).collect();
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\r\x1b[2K{line}");
        let _ = out.flush();
        self.drawn = true;
    }
}

impl Observer for Progress {
    fn deployment(&mut self, d: &Value) {
        let state = view::state_line(d);
        let changed = state != self.state;
        self.state = state;
        self.waiting = view::waiting_for(d);
        self.status = view::status(d).to_owned();
        self.trouble = None;
        match self.style {
            Style::Live => self.draw(),
            Style::Lines if changed => super::out(&format!("status: {}", self.state)),
            _ => {}
        }
    }

    fn event(&mut self, e: &Value) {
        self.message = view::text(e, "message").to_owned();
        match self.style {
            Style::Live => self.draw(),
            Style::Lines => super::out(&view::event_line(e)),
            Style::Silent => {}
        }
    }

    fn trouble(&mut self, message: &str) {
        match self.style {
            Style::Live => {
                self.trouble = Some(message.to_owned());
                self.draw();
            }
            _ => eprintln!("warning: {message}"),
        }
    }

    fn tick(&mut self) {
        if self.style == Style::Live {
            self.draw();
        }
    }
}

/// Prints every event: a line for people, a JSON line for machines.
#[derive(Debug)]
pub(super) struct EventPrinter {
    pub json: bool,
}

impl Observer for EventPrinter {
    fn event(&mut self, e: &Value) {
        if self.json {
            super::out(&e.to_string());
        } else {
            super::out(&view::event_line(e));
        }
    }
}

/// `45s`, `3m05s`, `1h02m`.
fn elapsed(since: Instant) -> String {
    let s = since.elapsed().as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// `COLUMNS` when the shell exports it, else a conservative 100.
fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|c| *c > 20)
        .unwrap_or(100)
}
