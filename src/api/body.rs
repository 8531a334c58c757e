//! Reading a request body: bounded in size and in time.

use salvo::http::StatusCode;
use salvo::prelude::*;

use super::ApiError;

pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// How much of a too-large body is read (and dropped) so that the 413 reaches the client.
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;
/// How long a request body may take to arrive.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads a request body of at most [`MAX_BODY_BYTES`]. A larger one is read to its end (up to
/// [`DRAIN_LIMIT`]) and dropped before the 413 goes out, so that the client, still sending, gets
/// the answer instead of a reset connection.
pub(super) async fn read_body(req: &mut Request) -> Result<Vec<u8>, ApiError> {
    use http_body_util::BodyExt;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(salvo::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > DRAIN_LIMIT) {
        return Err(too_large());
    }
    let mut body = req.take_body();
    let mut buf = Vec::new();
    let mut total = 0usize;
    let reading = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                ApiError::bad_request("invalid_body", format!("cannot read the request body: {e}"))
            })?;
            if let Ok(data) = frame.into_data() {
                total += data.len();
                if total <= MAX_BODY_BYTES {
                    buf.extend_from_slice(&data);
                } else if total > DRAIN_LIMIT {
                    break;
                }
            }
        }
        Ok::<(), ApiError>(())
    };
    // A client that trickles its body must not hold a handler forever.
    tokio::time::timeout(BODY_TIMEOUT, reading)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            )
        })??;
    if total > MAX_BODY_BYTES {
        return Err(too_large());
    }
    Ok(buf)
}
