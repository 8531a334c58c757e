//! The bearer token (FERRY_API_TOKEN) on the guarded routes.

use salvo::http::StatusCode;
use salvo::prelude::*;

use super::ApiError;
use crate::config::ApiToken;

/// Lets a request through only with `Authorization: Bearer <token>`, compared in constant time.
pub(super) struct RequireToken(pub(super) ApiToken);

#[async_trait]
impl Handler for RequireToken {
    async fn handle(
        &self,
        req: &mut Request,
        _depot: &mut Depot,
        res: &mut Response,
        ctrl: &mut FlowCtrl,
    ) {
        let given = req
            .headers()
            .get(salvo::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            });
        let ok = given.is_some_and(|t| constant_time_eq(t.as_bytes(), self.0.expose().as_bytes()));
        if !ok {
            let message = if given.is_none() {
                "this endpoint needs `Authorization: Bearer <token>` (FERRY_API_TOKEN)"
            } else {
                "the bearer token is not the one ferry was started with"
            };
            res.headers_mut().insert(
                "www-authenticate",
                salvo::http::HeaderValue::from_static("Bearer"),
            );
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).render(res);
            ctrl.skip_rest();
        }
    }
}

/// Equal bytes, in a time that depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
