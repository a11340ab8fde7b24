//! Where diagnostics go: the TUI's to `.cutover/tui.log` (never to the screen), a driving
//! command's S3 state warnings to stderr.

use std::sync::Arc;

use cutover::redact::Redactor;
use cutover::workspace::Workspace;

/// Diagnostics of the UI go to `.cutover/tui.log`, never to the screen.
/// tui.log's writer: each write passes the same redactor as the journal and the step logs.
struct RedactingFile {
    file: std::sync::Mutex<std::fs::File>,
    redactor: Arc<Redactor>,
}

impl std::io::Write for &RedactingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let masked = self.redactor.redact(&text);
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(masked.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.lock().unwrap_or_else(|p| p.into_inner()).flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RedactingFile {
    type Writer = &'a RedactingFile;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

pub fn init_file_tracing(workspace: &Workspace, redactor: Arc<Redactor>) {
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(workspace.root.join("tui.log"))
    else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(RedactingFile {
            file: std::sync::Mutex::new(file),
            redactor,
        })
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CUTOVER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
}

/// With an S3 state, what the state's background work has to say (the lease lost, the logs
/// behind) goes to stderr as warnings.
pub fn init_stderr_warnings() {
    use tracing_subscriber::fmt::{format, FmtContext, FormatEvent, FormatFields};
    struct Warning;
    impl<S, N> FormatEvent<S, N> for Warning
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        fn format_event(
            &self,
            ctx: &FmtContext<'_, S, N>,
            mut writer: format::Writer<'_>,
            event: &tracing::Event<'_>,
        ) -> std::fmt::Result {
            write!(writer, "cutover: warning: ")?;
            ctx.field_format().format_fields(writer.by_ref(), event)?;
            writeln!(writer)
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .event_format(Warning)
        .with_env_filter(tracing_subscriber::EnvFilter::new("cutover::state=warn"))
        .try_init();
}

#[cfg(test)]
mod redacting_file_tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn tui_log_lines_pass_the_redactor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tui.log");
        let redactor = Arc::new(Redactor::new());
        let writer = RedactingFile {
            file: std::sync::Mutex::new(std::fs::File::create(&path).unwrap()),
            redactor: redactor.clone(),
        };
        redactor.add_secret("hunter2-secret");
        (&writer)
            .write_all(b"INFO step failed: bad password hunter2-secret at postgres://u:pw@h/db\n")
            .unwrap();
        (&writer).flush().unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            written,
            "INFO step failed: bad password *** at postgres://u:***@h/db\n"
        );
    }
}
