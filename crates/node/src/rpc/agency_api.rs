//! The AgencyApi service (tonic) and its bearer-token check. The service is a thin layer:
//! it authenticates, calls one of the node's services, and converts errors to statuses through
//! `From<NodeError> for Status`.

use crate::{config::ApiToken, node::Node, NodeError};
use kurzdraht_proto::v1::agency_api_server::{AgencyApi, AgencyApiServer};
use kurzdraht_proto::v1::*;
use sha2::{Digest, Sha256};
use std::pin::Pin;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio_stream::wrappers::{errors::BroadcastStreamRecvError, BroadcastStream, ReceiverStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{service::interceptor::InterceptedService, Request, Response, Status};

/// The IT system a request was authenticated as.
#[derive(Debug, Clone)]
pub struct ApiClient(pub String);

/// Set on a request whose token is configured with `admin = true` (may call `Backup`,
/// `Reconcile` and manage the console's accounts).
#[derive(Debug, Clone, Copy)]
pub struct Admin;

/// Checks `authorization: Bearer <token>` against the configured SHA-256 hashes, in
/// constant time per comparison, and tags the request with the client's name.
#[derive(Clone)]
pub struct BearerAuth {
    tokens: Arc<Vec<ApiToken>>,
}

impl BearerAuth {
    pub fn new(tokens: Vec<ApiToken>) -> Self {
        Self {
            tokens: Arc::new(tokens),
        }
    }

    /// The client whose token this is.
    pub fn client_for(&self, presented: &str) -> Option<String> {
        self.token_for(presented).map(|t| t.client.clone())
    }

    fn token_for(&self, presented: &str) -> Option<&ApiToken> {
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for t in self.tokens.iter() {
            if bool::from(t.sha256.ct_eq(&hash)) {
                found = Some(t);
            }
        }
        found
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let header = req
            .metadata()
            .get("authorization")
            .ok_or_else(|| NodeError::Unauthenticated("no authorization metadata".into()))?;
        let value = header
            .to_str()
            .map_err(|_| NodeError::Unauthenticated("authorization is not text".into()))?;
        let token = bearer_token(value).ok_or_else(|| {
            NodeError::Unauthenticated("authorization must be 'Bearer <token>'".into())
        })?;
        let found = self
            .token_for(token)
            .ok_or_else(|| NodeError::Unauthenticated("unknown token".into()))?;
        let (client, admin) = (found.client.clone(), found.admin);
        req.extensions_mut().insert(ApiClient(client));
        if admin {
            req.extensions_mut().insert(Admin);
        }
        Ok(req)
    }
}

/// The token of an `authorization` value `Bearer <token>`. The scheme is matched without
/// regard to case (RFC 7235, section 2.1: `bearer`, `BEARER` are the same scheme); one or
/// more spaces separate it from the token.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The largest request the API port decodes: a sealed envelope at the federation's limits
/// (`[limits] max_header_bytes + max_payload_bytes`) and 64 KiB for the rest of a request
/// (a `Submit` whose body would not fit into an envelope cannot succeed anyway). Anything
/// larger is refused by the transport before the node sees it (RESOURCE_EXHAUSTED,
/// too-large).
pub fn request_limit(envelope: &kurzdraht_envelope::Limits) -> usize {
    envelope.max_header_bytes + envelope.max_payload_bytes + 64 * 1024
}

pub struct AgencyService {
    node: Node,
}

/// The AgencyApi with its token check in front (it runs before a request's body is read).
/// A request is decoded up to the same limit as a peer's
/// ([`crate::rpc::peer_exchange::transport_limit`]): what a Submit carries must fit into an
/// envelope anyway.
pub fn service(
    node: Node,
    tokens: Vec<ApiToken>,
) -> InterceptedService<AgencyApiServer<AgencyService>, BearerAuth> {
    let max = request_limit(&node.limits().envelope);
    InterceptedService::new(
        AgencyApiServer::new(AgencyService { node }).max_decoding_message_size(max),
        BearerAuth::new(tokens),
    )
}

fn client_of<T>(req: &Request<T>) -> String {
    req.extensions()
        .get::<ApiClient>()
        .map(|c| c.0.clone())
        .unwrap_or_default()
}

/// Refuses a request whose token is not an admin token.
fn require_admin<T>(req: &Request<T>, call: &str) -> Result<(), Status> {
    match req.extensions().get::<Admin>() {
        Some(_) => Ok(()),
        None => Err(NodeError::PermissionDenied(format!(
            "{call} needs a token configured with admin = true in [api] tokens"
        ))
        .into()),
    }
}

/// The role a request names (`role`: required).
fn account_role(role: i32) -> Result<kurzdraht_ledger::AccountRole, NodeError> {
    use kurzdraht_ledger::AccountRole as R;
    match pb_role(role) {
        Some(AccountRole::Caseworker) => Ok(R::Caseworker),
        Some(AccountRole::DataProtection) => Ok(R::DataProtection),
        Some(AccountRole::Admin) => Ok(R::Admin),
        Some(AccountRole::Unspecified) | None => Err(NodeError::invalid(
            "role",
            "must be ACCOUNT_ROLE_CASEWORKER, ACCOUNT_ROLE_DATA_PROTECTION or ACCOUNT_ROLE_ADMIN",
        )),
    }
}

fn pb_role(role: i32) -> Option<AccountRole> {
    AccountRole::try_from(role).ok()
}

/// An account on the wire (no hash: the view has none).
fn account_of(view: &crate::service::AccountView) -> Account {
    use kurzdraht_ledger::AccountRole as R;
    let role = match view.role {
        R::Caseworker => AccountRole::Caseworker,
        R::DataProtection => AccountRole::DataProtection,
        R::Admin => AccountRole::Admin,
    };
    Account {
        name: view.name.clone(),
        display_name: view.display_name.clone(),
        role: role as i32,
        disabled: view.disabled,
        failed_logins: view.failed_logins,
        locked_until_ms: view.locked_until_secs.map_or(0, |s| s.saturating_mul(1000)),
        created_at_ms: view.created_at_ms,
        updated_at_ms: view.updated_at_ms,
    }
}

type InboxStream = Pin<Box<dyn Stream<Item = Result<InboxItem, Status>> + Send>>;
type BackupStream = Pin<Box<dyn Stream<Item = Result<BackupChunk, Status>> + Send>>;
type StatusStream = Pin<Box<dyn Stream<Item = Result<MessageStatus, Status>> + Send>>;

#[tonic::async_trait]
impl AgencyApi for AgencyService {
    async fn record_consent(
        &self,
        req: Request<RecordConsentRequest>,
    ) -> Result<Response<RecordConsentResponse>, Status> {
        let client = client_of(&req);
        Ok(Response::new(
            self.node
                .submission()
                .record_consent(&client, req.into_inner())
                .await?,
        ))
    }

    async fn withdraw_consent(
        &self,
        req: Request<WithdrawConsentRequest>,
    ) -> Result<Response<WithdrawConsentResponse>, Status> {
        let client = client_of(&req);
        Ok(Response::new(
            self.node
                .submission()
                .withdraw_consent(&client, req.into_inner())
                .await?,
        ))
    }

    async fn list_consents(
        &self,
        req: Request<ListConsentsRequest>,
    ) -> Result<Response<ListConsentsResponse>, Status> {
        Ok(Response::new(
            self.node.submission().list_consents(req.get_ref())?,
        ))
    }

    async fn submit(
        &self,
        req: Request<SubmitRequest>,
    ) -> Result<Response<SubmitResponse>, Status> {
        let client = client_of(&req);
        Ok(Response::new(
            self.node
                .submission()
                .submit(&client, req.into_inner())
                .await?,
        ))
    }

    async fn get_status(
        &self,
        req: Request<GetStatusRequest>,
    ) -> Result<Response<MessageStatus>, Status> {
        Ok(Response::new(
            self.node
                .submission()
                .status(&req.into_inner().message_id)?,
        ))
    }

    type WatchStatusStream = StatusStream;

    async fn watch_status(
        &self,
        _req: Request<WatchStatusRequest>,
    ) -> Result<Response<Self::WatchStatusStream>, Status> {
        let events = BroadcastStream::new(self.node.status_events());
        let mut lagged = false;
        let stream = events.map_while(move |event| match event {
            _ if lagged => None,
            Ok(status) => Some(Ok(status)),
            Err(BroadcastStreamRecvError::Lagged(missed)) => {
                lagged = true;
                Some(Err(Status::from(NodeError::Lagged(format!(
                    "this watcher fell {missed} statuses behind; read them with GetStatus"
                )))))
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    type ReadInboxStream = InboxStream;

    async fn read_inbox(
        &self,
        req: Request<ReadInboxRequest>,
    ) -> Result<Response<Self::ReadInboxStream>, Status> {
        let client = client_of(&req);
        let rx = self.node.inbox().read_inbox(req.into_inner(), client);
        let stream = ReceiverStream::new(rx).map(|item| item.map_err(Status::from));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_consent_evidence(
        &self,
        req: Request<GetConsentEvidenceRequest>,
    ) -> Result<Response<ConsentEvidence>, Status> {
        Ok(Response::new(
            self.node.reports().consent_evidence(req.into_inner())?,
        ))
    }

    async fn subject_access_report(
        &self,
        req: Request<SubjectAccessRequest>,
    ) -> Result<Response<SubjectAccessReport>, Status> {
        let client = client_of(&req);
        Ok(Response::new(
            self.node
                .reports()
                .subject_access_report(req.into_inner(), &client)
                .await?,
        ))
    }

    async fn close_case(
        &self,
        req: Request<CloseCaseRequest>,
    ) -> Result<Response<CloseCaseResponse>, Status> {
        Ok(Response::new(
            self.node.retention().close_case(req.into_inner()).await?,
        ))
    }

    async fn erase_subject(
        &self,
        req: Request<SubjectAccessRequest>,
    ) -> Result<Response<EraseSubjectResponse>, Status> {
        Ok(Response::new(
            self.node
                .retention()
                .erase_subject(req.into_inner())
                .await?,
        ))
    }

    type BackupStream = BackupStream;

    async fn backup(
        &self,
        req: Request<BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        require_admin(&req, "Backup")?;
        let client = client_of(&req);
        let rx = self.node.backup().take(&client).await?;
        let stream = ReceiverStream::new(rx).map(|chunk| chunk.map_err(Status::from));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn reconcile(
        &self,
        req: Request<ReconcileRequest>,
    ) -> Result<Response<ReconcileResponse>, Status> {
        require_admin(&req, "Reconcile")?;
        Ok(Response::new(
            self.node
                .reconciliation()
                .reconcile(req.into_inner())
                .await?,
        ))
    }

    async fn add_account(
        &self,
        req: Request<AddAccountRequest>,
    ) -> Result<Response<Account>, Status> {
        require_admin(&req, "AddAccount")?;
        let by = client_of(&req);
        let r = req.into_inner();
        let role = account_role(r.role)?;
        let view = self
            .node
            .accounts()
            .add(&by, &r.name, &r.display_name, role, &r.password)
            .await?;
        Ok(Response::new(account_of(&view)))
    }

    async fn set_account_password(
        &self,
        req: Request<SetAccountPasswordRequest>,
    ) -> Result<Response<Account>, Status> {
        require_admin(&req, "SetAccountPassword")?;
        let by = client_of(&req);
        let r = req.into_inner();
        let view = self
            .node
            .accounts()
            .set_password(&by, &r.name, &r.password)
            .await?;
        Ok(Response::new(account_of(&view)))
    }

    async fn set_account_role(
        &self,
        req: Request<SetAccountRoleRequest>,
    ) -> Result<Response<Account>, Status> {
        require_admin(&req, "SetAccountRole")?;
        let by = client_of(&req);
        let r = req.into_inner();
        let role = account_role(r.role)?;
        let view = self.node.accounts().set_role(&by, &r.name, role).await?;
        Ok(Response::new(account_of(&view)))
    }

    async fn disable_account(
        &self,
        req: Request<DisableAccountRequest>,
    ) -> Result<Response<Account>, Status> {
        require_admin(&req, "DisableAccount")?;
        let by = client_of(&req);
        let view = self
            .node
            .accounts()
            .disable(&by, &req.into_inner().name)
            .await?;
        Ok(Response::new(account_of(&view)))
    }

    async fn list_accounts(
        &self,
        req: Request<ListAccountsRequest>,
    ) -> Result<Response<ListAccountsResponse>, Status> {
        require_admin(&req, "ListAccounts")?;
        let accounts = self.node.accounts().list()?;
        Ok(Response::new(ListAccountsResponse {
            accounts: accounts.iter().map(account_of).collect(),
        }))
    }

    async fn acknowledge(
        &self,
        req: Request<AcknowledgeRequest>,
    ) -> Result<Response<AcknowledgeResponse>, Status> {
        let client = client_of(&req);
        self.node
            .inbox()
            .acknowledge(&req.into_inner().message_id, &client)
            .await?;
        Ok(Response::new(AcknowledgeResponse {}))
    }
}
