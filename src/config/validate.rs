//! The `Raw*` structs turned into [`Config`], each value parsed and checked, every failure a
//! [`ConfigError`] naming its key.

use super::*;

pub(super) fn validate(
    raw: Raw,
    base: &Path,
    origin: Origin,
    route_source: RouteSource,
) -> Result<Config> {
    let mut warnings = Vec::new();
    let dev = raw.dev;
    let http = validate_http(raw.http, base, &mut warnings)?;
    exposure(&http, (dev, raw.dev_allow_public), &mut warnings)?;
    let calls = validate_calls(raw.calls)?;
    let turn = validate_turn(
        raw.turn,
        base,
        (dev, route_source),
        (http.tls.as_ref(), &calls),
        &mut warnings,
    )?;
    let sfu = validate_sfu(raw.sfu, &calls, &turn)?;
    let auth = validate_auth(raw.auth, base)?;
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
        sfu,
        log,
        webhooks,
        warnings,
    })
}

pub(super) fn validate_sfu(
    raw: RawSfu,
    calls: &CallsConfig,
    turn: &TurnConfig,
) -> Result<Option<SfuSettings>> {
    if calls.sfu_from == 0 {
        let set = raw.listen.is_some()
            || raw.public_ip.is_some()
            || raw.max_tracks.is_some()
            || raw.max_bitrate.is_some();
        if set {
            return Err(ConfigError::new(
                "sfu",
                "set, but calls.sfu_from = 0 runs no SFU",
            ));
        }
        return Ok(None);
    }
    let listen = match &raw.listen {
        Some(s) => socket_addr("sfu.listen", s)?,
        None => {
            let ip = turn
                .listen
                .first()
                .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
            SocketAddr::new(ip, DEFAULT_SFU_PORT)
        }
    };
    let public_ip = match &raw.public_ip {
        Some(s) => Some(ip("sfu.public_ip", s)?),
        None => turn
            .external_ips
            .first()
            .or(turn.relay_ips.first())
            .copied()
            .filter(|_| listen.ip().is_unspecified()),
    };
    if listen.ip().is_unspecified() && public_ip.is_none() {
        return Err(ConfigError::new(
            "sfu.public_ip",
            "required when sfu.listen is on every address and turn has no external_ip or relay_ip",
        ));
    }
    let max_tracks = raw.max_tracks.unwrap_or(4);
    if !(1..=16).contains(&max_tracks) {
        return Err(ConfigError::new(
            "sfu.max_tracks",
            format!("{max_tracks} is not between 1 and 16"),
        ));
    }
    let max_bitrate = match raw.max_bitrate {
        None => Some(DEFAULT_SFU_MAX_BITRATE),
        Some(0) => None,
        Some(b) if b < 100_000 => {
            return Err(ConfigError::new(
                "sfu.max_bitrate",
                format!("{b} bits/s is too little for video (at least 100000; 0: no cap)"),
            ))
        }
        Some(b) => Some(b),
    };
    Ok(Some(SfuSettings {
        listen,
        public_ip,
        max_tracks: max_tracks as usize,
        max_bitrate,
    }))
}

/// What a listener outside loopback exposes: the API in plain HTTP (a warning: a reverse proxy
/// should terminate TLS in front of a loopback listener), and in development mode the demo
/// sign-in that mints a token for anyone who asks (refused unless `dev_allow_public` forces it).
pub(super) fn exposure(
    http: &HttpConfig,
    (dev, dev_allow_public): (bool, bool),
    warnings: &mut Vec<Warning>,
) -> Result<()> {
    let listen = http.listen;
    if listen.ip().is_loopback() {
        return Ok(());
    }
    if dev && !dev_allow_public {
        return Err(ConfigError::new(
            "dev",
            format!(
                "development mode on http.listen {listen}, not a loopback address: anyone who \
                 reaches it can mint user tokens (the demo sign-in); listen on 127.0.0.1, or \
                 set dev_allow_public = true to force it"
            ),
        ));
    }
    if dev {
        warnings.push(Warning::new(
            "dev_allow_public",
            format!("development mode on {listen}: anyone who reaches it can mint user tokens"),
        ));
    }
    warnings.push(Warning::new(
        "http.listen",
        format!(
            "{listen} is not a loopback address: the API, its bearer tokens and the admin \
             token travel in plain HTTP over the network; listen on 127.0.0.1 behind a \
             TLS-terminating reverse proxy"
        ),
    ));
    Ok(())
}

