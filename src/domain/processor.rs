//! Processors: everyone who holds personal data on the business's behalf and
//! must therefore be instructed (CCPA 1798.105(c), GDPR Art. 19). A
//! [`ProcessorSpec`] is what an operator declares; a [`Processor`] is what is
//! stored, with its status and timestamps.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::country::{COUNTRY_RULE, is_country_code};
use super::violation::check_line;
use super::{
    AdapterConfig, IdentityType, ProcessorId, ProcessorRole, RequestKind, RetryPolicy, Timestamp,
    Violations,
};

/// A processor as declared by an operator (RPC or YAML), validated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessorSpec {
    /// Slug.
    pub id: ProcessorId,
    /// Human-readable name.
    pub display_name: String,
    /// Relationship to the business.
    pub role: ProcessorRole,
    /// ISO 3166-1 alpha-2 (a cross-border transfer is recorded per line).
    pub country: String,
    /// Kinds it handles, sorted, non-empty.
    pub supported_kinds: Vec<RequestKind>,
    /// Identity types it may receive, sorted, non-empty.
    pub accepted_identity_types: Vec<IdentityType>,
    /// Delivery.
    pub adapter: AdapterConfig,
    /// Retries.
    pub retry_policy: RetryPolicy,
    /// Unacknowledged lease length (pull) before an instruction is offered again.
    #[serde(with = "millis")]
    pub ack_timeout: Duration,
    /// How long an acknowledged instruction may wait for its outcome.
    #[serde(with = "millis")]
    pub completion_timeout: Duration,
    /// Reminders before escalation.
    pub max_reminders: u32,
    /// Deliveries in flight at once, across every replica; `None`: an
    /// adaptive limit learnt from the processor's answers, at most
    /// [`MAX_ADAPTIVE_IN_FLIGHT`] (see `dispatch::concurrency`).
    #[serde(flatten, with = "in_flight")]
    pub max_in_flight: Option<u32>,
    /// Deliveries started per second across every replica (reminders
    /// included); 0 for no limit.
    #[serde(default)]
    pub max_deliveries_per_second: u32,
    /// How long before a request's deadline this processor's answer is
    /// due (see [`super::due_times`]).
    #[serde(with = "millis", default = "defaults::safety_margin")]
    pub safety_margin: Duration,
}

/// The most deliveries in flight to a processor without a `max_in_flight`,
/// across every replica.
pub const MAX_ADAPTIVE_IN_FLIGHT: u32 = 512;

/// The largest `max_in_flight` a processor may be given.
pub const MAX_IN_FLIGHT: u32 = 1000;

/// The highest `max_deliveries_per_second` a processor may be given.
pub const MAX_DELIVERIES_PER_SECOND: u32 = 100_000;

/// How much a push processor may be sent: at once and per second, counted
/// across every replica of the deployment (see `store::limits`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeliveryLimits {
    /// Deliveries in flight at once; unset: an adaptive limit.
    pub max_in_flight: Option<u32>,
    /// Deliveries started per second; 0 for no limit.
    pub max_deliveries_per_second: u32,
}

/// Defaults for the optional settings of a processor.
pub mod defaults {
    use std::time::Duration;
    /// Ack timeout.
    pub const ACK_TIMEOUT: Duration = Duration::from_secs(300);
    /// Completion timeout.
    pub const COMPLETION_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
    /// Reminders.
    pub const MAX_REMINDERS: u32 = 3;
    /// Safety margin before the request's deadline.
    pub const SAFETY_MARGIN: Duration = Duration::from_secs(7 * 24 * 3600);

    /// [`SAFETY_MARGIN`], for serde.
    pub fn safety_margin() -> Duration {
        SAFETY_MARGIN
    }
}

impl ProcessorSpec {
    /// How long an acknowledged instruction waits for its outcome before a
    /// reminder: the completion timeout, or for an adapter that polls (its
    /// reminders are its polls) the poll interval.
    pub fn reply_wait(&self) -> std::time::Duration {
        self.adapter
            .poll_interval()
            .unwrap_or(self.completion_timeout)
    }

