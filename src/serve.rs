//! `switchboard serve`: wires the configuration into the relay and runs until a signal.
//!
//! Order: config (refused with exit 2 before anything starts), logging, the file-descriptor
//! limit, the relay (which binds every listener or fails naming the address, exit 1), the call
//! store (migrated, and calls a crash left live ended), the HTTP API; then wait for SIGTERM or
//! SIGINT, stop the API (requests in flight finish), close the store, stop the relay (closing
//! every socket) and exit 0.

use std::process::ExitCode;

use rand::RngCore as _;
use switchboard_sfu::io::{RelayLink, SfuBound, SfuIoConfig};
use switchboard_sfu::Caps;
use switchboard_turn::io::{LocalPeers, Relay, RelayConfig, RelayControl, TlsCertificate};
use switchboard_turn::policy::PeerPolicy;
use switchboard_turn::ServerConfig;
use tokio::signal::unix::{signal, SignalKind};

use crate::app;
use crate::check_config;
use crate::config::{self, Config, Origin, TurnConfig};
use crate::http::Http;
use crate::logging;
use crate::metrics;
use crate::notify;
use crate::turn_credentials::turn_urls_for;
use std::sync::Arc;
use switchboard_signaling::domain::RelayHooks;
use switchboard_signaling::quality::RelayUsage;
use switchboard_signaling::revoke::RelayRevokeFn;
use switchboard_signaling::service::RelayUsageFn;
use switchboard_turn::io::Stats;

