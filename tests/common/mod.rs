//! Runs the real daemon for integration tests: a temp dir, a config on loopback with port 0,
//! and the bound address read back from its log.

#![allow(dead_code)] // Each test binary uses its own part of this.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub mod ws;

pub const SECRET: &str = "integration-test-secret";
pub const REALM: &str = "switchboard.test";
/// `auth.jwt_secret` of test daemons.
pub const JWT_SECRET: &str = "integration-test-jwt-secret-0123456";
/// `auth.admin_token` of test daemons.
pub const ADMIN_TOKEN: &str = "integration-test-admin-token-012345";

/// What a test daemon's config adds to the defaults of [`Daemon::start_with`].
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Lines inside `[turn]` (e.g. `allow_peers = ["127.0.0.1/32"]`).
    pub turn: String,
    /// Lines inside `[auth]`; `open_conversations = true` unless this sets it.
    pub auth: String,
    /// Lines inside `[calls]` (e.g. `ring_timeout = "1s"`).
    pub calls: String,
    /// Lines inside `[http]`, after its `listen` (e.g. `max_connections = 5`).
    pub http: String,
    /// Environment variables for the daemon (e.g. `NOTIFY_SOCKET`).
    pub env: Vec<(String, String)>,
    /// `dev = true`: development mode (the demo sign-in).
    pub dev: bool,
    /// `[log] format = "json"` instead of text.
    pub json_logs: bool,
    /// Lines of a `[webhooks]` section (none when empty).
    pub webhooks: String,
    /// Lines inside `[sfu]`, after its `listen` (an ephemeral loopback port); no `[sfu]`
    /// section when `calls` sets `sfu_from = 0`.
    pub sfu: String,
}

/// A running `switchboard serve`, killed on drop.
pub struct Daemon {
    child: Option<Child>,
    /// The first `turn.listen` address (UDP and TCP).
    pub turn: SocketAddr,
    /// The first `turn.tls_listen` address, when the config has one.
    pub tls: Option<SocketAddr>,
    /// The HTTP API.
    pub http: SocketAddr,
    /// The SFU's media port, when one runs.
    pub sfu: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
    log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts the daemon with TURN on 127.0.0.1 (port 0), relay ports 20000–29999 (below the
    /// kernel's ephemeral range, so a test's own sockets never take one), and
    /// `extra` appended inside `[turn]` (e.g. `allow_peers = ["127.0.0.1/32"]`).
    pub fn start(extra: &str) -> Daemon {
        Daemon::start_with(Options {
            turn: extra.to_owned(),
            ..Options::default()
        })
    }

    /// Starts the daemon as [`Daemon::start`] does, with HTTP on 127.0.0.1 (port 0), the store
    /// in its temp dir, the test JWT secret and admin token, and `options` added.
    /// A daemon started with `--dev` (the demo page's defaults) and nothing else.
    pub fn dev() -> Daemon {
        Daemon::start_with(Options {
            dev: true,
            ..Options::default()
        })
    }

    pub fn start_with(options: Options) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let extra = options.turn.as_str();
        let mut turn = String::new();
        for (key, value) in [
            ("listen", "[\"127.0.0.1:0\"]".to_owned()),
            ("relay_ip", "\"127.0.0.1\"".to_owned()),
            ("relay_ports", "\"20000-29999\"".to_owned()),
            ("realm", format!("\"{REALM}\"")),
            ("secret", format!("\"{SECRET}\"")),
        ] {
            // `extra` may set any of these itself.
            if !extra
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{key} ")))
            {
                turn.push_str(&format!("{key} = {value}\n"));
            }
        }
        let open = if options.auth.contains("open_conversations") {
            ""
        } else {
            "open_conversations = true\n"
        };
        // Tests make requests as fast as they run and leave calls live: no per-user budget or
        // cap on live calls unless a test sets them.
        let budget = if options.http.contains("user_rate") {
            ""
        } else {
            "user_rate = 1000000\nuser_burst = 1000000\n"
        };
        let live = if options.calls.contains("max_live_per_user") {
            ""
        } else {
            "max_live_per_user = 1000\n"
        };
        let sfu = if options.calls.contains("sfu_from = 0") {
            String::new()
        } else {
            format!("[sfu]\nlisten = \"127.0.0.1:0\"\n{}\n\n", options.sfu)
        };
        let config = format!(
            "dev = {}\n\n[turn]\n{turn}{extra}\n\n[http]\nlisten = \"127.0.0.1:0\"\n{budget}{}\n\n\
             [auth]\njwt_secret = \"{JWT_SECRET}\"\nadmin_token = \"{ADMIN_TOKEN}\"\n{open}{}\n\n\
             [store]\npath = \"switchboard.db\"\n\n[calls]\n{live}{}\n\n{sfu}\
             [log]\nlevel = \"info\"\nformat = \"{}\"\n{}",
            options.dev,
            options.http,
            options.auth,
            options.calls,
            if options.json_logs { "json" } else { "text" },
            if options.webhooks.is_empty() {
                String::new()
            } else {
                format!("\n[webhooks]\n{}\n", options.webhooks)
            }
        );
        std::fs::write(dir.path().join("switchboard.toml"), config).expect("write config");
        Daemon::spawn(dir, &options.env)
    }

