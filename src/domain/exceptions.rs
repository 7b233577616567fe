//! The catalogue of grounds on which a processor may keep data it was told
//! to delete (or keep using data it was told to stop using), by law: the
//! eight CCPA grounds of Cal. Civ. Code 1798.105(d), the GDPR Art. 17(3)
//! grounds, and the APPI Art. 35 exceptions as they bear on a processor's
//! retention. `ListExceptions` serves it, and a denial whose ground is not
//! of its request's jurisdiction, or does not apply to its kind, is
//! refused. `OTHER` (another ground provided by law, named in the
//! explanation) stands for grounds the catalogue lacks, in any regime.

use super::{DeletionException, Jurisdiction, RequestKind};

/// One ground.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ground {
    /// Its stable code.
    pub code: DeletionException,
    /// The law it comes from; `None` for `OTHER`, open to every law.
    pub jurisdiction: Option<Jurisdiction>,
    /// The article or section.
    pub provision: &'static str,
    /// A short title.
    pub title: &'static str,
    /// What it allows.
    pub description: &'static str,
    /// The request kinds it applies to.
    pub kinds: &'static [RequestKind],
}

use DeletionException as E;
use Jurisdiction as J;
use RequestKind as K;

/// Every ground.
pub const CATALOGUE: &[Ground] = &[
    ccpa(
        E::CcpaCompleteTransaction,
        "Cal. Civ. Code 1798.105(d)(1)",
        "Complete the transaction",
        "Complete the transaction for which the personal information was collected, provide a good or service the consumer requested or reasonably anticipated, or perform a contract with the consumer.",
    ),
    ccpa(
        E::CcpaSecurityIntegrity,
        "Cal. Civ. Code 1798.105(d)(2)",
        "Security and integrity",
        "Help ensure security and integrity, to the extent the use is reasonably necessary and proportionate.",
    ),
    ccpa(
        E::CcpaDebugging,
        "Cal. Civ. Code 1798.105(d)(3)",
        "Debugging",
        "Debug to identify and repair errors that impair existing intended functionality.",
    ),
    ccpa(
        E::CcpaFreeSpeech,
        "Cal. Civ. Code 1798.105(d)(4)",
        "Free speech and other rights",
        "Exercise free speech, ensure the right of another consumer to exercise free speech, or exercise another right provided for by law.",
    ),
    ccpa(
        E::CcpaCalecpa,
        "Cal. Civ. Code 1798.105(d)(5)",
        "California Electronic Communications Privacy Act",
        "Comply with the California Electronic Communications Privacy Act (Penal Code 1546 ff.).",
    ),
    ccpa(
        E::CcpaResearch,
        "Cal. Civ. Code 1798.105(d)(6)",
        "Public-interest research",
        "Engage in public or peer-reviewed research in the public interest, with informed consent, when deletion would render it impossible or seriously impair it.",
    ),
    ccpa(
        E::CcpaInternalUses,
        "Cal. Civ. Code 1798.105(d)(7)",
        "Internal uses",
        "Enable solely internal uses reasonably aligned with the consumer's expectations and compatible with the context in which the information was provided.",
    ),
    ccpa(
        E::CcpaLegalObligation,
        "Cal. Civ. Code 1798.105(d)(8)",
        "Legal obligation",
        "Comply with a legal obligation.",
    ),
    gdpr(
        E::GdprFreedomOfExpression,
        "GDPR Art. 17(3)(a)",
        "Freedom of expression and information",
        "Exercising the right of freedom of expression and information.",
    ),
    gdpr(
        E::GdprLegalObligation,
        "GDPR Art. 17(3)(b)",
        "Legal obligation or public task",
        "Compliance with a legal obligation under Union or Member State law, or a task carried out in the public interest or in the exercise of official authority.",
    ),
    gdpr(
        E::GdprPublicHealth,
        "GDPR Art. 17(3)(c)",
        "Public health",
        "Reasons of public interest in the area of public health (Art. 9(2)(h) and (i), 9(3)).",
    ),
    gdpr(
        E::GdprArchivingResearch,
        "GDPR Art. 17(3)(d)",
        "Archiving, research or statistics",
        "Archiving in the public interest, scientific or historical research or statistics (Art. 89(1)), where erasure would render impossible or seriously impair them.",
    ),
    gdpr(
        E::GdprLegalClaims,
        "GDPR Art. 17(3)(e)",
        "Legal claims",
        "The establishment, exercise or defence of legal claims.",
    ),
    Ground {
        code: E::AppiDifficultAlternativeMeasures,
        jurisdiction: Some(J::Appi),
        provision: "APPI Art. 35(2), (4) proviso",
        title: "Difficult, with alternative measures",
        description: "Ceasing use or erasing would require a large expense or is otherwise difficult, and necessary alternative measures are taken to protect the principal's rights and interests.",
        kinds: &[K::Delete, K::Object, K::WithdrawConsent],
    },
    Ground {
        code: E::AppiConditionsNotMet,
        jurisdiction: Some(J::Appi),
        provision: "APPI Art. 35(1), (3), (5)",
        title: "Conditions not met",
        description: "None of the conditions holds under which the business must cease use or erase: the handling is lawful, the data is still needed for its purpose, there was no leak, and the principal's rights are not harmed.",
        kinds: &[K::Delete, K::Object, K::WithdrawConsent],
    },
    Ground {
        code: E::Other,
        jurisdiction: None,
        provision: "",
        title: "Another ground provided by law",
        description: "A ground the catalogue lacks; the explanation names the law and the provision.",
        kinds: &[
            K::Access,
            K::Delete,
            K::Portability,
            K::Correct,
            K::Object,
            K::WithdrawConsent,
        ],
    },
];

