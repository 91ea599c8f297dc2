//! [`Console`]: the state every page shares (the node, the sessions, the login throttle,
//! the cookie names) and the router — which path is which page.

use crate::https::{self, ListenerLimits};
use crate::login_throttle::{LoginThrottle, ThrottleLimits};
use crate::session::{cookie_name, SessionLimits, Sessions};
use crate::{assets, pages, security_headers, ConsoleError};
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use kurzdraht_node::config::{ConsoleSettings, TlsMaterial};
use kurzdraht_node::Node;
use std::sync::Arc;
use tokio::net::TcpListener;

/// The console's settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConsoleLimits {
    pub sessions: SessionLimits,
    pub throttle: ThrottleLimits,
    pub listener: ListenerLimits,
}

impl ConsoleLimits {
    /// The limits of a node's `[console]` section (the defaults for what it does not set).
    pub fn of(settings: Option<&ConsoleSettings>) -> Self {
        let mut limits = Self::default();
        if let Some(s) = settings {
            limits.sessions.idle_ms = s.idle_timeout.as_millis() as i64;
            limits.sessions.max_sessions = s.max_sessions;
        }
        limits
    }
}

pub struct ConsoleState {
    pub node: Node,
    pub sessions: Sessions,
    pub throttle: LoginThrottle,
    /// The session cookie's name.
    pub cookie: String,
    /// The cookie that carries the login form's CSRF token before sign-in.
    pub login_cookie: String,
    limits: ConsoleLimits,
}

/// One node's console.
#[derive(Clone)]
pub struct Console(Arc<ConsoleState>);

impl std::ops::Deref for Console {
    type Target = ConsoleState;
    fn deref(&self) -> &ConsoleState {
        &self.0
    }
}

impl Console {
    pub fn new(node: Node, limits: ConsoleLimits) -> Self {
        let cookie = cookie_name(node.agency());
        Self(Arc::new(ConsoleState {
            login_cookie: format!("{cookie}-login"),
            cookie,
            sessions: Sessions::new(limits.sessions),
            throttle: LoginThrottle::new(limits.throttle),
            node,
            limits,
        }))
    }

    /// The office's name as the directory gives it.
    pub fn office(&self) -> String {
        let agency = self.node.agency().to_string();
        self.node
            .directory()
            .get(&agency)
            .map(|a| a.name.clone())
            .unwrap_or(agency)
    }

    pub fn now_ms(&self) -> i64 {
        self.node.now_ms()
    }

    /// Every page and asset.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/", get(pages::account::home))
            .route("/konto", get(pages::account::show))
            .route(
                "/anmelden",
                get(pages::login::form).post(pages::login::submit),
            )
            .route("/abmelden", post(pages::login::sign_out))
            .route("/posteingang", get(pages::inbox::list))
            .route("/posteingang/neu", get(pages::inbox::newer))
            .route("/nachricht/{id}", get(pages::inbox::show))
            .route("/nachricht/{id}/erledigt", post(pages::inbox::acknowledge))
            .route("/faelle", get(pages::cases::list))
            .route("/fall/{root}", get(pages::cases::show))
            .route("/auskunft", get(pages::report::show))
            .route("/protokoll", get(pages::audit_log::show))
            .route(
                "/protokoll/pruefen",
                post(pages::audit_log::start_verification),
            )
            .route(
                "/nachricht/neu",
                get(pages::send::new).post(pages::send::submit),
            )
            .route("/nachricht/{id}/antworten", get(pages::reply::form))
            .route("/gesendet/{id}", get(pages::sent::show))
            .route("/einwilligungen", get(pages::consents::list))
            .route(
                "/einwilligung/neu",
                get(pages::consent_form::new)
                    .post(pages::consent_form::submit)
                    .layer(DefaultBodyLimit::max(pages::consent_upload::MAX_BODY_BYTES)),
            )
            .route("/einwilligung/{id}", get(pages::consents::show))
            .route(
                "/einwilligung/{id}/widerrufen",
                post(pages::consents::withdraw),
            )
            .route(
                "/einwilligung/{id}/ersetzen",
                get(pages::consent_form::replace),
            )
            .route("/assets/{*path}", get(assets::serve))
            .fallback(|| async { ConsoleError::NotFound("page".into()) })
            .layer(axum::middleware::from_fn(security_headers::add))
            .with_state(self.clone())
    }

    /// Serves the console on `listener` with the node's TLS identity until the node closes.
    pub async fn serve(self, listener: TcpListener, tls: TlsMaterial) -> Result<(), ConsoleError> {
        let config = https::server_tls(&tls)?;
        let closing = self.node.closing();
        let limits = self.limits.listener;
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(agency = self.node.agency(), console = %addr, "console serving (HTTPS)");
        }
        https::serve(self.router(), listener, config, limits, closing).await
    }
}
