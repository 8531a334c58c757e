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
        ferry::cli::Command::Apply(a) if a.dry_run => {
            match ferry::client::apply_dry_run(&a.files) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        ferry::cli::Command::Apply(a) => client_command(&a.client, |c| {
            let wait = match a.wait {
                false => Ok(None),
                true => ferry::config::parse_duration(&a.timeout)
                    .map(Some)
                    .map_err(|e| ferry::client::ClientError::Input(format!("--timeout: {e}"))),
            };
            async move { ferry::client::apply(&c, &a.files, a.client.output, wait?).await }
        }),
        ferry::cli::Command::Get(g) => client_command(&g.client, |c| async move {
            match g.what {
                ferry::cli::GetWhat::Jobs { name } => {
                    ferry::client::get_jobs(&c, name.as_deref(), g.client.output).await
                }
                ferry::cli::GetWhat::Files { name, state } => {
                    ferry::client::get_files(&c, &name, state.as_deref(), g.client.output).await
                }
            }
        }),
        ferry::cli::Command::Describe(d) => client_command(&d.client, |c| async move {
            let ferry::cli::OneJob::Job { name } = d.what;
            ferry::client::describe_job(&c, &name, d.client.output).await
        }),
        ferry::cli::Command::Delete(d) => client_command(&d.client, |c| async move {
            let ferry::cli::OneJob::Job { name } = d.what;
            ferry::client::delete_job(&c, &name).await
        }),
        ferry::cli::Command::Prune(d) => client_command(&d.client, |c| async move {
            let ferry::cli::OneJob::Job { name } = d.what;
            ferry::client::prune_job(&c, &name).await
        }),
        ferry::cli::Command::Resync(d) => client_command(&d.client, |c| async move {
            let ferry::cli::OneJob::Job { name } = d.what;
            ferry::client::resync_job(&c, &name).await
        }),
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

/// Runs a client command on a small runtime; errors go to stderr with exit code 1.
fn client_command<F, Fut>(args: &ferry::cli::ClientArgs, run: F) -> ExitCode
where
    F: FnOnce(ferry::client::Client) -> Fut,
    Fut: std::future::Future<Output = Result<ExitCode, ferry::client::ClientError>>,
{
    let client = match ferry::client::Client::new(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(client)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
