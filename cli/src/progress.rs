//! A one-line progress display on a terminal (stderr), for long commands (`verify`,
//! `flatten`): fed by the store when the command runs it, by the daemon's progress lines
//! (docs/control-socket.md) when the daemon does.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Draws `LABEL: 42% (n/total)` on stderr, at most ten times a second.
pub struct Progress {
    label: &'static str,
    enabled: bool,
    last: Option<Instant>,
    drawn: bool,
}

impl Progress {
    pub fn new(label: &'static str) -> Self {
        Self {
            label,
            enabled: std::io::stderr().is_terminal(),
            last: None,
            drawn: false,
        }
    }

    pub fn update(&mut self, done: u64, total: u64) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now - last < Duration::from_millis(100))
            && done < total
        {
            return;
        }
        self.last = Some(now);
        let percent = done.saturating_mul(100).checked_div(total).unwrap_or(100);
        eprint!("\r\x1b[K{}: {percent:>3}% ({done}/{total})", self.label);
        let _ = std::io::stderr().flush();
        self.drawn = true;
    }

    pub fn clear(&mut self) {
        if self.drawn {
            eprint!("\r\x1b[K");
            let _ = std::io::stderr().flush();
            self.drawn = false;
        }
    }
}