pub(super) fn validate_auth(raw: RawAuth, base: &Path) -> Result<AuthConfig> {
    let long = |pair: (&str, Option<String>), file: (&str, Option<PathBuf>)| {
        let key = if file.1.is_some() { file.0 } else { pair.0 };
        let secret = secret_pair(pair, file, base)?;
        match &secret {
            Some(s) if s.expose().len() < MIN_AUTH_SECRET_LEN => Err(ConfigError::new(
                key,
                format!(
                    "is {} bytes; at least {MIN_AUTH_SECRET_LEN} are required (make one with \
                     `head -c 32 /dev/urandom | base64`)",
                    s.expose().len()
                ),
            )),
            _ => Ok(secret),
        }
    };
    let claim = |key: &str, value: Option<String>| match value {
        Some(v) if v.trim().is_empty() => Err(ConfigError::new(
            key,
            "must not be empty (leave it out to accept tokens without the claim)",
        )),
        v => Ok(v),
    };
    Ok(AuthConfig {
        jwt_secret: long(
            ("auth.jwt_secret", raw.jwt_secret),
            ("auth.jwt_secret_file", raw.jwt_secret_file),
        )?,
        admin_token: long(
            ("auth.admin_token", raw.admin_token),
            ("auth.admin_token_file", raw.admin_token_file),
        )?,
        open_conversations: raw.open_conversations,
        scope: Scope {
            audience: claim("auth.audience", raw.audience)?,
            issuer: claim("auth.issuer", raw.issuer)?,
        },
    })
}

/// `value`, or `default` when not set; 0 is refused.
fn at_least_one(key: &str, value: Option<u32>, default: u32) -> Result<u32> {
    match value {
        Some(0) => Err(ConfigError::new(key, "must be at least 1")),
        v => Ok(v.unwrap_or(default)),
    }
}

