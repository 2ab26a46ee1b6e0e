//! `switchboard turn-credentials`: mint TURN credentials from the command line, in the shape
//! of the spec's `GET /api/calls/turn-credentials` response.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use switchboard_signaling::time::Timestamp;
use switchboard_signaling::turn::{TurnCredentials, TurnIssuer};
use switchboard_turn::credentials;

use crate::cli::TurnCredentialsArgs;
use crate::config::{TurnConfig, MAX_CREDENTIAL_TTL};

pub fn run(args: &TurnCredentialsArgs) -> ExitCode {
    if !credentials::valid_user_id(&args.user) {
        eprintln!(
            "error: --user: {:?} is not a valid user id (1 to {} bytes, no control characters)",
            args.user,
            credentials::MAX_USER_ID_LEN
        );
        return ExitCode::from(2);
    }
    let config = match args.config.load() {
        Ok(config) => config,
        Err(code) => return code,
    };
    let ttl = args.ttl.unwrap_or(config.turn.credential_ttl);
    if ttl.is_zero() || ttl > MAX_CREDENTIAL_TTL {
        eprintln!("error: --ttl: must be longer than zero and at most 365 days");
        return ExitCode::from(2);
    }
    let body = mint(&config.turn, &args.user, Timestamp::now(), ttl);
    match serde_json::to_string_pretty(&body) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Credentials for `user` valid for `ttl` from `now`, with a URL per TURN listener and
/// `turn.rest_api_separator` in the username.
pub fn mint(turn: &TurnConfig, user: &str, now: Timestamp, ttl: Duration) -> TurnCredentials {
    TurnIssuer::new(turn.secret.expose().as_bytes(), ttl, turn_urls(turn))
        .with_separator(turn.rest_api_separator)
        .issue(user, now, ttl)
}

/// The URLs of every way in: `turn:HOST:PORT?transport=udp` and `?transport=tcp` per
/// listener, then `turns:HOST:PORT?transport=tcp` per TLS listener. HOST is what clients can
/// reach: the external address of the listener's IP version if set, else the listener's own
/// address, else (wildcard listener) the relay address of that version.
pub fn turn_urls(turn: &TurnConfig) -> Vec<String> {
    turn_urls_for(turn, &turn.listen, &turn.tls_listen)
}

/// [`turn_urls`] for the addresses the relay actually bound (`listen` port 0 picks one).
pub fn turn_urls_for(
    turn: &TurnConfig,
    listen: &[SocketAddr],
    tls_listen: &[SocketAddr],
) -> Vec<String> {
    let reachable = |listen: &SocketAddr| -> Option<SocketAddr> {
        let same = |ip: &&IpAddr| ip.is_ipv4() == listen.is_ipv4();
        let host = match turn.external_ips.iter().find(same) {
            Some(ip) => *ip,
            None if !listen.ip().is_unspecified() => listen.ip(),
            None => *turn.relay_ips.iter().find(same)?,
        };
        Some(SocketAddr::new(host, listen.port()))
    };
    // SocketAddr's Display brackets IPv6 hosts.
    let plain: Vec<SocketAddr> = listen.iter().filter_map(reachable).collect();
    let udp = plain.iter().map(|a| format!("turn:{a}?transport=udp"));
    let tcp = plain.iter().map(|a| format!("turn:{a}?transport=tcp"));
    let tls = tls_listen
        .iter()
        .filter_map(reachable)
        .map(|a| format!("turns:{a}?transport=tcp"));
    udp.chain(tcp).chain(tls).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load_str, Origin};
    use std::path::Path;

    fn turn(extra: &str) -> TurnConfig {
        let text = format!("[turn]\nsecret = \"secret\"\n{extra}");
        load_str(&text, Path::new("."), Origin::File("t".into()))
            .unwrap()
            .turn
    }

    #[test]
    fn urls_use_the_reachable_host() {
        let t = turn("listen = [\"0.0.0.0:3478\", \"[::1]:3479\"]\nrelay_ip = \"192.0.2.4\"\n");
        assert_eq!(
            turn_urls(&t),
            [
                "turn:192.0.2.4:3478?transport=udp",
                "turn:[::1]:3479?transport=udp",
                "turn:192.0.2.4:3478?transport=tcp",
                "turn:[::1]:3479?transport=tcp",
            ]
        );
        let t = turn(
            "listen = [\"0.0.0.0:3478\"]\nrelay_ip = \"10.0.0.2\"\nexternal_ip = \"203.0.113.5\"\n",
        );
        assert_eq!(
            turn_urls(&t),
            [
                "turn:203.0.113.5:3478?transport=udp",
                "turn:203.0.113.5:3478?transport=tcp"
            ]
        );
        // Dual stack behind NAT, with TLS: each version's own public address.
        let t = turn(
            "listen = [\"0.0.0.0:3478\", \"[::]:3478\"]\ntls_listen = [\"0.0.0.0:5349\"]\n\
             tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n\
             relay_ip = [\"10.0.0.2\", \"2001:db8::7\"]\nexternal_ip = \"203.0.113.5\"\n",
        );
        assert_eq!(
            turn_urls(&t),
            [
                "turn:203.0.113.5:3478?transport=udp",
                "turn:[2001:db8::7]:3478?transport=udp",
                "turn:203.0.113.5:3478?transport=tcp",
                "turn:[2001:db8::7]:3478?transport=tcp",
                "turns:203.0.113.5:5349?transport=tcp",
            ]
        );
    }

    #[test]
    fn body_has_the_spec_shape_and_the_coturn_password() {
        let t = turn("listen = [\"127.0.0.1:3478\"]\n");
        let now = Timestamp::from_unix_millis(1_736_514_000_000);
        let body = mint(&t, "alice", now, Duration::from_secs(3600));
        let json: serde_json::Value = serde_json::to_value(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "credentials": {
                    "urls": [
                        "turn:127.0.0.1:3478?transport=udp",
                        "turn:127.0.0.1:3478?transport=tcp"
                    ],
                    "username": "1736517600:alice",
                    // printf '1736517600:alice' | openssl dgst -sha1 -hmac secret -binary | base64
                    "credential": "DolFTSEG85ZJiJWslIq8ApYL7cE=",
                },
                "expiresAt": "2025-01-10T14:00:00Z",
            })
        );
    }

    #[test]
    fn minting_uses_the_configured_separator() {
        let t = turn("listen = [\"127.0.0.1:3478\"]\nrest_api_separator = \"_\"\n");
        let now = Timestamp::from_unix_millis(1_736_514_000_000);
        let body = mint(&t, "@alice:example.org", now, Duration::from_secs(3600));
        assert_eq!(body.credentials.username, "1736517600_@alice:example.org");
        // printf '1736517600_@alice:example.org' | openssl dgst -sha1 -hmac secret -binary | base64
        assert_eq!(body.credentials.credential, "20kjIwOJTT5xWw12GFB1prVwOTo=");
    }
}
