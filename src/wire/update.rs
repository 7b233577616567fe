//! `UpdateProcessor`'s field mask (AIP-134): the stored spec is turned back
//! into a message, the fields the mask names are copied over from the
//! patch, and the result goes through the same checks as a registration.
//! Re-validating the whole merged message rather than the changed fields
//! alone is what catches cross-field breakage, such as a new
//! `initial_backoff` above the kept `max_backoff`.
//!
//! A masked field that is unset in the patch is reset to its default, as
//! AIP-134 prescribes. Only top-level fields can be named; `processor_id`
//! and the output-only fields cannot, and none twice.

use prost_types::FieldMask;

use super::processor::{processor_spec, spec_pb};
use crate::domain::{ProcessorSpec, Violations};
use crate::pb;

/// A field of `Processor` an update may change.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    DisplayName,
    Role,
    Country,
    SupportedKinds,
    AcceptedIdentityTypes,
    Adapter,
    RetryPolicy,
    AckTimeout,
    CompletionTimeout,
    MaxReminders,
    MaxInFlight,
    MaxDeliveriesPerSecond,
    SafetyMargin,
}

impl Field {
    const ALL: [(Field, &'static str); 13] = [
        (Field::DisplayName, "display_name"),
        (Field::Role, "role"),
        (Field::Country, "country"),
        (Field::SupportedKinds, "supported_kinds"),
        (Field::AcceptedIdentityTypes, "accepted_identity_types"),
        (Field::Adapter, "adapter"),
        (Field::RetryPolicy, "retry_policy"),
        (Field::AckTimeout, "ack_timeout"),
        (Field::CompletionTimeout, "completion_timeout"),
        (Field::MaxReminders, "max_reminders"),
        (Field::MaxInFlight, "max_in_flight"),
        (Field::MaxDeliveriesPerSecond, "max_deliveries_per_second"),
        (Field::SafetyMargin, "safety_margin"),
    ];

    fn parse(path: &str) -> Result<Field, Violations> {
        if let Some(&(field, _)) = Self::ALL.iter().find(|(_, name)| *name == path) {
            return Ok(field);
        }
        let why = match path {
            "processor_id" => "processor_id cannot be changed".to_string(),
            "status" | "created_at" | "updated_at" => format!("{path} is output only"),
            _ => {
                let names: Vec<_> = Self::ALL.iter().map(|(_, name)| *name).collect();
                format!("must be one of {}", names.join(", "))
            }
        };
        Err(Violations::one("", why))
    }

    /// Copies this field from `patch` into `merged`.
    fn copy(self, patch: &pb::Processor, merged: &mut pb::Processor) {
        match self {
            Field::DisplayName => merged.display_name.clone_from(&patch.display_name),
            Field::Role => merged.role = patch.role,
            Field::Country => merged.country.clone_from(&patch.country),
            Field::SupportedKinds => merged.supported_kinds.clone_from(&patch.supported_kinds),
            Field::AcceptedIdentityTypes => merged
                .accepted_identity_types
                .clone_from(&patch.accepted_identity_types),
            Field::Adapter => merged.adapter.clone_from(&patch.adapter),
            Field::RetryPolicy => merged.retry_policy.clone_from(&patch.retry_policy),
            Field::AckTimeout => merged.ack_timeout = patch.ack_timeout,
            Field::CompletionTimeout => merged.completion_timeout = patch.completion_timeout,
            Field::MaxReminders => merged.max_reminders = patch.max_reminders,
            Field::MaxInFlight => merged.max_in_flight = patch.max_in_flight,
            Field::MaxDeliveriesPerSecond => {
                merged.max_deliveries_per_second = patch.max_deliveries_per_second
            }
            Field::SafetyMargin => merged.safety_margin = patch.safety_margin,
        }
    }
}

/// Applies an `UpdateProcessor` patch to the stored spec. The mask is
/// required and reported under `update_mask` / `update_mask.paths[i]`;
/// problems of the merged processor under `processor.`. The patch's
/// `processor_id` may be empty or must name `current`.
pub fn apply_update(
    current: &ProcessorSpec,
    patch: Option<pb::Processor>,
    mask: Option<FieldMask>,
) -> Result<ProcessorSpec, Violations> {
    let mut v = Violations::new();
    let fields = v.take("update_mask", mask_fields(mask));
    let patch = match patch {
        None => {
            v.add("processor", "is required");
            None
        }
        Some(p) if !p.processor_id.is_empty() && p.processor_id != current.id.as_str() => {
            v.add(
                "processor.processor_id",
                "must be empty or the id of the processor being updated",
            );
            None
        }
        Some(p) => Some(p),
    };
    let (Some(fields), Some(patch)) = (fields, patch) else {
        return Err(v);
    };

    let mut merged = spec_pb(current);
    for field in &fields {
        field.copy(&patch, &mut merged);
    }
    processor_spec(Some(merged))
}

/// The named fields; paths like `paths[2]`.
fn mask_fields(mask: Option<FieldMask>) -> Result<Vec<Field>, Violations> {
    let paths = mask.map(|m| m.paths).unwrap_or_default();
    if paths.is_empty() {
        return Err(Violations::one(
            "",
            "is required and must name at least one field",
        ));
    }
    let mut v = Violations::new();
    let mut fields = Vec::with_capacity(paths.len());
    for (i, path) in paths.iter().enumerate() {
        let Some(field) = v.take(&format!("paths[{i}]"), Field::parse(path)) else {
            continue;
        };
        if fields.contains(&field) {
            v.add(format!("paths[{i}]"), format!("names {path} a second time"));
        } else {
            fields.push(field);
        }
    }
    v.finish(|| fields)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::ProcessorRole;
    use crate::wire::fields;
    use crate::wire::processor::tests::valid;

    fn current() -> ProcessorSpec {
        processor_spec(Some(valid())).unwrap()
    }

    fn mask(paths: &[&str]) -> Option<FieldMask> {
        Some(FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        })
    }

