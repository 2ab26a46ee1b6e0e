//! `switchboard check-config --config FILE`, run as the real binary: a valid file is
//! `config OK: <path>` and a summary on stdout with exit 0; a problem is
//! `error: <path>: <key>: <why>` on stderr with exit 2 (relay-unreachable warnings included),
//! while other warnings are `warning:` lines with exit 0.
//!
//! Every file sets a public `turn.relay_ip`, so nothing here consults the routing table.
//! `switchboard turn-credentials`, which loads a file the same way, is run here too.

use std::path::Path;
use std::process::Command;

/// The inline TURN secret of these files; it must never be printed.
const SECRET: &str = "s3cret-Never-Print-Me-0123456789";

/// A production-style file; `{turn}` is replaced by extra `[turn]` lines.
const BASE: &str = r#"
dev = false

[http]
listen = "127.0.0.1:8080"

[turn]
listen = ["0.0.0.0:3478"]
relay_ip = "198.51.100.7"
secret = "@SECRET@"
{turn}

[store]
path = "switchboard.db"
"#;

/// A production-style file with `turn_lines` added to `[turn]`.
fn config(turn_lines: &str) -> String {
    BASE.replace("@SECRET@", SECRET)
        .replace("{turn}", turn_lines)
}

/// Runs `check-config` on `toml`, written to `switchboard.toml` in a fresh temporary dir:
/// (exit code, stdout, stderr).
fn check(toml: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchboard.toml");
    std::fs::write(&path, toml).unwrap();
    check_path(&path)
}

fn check_path(path: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("check-config")
        .arg("--config")
        .arg(path)
        .output()
        .unwrap();
    let code = out
        .status
        .code()
        .expect("check-config was killed by a signal");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    // Whatever the outcome, the secret is never shown.
    assert!(!stdout.contains(SECRET), "secret in stdout:\n{stdout}");
    assert!(!stderr.contains(SECRET), "secret in stderr:\n{stderr}");
    (code, stdout, stderr)
}

/// A failed check: exit 2, no `config OK`, and an `error: <path>: <key>: <why>` line whose
/// <why> contains `fragment`.
fn assert_error((code, stdout, stderr): &(i32, String, String), key: &str, fragment: &str) {
    let shown = format!("code {code}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(*code, 2, "{shown}");
    assert!(!stdout.contains("config OK"), "{shown}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error: ") && l.contains(&format!("switchboard.toml: {key}: ")))
        .unwrap_or_else(|| panic!("no `error: ...switchboard.toml: {key}: ` line\n{shown}"));
    let why = &line[line.find(&format!(": {key}: ")).unwrap() + key.len() + 4..];
    assert!(
        why.contains(fragment),
        "`{fragment}` not in `{why}`\n{shown}"
    );
}

