//! The daemon's configuration: a TOML file (keys fixed by DESIGN.md, "Contract") or, without
//! one, the embedded development default.
//!
//! Loading is two steps. serde reads the text into `Raw*` structs that mirror the file: every
//! field optional, every section defaulted, unknown keys refused (so a typo is an error naming
//! the key, not a silently ignored line). [`validate`] then turns them into [`Config`], parsing
//! each value into its type and checking it, and every failure is a [`ConfigError`] naming the
//! key, e.g. `turn.allow_peers[1]: ...`. Questionable but working settings become
//! [`Config::warnings`].
//!
//! Relative paths in a file (`secret_file`, `tls_cert`, `store.path`, ...) are resolved against
//! the directory of that file, so the daemon's working directory does not matter.
//!
//! The development default is [`DEV_DEFAULT`] read the same way, with paths relative to
//! [`DEV_STATE_DIR`]; the secrets it points to are generated there once
//! (32 random bytes, base64, mode 0600) and reused on later starts.

use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use rand::RngCore as _;
use serde::Deserialize;
use switchboard_turn::policy::Cidr;

use crate::cors::{self, AllowedOrigins};

/// Where the development default keeps its state and generated secrets.
pub const DEV_STATE_DIR: &str = "./switchboard-data";

/// The embedded development default; paths are relative to [`DEV_STATE_DIR`].
pub const DEV_DEFAULT: &str = r#"
dev = true

[http]
listen = "127.0.0.1:8080"

[turn]
listen = ["127.0.0.1:3478"]
relay_ip = "127.0.0.1"
secret_file = "turn-secret"

[auth]
jwt_secret_file = "jwt-secret"
admin_token_file = "admin-token"
open_conversations = true

[store]
path = "switchboard.db"
"#;

/// The secrets the development default generates in its state dir, with their keys.
const DEV_SECRETS: [(&str, &str); 3] = [
    ("turn-secret", "turn.secret_file"),
    ("jwt-secret", "auth.jwt_secret_file"),
    ("admin-token", "auth.admin_token_file"),
];

/// Where a file config without `turn.listen` listens.
const DEFAULT_TURN_LISTEN: &str = "0.0.0.0:3478";
/// Where a file config without `http.listen` listens: loopback, behind a reverse proxy.
const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:8080";
/// The SQLite file of a file config without `store.path` (the packaging's state dir).
const DEFAULT_STORE_PATH: &str = "/var/lib/switchboard/switchboard.db";
const DEFAULT_REALM: &str = "switchboard";
const DEFAULT_RELAY_PORTS: RangeInclusive<u16> = 49152..=65535;
const DEFAULT_CREDENTIAL_TTL: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(3600);
const MAX_MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// The longest credential lifetime accepted: a leaked credential must expire eventually.
pub const MAX_CREDENTIAL_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// `turn.total_quota` when not set (and the relay port range allows it), unless the derived
/// `turn.user_quota` is larger ([`default_user_quota`]).
const DEFAULT_TOTAL_QUOTA: u32 = 10_000;
/// TURN-over-TCP/TLS clients at once: each holds a socket, as each allocation does.
const DEFAULT_MAX_CONNECTIONS: u32 = 4096;
/// HTTP API connections at once (idle keep-alive ones included).
const DEFAULT_HTTP_MAX_CONNECTIONS: u32 = 10_000;
const DEFAULT_RING_TIMEOUT: Duration = Duration::from_secs(45);
const DEFAULT_RECONNECT_GRACE: Duration = Duration::from_secs(30);
const DEFAULT_MAX_PARTICIPANTS: u32 = 20;
/// RFC 8489 §14.9: REALM is fewer than 128 characters.
const MAX_REALM_LEN: usize = 127;

// ---------------------------------------------------------------------------------------------
// The validated configuration.

/// The whole configuration, validated.
#[derive(Debug)]
pub struct Config {
    /// Where it came from, for messages.
    pub origin: Origin,
    /// Development mode: relaxed checks (e.g. relay ports below 1024).
    pub dev: bool,
    pub http: HttpConfig,
    pub turn: TurnConfig,
    pub auth: AuthConfig,
    pub store: StoreConfig,
    pub calls: CallsConfig,
    pub log: LogConfig,
    pub webhooks: WebhooksConfig,
    /// Settings that work but are probably not what the operator wants.
    pub warnings: Vec<Warning>,
}

/// `[http]`.
#[derive(Debug)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// The most API connections open at once; those over it are closed as they come.
    pub max_connections: u32,
    pub public_url: Option<String>,
    pub tls: Option<TlsFiles>,
    /// Origins whose pages may use the API, Socket.IO and the JS client (see `src/cors.rs`).
    pub allowed_origins: AllowedOrigins,
}

/// `[turn]`.
#[derive(Debug)]
pub struct TurnConfig {
    /// UDP and TCP listeners (the same port for both).
    pub listen: Vec<SocketAddr>,
    /// TLS listeners.
    pub tls_listen: Vec<SocketAddr>,
    /// The certificate for `tls_listen`: `turn.tls_cert`/`tls_key`, else `[http]`'s.
    pub tls: Option<TlsFiles>,
    /// The most TCP and TLS client connections open at once.
    pub max_connections: u32,
    pub realm: String,
    /// The shared secret of the TURN REST credential scheme.
    pub secret: Secret,
    /// The public addresses advertised when behind NAT, at most one per IP version.
    pub external_ips: Vec<IpAddr>,
    /// The addresses relay sockets bind, at most one per IP version.
    pub relay_ips: Vec<IpAddr>,
    /// Some of `relay_ips` were taken from the routing table (`turn.relay_ip` not set and
    /// `turn.listen` binding a wildcard address).
    pub relay_ips_detected: bool,
    pub relay_ports: RangeInclusive<u16>,
    pub credential_ttl: Duration,
    /// The longest allocation lifetime granted (RFC 8656 §7.2; coturn's max-allocate-lifetime).
    pub max_lifetime: Duration,
    pub allow_peers: Vec<Cidr>,
    pub deny_peers: Vec<Cidr>,
    /// Allocations one user holds at once: as set, or [`default_user_quota`].
    pub user_quota: u32,
    /// `user_quota` was not set but derived from `calls.max_participants` and the URLs.
    pub user_quota_derived: bool,
    pub total_quota: u32,
    /// Between the expiry and the user name in credential usernames (coturn's
    /// `rest-api-separator`); `:` unless set.
    pub rest_api_separator: char,
}

/// `[auth]` (parsed only for now).
#[derive(Debug)]
pub struct AuthConfig {
    pub jwt_secret: Option<Secret>,
    pub admin_token: Option<Secret>,
    pub open_conversations: bool,
}

/// `[store]`.
#[derive(Debug)]
pub struct StoreConfig {
    /// The SQLite file.
    pub path: PathBuf,
}

/// `[calls]` (parsed only for now).
#[derive(Debug)]
pub struct CallsConfig {
    pub ring_timeout: Duration,
    pub reconnect_grace: Duration,
    pub max_participants: u32,
}

/// `[webhooks]`: off while `urls` is empty.
#[derive(Debug)]
pub struct WebhooksConfig {
    /// Where each event is posted (http:// or https://).
    pub urls: Vec<String>,
    /// The HMAC-SHA256 key of the signatures (the string's bytes); set when `urls` are.
    pub secret: Option<Secret>,
    /// One delivery attempt's limit: connect, TLS, request and response head.
    pub timeout: Duration,
    /// How long an event is retried before it is dropped.
    pub max_age: Duration,
}

/// At most this many `webhooks.url`s: each has its own queue and one request in flight.
pub const MAX_WEBHOOK_URLS: usize = 8;
const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(120);
const DEFAULT_WEBHOOK_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// The longest `webhooks.max_age`: a receiver down for longer loses events, but the outbox
/// stays bounded.
const MAX_WEBHOOK_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// `[log]`.
#[derive(Debug)]
pub struct LogConfig {
    /// A tracing `EnvFilter` directive, like `info` or `switchboard=debug,info`.
    pub level: String,
    pub format: LogFormat,
}

/// `log.format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// A certificate chain and its key, both PEM files.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The section the two keys are in (`turn` or `http`), for messages.
    pub section: &'static str,
}

/// A secret string; `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Where a configuration came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    /// The embedded development default, with its state dir.
    DevDefault(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::DevDefault(dir) => {
                write!(f, "embedded development default ({})", dir.display())
            }
        }
    }
}

