//! kurzdraht-console: the node's web console for the people in the offices — caseworkers,
//! data protection officers, the node's administrator — in German, server-rendered, in the
//! KERN UX design system (vendored under `assets/`, nothing loaded from another origin).
//!
//! Layout:
//! - [`https`]: the listener — TLS with the node's own certificate (rustls, ring), hyper
//!   serving HTTP/1.1 and HTTP/2, a bound on connections and on the time to send a request's
//!   head; runs until the node closes.
//! - [`app`]: the router — which path is which page, the security headers every answer
//!   carries ([`security_headers`]).
//! - [`session`]: signed-in sessions (in memory; idle timeout and absolute lifetime on the
//!   node's clock) and the cookie that names one; [`csrf`]: the token every state-changing
//!   form carries; [`login_throttle`]: failed logins per client address.
//! - [`signed_in`]: the extractor a page takes to be reached only by a signed-in account,
//!   re-checked against the node's accounts on every request; roles.
//! - [`pages`]: one file per page (login, Posteingang, …): read the form, call the node's
//!   service, render a template from `templates/`.
//! - [`refusal`]: the German explanation and next step of every refusal reason code.
//! - [`assets`]: the vendored style sheets, fonts and the small script of the live inbox.
//! - [`error`]: [`ConsoleError`] and the one place an error becomes an HTTP answer.
//!
//! Architecture invariants:
//! - The console reaches the ledger only through the node's services — the same validation,
//!   policy, consent decision and audit as the AgencyApi; it holds no second path to the
//!   store. What it does is attributed to the signed-in account (the service's client is
//!   `console:<account>`; `recorded_by` and caseworker fields come from the account).
//! - Every state-changing request is a POST carrying the session's CSRF token; every answer
//!   carries a Content-Security-Policy that allows nothing from another origin and no inline
//!   script.
//! - No young person's data in logs: the console logs accounts, paths and outcomes only.

#![forbid(unsafe_code)]

pub mod app;
pub mod assets;
pub mod csrf;
pub mod error;
pub mod https;
pub mod login_throttle;
pub mod pages;
pub mod refusal;
pub mod security_headers;
pub mod session;
pub mod signed_in;
pub mod view;

pub use app::{Console, ConsoleLimits};
pub use error::ConsoleError;