    /// The reminders an overdue instruction gets before it escalates: for
    /// an adapter that polls (its reminders are its polls) no limit, the
    /// instruction's due time ends them.
    pub fn reminder_budget(&self) -> u32 {
        if self.adapter.poll_interval().is_some() {
            u32::MAX
        } else {
            self.max_reminders
        }
    }

    /// Checks every cross-field rule; lists are sorted and de-duplicated.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: ProcessorId,
        display_name: &str,
        role: ProcessorRole,
        country: &str,
        mut supported_kinds: Vec<RequestKind>,
        mut accepted_identity_types: Vec<IdentityType>,
        adapter: AdapterConfig,
        retry_policy: RetryPolicy,
        ack_timeout: Option<Duration>,
        completion_timeout: Option<Duration>,
        max_reminders: Option<u32>,
        limits: DeliveryLimits,
        safety_margin: Option<Duration>,
    ) -> Result<Self, Violations> {
        let mut v = Violations::new();
        v.take("display_name", check_line(display_name, 1, 200));
        if !is_country_code(country) {
            v.add("country", COUNTRY_RULE);
        }
        supported_kinds.sort();
        supported_kinds.dedup();
        if supported_kinds.is_empty() {
            v.add("supported_kinds", "at least one kind is required");
        }
        accepted_identity_types.sort();
        accepted_identity_types.dedup();
        if accepted_identity_types.is_empty() {
            v.add(
                "accepted_identity_types",
                "at least one identity type is required",
            );
        }
        // OpenDSR has no request type for some kinds and no identity type
        // for some identities: such a processor cannot be sent them.
        if let Some(k) = supported_kinds.iter().find(|k| !adapter.can_say_kind(**k)) {
            v.add(
                "supported_kinds",
                format!("{k} cannot be sent over OpenDSR (ACCESS, DELETE and PORTABILITY can)"),
            );
        }
        if let Some(t) = accepted_identity_types
            .iter()
            .find(|t| !adapter.can_say_identity(**t))
        {
            v.add(
                "accepted_identity_types",
                format!("{t} cannot be sent over OpenDSR (EMAIL and ACCOUNT_ID can)"),
            );
        }
        let ack_timeout = ack_timeout.unwrap_or(defaults::ACK_TIMEOUT);
        if !(Duration::from_secs(1)..=Duration::from_secs(7 * 86400)).contains(&ack_timeout) {
            v.add("ack_timeout", "must be between 1s and 7d");
        }
        let completion_timeout = completion_timeout.unwrap_or(defaults::COMPLETION_TIMEOUT);
        if !(Duration::from_secs(1)..=Duration::from_secs(90 * 86400)).contains(&completion_timeout)
        {
            v.add("completion_timeout", "must be between 1s and 90d");
        }
        let max_reminders = max_reminders.unwrap_or(defaults::MAX_REMINDERS);
        if max_reminders > 20 {
            v.add("max_reminders", "must be at most 20");
        }
        let max_in_flight = limits.max_in_flight;
        if max_in_flight.is_some_and(|n| !(1..=MAX_IN_FLIGHT).contains(&n)) {
            v.add(
                "max_in_flight",
                format!("must be between 1 and {MAX_IN_FLIGHT}"),
            );
        }
        let max_deliveries_per_second = limits.max_deliveries_per_second;
        if max_deliveries_per_second > MAX_DELIVERIES_PER_SECOND {
            v.add(
                "max_deliveries_per_second",
                format!("must be at most {MAX_DELIVERIES_PER_SECOND} (0 for no limit)"),
            );
        }
        let safety_margin = safety_margin.unwrap_or(defaults::SAFETY_MARGIN);
        if safety_margin > Duration::from_secs(90 * 86400) {
            v.add("safety_margin", "must be between 0s and 90d");
        }
        v.finish(|| Self {
            id,
            display_name: display_name.to_string(),
            role,
            country: country.to_string(),
            supported_kinds,
            accepted_identity_types,
            adapter,
            retry_policy,
            ack_timeout,
            completion_timeout,
            max_reminders,
            max_in_flight,
            max_deliveries_per_second,
            safety_margin,
        })
    }

    /// Whether an instruction of `kind` for a subject with `types` can go
    /// to this processor: it handles the kind and accepts one of the types.
    pub fn can_take(&self, kind: RequestKind, types: &[IdentityType]) -> bool {
        self.supported_kinds.contains(&kind)
            && types
                .iter()
                .any(|t| self.accepted_identity_types.contains(t))
    }
}

