//! The fan-out: which processors a request is sent to. Pure: intake plans
//! each batch with it against its copy of the processor registry.
//!
//! A request that names processors goes to exactly those, and each must
//! exist, be active, handle the request's kind and accept one of the
//! subject's identity types (each failure is a field violation under
//! `processor_ids[i]`). A request that names none goes to every active
//! processor that can take it, which may be none: such a request is
//! recorded at once as having matched no processor.

use super::{NewRequest, Processor, ProcessorStatus, Violations};

/// The processors `req` fans out to, among `processors` (the whole
/// registry): the ones it names, each checked, or every active one that
/// handles its kind and accepts one of the subject's identity types.
pub fn fan_out<'a>(
    req: &NewRequest,
    processors: &'a [Processor],
) -> Result<Vec<&'a Processor>, Violations> {
    let types = req.subject.types();
    if req.processor_ids.is_empty() {
        return Ok(processors
            .iter()
            .filter(|p| p.status == ProcessorStatus::Active && p.spec.can_take(req.kind, &types))
            .collect());
    }
    let mut v = Violations::new();
    let mut chosen = Vec::new();
    for (i, id) in req.processor_ids.iter().enumerate() {
        let field = format!("processor_ids[{i}]");
        match processors.iter().find(|p| &p.spec.id == id) {
            None => v.add(field, "no processor with this id is registered"),
            Some(p) if p.status != ProcessorStatus::Active => {
                v.add(field, "the processor is disabled")
            }
            Some(p) if !p.spec.supported_kinds.contains(&req.kind) => v.add(
                field,
                format!("the processor does not handle {} requests", req.kind),
            ),
            Some(p) if !p.spec.can_take(req.kind, &types) => v.add(
                field,
                "the processor accepts none of the subject's identity types",
            ),
            Some(p) => chosen.push(p),
        }
    }
    v.finish(|| chosen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        AdapterConfig, Channel, IdentityType, Jurisdiction, Labels, ProcessorId, ProcessorRole,
        ProcessorSpec, RequestId, RequestKind, Requester, RetryPolicy, Subject, SubjectIdentity,
        Verification, VerificationLevel,
    };

    fn processor(
        id: &str,
        kinds: &[RequestKind],
        types: &[IdentityType],
        active: bool,
    ) -> Processor {
        let spec = ProcessorSpec::new(
            ProcessorId::parse(id).unwrap(),
            id,
            ProcessorRole::Vendor,
            "JP",
            kinds.to_vec(),
            types.to_vec(),
            AdapterConfig::Pull,
            RetryPolicy::default(),
            None,
            None,
            None,
            crate::domain::DeliveryLimits::default(),
            None,
        )
        .unwrap();
        let at = chrono::DateTime::from_timestamp(0, 0).unwrap();
        Processor {
            spec,
            status: if active {
                ProcessorStatus::Active
            } else {
                ProcessorStatus::Disabled
            },
            created_at: at,
            updated_at: at,
            updated_by: None,
        }
    }

    fn request(kind: RequestKind, named: &[&str]) -> NewRequest {
        NewRequest {
            id: RequestId::parse("6f1c2b1e-3a4d-4c5e-9f60-718293a4b5c6").unwrap(),
            kind,
            jurisdiction: Jurisdiction::Ccpa,
            subject: Subject::new(vec![
                SubjectIdentity::new(IdentityType::Email, "a@example.com").unwrap(),
            ])
            .unwrap(),
            submitted_at: None,
            channel: Channel::parse("web_form").unwrap(),
            requester: Requester::SelfRequest,
            verification: Verification::new(VerificationLevel::Reasonable, "").unwrap(),
            processor_ids: named
                .iter()
                .map(|p| ProcessorId::parse(p).unwrap())
                .collect(),
            labels: Labels::default(),
            access_scope: None,
            requester_evidence: None,
            lookback_start: None,
        }
    }

    fn ids(chosen: Vec<&Processor>) -> Vec<&str> {
        chosen.iter().map(|p| p.spec.id.as_str()).collect()
    }

    #[test]
    fn unnamed_requests_go_to_every_active_processor_that_can_take_them() {
        use IdentityType::{AccountId, Email};
        use RequestKind::{Access, Delete};
        let registry = [
            processor("all", &[Delete, Access], &[Email], true),
            processor("access-only", &[Access], &[Email], true),
            processor("accounts", &[Delete], &[AccountId], true),
            processor("disabled", &[Delete], &[Email], false),
        ];
        let chosen = fan_out(&request(Delete, &[]), &registry).unwrap();
        assert_eq!(ids(chosen), ["all"]);
        let chosen = fan_out(&request(Access, &[]), &registry).unwrap();
        assert_eq!(ids(chosen), ["all", "access-only"]);
        assert!(
            fan_out(&request(Delete, &[]), &registry[1..3])
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn named_processors_are_each_checked() {
        use IdentityType::{AccountId, Email};
        use RequestKind::{Access, Delete};
        let registry = [
            processor("all", &[Delete, Access], &[Email], true),
            processor("access-only", &[Access], &[Email], true),
            processor("accounts", &[Delete], &[AccountId], true),
            processor("disabled", &[Delete], &[Email], false),
        ];
        let chosen = fan_out(&request(Delete, &["all"]), &registry).unwrap();
        assert_eq!(ids(chosen), ["all"]);
        let err = fan_out(
            &request(
                Delete,
                &["all", "nobody", "disabled", "access-only", "accounts"],
            ),
            &registry,
        )
        .unwrap_err();
        let found: Vec<_> = err
            .iter()
            .map(|v| (v.field.as_str(), v.description.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (
                    "processor_ids[1]",
                    "no processor with this id is registered"
                ),
                ("processor_ids[2]", "the processor is disabled"),
                (
                    "processor_ids[3]",
                    "the processor does not handle DELETE requests"
                ),
                (
                    "processor_ids[4]",
                    "the processor accepts none of the subject's identity types"
                ),
            ]
        );
    }
}