    /// Starts the daemon again on the config and store a killed one left in `dir`.
    pub fn restart(dir: tempfile::TempDir) -> Daemon {
        Daemon::spawn(dir, &[])
    }

    fn spawn(dir: tempfile::TempDir, env: &[(String, String)]) -> Daemon {
        let path: PathBuf = dir.path().join("switchboard.toml");
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env_remove("WATCHDOG_PID")
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn switchboard");
        let stderr = child.stderr.take().expect("stderr");
        // The HTTP API is the last thing `serve` starts.
        let (log, rx) = collect_lines(vec![Box::new(stderr)], "http listening");
        let started = rx.recv_timeout(Duration::from_secs(20)).is_ok();
        let lines = log.lock().unwrap().clone();
        let addr = |pat: &str| -> Option<SocketAddr> {
            let line = lines.iter().find(|l| l.contains(pat))?;
            field(line, "addr")?.parse().ok()
        };
        let (turn, http) = (addr("turn listening (udp)"), addr("http listening"));
        let (Some(turn), Some(http), true) = (turn, http, started) else {
            // Never leave a daemon behind a failed test.
            let _ = child.kill();
            let _ = child.wait();
            panic!("daemon did not report its listeners: {lines:#?}");
        };
        Daemon {
            turn,
            tls: addr("turn listening (tls)"),
            http,
            sfu: addr("sfu listening (udp)"),
            child: Some(child),
            dir,
            log,
        }
    }

