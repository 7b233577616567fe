//! The one table of who may call what. Every RPC the server serves is in
//! it; a path that is not (a method this build does not have) is left to
//! the server, which answers `UNIMPLEMENTED`.
//!
//! | service | method | who |
//! |---|---|---|
//! | RequestService | SubmitRequest | submitter |
//! | RequestService | GetRequest, ListRequests, WatchRequest, GetCompletionRecord | submitter (its own requests), auditor, operator |
//! | RequestService | CancelRequest, ConfirmReceipt, ExtendDeadline | submitter (its own requests), operator |
//! | RequestService | VerifyAuditTrail | auditor, operator |
//! | RequestService | GetAccessReport, ExportAccessData | submitter (its own requests), auditor |
//! | RequestService | ListExceptions | any authenticated principal |
//! | DataProtectionService | CheckSuppression | submitter, operator, auditor |
//! | DataProtectionService | RemoveSuppression | operator |
//! | DataProtectionService | ResealData | admin |
//! | ProcessorService | GetProcessor, ListProcessors | auditor, admin |
//! | ProcessorService | RegisterProcessor, UpdateProcessor, DisableProcessor, RotateCallbackToken, RotateWebhookSecret | admin |
//! | ProcessorService | CloseCircuitBreaker | operator, admin |
//! | InstructionService | AcknowledgeInstruction, CompleteInstruction, PullInstructions, UploadDataRecords | processors (callback token) |
//! | InstructionService | ListInstructions | auditor, operator |
//! | InstructionService | RetryInstruction, ResolveInstruction | operator |
//! | HTTP callback API | `POST /v1/instructions/...` | processors (callback token; refused by the service, in JSON) |
//! | OpenDSR callbacks | `POST /opendsr/callbacks/...` | OpenDSR processors (their signature, checked by the service) |
//! | grpc.health.v1.Health | Check, Watch | anyone, without credentials |
//! | server reflection | ServerReflectionInfo | any authenticated principal |
//!
//! Operators read requests because they act on them (cancelling one,
//! resolving its instructions); admins read processors because they
//! change them. A principal with several roles may call what any of them
//! allows, and acts in each call with the roles that allow it ([`acting`]):
//! a submitter who is also an auditor cancels only its own requests
//! (auditors do not cancel), and a submitter who is also an operator gets
//! the access reports of its own requests only (operators get none). On a
//! server that authenticates no one, every method but the processors' is
//! open.

use super::{Caller, Role};

/// Who may call one method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allowed {
    /// Principals with one of these roles.
    Roles(&'static [Role]),
    /// Processors, by their callback tokens.
    Processors,
    /// Any authenticated principal.
    AnyPrincipal,
    /// Anyone, with or without credentials.
    Anyone,
}

use Role::{Admin, Auditor, Operator, Submitter};

const READERS: &[Role] = &[Submitter, Auditor, Operator];