pub(super) fn validate_calls(raw: RawCalls) -> Result<CallsConfig> {
    Ok(CallsConfig {
        max_live_per_user: at_least_one(
            "calls.max_live_per_user",
            raw.max_live_per_user,
            DEFAULT_MAX_LIVE_PER_USER,
        )?,
        ring_timeout: duration("calls.ring_timeout", raw.ring_timeout)?
            .unwrap_or(DEFAULT_RING_TIMEOUT),
        reconnect_grace: duration("calls.reconnect_grace", raw.reconnect_grace)?
            .unwrap_or(DEFAULT_RECONNECT_GRACE),
        sfu_from: match raw.sfu_from {
            None => DEFAULT_SFU_FROM,
            Some(n) if n == 0 || n >= 2 => n,
            Some(n) => {
                return Err(ConfigError::new(
                    "calls.sfu_from",
                    format!("{n}: a call has at least 2 participants (0 runs no SFU)"),
                ))
            }
        },
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

pub(super) fn validate_webhooks(
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
    at_most("webhooks.timeout", timeout, MAX_WEBHOOK_TIMEOUT, "")?;
    let max_age = duration("webhooks.max_age", raw.max_age)?.unwrap_or(DEFAULT_WEBHOOK_MAX_AGE);
    // The outbox is bounded by it while a receiver is down.
    at_most(
        "webhooks.max_age",
        max_age,
        MAX_WEBHOOK_MAX_AGE,
        " (events older than this are dropped; the queue grows until then)",
    )?;
    Ok(WebhooksConfig {
        urls,
        secret,
        timeout,
        max_age,
    })
}

/// Why `url` is not a webhook URL: `http://` or `https://`, a host, no user info, no
/// fragment, at most 2048 bytes.
pub(super) fn webhook_url(url: &str) -> std::result::Result<(), &'static str> {
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

pub(super) fn validate_http(
    raw: RawHttp,
    base: &Path,
    warnings: &mut Vec<Warning>,
) -> Result<HttpConfig> {
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
    let max_connections_per_source = raw
        .max_connections_per_source
        .unwrap_or(DEFAULT_HTTP_MAX_CONNECTIONS_PER_SOURCE);
    if max_connections_per_source == 0 {
        return Err(ConfigError::new(
            "http.max_connections_per_source",
            "must be at least 1 (it caps the API's connections from one address)",
        ));
    }
    let trusted_proxies: Vec<Cidr> = cidrs("http.trusted_proxies", &raw.trusted_proxies)?;
    for (i, c) in trusted_proxies.iter().enumerate() {
        if c.prefix() == 0 {
            warnings.push(Warning::new(
                format!("http.trusted_proxies[{i}]"),
                format!(
                    "`{c}` trusts every peer: any client can name the address it is counted as; \
                     list the reverse proxies' addresses"
                ),
            ));
        }
    }
    Ok(HttpConfig {
        listen,
        max_connections,
        max_connections_per_source,
        trusted_proxies,
        request_timeout: duration("http.request_timeout", raw.request_timeout)?
            .unwrap_or(DEFAULT_HTTP_REQUEST_TIMEOUT),
        user_rate: at_least_one(
            "http.user_rate",
            raw.user_rate,
            switchboard_signaling::api::DEFAULT_RATE,
        )?,
        user_burst: at_least_one(
            "http.user_burst",
            raw.user_burst,
            switchboard_signaling::api::DEFAULT_BURST,
        )?,
        public_url: raw.public_url,
        tls: tls_files("http", raw.tls_cert, raw.tls_key, base)?,
        allowed_origins: allowed_origins(raw.allowed_origins, warnings)?,
    })
}

pub(super) fn allowed_origins(
    raw: Vec<String>,
    warnings: &mut Vec<Warning>,
) -> Result<AllowedOrigins> {
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

pub(super) fn validate_turn(
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
    let max_connections_per_source = match raw.max_connections_per_source {
        Some(0) => {
            return Err(ConfigError::new(
                "turn.max_connections_per_source",
                "must be at least 1 (it caps the TURN TCP and TLS clients of one address)",
            ))
        }
        n => n.unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_SOURCE),
    };

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

    let max_allocation_life = duration("turn.max_allocation_life", raw.max_allocation_life)?
        .unwrap_or(DEFAULT_MAX_ALLOCATION_LIFE);
    if max_allocation_life > MAX_MAX_ALLOCATION_LIFE {
        return Err(ConfigError::new(
            "turn.max_allocation_life",
            "must be at most 7 days",
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

    let bandwidth = validate_bandwidth(
        [
            ("turn.allocation_bandwidth", raw.allocation_bandwidth),
            ("turn.user_bandwidth", raw.user_bandwidth),
            ("turn.total_bandwidth", raw.total_bandwidth),
        ],
        raw.bandwidth_burst,
        warnings,
    )?;

    let mut turn = TurnConfig {
        listen,
        tls_listen,
        tls,
        max_connections,
        max_connections_per_source,
        realm,
        secret,
        external_ips,
        relay_ips,
        relay_ips_detected,
        relay_ports,
        credential_ttl,
        max_lifetime,
        max_allocation_life,
        allow_peers: cidrs("turn.allow_peers", &raw.allow_peers)?,
        deny_peers: cidrs("turn.deny_peers", &raw.deny_peers)?,
        user_quota: 0,
        user_quota_derived: false,
        total_quota: 0,
        rest_api_separator,
        bandwidth,
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

/// The bandwidth caps (`turn.allocation_bandwidth`, `user_bandwidth`, `total_bandwidth`, in
/// that order), in bytes per second, 0 for none, each its default when not set; and
/// `turn.bandwidth_burst`, a duration up to a minute. A cap below what a video call needs is
/// a warning, not an error: an operator may mean it.
pub(super) fn validate_bandwidth(
    caps: [(&str, Option<u64>); 3],
    burst: Option<String>,
    warnings: &mut Vec<Warning>,
) -> Result<BandwidthCaps> {
    let burst = duration("turn.bandwidth_burst", burst)?.unwrap_or(DEFAULT_BANDWIDTH_BURST);
    at_most(
        "turn.bandwidth_burst",
        burst,
        MAX_BANDWIDTH_BURST,
        " (how long a cap may be exceeded from a full bucket)",
    )?;
    let defaults = [DEFAULT_ALLOCATION_BANDWIDTH, DEFAULT_USER_BANDWIDTH, 0];
    let [allocation, user, total] = std::array::from_fn(|i| {
        let (key, value) = caps[i];
        let value = value.unwrap_or(defaults[i]);
        if value > 0 && value < LOW_BANDWIDTH {
            warnings.push(Warning::new(
                key,
                format!(
                    "{value} bytes per second is below 1 Mbit/s ({LOW_BANDWIDTH}): relayed \
                     video calls will lose packets (0 sets no cap)"
                ),
            ));
        }
        value
    });
    Ok(BandwidthCaps {
        allocation,
        user,
        total,
        burst,
    })
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
pub(super) fn rest_api_separator(s: &str) -> Result<char> {
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

pub(super) fn validate_log(raw: RawLog) -> Result<LogConfig> {
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
