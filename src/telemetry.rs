//! Logging setup for the binary: `RUST_LOG` filters, `LOG_FORMAT` picks JSON lines or text.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

/// How log lines are written: JSON lines (the default in Azure) or text for a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// Where log lines go: stdout while serving (Azure turns it into traces), stderr for commands
/// whose stdout is their output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Stdout,
    Stderr,
}

/// The Azure SDK's own request logs stay at warn unless `RUST_LOG` asks for them: they would
/// drown the one line per delivery.
const QUIET_SDK: &str =
    "azure_core=warn,azure_data_cosmos=warn,azure_data_cosmos_driver=warn,azure_identity=warn";

/// `default_level` applies when `RUST_LOG` is unset or empty.
pub fn init(format: LogFormat, target: Target, default_level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default_level},{QUIET_SDK}")));
    // Colour only for a person at a terminal: the Functions host and log files get plain text.
    let (writer, ansi) = match target {
        Target::Stdout => (
            BoxMakeWriter::new(std::io::stdout),
            std::io::stdout().is_terminal(),
        ),
        Target::Stderr => (
            BoxMakeWriter::new(std::io::stderr),
            std::io::stderr().is_terminal(),
        ),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    // Already set up (several apps started in one test process): the first one stays.
    drop(result);
}
