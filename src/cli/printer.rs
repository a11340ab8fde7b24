//! The headless front end: engine events as lines on the terminal.

use std::io::Write;
use std::time::{Duration, Instant};

use cutover::actions::Stream;
use cutover::engine::{describe_outcome, EngineEvent, Subscriber};

/// Prints the step's output as it comes: the child's stdout on stdout, everything else on stderr.
pub struct Printer {
    last_progress: Option<(Instant, u64)>,
}

const PROGRESS_EVERY: Duration = Duration::from_secs(1);

impl Printer {
    pub fn new() -> Self {
        Printer {
            last_progress: None,
        }
    }
}

impl Subscriber for Printer {
    fn on_event(&mut self, event: &EngineEvent) {
        let mut out = std::io::stdout().lock();
        let mut err = std::io::stderr().lock();
        // A closed pipe (`| head`) is not worth failing the step for.
        let _ = match event {
            EngineEvent::StepStarted {
                step,
                attempt,
                purpose,
                action,
                log,
            } => {
                let attempt = purpose.label(*attempt);
                writeln!(
                    err,
                    "==> {step} ({attempt}): {action}\n    log: {}",
                    log.display()
                )
            }
            EngineEvent::Log { stream, line, .. } => match stream {
                Stream::Stdout => writeln!(out, "{line}"),
                Stream::Stderr => writeln!(err, "{line}"),
                Stream::Info => writeln!(err, "» {line}"),
            },
            EngineEvent::Progress { progress, .. } => {
                let now = Instant::now();
                let permille = (progress.fraction().unwrap_or(0.0) * 1000.0) as u64;
                let due = self.last_progress.is_none_or(|(at, last)| {
                    now.duration_since(at) >= PROGRESS_EVERY || permille >= last + 50
                });
                if due {
                    self.last_progress = Some((now, permille));
                    let total = progress.total.map(|t| format!("/{t}")).unwrap_or_default();
                    let percent = progress
                        .fraction()
                        .map(|f| format!(" ({:.0}%)", f * 100.0))
                        .unwrap_or_default();
                    let message = progress
                        .message
                        .as_deref()
                        .map(|m| format!(" {m}"))
                        .unwrap_or_default();
                    writeln!(
                        err,
                        "   progress: {}{total} {}{percent}{message}",
                        progress.done, progress.unit
                    )
                } else {
                    Ok(())
                }
            }
            EngineEvent::Output { name, value, .. } => writeln!(err, "   output {name} = {value}"),
            EngineEvent::Retrying {
                attempt,
                delay,
                reason,
                ..
            } => writeln!(
                err,
                "==> failed ({reason}); attempt {attempt} in {}",
                humantime::format_duration(*delay)
            ),
            EngineEvent::StepFinished { step, outcome, .. } => {
                writeln!(err, "==> {step}: {}", describe_outcome(outcome))
            }
        };
    }
}