pub fn run(config_path: Option<&std::path::Path>) -> ExitCode {
    let config = match config::load(config_path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let log_reload = logging::init(&config.log);
    // Before the relay starts: its thread records through the global recorder.
    let metrics = metrics::install();
    announce(&config);
    raise_nofile_limit();

    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    // First come, first served under overload. A busy worker polls the kernel every 61 tasks
    // and by default takes up to 1,024 ready sockets at once: more than its local queue holds
    // (256), so most go to the global queue, which a busy worker serves only now and then,
    // while the sockets it just took are served at once. With every socket busy, some then
    // wait half a second while others are served in a few milliseconds (bench/hub.sh at
    // saturation: p50 4 ms, p99 540 ms). Taking at most 16 at a time while busy leaves the
    // rest in the kernel's ready list, which is in order: p50 60 ms, p99 85 ms at the same
    // load, for the same throughput. (This is tokio's own advice for these two settings.)
    builder
        .max_io_events_per_tick(128)
        .max_io_events_per_busy_tick(16);
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };

    // Signal handlers go in before anything is announced as listening: a supervisor (or a
    // test) may send SIGTERM as soon as it reads that line.
    let signals = match runtime.block_on(async { Signals::install() }) {
        Ok(signals) => signals,
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };

    let tls = match check_config::turn_certificate(&config) {
        Ok(tls) => tls,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // The SFU of group calls binds first: the relay hands relayed participants' media to it
    // inside the process, so it must know the SFU's address when it starts.
    let sfu = match &config.sfu {
        None => None,
        Some(s) => match SfuBound::bind(&SfuIoConfig {
            listen: s.listen,
            public_ip: s.public_ip,
            grace: config.calls.reconnect_grace,
            caps: Caps {
                max_tracks: s.max_tracks,
                max_bitrate: s.max_bitrate,
            },
            start_estimate: switchboard_sfu::START_ESTIMATE,
            // Forwarded media through the SFU's own egress: 2.4 times less CPU per packet than
            // through str0m's connections (bench/sfu.sh).
            direct_egress: true,
            direct_ingress: false,
        }) {
            Ok(bound) => Some(bound),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the sfu");
                return ExitCode::FAILURE;
            }
        },
    };
    let mut relay_config =
        RelayConfig::new(config.turn.listen.clone(), server_config(&config.turn));
    relay_config.local = sfu.as_ref().map(|bound| LocalPeers {
        addrs: bound.addrs(),
        deliver: Arc::new(bound.ingress()),
    });
    relay_config.tls_listen = config.turn.tls_listen.clone();
    relay_config.tls = tls.clone();
    relay_config.max_connections = config.turn.max_connections as usize;
    relay_config.max_connections_per_source = config.turn.max_connections_per_source;
    let relay = match Relay::start(relay_config) {
        Ok(relay) => relay,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the turn relay");
            return ExitCode::FAILURE;
        }
    };
    for a in relay.local_addrs() {
        tracing::info!(addr = %a, "turn listening (udp)");
        tracing::info!(addr = %a, "turn listening (tcp)");
    }
    for a in relay.tls_addrs() {
        tracing::info!(addr = %a, "turn listening (tls)");
    }
    if let Some(tls) = &tls {
        tracing::info!(sha256 = tls.fingerprint(), "turn certificate loaded");
    }

    let sfu = sfu.map(|bound| {
        let (handle, events) = bound.start(
            config.calls.reconnect_grace,
            Some(relay_link(&config.turn, relay.control())),
        );
        tracing::info!(addr = %handle.local_addr(), advertised = %handle.advertised(), "sfu listening (udp)");
        (handle, events)
    });
    let sfu_addr = sfu.as_ref().map(|(h, _)| h.local_addr());

    // The store: migrated and reconciled before the API listens; the TURN URLs it hands out
    // are those the relay bound.
    let urls = turn_urls_for(&config.turn, &relay.local_addrs(), &relay.tls_addrs());
    let hooks = RelayHooks {
        usage: relay_usage(relay.stats()),
        revoke: relay_revoke(relay.control()),
    };
    let domain = match runtime.block_on(app::open_domain(&config, urls, Some(hooks), sfu)) {
        Ok(domain) => domain,
        Err(e) => {
            tracing::error!("cannot open the call store: {e:#}");
            relay.shutdown();
            return ExitCode::FAILURE;
        }
    };
    let mut health = notify::Health {
        relay: relay.stats(),
        calls: domain.calls.clone(),
        hub: domain.hub.clone(),
        serving: String::new(),
    };
    let telemetry = metrics.map(|handle| (handle, relay.stats()));
    let http = match runtime.block_on(Http::start(&config, domain, telemetry)) {
        Ok(http) => http,
        Err(e) => {
            tracing::error!("cannot start the http api: {e:#}");
            relay.shutdown();
            return ExitCode::FAILURE;
        }
    };

    // Every listener is bound and the store migrated: ready, for systemd's Type=notify.
    let turn: Vec<String> = relay
        .local_addrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    let mut serving = format!("turn {} (udp, tcp)", turn.join(" "));
    for a in relay.tls_addrs() {
        serving.push_str(&format!(", {a} (tls)"));
    }
    if let Some(a) = sfu_addr {
        serving.push_str(&format!(", sfu {a} (udp)"));
    }
    serving.push_str(&format!(", http {}", http.local_addr()));
    notify::ready(&format!("serving {serving}"));
    health.serving = serving.clone();
    runtime.spawn(notify::run(health));

    let reloads = Reloads {
        config_path,
        tls: tls.as_ref(),
        log: &log_reload,
    };
    let stopped = runtime.block_on(signals.wait(&reloads, &serving));
    notify::stopping();
    match &stopped {
        Ok(name) => tracing::info!(signal = name, "shutting down"),
        Err(e) => tracing::error!(error = %e, "cannot wait for signals; shutting down"),
    }
    runtime.block_on(http.stop());
    relay.shutdown();
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    tracing::info!("stopped");
    match stopped {
        Ok(_) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

/// The SFU's side of the in-process path: which addresses are the relay's relayed ones, and
/// how to hand the relay a datagram for one.
fn relay_link(turn: &TurnConfig, control: RelayControl) -> RelayLink {
    let ips: Vec<std::net::IpAddr> = turn
        .relay_ips
        .iter()
        .chain(&turn.external_ips)
        .copied()
        .collect();
    let ports = turn.relay_ports.clone();
    RelayLink {
        is_relayed: Box::new(move |a| ports.contains(&a.port()) && ips.contains(&a.ip())),
        deliver: Box::new(move |to, from, payload| control.deliver_local(to, from, payload)),
    }
}

/// The startup lines: where the config came from, its warnings, what is not wired yet.
fn announce(config: &Config) {
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %config.origin,
        "switchboard starting"
    );
    if let Origin::DevDefault(dir) = &config.origin {
        tracing::info!(
            state = %dir.display(),
            "development mode (no --config): secrets are in the state dir; mint a user token \
             with `switchboard token --user <uuid>`"
        );
    }
    if config.auth.jwt_secret.is_none() {
        tracing::warn!("auth.jwt_secret is not set: the API refuses every user token");
    }
    if config.http.tls.is_some() {
        tracing::warn!(
            "http.tls_cert is used for TURN over TLS only; the HTTP API is served in plain HTTP \
             (put a TLS-terminating proxy in front of it)"
        );
    }
    if config.turn.relay_ips_detected {
        tracing::info!(
            relay_ip = %crate::config::list_ips(&config.turn.relay_ips),
            "turn.relay_ip is not set: relaying on the address the routing table sends from"
        );
    }
    for w in &config.warnings {
        tracing::warn!("{}: {}", w.key, w.message);
    }
}

/// A call's quality_stats say what the relay carried for each participant: the relay's
/// counters for the user of the credentials the API minted them (`<expiry>:<uuid>`), in the
/// call domain's own terms.
fn relay_usage(relay: Arc<Stats>) -> RelayUsageFn {
    Arc::new(move |user| {
        let u = relay.user_usage(&user.to_string());
        RelayUsage {
            packets_to_peer: u.packets_to_peer,
            bytes_to_peer: u.bytes_to_peer,
            packets_from_peer: u.packets_from_peer,
            bytes_from_peer: u.bytes_from_peer,
        }
    })
}

