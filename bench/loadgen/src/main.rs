//! `loadgen`: the load generators of switchboard's benchmarks, one binary with a subcommand
//! each, run by the scripts in `bench/`:
//!
//! - `udp`: UDP flows with uclient's timing, through a relay or the forwarder (`bench/relay.sh`);
//! - `udp-forwarder`: the floor of the relay benchmark, a relay without the protocol;
//! - `idle-allocs`: many idle TURN allocations, for the relay's memory (`bench/relay.sh`);
//! - `calls`: full call lifecycles over HTTP, beside raw SQLite (`bench/calls.sh`, `bench/soak.sh`);
//! - `hub`: socket pairs exchanging ICE candidates through a hub (`bench/hub.sh`, `bench/soak.sh`);
//! - `sfu`: rooms of synthetic participants through the SFU, beside a plain UDP fan-out
//!   (`bench/sfu.sh`); `sfu-server` is the SFU's process it starts.
//!
//! Each prints its figures with its old name as prefix (`udp_load: `, `hub_load: `, ...) and
//! ends with machine-readable `key=value` lines, which the scripts read.

mod calls;
mod forwarder;
mod hub;
mod idle_allocs;
mod sfu;
mod sock;
mod stats;
mod udp;

use std::io;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "The load generators of switchboard's benchmarks (bench/)"
)]
enum Command {
    /// UDP flows sending on uclient's schedule to a target that echoes them back.
    Udp(udp::Args),
    /// The least work a UDP relay can do: the floor of bench/relay.sh. Runs until killed.
    UdpForwarder(forwarder::Args),
    /// Creates many idle TURN allocations (TURN REST credentials).
    IdleAllocs(idle_allocs::Args),
    /// Call lifecycles over HTTP against `switchboard serve`, and the raw SQLite anchor.
    Calls(calls::Args),
    /// Socket pairs exchanging `call:ice-candidate` through a signaling hub.
    Hub(hub::Args),
    /// Rooms of synthetic participants (str0m clients, replayed SRTP) through the SFU, and
    /// through a plain UDP fan-out as the floor.
    Sfu(sfu::Args),
    /// The SFU under test, in a process of its own; `sfu` starts it.
    #[command(hide = true)]
    SfuServer(sfu::server::Args),
    /// The floor of `sfu`, a plain UDP fan-out in a process of its own; `sfu` starts it.
    #[command(hide = true)]
    SfuFloor,
}

fn main() -> ExitCode {
    match Command::parse() {
        Command::Udp(args) => exit("udp_load", udp::run(&args)),
        Command::UdpForwarder(args) => exit("udp_forwarder", forwarder::run(&args)),
        Command::IdleAllocs(args) => exit("idle_allocs", idle_allocs::run(&args)),
        Command::Calls(args) => calls::main(&args),
        Command::Hub(args) => hub::main(args),
        Command::Sfu(args) => exit("sfu_load", sfu::run(&args)),
        Command::SfuServer(args) => exit("sfu_server", sfu::server::run(&args)),
        Command::SfuFloor => exit("sfu_floor", sfu::server::run_floor()),
    }
}

/// The exit status of a run that failed or not, its error printed after `name: `.
fn exit(name: &str, result: io::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A clap value parser: a number of seconds (fractions allowed) in `lo..=hi`.
fn seconds(lo: f64, hi: f64) -> impl Fn(&str) -> Result<Duration, String> + Clone {
    move |s: &str| {
        let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
        if (lo..=hi).contains(&v) {
            Ok(Duration::from_secs_f64(v))
        } else {
            Err(format!("must be {lo}..={hi} seconds"))
        }
    }
}

/// A clap value parser: whole milliseconds.
fn millis(s: &str) -> Result<Duration, String> {
    s.parse()
        .map(Duration::from_millis)
        .map_err(|e| format!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Command::command().debug_assert();
    }

    #[test]
    fn seconds_are_bounded() {
        let p = seconds(1.0, 600.0);
        assert_eq!(p("2.5"), Ok(Duration::from_millis(2500)));
        assert!(p("0.5").is_err());
        assert!(p("601").is_err());
        assert!(p("x").is_err());
    }
}
