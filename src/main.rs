//! switchboard: the daemon binary.
//!
//! This package only wires the crates together and owns the process concerns (DESIGN.md,
//! "Layout"): the command line ([`cli`]), the configuration ([`config`]), logging
//! ([`logging`]), the HTTP API: the application ([`app`]: the call domain, the router, the
//! tasks) behind its accept loop ([`http`]); and one file per subcommand: [`serve`],
//! [`check_config`], [`token`], [`turn_credentials`]; webhook delivery is [`webhooks`]. The relay itself is `switchboard-turn`; the call domain is
//! `switchboard-signaling`.
//!
//! Exit codes: 0 success, 1 a runtime failure (e.g. a listener cannot bind), 2 bad usage or an
//! invalid configuration.

mod app;
mod check_config;
mod cli;
mod config;
mod cors;
mod demo;
mod http;
mod logging;
mod metrics;
mod notify;
mod serve;
mod token;
mod turn_credentials;
mod web;
mod webhooks;

use std::process::ExitCode;

use clap::Parser as _;

use cli::{Cli, Command};

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => serve::run(args.config.as_deref()),
        Command::CheckConfig(args) => check_config::run(args.config.as_deref()),
        Command::Token(args) => token::run(&args),
        Command::TurnCredentials(args) => turn_credentials::run(&args),
    }
}