/// Whether a processor receives new instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProcessorStatus {
    /// Receives new instructions.
    Active,
    /// No new instructions; in-flight ones continue.
    Disabled,
}

impl ProcessorStatus {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
            Self::Disabled => "DISABLED",
        }
    }
}

/// A stored processor.
#[derive(Clone, Debug, PartialEq)]
pub struct Processor {
    /// What was declared.
    pub spec: ProcessorSpec,
    /// Active or disabled.
    pub status: ProcessorStatus,
    /// Registration time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// Who made the last change (`None` for changes made before changes
    /// were attributed).
    pub updated_by: Option<super::Actor>,
}

/// Serialises a `Duration` as integer milliseconds.
pub(crate) mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// `max_in_flight` as stored: always a number, so that a replica of the
/// release before the adaptive limit (which requires one) still reads every
/// processor during a rolling upgrade, taking the adaptive limit's
/// ceiling as a fixed limit; `max_in_flight_adaptive` says which it is.
mod in_flight {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::MAX_ADAPTIVE_IN_FLIGHT;

    #[derive(Serialize, Deserialize)]
    struct Stored {
        max_in_flight: u32,
        #[serde(default)]
        max_in_flight_adaptive: bool,
    }

    pub fn serialize<S: Serializer>(limit: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
        Stored {
            max_in_flight: limit.unwrap_or(MAX_ADAPTIVE_IN_FLIGHT),
            max_in_flight_adaptive: limit.is_none(),
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        let stored = Stored::deserialize(d)?;
        Ok((!stored.max_in_flight_adaptive).then_some(stored.max_in_flight))
    }

    #[cfg(test)]
    mod tests {
        use serde_json::{Value, json};

        use crate::domain::{
            AdapterConfig, DeliveryLimits, IdentityType, ProcessorId, ProcessorRole, ProcessorSpec,
            RequestKind, RetryPolicy,
        };

        fn spec(max_in_flight: Option<u32>) -> ProcessorSpec {
            ProcessorSpec::new(
                ProcessorId::parse("crm").unwrap(),
                "CRM",
                ProcessorRole::Vendor,
                "JP",
                vec![RequestKind::Delete],
                vec![IdentityType::Email],
                AdapterConfig::grpc("https://crm.example:443", None, None).unwrap(),
                RetryPolicy::default(),
                None,
                None,
                None,
                DeliveryLimits {
                    max_in_flight,
                    max_deliveries_per_second: 0,
                },
                None,
            )
            .unwrap()
        }

        #[test]
        fn an_adaptive_limit_is_stored_as_its_ceiling_and_a_flag() {
            let stored: Value = serde_json::to_value(spec(None)).unwrap();
            assert_eq!(stored["max_in_flight"], json!(512));
            assert_eq!(stored["max_in_flight_adaptive"], json!(true));
            let back: ProcessorSpec = serde_json::from_value(stored).unwrap();
            assert_eq!(back.max_in_flight, None);
        }

        #[test]
        fn a_set_limit_and_one_stored_without_the_flag_are_fixed() {
            let stored: Value = serde_json::to_value(spec(Some(40))).unwrap();
            assert_eq!(stored["max_in_flight"], json!(40));
            let back: ProcessorSpec = serde_json::from_value(stored.clone()).unwrap();
            assert_eq!(back.max_in_flight, Some(40));
            let mut older = stored;
            older
                .as_object_mut()
                .unwrap()
                .remove("max_in_flight_adaptive");
            let back: ProcessorSpec = serde_json::from_value(older).unwrap();
            assert_eq!(back.max_in_flight, Some(40));
        }
    }
}
