//! The probes and the metrics: /healthz, /readyz, /metrics. Open without the token.

use salvo::http::StatusCode;
use salvo::prelude::*;
use serde::Serialize;

use super::{ApiError, app_state};
use crate::core::model::{FileState, FileTally, JobState, job_state};
use crate::s3::Readiness as S3Readiness;

#[derive(Debug, Serialize, ToSchema)]
#[salvo(schema(name = "ferry.api.Health"))]
pub struct Health {
    /// `ok`
    status: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[salvo(schema(name = "ferry.api.Readiness"))]
pub struct Readiness {
    /// `ready`
    status: String,
    database: String,
    s3: String,
}

/// Liveness
#[endpoint(operation_id = "ferry.api.healthz", tags("health"))]
pub(super) async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// How long readiness waits for S3.
const READINESS_BUDGET: std::time::Duration = std::time::Duration::from_millis(1500);

/// Readiness: the database can be written and S3 can be reached with these credentials
#[endpoint(operation_id = "ferry.api.readyz", tags("health"))]
pub(super) async fn readyz(depot: &mut Depot) -> Result<Json<Readiness>, ApiError> {
    let app = app_state(depot);
    // A write, not a read: a full disk or a read-only file still reads fine.
    if let Err(e) = app.ctx.store.probe_write().await {
        tracing::warn!(error = %e, "not ready: database");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            format!("the database cannot be written: {e}"),
        ));
    }
    // Within the probe's budget: a kubelet waits a second or so, and a hung S3 must read as
    // not ready, not as a probe that times out.
    let s3 = tokio::time::timeout(READINESS_BUDGET, app.ctx.s3.readiness())
        .await
        .unwrap_or_else(|_| {
            S3Readiness::Unreachable(format!(
                "S3 did not answer within {} s",
                READINESS_BUDGET.as_secs()
            ))
        });
    match s3 {
        S3Readiness::Ready => {}
        S3Readiness::Unreachable(why) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "s3_unreachable",
                format!("S3 cannot be reached ({why}); check AWS_ENDPOINT_URL and the network"),
            ));
        }
        S3Readiness::CredentialsRefused(why) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "s3_credentials_refused",
                why,
            ));
        }
    }
    Ok(Json(Readiness {
        status: "ready".into(),
        database: "ok".into(),
        s3: "ok".into(),
    }))
}

/// Prometheus metrics, in the text exposition format
///
/// Open like the probes, for a scraper without the token: the series carry no job names, paths or
/// buckets, only counts by state, operation and failure reason.
#[endpoint(operation_id = "ferry.api.metrics", tags("health"), responses((status_code = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String)))]
pub(super) async fn metrics(depot: &mut Depot, res: &mut Response) -> Result<(), ApiError> {
    let app = app_state(depot);
    let store = &app.ctx.store;
    let jobs = store.list_jobs().await?;
    let mut tallies = store.all_tallies().await?;
    let mut by_state: Vec<(&'static str, u64)> =
        JobState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    let mut files = FileTally::default();
    for job in jobs {
        let tally = tallies.remove(&job.id).unwrap_or_default();
        let state = job_state(job.facts(), &tally);
        if let Some(slot) = by_state.iter_mut().find(|(s, _)| *s == state.as_str()) {
            slot.1 += 1;
        }
        for state in FileState::ALL {
            files.add(*state, *tally.of(*state));
        }
    }
    let snapshot = crate::metrics::Snapshot {
        jobs: by_state,
        files: FileState::ALL
            .iter()
            .map(|s| (s.as_str(), files.of(*s).files))
            .collect(),
        queue_depth: files.pending.files,
        multipart_aborts: {
            let (waiting, given_up) = store.abort_counts().await?;
            vec![("waiting", waiting), ("given_up", given_up)]
        },
        s3_paused: app.ctx.s3_paused(),
    };
    res.add_header(
        salvo::http::header::CONTENT_TYPE,
        crate::metrics::CONTENT_TYPE,
        true,
    )
    .ok();
    res.write_body(crate::metrics::render(&snapshot)).ok();
    Ok(())
}
