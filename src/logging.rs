//! Logs: tracing to stderr (journald collects it under systemd), as text or JSON lines,
//! filtered by `RUST_LOG` if set, else by `log.level`, which a SIGHUP reloads ([`Reload`]).

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Crates that log a warning for every malformed packet a peer sends: a peer must not be able
/// to flood our logs, so they only get to report errors.
const QUIET_CRATES: [&str; 3] = ["stun_types", "stun_proto", "turn_types"];

/// Sets the filter of the installed subscriber.
type SetFilter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// The installed subscriber's filter, which [`Reload::apply`] replaces.
pub struct Reload {
    set: SetFilter,
    /// `RUST_LOG` was set and valid: it wins over `log.level`, at a reload too.
    env_wins: bool,
}

impl Reload {
    /// `config.level` from now on (unless `RUST_LOG` chose the filter at the start).
    pub fn apply(&self, config: &LogConfig) {
        if self.env_wins {
            tracing::info!("log level: RUST_LOG is set and stays");
            return;
        }
        match (self.set)(filter(config, None).0) {
            Ok(()) => tracing::info!(level = %config.level, "log level reloaded"),
            Err(error) => tracing::error!(%error, "log level not reloaded"),
        }
    }
}

/// Installs the global subscriber: `RUST_LOG` if set, else `log.level`.
pub fn init(config: &LogConfig) -> Reload {
    let rust_log = std::env::var("RUST_LOG").ok();
    let env_set = rust_log.as_deref().is_some_and(|s| !s.trim().is_empty());
    let (filter, rejected_env) = filter(config, rust_log);
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    let set: SetFilter = match config.format {
        // No colour codes unless a person is watching: tools parse `addr=...` out of stderr.
        LogFormat::Text => {
            let builder = builder
                .with_ansi(std::io::stderr().is_terminal())
                .with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()))
        }
        LogFormat::Json => {
            let builder = builder.json().with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()))
        }
    };
    if let Some(error) = &rejected_env {
        tracing::warn!(%error, level = %config.level, "RUST_LOG is not a valid filter; using log.level");
    }
    Reload {
        set,
        env_wins: env_set && rejected_env.is_none(),
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
