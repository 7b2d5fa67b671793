//! The web console: one page, its script and its style sheet, compiled into the binary and
//! served at `/` on the main listener without a token (they hold no secret). The page signs in
//! with an operator token and uses the operator API under `/api/v1/` like the CLI does; every
//! answer here carries a content security policy that allows only these files (no inline
//! script, no eval, no framing).

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;

/// The page.
const INDEX_HTML: &str = include_str!("console/index.html");
/// The page's script (an ES module).
const APP_JS: &str = include_str!("console/app.js");
/// The page's style sheet.
const STYLE_CSS: &str = include_str!("console/style.css");

/// Path of the console's page.
pub const CONSOLE_PATH: &str = "/";
/// Path of the console's script.
pub const APP_JS_PATH: &str = "/console/app.js";
/// Path of the console's style sheet.
pub const STYLE_CSS_PATH: &str = "/console/style.css";

/// The content security policy of every console answer: scripts, styles and API calls from this
/// server only; no inline script or style attribute, no eval, no plugin, no framing, no form
/// posted elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The console's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(CONSOLE_PATH, get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route(APP_JS_PATH, get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route(STYLE_CSS_PATH, get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }))
}

/// `body` as `content_type`, with the console's security headers; revalidated on every load, so
/// an upgraded server's console is seen at once.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