    /// SIGKILL, as a crash or an OOM kill would; returns the temp dir with the config and the
    /// store for [`Daemon::restart`].
    pub fn kill(mut self) -> tempfile::TempDir {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
        let dir = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self.dir, dir)
    }

    /// The sum of every series of the counter or gauge `name` in `/metrics` (0 when it has
    /// none yet).
    pub fn metric(&self, name: &str) -> u64 {
        let text = ureq::get(format!("http://{}/metrics", self.http))
            .call()
            .expect("GET /metrics")
            .body_mut()
            .read_to_string()
            .expect("the metrics");
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|r| r.starts_with([' ', '{']))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// [`Daemon::metric`] once it reads `want`, or its last reading after 2 s: the relay
    /// threads publish their figures a moment after the request they answered.
    pub fn metric_settled(&self, name: &str, want: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let v = self.metric(name);
            if v == want || Instant::now() >= deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The SQLite file of the call store.
    pub fn store_path(&self) -> PathBuf {
        self.dir.path().join("switchboard.db")
    }

    /// A client for the HTTP API.
    pub fn api(&self) -> Api {
        Api::new(self.http)
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends SIGHUP (a reload).
    pub fn sighup(&self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid() as i32, libc::SIGHUP) };
    }

    /// The daemon's resident memory in KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// TURN REST credentials valid for an hour.
    pub fn credentials(&self, user: &str) -> (String, String) {
        credentials(user, unix_now() + 3600)
    }

    /// The daemon's log lines so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits (bounded) until a log line satisfies `pred`, returning it.
    pub fn wait_log(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(l) = self.log().into_iter().find(|l| pred(l)) {
                return Some(l);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGTERM, and the exit status (bounded wait).
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let status = terminate(&mut child, Duration::from_secs(10))
            .expect("daemon did not stop within 10 s of SIGTERM");
        // Let the log reader catch up with the last lines.
        std::thread::sleep(Duration::from_millis(100));
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The lines of `streams` (a child's stdout and stderr, say), collected by a thread a stream
/// until it ends; the receiver gets a message once each line containing `mark` is collected.
pub fn collect_lines(
    streams: Vec<Box<dyn std::io::Read + Send>>,
    mark: &'static str,
) -> (Arc<Mutex<Vec<String>>>, std::sync::mpsc::Receiver<()>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    for stream in streams {
        let (sink, tx) = (log.clone(), tx.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let marked = line.contains(mark);
                sink.lock().unwrap().push(line);
                if marked {
                    let _ = tx.send(());
                }
            }
        });
    }
    (log, rx)
}

/// SIGTERM to `child`, and its exit status once it exits within `limit`; else SIGKILL and
/// `None`.
pub fn terminate(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `key=value` from a tracing text line, or `"key":value` from a JSON one (`[log] format =
/// "json"`).
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    if line.starts_with('{') {
        let pat = format!("\"{key}\":");
        let rest = &line[line.find(&pat)? + pat.len()..];
        return match rest.strip_prefix('"') {
            Some(s) => Some(&s[..s.find('"')?]),
            None => Some(&rest[..rest.find([',', '}'])?]),
        };
    }
    let pat = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(pat.as_str()))
        .map(|v| v.trim_matches('"'))
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn credentials(user: &str, expiry: u64) -> (String, String) {
    let c = switchboard_turn::credentials::mint(SECRET.as_bytes(), user, expiry);
    (c.username, c.password)
}

/// TURN REST usernames as other deployments mint them with coturn's shared secret (the
/// shapes of `switchboard_turn::credentials`' docs), expiring at `expiry`: (who, username).
/// The relay must accept each signed with [`SECRET`] and refuse each with a wrong password.
pub fn foreign_usernames(expiry: u64) -> Vec<(&'static str, String)> {
    vec![
        // Synapse: `<expiry>:<Matrix user id>`, colons and all.
        ("matrix", format!("{expiry}:@alice:example.org")),
        // Nextcloud Talk: `<expiry>:<16 random characters of A-Za-z0-9+/>`.
        ("nextcloud", format!("{expiry}:q8+Zr/4kWb0tLm2N")),
        // Jitsi (Prosody's mod_turncredentials / mod_external_services): the expiry alone.
        ("jitsi", format!("{expiry}")),
        // BigBlueButton: `<expiry>:<internal user id>`, `w_` and 12 lowercase alphanumerics.
        ("bigbluebutton", format!("{expiry}:w_k3v9qz0x7m2a")),
    ]
}

/// The password the relay expects for `username`: base64(HMAC-SHA1([`SECRET`], username)).
pub fn password_for(username: &str) -> String {
    switchboard_turn::credentials::password_for(SECRET.as_bytes(), username)
}

/// The daemon's `/metrics` text.
pub fn metrics_text(http: SocketAddr) -> String {
    ureq::get(format!("http://{http}/metrics"))
        .call()
        .expect("GET /metrics")
        .body_mut()
        .read_to_string()
        .expect("the metrics")
}

/// A UDP port free right now on 127.0.0.1 (for third-party tools that need a number).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind")
        .port()
}

/// Runs a command with a time limit, returning (exit code, stdout+stderr).
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> (Option<i32>, String) {
    let out_path = tempfile::NamedTempFile::new().expect("temp file");
    let out = out_path.reopen().expect("reopen");
    let err = out.try_clone().expect("clone");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {cmd:?}: {e} (is coturn installed? .ci/run installs it)")
        });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(out_path.path()).unwrap_or_default();
    (status, text)
}

/// A background process killed on drop (turnutils_peer, say).
pub struct Background(pub Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A self-signed certificate for 127.0.0.1, ::1 and localhost, written as PEM files.
pub struct TestCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// The directory of the files when it is the certificate's own (see [`TestCert::new`]).
    _dir: Option<tempfile::TempDir>,
}

