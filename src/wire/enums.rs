//! Enum mapping. On the wire an enum is an `i32` whose zero is
//! `..._UNSPECIFIED` and which may hold numbers this build does not know;
//! the domain enums have neither. Each pair is declared once in a table
//! below, which gives the infallible `From<domain> for pb` impl and the
//! checked inbound decoding.
//!
//! Inbound, a required field rejects zero with "is required" and an unknown
//! number with "must be one of ..." (listing the protobuf names); a filter
//! field reads zero as "no filter".

use crate::domain::{self, InstructionState, Jurisdiction, RequestKind, RequestStatus, Violations};
use crate::pb;
use crate::store::{InstructionOrder, RequestOrder};

/// A domain enum with a protobuf counterpart whose zero means "not set".
pub(super) trait ProtoEnum: Copy + Sized + 'static {
    /// Every domain value, in the domain's order.
    const VALUES: &'static [Self];
    /// The wire number.
    fn number(self) -> i32;
    /// The protobuf name, e.g. `REQUEST_KIND_DELETE`.
    fn proto_name(self) -> &'static str;

    /// The domain value of a wire number; `None` for zero and unknowns.
    fn from_number(n: i32) -> Option<Self> {
        Self::VALUES.iter().copied().find(|v| v.number() == n)
    }
}

/// Declares a domain <-> protobuf enum pair. The outbound `match` is
/// exhaustive, so a domain variant without a wire value fails to compile.
macro_rules! proto_enum {
    ($d:ident <=> $p:ident { $($dv:ident <=> $pv:ident),+ $(,)? }) => {
        impl From<domain::$d> for pb::$p {
            fn from(value: domain::$d) -> Self {
                match value {
                    $(domain::$d::$dv => pb::$p::$pv),+
                }
            }
        }

        impl ProtoEnum for domain::$d {
            const VALUES: &'static [Self] = &[$(domain::$d::$dv),+];
            fn number(self) -> i32 {
                pb::$p::from(self) as i32
            }
            fn proto_name(self) -> &'static str {
                pb::$p::from(self).as_str_name()
            }
        }
    };
    // Same type and variant names on both sides.
    ($t:ident { $($v:ident),+ $(,)? }) => {
        proto_enum!($t <=> $t { $($v <=> $v),+ });
    };
}

proto_enum!(RequestKind {
    Access,
    Delete,
    Portability,
    Correct,
    Object,
    WithdrawConsent
});
proto_enum!(Jurisdiction {
    Ccpa,
    Gdpr,
    Appi,
    Other
});
proto_enum!(IdentityType {
    Email,
    Name,
    PostalAddress,
    Phone,
    IpAddress,
    AccountId,
    DeviceId,
    Other,
});
proto_enum!(Requester <=> Requester {
    SelfRequest <=> Self_,
    AuthorizedAgent <=> AuthorizedAgent,
    ParentOrGuardian <=> ParentOrGuardian,
});
proto_enum!(VerificationLevel {
    None,
    Reasonable,
    ReasonablyHigh
});
proto_enum!(ProcessorRole {
    GroupCompany,
    Vendor,
    Distributor,
    ServiceProvider,
    Contractor,
    InternalSystem,
});
proto_enum!(ProcessorStatus { Active, Disabled });
proto_enum!(Outcome {
    Completed,
    NoData,
    Denied,
    Failed
});
proto_enum!(DeletionException {
    CcpaCompleteTransaction,
    CcpaSecurityIntegrity,
    CcpaDebugging,
    CcpaFreeSpeech,
    CcpaCalecpa,
    CcpaResearch,
    CcpaInternalUses,
    CcpaLegalObligation,
    GdprFreedomOfExpression,
    GdprLegalObligation,
    GdprPublicHealth,
    GdprArchivingResearch,
    GdprLegalClaims,
    AppiDifficultAlternativeMeasures,
    AppiConditionsNotMet,
    Other,
});
proto_enum!(InstructionState {
    Pending,
    Delivering,
    Acknowledged,
    Completed,
    NoData,
    Denied,
    Failed,
    Cancelled,
    Escalated,
});
proto_enum!(RequestStatus {
    Received,
    InProgress,
    Completed,
    Cancelled
});
proto_enum!(OverallOutcome {
    Fulfilled,
    PartiallyFulfilled,
    NotFulfilled,
    Cancelled,
    DeniedUnverified,
});
proto_enum!(AccessScope {
    Categories,
    SpecificPieces
});

