//! Security: who may call what, how callers prove who they are, TLS on
//! every hop, and the limits on what one caller may ask.

mod admin;
mod connections;
mod credentials;
mod limits;
mod rebinding;
mod roles;
mod startup;
mod tls;
mod watches;

use dsr_orchestrator::auth::Role;
use dsr_orchestrator::pb;
use dsr_orchestrator::pb::request_service_client::RequestServiceClient;

use crate::harness::app::{Authed, token_hash};

/// Lists requests through `client`: a cheap call, to see whether it is
/// served.
pub async fn list(client: &RequestServiceClient<Authed>) -> Result<(), tonic::Status> {
    client
        .clone()
        .list_requests(pb::ListRequestsRequest::default())
        .await
        .map(drop)
}

/// The token of the principal holding exactly `role`.
pub fn role_token(role: Role) -> String {
    format!("token-of-the-{}", role.as_str())
}

/// Auth-file entries for one principal per role (named after the role),
/// and a second submitter, `other-submitter`.
pub fn principals_per_role() -> String {
    let mut yaml = String::new();
    for role in Role::ALL {
        yaml.push_str(&format!(
            "  - principal: {name}\n    sha256: {hash}\n    roles: [{name}]\n",
            name = role.as_str(),
            hash = token_hash(&role_token(role)),
        ));
    }
    yaml.push_str(&format!(
        "  - principal: other-submitter\n    sha256: {}\n    roles: [submitter]\n",
        token_hash(OTHER_SUBMITTER)
    ));
    yaml
}

/// The second submitter's token.
pub const OTHER_SUBMITTER: &str = "token-of-another-submitter";