/// A configuration error: which key and why, in which file.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, or the development default; empty until [`ConfigError::at`] fills it.
    pub origin: String,
    /// The key, like `turn.allow_peers[1]`; where in the file when the key is not known; empty
    /// when the whole file is at fault (it cannot be read).
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            origin: String::new(),
            key: key.into(),
            message: message.into(),
        }
    }

    pub(crate) fn at(mut self, origin: &Origin) -> Self {
        self.origin = origin.to_string();
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.key.as_str() {
            "" => write!(f, "{}: {}", self.origin, self.message),
            key => write!(f, "{}: {key}: {}", self.origin, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A setting that works but is probably a mistake.
#[derive(Debug, PartialEq, Eq)]
pub struct Warning {
    pub key: String,
    pub message: String,
    /// The relay would run, but clients outside this box's network could not use it: `serve`
    /// starts anyway (a LAN-only or not-yet-networked box is legitimate), `check-config`
    /// exits non-zero.
    pub unreachable: bool,
}

impl Warning {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Warning {
            key: key.into(),
            message: message.into(),
            unreachable: false,
        }
    }

    fn unreachable(key: impl Into<String>, message: impl Into<String>) -> Self {
        Warning {
            key: key.into(),
            message: message.into(),
            unreachable: true,
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

// ---------------------------------------------------------------------------------------------
// Loading.

/// Loads `path`, or the development default in [`DEV_STATE_DIR`] when there is none.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    match path {
        Some(path) => load_file(path),
        None => load_dev_default(Path::new(DEV_STATE_DIR)),
    }
}

/// Loads and validates a config file.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let origin = Origin::File(path.to_owned());
    let text = fs::read_to_string(path)
        .map_err(|e| ConfigError::new("", format!("cannot read: {e}")).at(&origin))?;
    let base = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    load_str(&text, base, origin)
}

/// The development default: creates `state_dir` (0700) and its secrets on first use.
pub fn load_dev_default(state_dir: &Path) -> Result<Config, ConfigError> {
    let origin = Origin::DevDefault(state_dir.to_owned());
    let mut warnings = prepare_state_dir(state_dir).map_err(|e| e.at(&origin))?;
    let mut config = load_str(DEV_DEFAULT, state_dir, origin)?;
    config.warnings.append(&mut warnings);
    Ok(config)
}

/// Parses and validates TOML `text`; relative paths are resolved against `base`.
pub fn load_str(text: &str, base: &Path, origin: Origin) -> Result<Config, ConfigError> {
    load_routed(text, base, origin, kernel_route_source)
}

/// [`load_str`] with the routing table given (tests).
fn load_routed(
    text: &str,
    base: &Path,
    origin: Origin,
    route_source: RouteSource,
) -> Result<Config, ConfigError> {
    let raw: Raw = toml::from_str(text).map_err(|e| toml_error(text, &e).at(&origin))?;
    validate(raw, base, origin.clone(), route_source).map_err(|e| e.at(&origin))
}

/// The address this box sends from towards the internet, for the IP version of the wildcard
/// address given (`0.0.0.0` or `::`); `None` when there is no such route.
type RouteSource = fn(IpAddr) -> Option<IpAddr>;

/// [`RouteSource`] from the kernel's routing table: the local address of a UDP socket
/// connected to a documentation address (RFC 5737, RFC 3849). Connecting a UDP socket only
/// looks the route up; nothing is sent.
fn kernel_route_source(any: IpAddr) -> Option<IpAddr> {
    let probe: SocketAddr = match any {
        IpAddr::V4(_) => (Ipv4Addr::new(192, 0, 2, 1), 9).into(),
        IpAddr::V6(_) => (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 9).into(),
    };
    let socket = std::net::UdpSocket::bind((any, 0)).ok()?;
    socket.connect(probe).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

/// Creates the development state dir and generates its missing secrets.
fn prepare_state_dir(dir: &Path) -> Result<Vec<Warning>, ConfigError> {
    let shown = dir.display().to_string();
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| ConfigError::new(&shown, format!("cannot create the state dir: {e}")))?;
    let mut warnings = Vec::new();
    let mode = fs::metadata(dir)
        .map_err(|e| ConfigError::new(&shown, e.to_string()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        warnings.push(Warning::new(
            shown,
            format!(
                "the state dir holds secrets but has mode {:o}; run chmod 700 on it",
                mode & 0o777
            ),
        ));
    }
    for (name, key) in DEV_SECRETS {
        let path = dir.join(name);
        ensure_secret_file(&path).map_err(|e| {
            ConfigError::new(key, format!("cannot create `{}`: {e}", path.display()))
        })?;
    }
    Ok(warnings)
}

/// Writes 32 random bytes, base64, to `path` (mode 0600) unless it exists.
///
/// The file appears atomically (written aside, then hard-linked into place), so two processes
/// starting at once agree on one secret and neither reads a half-written file.
fn ensure_secret_file(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let text = format!(
        "{}\n",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    );
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let _ = fs::remove_file(&tmp); // left over by an earlier process with our pid
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        })
        .and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match written {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()), // another process won
        other => other,
    }
}

