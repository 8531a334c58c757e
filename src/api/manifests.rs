//! /manifests: what the last sync of FERRY_MANIFESTS_DIR found.

use salvo::prelude::*;
use serde::Serialize;

use super::app_state;

/// What the last sync of FERRY_MANIFESTS_DIR found.
#[derive(Debug, Serialize, ToSchema)]
#[salvo(schema(name = "ferry.api.ManifestsView"))]
pub struct ManifestsView {
    /// The folder, or null when FERRY_MANIFESTS_DIR is not set.
    folder: Option<String>,
    synced_at: Option<String>,
    /// The jobs its documents declare.
    jobs: Vec<DeclaredView>,
    /// The documents that cannot be applied, and why.
    errors: Vec<ManifestErrorView>,
}

#[derive(Debug, Serialize, ToSchema)]
#[salvo(schema(name = "ferry.api.DeclaredView"))]
pub struct DeclaredView {
    name: String,
    /// file.yaml#2: the file and the document (from 1).
    source: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[salvo(schema(name = "ferry.api.ManifestErrorView"))]
pub struct ManifestErrorView {
    file: String,
    /// From 1; 0 when the whole file is refused.
    document: usize,
    /// The line the document starts on; 0 when unknown.
    line: usize,
    reason: String,
    /// All of it, in one line.
    message: String,
}

/// The manifests folder: the jobs it declares and the documents that cannot be applied
#[endpoint(operation_id = "ferry.api.get_manifests", tags("manifests"))]
pub(super) async fn get_manifests(depot: &mut Depot) -> Json<ManifestsView> {
    let app = app_state(depot);
    let status = app.ctx.manifests.status();
    Json(ManifestsView {
        folder: status.folder.map(|f| f.display().to_string()),
        synced_at: status.synced_at,
        jobs: status
            .jobs
            .into_iter()
            .map(|(name, source)| DeclaredView { name, source })
            .collect(),
        errors: status
            .errors
            .into_iter()
            .map(|e| ManifestErrorView {
                message: e.to_string(),
                file: e.file,
                document: e.document,
                line: e.line,
                reason: e.reason,
            })
            .collect(),
    })
}