impl TestCert {
    /// A new key and certificate for 127.0.0.1, ::1 and localhost, in a temporary directory
    /// that lives as long as they do.
    pub fn new() -> TestCert {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let cert = TestCert::generate(dir.path(), "turn");
        TestCert {
            _dir: Some(dir),
            ..cert
        }
    }

    /// Generates a new key and certificate into `dir/<name>.crt` and `dir/<name>.key`.
    pub fn generate(dir: &std::path::Path, name: &str) -> TestCert {
        let names = vec!["127.0.0.1".into(), "::1".into(), "localhost".into()];
        let ck = rcgen::generate_simple_self_signed(names).expect("certificate");
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        TestCert {
            cert,
            key,
            der: ck.cert.der().to_vec(),
            _dir: None,
        }
    }

    /// The `[turn]` lines serving TLS on an ephemeral loopback port with this certificate.
    pub fn turn_config(&self) -> String {
        self.turn_config_on("127.0.0.1:0")
    }

    /// The `[turn]` lines serving TLS on `listen` with this certificate.
    pub fn turn_config_on(&self, listen: &str) -> String {
        format!(
            "tls_listen = [\"{listen}\"]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            self.cert.display(),
            self.key.display()
        )
    }
}

fn allocate_req() -> stun_types::message::MessageWriteVec {
    use stun_types::message::MessageWriteExt as _;
    let mut w = request(turn_types::message::ALLOCATE);
    w.add_attribute(&turn_types::attribute::RequestedTransport::new(17))
        .unwrap();
    w
}

/// An Allocate over UDP with `username`/`password`: challenged first for the nonce, as clients
/// are. Returns the final response.
pub fn allocate(turn: SocketAddr, username: &str, password: &str) -> Vec<u8> {
    use stun_types::message::MessageWrite as _;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let exchange = |bytes: &[u8]| -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        for _ in 0..6 {
            sock.send_to(bytes, turn).unwrap();
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                return buf[..n].to_vec();
            }
        }
        panic!("no answer from the relay at {turn}");
    };
    let challenge = exchange(&allocate_req().finish());
    assert_eq!(
        code(&challenge),
        401,
        "an unauthenticated Allocate is challenged"
    );
    let nonce = nonce_of(&challenge);
    exchange(&seal(allocate_req(), username, password, &nonce))
}

/// A STUN request of `method` with a fresh transaction id.
pub fn request(method: stun_types::message::Method) -> stun_types::message::MessageWriteVec {
    use stun_types::message::{Message, MessageWriteVec};
    Message::builder_request(method, MessageWriteVec::new())
}

/// The long-term credential attributes (USERNAME, REALM, NONCE, MESSAGE-INTEGRITY) on `w`,
/// as a client of this realm sends them.
pub fn seal(
    mut w: stun_types::message::MessageWriteVec,
    username: &str,
    password: &str,
    nonce: &str,
) -> Vec<u8> {
    use stun_types::attribute::{Nonce, Realm, Username};
    use stun_types::message::{IntegrityAlgorithm, MessageWrite, MessageWriteExt};
    w.add_attribute(&Username::new(username).unwrap()).unwrap();
    w.add_attribute(&Realm::new(REALM).unwrap()).unwrap();
    w.add_attribute(&Nonce::new(nonce).unwrap()).unwrap();
    let key = switchboard_turn::credentials::long_term_key(username, REALM, password);
    w.add_message_integrity_with_key(&key, IntegrityAlgorithm::Sha1)
        .unwrap();
    w.finish()
}

/// A response's code: 200 for success, else its ERROR-CODE.
pub fn code(bytes: &[u8]) -> u16 {
    use stun_types::attribute::ErrorCode;
    use stun_types::message::{Message, MessageClass};
    let msg = Message::from_bytes(bytes).unwrap();
    match msg.class() {
        MessageClass::Success => 200,
        MessageClass::Error => msg.attribute::<ErrorCode>().unwrap().code(),
        c => panic!("not a response: {c:?}"),
    }
}

