//! /uploads/{id}/prune and /uploads/{id}/resync: confirming a batch of prunes the guard holds,
//! and asking for the job's objects to be listed and compared with the records now.

use salvo::http::StatusCode;
use salvo::oapi::extract::PathParam;
use salvo::prelude::*;
use serde::Serialize;

use super::reply::Accepted;
use super::{ApiError, app_state, existing_job};
use crate::store::Confirmed;

#[derive(Debug, Serialize, ToSchema)]
#[salvo(schema(name = "ferry.api.PruneConfirmed"))]
pub struct PruneConfirmed {
    upload_id: String,
    /// Always `prune_confirmed`.
    status: String,
    /// How many objects the confirm released for deletion (0: none was held).
    released: u64,
}

#[derive(Debug, Serialize, ToSchema)]
#[salvo(schema(name = "ferry.api.ResyncAccepted"))]
pub struct ResyncAccepted {
    upload_id: String,
    /// Always `resync_requested`.
    status: String,
}

/// Confirm the prunes the guard holds
///
/// A scan (or resync) that would prune more than half of a job's objects, or more than 1,000,
/// prunes nothing and says so in the `PruneHeld` condition; this releases that batch. Refused
/// (409) when the job does not prune, or while its last scan could not read all of its folder.
#[endpoint(operation_id = "ferry.api.confirm_prune", tags("uploads"))]
pub(super) async fn confirm_prune(
    upload_id: PathParam<String>,
    depot: &mut Depot,
) -> Result<Accepted<PruneConfirmed>, ApiError> {
    let app = app_state(depot);
    existing_job(&app, &upload_id).await?;
    let released = match app.ctx.store.confirm_prunes(&upload_id).await? {
        Confirmed::Released(n) => n,
        Confirmed::PruneOff => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "prune_off",
                format!(
                    "the job {:?} does not prune; set prune: true in its spec to delete the objects of files gone from disk",
                    *upload_id
                ),
            ));
        }
        Confirmed::WalkError(unread) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "walk_error",
                format!(
                    "the job's last scan could not read all of its folder, so what it did not see is not known to be gone; nothing is pruned until a scan reads everything: {}",
                    unread.lines().next().unwrap_or_default()
                ),
            ));
        }
    };
    tracing::info!(upload_id = %*upload_id, objects = released, "prunes confirmed");
    app.ctx.wake_pruner();
    Ok(Accepted(PruneConfirmed {
        upload_id: upload_id.into_inner(),
        status: "prune_confirmed".into(),
        released,
    }))
}

/// Compare the job's objects in S3 with the records now
///
/// Lists the job's prefix (every page): an uploaded object that is missing, or whose size or
/// ETag differs from the one recorded, is uploaded again. The `InSync` condition says what the
/// resync found.
#[endpoint(operation_id = "ferry.api.resync_upload", tags("uploads"))]
pub(super) async fn resync_upload(
    upload_id: PathParam<String>,
    depot: &mut Depot,
) -> Result<Accepted<ResyncAccepted>, ApiError> {
    let app = app_state(depot);
    existing_job(&app, &upload_id).await?;
    app.ctx.request_resync(&upload_id);
    Ok(Accepted(ResyncAccepted {
        upload_id: upload_id.into_inner(),
        status: "resync_requested".into(),
    }))
}
