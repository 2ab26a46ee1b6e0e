//! Logs: tracing to stderr (journald collects it under systemd), as text or JSON lines,
//! filtered by `RUST_LOG` if set, else by `log.level`.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Crates that log a warning for every malformed packet a peer sends: a peer must not be able
/// to flood our logs, so they only get to report errors.
const QUIET_CRATES: [&str; 3] = ["stun_types", "stun_proto", "turn_types"];

/// Installs the global subscriber: `RUST_LOG` if set, else `log.level`.
pub fn init(config: &LogConfig) {
    let (filter, rejected_env) = filter(config, std::env::var("RUST_LOG").ok());
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match config.format {
        // No colour codes unless a person is watching: tools parse `addr=...` out of stderr.
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
    if let Some(error) = rejected_env {
        tracing::warn!(%error, level = %config.level, "RUST_LOG is not a valid filter; using log.level");
    }
}

/// The filter for `config` and the value of `RUST_LOG`, plus why `RUST_LOG` was ignored.
fn filter(config: &LogConfig, rust_log: Option<String>) -> (EnvFilter, Option<String>) {
    let mut rejected = None;
    let mut spec = match rust_log.filter(|s| !s.trim().is_empty()) {
        Some(env) => match EnvFilter::builder().parse(&env) {
            Ok(_) => env,
            Err(e) => {
                rejected = Some(e.to_string());
                config.level.clone()
            }
        },
        None => config.level.clone(),
    };
    for name in QUIET_CRATES {
        // An explicit directive for one of them wins over our default.
        if !spec.contains(name) {
            spec.push_str(&format!(",{name}=error"));
        }
    }
    // `config.level` was validated when the config was loaded, so this falls back only on a
    // bug; fall back to `info` rather than refusing to start.
    let filter = EnvFilter::builder()
        .parse(&spec)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    (filter, rejected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(level: &str) -> LogConfig {
        LogConfig {
            level: level.to_owned(),
            format: LogFormat::Text,
        }
    }

    #[test]
    fn codec_crates_are_quiet_unless_asked() {
        let (f, rejected) = filter(&config("info"), None);
        assert!(rejected.is_none());
        let s = f.to_string();
        for name in QUIET_CRATES {
            assert!(s.contains(&format!("{name}=error")), "{s}");
        }
        let (f, _) = filter(&config("info"), Some("debug,stun_types=trace".into()));
        let s = f.to_string();
        assert!(
            s.contains("stun_types=trace") && !s.contains("stun_types=error"),
            "{s}"
        );
    }

    #[test]
    fn rust_log_overrides_and_bad_rust_log_falls_back() {
        let (f, _) = filter(&config("info"), Some("switchboard=trace".into()));
        assert!(f.to_string().contains("switchboard=trace"));
        let (f, rejected) = filter(&config("warn"), Some("[[[".into()));
        assert!(rejected.is_some());
        assert!(f.to_string().contains("warn"));
    }
}