/// The NONCE of a 401 challenge.
pub fn nonce_of(challenge: &[u8]) -> String {
    use stun_types::attribute::Nonce;
    use stun_types::message::Message;
    let msg = Message::from_bytes(challenge).unwrap();
    msg.attribute::<Nonce>()
        .expect("a NONCE")
        .nonce()
        .to_owned()
}

/// The XOR-RELAYED-ADDRESS of an Allocate success.
pub fn relayed_of(bytes: &[u8]) -> SocketAddr {
    use stun_types::message::Message;
    use turn_types::attribute::XorRelayedAddress;
    let msg = Message::from_bytes(bytes).unwrap();
    msg.attribute::<XorRelayedAddress>()
        .unwrap()
        .addr(msg.transaction_id())
}

/// A user token for the test daemons' `auth.jwt_secret`, valid for an hour.
pub fn token(user: uuid::Uuid, name: Option<&str>, email: Option<&str>) -> String {
    switchboard_signaling::auth::mint(
        JWT_SECRET,
        user,
        name,
        email,
        switchboard_signaling::time::Timestamp::now(),
        Duration::from_secs(3600),
    )
}

/// A blocking HTTP agent that returns error statuses as answers, each request bounded by
/// `timeout`.
pub fn http_agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// A blocking HTTP client for the API: every answer, error statuses included, as
/// (status, JSON body or `null`).
#[derive(Clone)]
pub struct Api {
    base: String,
    agent: ureq::Agent,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Api {
        Api {
            base: format!("http://{addr}"),
            agent: http_agent(Duration::from_secs(20)),
        }
    }