/// A revocation reaches the relay as the user of the credentials the API minted them.
fn relay_revoke(relay: RelayControl) -> RelayRevokeFn {
    Arc::new(move |user, until| relay.revoke_user(&user.to_string(), until))
}

/// The relay core's settings from `[turn]`.
fn server_config(turn: &TurnConfig) -> ServerConfig {
    // coturn compatibility: the HMAC key is the configured string's bytes, as coturn's
    // static-auth-secret is.
    let mut sc = ServerConfig::new(
        turn.realm.clone(),
        turn.secret.expose().as_bytes(),
        turn.relay_ips[0],
    );
    sc.relay_ips = turn.relay_ips.clone();
    sc.external_ips = turn.external_ips.clone();
    sc.relay_ports = turn.relay_ports.clone();
    sc.policy = PeerPolicy::new(turn.allow_peers.clone(), turn.deny_peers.clone());
    sc.max_lifetime = turn.max_lifetime;
    sc.max_allocation_life = turn.max_allocation_life;
    sc.user_quota = turn.user_quota;
    sc.total_quota = turn.total_quota;
    sc.rest_api_separator = turn.rest_api_separator;
    sc.bandwidth = turn.bandwidth;
    rand::rng().fill_bytes(&mut sc.nonce_key);
    sc.seed = rand::random();
    sc
}

/// SIGTERM (systemd's stop) and SIGINT (Ctrl-C), caught from installation on; SIGHUP
/// (systemd's reload) reloads what can change without a restart.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Serves SIGHUPs until SIGTERM or SIGINT, which it returns. `serving`: the status line.
    async fn wait(mut self, reloads: &Reloads<'_>, serving: &str) -> std::io::Result<&'static str> {
        loop {
            tokio::select! {
                _ = self.term.recv() => return Ok("SIGTERM"),
                _ = self.int.recv() => return Ok("SIGINT"),
                _ = self.hup.recv() => {
                    notify::reloading();
                    reloads.reload();
                    notify::ready(&format!("serving {serving} (reloaded)"));
                }
            }
        }
    }
}

/// What a SIGHUP reloads.
struct Reloads<'a> {
    config_path: Option<&'a std::path::Path>,
    tls: Option<&'a TlsCertificate>,
    log: &'a logging::Reload,
}

impl Reloads<'_> {
    /// SIGHUP: `log.level` is read again from the config file, and the TURN certificate.
    /// New TLS handshakes present the new certificate; live connections and their
    /// allocations are untouched. A config or certificate that fails to load is logged and
    /// the old one stays. Other settings need a restart.
    fn reload(&self) {
        tracing::info!("SIGHUP: reloading");
        match config::load(self.config_path) {
            Ok(config) => self.log.apply(&config.log),
            Err(e) => tracing::error!("config not reloaded; the old one stays: {e}"),
        }
        reload_certificate(self.tls);
    }
}

fn reload_certificate(tls: Option<&TlsCertificate>) {
    if let Some(tls) = tls {
        match tls.reload() {
            Ok(()) => tracing::info!(sha256 = tls.fingerprint(), "turn certificate reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "turn certificate not reloaded; the old one stays")
            }
        }
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit: every allocation holds a relay socket, so
/// the common default soft limit of 1024 would cap the relay far below `turn.total_quota`.
fn raise_nofile_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a pointer to a live, properly aligned value.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        let error = std::io::Error::last_os_error();
        tracing::warn!(%error, "cannot read the open file limit");
        return;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the rlimit it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        } else {
            let error = std::io::Error::last_os_error();
            tracing::warn!(%error, soft = limit.rlim_cur, hard = limit.rlim_max, "cannot raise the open file limit");
        }
    }
    tracing::info!(nofile = limit.rlim_cur, "open file limit");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_config_carries_the_turn_section() {
        let text = "[turn]\nsecret = \"s3cret-s3cret-s3cret\"\nrelay_ip = \"10.0.0.5\"\n\
                    external_ip = \"203.0.113.9\"\nrelay_ports = \"50000-50999\"\n\
                    user_quota = 3\ntotal_quota = 900\nrealm = \"r\"\n";
        let c =
            config::load_str(text, std::path::Path::new("."), Origin::File("t".into())).unwrap();
        let sc = server_config(&c.turn);
        assert_eq!(sc.realm, "r");
        assert_eq!(sc.secret, b"s3cret-s3cret-s3cret");
        assert_eq!(sc.relay_ips, [std::net::IpAddr::from([10, 0, 0, 5])]);
        assert_eq!(sc.external_ips, [std::net::IpAddr::from([203, 0, 113, 9])]);
        assert_eq!(sc.relay_ports, 50000..=50999);
        assert_eq!((sc.user_quota, sc.total_quota), (3, 900));
        assert_eq!(sc.bandwidth, c.turn.bandwidth);
        assert_ne!(sc.nonce_key, [0; 32]);
    }
}
