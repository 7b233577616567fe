//! The closed vocabularies of the domain. Each enum has a stable upper-case
//! name used in SQL columns, the canonical record encoding and the YAML
//! processors file; `as_str` and `FromStr` convert both ways.

use serde::{Deserialize, Serialize};

/// Defines a closed enum with its stable string names.
macro_rules! str_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stable name of this value.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!("unknown {} {other:?}", stringify!($name))),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

str_enum! {
    /// What the data subject asked for.
    RequestKind {
        /// Right to know.
        Access = "ACCESS",
        /// Right to delete.
        Delete = "DELETE",
        /// Access in machine-readable form.
        Portability = "PORTABILITY",
        /// Correction of inaccurate data.
        Correct = "CORRECT",
        /// Objection to / restriction of processing.
        Object = "OBJECT",
        /// Withdrawal of consent.
        WithdrawConsent = "WITHDRAW_CONSENT",
    }
}

impl RequestKind {
    /// Whether processors answer this kind with data records.
    pub fn returns_data(self) -> bool {
        matches!(self, RequestKind::Access | RequestKind::Portability)
    }
}

str_enum! {
    /// The legal regime of a request.
    Jurisdiction {
        /// California.
        Ccpa = "CCPA",
        /// EU / EEA.
        Gdpr = "GDPR",
        /// Japan.
        Appi = "APPI",
        /// Anything else.
        Other = "OTHER",
    }
}

str_enum! {
    /// The kind of a subject identifier.
    IdentityType {
        /// Email address.
        Email = "EMAIL",
        /// Real name.
        Name = "NAME",
        /// Postal address.
        PostalAddress = "POSTAL_ADDRESS",
        /// Telephone number.
        Phone = "PHONE",
        /// IP address.
        IpAddress = "IP_ADDRESS",
        /// Account number.
        AccountId = "ACCOUNT_ID",
        /// Device identifier.
        DeviceId = "DEVICE_ID",
        /// Anything else.
        Other = "OTHER",
    }
}

str_enum! {
    /// Who made the request.
    Requester {
        /// The subject.
        SelfRequest = "SELF",
        /// An authorized agent.
        AuthorizedAgent = "AUTHORIZED_AGENT",
        /// A parent or guardian.
        ParentOrGuardian = "PARENT_OR_GUARDIAN",
    }
}

str_enum! {
    /// Degree of certainty of identity verification (CCPA regs 7062).
    VerificationLevel {
        /// Not verified.
        None = "NONE",
        /// Reasonable degree of certainty.
        Reasonable = "REASONABLE",
        /// Reasonably high degree of certainty.
        ReasonablyHigh = "REASONABLY_HIGH",
    }
}

str_enum! {
    /// A processor's relationship to the business.
    ProcessorRole {
        /// Same group.
        GroupCompany = "GROUP_COMPANY",
        /// Platform vendor.
        Vendor = "VENDOR",
        /// Distributor.
        Distributor = "DISTRIBUTOR",
        /// Service provider.
        ServiceProvider = "SERVICE_PROVIDER",
        /// Contractor.
        Contractor = "CONTRACTOR",
        /// Own system.
        InternalSystem = "INTERNAL_SYSTEM",
    }
}

str_enum! {
    /// The legal ground for keeping data a processor was told to delete.
    DeletionException {
        /// CCPA 1798.105(d)(1).
        CcpaCompleteTransaction = "CCPA_COMPLETE_TRANSACTION",
        /// CCPA 1798.105(d)(2).
        CcpaSecurityIntegrity = "CCPA_SECURITY_INTEGRITY",
        /// CCPA 1798.105(d)(3).
        CcpaDebugging = "CCPA_DEBUGGING",
        /// CCPA 1798.105(d)(4).
        CcpaFreeSpeech = "CCPA_FREE_SPEECH",
        /// CCPA 1798.105(d)(5).
        CcpaCalecpa = "CCPA_CALECPA",
        /// CCPA 1798.105(d)(6).
        CcpaResearch = "CCPA_RESEARCH",
        /// CCPA 1798.105(d)(7).
        CcpaInternalUses = "CCPA_INTERNAL_USES",
        /// CCPA 1798.105(d)(8).
        CcpaLegalObligation = "CCPA_LEGAL_OBLIGATION",
        /// GDPR 17(3)(a).
        GdprFreedomOfExpression = "GDPR_FREEDOM_OF_EXPRESSION",
        /// GDPR 17(3)(b).
        GdprLegalObligation = "GDPR_LEGAL_OBLIGATION",
        /// GDPR 17(3)(c).
        GdprPublicHealth = "GDPR_PUBLIC_HEALTH",
        /// GDPR 17(3)(d).
        GdprArchivingResearch = "GDPR_ARCHIVING_RESEARCH",
        /// GDPR 17(3)(e).
        GdprLegalClaims = "GDPR_LEGAL_CLAIMS",
        /// APPI Art. 35(2) and (4), proviso.
        AppiDifficultAlternativeMeasures = "APPI_DIFFICULT_ALTERNATIVE_MEASURES",
        /// APPI Art. 35(1), (3) and (5): the conditions are not met.
        AppiConditionsNotMet = "APPI_CONDITIONS_NOT_MET",
        /// Another ground provided by law.
        Other = "OTHER",
    }
}

str_enum! {
    /// How one delivery attempt ended, as kept in its instruction's
    /// history and counted by the delivery metrics. The two open values
    /// are an attempt still waiting for its answer.
    AttemptResult {
        /// Open: delivered (or pulled), no answer yet.
        Pending = "pending",
        /// Open: a reminder of an overdue outcome, no answer yet.
        Reminder = "reminder",
        /// The processor accepted the instruction; the outcome follows.
        Accepted = "accepted",
        /// The processor answered with its final outcome.
        Outcome = "outcome",
        /// The delivery failed in a way worth retrying.
        RetryableError = "retryable_error",
        /// The delivery failed in a way retrying cannot mend, or the retry
        /// budget ran out.
        FatalError = "fatal_error",
        /// Nobody answered before the lease ran out; it was claimed again.
        LeaseExpired = "lease_expired",
    }
}

impl AttemptResult {
    /// The results of attempts still waiting for an answer.
    pub const OPEN: [AttemptResult; 2] = [AttemptResult::Pending, AttemptResult::Reminder];
}
