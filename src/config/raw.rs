//! The file as serde reads it: every field optional, unknown keys refused; and toml's errors
//! turned into [`ConfigError`]s naming the key.

use super::*;

/// Turns a toml error into a [`ConfigError`], naming the key where the text shows it.
///
/// toml's message already names an unknown key ("unknown field `relay_port`, expected one
/// of ...") or the expected type; the key path comes from the line the error points at and the
/// table header above it.
pub(super) fn toml_error(text: &str, err: &toml::de::Error) -> ConfigError {
    let message = err.message().trim();
    let Some(span) = err.span() else {
        return ConfigError::new("", message);
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    match key_at_line(text, line) {
        Some(key) => ConfigError::new(key, format!("{message} (line {line}, column {column})")),
        None => ConfigError::new(format!("line {line}, column {column}"), message),
    }
}

/// The dotted key on 1-based `line`: `[section]` headers above it give the prefix.
pub(super) fn key_at_line(text: &str, line: usize) -> Option<String> {
    let mut section: Option<String> = None;
    for (i, l) in text.lines().enumerate() {
        let l = l.split('#').next().unwrap_or("").trim();
        let header = l
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .map(|h| h.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
        if i + 1 == line {
            if header.is_some() {
                return header;
            }
            let (key, _) = l.split_once('=')?;
            let key = key.trim().trim_matches('"');
            if key.is_empty() || key.contains(char::is_whitespace) {
                return None;
            }
            return Some(match section {
                Some(s) => format!("{s}.{key}"),
                None => key.to_owned(),
            });
        }
        if header.is_some() {
            section = header;
        }
    }
    None
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct Raw {
    pub(super) dev: bool,
    pub(super) http: RawHttp,
    pub(super) turn: RawTurn,
    pub(super) auth: RawAuth,
    pub(super) store: RawStore,
    pub(super) calls: RawCalls,
    pub(super) log: RawLog,
    pub(super) webhooks: RawWebhooks,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawHttp {
    pub(super) listen: Option<String>,
    pub(super) max_connections: Option<u32>,
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
    pub(super) relay_ports: Option<String>,
    pub(super) credential_ttl: Option<String>,
    pub(super) max_lifetime: Option<String>,
    pub(super) max_allocation_life: Option<String>,
    pub(super) allow_peers: Vec<String>,
    pub(super) deny_peers: Vec<String>,
    pub(super) user_quota: Option<u32>,
    pub(super) total_quota: Option<u32>,
    pub(super) rest_api_separator: Option<String>,
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