#[test]
fn good_production_config_is_ok_with_a_summary() {
    let (code, stdout, stderr) = check(&config(""));
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.starts_with("config OK: "), "{stdout}");
    assert!(
        stdout.lines().next().unwrap().ends_with("switchboard.toml"),
        "{stdout}"
    );
    assert!(
        stdout.contains("turn relay:  198.51.100.7 ports 49152-65535 (16384)\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("turn listen: 0.0.0.0:3478 (udp, tcp;"),
        "{stdout}"
    );
    assert!(stdout.contains("http listen: 127.0.0.1:8080"), "{stdout}");
    // user_quota not set: derived from calls.max_participants (20) and the 2 URLs served.
    assert!(
        stdout.contains(
            "turn limits: 76 allocations per user (for 20-person calls over 2 TURN URLs), \
             10000 in total,"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("usernames <expiry>:<user>"), "{stdout}");
    assert!(!stdout.contains("development"), "{stdout}");
    assert_eq!(stderr, "", "a clean file warns of nothing");
}

#[test]
fn a_plain_warning_still_passes() {
    // A short secret is a `warning:`, not an unreachable relay: exit 0.
    let toml = config("").replace(SECRET, "short");
    let (code, stdout, stderr) = check(&toml);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.starts_with("config OK: "), "{stdout}");
    assert!(
        stderr.starts_with("warning: ") && stderr.contains("switchboard.toml: turn.secret: "),
        "{stderr}"
    );
    assert!(stderr.contains("shorter than 16 bytes"), "{stderr}");
    assert!(!stderr.contains("error:"), "{stderr}");
}

#[test]
fn a_public_listener_warns_of_plain_http_and_refuses_dev_mode_unless_forced() {
    let public = config("").replace("127.0.0.1:8080", "0.0.0.0:8080");
    let (code, stdout, stderr) = check(&public);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.contains("switchboard.toml: http.listen: 0.0.0.0:8080 is not a loopback address")
            && stderr.contains("plain HTTP"),
        "{stderr}"
    );
    let dev = public.replace("dev = false", "dev = true");
    assert_error(
        &check(&dev),
        "dev",
        "set dev_allow_public = true to force it",
    );
    // `serve` refuses it the same way, before binding anything.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchboard.toml");
    std::fs::write(&path, dev.replace("0.0.0.0:8080", "0.0.0.0:0")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("dev_allow_public"), "{stderr}");
    // Forced: it runs, warning of it.
    let forced = dev.replace("dev = true", "dev = true\ndev_allow_public = true");
    let (code, stdout, stderr) = check(&forced);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.contains("dev_allow_public: development mode on 0.0.0.0:8080"),
        "{stderr}"
    );
    // On loopback, development mode needs no forcing and nothing is said of the listener.
    let (code, _, stderr) = check(&config("").replace("dev = false", "dev = true"));
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("http.listen"), "{stderr}");
}

#[test]
fn short_auth_secrets_are_refused_and_the_token_scope_is_shown() {
    let auth = |lines: &str| format!("{}\n[auth]\n{lines}\n", config(""));
    assert_error(
        &check(&auth("jwt_secret = \"only-twenty-bytes-xx\"")),
        "auth.jwt_secret",
        "is 20 bytes; at least 32 are required",
    );
    assert_error(
        &check(&auth("admin_token = \"admin\"")),
        "auth.admin_token",
        "is 5 bytes; at least 32",
    );
    let long = "0123456789abcdef0123456789abcdef";
    let (code, stdout, stderr) = check(&auth(&format!(
        "jwt_secret = \"{long}\"\nadmin_token = \"{long}\"\naudience = \"switchboard\"\n\
         issuer = \"https://chat.example.com\""
    )));
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains(
            "tokens need aud \"switchboard\", tokens need iss \"https://chat.example.com\""
        ),
        "{stdout}"
    );
}

