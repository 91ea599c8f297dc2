//! The console's static files, compiled into the binary: KERN UX's style sheet and Fira
//! Sans (vendored under `assets/kern/` with their licences, see `assets/README.md`), and
//! our own (`static/`): the console's small style sheet and the script of the live inbox. Served from this origin
//! only, cached for a day.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// A vendored file (`assets/`, listed with its origin and licence in `assets/README.md`) or
/// one of our own (`static/`), served under `/assets/<path>`.
macro_rules! asset {
    ($path:literal, $type:literal) => {
        asset!("/assets/", $path, $type)
    };
    ($dir:literal, $path:literal, $type:literal) => {
        (
            $path,
            $type,
            include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), $dir, $path)) as &[u8],
        )
    };
}

/// Every file served under `/assets/`: path, content type, bytes.
pub const FILES: &[(&str, &str, &[u8])] = &[
    asset!("kern/kern.min.css", "text/css; charset=utf-8"),
    asset!("kern/fonts/fira-sans.css", "text/css; charset=utf-8"),
    asset!("kern/fonts/fira-sans/FiraSans-Light.woff2", "font/woff2"),
    asset!(
        "kern/fonts/fira-sans/FiraSans-LightItalic.woff2",
        "font/woff2"
    ),
    asset!("kern/fonts/fira-sans/FiraSans-Regular.woff2", "font/woff2"),
    asset!("kern/fonts/fira-sans/FiraSans-Italic.woff2", "font/woff2"),
    asset!("kern/fonts/fira-sans/FiraSans-Medium.woff2", "font/woff2"),
    asset!(
        "kern/fonts/fira-sans/FiraSans-MediumItalic.woff2",
        "font/woff2"
    ),
    asset!("kern/fonts/fira-sans/FiraSans-SemiBold.woff2", "font/woff2"),
    asset!(
        "kern/fonts/fira-sans/FiraSans-SemiBoldItalic.woff2",
        "font/woff2"
    ),
    asset!("kern/fonts/fira-sans/FiraSans-Bold.woff2", "font/woff2"),
    asset!(
        "kern/fonts/fira-sans/FiraSans-BoldItalic.woff2",
        "font/woff2"
    ),
    asset!("/static/", "console.css", "text/css; charset=utf-8"),
    asset!(
        "/static/",
        "posteingang.js",
        "text/javascript; charset=utf-8"
    ),
];

/// `GET /assets/{*path}`.
pub async fn serve(Path(path): Path<String>) -> Response {
    match FILES.iter().find(|(p, _, _)| *p == path) {
        Some((_, content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "public, max-age=86400"),
            ],
            *bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "").into_response(),
    }
}