    /// `method path` with an optional bearer token, `headers` and raw body: the answer, or
    /// what kept it from coming (a daemon killed mid-request, say) as an error.
    pub fn try_send_with(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<(u16, serde_json::Value), String> {
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(t) = bearer {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(body.unwrap_or_default().to_vec())
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let mut resp = self
            .agent
            .run(req)
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("{method} {path}: reading the body: {e}"))?;
        let json = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text)
                .map_err(|e| format!("{method} {path}: not JSON ({e}): {text}"))?
        };
        Ok((status, json))
    }

    /// [`Api::try_send_with`] without headers, which must get an answer.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&[u8]>,
    ) -> (u16, serde_json::Value) {
        self.try_send_with(method, path, bearer, &[], body)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `method path` with a JSON body.
    pub fn json(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        self.send(method, path, bearer, Some(body.to_string().as_bytes()))
    }

    pub fn get(&self, path: &str, bearer: &str) -> (u16, serde_json::Value) {
        self.send("GET", path, Some(bearer), None)
    }

    pub fn post(&self, path: &str, bearer: &str) -> (u16, serde_json::Value) {
        self.send("POST", path, Some(bearer), None)
    }

    /// `POST /api/calls/initiate` with `body`, as the holder of `bearer`.
    pub fn post_initiate(
        &self,
        bearer: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        self.json("POST", "/api/calls/initiate", Some(bearer), body)
    }

    /// `POST /api/calls/initiate`: `by` calls `to` in `conversation`, a call of type `kind`.
    pub fn initiate(
        &self,
        by: &Person,
        conversation: uuid::Uuid,
        kind: &str,
        to: &[&Person],
    ) -> (u16, serde_json::Value) {
        let ids: Vec<uuid::Uuid> = to.iter().map(|p| p.id).collect();
        let body = serde_json::json!({
            "conversationId": conversation,
            "type": kind,
            "participantIds": ids,
        });
        self.post_initiate(&by.token, &body)
    }

    /// `POST /api/calls/{call}/{action}` (answer, reject, end) as `who`.
    pub fn act(&self, who: &Person, call: &str, action: &str) -> (u16, serde_json::Value) {
        self.post(&format!("/api/calls/{call}/{action}"), &who.token)
    }

    /// [`Api::act`] from the device whose socket is `socket_id` (`X-Socket-Id`), which must
    /// succeed: the body.
    #[track_caller]
    pub fn act_from(
        &self,
        who: &Person,
        call: &str,
        action: &str,
        socket_id: &str,
    ) -> serde_json::Value {
        let path = format!("/api/calls/{call}/{action}");
        let headers = [("x-socket-id", socket_id)];
        let (s, body) = self
            .try_send_with("POST", &path, Some(&who.token), &headers, None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s, 200, "{action} by {}: {body}", who.name);
        body
    }

    /// `PATCH /api/calls/{call}/media` as `who`.
    pub fn media(
        &self,
        who: &Person,
        call: &str,
        change: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let path = format!("/api/calls/{call}/media");
        self.json("PATCH", &path, Some(&who.token), change)
    }

    /// `GET /api/calls/{call}` as `who`.
    pub fn get_call(&self, who: &Person, call: &str) -> (u16, serde_json::Value) {
        self.get(&format!("/api/calls/{call}"), &who.token)
    }

    /// [`Api::initiate`], which must make the call (201): its id.
    #[track_caller]
    pub fn start_call(
        &self,
        by: &Person,
        conversation: uuid::Uuid,
        kind: &str,
        to: &[&Person],
    ) -> String {
        let (s, body) = self.initiate(by, conversation, kind, to);
        assert_eq!(s, 201, "initiate by {}: {body}", by.name);
        body["callId"]
            .as_str()
            .unwrap_or_else(|| panic!("no callId: {body}"))
            .to_owned()
    }

    /// A video call `by` places to `to`, answered by each of them: its id.
    pub fn answered_call(&self, by: &Person, conversation: uuid::Uuid, to: &[&Person]) -> String {
        let call = self.start_call(by, conversation, "video", to);
        for p in to {
            self.act_ok(p, &call, "answer");
        }
        call
    }

    /// [`Api::act`], which must succeed: the body.
    #[track_caller]
    pub fn act_ok(&self, who: &Person, call: &str, action: &str) -> serde_json::Value {
        let (s, body) = self.act(who, call, action);
        assert_eq!(s, 200, "{action} by {}: {body}", who.name);
        body
    }

    /// [`Api::media`], which must succeed: the body.
    #[track_caller]
    pub fn media_ok(
        &self,
        who: &Person,
        call: &str,
        change: &serde_json::Value,
    ) -> serde_json::Value {
        let (s, body) = self.media(who, call, change);
        assert_eq!(s, 200, "media of {}: {body}", who.name);
        body
    }

    /// [`Api::get_call`], which must succeed: its `call`.
    #[track_caller]
    pub fn call(&self, who: &Person, call: &str) -> serde_json::Value {
        let (s, body) = self.get_call(who, call);
        assert_eq!(s, 200, "GET call {call} by {}: {body}", who.name);
        body["call"].clone()
    }

    /// A new user called `name`, provisioned (invitees must be known users).
    #[track_caller]
    pub fn person(&self, name: &str) -> Person {
        let p = Person::new(name);
        self.provision(&p);
        p
    }

    /// `PUT /api/admin/conversations/{id}` of a new conversation of `members`, which must
    /// succeed: its id.
    #[track_caller]
    pub fn conversation_of(&self, members: &[&Person]) -> uuid::Uuid {
        let id = uuid::Uuid::new_v4();
        let ids: Vec<uuid::Uuid> = members.iter().map(|p| p.id).collect();
        let path = format!("/api/admin/conversations/{id}");
        let body = serde_json::json!({ "memberIds": ids });
        let (s, answer) = self.json("PUT", &path, Some(ADMIN_TOKEN), &body);
        assert_eq!(s, 200, "PUT conversation: {answer}");
        id
    }

    /// `PUT /api/admin/users/{id}` with `p`'s name and email, which must succeed; the body.
    #[track_caller]
    pub fn provision(&self, p: &Person) -> serde_json::Value {
        let body = serde_json::json!({"name": p.name, "email": p.email});
        let path = format!("/api/admin/users/{}", p.id);
        let (s, answer) = self.json("PUT", &path, Some(ADMIN_TOKEN), &body);
        assert_eq!(s, 200, "provision {}: {answer}", p.name);
        answer
    }
}

/// A user of the host application, with a token for the test daemons.
#[derive(Clone, Debug)]
pub struct Person {
    pub id: uuid::Uuid,
    pub name: String,
    pub email: String,
    pub token: String,
}