/// Turns a toml error into a [`ConfigError`], naming the key where the text shows it.
///
/// toml's message already names an unknown key ("unknown field `relay_port`, expected one
/// of ...") or the expected type; the key path comes from the line the error points at and the
/// table header above it.
fn toml_error(text: &str, err: &toml::de::Error) -> ConfigError {
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
fn key_at_line(text: &str, line: usize) -> Option<String> {
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

// ---------------------------------------------------------------------------------------------
// The file as serde reads it.

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Raw {
    dev: bool,
    http: RawHttp,
    turn: RawTurn,
    auth: RawAuth,
    store: RawStore,
    calls: RawCalls,
    log: RawLog,
    webhooks: RawWebhooks,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawHttp {
    listen: Option<String>,
    max_connections: Option<u32>,
    public_url: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    allowed_origins: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawTurn {
    listen: Option<Vec<String>>,
    tls_listen: Vec<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    realm: Option<String>,
    secret: Option<String>,
    secret_file: Option<PathBuf>,
    external_ip: Option<OneOrMany>,
    relay_ip: Option<OneOrMany>,
    max_connections: Option<u32>,
    relay_ports: Option<String>,
    credential_ttl: Option<String>,
    max_lifetime: Option<String>,
    allow_peers: Vec<String>,
    deny_peers: Vec<String>,
    user_quota: Option<u32>,
    total_quota: Option<u32>,
    rest_api_separator: Option<String>,
}

/// An address, or a list of them (one per IP version).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawAuth {
    jwt_secret: Option<String>,
    jwt_secret_file: Option<PathBuf>,
    admin_token: Option<String>,
    admin_token_file: Option<PathBuf>,
    open_conversations: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawStore {
    path: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawCalls {
    ring_timeout: Option<String>,
    reconnect_grace: Option<String>,
    max_participants: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawWebhooks {
    url: Option<OneOrMany>,
    secret: Option<String>,
    secret_file: Option<PathBuf>,
    timeout: Option<String>,
    max_age: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawLog {
    level: Option<String>,
    format: LogFormat,
}

// ---------------------------------------------------------------------------------------------
// Validation.

type Result<T, E = ConfigError> = std::result::Result<T, E>;

fn validate(raw: Raw, base: &Path, origin: Origin, route_source: RouteSource) -> Result<Config> {
    let mut warnings = Vec::new();
    let dev = raw.dev;
    let http = validate_http(raw.http, base, &mut warnings)?;
    let calls = validate_calls(raw.calls)?;
    let turn = validate_turn(
        raw.turn,
        base,
        (dev, route_source),
        (http.tls.as_ref(), &calls),
        &mut warnings,
    )?;
    let auth = AuthConfig {
        jwt_secret: secret_pair(
            ("auth.jwt_secret", raw.auth.jwt_secret),
            ("auth.jwt_secret_file", raw.auth.jwt_secret_file),
            base,
        )?,
        admin_token: secret_pair(
            ("auth.admin_token", raw.auth.admin_token),
            ("auth.admin_token_file", raw.auth.admin_token_file),
            base,
        )?,
        open_conversations: raw.auth.open_conversations,
    };
    let store = StoreConfig {
        path: resolve(
            base,
            &raw.store
                .path
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STORE_PATH)),
        ),
    };
    let log = validate_log(raw.log)?;
    let webhooks = validate_webhooks(raw.webhooks, base, &mut warnings)?;
    Ok(Config {
        origin,
        dev,
        http,
        turn,
        auth,
        store,
        calls,
        log,
        webhooks,
        warnings,
    })
}

fn validate_calls(raw: RawCalls) -> Result<CallsConfig> {
    Ok(CallsConfig {
        ring_timeout: duration("calls.ring_timeout", raw.ring_timeout)?
            .unwrap_or(DEFAULT_RING_TIMEOUT),
        reconnect_grace: duration("calls.reconnect_grace", raw.reconnect_grace)?
            .unwrap_or(DEFAULT_RECONNECT_GRACE),
        max_participants: match raw.max_participants {
            None => DEFAULT_MAX_PARTICIPANTS,
            Some(n) if n >= 2 => n,
            Some(n) => {
                return Err(ConfigError::new(
                    "calls.max_participants",
                    format!("{n} is too few: a call needs at least 2"),
                ))
            }
        },
    })
}

fn validate_webhooks(
    raw: RawWebhooks,
    base: &Path,
    warnings: &mut Vec<Warning>,
) -> Result<WebhooksConfig> {
    let one = raw
        .url
        .as_ref()
        .is_some_and(|u| matches!(u, OneOrMany::One(_)));
    let list = raw.url.map(OneOrMany::into_vec).unwrap_or_default();
    if list.len() > MAX_WEBHOOK_URLS {
        return Err(ConfigError::new(
            "webhooks.url",
            format!("lists {} URLs; at most {MAX_WEBHOOK_URLS}", list.len()),
        ));
    }
    let mut urls: Vec<String> = Vec::with_capacity(list.len());
    for (i, url) in list.into_iter().enumerate() {
        let key = if one {
            "webhooks.url".to_owned()
        } else {
            format!("webhooks.url[{i}]")
        };
        let url = url.trim().to_owned();
        webhook_url(&url).map_err(|why| ConfigError::new(&key, format!("`{url}` {why}")))?;
        if urls.contains(&url) {
            return Err(ConfigError::new(key, format!("`{url}` is listed twice")));
        }
        urls.push(url);
    }
    let secret = secret_pair(
        ("webhooks.secret", raw.secret),
        ("webhooks.secret_file", raw.secret_file),
        base,
    )?;
    match (&secret, urls.is_empty()) {
        (None, false) => {
            return Err(ConfigError::new(
                "webhooks.secret",
                "required with webhooks.url: set webhooks.secret or webhooks.secret_file (the key \
                 the host app verifies each webhook's signature with)",
            ))
        }
        (Some(_), true) => warnings.push(Warning::new(
            "webhooks.secret",
            "is set but webhooks.url is not: no webhooks are sent",
        )),
        (Some(s), false) if s.expose().len() < 16 => warnings.push(Warning::new(
            "webhooks.secret",
            "is shorter than 16 bytes; use a long random string",
        )),
        _ => {}
    }
    let timeout = duration("webhooks.timeout", raw.timeout)?.unwrap_or(DEFAULT_WEBHOOK_TIMEOUT);
    if timeout > MAX_WEBHOOK_TIMEOUT {
        return Err(ConfigError::new(
            "webhooks.timeout",
            format!(
                "at most {}",
                humantime::format_duration(MAX_WEBHOOK_TIMEOUT)
            ),
        ));
    }
    let max_age = duration("webhooks.max_age", raw.max_age)?.unwrap_or(DEFAULT_WEBHOOK_MAX_AGE);
    if max_age > MAX_WEBHOOK_MAX_AGE {
        // The outbox is bounded by it while a receiver is down.
        return Err(ConfigError::new(
            "webhooks.max_age",
            format!(
                "at most {} (events older than this are dropped; the queue grows until then)",
                humantime::format_duration(MAX_WEBHOOK_MAX_AGE)
            ),
        ));
    }
    Ok(WebhooksConfig {
        urls,
        secret,
        timeout,
        max_age,
    })
}

/// Why `url` is not a webhook URL: `http://` or `https://`, a host, no user info, no
/// fragment, at most 2048 bytes.
fn webhook_url(url: &str) -> std::result::Result<(), &'static str> {
    if url.len() > 2048 {
        return Err("is longer than 2048 bytes");
    }
    let uri: hyper::Uri = url
        .parse()
        .map_err(|_| "is not a URL like \"https://chat.example.com/hooks/switchboard\"")?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("is not an http:// or https:// URL"),
    }
    let authority = uri.authority().ok_or("has no host")?;
    if authority.as_str().contains('@') {
        return Err("has user info; put no credentials in the URL (the signature authenticates)");
    }
    if authority.host().is_empty() {
        return Err("has no host");
    }
    if url.contains('#') {
        return Err("has a fragment");
    }
    Ok(())
}

fn validate_http(raw: RawHttp, base: &Path, warnings: &mut Vec<Warning>) -> Result<HttpConfig> {
    let listen = socket_addr(
        "http.listen",
        raw.listen.as_deref().unwrap_or(DEFAULT_HTTP_LISTEN),
    )?;
    if let Some(url) = &raw.public_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::new(
                "http.public_url",
                format!("`{url}` is not an http:// or https:// URL"),
            ));
        }
    }
    let max_connections = raw.max_connections.unwrap_or(DEFAULT_HTTP_MAX_CONNECTIONS);
    if max_connections == 0 {
        return Err(ConfigError::new(
            "http.max_connections",
            "must be at least 1 (it caps the API's client connections)",
        ));
    }
    Ok(HttpConfig {
        listen,
        max_connections,
        public_url: raw.public_url,
        tls: tls_files("http", raw.tls_cert, raw.tls_key, base)?,
        allowed_origins: allowed_origins(raw.allowed_origins, warnings)?,
    })
}

fn allowed_origins(raw: Vec<String>, warnings: &mut Vec<Warning>) -> Result<AllowedOrigins> {
    const KEY: &str = "http.allowed_origins";
    if raw.iter().any(|o| o == "*") {
        if raw.len() > 1 {
            return Err(ConfigError::new(
                KEY,
                "\"*\" allows every origin: list it alone, or list origins without it",
            ));
        }
        warnings.push(Warning::new(
            KEY,
            "\"*\": pages of every origin may call the API and open sockets with a token \
             they hold; list the host application's origins instead",
        ));
        return Ok(AllowedOrigins::Any);
    }
    let mut list = Vec::with_capacity(raw.len());
    for (i, o) in raw.iter().enumerate() {
        let o = cors::parse_origin(o).map_err(|m| ConfigError::new(format!("{KEY}[{i}]"), m))?;
        if !list.contains(&o) {
            list.push(o);
        }
    }
    Ok(AllowedOrigins::List(list))
}

