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
//!
//! Layout: this file holds the validated types, the errors and the loading; `raw.rs` the
//! file as serde reads it (and toml's errors); `validate.rs` the checks; `dev.rs` the
//! development default and its state dir; `network.rs` what the routing table says when the
//! relay's address is not configured; `tests.rs` the tests.

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
use switchboard_signaling::auth::Scope;
use switchboard_turn::policy::{Cidr, CidrError, PeerRange};
use switchboard_turn::BandwidthCaps;

use crate::cors::{self, AllowedOrigins};

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
const DEFAULT_MAX_ALLOCATION_LIFE: Duration = Duration::from_secs(12 * 3600);
const MAX_MAX_ALLOCATION_LIFE: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest credential lifetime accepted: a leaked credential must expire eventually.
pub const MAX_CREDENTIAL_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// `turn.total_quota` when not set (and the relay port range allows it), unless the derived
/// `turn.user_quota` is larger ([`default_user_quota`]).
const DEFAULT_TOTAL_QUOTA: u32 = 10_000;
/// TURN-over-TCP/TLS clients at once: each holds a socket, as each allocation does.
const DEFAULT_MAX_CONNECTIONS: u32 = 4096;
/// TURN-over-TCP/TLS clients at once from one address (or IPv6 /64). TCP and TLS are what
/// clients fall back to where UDP is blocked, which is mostly on company networks, where every
/// caller sits behind the same NAT address: room for some 60 callers of one office (one or two
/// connections each), while one address holds at most a thirty-second of
/// [`DEFAULT_MAX_CONNECTIONS`].
const DEFAULT_MAX_CONNECTIONS_PER_SOURCE: u32 = 128;
/// HTTP API connections at once (idle keep-alive ones included).
const DEFAULT_HTTP_MAX_CONNECTIONS: u32 = 10_000;
/// HTTP API connections from one address (or IPv6 /64) at once: room for an office behind one
/// NAT, each browser with a socket and a few requests; 40 addresses to fill
/// [`DEFAULT_HTTP_MAX_CONNECTIONS`].
const DEFAULT_HTTP_MAX_CONNECTIONS_PER_SOURCE: u32 = 256;
/// How long a request (head and body) may take to arrive, from its first byte.
const DEFAULT_HTTP_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_RING_TIMEOUT: Duration = Duration::from_secs(45);
const DEFAULT_RECONNECT_GRACE: Duration = Duration::from_secs(30);
const DEFAULT_MAX_PARTICIPANTS: u32 = 20;
/// A user in a call who starts another (a consultation, a transfer by hand) and a few more.
const DEFAULT_MAX_LIVE_PER_USER: u32 = 4;
/// Calls of three or more go through the SFU: the spec's group calls. 1:1 calls stay
/// peer-to-peer (end-to-end encrypted, no server hop).
const DEFAULT_SFU_FROM: u32 = 3;
/// The SFU's UDP port when `sfu.listen` is not set, on the first TURN listener's address
/// (3479 is TURN's alternate port by convention, RFC 5780).
const DEFAULT_SFU_PORT: u16 = 3480;
/// `turn.allocation_bandwidth` when not set, in bytes per second of payload, both ways
/// together: 5 MB/s (40 Mbit/s). One allocation carries one peer connection: 1080p video
/// (up to about 4 Mbit/s in browsers) and a screen share (as much again) each way is
/// 16 Mbit/s, so a call never meets it, while one allocation alone cannot take a
/// gigabit link.
const DEFAULT_ALLOCATION_BANDWIDTH: u64 = 5_000_000;
/// `turn.user_bandwidth` when not set: 25 MB/s (200 Mbit/s), over all of one user's
/// allocations. A user in a 20-person mesh call relaying every other participant's video
/// both ways (19 × 2 × 4 Mbit/s, 152 Mbit/s) fits; a user with many allocations cannot
/// have each take its full cap.
const DEFAULT_USER_BANDWIDTH: u64 = 25_000_000;
/// `turn.bandwidth_burst` when not set: each cap may be exceeded for this long from a full
/// bucket (a video keyframe, a burst after a stall), at least 64 KiB.
const DEFAULT_BANDWIDTH_BURST: Duration = Duration::from_secs(1);
/// The longest burst: beyond it a cap would stop meaning anything per second.
const MAX_BANDWIDTH_BURST: Duration = Duration::from_secs(60);
/// A cap below this (1 Mbit/s) gets a warning: a video call needs more.
const LOW_BANDWIDTH: u64 = 125_000;
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
    /// `[sfu]`: none when `calls.sfu_from = 0` (no SFU runs).
    pub sfu: Option<SfuSettings>,
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
    /// The most open at once from one source (an IPv4 address, an IPv6 /64; behind a trusted
    /// proxy, the client it names).
    pub max_connections_per_source: u32,
    /// Peers whose `X-Forwarded-For` / `Forwarded` name the client (reverse proxies).
    pub trusted_proxies: Vec<Cidr>,
    /// How long a whole request (head and body) may take to arrive, counted from its first
    /// byte (408 after; the head alone also has the 10 s header-read timeout).
    pub request_timeout: Duration,
    /// Requests a second one user may make to the REST API, in the long run.
    pub user_rate: u32,
    /// Requests one user may make at once, over `user_rate`.
    pub user_burst: u32,
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
    /// The most of them open at once from one source (an IPv4 address, an IPv6 /64), TLS
    /// handshakes under way included.
    pub max_connections_per_source: u32,
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
    /// How long after its creation an allocation may still be refreshed once its credential
    /// has expired (relayed calls outlive short-lived credentials; coturn drops them).
    pub max_allocation_life: Duration,
    /// Networks, or single addresses with ports, opened over the default (`policy`).
    pub allow_peers: Vec<PeerRange>,
    pub deny_peers: Vec<Cidr>,
    /// Allocations one user holds at once: as set, or [`default_user_quota`].
    pub user_quota: u32,
    /// `user_quota` was not set but derived from `calls.max_participants` and the URLs.
    pub user_quota_derived: bool,
    pub total_quota: u32,
    /// Between the expiry and the user name in credential usernames (coturn's
    /// `rest-api-separator`); `:` unless set.
    pub rest_api_separator: char,
    /// Relayed payload per second per allocation, per user and in total, with the burst
    /// ([`validate_bandwidth`]).
    pub bandwidth: BandwidthCaps,
}

