use super::*;

mod turn;

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
listen = "127.0.0.1:8443"
max_connections = 500
max_connections_per_source = 50
trusted_proxies = ["10.0.0.1/32", "fd00::/8"]
request_timeout = "5s"
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
jwt_secret = "jwt-secret-of-at-least-32-bytes-000"
admin_token_file = "/dev/null/nope"
open_conversations = true
audience = "switchboard"
issuer = "https://chat.example.com"

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
    fs::write(
        dir.path().join("admin"),
        "  admin-token-of-at-least-32-bytes-0\n",
    )
    .unwrap();
    let text = FULL.replace("/dev/null/nope", "admin");
    let c = load_str(&text, dir.path(), origin()).unwrap();
    assert!(!c.dev);
    assert_eq!(c.http.listen, "127.0.0.1:8443".parse().unwrap());
    assert_eq!(c.http.max_connections, 500);
    assert_eq!(c.http.max_connections_per_source, 50);
    assert_eq!(c.http.trusted_proxies.len(), 2);
    assert_eq!(c.http.request_timeout, Duration::from_secs(5));
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
    assert_eq!(
        c.auth.jwt_secret.unwrap().expose(),
        "jwt-secret-of-at-least-32-bytes-000"
    );
    assert_eq!(
        c.auth.admin_token.unwrap().expose(),
        "admin-token-of-at-least-32-bytes-0"
    );
    assert_eq!(c.auth.scope.audience.as_deref(), Some("switchboard"));
    assert_eq!(
        c.auth.scope.issuer.as_deref(),
        Some("https://chat.example.com")
    );
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
    assert_eq!(c.http.max_connections_per_source, 256);
    assert!(c.http.trusted_proxies.is_empty());
    assert_eq!(c.http.request_timeout, Duration::from_secs(30));
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
    // Group calls of 3 go through the SFU, on TURN's address, port 3480; participants are
    // told the relay address (the listen address is every address).
    assert_eq!(c.calls.sfu_from, 3);
    let sfu = c.sfu.unwrap();
    assert_eq!(sfu.listen, "0.0.0.0:3480".parse().unwrap());
    assert_eq!(sfu.public_ip, Some("198.51.100.7".parse().unwrap()));
}

#[test]
fn the_sfu_follows_turn_and_can_be_turned_off() {
    let sfu = |extra: &str| load(&format!("{MINIMAL}{extra}")).map(|c| c.sfu);
    // external_ip before relay_ip; an explicit public_ip before both.
    let behind_nat = sfu("external_ip = \"203.0.113.9\"\n").unwrap().unwrap();
    assert_eq!(behind_nat.public_ip, Some("203.0.113.9".parse().unwrap()));
    let set = "\n[sfu]\nlisten = \"0.0.0.0:4000\"\npublic_ip = \"192.0.2.1\"\n";
    let set = sfu(set).unwrap().unwrap();
    assert_eq!(set.listen.port(), 4000);
    assert_eq!(set.public_ip, Some("192.0.2.1".parse().unwrap()));
    // A listen address of its own is what participants are told.
    let own = sfu("\n[sfu]\nlisten = \"192.0.2.5:3480\"\n")
        .unwrap()
        .unwrap();
    assert_eq!(own.public_ip, None);
    // A participant's caps: 4 tracks and 2.5 Mbit/s of video by default; 0 lifts the cap.
    assert_eq!((own.max_tracks, own.max_bitrate), (4, Some(2_500_000)));
    let caps = sfu("\n[sfu]\nmax_tracks = 2\nmax_bitrate = 0\n")
        .unwrap()
        .unwrap();
    assert_eq!((caps.max_tracks, caps.max_bitrate), (2, None));
    // Off.
    assert!(sfu("\n[calls]\nsfu_from = 0\n").unwrap().is_none());
    for (extra, key, says) in [
        (
            "\n[calls]\nsfu_from = 0\n[sfu]\nlisten = \"0.0.0.0:1\"\n",
            "sfu",
            "sfu_from = 0",
        ),
        ("\n[calls]\nsfu_from = 1\n", "calls.sfu_from", "at least 2"),
        ("\n[sfu]\nlisten = \"3480\"\n", "sfu.listen", "ip:port"),
        ("\n[sfu]\npublic_ip = \"x\"\n", "sfu.public_ip", "not an IP"),
        ("\n[sfu]\nport = 1\n", "sfu.port", "unknown"),
        (
            "\n[sfu]\nmax_tracks = 0\n",
            "sfu.max_tracks",
            "between 1 and 16",
        ),
        (
            "\n[sfu]\nmax_bitrate = 5000\n",
            "sfu.max_bitrate",
            "at least 100000",
        ),
        (
            "\n[calls]\nsfu_from = 0\n[sfu]\nmax_tracks = 2\n",
            "sfu",
            "sfu_from = 0",
        ),
    ] {
        let e = err(&format!("{MINIMAL}{extra}"));
        assert_eq!(e.key, key, "{extra}: {e}");
        assert!(e.to_string().contains(says), "{extra}: {e}");
    }
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
    // Inside a multi-line array: the element, by its index (the line alone has no key).
    let e = err(&format!(
        "{MINIMAL}allow_peers = [\n  \"10.0.0.0/8\",\n  5,\n]\n"
    ));
    assert_eq!(e.key, "turn.allow_peers[1]");
    assert!(e.message.contains("line 6, column 3"), "{e}");
}

