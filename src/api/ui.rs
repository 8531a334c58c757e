//! The dashboard: a page over the API at /ui/, embedded in the binary (no CDN, no build step),
//! so that it works offline and in an air-gapped cluster.
//!
//! The page carries no data: it is served without the token, and its script asks for the token
//! when the API answers 401, keeps it in sessionStorage and sends it as a bearer. Everything the
//! page shows comes from the guarded API. `GET /` and `GET /ui` redirect to `/ui/`.

use salvo::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use salvo::prelude::*;

/// An embedded asset: its name under /ui/, its media type and its bytes.
struct Asset {
    name: &'static str,
    media_type: &'static str,
    body: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "",
        media_type: "text/html; charset=utf-8",
        body: include_str!("ui/index.html"),
    },
    Asset {
        name: "app.js",
        media_type: "text/javascript; charset=utf-8",
        body: include_str!("ui/app.js"),
    },
    Asset {
        name: "app.css",
        media_type: "text/css; charset=utf-8",
        body: include_str!("ui/app.css"),
    },
    Asset {
        name: "favicon.svg",
        media_type: "image/svg+xml",
        body: include_str!("ui/favicon.svg"),
    },
];

/// What the page may load and run: its own script and style, and calls to its own origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

/// Where the dashboard is: its assets are relative to this.
const HOME: &str = "/ui/";

/// Sends `/` and `/ui` to the dashboard.
#[handler]
pub(super) async fn to_dashboard(res: &mut Response) {
    res.render(Redirect::found(HOME));
}

/// The dashboard's page and its assets.
#[handler]
pub(super) async fn dashboard(req: &mut Request, res: &mut Response) {
    let name = req.param::<String>("file").unwrap_or_default();
    if name.is_empty() && !req.uri().path().ends_with('/') {
        // /ui: the page's assets are relative to /ui/.
        res.render(Redirect::found(HOME));
        return;
    }
    let Some(asset) = asset(&name) else {
        res.render(super::ApiError::new(
            salvo::http::StatusCode::NOT_FOUND,
            "not_found",
            format!("the dashboard has no file {name:?}; it is at /ui/"),
        ));
        return;
    };
    let headers = res.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(asset.media_type));
    // Assets change with the binary: a browser asks again rather than keep an old script.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("content-security-policy", HeaderValue::from_static(CSP));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    // The embedded bytes themselves, not a copy per request.
    res.write_body(bytes::Bytes::from_static(asset.body.as_bytes()))
        .ok();
}

#[cfg(test)]
mod tests {
    use super::{ASSETS, asset};

    #[test]
    fn the_page_loads_only_its_own_assets() {
        let page = asset("").unwrap().body;
        assert!(page.contains(r#"src="app.js""#));
        assert!(page.contains(r#"href="app.css""#));
        // No inline script or style: the CSP forbids them, and no asset comes from elsewhere.
        assert!(!page.contains("<script>"), "an inline script");
        assert!(!page.contains("style="), "an inline style");
        for a in ASSETS {
            // The SVG namespace is a name, not a place anything is loaded from.
            let body = a.body.replace("http://www.w3.org/2000/svg", "");
            assert!(
                !body.contains("http://") && !body.contains("https://"),
                "{} loads from elsewhere",
                a.name
            );
        }
    }
}