impl Person {
    /// A new user called `name`, with the email `<name>@example.com`.
    pub fn new(name: &str) -> Person {
        let id = uuid::Uuid::new_v4();
        let email = format!("{}@example.com", name.to_lowercase());
        Person {
            id,
            token: token(id, Some(name), Some(&email)),
            name: name.to_owned(),
            email,
        }
    }

    /// The id as the API and the store write it.
    pub fn uid(&self) -> String {
        self.id.to_string()
    }
}

/// The `error.code` of an error body.
pub fn error_code(body: &serde_json::Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {body}"))
}

/// The `field` of every element of the JSON array `array`.
#[track_caller]
pub fn each<'a>(array: &'a serde_json::Value, field: &str) -> Vec<&'a serde_json::Value> {
    let elements = array
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {array}"));
    elements.iter().map(|e| &e[field]).collect()
}

/// Asserts every field of `expected` has that value in `actual` (a missing one reads `null`);
/// the fields `expected` does not name may be anything.
#[track_caller]
pub fn assert_fields(actual: &serde_json::Value, expected: &serde_json::Value) {
    let fields = expected
        .as_object()
        .unwrap_or_else(|| panic!("expected fields, not {expected}"));
    for (name, value) in fields {
        assert_eq!(&actual[name], value, "`{name}` of {actual}");
    }
}

/// Polls `f` every 20 ms for at most `limit`; whether it came true.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A read-only connection to a daemon's SQLite store (WAL: it sees every commit), so that a
/// test never changes what the daemon, or its crash, left.
pub fn open_store(path: &std::path::Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap_or_else(|e| panic!("open {} read-only: {e}", path.display()));
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn
}