#[test]
fn error_keys_are_the_path_serde_was_at() {
    // Each before MINIMAL, whose [turn] runs to the end.
    for (text, key, says) in [
        // Wrong types, at the top level, in a section, in an array.
        ("dev = \"yes\"\n", "dev", "invalid type"),
        (
            "[auth]\nopen_conversations = 1\n",
            "auth.open_conversations",
            "invalid type",
        ),
        (
            "[http]\nallowed_origins = \"*\"\n",
            "http.allowed_origins",
            "invalid type",
        ),
        (
            "[http]\nallowed_origins = [\"*\", [1]]\n",
            "http.allowed_origins[1]",
            "invalid type",
        ),
        // A key given as a dotted key or an inline table is the same key.
        (
            "calls.max_participants = -1\n",
            "calls.max_participants",
            "invalid value",
        ),
        (
            "calls = { ring_timeout = 9 }\n",
            "calls.ring_timeout",
            "invalid type",
        ),
        ("[store]\npath.x = 1\n", "store.path", "invalid type"),
        // A section that is not a table.
        ("log = 3\n", "log", "invalid type"),
        // Unknown keys, nested ones included.
        (
            "[webhooks]\nurls = []\n",
            "webhooks.urls",
            "unknown field `urls`",
        ),
        (
            "calls = { ring = \"1s\" }\n",
            "calls.ring",
            "unknown field `ring`",
        ),
        // One address or a list of them: neither.
        (
            "[webhooks]\nurl = 5\n",
            "webhooks.url",
            "did not match any variant",
        ),
    ] {
        let e = err(&format!("{text}{MINIMAL}"));
        assert_eq!(e.key, key, "{text}: {e}");
        assert!(e.message.contains(says), "{text}: {e}");
    }
    let e = err(&format!("{MINIMAL}tls_listen = [\"a\", \"b\", 3]\n"));
    assert_eq!(e.key, "turn.tls_listen[2]", "{e}");
    // TOML that does not parse has no key: where it is instead.
    let e = err(&format!("{MINIMAL}realm = \n"));
    assert_eq!(e.key, "line 4, column 9", "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "/etc/switchboard/switchboard.toml: line 4, column 9: {}",
            e.message
        )
    );
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
    let sfu = c.sfu.as_ref().unwrap();
    assert_eq!(
        (sfu.listen, sfu.public_ip),
        ("127.0.0.1:3480".parse().unwrap(), None)
    );
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

#[test]
fn auth_secrets_shorter_than_32_bytes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let short = "x".repeat(MIN_AUTH_SECRET_LEN - 1);
    let long = "x".repeat(MIN_AUTH_SECRET_LEN);
    fs::write(dir.path().join("short"), format!("{short}\n")).unwrap();
    fs::write(dir.path().join("long"), format!("{long}\n")).unwrap();
    let at = |auth: &str| load_str(&format!("{MINIMAL}[auth]\n{auth}\n"), dir.path(), origin());
    for (auth, key) in [
        (format!("jwt_secret = \"{short}\""), "auth.jwt_secret"),
        (
            "jwt_secret_file = \"short\"".to_owned(),
            "auth.jwt_secret_file",
        ),
        (format!("admin_token = \"{short}\""), "auth.admin_token"),
        (
            "admin_token_file = \"short\"".to_owned(),
            "auth.admin_token_file",
        ),
    ] {
        let e = at(&auth).expect_err(&auth);
        assert_eq!(e.key, key, "{e}");
        assert!(e.message.contains("is 31 bytes; at least 32"), "{e}");
    }
    let c = at(&format!(
        "jwt_secret_file = \"long\"\nadmin_token = \"{long}\""
    ))
    .unwrap();
    assert!(c.auth.jwt_secret.is_some() && c.auth.admin_token.is_some());
    assert_eq!(c.auth.scope, switchboard_signaling::auth::Scope::default());
    let e = at("audience = \" \"").unwrap_err();
    assert_eq!(e.key, "auth.audience");
}

#[test]
fn development_mode_is_refused_outside_loopback_unless_forced() {
    let dev = |lines: &str| {
        load(&format!(
            "dev = true\n{lines}{MINIMAL}[http]\nlisten = \"0.0.0.0:8080\"\n"
        ))
    };
    let e = dev("").unwrap_err();
    assert_eq!(e.key, "dev");
    assert!(e.message.contains("dev_allow_public = true"), "{e}");
    let c = dev("dev_allow_public = true\n").unwrap();
    let keys: Vec<&str> = c.warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(keys, ["dev_allow_public", "http.listen"]);
    // Not in development mode: a warning of plain HTTP only; on loopback, nothing.
    let c = load(&format!("{MINIMAL}[http]\nlisten = \"[::]:8080\"\n")).unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(c.warnings[0].message.contains("plain HTTP"));
    let c = load(&format!(
        "dev = true\n{MINIMAL}[http]\nlisten = \"[::1]:8080\"\n"
    ))
    .unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

/// The packaged conffile, its secret files made here: HTTP on loopback, no warning of it.
#[test]
fn the_packaged_config_serves_http_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["turn-secret", "jwt-secret", "admin-token"] {
        // As postinst makes them: 32 random bytes in base64.
        fs::write(
            dir.path().join(name),
            "q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k=\n",
        )
        .unwrap();
    }
    let text = include_str!("../../../packaging/switchboard.toml")
        .replace("/etc/switchboard/", &format!("{}/", dir.path().display()))
        .replace("#relay_ip = \"192.0.2.10\"", "relay_ip = \"192.0.2.10\"")
        .replace("#external_ip = ", "external_ip = ");
    let c = load_str(&text, dir.path(), origin()).unwrap();
    assert_eq!(c.http.listen, "127.0.0.1:8080".parse().unwrap());
    assert!(!c.dev);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}
