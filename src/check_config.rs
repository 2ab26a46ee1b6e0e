//! `switchboard check-config`: load and validate the configuration without starting anything.
//!
//! Prints `config OK: <path>` and a summary on stdout and exits 0, or prints
//! `error: <path>: <key>: <why>` on stderr and exits 2. Warnings go to stderr either way; those
//! that leave the relay unreachable from outside this box's network (a private `relay_ip`
//! without `external_ip`, no route to take `relay_ip` from) are errors here, though `serve`
//! runs with them.

use std::path::Path;
use std::process::ExitCode;

use std::net::IpAddr;

use switchboard_turn::io::{TlsCertificate, TlsError};
use switchboard_turn::policy::{PeerPolicy, PeerRange};

use crate::config::{self, Config, ConfigError, Secret, TlsFiles, TurnConfig};

/// The TURN TLS certificate, loaded when TLS listeners are configured: a file that cannot be
/// read, holds no certificate, or whose key does not match is an error naming the key of the
/// file at fault (`turn.tls_key`, or `http.tls_cert` when turn uses `[http]`'s).
pub fn turn_certificate(config: &Config) -> Result<Option<TlsCertificate>, ConfigError> {
    let turn = &config.turn;
    match (&turn.tls, turn.tls_listen.is_empty()) {
        (Some(files), false) => TlsCertificate::load(&files.cert, &files.key)
            .map(Some)
            .map_err(|e| {
                let file = match e {
                    TlsError::Key { .. } | TlsError::Mismatch { .. } => "tls_key",
                    _ => "tls_cert",
                };
                ConfigError::new(format!("{}.{file}", files.section), e.to_string())
                    .at(&config.origin)
            }),
        _ => Ok(None),
    }
}

