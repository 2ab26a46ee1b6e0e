//! The command line (DESIGN.md, "Contract"): one subcommand per job, each in its own file.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// switchboard: TURN/STUN relay, call REST API and signaling hub in one daemon.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon until SIGTERM or SIGINT.
    Serve(ConfigArg),
    /// Load and validate the configuration, print a summary; exit 2 if it is invalid.
    CheckConfig(ConfigArg),
    /// Mint a user token (an HS256 JWT with auth.jwt_secret) for the REST API and print it.
    Token(TokenArgs),
    /// Mint TURN credentials for a user and print them as the REST API would.
    TurnCredentials(TurnCredentialsArgs),
}

impl ConfigArg {
    /// The configuration for a command that only reads it: an invalid one is printed on stderr
    /// and is exit code 2.
    pub fn load(&self) -> Result<crate::config::Config, std::process::ExitCode> {
        crate::config::load(self.config.as_deref()).map_err(|e| {
            eprintln!("error: {e}");
            std::process::ExitCode::from(2)
        })
    }
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The user's UUID (the token's `sub`).
    #[arg(long, value_name = "UUID")]
    pub user: String,
    /// The user's display name (the `name` claim; the spec's userName).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The user's email (the `email` claim; the spec's userIdentifier).
    #[arg(long, value_name = "EMAIL")]
    pub email: Option<String>,
    /// How long the token stays valid, like "1h" or "7d".
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The TOML config file. Without it, the embedded development default is used
    /// (state and generated secrets in ./switchboard-data).
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TurnCredentialsArgs {
    /// The user id the credentials are for (the spec's users are UUIDs; any text without
    /// control characters, up to 491 bytes, is minted).
    #[arg(long, value_name = "UUID")]
    pub user: String,
    /// How long the credentials stay valid, like "24h" or "90m" [default: turn.credential_ttl].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub ttl: Option<Duration>,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn subcommands_parse() {
        let cli = Cli::try_parse_from(["switchboard", "serve", "--config", "a.toml"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Serve(ConfigArg { config: Some(_) })
        ));
        let cli = Cli::try_parse_from(["switchboard", "check-config"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::CheckConfig(ConfigArg { config: None })
        ));
        let cli = Cli::try_parse_from([
            "switchboard",
            "turn-credentials",
            "--user",
            "u",
            "--ttl",
            "1h",
        ])
        .unwrap();
        let Command::TurnCredentials(args) = cli.command else {
            panic!("not turn-credentials");
        };
        assert_eq!(args.ttl, Some(Duration::from_secs(3600)));
        assert!(Cli::try_parse_from(["switchboard", "turn-credentials", "--ttl", "1h"]).is_err());
        let cli =
            Cli::try_parse_from(["switchboard", "token", "--user", "u", "--name", "Ada"]).unwrap();
        let Command::Token(args) = cli.command else {
            panic!("not token");
        };
        assert_eq!(
            (args.ttl, args.name.as_deref()),
            (Duration::from_secs(3600), Some("Ada"))
        );
        assert!(Cli::try_parse_from([
            "switchboard",
            "turn-credentials",
            "--user",
            "u",
            "--ttl",
            "soon"
        ])
        .is_err());
    }
}