/// `[auth]`.
#[derive(Debug)]
pub struct AuthConfig {
    /// At least [`MIN_AUTH_SECRET_LEN`] bytes.
    pub jwt_secret: Option<Secret>,
    /// At least [`MIN_AUTH_SECRET_LEN`] bytes.
    pub admin_token: Option<Secret>,
    pub open_conversations: bool,
    /// `auth.audience` and `auth.issuer`: the `aud` and `iss` user tokens must carry.
    pub scope: Scope,
}

/// The shortest `auth.jwt_secret` and `auth.admin_token`, in bytes. An HS256 key shorter than
/// the hash (32 bytes) weakens it (RFC 7518 §3.2 requires at least that), and a token signed
/// with a short secret can be brute-forced offline from any one token the attacker holds; the
/// admin token gets the same floor. The generated ones are 32 random bytes in base64 (44).
pub const MIN_AUTH_SECRET_LEN: usize = 32;

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
    /// The most live calls a user may be joined in when they start or answer another.
    pub max_live_per_user: u32,
    /// Calls of this many participants or more go through the SFU; 0: none does.
    pub sfu_from: u32,
}

/// `[sfu]`: the media port of group calls.
#[derive(Debug)]
pub struct SfuSettings {
    /// UDP, for every participant's media.
    pub listen: SocketAddr,
    /// The address participants send to when not `listen`'s (behind NAT, or `listen` on
    /// every address): `turn.external_ip` unless set, else `turn.relay_ip`.
    pub public_ip: Option<IpAddr>,
    /// Audio and video tracks one participant may send, at most (1 to 16; 4).
    pub max_tracks: usize,
    /// Bits per second of video one participant may send, at most; `None` (0): no cap.
    pub max_bitrate: Option<u64>,
}

/// `sfu.max_bitrate` by default: 2.5 Mbit/s of video a participant, the three simulcast layers
/// of a 720p camera (or a screen) with room to spare.
pub const DEFAULT_SFU_MAX_BITRATE: u64 = 2_500_000;

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
    let raw = parse(text).map_err(|e| e.at(&origin))?;
    validate(raw, base, origin.clone(), route_source).map_err(|e| e.at(&origin))
}

/// The address this box sends from towards the internet, for the IP version of the wildcard
/// address given (`0.0.0.0` or `::`); `None` when there is no such route.
type RouteSource = fn(IpAddr) -> Option<IpAddr>;

/// A result whose error names a key.
type Result<T, E = ConfigError> = std::result::Result<T, E>;

mod dev;
mod network;
mod raw;
#[cfg(test)]
mod tests;
mod validate;
mod values;

use dev::*;
pub use dev::{DEV_DEFAULT, DEV_STATE_DIR};
use network::*;
use raw::*;
use validate::*;
pub use values::list_ips;
use values::*;