const fn ccpa(
    code: DeletionException,
    provision: &'static str,
    title: &'static str,
    description: &'static str,
) -> Ground {
    Ground {
        code,
        jurisdiction: Some(J::Ccpa),
        provision,
        title,
        description,
        kinds: &[K::Delete],
    }
}

const fn gdpr(
    code: DeletionException,
    provision: &'static str,
    title: &'static str,
    description: &'static str,
) -> Ground {
    Ground {
        code,
        jurisdiction: Some(J::Gdpr),
        provision,
        title,
        description,
        kinds: &[K::Delete],
    }
}

/// The catalogue's entry for `code`.
pub fn ground(code: DeletionException) -> &'static Ground {
    CATALOGUE
        .iter()
        .find(|g| g.code == code)
        .expect("every exception is in the catalogue")
}

/// Why `code` cannot deny a request of `jurisdiction` and `kind`, if it
/// cannot.
pub fn misapplied(
    code: DeletionException,
    jurisdiction: Jurisdiction,
    kind: RequestKind,
) -> Option<String> {
    let g = ground(code);
    if g.jurisdiction.is_some_and(|j| j != jurisdiction) {
        return Some(format!(
            "{code} is a ground of {}, not of {jurisdiction}",
            g.jurisdiction.expect("checked")
        ));
    }
    if !g.kinds.contains(&kind) {
        return Some(format!("{code} does not apply to {kind} requests"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_exception_is_catalogued_once() {
        for e in DeletionException::ALL {
            assert_eq!(CATALOGUE.iter().filter(|g| g.code == *e).count(), 1, "{e}");
        }
        assert_eq!(
            CATALOGUE
                .iter()
                .filter(|g| g.jurisdiction == Some(J::Ccpa))
                .count(),
            8
        );
        assert_eq!(
            CATALOGUE
                .iter()
                .filter(|g| g.jurisdiction == Some(J::Gdpr))
                .count(),
            5
        );
    }

    #[test]
    fn grounds_are_checked_against_law_and_kind() {
        assert!(misapplied(E::CcpaLegalObligation, J::Ccpa, K::Delete).is_none());
        assert!(misapplied(E::GdprLegalClaims, J::Ccpa, K::Delete).is_some());
        assert!(misapplied(E::CcpaLegalObligation, J::Ccpa, K::Access).is_some());
        assert!(misapplied(E::Other, J::Appi, K::Access).is_none());
        assert!(misapplied(E::AppiConditionsNotMet, J::Appi, K::Object).is_none());
    }
}