/// Every method and who may call it.
pub const TABLE: &[(&str, Allowed)] = &[
    (
        "/dsr.v1.RequestService/SubmitRequest",
        Allowed::Roles(&[Submitter]),
    ),
    ("/dsr.v1.RequestService/GetRequest", Allowed::Roles(READERS)),
    (
        "/dsr.v1.RequestService/ListRequests",
        Allowed::Roles(READERS),
    ),
    (
        "/dsr.v1.RequestService/WatchRequest",
        Allowed::Roles(READERS),
    ),
    (
        "/dsr.v1.RequestService/GetCompletionRecord",
        Allowed::Roles(READERS),
    ),
    (
        "/dsr.v1.RequestService/GetAccessReport",
        Allowed::Roles(&[Submitter, Auditor]),
    ),
    (
        "/dsr.v1.RequestService/ExportAccessData",
        Allowed::Roles(&[Submitter, Auditor]),
    ),
    (
        "/dsr.v1.RequestService/CancelRequest",
        Allowed::Roles(&[Submitter, Operator]),
    ),
    (
        "/dsr.v1.RequestService/ConfirmReceipt",
        Allowed::Roles(&[Submitter, Operator]),
    ),
    (
        "/dsr.v1.RequestService/ExtendDeadline",
        Allowed::Roles(&[Submitter, Operator]),
    ),
    (
        "/dsr.v1.RequestService/ListExceptions",
        Allowed::AnyPrincipal,
    ),
    (
        "/dsr.v1.RequestService/VerifyAuditTrail",
        Allowed::Roles(&[Auditor, Operator]),
    ),
    (
        "/dsr.v1.DataProtectionService/CheckSuppression",
        Allowed::Roles(READERS),
    ),
    (
        "/dsr.v1.DataProtectionService/RemoveSuppression",
        Allowed::Roles(&[Operator]),
    ),
    (
        "/dsr.v1.DataProtectionService/ResealData",
        Allowed::Roles(&[Admin]),
    ),
    (
        "/dsr.v1.ProcessorService/GetProcessor",
        Allowed::Roles(&[Auditor, Admin]),
    ),
    (
        "/dsr.v1.ProcessorService/ListProcessors",
        Allowed::Roles(&[Auditor, Admin]),
    ),
    (
        "/dsr.v1.ProcessorService/RegisterProcessor",
        Allowed::Roles(&[Admin]),
    ),
    (
        "/dsr.v1.ProcessorService/UpdateProcessor",
        Allowed::Roles(&[Admin]),
    ),
    (
        "/dsr.v1.ProcessorService/DisableProcessor",
        Allowed::Roles(&[Admin]),
    ),
    (
        "/dsr.v1.ProcessorService/RotateCallbackToken",
        Allowed::Roles(&[Admin]),
    ),
    (
        "/dsr.v1.ProcessorService/RotateWebhookSecret",
        Allowed::Roles(&[Admin]),
    ),
    (
        "/dsr.v1.ProcessorService/CloseCircuitBreaker",
        Allowed::Roles(&[Operator, Admin]),
    ),
    (
        "/dsr.v1.InstructionService/AcknowledgeInstruction",
        Allowed::Processors,
    ),
    (
        "/dsr.v1.InstructionService/CompleteInstruction",
        Allowed::Processors,
    ),
    (
        "/dsr.v1.InstructionService/PullInstructions",
        Allowed::Processors,
    ),
    (
        "/dsr.v1.InstructionService/UploadDataRecords",
        Allowed::Processors,
    ),
    (
        "/dsr.v1.InstructionService/ListInstructions",
        Allowed::Roles(&[Auditor, Operator]),
    ),
    (
        "/dsr.v1.InstructionService/RetryInstruction",
        Allowed::Roles(&[Operator]),
    ),
    (
        "/dsr.v1.InstructionService/ResolveInstruction",
        Allowed::Roles(&[Operator]),
    ),
    ("/grpc.health.v1.Health/Check", Allowed::Anyone),
    ("/grpc.health.v1.Health/Watch", Allowed::Anyone),
    (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        Allowed::AnyPrincipal,
    ),
    (
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        Allowed::AnyPrincipal,
    ),
];

/// Where the paths of the HTTP callback API begin: processors only, like
/// the gRPC methods they stand for.
pub const HTTP_CALLBACK_PREFIX: &str = "/v1/instructions/";

/// Where the OpenDSR status callbacks are: open at this layer, each
/// verified by its processor's signature (see `crate::api::opendsr`).
pub const OPENDSR_CALLBACK_PREFIX: &str = "/opendsr/callbacks/";

/// The methods whose calls may outlive their credential (a watch stays
/// open for days): their streams ask again while they run (see
/// [`super::recheck::Recheck`]).
const RECHECKED: &[&str] = &["/dsr.v1.RequestService/WatchRequest"];

/// Whether calls of the method at `path` check their credential again
/// while they run.
pub fn rechecked(path: &str) -> bool {
    RECHECKED.contains(&path)
}

/// Who may call the method at `path`; `None` for a path not served.
pub fn allowed(path: &str) -> Option<Allowed> {
    TABLE.iter().find(|(p, _)| *p == path).map(|(_, a)| *a)
}

/// Why a processor method refuses a call without a callback token.
pub const NO_CALLBACK_TOKEN: &str = "missing `authorization: Bearer <callback_token>` metadata";

