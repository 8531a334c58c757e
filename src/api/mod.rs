//! The HTTP API: the only module that knows salvo.
//!
//! Handlers translate between JSON and the engine's context; every error leaves as
//! `{"error": {"code", "message"}}` with a stable code, and the OpenAPI document at
//! /openapi.json is generated from the handlers themselves. One file a resource:
//!
//! - [`uploads`]: /uploads and /uploads/{id} (create, apply, read, rescan, retry, delete), with
//!   [`job_view`], a job's status as the API shows it;
//! - [`files`]: /uploads/{id}/files, paged;
//! - [`lifecycle`]: /uploads/{id}/prune (confirm held prunes) and /uploads/{id}/resync;
//! - [`manifests`]: the manifests folder, /manifests;
//! - [`health`]: /healthz, /readyz and /metrics;
//! - [`ui`]: the dashboard at /ui/, embedded, and the redirect of / to it;
//! - [`error`], [`reply`], [`body`] and [`auth`]: what every handler shares.

mod auth;
mod body;
mod error;
mod files;
mod health;
mod job_view;
mod lifecycle;
mod manifests;
mod page;
mod reply;
mod ui;
mod uploads;

use std::sync::Arc;

use salvo::catcher::Catcher;
use salvo::oapi::{Content, Response as OaResponse, ToSchema};
use salvo::prelude::*;

use crate::config::ApiToken;
use crate::engine::Context;

pub use body::MAX_BODY_BYTES;
pub use error::ApiError;
use error::{ErrorBody, JsonErrors};
use files::list_files;
use health::{healthz, metrics, readyz};
use lifecycle::{confirm_prune, resync_upload};
use manifests::get_manifests;
use uploads::{
    create_upload, delete_upload, get_upload, list_uploads, put_upload, rescan_upload, retry_upload,
};

/// What the handlers share.
pub struct AppState {
    pub ctx: Arc<Context>,
    /// Source folders must lie inside one of these (canonical); empty: anywhere.
    pub allowed_roots: Vec<std::path::PathBuf>,
}

/// The job `id`, or the API's 404.
pub(crate) async fn existing_job(
    app: &AppState,
    id: &str,
) -> Result<crate::store::JobRow, ApiError> {
    app.ctx
        .store
        .get_job(id)
        .await?
        .ok_or_else(|| ApiError::job_not_found(id))
}

pub(crate) fn app_state(depot: &Depot) -> Arc<AppState> {
    depot
        .get_typed::<Arc<AppState>>()
        .expect("the state is injected by the router")
        .clone()
}

/// Puts the shared state in every request's depot.
struct Inject(Arc<AppState>);

#[async_trait]
impl Handler for Inject {
    async fn handle(
        &self,
        _req: &mut Request,
        depot: &mut Depot,
        _res: &mut Response,
        _ctrl: &mut FlowCtrl,
    ) {
        depot.insert_typed(self.0.clone());
    }
}

/// The routes that need the token when one is set.
fn guarded_routes() -> Router {
    Router::new()
        .push(
            Router::with_path("uploads")
                .get(list_uploads)
                .post(create_upload)
                .push(
                    Router::with_path("{upload_id}")
                        .get(get_upload)
                        .put(put_upload)
                        .delete(delete_upload)
                        .push(Router::with_path("files").get(list_files))
                        .push(Router::with_path("rescan").post(rescan_upload))
                        .push(Router::with_path("retry").post(retry_upload))
                        .push(Router::with_path("prune").post(confirm_prune))
                        .push(Router::with_path("resync").post(resync_upload)),
                ),
        )
        .push(Router::with_path("manifests").get(get_manifests))
}

/// Probes stay open, so that a kubelet or a load balancer can reach them without the token.
fn probe_routes() -> Router {
    Router::new()
        .push(Router::with_path("healthz").get(healthz))
        .push(Router::with_path("readyz").get(readyz))
        .push(Router::with_path("metrics").get(metrics))
}

/// The dashboard's page and assets carry no data, so they are served without the token; the API
/// calls the page makes need it. Not in the OpenAPI document: they are not the API.
fn dashboard_routes() -> Router {
    Router::new()
        .push(
            Router::with_path("ui")
                .get(ui::dashboard)
                .push(Router::with_path("{file}").get(ui::dashboard)),
        )
        .push(Router::new().get(ui::to_dashboard))
}

fn routes() -> Router {
    Router::new().push(guarded_routes()).push(probe_routes())
}

/// The OpenAPI document of the API.
///
/// With a token, the document says so: a `bearer` security scheme required by every operation
/// but the probes and the document itself, so that clients (and the fuzzing in CI) know.
pub fn openapi(token_required: bool) -> salvo::oapi::OpenApi {
    use salvo::oapi::SecurityRequirement;
    use salvo::oapi::security::{Http, HttpAuthScheme, SecurityScheme};
    let doc = salvo::oapi::OpenApi::new("ferry", env!("CARGO_PKG_VERSION")).merge_router(&routes());
    if !token_required {
        return doc;
    }
    let mut doc = doc
        .add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::new(HttpAuthScheme::Bearer)
                    .description("FERRY_API_TOKEN, as `Authorization: Bearer <token>`"),
            ),
        )
        .security([SecurityRequirement::new("bearer", Vec::<String>::new())]);
    let mut components = doc.components.clone();
    let unauthorized = OaResponse::new("No token, or not the right one").add_content(
        "application/json",
        Content::new(ErrorBody::to_schema(&mut components)),
    );
    for (path, item) in doc.paths.iter_mut() {
        let open = matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics");
        for op in item.operations.values_mut() {
            if open {
                op.securities = Some(Vec::new());
            } else {
                op.responses.insert("401", unauthorized.clone());
            }
        }
    }
    doc.components = components;
    doc
}

/// The whole service: routes, the OpenAPI document, JSON errors, and the token check on the
/// guarded routes when a token is set.
pub fn service(app: Arc<AppState>, token: Option<ApiToken>) -> Service {
    let doc = openapi(token.is_some());
    let guarded = match token {
        Some(token) => guarded_routes().hoop(auth::RequireToken(token)),
        None => guarded_routes(),
    };
    let router = Router::new()
        .hoop(Inject(app))
        .push(guarded)
        .push(probe_routes())
        .push(doc.into_router("/openapi.json"))
        .push(dashboard_routes());
    Service::new(router).catcher(Catcher::default().hoop(JsonErrors))
}
