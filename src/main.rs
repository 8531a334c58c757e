use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = ferry::cli::Cli::parse();
    match cli.command {
        ferry::cli::Command::Schema => {
            let schema = ferry::manifest::schema();
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).expect("a schema is JSON")
            );
            ExitCode::SUCCESS
        }
        ferry::cli::Command::Serve(args) => {
            let settings = match ferry::config::RawSettings::from(*args).validate() {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("ferry: {e}");
                    return ExitCode::from(2);
                }
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("ferry: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let result = runtime.block_on(ferry::serve::run(settings));
            // A scan still walking a large tree on a blocking thread must not hold up the exit.
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "ferry stopped");
                    eprintln!("ferry: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