    #[test]
    fn only_masked_fields_change() {
        let patch = pb::Processor {
            display_name: "Renamed".into(),
            role: pb::ProcessorRole::Contractor as i32,
            country: "JP".into(),
            ..Default::default()
        };
        let updated =
            apply_update(&current(), Some(patch), mask(&["display_name", "role"])).unwrap();
        assert_eq!(updated.display_name, "Renamed");
        assert_eq!(updated.role, ProcessorRole::Contractor);
        assert_eq!(updated.country, "US", "not in the mask");
        assert_eq!(
            ProcessorSpec {
                display_name: current().display_name,
                role: current().role,
                ..updated
            },
            current()
        );
    }

    #[test]
    fn a_masked_but_unset_field_is_reset_to_its_default() {
        let mut current = current();
        current.ack_timeout = Duration::from_secs(60);
        let updated = apply_update(
            &current,
            Some(pb::Processor::default()),
            mask(&["ack_timeout"]),
        )
        .unwrap();
        assert_eq!(updated.ack_timeout, Duration::from_secs(300));
    }

    #[test]
    fn a_masked_zero_max_in_flight_makes_the_limit_adaptive() {
        let fixed = pb::Processor {
            max_in_flight: 40,
            ..Default::default()
        };
        let updated = apply_update(&current(), Some(fixed), mask(&["max_in_flight"])).unwrap();
        assert_eq!(updated.max_in_flight, Some(40));
        let adaptive = apply_update(
            &updated,
            Some(pb::Processor::default()),
            mask(&["max_in_flight"]),
        )
        .unwrap();
        assert_eq!(adaptive.max_in_flight, None);
    }

    #[test]
    fn zero_reminders_survive_an_unrelated_update() {
        let mut current = current();
        current.max_reminders = 0;
        let patch = pb::Processor {
            max_in_flight: 4,
            ..Default::default()
        };
        let updated = apply_update(&current, Some(patch), mask(&["max_in_flight"])).unwrap();
        assert_eq!((updated.max_reminders, updated.max_in_flight), (0, Some(4)));
    }

    #[test]
    fn bad_updates_report_their_paths() {
        let some = |p: pb::Processor| Some(p);
        let cases: Vec<(Option<pb::Processor>, Option<FieldMask>, &[&str])> = vec![
            (some(valid()), None, &["update_mask"]),
            (some(valid()), mask(&[]), &["update_mask"]),
            (
                some(valid()),
                mask(&[
                    "display_name",
                    "processor_id",
                    "status",
                    "adapter.grpc",
                    "nope",
                ]),
                &[
                    "update_mask.paths[1]",
                    "update_mask.paths[2]",
                    "update_mask.paths[3]",
                    "update_mask.paths[4]",
                ],
            ),
            (None, mask(&["country"]), &["processor"]),
            (
                some(pb::Processor {
                    processor_id: "other-vendor".into(),
                    ..valid()
                }),
                mask(&["country"]),
                &["processor.processor_id"],
            ),
            (
                some(pb::Processor::default()),
                mask(&["country", "adapter", "supported_kinds"]),
                // Parse failures first, then the constructor's checks.
                &[
                    "processor.adapter",
                    "processor.country",
                    "processor.supported_kinds",
                ],
            ),
            (
                some(pb::Processor {
                    retry_policy: Some(pb::RetryPolicy {
                        initial_backoff: Some(prost_types::Duration {
                            seconds: 600,
                            nanos: 0,
                        }),
                        ..Default::default()
                    }),
                    ..valid()
                }),
                mask(&["retry_policy"]),
                &["processor.retry_policy.max_backoff"],
            ),
        ];
        for (patch, mask, expected) in cases {
            assert_eq!(fields(apply_update(&current(), patch, mask)), expected);
        }
    }
}
