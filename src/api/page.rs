//! Pages of a list: the `limit` a client asks for, and the `Link` header to the next page.

use salvo::prelude::*;

use super::ApiError;

/// The page size asked for: `default` when none is, an error when it is not a whole number from 1
/// to `max` (read as text: `limit=abc` is refused, not defaulted).
pub(super) fn limit(raw: Option<&str>, default: u32, max: u32) -> Result<u32, ApiError> {
    let limit = match raw {
        None => default,
        Some(raw) => raw.trim().parse::<u32>().unwrap_or(0),
    };
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be from 1 to {max}"),
        ))
    }
}

/// Points the client at the next page: `Link: <next>; rel="next"`.
pub(super) fn link_next(res: &mut Response, next: &str) {
    if let Ok(value) = format!("<{next}>; rel=\"next\"").parse() {
        res.headers_mut().insert("link", value);
    }
}

#[cfg(test)]
mod tests {
    use super::limit;

    #[test]
    fn a_limit_is_a_whole_number_within_bounds() {
        assert_eq!(limit(None, 1000, 10_000).unwrap(), 1000);
        assert_eq!(limit(Some(" 25 "), 1000, 10_000).unwrap(), 25);
        assert_eq!(limit(Some("10000"), 1000, 10_000).unwrap(), 10_000);
        for bad in ["0", "10001", "-1", "abc", "", "2.5"] {
            assert!(limit(Some(bad), 1000, 10_000).is_err(), "{bad:?} was taken");
        }
    }
}