#[test]
fn bad_cidr_names_its_list_entry() {
    let out = check(&config(r#"allow_peers = ["10.0.0.0/33"]"#));
    assert_error(&out, "turn.allow_peers[0]", "prefix length `33`");
}

#[test]
fn total_quota_beyond_the_port_range() {
    let out = check(&config("relay_ports = \"50000-50009\"\ntotal_quota = 100"));
    assert_error(
        &out,
        "turn.total_quota",
        "100 allocations need 100 relay ports but turn.relay_ports has 10",
    );
}

#[test]
fn user_quota_above_total_quota() {
    let out = check(&config("user_quota = 50\ntotal_quota = 40"));
    assert_error(
        &out,
        "turn.total_quota",
        "40 is below turn.user_quota (50): raise total_quota to at least user_quota",
    );
}

#[test]
fn rest_api_separator_must_be_one_character() {
    let out = check(&config("rest_api_separator = \"::\""));
    assert_error(
        &out,
        "turn.rest_api_separator",
        "\"::\" is not one printable ASCII character other than a digit",
    );
    let (code, stdout, stderr) = check(&config("rest_api_separator = \"_\""));
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("usernames <expiry>_<user>"), "{stdout}");
}

#[test]
fn missing_tls_certificate() {
    // Relative paths resolve against the config file's dir, where neither file exists.
    let out = check(&config(
        "tls_listen = [\"0.0.0.0:5349\"]\ntls_cert = \"missing-cert.pem\"\ntls_key = \"missing-key.pem\"",
    ));
    assert_error(&out, "turn.tls_cert", "cannot read the certificate");
    assert!(out.2.contains("missing-cert.pem"), "{}", out.2);
}

#[test]
fn a_bad_key_file_names_the_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let pem = |name: &str| {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (cert, key) = (
            dir.path().join(format!("{name}.crt")),
            dir.path().join(format!("{name}.key")),
        );
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        (cert.display().to_string(), key.display().to_string())
    };
    let (cert, key) = pem("a");
    let (_, other_key) = pem("b");
    let tls = |cert: &str, key: &str| {
        format!("tls_listen = [\"0.0.0.0:5349\"]\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"")
    };
    let (code, stdout, stderr) = check(&config(&tls(&cert, &key)));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("turn cert:   {cert} (key {key})")),
        "{stdout}"
    );

    let missing = dir.path().join("missing.key").display().to_string();
    let out = check(&config(&tls(&cert, &missing)));
    assert_error(&out, "turn.tls_key", "cannot read the private key");
    let out = check(&config(&tls(&cert, &other_key)));
    assert_error(&out, "turn.tls_key", "does not fit the certificate");

    // TURN over TLS with [http]'s certificate: the error names [http]'s key.
    let http_only = config("tls_listen = [\"0.0.0.0:5349\"]").replace(
        "[http]\n",
        &format!(
            "[http]\ntls_cert = \"{}\"\ntls_key = \"{key}\"\n",
            missing.replace(".key", ".crt")
        ),
    );
    let out = check(&http_only);
    assert_error(&out, "http.tls_cert", "cannot read the certificate");
}

#[test]
fn private_relay_ip_needs_external_ip() {
    let toml = config("").replace("198.51.100.7", "10.0.0.5");
    let out = check(&toml);
    assert_error(
        &out,
        "turn.external_ip",
        "not set, and turn.relay_ip 10.0.0.5 is a private address",
    );

    // Saying the private address is meant (a LAN-only relay) passes.
    let (code, stdout, stderr) =
        check(&config("external_ip = \"10.0.0.5\"").replace("198.51.100.7", "10.0.0.5"));
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.starts_with("config OK: "), "{stdout}");
    assert!(
        stdout
            .contains("turn relay:  10.0.0.5 ports 49152-65535 (16384), advertised as 10.0.0.5\n"),
        "{stdout}"
    );
    assert_eq!(stderr, "");
}

#[test]
fn unknown_key_is_named() {
    let out = check(&config("relay_port = \"50000-50009\""));
    assert_error(&out, "turn.relay_port", "unknown field `relay_port`");
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = check_path(&dir.path().join("switchboard.toml"));
    assert_eq!(code, 2, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(!stdout.contains("config OK"), "{stdout}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains("switchboard.toml: cannot read: "),
        "{stderr}"
    );
}

/// `switchboard turn-credentials` (the same loading of the file) mints with
/// `turn.rest_api_separator`, for any user id without control characters.
#[test]
fn turn_credentials_cli_uses_the_configured_separator() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchboard.toml");
    std::fs::write(&path, config("rest_api_separator = \"_\"")).unwrap();
    let run = |user: &str| {
        Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["turn-credentials", "--user", user, "--config"])
            .arg(&path)
            .output()
            .unwrap()
    };
    let out = run("@alice:example.org");
    assert!(out.status.success(), "{out:?}");
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let username = body["credentials"]["username"].as_str().unwrap();
    let (expiry, user) = username.split_once('_').unwrap();
    assert!(expiry.parse::<u64>().is_ok(), "{username}");
    assert_eq!(user, "@alice:example.org");
    assert_eq!(
        body["credentials"]["credential"],
        switchboard_turn::credentials::password_for(SECRET.as_bytes(), username)
    );
    let out = run("a\nb");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid user id"));
}