fn validate_turn(
    raw: RawTurn,
    base: &Path,
    (dev, route_source): (bool, RouteSource),
    (http_tls, calls): (Option<&TlsFiles>, &CallsConfig),
    warnings: &mut Vec<Warning>,
) -> Result<TurnConfig> {
    let listen = match &raw.listen {
        None => vec![socket_addr("turn.listen", DEFAULT_TURN_LISTEN)?],
        Some(list) if list.is_empty() => {
            return Err(ConfigError::new(
                "turn.listen",
                "lists no address; the relay needs at least one, like \"0.0.0.0:3478\"",
            ))
        }
        Some(list) => socket_addrs("turn.listen", list)?,
    };
    let tls_listen = socket_addrs("turn.tls_listen", &raw.tls_listen)?;
    let tls = tls_files("turn", raw.tls_cert, raw.tls_key, base)?.or_else(|| http_tls.cloned());
    if !tls_listen.is_empty() && tls.is_none() {
        return Err(ConfigError::new(
            "turn.tls_listen",
            "needs a certificate: turn.tls_cert and turn.tls_key (or http.tls_cert and \
             http.tls_key, which are used when turn's are not set)",
        ));
    }
    let max_connections = raw.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    if max_connections == 0 {
        return Err(ConfigError::new(
            "turn.max_connections",
            "must be at least 1 (it caps TURN-over-TCP and TLS clients)",
        ));
    }

    let realm = raw.realm.unwrap_or_else(|| DEFAULT_REALM.to_owned());
    if realm.is_empty() || realm.len() > MAX_REALM_LEN || realm.chars().any(char::is_control) {
        return Err(ConfigError::new(
            "turn.realm",
            format!("must be 1 to {MAX_REALM_LEN} printable characters"),
        ));
    }

    let secret = secret_pair(
        ("turn.secret", raw.secret),
        ("turn.secret_file", raw.secret_file),
        base,
    )?
    .ok_or_else(|| {
        ConfigError::new(
            "turn.secret",
            "required: set turn.secret or turn.secret_file (the shared secret credentials are signed with)",
        )
    })?;
    if secret.expose().len() < 16 {
        warnings.push(Warning::new(
            "turn.secret",
            "is shorter than 16 bytes; use a long random string",
        ));
    }
    let rest_api_separator = match raw.rest_api_separator.as_deref() {
        None => switchboard_turn::credentials::DEFAULT_SEPARATOR,
        Some(s) => rest_api_separator(s)?,
    };

    let external_ips = raw
        .external_ip
        .map(OneOrMany::into_vec)
        .unwrap_or_default()
        .iter()
        .map(|s| ip("turn.external_ip", s))
        .collect::<Result<Vec<_>>>()?;
    let (relay_ips, relay_ips_detected) = match raw.relay_ip.map(OneOrMany::into_vec) {
        Some(list) if !list.is_empty() => (
            list.iter()
                .map(|s| ip("turn.relay_ip", s))
                .collect::<Result<Vec<_>>>()?,
            false,
        ),
        _ => listen_relay_ips(&listen, route_source, warnings),
    };
    for (key, list) in [
        ("turn.relay_ip", &relay_ips),
        ("turn.external_ip", &external_ips),
    ] {
        for addr in list {
            if addr.is_unspecified() || addr.is_multicast() {
                return Err(ConfigError::new(
                    key,
                    format!("{addr} is not a unicast address; set it to this box's address"),
                ));
            }
        }
        if list.len() > 2 || (list.len() == 2 && list[0].is_ipv4() == list[1].is_ipv4()) {
            return Err(ConfigError::new(
                key,
                "takes at most one IPv4 and one IPv6 address",
            ));
        }
    }
    for ext in &external_ips {
        if !relay_ips.iter().any(|r| r.is_ipv4() == ext.is_ipv4()) {
            return Err(ConfigError::new(
                "turn.external_ip",
                format!(
                    "{ext} has no turn.relay_ip of its IP version to stand for (relay_ip is {})",
                    list_ips(&relay_ips)
                ),
            ));
        }
    }
    for relay in &relay_ips {
        let has_external = external_ips.iter().any(|e| e.is_ipv4() == relay.is_ipv4());
        if !has_external && is_private(*relay) {
            warnings.push(Warning::unreachable(
                "turn.external_ip",
                format!(
                    "not set, and turn.relay_ip {relay} is a private address: clients outside \
                     this network cannot reach the relayed addresses; set turn.external_ip to \
                     the public address this box is reached at behind NAT (or to {relay} \
                     itself for a relay only this network uses)"
                ),
            ));
        }
    }

    let relay_ports = match raw.relay_ports.as_deref() {
        None => DEFAULT_RELAY_PORTS,
        Some(s) => port_range("turn.relay_ports", s, dev)?,
    };
    let port_count = u32::from(*relay_ports.end()) - u32::from(*relay_ports.start()) + 1;

    let credential_ttl =
        duration("turn.credential_ttl", raw.credential_ttl)?.unwrap_or(DEFAULT_CREDENTIAL_TTL);
    if credential_ttl > MAX_CREDENTIAL_TTL {
        return Err(ConfigError::new(
            "turn.credential_ttl",
            "must be at most 365 days",
        ));
    }

    let max_lifetime =
        duration("turn.max_lifetime", raw.max_lifetime)?.unwrap_or(DEFAULT_MAX_LIFETIME);
    if max_lifetime > MAX_MAX_LIFETIME || max_lifetime < Duration::from_secs(1) {
        return Err(ConfigError::new(
            "turn.max_lifetime",
            "must be from 1s to 24h (allocations are refreshed well before it runs out)",
        ));
    }

    let user_quota = quota("turn.user_quota", raw.user_quota)?;
    let total_quota = quota("turn.total_quota", raw.total_quota)?;
    if let Some(total) = total_quota.filter(|&t| t > port_count) {
        return Err(ConfigError::new(
            "turn.total_quota",
            format!(
                "{total} allocations need {total} relay ports but turn.relay_ports has {port_count}"
            ),
        ));
    }

    let mut turn = TurnConfig {
        listen,
        tls_listen,
        tls,
        max_connections,
        realm,
        secret,
        external_ips,
        relay_ips,
        relay_ips_detected,
        relay_ports,
        credential_ttl,
        max_lifetime,
        allow_peers: cidrs("turn.allow_peers", &raw.allow_peers)?,
        deny_peers: cidrs("turn.deny_peers", &raw.deny_peers)?,
        user_quota: 0,
        user_quota_derived: false,
        total_quota: 0,
        rest_api_separator,
    };
    let urls = crate::turn_credentials::turn_urls(&turn).len();
    let derived = default_user_quota(calls.max_participants, urls);
    (turn.user_quota, turn.total_quota) = match (user_quota, total_quota) {
        (Some(user), Some(total)) if user > total => {
            return Err(ConfigError::new(
                "turn.total_quota",
                format!(
                    "{total} is below turn.user_quota ({user}): raise total_quota to at least \
                     user_quota, or lower user_quota"
                ),
            ))
        }
        (Some(user), Some(total)) => (user, total),
        // The default total makes room for the user quota, as far as the ports go.
        (Some(user), None) => {
            let total = DEFAULT_TOTAL_QUOTA.max(user).min(port_count);
            if user > total {
                return Err(ConfigError::new(
                    "turn.user_quota",
                    format!(
                        "{user} allocations need {user} relay ports but turn.relay_ports has \
                         {port_count}"
                    ),
                ));
            }
            (user, total)
        }
        (None, total) => {
            let total = total.unwrap_or_else(|| DEFAULT_TOTAL_QUOTA.max(derived).min(port_count));
            if derived > total {
                warnings.push(Warning::new(
                    "turn.user_quota",
                    format!(
                        "not set: a user in a {}-person call over {urls} TURN URLs may need \
                         {derived} allocations, but turn.total_quota caps it at {total}",
                        calls.max_participants
                    ),
                ));
            }
            turn.user_quota_derived = true;
            (derived.min(total), total)
        }
    };
    Ok(turn)
}

/// `turn.user_quota` when not set: enough allocations for one user in the largest call the
/// daemon runs peer to peer, `calls.max_participants` (all calls are mesh calls today; once
/// the server forwards group calls, only the calls below that size count here).
///
/// In a mesh each participant holds one peer connection per other participant, and each
/// connection gathers a relay candidate, that is one allocation, from every TURN URL the
/// credentials endpoint serves (`turn_urls`: UDP and TCP per listener, TLS per TLS
/// listener). Times two for ICE restarts: a restart (a network change, a reconnect)
/// allocates afresh on every URL while the old allocations live on until the client deletes
/// them or, if it vanished, they expire, so a user mid-restart briefly holds two sets.
pub fn default_user_quota(max_participants: u32, turn_urls: usize) -> u32 {
    let others = u64::from(max_participants.saturating_sub(1));
    let urls = u64::try_from(turn_urls.max(1)).unwrap_or(u64::MAX);
    let need = others.saturating_mul(urls).saturating_mul(2);
    u32::try_from(need).unwrap_or(u32::MAX).max(1)
}

/// `turn.rest_api_separator`: one printable ASCII character that cannot start an expiry.
fn rest_api_separator(s: &str) -> Result<char> {
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c.is_ascii_graphic() && !c.is_ascii_digit() => Ok(c),
        _ => Err(ConfigError::new(
            "turn.rest_api_separator",
            format!(
                "{s:?} is not one printable ASCII character other than a digit (coturn's \
                 rest-api-separator; the default is \":\")"
            ),
        )),
    }
}

fn validate_log(raw: RawLog) -> Result<LogConfig> {
    let level = raw.level.unwrap_or_else(|| "info".to_owned());
    if level.trim().is_empty() {
        return Err(ConfigError::new(
            "log.level",
            "must not be empty; use e.g. \"info\"",
        ));
    }
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&level) {
        return Err(ConfigError::new(
            "log.level",
            format!("`{level}` is not a filter like \"info\" or \"switchboard=debug,info\": {e}"),
        ));
    }
    Ok(LogConfig {
        level,
        format: raw.format,
    })
}

/// `secret` or `secret_file`: at most one of them; the file's contents are trimmed.
fn secret_pair(
    (key, value): (&str, Option<String>),
    (file_key, file): (&str, Option<PathBuf>),
    base: &Path,
) -> Result<Option<Secret>> {
    let secret = match (value, file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                key,
                format!("set either {key} or {file_key}, not both"),
            ))
        }
        (None, None) => return Ok(None),
        (Some(value), None) => value,
        (None, Some(file)) => {
            let path = resolve(base, &file);
            let text = fs::read_to_string(&path).map_err(|e| {
                ConfigError::new(file_key, format!("cannot read `{}`: {e}", path.display()))
            })?;
            let text = text.trim();
            if text.is_empty() {
                return Err(ConfigError::new(
                    file_key,
                    format!("`{}` is empty", path.display()),
                ));
            }
            return Ok(Some(Secret(text.to_owned())));
        }
    };
    if secret.is_empty() {
        return Err(ConfigError::new(key, "must not be empty"));
    }
    Ok(Some(Secret(secret)))
}

fn tls_files(
    section: &'static str,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    base: &Path,
) -> Result<Option<TlsFiles>> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(TlsFiles {
            cert: resolve(base, &cert),
            key: resolve(base, &key),
            section,
        })),
        (Some(_), None) => Err(ConfigError::new(
            format!("{section}.tls_key"),
            format!("required with {section}.tls_cert"),
        )),
        (None, Some(_)) => Err(ConfigError::new(
            format!("{section}.tls_cert"),
            format!("required with {section}.tls_key"),
        )),
    }
}

