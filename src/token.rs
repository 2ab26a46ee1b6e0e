//! `switchboard token`: mint a user token for the REST API (what the host application does with
//! the same `auth.jwt_secret`), for trying the API by hand and for scripts.

use std::process::ExitCode;

use switchboard_signaling::auth::{self, MAX_EMAIL_LEN, MAX_NAME_LEN};
use switchboard_signaling::time::Timestamp;
use uuid::Uuid;

use crate::cli::TokenArgs;
use crate::config::MAX_CREDENTIAL_TTL;

pub fn run(args: &TokenArgs) -> ExitCode {
    let user = match Uuid::parse_str(&args.user) {
        Ok(u) if !u.is_nil() => u,
        _ => {
            eprintln!("error: --user: `{}` is not a user UUID", args.user);
            return ExitCode::from(2);
        }
    };
    for (flag, value, max) in [
        ("--name", &args.name, MAX_NAME_LEN),
        ("--email", &args.email, MAX_EMAIL_LEN),
    ] {
        if value.as_ref().is_some_and(|v| v.chars().count() > max) {
            eprintln!("error: {flag}: longer than {max} characters");
            return ExitCode::from(2);
        }
    }
    if args.ttl.is_zero() || args.ttl > MAX_CREDENTIAL_TTL {
        eprintln!("error: --ttl: must be longer than zero and at most 365 days");
        return ExitCode::from(2);
    }
    let config = match args.config.load() {
        Ok(config) => config,
        Err(code) => return code,
    };
    let Some(secret) = &config.auth.jwt_secret else {
        eprintln!(
            "error: auth.jwt_secret: not set in {}; no token can be minted",
            config.origin
        );
        return ExitCode::from(2);
    };
    let token = auth::mint_scoped(
        secret.expose(),
        &config.auth.scope,
        user,
        (args.name.as_deref(), args.email.as_deref()),
        Timestamp::now(),
        args.ttl,
    );
    println!("{token}");
    ExitCode::SUCCESS
}