/// "must be one of A, B, C".
fn one_of<T: ProtoEnum>() -> String {
    let names: Vec<_> = T::VALUES.iter().map(|v| v.proto_name()).collect();
    format!("must be one of {}", names.join(", "))
}

/// A required enum field (path relative to the field itself).
pub(super) fn required<T: ProtoEnum>(n: i32) -> Result<T, Violations> {
    match T::from_number(n) {
        Some(value) => Ok(value),
        None if n == 0 => Err(Violations::one("", "is required")),
        None => Err(Violations::one("", one_of::<T>())),
    }
}

/// An enum field where zero means "none": list filters, a result's
/// deletion exception.
pub(super) fn optional<T: ProtoEnum>(n: i32) -> Result<Option<T>, Violations> {
    match T::from_number(n) {
        Some(value) => Ok(Some(value)),
        None if n == 0 => Ok(None),
        None => Err(Violations::one("", one_of::<T>())),
    }
}

/// A repeated enum field; each bad element is reported as `[i]`.
pub(super) fn required_each<T: ProtoEnum>(ns: &[i32]) -> Result<Vec<T>, Violations> {
    let mut v = Violations::new();
    let values: Vec<_> = ns
        .iter()
        .enumerate()
        .filter_map(|(i, &n)| v.take(&format!("[{i}]"), required(n)))
        .collect();
    v.finish(|| values)
}

/// Wire numbers of a list of domain values.
pub(super) fn numbers<T: ProtoEnum>(values: &[T]) -> Vec<i32> {
    values.iter().map(|v| v.number()).collect()
}

/// The wire form of a request status.
pub fn request_status_pb(s: RequestStatus) -> pb::RequestStatus {
    s.into()
}

/// The wire form of an instruction state.
pub fn instruction_state_pb(s: InstructionState) -> pb::InstructionState {
    s.into()
}

/// The `state` filter of `ListInstructions`: unspecified means any state.
/// Like every enum decoder here, it reports at the empty path; the caller
/// prefixes the field name with `Violations::take`.
pub fn instruction_state(n: i32) -> Result<Option<InstructionState>, Violations> {
    optional(n)
}

/// The `status` filter of `ListRequests`: unspecified means any status.
/// Reports at the empty path.
pub fn request_status(n: i32) -> Result<Option<RequestStatus>, Violations> {
    optional(n)
}

/// `ListRequests`' `order_by`: unspecified means newest first.
pub fn request_order(n: i32) -> Result<RequestOrder, Violations> {
    match pb::RequestOrder::try_from(n) {
        Ok(pb::RequestOrder::Unspecified | pb::RequestOrder::Newest) => Ok(RequestOrder::Newest),
        Ok(pb::RequestOrder::Deadline) => Ok(RequestOrder::Deadline),
        Err(_) => Err(Violations::one(
            "",
            "must be one of REQUEST_ORDER_NEWEST, REQUEST_ORDER_DEADLINE",
        )),
    }
}

/// `ListInstructions`' `order_by`: unspecified means oldest first.
pub fn instruction_order(n: i32) -> Result<InstructionOrder, Violations> {
    match pb::InstructionOrder::try_from(n) {
        Ok(pb::InstructionOrder::Unspecified | pb::InstructionOrder::Created) => {
            Ok(InstructionOrder::Created)
        }
        Ok(pb::InstructionOrder::Due) => Ok(InstructionOrder::Due),
        Err(_) => Err(Violations::one(
            "",
            "must be one of INSTRUCTION_ORDER_CREATED, INSTRUCTION_ORDER_DUE",
        )),
    }
}