/// `a, b` for messages.
pub fn list_ips(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        base.join(path)
    }
}

fn socket_addr(key: &str, s: &str) -> Result<SocketAddr> {
    s.trim().parse().map_err(|_| {
        ConfigError::new(
            key,
            format!("`{s}` is not an ip:port address like \"0.0.0.0:3478\" or \"[::]:3478\""),
        )
    })
}

fn socket_addrs(key: &str, list: &[String]) -> Result<Vec<SocketAddr>> {
    let mut addrs = Vec::with_capacity(list.len());
    for (i, s) in list.iter().enumerate() {
        let addr = socket_addr(&format!("{key}[{i}]"), s)?;
        if addrs.contains(&addr) {
            return Err(ConfigError::new(
                format!("{key}[{i}]"),
                format!("`{addr}` is listed twice"),
            ));
        }
        addrs.push(addr);
    }
    Ok(addrs)
}

fn ip(key: &str, s: &str) -> Result<IpAddr> {
    s.trim()
        .parse()
        .map_err(|_| ConfigError::new(key, format!("`{s}` is not an IP address")))
}

fn cidrs(key: &str, list: &[String]) -> Result<Vec<Cidr>> {
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse::<Cidr>()
                .map_err(|e| ConfigError::new(format!("{key}[{i}]"), e.to_string()))
        })
        .collect()
}

fn duration(key: &str, s: Option<String>) -> Result<Option<Duration>> {
    let Some(s) = s else { return Ok(None) };
    let d = humantime::parse_duration(s.trim()).map_err(|e| {
        ConfigError::new(
            key,
            format!("`{s}` is not a duration like \"24h\" or \"90s\": {e}"),
        )
    })?;
    if d.is_zero() {
        return Err(ConfigError::new(key, "must be longer than zero"));
    }
    Ok(Some(d))
}

/// A quota as set, if set: at least 1.
fn quota(key: &str, value: Option<u32>) -> Result<Option<u32>> {
    match value {
        Some(0) => Err(ConfigError::new(
            key,
            "must be at least 1 (0 would refuse every allocation)",
        )),
        value => Ok(value),
    }
}

/// `"lo-hi"`, with `lo <= hi` and, outside dev mode, `lo >= 1024`.
fn port_range(key: &str, s: &str, dev: bool) -> Result<RangeInclusive<u16>> {
    let bad = || {
        ConfigError::new(
            key,
            format!("`{s}` is not a port range like \"49152-65535\""),
        )
    };
    let (lo, hi) = s.split_once('-').ok_or_else(bad)?;
    let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
    let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
    if lo == 0 || lo > hi {
        return Err(ConfigError::new(
            key,
            format!("`{s}`: the first port must be at least 1 and not above the last"),
        ));
    }
    if lo < 1024 && !dev {
        return Err(ConfigError::new(
            key,
            format!("`{s}` starts below 1024, among the system ports; use e.g. \"49152-65535\""),
        ));
    }
    Ok(lo..=hi)
}

/// The relay addresses when `turn.relay_ip` is not set, one per IP version `listen` uses: a
/// specific listen address stands for its version; for a wildcard one, the address the routing
/// table sends from, or loopback (with a warning) when there is no route. Also says whether
/// any came from the routing table.
fn listen_relay_ips(
    listen: &[SocketAddr],
    route_source: RouteSource,
    warnings: &mut Vec<Warning>,
) -> (Vec<IpAddr>, bool) {
    let mut ips: Vec<IpAddr> = Vec::new();
    let mut detected = false;
    let specific = listen.iter().filter(|a| !a.ip().is_unspecified());
    let wildcard = listen.iter().filter(|a| a.ip().is_unspecified());
    for addr in specific.chain(wildcard) {
        let any = addr.ip();
        if ips.iter().any(|i| i.is_ipv4() == any.is_ipv4()) {
            continue;
        }
        if !any.is_unspecified() {
            ips.push(any);
            continue;
        }
        let ip = route_source(any).unwrap_or_else(|| {
            let (version, loopback) = match any {
                IpAddr::V4(_) => ("IPv4", IpAddr::from(Ipv4Addr::LOCALHOST)),
                IpAddr::V6(_) => ("IPv6", IpAddr::from(Ipv6Addr::LOCALHOST)),
            };
            warnings.push(Warning::unreachable(
                "turn.relay_ip",
                format!(
                    "not set, and this box has no {version} route to take its address from \
                     (turn.listen binds {any}): relaying on {loopback}, which only this box \
                     reaches; set turn.relay_ip to this box's address"
                ),
            ));
            loopback
        });
        detected = true;
        ips.push(ip);
    }
    (ips, detected)
}