/// Every row of `sql`, as a JSON object of column → value.
pub fn query_rows(
    conn: &rusqlite::Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> Vec<serde_json::Value> {
    let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let names: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
    let rows = stmt
        .query_map(params, |r| {
            let mut row = serde_json::Map::new();
            for (i, name) in names.iter().enumerate() {
                row.insert(name.clone(), sql_to_json(r.get(i)?));
            }
            Ok(serde_json::Value::Object(row))
        })
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn sql_to_json(v: rusqlite::types::Value) -> serde_json::Value {
    use rusqlite::types::Value as V;
    use serde_json::{json, Value};
    match v {
        V::Null => Value::Null,
        V::Integer(i) => json!(i),
        V::Real(f) => json!(f),
        V::Text(s) => Value::String(s),
        V::Blob(b) => json!(b),
    }
}

/// `turnutils_peer` echoing on each of `hosts` (the same port).
pub fn peer_on(hosts: &[&str]) -> (Background, u16) {
    let port = free_udp_port();
    let mut cmd = Command::new("turnutils_peer");
    for h in hosts {
        cmd.args(["-L", h]);
    }
    let child = Background(
        cmd.args(["-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnutils_peer (is coturn installed? .ci/run installs it)"),
    );
    // Ready when it echoes on the first address (bounded).
    let ip: std::net::IpAddr = hosts[0].parse().unwrap();
    let probe = std::net::UdpSocket::bind((ip, 0)).unwrap();
    probe
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 16];
    for _ in 0..50 {
        probe.send_to(b"ping", (ip, port)).unwrap();
        if probe.recv_from(&mut buf).is_ok() {
            return (child, port);
        }
    }
    panic!("turnutils_peer did not echo on port {port}");
}

/// Headless Chromium and node scripts in `tests/browser` (relay_chromium, demo_chromium).
pub mod browser {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::{Condvar, Mutex};
    use std::time::Duration;

    use serde_json::Value;

    use super::run_bounded;

    pub const CHROMIUM: &str = "/usr/bin/chromium";
    pub const SETUP_HINT: &str = "run tests/run.sh once: it installs Debian's chromium and runs \
                              `npm ci` in tests/browser";

    pub fn browser_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
    }

    /// Runs the test script `script` of `tests/browser` with `args`, telling it to give up after
    /// `limit` (`--timeout-ms`) and which Chromium to drive; it is killed if it outlives
    /// `node_limit`. Its exit code and output.
    pub fn node_script(
        script: &str,
        args: &[&str],
        limit: Duration,
        node_limit: Duration,
    ) -> (Option<i32>, String) {
        run_bounded(
            Command::new("node")
                .arg(browser_dir().join(script))
                .args(args)
                .args(["--timeout-ms", &limit.as_millis().to_string()])
                .args(["--chromium", CHROMIUM])
                .current_dir(browser_dir()),
            node_limit,
        )
    }

    /// How many tests may drive Chromium at once. libtest runs as many tests at once as there
    /// are cores; when each browser test binary was its own, the largest (demo_chromium) had
    /// four, so no machine ran more than four browsers. Now that they share the e2e binary,
    /// this keeps that bound on machines with more cores (a 2-core box never reaches it).
    const AT_ONCE: usize = 4;

    static RUNNING: Mutex<usize> = Mutex::new(0);
    static FREED: Condvar = Condvar::new();

    /// Places (of the [`AT_ONCE`]) for a test driving Chromium, held until dropped.
    #[must_use = "the place is given back when this is dropped"]
    pub struct Slot(usize);

    impl Drop for Slot {
        fn drop(&mut self) {
            *RUNNING.lock().unwrap_or_else(|e| e.into_inner()) -= self.0;
            // Waiters want one place or all of them: each checks.
            FREED.notify_all();
        }
    }

    /// Fails (never skips) when something the call needs is missing, naming the fix; then
    /// waits for a [`Slot`], which the test holds while its browser runs.
    pub fn check_prerequisites() -> Slot {
        check_prerequisites_for(1)
    }

    /// [`check_prerequisites`] for a test whose browsers load a small box by themselves (the
    /// six pages on the SFU, the five-person relayed mesh): it waits until no other browser
    /// test runs, and none starts until it ends. Side by side on 2 cores the two failed in
    /// turn (media not growing within their bounds); each passed alone.
    pub fn check_prerequisites_alone() -> Slot {
        check_prerequisites_for(AT_ONCE)
    }

    fn check_prerequisites_for(places: usize) -> Slot {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: {SETUP_HINT}"
        );
        let on_path = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join("node").is_file()))
            .unwrap_or(false);
        assert!(on_path, "node is not on PATH: {SETUP_HINT} (node >= 20)");
        let (code, version) = run_bounded(
            Command::new("node").arg("--version"),
            Duration::from_secs(10),
        );
        let major: Option<u32> = version
            .trim()
            .strip_prefix('v')
            .and_then(|v| v.split('.').next()?.parse().ok());
        assert!(
            code == Some(0) && major.is_some_and(|m| m >= 20),
            "node >= 20 is needed (playwright-core requires it), `node --version` said \
             {version:?} (exit {code:?})"
        );
        let playwright = browser_dir().join("node_modules/playwright-core/package.json");
        assert!(
            playwright.exists(),
            "{} is missing: {SETUP_HINT}",
            playwright.display()
        );
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        while *running + places > AT_ONCE {
            running = FREED.wait(running).unwrap_or_else(|e| e.into_inner());
        }
        *running += places;
        Slot(places)
    }

    /// The script's JSON result line (it prints exactly one, success or failure).
    pub fn result_line(out: &str) -> Option<Value> {
        out.lines()
            .rev()
            .filter(|l| l.starts_with("{\"ok\":"))
            .find_map(|l| serde_json::from_str(l).ok())
    }
}

/// Webhooks as the daemon signs them (webhooks, chat_app).
pub mod webhook {
    use hmac::{Hmac, Mac as _};
    use sha2::Sha256;

    /// The `X-Switchboard-Signature` of `body` sent at `timestamp` (unix seconds): `v1=` and
    /// the hex HMAC-SHA256(secret, "<timestamp>.<body>"), computed here with the `hmac` crate
    /// (the daemon uses `ring`).
    pub fn signature(
        secret: &str,
        timestamp: impl std::fmt::Display,
        body: impl AsRef<[u8]>,
    ) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{timestamp}.").as_bytes());
        mac.update(body.as_ref());
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("v1={hex}")
    }
}
