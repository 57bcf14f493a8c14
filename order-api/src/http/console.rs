//! The web console at `/ui`: a page, a script and a stylesheet, embedded in the binary
//! (`order-api/ui/`), that call the same `/v1` API as any client with the token the user
//! signs in with. Nothing here reads the database or decides what a token may see.
//!
//! Every answer carries a Content-Security-Policy that allows only the console's own files
//! (no inline script or style, no other origin, no framing), `X-Frame-Options: DENY`,
//! `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::http::AppState;

/// The console's page.
const INDEX_HTML: &str = include_str!("../../ui/index.html");
/// Its script (an ES module, no build step).
const APP_JS: &str = include_str!("../../ui/app.js");
/// Its stylesheet.
const STYLE_CSS: &str = include_str!("../../ui/style.css");

/// What the console's answers allow the browser to load and run.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// The console's routes, with their security headers.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(index))
        .route("/ui/", get(|| async { Redirect::permanent("/ui") }))
        .route("/ui/app.js", get(app_js))
        .route("/ui/style.css", get(style_css))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
}

/// The size of the console's files, which the binary carries.
pub fn embedded_bytes() -> usize {
    INDEX_HTML.len() + APP_JS.len() + STYLE_CSS.len()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

/// A file of the console; revalidated on each load, so a new binary's console shows at once.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page loads its script and style as files: no inline script or style, which the
    /// policy would refuse.
    #[test]
    fn the_page_has_no_inline_script_or_style() {
        assert!(!INDEX_HTML.contains("<style"));
        assert!(!INDEX_HTML.contains(" style="));
        for script in INDEX_HTML.split("<script").skip(1) {
            let (tag, rest) = script.split_once('>').expect("a script tag");
            assert!(tag.contains("src="), "an inline script: {tag}");
            assert!(
                rest.trim_start().starts_with("</script>"),
                "an inline script"
            );
        }
        assert!(
            !APP_JS.contains("innerHTML"),
            "the script builds nodes, never HTML"
        );
    }

    /// docs/http-api.md promises the console adds under 64 KB to the binary.
    #[test]
    fn the_console_stays_small() {
        assert!(embedded_bytes() < 64 * 1024, "{} bytes", embedded_bytes());
    }
}