/// RFC 1918, CGNAT (RFC 6598) and IPv6 unique-local addresses: reachable only inside a network.
fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private() || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => v6.segments()[0] & 0xfe00 == 0xfc00,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config> {
        load_str(text, Path::new("/etc/switchboard"), origin())
    }

    fn origin() -> Origin {
        Origin::File("/etc/switchboard/switchboard.toml".into())
    }

    fn err(text: &str) -> ConfigError {
        load(text).expect_err("config should be refused")
    }

    fn ips(v: &[&str]) -> Vec<IpAddr> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    const MINIMAL: &str = "[turn]\nsecret = \"0123456789abcdef\"\nrelay_ip = \"198.51.100.7\"\n";

    #[test]
    fn allowed_origins_are_origins_as_browsers_send_them() {
        let c = load(&format!(
            "{MINIMAL}[http]\nallowed_origins = [\"https://Chat.example.com\", \"http://127.0.0.1:5173\", \"https://chat.example.com\"]\n"
        ))
        .unwrap();
        assert_eq!(
            c.http.allowed_origins,
            AllowedOrigins::List(vec![
                "https://chat.example.com".into(),
                "http://127.0.0.1:5173".into()
            ])
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert!(load(MINIMAL)
            .unwrap()
            .http
            .allowed_origins
            .is_same_origin_only());
        let any = load(&format!("{MINIMAL}[http]\nallowed_origins = [\"*\"]\n")).unwrap();
        assert_eq!(any.http.allowed_origins, AllowedOrigins::Any);
        assert!(any.warnings.iter().any(|w| w.key == "http.allowed_origins"));
        for (list, key) in [
            ("[\"https://chat.example.com/\"]", "http.allowed_origins[0]"),
            (
                "[\"https://a.example\", \"chat.example.com\"]",
                "http.allowed_origins[1]",
            ),
            ("[\"*\", \"https://a.example\"]", "http.allowed_origins"),
        ] {
            let e = err(&format!("{MINIMAL}[http]\nallowed_origins = {list}\n"));
            assert_eq!(e.key, key, "{list}: {e}");
        }
    }

    const FULL: &str = r#"
dev = false

[http]
listen = "0.0.0.0:8443"
max_connections = 500
public_url = "https://calls.example.com"
tls_cert = "/etc/switchboard/cert.pem"
tls_key = "key.pem"

[turn]
listen = ["0.0.0.0:3478", "[::]:3478"]
tls_listen = ["0.0.0.0:5349"]
tls_cert = "/etc/switchboard/cert.pem"
tls_key = "/etc/switchboard/key.pem"
realm = "calls.example.com"
secret = "a-long-random-shared-secret"
external_ip = "203.0.113.10"
relay_ip = "10.0.0.5"
relay_ports = "50000-59999"
credential_ttl = "12h"
allow_peers = ["10.1.0.0/16", "fd00::/8"]
deny_peers = ["198.18.0.0/15"]
user_quota = 5
total_quota = 2000

[auth]
jwt_secret = "jwt"
admin_token_file = "/dev/null/nope"
open_conversations = true

[store]
path = "/var/lib/switchboard/calls.db"

[calls]
ring_timeout = "30s"
reconnect_grace = "1m"
max_participants = 8

[log]
level = "switchboard=debug,info"
format = "json"
"#;

    #[test]
    fn full_example_parses() {
        // admin_token_file points nowhere: swap it for a readable file.
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("admin"), "  tok\n").unwrap();
        let text = FULL.replace("/dev/null/nope", "admin");
        let c = load_str(&text, dir.path(), origin()).unwrap();
        assert!(!c.dev);
        assert_eq!(c.http.listen, "0.0.0.0:8443".parse().unwrap());
        assert_eq!(c.http.max_connections, 500);
        assert_eq!(
            c.http.public_url.as_deref(),
            Some("https://calls.example.com")
        );
        let tls = c.http.tls.unwrap();
        assert_eq!(tls.cert, PathBuf::from("/etc/switchboard/cert.pem"));
        assert_eq!(tls.key, dir.path().join("key.pem"));
        let t = &c.turn;
        assert_eq!(
            t.listen,
            vec![
                "0.0.0.0:3478".parse::<SocketAddr>().unwrap(),
                "[::]:3478".parse().unwrap()
            ]
        );
        assert_eq!(t.tls_listen, vec!["0.0.0.0:5349".parse().unwrap()]);
        assert_eq!(t.realm, "calls.example.com");
        assert_eq!(t.secret.expose(), "a-long-random-shared-secret");
        assert_eq!(t.external_ips, ["203.0.113.10".parse::<IpAddr>().unwrap()]);
        assert_eq!(t.relay_ips, ["10.0.0.5".parse::<IpAddr>().unwrap()]);
        assert_eq!(t.relay_ports, 50000..=59999);
        assert_eq!(t.credential_ttl, Duration::from_secs(12 * 3600));
        assert_eq!(t.allow_peers.len(), 2);
        assert_eq!(t.deny_peers, vec!["198.18.0.0/15".parse().unwrap()]);
        assert_eq!((t.user_quota, t.total_quota), (5, 2000));
        assert_eq!(c.auth.jwt_secret.unwrap().expose(), "jwt");
        assert_eq!(c.auth.admin_token.unwrap().expose(), "tok");
        assert!(c.auth.open_conversations);
        assert_eq!(c.store.path, PathBuf::from("/var/lib/switchboard/calls.db"));
        assert_eq!(c.calls.ring_timeout, Duration::from_secs(30));
        assert_eq!(c.calls.reconnect_grace, Duration::from_secs(60));
        assert_eq!(c.calls.max_participants, 8);
        assert_eq!(c.log.level, "switchboard=debug,info");
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.warnings, vec![]);
    }

    #[test]
    fn missing_sections_take_defaults() {
        let c = load(MINIMAL).unwrap();
        assert!(!c.dev);
        assert_eq!(c.http.listen, DEFAULT_HTTP_LISTEN.parse().unwrap());
        assert_eq!(c.http.max_connections, 10_000);
        assert_eq!(c.turn.listen, vec![DEFAULT_TURN_LISTEN.parse().unwrap()]);
        assert_eq!(c.turn.realm, "switchboard");
        assert_eq!(c.turn.relay_ports, 49152..=65535);
        assert_eq!(c.turn.credential_ttl, Duration::from_secs(86400));
        // 19 other participants x 2 URLs (UDP and TCP on 0.0.0.0:3478) x 2.
        assert_eq!((c.turn.user_quota, c.turn.total_quota), (76, 10_000));
        assert!(c.turn.user_quota_derived);
        assert_eq!(c.turn.rest_api_separator, ':');
        assert!(c.turn.allow_peers.is_empty() && c.turn.external_ips.is_empty());
        assert!(c.auth.jwt_secret.is_none() && !c.auth.open_conversations);
        assert_eq!(c.store.path, PathBuf::from(DEFAULT_STORE_PATH));
        assert_eq!(c.calls.ring_timeout, Duration::from_secs(45));
        assert_eq!(c.calls.reconnect_grace, Duration::from_secs(30));
        assert_eq!(c.calls.max_participants, 20);
        assert_eq!(c.log.level, "info");
        assert_eq!(c.log.format, LogFormat::Text);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = err(&format!("{MINIMAL}relay_port = \"1-2\"\n"));
        assert_eq!(e.origin, "/etc/switchboard/switchboard.toml");
        assert_eq!(e.key, "turn.relay_port");
        assert!(e.message.contains("unknown field `relay_port`"), "{e}");
        assert!(e.message.contains("line 4"), "{e}");

        let e = err(&format!("debug = true\n{MINIMAL}"));
        assert_eq!(e.key, "debug");
        let e = err(&format!("{MINIMAL}[tunr]\nlisten = []\n"));
        assert!(e.message.contains("unknown field `tunr`"), "{e}");
    }

    #[test]
    fn wrong_type_is_named() {
        let e = err(&format!("{MINIMAL}user_quota = \"ten\"\n"));
        assert_eq!(e.key, "turn.user_quota");
        let e = err(&format!("{MINIMAL}[log]\nformat = \"xml\"\n"));
        assert_eq!(e.key, "log.format");
        assert!(e.message.contains("xml"), "{e}");
        // Inside a multi-line array the line has no key: say where instead.
        let e = err(&format!(
            "{MINIMAL}allow_peers = [\n  \"10.0.0.0/8\",\n  5,\n]\n"
        ));
        assert_eq!(e.key, "line 6, column 3");
    }

    #[test]
    fn unreadable_file_is_reported() {
        let e = load_file(Path::new("/nonexistent/switchboard.toml")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/switchboard.toml: cannot read: "),
            "{e}"
        );
    }

    #[test]
    fn bad_cidr_names_its_index() {
        let e = err(&format!(
            "{MINIMAL}allow_peers = [\"10.1.0.0/16\", \"10.0.0.1/8\"]\n"
        ));
        assert_eq!(
            e.to_string(),
            "/etc/switchboard/switchboard.toml: turn.allow_peers[1]: `10.0.0.1/8` has bits set \
             after the prefix; did you mean `10.0.0.0/8`?"
        );
        let e = err(&format!("{MINIMAL}deny_peers = [\"nope\"]\n"));
        assert_eq!(e.key, "turn.deny_peers[0]");
    }

    #[test]
    fn total_quota_must_fit_the_port_range() {
        let e = err(&format!("{MINIMAL}total_quota = 20000\n"));
        assert_eq!(e.key, "turn.total_quota");
        assert_eq!(
            e.message,
            "20000 allocations need 20000 relay ports but turn.relay_ports has 16384"
        );
        // Without an explicit quota, a small range lowers the default instead.
        let c = load(&format!("{MINIMAL}relay_ports = \"50000-50099\"\n")).unwrap();
        assert_eq!(c.turn.total_quota, 100);
    }

    #[test]
    fn the_default_user_quota_fits_a_mesh_call_over_every_url() {
        // (max_participants - 1) peer connections x URLs x 2 for ICE restarts.
        assert_eq!(default_user_quota(20, 2), 76);
        assert_eq!(default_user_quota(20, 5), 190);
        assert_eq!(default_user_quota(6, 2), 20);
        assert_eq!(default_user_quota(2, 1), 2);
        // No URL would still be one; nothing overflows.
        assert_eq!(default_user_quota(2, 0), 2);
        assert_eq!(default_user_quota(u32::MAX, usize::MAX), u32::MAX);
    }

    #[test]
    fn the_derived_user_quota_follows_calls_and_urls() {
        // The packaged conffile's shape: one listener, no TLS, 20 participants.
        let c = load(&format!("{MINIMAL}listen = [\"0.0.0.0:3478\"]\n")).unwrap();
        assert_eq!(crate::turn_credentials::turn_urls(&c.turn).len(), 2);
        assert_eq!((c.turn.user_quota, c.turn.total_quota), (76, 10_000));
        // IPv4 and IPv6 listeners and a TLS one: 5 URLs.
        let dual = "[turn]\nsecret = \"0123456789abcdef\"\n\
                    relay_ip = [\"198.51.100.7\", \"2001:db8::7\"]\n\
                    listen = [\"0.0.0.0:3478\", \"[::]:3478\"]\ntls_listen = [\"0.0.0.0:5349\"]\n\
                    tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n";
        let c = load(dual).unwrap();
        assert_eq!(crate::turn_credentials::turn_urls(&c.turn).len(), 5);
        assert_eq!(c.turn.user_quota, 190);
        let c = load(&format!("{dual}[calls]\nmax_participants = 6\n")).unwrap();
        assert_eq!(c.turn.user_quota, 50);
        // Set, it is taken as set.
        let c = load(&format!("{MINIMAL}user_quota = 12\n")).unwrap();
        assert_eq!((c.turn.user_quota, c.turn.total_quota), (12, 10_000));
        assert!(!c.turn.user_quota_derived);
    }

    #[test]
    fn total_quota_makes_room_for_the_user_quota() {
        // A derived user quota above the default total raises the default total.
        let c = load(&format!("{MINIMAL}[calls]\nmax_participants = 3000\n")).unwrap();
        assert_eq!((c.turn.user_quota, c.turn.total_quota), (11_996, 11_996));
        // So does a user quota that is set.
        let c = load(&format!("{MINIMAL}user_quota = 12000\n")).unwrap();
        assert_eq!((c.turn.user_quota, c.turn.total_quota), (12_000, 12_000));
        // As far as the relay ports go: a derived one is capped, with a warning ...
        let c = load(&format!("{MINIMAL}relay_ports = \"50000-50049\"\n")).unwrap();
        assert_eq!((c.turn.user_quota, c.turn.total_quota), (50, 50));
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert_eq!(c.warnings[0].key, "turn.user_quota");
        assert!(
            c.warnings[0].message.contains("may need 76 allocations"),
            "{}",
            c.warnings[0].message
        );
        // ... as it is by a total that is set.
        let c = load(&format!("{MINIMAL}total_quota = 30\n")).unwrap();
        assert_eq!((c.turn.user_quota, c.turn.total_quota), (30, 30));
        // One that is set and cannot fit is an error naming the key.
        let e = err(&format!(
            "{MINIMAL}relay_ports = \"50000-50049\"\nuser_quota = 60\n"
        ));
        assert_eq!(e.key, "turn.user_quota");
        assert_eq!(
            e.message,
            "60 allocations need 60 relay ports but turn.relay_ports has 50"
        );
        let e = err(&format!("{MINIMAL}user_quota = 40\ntotal_quota = 30\n"));
        assert_eq!(e.key, "turn.total_quota");
        assert_eq!(
            e.message,
            "30 is below turn.user_quota (40): raise total_quota to at least user_quota, or \
             lower user_quota"
        );
        assert!(load(&format!("{MINIMAL}user_quota = 30\ntotal_quota = 30\n")).is_ok());
    }

    #[test]
    fn rest_api_separator_is_one_printable_ascii_character() {
        for (text, want) in [(":", ':'), ("_", '_'), ("|", '|'), ("@", '@')] {
            let c = load(&format!("{MINIMAL}rest_api_separator = \"{text}\"\n")).unwrap();
            assert_eq!(c.turn.rest_api_separator, want);
        }
        for bad in ["", "::", "1", " ", "\\t", "é"] {
            let e = err(&format!("{MINIMAL}rest_api_separator = \"{bad}\"\n"));
            assert_eq!(e.key, "turn.rest_api_separator", "{bad:?}");
            assert!(
                e.message.contains("is not one printable ASCII character"),
                "{e}"
            );
        }
    }

    #[test]
    fn relay_ports_are_checked() {
        for bad in ["49152", "a-b", "60000-50000", "0-10", "50000-70000"] {
            let e = err(&format!("{MINIMAL}relay_ports = \"{bad}\"\n"));
            assert_eq!(e.key, "turn.relay_ports", "{bad}");
        }
        let e = err(&format!("{MINIMAL}relay_ports = \"500-600\"\n"));
        assert!(e.message.contains("1024"), "{e}");
        let c = load(&format!("dev = true\n{MINIMAL}relay_ports = \"500-600\"\n")).unwrap();
        assert_eq!(c.turn.relay_ports, 500..=600);
    }

    #[test]
    fn secret_is_required_exactly_once() {
        let e = err("[turn]\nrelay_ip = \"198.51.100.7\"\n");
        assert_eq!(e.key, "turn.secret");
        assert!(e.message.contains("turn.secret_file"), "{e}");
        let e = err(&format!("{MINIMAL}secret_file = \"s\"\n"));
        assert_eq!(e.key, "turn.secret");
        assert!(e.message.contains("not both"), "{e}");
        let e = err("[turn]\nrelay_ip = \"198.51.100.7\"\nsecret_file = \"missing\"\n");
        assert_eq!(e.key, "turn.secret_file");
        assert!(e.message.contains("/etc/switchboard/missing"), "{e}");
    }

    #[test]
    fn secret_file_is_read_relative_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("s"), "\n  the secret of turn \n").unwrap();
        let text = "[turn]\nrelay_ip = \"198.51.100.7\"\nsecret_file = \"s\"\n";
        let c = load_str(text, dir.path(), origin()).unwrap();
        assert_eq!(c.turn.secret.expose(), "the secret of turn");
        fs::write(dir.path().join("s"), " \n").unwrap();
        let e = load_str(text, dir.path(), origin()).unwrap_err();
        assert!(e.message.contains("is empty"), "{e}");
    }

    #[test]
    fn relay_ip_defaults_to_a_listen_address_or_the_route() {
        let text = "[turn]\nsecret = \"0123456789abcdef\"\n";
        let routed = |text: &str, route: RouteSource| {
            load_routed(text, Path::new("/etc/switchboard"), origin(), route).unwrap()
        };
        let public: RouteSource = |any| match any {
            IpAddr::V4(_) => Some("198.51.100.7".parse().unwrap()),
            IpAddr::V6(_) => Some("2001:db8::7".parse().unwrap()),
        };
        let private: RouteSource = |_| Some("10.0.0.5".parse().unwrap());
        let none: RouteSource = |_| None;

        // A specific listen address stands for its version; the route is not asked.
        let c = routed(&format!("{text}listen = [\"192.0.2.1:3478\"]\n"), none);
        assert_eq!(c.turn.relay_ips, ips(&["192.0.2.1"]));
        assert!(!c.turn.relay_ips_detected && c.warnings.is_empty());

        // A wildcard one takes the route's source address, per version.
        let c = routed(text, public);
        assert_eq!(c.turn.relay_ips, ips(&["198.51.100.7"]));
        assert!(c.turn.relay_ips_detected && c.warnings.is_empty());
        let both = format!("{text}listen = [\"[::]:3478\", \"192.0.2.1:3478\"]\n");
        let c = routed(&both, public);
        assert_eq!(c.turn.relay_ips, ips(&["192.0.2.1", "2001:db8::7"]));

        // A private source without external_ip, or no route at all: it runs, but check-config
        // fails on it.
        let c = routed(text, private);
        assert_eq!(c.turn.relay_ips, ips(&["10.0.0.5"]));
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].unreachable && c.warnings[0].key == "turn.external_ip");
        let c = routed(&format!("{text}external_ip = \"10.0.0.5\"\n"), private);
        assert!(
            c.warnings.is_empty(),
            "a LAN-only relay says so: {:?}",
            c.warnings
        );
        let c = routed(text, none);
        assert_eq!(c.turn.relay_ips, ips(&["127.0.0.1"]));
        assert_eq!(c.warnings.len(), 1);
        let w = &c.warnings[0];
        assert!(w.unreachable && w.key == "turn.relay_ip", "{w:?}");
        assert!(w.message.contains("no IPv4 route"), "{w}");

        // An explicit relay_ip is never second-guessed.
        let c = routed(&format!("{text}relay_ip = \"198.51.100.9\"\n"), none);
        assert_eq!(c.turn.relay_ips, ips(&["198.51.100.9"]));
        assert!(!c.turn.relay_ips_detected && c.warnings.is_empty());
    }

    #[test]
    fn the_kernel_route_source_is_never_a_wildcard_or_loopback() {
        for any in [
            IpAddr::from(Ipv4Addr::UNSPECIFIED),
            Ipv6Addr::UNSPECIFIED.into(),
        ] {
            if let Some(ip) = kernel_route_source(any) {
                assert!(!ip.is_unspecified() && !ip.is_loopback(), "{ip}");
                assert_eq!(ip.is_ipv4(), any.is_ipv4());
            }
        }
    }

    #[test]
    fn addresses_are_checked() {
        let e = err(&format!("{MINIMAL}listen = [\"0.0.0.0:3478\", \"3478\"]\n"));
        assert_eq!(e.key, "turn.listen[1]");
        let e = err(&format!("{MINIMAL}listen = []\n"));
        assert_eq!(e.key, "turn.listen");
        let e = err(&format!("{MINIMAL}external_ip = \"0.0.0.0\"\n"));
        assert_eq!(e.key, "turn.external_ip");
        let e = err(&format!("{MINIMAL}external_ip = \"224.0.0.1\"\n"));
        assert_eq!(e.key, "turn.external_ip");
        let e = err(&format!("{MINIMAL}external_ip = \"2001:db8::1\"\n"));
        assert!(
            e.message.contains("no turn.relay_ip of its IP version"),
            "{e}"
        );
        let e = err("[turn]\nsecret = \"x\"\nrelay_ip = \"0.0.0.0\"\n");
        assert_eq!(e.key, "turn.relay_ip");
        let e = err("[turn]\nsecret = \"x\"\nrelay_ip = [\"192.0.2.1\", \"192.0.2.2\"]\n");
        assert!(e.message.contains("one IPv4 and one IPv6"), "{e}");
        let e = err(&format!("{MINIMAL}max_connections = 0\n"));
        assert_eq!(e.key, "turn.max_connections");
        let e = err(&format!("{MINIMAL}[http]\nmax_connections = 0\n"));
        assert_eq!(e.key, "http.max_connections");
    }

    #[test]
    fn dual_stack_relay_addresses() {
        let c = load(
            "[turn]\nsecret = \"0123456789abcdef\"\nrelay_ip = [\"198.51.100.7\", \"2001:db8::7\"]\n\
             external_ip = [\"2001:db8::8\"]\n",
        )
        .unwrap();
        assert_eq!(c.turn.relay_ips, ips(&["198.51.100.7", "2001:db8::7"]));
        assert_eq!(c.turn.external_ips, ips(&["2001:db8::8"]));
        // Without relay_ip, one specific listen address per IP version.
        let c = load(
            "[turn]\nsecret = \"0123456789abcdef\"\n\
             listen = [\"127.0.0.1:3478\", \"127.0.0.2:3478\", \"[::1]:3478\"]\n",
        )
        .unwrap();
        assert_eq!(c.turn.relay_ips, ips(&["127.0.0.1", "::1"]));
        assert_eq!(c.turn.max_connections, 4096);
    }

    #[test]
    fn turn_tls_falls_back_to_the_http_certificate() {
        let text = "[http]\ntls_cert = \"/etc/c.pem\"\ntls_key = \"/etc/k.pem\"\n\
                    [turn]\nsecret = \"0123456789abcdef\"\nrelay_ip = \"198.51.100.7\"\n\
                    tls_listen = [\"0.0.0.0:5349\"]\n";
        let c = load(text).unwrap();
        assert_eq!(c.turn.tls.unwrap().cert, PathBuf::from("/etc/c.pem"));
        let e = err(&format!("{MINIMAL}tls_listen = [\"0.0.0.0:5349\"]\n"));
        assert_eq!(e.key, "turn.tls_listen");
    }

    #[test]
    fn private_relay_without_external_ip_warns() {
        let text = "[turn]\nsecret = \"0123456789abcdef\"\nrelay_ip = \"10.0.0.5\"\n";
        let c = load(text).unwrap();
        assert_eq!(c.warnings.len(), 1);
        assert_eq!(c.warnings[0].key, "turn.external_ip");
        let c = load(&format!("{text}external_ip = \"203.0.113.1\"\n")).unwrap();
        assert!(c.warnings.is_empty());
        for ip in ["100.64.0.1", "172.16.0.1", "192.168.1.1", "fd00::1"] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["100.128.0.1", "8.8.8.8", "127.0.0.1", "2001:db8::1"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn other_values_are_checked() {
        // (section, line, the key the error must name); [turn] is MINIMAL's own section.
        let cases = [
            ("turn", "credential_ttl = \"soon\"", "turn.credential_ttl"),
            ("turn", "credential_ttl = \"0s\"", "turn.credential_ttl"),
            (
                "turn",
                "credential_ttl = \"400days\"",
                "turn.credential_ttl",
            ),
            ("turn", "user_quota = 0", "turn.user_quota"),
            ("turn", "realm = \"\"", "turn.realm"),
            ("turn", "tls_listen = [\"0.0.0.0:5349\"]", "turn.tls_listen"),
            ("http", "tls_cert = \"c.pem\"", "http.tls_key"),
            ("http", "listen = \"localhost:80\"", "http.listen"),
            (
                "http",
                "public_url = \"calls.example.com\"",
                "http.public_url",
            ),
            (
                "auth",
                "jwt_secret = \"a\"\njwt_secret_file = \"b\"",
                "auth.jwt_secret",
            ),
            ("calls", "max_participants = 1", "calls.max_participants"),
            ("calls", "ring_timeout = \"forever\"", "calls.ring_timeout"),
            ("log", "level = \"[[[\"", "log.level"),
        ];
        for (section, line, key) in cases {
            let text = match section {
                "turn" => format!("{MINIMAL}{line}\n"),
                _ => format!("{MINIMAL}[{section}]\n{line}\n"),
            };
            let e = err(&text);
            assert_eq!(e.key, key, "{line}: {e}");
        }
    }

    #[test]
    fn webhooks_are_checked_and_need_a_secret() {
        let c = load(MINIMAL).unwrap();
        assert!(c.webhooks.urls.is_empty() && c.webhooks.secret.is_none());
        let c = load(&format!(
            "{MINIMAL}[webhooks]\nurl = \"https://chat.example.com/hooks\"\n\
             secret = \"0123456789abcdef0123\"\ntimeout = \"3s\"\nmax_age = \"1h\"\n"
        ))
        .unwrap();
        assert_eq!(c.webhooks.urls, ["https://chat.example.com/hooks"]);
        assert_eq!(c.webhooks.secret.unwrap().expose(), "0123456789abcdef0123");
        assert_eq!(c.webhooks.timeout, Duration::from_secs(3));
        assert_eq!(c.webhooks.max_age, Duration::from_secs(3600));
        let c = load(&format!(
            "{MINIMAL}[webhooks]\nurl = [\"http://127.0.0.1:9/a\", \"https://b.example/\"]\n\
             secret = \"0123456789abcdef\"\n"
        ))
        .unwrap();
        assert_eq!(c.webhooks.urls.len(), 2);
        assert_eq!(c.webhooks.timeout, Duration::from_secs(10));
        assert_eq!(c.webhooks.max_age, Duration::from_secs(24 * 3600));
        // A short secret, or one without a URL, works with a warning.
        let c = load(&format!("{MINIMAL}[webhooks]\nsecret = \"short\"\n")).unwrap();
        assert!(c.warnings.iter().any(|w| w.key == "webhooks.secret"));
        let secret = "secret = \"0123456789abcdef\"";
        for (lines, key, says) in [
            (
                "url = \"https://a.example/\"",
                "webhooks.secret",
                "required",
            ),
            (
                &*format!("url = \"ftp://a.example/\"\n{secret}"),
                "webhooks.url",
                "http://",
            ),
            (
                &*format!("url = [\"https://a.example/\", \"nope\"]\n{secret}"),
                "webhooks.url[1]",
                "nope",
            ),
            (
                &*format!("url = [\"https://a.example/\", \"https://a.example/\"]\n{secret}"),
                "webhooks.url[1]",
                "twice",
            ),
            (
                &*format!("url = \"https://u:p@a.example/\"\n{secret}"),
                "webhooks.url",
                "user info",
            ),
            (
                &*format!("url = \"https://a.example/\"\n{secret}\nsecret_file = \"f\""),
                "webhooks.secret",
                "not both",
            ),
            (
                "url = \"https://a.example/\"\nsecret_file = \"missing\"",
                "webhooks.secret_file",
                "cannot read",
            ),
            (
                &*format!("url = \"https://a.example/\"\n{secret}\ntimeout = \"0s\""),
                "webhooks.timeout",
                "zero",
            ),
            (
                &*format!("url = \"https://a.example/\"\n{secret}\ntimeout = \"1h\""),
                "webhooks.timeout",
                "at most",
            ),
            (
                &*format!("url = \"https://a.example/\"\n{secret}\nmax_age = \"later\""),
                "webhooks.max_age",
                "duration",
            ),
            ("urls = \"https://a.example/\"", "webhooks.urls", "unknown"),
        ] {
            let e = err(&format!("{MINIMAL}[webhooks]\n{lines}\n"));
            assert_eq!(e.key, key, "{lines}: {e}");
            assert!(e.to_string().contains(says), "{lines}: {e}");
        }
        let nine: Vec<String> = (0..9)
            .map(|i| format!("\"https://a.example/{i}\""))
            .collect();
        let e = err(&format!(
            "{MINIMAL}[webhooks]\nurl = [{}]\n{secret}\n",
            nine.join(", ")
        ));
        assert_eq!(e.key, "webhooks.url", "{e}");
    }

    #[test]
    fn dev_default_generates_secrets_once() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("switchboard-data");
        let c = load_dev_default(&state).unwrap();
        assert!(c.dev);
        assert_eq!(c.origin, Origin::DevDefault(state.clone()));
        assert_eq!(c.turn.listen, vec!["127.0.0.1:3478".parse().unwrap()]);
        assert_eq!(c.turn.relay_ips, [IpAddr::from([127, 0, 0, 1])]);
        assert_eq!(c.http.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.store.path, state.join("switchboard.db"));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);

        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        for (name, _) in DEV_SECRETS {
            assert_eq!(mode(&state.join(name)), 0o600, "{name}");
        }
        let secret = fs::read_to_string(state.join("turn-secret")).unwrap();
        assert_eq!(c.turn.secret.expose(), secret.trim());
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(secret.trim())
            .unwrap();
        assert_eq!(bytes.len(), 32);
        assert!(c.auth.jwt_secret.is_some() && c.auth.admin_token.is_some());
        assert_ne!(c.auth.jwt_secret, Some(c.turn.secret.clone()));
        assert_eq!(
            fs::read_dir(&state).unwrap().count(),
            3,
            "no temp files left"
        );

        let again = load_dev_default(&state).unwrap();
        assert_eq!(again.turn.secret, c.turn.secret);
        assert_eq!(again.auth.jwt_secret, c.auth.jwt_secret);
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let c = load(MINIMAL).unwrap();
        assert!(!format!("{c:?}").contains("0123456789abcdef"));
    }
}
