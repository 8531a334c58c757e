//! `ferry serve`: wires the store, S3, the engine and the HTTP API together, and stops them in
//! order on SIGTERM or SIGINT.

use std::sync::Arc;
use std::time::Duration;

use salvo::conn::{Acceptor, Listener, TcpListener};
use salvo::server::Server;
use tokio::sync::watch;

use crate::api::{self, AppState};
use crate::config::{DatabaseLocation, Settings};
use crate::engine::{self, Context, EngineSettings};
use crate::s3::{ObjectStore, RetryPolicy};
use crate::store::Store;
use crate::telemetry;

/// How long the HTTP server gets to finish requests at shutdown.
const HTTP_GRACE: Duration = Duration::from_secs(2);
/// How long uploads in flight get to finish at shutdown; the whole stop stays within 10 s.
const UPLOAD_GRACE: Duration = Duration::from_secs(5);
/// The most the engine gets to stop, uploads included.
const STOP_BUDGET: Duration = Duration::from_secs(7);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot open the database {location} (FERRY_DATABASE_URL): {source}")]
    Database {
        location: String,
        source: crate::store::StoreError,
    },
    #[error("cannot set up S3: {0}")]
    S3(#[from] crate::s3::SetupError),
    #[error("cannot listen on {addr} (FERRY_LISTEN): {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: salvo::Error,
    },
    #[error("cannot install the signal handlers: {0}")]
    Signals(std::io::Error),
}

/// The database's files, canonical, for scans to leave alone.
fn database_files(location: &DatabaseLocation) -> Vec<std::path::PathBuf> {
    let DatabaseLocation::File(path) = location else {
        return Vec::new();
    };
    let Ok(db) = std::fs::canonicalize(path) else {
        return Vec::new();
    };
    let name = db
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    ["", "-wal", "-shm", "-journal"]
        .iter()
        .map(|suffix| db.with_file_name(format!("{name}{suffix}")))
        .collect()
}

pub async fn run(settings: Settings) -> Result<(), ServeError> {
    telemetry::init(&settings.log_filter, settings.log_format);

    let store = Store::open(&settings.database)
        .await
        .map_err(|source| ServeError::Database {
            location: match &settings.database {
                DatabaseLocation::File(p) => p.display().to_string(),
                DatabaseLocation::Memory => ":memory:".into(),
            },
            source,
        })?;
    let s3 = ObjectStore::from_env(
        settings.s3_force_path_style,
        settings.checksum,
        settings.checksum_pinned,
        RetryPolicy::default(),
        settings.max_bandwidth,
    )
    .await?;
    crate::metrics::get().max_bandwidth.set(
        settings
            .max_bandwidth
            .map_or(0, |b| i64::try_from(b).unwrap_or(i64::MAX)),
    );
    let ctx = Context::new(
        store,
        s3,
        EngineSettings {
            chunk_size: settings.chunk_size,
            concurrency: settings.concurrency,
            scan_interval: settings.scan_interval,
            resync_interval: settings.resync_interval,
            max_attempts: settings.max_attempts,
            settle_time: settings.settle_time,
            manifests_dir: settings.manifests_dir.clone(),
            exclude: database_files(&settings.database),
            allowed_roots: settings.allowed_roots.clone(),
            follow_symlinks: settings.follow_symlinks,
            shutdown_grace: UPLOAD_GRACE,
        },
    );

    let acceptor = TcpListener::new(settings.listen)
        .try_bind()
        .await
        .map_err(|source| ServeError::Listen {
            addr: settings.listen,
            source,
        })?;
    let local = acceptor
        .holdings()
        .first()
        .and_then(|h| h.local_addr.clone().into_std())
        .map(|a| a.to_string())
        .unwrap_or_default();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(ServeError::Signals)?;
    let server = Server::new(acceptor);
    let http = server.handle();
    let (stop, stopped) = watch::channel(false);

    let engine = tokio::spawn(engine::run(ctx.clone(), stopped));
    let service = api::service(
        Arc::new(AppState {
            ctx,
            allowed_roots: settings.allowed_roots.clone(),
        }),
        settings.api_token.clone(),
    );
    let serving = tokio::spawn(server.serve(service));
    tracing::info!(
        listen = %local,
        chunk_size = settings.chunk_size,
        concurrency = ?settings.concurrency,
        max_bandwidth = settings.max_bandwidth,
        scan_interval_s = settings.scan_interval.as_secs(),
        "ferry is serving"
    );

    let signal = tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    };
    tracing::info!(signal, "stopping: no new work is taken");
    let _ = stop.send(true);
    http.stop_graceful(HTTP_GRACE);
    // The engine's uploads get UPLOAD_GRACE; a scan or an abort in progress is not waited for
    // past the whole budget: all of it is in the store and resumes at the next start.
    if tokio::time::timeout(STOP_BUDGET, engine).await.is_err() {
        tracing::warn!("the engine did not stop in time; its work resumes at the next start");
    }
    let _ = tokio::time::timeout(HTTP_GRACE, serving).await;
    tracing::info!("stopped");
    Ok(())
}