/// Why a processor method refuses a principal.
pub const PROCESSORS_ONLY: &str = "only processors, with their callback tokens, call this method";

/// The answer to a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Go on.
    Allow,
    /// `UNAUTHENTICATED`: no valid credential for a method that needs one.
    Unauthenticated(&'static str),
    /// `PERMISSION_DENIED`: a valid credential without the right.
    Denied(&'static str),
}

/// Whether `caller` may call a method `allowed` to some; `open` when the
/// server authenticates no one.
pub fn decide(allowed: Allowed, caller: Option<&Caller>, open: bool) -> Decision {
    use Decision::*;
    match (allowed, caller) {
        (Allowed::Anyone, _) => Allow,
        (Allowed::Processors, Some(Caller::Processor(_))) => Allow,
        (Allowed::Processors, None | Some(Caller::Anonymous)) => Unauthenticated(NO_CALLBACK_TOKEN),
        (Allowed::Processors, Some(Caller::Principal(_))) => Denied(PROCESSORS_ONLY),
        (_, Some(Caller::Processor(_))) => {
            Denied("a processor's callback token serves only the processor methods")
        }
        (_, Some(Caller::Anonymous)) if open => Allow,
        (_, None | Some(Caller::Anonymous)) => {
            Unauthenticated("this method needs credentials: a bearer token or a client certificate")
        }
        (Allowed::AnyPrincipal, Some(Caller::Principal(_))) => Allow,
        (Allowed::Roles(roles), Some(Caller::Principal(p))) => {
            if roles.iter().any(|r| p.roles.contains(r)) {
                Allow
            } else {
                Denied("the caller's roles do not allow this method")
            }
        }
    }
}

/// `caller` as it acts in a call of a method `allowed` to some roles:
/// with only those of its roles. What a principal sees and changes in the
/// call (every request, or only those it submitted) follows from them,
/// not from a role the method does not admit.
pub fn acting(allowed: Allowed, caller: Caller) -> Caller {
    match (allowed, caller) {
        (Allowed::Roles(roles), Caller::Principal(mut p)) => {
            p.roles.retain(|r| roles.contains(r));
            Caller::Principal(p)
        }
        (_, caller) => caller,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::auth::Principal;
    use crate::domain::{PrincipalName, ProcessorId};

    #[test]
    fn the_rechecked_methods_are_served() {
        for path in RECHECKED {
            assert!(allowed(path).is_some(), "{path} is not in the table");
        }
    }

    fn principal(roles: &[Role]) -> Caller {
        Caller::Principal(Principal {
            name: PrincipalName::parse("p").unwrap(),
            roles: roles.iter().copied().collect::<BTreeSet<_>>(),
        })
    }

    #[test]
    fn each_kind_of_caller_gets_its_answer() {
        let submit = allowed("/dsr.v1.RequestService/SubmitRequest").unwrap();
        assert_eq!(
            decide(submit, Some(&principal(&[Submitter])), false),
            Decision::Allow
        );
        assert!(matches!(
            decide(submit, Some(&principal(&[Auditor])), false),
            Decision::Denied(_)
        ));
        assert!(matches!(
            decide(submit, None, false),
            Decision::Unauthenticated(_)
        ));
        assert_eq!(
            decide(submit, Some(&Caller::Anonymous), true),
            Decision::Allow
        );
        let processor = Caller::Processor(ProcessorId::parse("vendor").unwrap());
        assert!(matches!(
            decide(submit, Some(&processor), true),
            Decision::Denied(_)
        ));
        let pull = allowed("/dsr.v1.InstructionService/PullInstructions").unwrap();
        assert_eq!(decide(pull, Some(&processor), false), Decision::Allow);
        assert!(matches!(
            decide(pull, Some(&Caller::Anonymous), true),
            Decision::Unauthenticated(_)
        ));
        assert_eq!(
            decide(
                allowed("/grpc.health.v1.Health/Check").unwrap(),
                None,
                false
            ),
            Decision::Allow
        );
        assert!(allowed("/dsr.v1.RequestService/Nope").is_none());
    }
}