/// The `kind` filter of `ListRequests`: unspecified means any kind. Reports
/// at the empty path.
pub fn request_kind_filter(n: i32) -> Result<Option<RequestKind>, Violations> {
    optional(n)
}

/// The `jurisdiction` filter of `ListRequests`: unspecified means any
/// regime. Reports at the empty path.
pub fn jurisdiction_filter(n: i32) -> Result<Option<Jurisdiction>, Violations> {
    optional(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DeletionException, IdentityType, Requester};

    /// Every domain value survives the round trip through its wire number,
    /// and no two share a number.
    fn round_trips<T: ProtoEnum + PartialEq + std::fmt::Debug>() {
        for &value in T::VALUES {
            assert_ne!(value.number(), 0, "{value:?} maps to UNSPECIFIED");
            assert_eq!(T::from_number(value.number()), Some(value));
        }
    }

    #[test]
    fn every_pair_round_trips() {
        round_trips::<RequestKind>();
        round_trips::<Jurisdiction>();
        round_trips::<IdentityType>();
        round_trips::<Requester>();
        round_trips::<domain::VerificationLevel>();
        round_trips::<domain::ProcessorRole>();
        round_trips::<domain::ProcessorStatus>();
        round_trips::<domain::Outcome>();
        round_trips::<DeletionException>();
        round_trips::<InstructionState>();
        round_trips::<RequestStatus>();
        round_trips::<domain::OverallOutcome>();
    }

    #[test]
    fn covers_every_domain_value() {
        assert_eq!(<RequestKind as ProtoEnum>::VALUES, RequestKind::ALL);
        assert_eq!(<IdentityType as ProtoEnum>::VALUES, IdentityType::ALL);
        assert_eq!(
            <DeletionException as ProtoEnum>::VALUES,
            DeletionException::ALL
        );
        assert_eq!(
            <InstructionState as ProtoEnum>::VALUES,
            InstructionState::ALL
        );
    }

    #[test]
    fn required_fields_reject_zero_and_unknowns() {
        assert_eq!(required::<Requester>(1), Ok(Requester::SelfRequest));
        let missing = required::<Requester>(0).unwrap_err();
        assert_eq!(missing.to_string(), ": is required");
        let unknown = required::<Requester>(42).unwrap_err();
        assert_eq!(
            unknown.to_string(),
            ": must be one of REQUESTER_SELF, REQUESTER_AUTHORIZED_AGENT, \
             REQUESTER_PARENT_OR_GUARDIAN"
        );
    }

    #[test]
    fn lists_report_each_bad_element() {
        let r = required_each::<RequestKind>(&[2, 0, 1, 77]);
        assert_eq!(super::super::fields(r), ["[1]", "[3]"]);
    }

    #[test]
    fn filters_read_zero_as_none() {
        assert_eq!(instruction_state(0), Ok(None));
        assert_eq!(instruction_state(9), Ok(Some(InstructionState::Escalated)));
        assert_eq!(request_status(2), Ok(Some(RequestStatus::InProgress)));
        assert_eq!(request_kind_filter(0), Ok(None));
        assert_eq!(jurisdiction_filter(3), Ok(Some(Jurisdiction::Appi)));
        let mut v = Violations::new();
        v.take("state", instruction_state(10));
        v.take("status", request_status(-1));
        v.take("kind", request_kind_filter(7));
        v.take("jurisdiction", jurisdiction_filter(5));
        let fields: Vec<_> = v.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["state", "status", "kind", "jurisdiction"]);
        assert!(
            v.iter()
                .all(|v| v.description.starts_with("must be one of "))
        );
    }
}