pub fn run(config_path: Option<&Path>) -> ExitCode {
    let loaded = config::load(config_path).and_then(|c| turn_certificate(&c).map(|_| c));
    match loaded {
        Ok(config) => {
            // A relay its clients cannot reach fails the check; `serve` only warns of it.
            for w in &config.warnings {
                let kind = if w.unreachable { "error" } else { "warning" };
                eprintln!("{kind}: {}: {w}", config.origin);
            }
            if config.warnings.iter().any(|w| w.unreachable) {
                return ExitCode::from(2);
            }
            println!("config OK: {}", config.origin);
            print!("{}", summary(&config));
            print!("{}", own_addresses(&config.turn));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// A few lines saying what the daemon would do with this configuration.
fn summary(c: &Config) -> String {
    let t = &c.turn;
    let list = |addrs: &[std::net::SocketAddr]| {
        addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let ports = u32::from(*t.relay_ports.end()) - u32::from(*t.relay_ports.start()) + 1;
    let mut s = String::new();
    if c.dev {
        s.push_str("  mode:        development\n");
    }
    s.push_str(&format!(
        "  turn listen: {} (udp, tcp; at most {} tcp/tls connections, {} per source)\n",
        list(&t.listen),
        t.max_connections,
        t.max_connections_per_source
    ));
    if !t.tls_listen.is_empty() {
        s.push_str(&format!("  turn tls:    {}\n", list(&t.tls_listen)));
    }
    s.push_str(&format!(
        "  turn relay:  {}{} ports {}-{} ({ports}){}\n",
        config::list_ips(&t.relay_ips),
        if t.relay_ips_detected {
            " (from the routing table)"
        } else {
            ""
        },
        t.relay_ports.start(),
        t.relay_ports.end(),
        if t.external_ips.is_empty() {
            String::new()
        } else {
            format!(", advertised as {}", config::list_ips(&t.external_ips))
        },
    ));
    s.push_str(&format!(
        "  turn auth:   realm \"{}\", credentials valid {}, usernames <expiry>{}<user>; \
         an allocation outlives its credential by refreshes up to {} from its creation\n",
        t.realm,
        humantime::format_duration(t.credential_ttl),
        t.rest_api_separator,
        humantime::format_duration(t.max_allocation_life),
    ));
    let derived = if t.user_quota_derived {
        format!(
            " (for {}-person calls over {} TURN URLs)",
            c.calls.max_participants,
            crate::turn_credentials::turn_urls(t).len()
        )
    } else {
        String::new()
    };
    s.push_str(&format!(
        "  turn limits: {} allocations per user{derived}, {} in total, lifetime at most {}; peers: {} allowed, {} denied ranges over the default\n",
        t.user_quota,
        t.total_quota,
        humantime::format_duration(t.max_lifetime),
        t.allow_peers.len(),
        t.deny_peers.len()
    ));
    let b = &t.bandwidth;
    s.push_str(&format!(
        "  turn bandwidth: {} per allocation, {} per user, {} in total (payload, both ways), \
         bursts of {}\n",
        bandwidth(b.allocation),
        bandwidth(b.user),
        bandwidth(b.total),
        humantime::format_duration(b.burst),
    ));
    if let (Some(tls), false) = (&t.tls, t.tls_listen.is_empty()) {
        s.push_str(&format!("  turn cert:   {}\n", tls_line(tls)));
    }
    match &c.sfu {
        Some(sfu) => s.push_str(&format!(
            "  sfu:         {} (udp){}, for calls of {} or more; a participant sends at most {} tracks, {}\n",
            sfu.listen,
            sfu.public_ip
                .map(|ip| format!(", advertised as {ip}"))
                .unwrap_or_default(),
            c.calls.sfu_from,
            sfu.max_tracks,
            sfu.max_bitrate
                .map_or("no video bit rate cap".to_owned(), |b| format!(
                    "{} kbit/s of video",
                    b / 1000
                )),
        )),
        None => {
            s.push_str("  sfu:         off (calls.sfu_from = 0): group calls are browser meshes\n")
        }
    }
    s.push_str(&format!(
        "  http listen: {} (at most {} connections){}\n",
        c.http.listen,
        c.http.max_connections,
        c.http
            .public_url
            .as_deref()
            .map(|u| format!(", public at {u}"))
            .unwrap_or_default()
    ));
    let proxies = &c.http.trusted_proxies;
    s.push_str(&format!(
        "  http limits: {} connections per address, requests within {}; {}; {} requests/s per \
         user (bursts of {})\n",
        c.http.max_connections_per_source,
        humantime::format_duration(c.http.request_timeout),
        if proxies.is_empty() {
            "no trusted proxies".to_owned()
        } else {
            format!("{} trusted proxy ranges", proxies.len())
        },
        c.http.user_rate,
        c.http.user_burst,
    ));
    if let Some(tls) = &c.http.tls {
        s.push_str(&format!("  http cert:   {}\n", tls_line(tls)));
    }
    let set = |secret: &Option<Secret>| if secret.is_some() { "set" } else { "not set" };
    let scope = &c.auth.scope;
    let claim = |name: &str, value: &Option<String>| match value {
        Some(v) => format!(", tokens need {name} \"{v}\""),
        None => String::new(),
    };
    s.push_str(&format!(
        "  auth:        jwt secret {}, admin token {}, open conversations {}{}{}\n",
        set(&c.auth.jwt_secret),
        set(&c.auth.admin_token),
        if c.auth.open_conversations {
            "yes"
        } else {
            "no"
        },
        claim("aud", &scope.audience),
        claim("iss", &scope.issuer),
    ));
    s.push_str(&format!(
        "  calls:       ring {}, reconnect grace {}, at most {} participants, {} live calls \
         per user\n",
        humantime::format_duration(c.calls.ring_timeout),
        humantime::format_duration(c.calls.reconnect_grace),
        c.calls.max_participants,
        c.calls.max_live_per_user,
    ));
    let w = &c.webhooks;
    if w.urls.is_empty() {
        s.push_str("  webhooks:    off\n");
    } else {
        s.push_str(&format!(
            "  webhooks:    {} (signed; timeout {}, retried for {})\n",
            w.urls
                .iter()
                .map(|u| crate::webhooks::shown(u))
                .collect::<Vec<_>>()
                .join(", "),
            humantime::format_duration(w.timeout),
            humantime::format_duration(w.max_age)
        ));
    }
    s.push_str(&format!("  store:       {}\n", c.store.path.display()));
    s.push_str(&format!(
        "  log:         {} ({})\n",
        c.log.level, c.log.format
    ));
    s
}

/// A bandwidth cap as `check-config` prints it: bytes and bits per second.
fn bandwidth(bytes_per_sec: u64) -> String {
    match bytes_per_sec {
        0 => "no cap".to_owned(),
        b => format!("{b} B/s ({} Mbit/s)", b as f64 * 8.0 / 1e6),
    }
}

/// What `turn.allow_peers` leaves out: the box's own addresses that an entry contains without
/// naming them alone (`switchboard_turn::policy`), one line per entry that skips some.
fn own_addresses(t: &TurnConfig) -> String {
    let mut own: Vec<IpAddr> = t.relay_ips.iter().chain(&t.external_ips).copied().collect();
    own.extend(t.listen.iter().chain(&t.tls_listen).map(|a| a.ip()));
    let mut s = String::new();
    match switchboard_turn::io::host_addresses() {
        Ok(ips) => own.extend(ips),
        Err(e) => s.push_str(&format!("  turn peers:  {e}\n")),
    }
    own.retain(|ip| !ip.is_unspecified());
    own.sort_unstable();
    own.dedup();
    s + &skipped_lines(&t.allow_peers, &own)
}

fn skipped_lines(allow: &[PeerRange], own: &[IpAddr]) -> String {
    // An address another entry opens is not worth a line.
    let policy = PeerPolicy::new(allow.to_vec(), Vec::new());
    let closed: Vec<IpAddr> = own
        .iter()
        .copied()
        .filter(|&ip| !policy.opens_own(ip, None))
        .collect();
    let mut s = String::new();
    for (i, entry) in allow.iter().enumerate() {
        let skipped = PeerPolicy::skipped_own(entry, &closed);
        if !skipped.is_empty() {
            s.push_str(&format!(
                "  turn peers:  allow_peers[{i}] {entry} skips this box's own {} (relay ports \
                 only; an entry naming one alone, like {}/{}, opens it)\n",
                config::list_ips(&skipped),
                skipped[0],
                if skipped[0].is_ipv4() { 32 } else { 128 },
            ));
        }
    }
    s
}

fn tls_line(tls: &TlsFiles) -> String {
    format!("{} (key {})", tls.cert.display(), tls.key.display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Origin;

    /// The TURN lines, through the binary: tests/check_config.rs.
    #[test]
    fn summary_names_the_essentials() {
        let text = "[turn]\nsecret = \"0123456789abcdef\"\nrelay_ip = \"198.51.100.7\"\n";
        let c = config::load_str(text, Path::new("."), Origin::File("x.toml".into())).unwrap();
        let s = summary(&c);
        assert!(
            s.contains("http listen: 127.0.0.1:8080 (at most 10000 connections)"),
            "{s}"
        );
        assert!(
            s.contains(
                "http limits: 256 connections per address, requests within 30s; no trusted \
                 proxies; 20 requests/s per user (bursts of 40)"
            ),
            "{s}"
        );
        assert!(
            s.contains("outlives its credential by refreshes up to 12h from its creation"),
            "{s}"
        );
        assert!(
            s.contains(
                "turn bandwidth: 5000000 B/s (40 Mbit/s) per allocation, 25000000 B/s \
                 (200 Mbit/s) per user, no cap in total (payload, both ways), bursts of 1s"
            ),
            "{s}"
        );
        assert!(!s.contains("0123456789abcdef"), "{s}");
        assert!(s.contains("webhooks:    off"), "{s}");
        let text = format!(
            "{text}[webhooks]\nurl = [\"https://a.example/h\", \"http://10.0.0.2/h\"]\n\
             secret = \"webhook-secret-0123\"\n"
        );
        let c = config::load_str(&text, Path::new("."), Origin::File("x.toml".into())).unwrap();
        let s = summary(&c);
        assert!(
            s.contains("webhooks:    https://a.example/h, http://10.0.0.2/h (signed; timeout 10s, retried for 1day)"),
            "{s}"
        );
        assert!(!s.contains("webhook-secret-0123"), "{s}");
    }

    #[test]
    fn check_config_names_the_own_addresses_an_allow_peers_entry_skips() {
        let own: Vec<IpAddr> = ["10.0.0.5", "127.0.0.1", "192.168.1.9", "::1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let allow: Vec<PeerRange> = ["10.0.0.0/8", "127.0.0.0/8", "0.0.0.0/0", "10.0.0.5:5000"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let s = skipped_lines(&allow[..1], &own);
        assert!(
            s.contains("allow_peers[0] 10.0.0.0/8 skips this box's own 10.0.0.5 (relay ports"),
            "{s}"
        );
        assert!(s.contains("like 10.0.0.5/32, opens it"), "{s}");
        // A loopback range opens loopback, an entry naming the address opens it (on some
        // ports): the lines name only what no entry opens.
        let s = skipped_lines(&allow, &own);
        assert!(
            !s.contains("allow_peers[0]")
                && !s.contains("allow_peers[1]")
                && !s.contains("allow_peers[3]"),
            "{s}"
        );
        assert!(
            s.contains("allow_peers[2] 0.0.0.0/0 skips this box's own 192.168.1.9 (relay"),
            "{s}"
        );
    }
}
