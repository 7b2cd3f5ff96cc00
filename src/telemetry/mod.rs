//! Logging for the binary: `RUST_LOG` filters, `LOG_FORMAT` picks JSON lines (the telemetry
//! contract Application Insights queries read, see `json`) or text for a person.
//!
//! While serving, information goes to stdout and warnings and errors to stderr: the Functions
//! host logs a custom handler's stdout lines at Information, and its stderr lines at Warning when
//! they contain "warn", else at Error (`WorkerProcess.cs`; see the README's "Operating it").

mod json;

use std::io::IsTerminal;

use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};

pub use self::json::{Flatten, JsonLines, error_line};

/// How log lines are written: JSON lines (the default in Azure) or text for a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// Where log lines go: stdout while serving (warnings and errors on stderr, where the Functions
/// host gives them their level), stderr for commands whose stdout is their output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Stdout,
    Stderr,
}

/// The Azure SDK's own request logs stay at warn unless `RUST_LOG` asks for them: they would
/// drown the one line per delivery.
const QUIET_SDK: &str =
    "azure_core=warn,azure_data_cosmos=warn,azure_data_cosmos_driver=warn,azure_identity=warn";

/// Logs at a level chosen at run time (`tracing`'s macros take theirs as a constant): error,
/// warn, or info for anything else.
macro_rules! log_at {
    ($level:expr, $($fields:tt)+) => {{
        let level: ::tracing::Level = $level;
        if level == ::tracing::Level::ERROR {
            ::tracing::error!($($fields)+)
        } else if level == ::tracing::Level::WARN {
            ::tracing::warn!($($fields)+)
        } else {
            ::tracing::info!($($fields)+)
        }
    }};
}
pub(crate) use log_at;

/// `default_level` applies when `RUST_LOG` is unset or empty.
pub fn init(format: LogFormat, target: Target, default_level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default_level},{QUIET_SDK}")));
    // Colour only for a person at a terminal: the Functions host and log files get plain text.
    let (writer, ansi) = match target {
        Target::Stdout => (
            BoxMakeWriter::new(
                std::io::stderr
                    .with_max_level(Level::WARN)
                    .or_else(std::io::stdout),
            ),
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
        LogFormat::Json => builder.event_format(JsonLines).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    // Already set up (several apps started in one test process): the first one stays.
    drop(result);
}
