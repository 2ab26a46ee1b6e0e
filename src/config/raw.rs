//! The file as serde reads it: every field optional, unknown keys refused; and toml's errors
//! turned into [`ConfigError`]s naming the key, by the path serde was at (serde_path_to_error).

use super::*;

/// Reads the file's TOML into [`Raw`]; an error names the key it is about, as a path
/// (`turn.allow_peers[2]`, `log.format`), with where it is in the text.
pub(super) fn parse(text: &str) -> Result<Raw> {
    serde_path_to_error::deserialize(toml::Deserializer::new(text))
        .map_err(|e| toml_error(text, e.path(), e.inner()))
}

/// A toml error as a [`ConfigError`]: the key is the path serde was at; an error outside any
/// key (TOML syntax) is named by its line and column instead.
fn toml_error(text: &str, path: &serde_path_to_error::Path, err: &toml::de::Error) -> ConfigError {
    let message = err.message().trim();
    let at = err.span().map(|span| {
        let before = text.get(..span.start).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!("line {line}, column {column}")
    });
    match (path.iter().next(), at) {
        (Some(_), Some(at)) => ConfigError::new(path.to_string(), format!("{message} ({at})")),
        (Some(_), None) => ConfigError::new(path.to_string(), message),
        (None, Some(at)) => ConfigError::new(at, message),
        (None, None) => ConfigError::new("", message),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct Raw {
    pub(super) dev: bool,
    pub(super) dev_allow_public: bool,
    pub(super) http: RawHttp,
    pub(super) turn: RawTurn,
    pub(super) auth: RawAuth,
    pub(super) store: RawStore,
    pub(super) calls: RawCalls,
    pub(super) sfu: RawSfu,
    pub(super) log: RawLog,
    pub(super) webhooks: RawWebhooks,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawHttp {
    pub(super) listen: Option<String>,
    pub(super) max_connections: Option<u32>,
    pub(super) max_connections_per_source: Option<u32>,
    pub(super) trusted_proxies: Vec<String>,
    pub(super) request_timeout: Option<String>,
    pub(super) user_rate: Option<u32>,
    pub(super) user_burst: Option<u32>,
    pub(super) public_url: Option<String>,
    pub(super) tls_cert: Option<PathBuf>,
    pub(super) tls_key: Option<PathBuf>,
    pub(super) allowed_origins: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawTurn {
    pub(super) listen: Option<Vec<String>>,
    pub(super) tls_listen: Vec<String>,
    pub(super) tls_cert: Option<PathBuf>,
    pub(super) tls_key: Option<PathBuf>,
    pub(super) realm: Option<String>,
    pub(super) secret: Option<String>,
    pub(super) secret_file: Option<PathBuf>,
    pub(super) external_ip: Option<OneOrMany>,
    pub(super) relay_ip: Option<OneOrMany>,
    pub(super) max_connections: Option<u32>,
    pub(super) max_connections_per_source: Option<u32>,
    pub(super) relay_ports: Option<String>,
    pub(super) credential_ttl: Option<String>,
    pub(super) max_lifetime: Option<String>,
    pub(super) max_allocation_life: Option<String>,
    pub(super) allow_peers: Vec<String>,
    pub(super) deny_peers: Vec<String>,
    pub(super) user_quota: Option<u32>,
    pub(super) total_quota: Option<u32>,
    pub(super) rest_api_separator: Option<String>,
    // Bandwidth caps, bytes per second (0: none), and their burst.
    pub(super) allocation_bandwidth: Option<u64>,
    pub(super) user_bandwidth: Option<u64>,
    pub(super) total_bandwidth: Option<u64>,
    pub(super) bandwidth_burst: Option<String>,
}

/// An address, or a list of them (one per IP version).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub(super) fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawAuth {
    pub(super) jwt_secret: Option<String>,
    pub(super) jwt_secret_file: Option<PathBuf>,
    pub(super) admin_token: Option<String>,
    pub(super) admin_token_file: Option<PathBuf>,
    pub(super) open_conversations: bool,
    pub(super) audience: Option<String>,
    pub(super) issuer: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) path: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawCalls {
    pub(super) ring_timeout: Option<String>,
    pub(super) reconnect_grace: Option<String>,
    pub(super) max_participants: Option<u32>,
    pub(super) max_live_per_user: Option<u32>,
    pub(super) sfu_from: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawSfu {
    pub(super) listen: Option<String>,
    pub(super) public_ip: Option<String>,
    pub(super) max_tracks: Option<u32>,
    pub(super) max_bitrate: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawWebhooks {
    pub(super) url: Option<OneOrMany>,
    pub(super) secret: Option<String>,
    pub(super) secret_file: Option<PathBuf>,
    pub(super) timeout: Option<String>,
    pub(super) max_age: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) level: Option<String>,
    pub(super) format: LogFormat,
}
