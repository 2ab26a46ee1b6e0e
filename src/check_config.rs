//! `switchboard check-config`: load and validate the configuration without starting anything.
//!
//! Prints `config OK: <path>` and a summary on stdout and exits 0, or prints
//! `error: <path>: <key>: <why>` on stderr and exits 2. Warnings go to stderr either way.

use std::path::Path;
use std::process::ExitCode;

use crate::config::{self, Config, Secret, TlsFiles};

pub fn run(config_path: Option<&Path>) -> ExitCode {
    match config::load(config_path) {
        Ok(config) => {
            for w in &config.warnings {
                eprintln!("warning: {}: {w}", config.origin);
            }
            println!("config OK: {}", config.origin);
            print!("{}", summary(&config));
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
    s.push_str(&format!("  turn listen: {} (udp)\n", list(&t.listen)));
    if !t.tls_listen.is_empty() {
        s.push_str(&format!(
            "  turn tls:    {} (not implemented yet)\n",
            list(&t.tls_listen)
        ));
    }
    s.push_str(&format!(
        "  turn relay:  {} ports {}-{} ({ports}){}\n",
        t.relay_ip,
        t.relay_ports.start(),
        t.relay_ports.end(),
        t.external_ip
            .map(|ip| format!(", advertised as {ip}"))
            .unwrap_or_default(),
    ));
    s.push_str(&format!(
        "  turn auth:   realm \"{}\", credentials valid {}\n",
        t.realm,
        humantime::format_duration(t.credential_ttl)
    ));
    s.push_str(&format!(
        "  turn limits: {} allocations per user, {} in total, lifetime at most {}; peers: {} allowed, {} denied ranges over the default\n",
        t.user_quota,
        t.total_quota,
        humantime::format_duration(t.max_lifetime),
        t.allow_peers.len(),
        t.deny_peers.len()
    ));
    if let Some(tls) = &t.tls {
        s.push_str(&format!("  turn cert:   {}\n", tls_line(tls)));
    }
    s.push_str(&format!(
        "  http listen: {}{}\n",
        c.http.listen,
        c.http
            .public_url
            .as_deref()
            .map(|u| format!(", public at {u}"))
            .unwrap_or_default()
    ));
    if let Some(tls) = &c.http.tls {
        s.push_str(&format!("  http cert:   {}\n", tls_line(tls)));
    }
    let set = |secret: &Option<Secret>| if secret.is_some() { "set" } else { "not set" };
    s.push_str(&format!(
        "  auth:        jwt secret {}, admin token {}, open conversations {}\n",
        set(&c.auth.jwt_secret),
        set(&c.auth.admin_token),
        if c.auth.open_conversations {
            "yes"
        } else {
            "no"
        }
    ));
    s.push_str(&format!(
        "  calls:       ring {}, reconnect grace {}, at most {} participants\n",
        humantime::format_duration(c.calls.ring_timeout),
        humantime::format_duration(c.calls.reconnect_grace),
        c.calls.max_participants
    ));
    s.push_str(&format!("  store:       {}\n", c.store.path.display()));
    s.push_str(&format!(
        "  log:         {} ({})\n",
        c.log.level, c.log.format
    ));
    s
}

fn tls_line(tls: &TlsFiles) -> String {
    format!("{} (key {})", tls.cert.display(), tls.key.display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Origin;

    #[test]
    fn summary_names_the_essentials() {
        let text = "[turn]\nsecret = \"0123456789abcdef\"\nrelay_ip = \"198.51.100.7\"\n";
        let c = config::load_str(text, Path::new("."), Origin::File("x.toml".into())).unwrap();
        let s = summary(&c);
        assert!(s.contains("0.0.0.0:3478 (udp)"), "{s}");
        assert!(s.contains("198.51.100.7 ports 49152-65535 (16384)"), "{s}");
        assert!(!s.contains("0123456789abcdef"), "{s}");
    }
}
