//! The `iotgw` binary: parse the command line, set up tracing, hand over to the subcommand.
#![forbid(unsafe_code)]

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = iotgw::cli::Cli::parse();
    iotgw::telemetry::init(cli.log_format);
    match iotgw::cli::dispatch(cli.command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("iotgw: {error:#}");
            iotgw::cli::exit_code(&error)
        }
    }
}
