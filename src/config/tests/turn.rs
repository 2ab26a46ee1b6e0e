//! The `[turn]` section: quotas, peers, addresses, TLS, the REST API usernames.

use super::*;

#[test]
fn max_allocation_life_defaults_to_12h_and_is_bounded() {
    assert_eq!(
        load(MINIMAL).unwrap().turn.max_allocation_life,
        Duration::from_secs(12 * 3600)
    );
    let c = load(&format!("{MINIMAL}max_allocation_life = \"2h\"\n")).unwrap();
    assert_eq!(c.turn.max_allocation_life, Duration::from_secs(2 * 3600));
    for bad in ["8d", "0s"] {
        let e = err(&format!("{MINIMAL}max_allocation_life = \"{bad}\"\n"));
        assert_eq!(e.key, "turn.max_allocation_life", "{bad}");
    }
}

#[test]
fn allow_peers_takes_ports_on_a_single_address_only() {
    let c = load(&format!(
        "{MINIMAL}allow_peers = [\"10.0.0.5:5000-5100\", \"[::1]:5432\"]\n"
    ))
    .unwrap();
    assert_eq!(c.turn.allow_peers[0].ports(), Some(&(5000..=5100)));
    let e = err(&format!("{MINIMAL}allow_peers = [\"10.0.0.0/8:5000\"]\n"));
    assert_eq!(
        e.to_string(),
        "/etc/switchboard/switchboard.toml: turn.allow_peers[0]: `10.0.0.0/8:5000`: a port \
         range goes only with a single address, like `10.0.0.5:5000-5100` or \
         `[2001:db8::5]:5000-5100`"
    );
    let e = err(&format!(
        "{MINIMAL}allow_peers = [\"10.0.0.5:6000-5000\"]\n"
    ));
    assert!(
        e.message
            .contains("`6000-5000` is not a port or port range"),
        "{e}"
    );
    // deny_peers has no ports: a deny is for the whole address.
    let e = err(&format!("{MINIMAL}deny_peers = [\"10.0.0.5:22\"]\n"));
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
    // Each refused, named by its key.
    for (extra, key) in [
        ("listen = [\"0.0.0.0:3478\", \"3478\"]", "turn.listen[1]"),
        ("listen = []", "turn.listen"),
        ("external_ip = \"0.0.0.0\"", "turn.external_ip"),
        ("external_ip = \"224.0.0.1\"", "turn.external_ip"),
        ("max_connections = 0", "turn.max_connections"),
        (
            "max_connections_per_source = 0",
            "turn.max_connections_per_source",
        ),
        ("[http]\nmax_connections = 0", "http.max_connections"),
        (
            "[http]\nmax_connections_per_source = 0",
            "http.max_connections_per_source",
        ),
        (
            "[http]\ntrusted_proxies = [\"10.0.0.1/32\", \"proxy\"]",
            "http.trusted_proxies[1]",
        ),
        ("[http]\nrequest_timeout = \"0s\"", "http.request_timeout"),
    ] {
        let e = err(&format!("{MINIMAL}{extra}\n"));
        assert_eq!(e.key, key, "{extra}: {e}");
    }
    let e = err(&format!("{MINIMAL}external_ip = \"2001:db8::1\"\n"));
    assert!(
        e.message.contains("no turn.relay_ip of its IP version"),
        "{e}"
    );
    let e = err("[turn]\nsecret = \"x\"\nrelay_ip = \"0.0.0.0\"\n");
    assert_eq!(e.key, "turn.relay_ip");
    let e = err("[turn]\nsecret = \"x\"\nrelay_ip = [\"192.0.2.1\", \"192.0.2.2\"]\n");
    assert!(e.message.contains("one IPv4 and one IPv6"), "{e}");
    let c = load(MINIMAL).unwrap();
    assert_eq!(c.turn.max_connections_per_source, 128);
    let c = load(&format!(
        "{MINIMAL}[http]\ntrusted_proxies = [\"10.0.0.1\", \"::/0\"]\n"
    ))
    .unwrap();
    assert!(
        c.warnings.iter().any(|w| w
            .to_string()
            .starts_with("http.trusted_proxies[1]: `::/0` trusts every peer")),
        "{:?}",
        c.warnings
    );
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
fn bandwidth_caps_default_to_what_a_call_never_meets() {
    let b = load(MINIMAL).unwrap().turn.bandwidth;
    assert_eq!(
        (b.allocation, b.user, b.total, b.burst),
        (5_000_000, 25_000_000, 0, Duration::from_secs(1))
    );
    let c = load(&format!(
        "{MINIMAL}allocation_bandwidth = 0\nuser_bandwidth = 300000\n\
         total_bandwidth = 125000000\nbandwidth_burst = \"250ms\"\n"
    ))
    .unwrap();
    let b = c.turn.bandwidth;
    assert_eq!(
        (b.allocation, b.user, b.total, b.burst),
        (0, 300_000, 125_000_000, Duration::from_millis(250))
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn bandwidth_values_are_checked_by_key() {
    for (line, key) in [
        ("allocation_bandwidth = -1", "turn.allocation_bandwidth"),
        ("user_bandwidth = \"5MB\"", "turn.user_bandwidth"),
        ("total_bandwidth = 1.5", "turn.total_bandwidth"),
        ("bandwidth_burst = \"0s\"", "turn.bandwidth_burst"),
        ("bandwidth_burst = \"2m\"", "turn.bandwidth_burst"),
        ("bandwidth_burst = \"soon\"", "turn.bandwidth_burst"),
        ("bandwidth_burst = 1", "turn.bandwidth_burst"),
    ] {
        assert_eq!(err(&format!("{MINIMAL}{line}\n")).key, key, "{line}");
    }
    // A cap below 1 Mbit/s works, with a warning.
    let c = load(&format!("{MINIMAL}allocation_bandwidth = 20000\n")).unwrap();
    assert_eq!(c.turn.bandwidth.allocation, 20_000);
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert_eq!(c.warnings[0].key, "turn.allocation_bandwidth");
}
