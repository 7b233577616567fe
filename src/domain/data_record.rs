//! What a processor returns for an access or portability request, and what
//! a right-to-know response discloses from it.
//!
//! A [`DataRecord`] is one specific piece of personal information with the
//! facts the CCPA makes the business disclose about it (1798.110,
//! 1798.115): its category (the statute's closed list, or OTHER with a
//! label), the category of its source, the purpose it serves, the
//! categories of third parties it went to, and whether it was sold or
//! shared. [`Disclosures`] folds records into the seven lists of a
//! response, one record at a time, so a report over many records holds
//! only the (small) sets of names, never the records.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::Timestamp;
use super::Violations;
use super::violation::{check_line, check_text};

/// How far ahead of this server's clock a record's `collected_at` may
/// lie: a processor's clock may run ahead, or name a day by its start in
/// a zone east of UTC. Further ahead is a mistake (a clock, or a unit).
pub const COLLECTED_AHEAD: chrono::TimeDelta = chrono::TimeDelta::days(1);

/// The categories of personal information (CCPA 1798.140(v)(1)), as
/// `DataRecord.category` names them; `other` needs a label.
pub const CATEGORIES: &[&str] = &[
    "identifiers",
    "customer_records",
    "protected_characteristics",
    "commercial_information",
    "biometric_information",
    "internet_activity",
    "geolocation",
    "sensory_data",
    "professional_information",
    "education_information",
    "inferences",
    "sensitive_personal_information",
    "other",
];

/// Most categories of third parties one record names.
const MAX_DISCLOSED_TO: usize = 20;
/// Longest label of category `other`, in characters.
const MAX_LABEL: usize = 100;
/// Longest source or purpose, in characters.
const MAX_SOURCE: usize = 200;
/// Longest name of a third party, in characters.
const MAX_THIRD_PARTY: usize = 100;

/// One piece of personal information found for an access request.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataRecord {
    /// One of [`CATEGORIES`].
    pub category: String,
    /// With `other`: what it is.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub category_label: String,
    /// The field it is held in.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub field: String,
    /// The value (personal data).
    pub value: String,
    /// Category of source.
    pub source: String,
    /// The business or commercial purpose.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub purpose: String,
    /// When it was collected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collected_at: Option<Timestamp>,
    /// Categories of third parties it was disclosed to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disclosed_to: Vec<String>,
    /// Whether it was sold or shared.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sold_or_shared: bool,
}

impl fmt::Debug for DataRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataRecord({}, <redacted>)", self.category)
    }
}

impl DataRecord {
    /// The bytes of its texts (what the size limits count).
    pub fn text_bytes(&self) -> usize {
        self.category.len()
            + self.category_label.len()
            + self.field.len()
            + self.value.len()
            + self.source.len()
            + self.purpose.len()
            + self.disclosed_to.iter().map(String::len).sum::<usize>()
    }

    /// The category as a response names it: `other: <label>` for OTHER.
    pub fn category_name(&self) -> String {
        if self.category == "other" {
            format!("other: {}", self.category_label)
        } else {
            self.category.clone()
        }
    }

    /// Records every rule it breaks under `at` (e.g. `records[3]`).
    pub fn check(&self, at: &str, v: &mut Violations) {
        if !CATEGORIES.contains(&self.category.as_str()) {
            v.add(
                format!("{at}.category"),
                format!("must be one of {}", CATEGORIES.join(", ")),
            );
        }
        if self.category == "other" {
            v.take(
                &format!("{at}.category_label"),
                check_line(&self.category_label, 1, MAX_LABEL),
            );
        } else if !self.category_label.is_empty() {
            v.add(
                format!("{at}.category_label"),
                "is only given with category other",
            );
        }
        v.take(&format!("{at}.field"), check_line(&self.field, 0, 100));
        if self.value.trim().is_empty() {
            v.add(format!("{at}.value"), "must not be blank");
        } else {
            v.take(&format!("{at}.value"), check_text(&self.value, 1, 10_000));
        }
        v.take(
            &format!("{at}.source"),
            check_line(&self.source, 0, MAX_SOURCE),
        );
        v.take(
            &format!("{at}.purpose"),
            check_line(&self.purpose, 0, MAX_SOURCE),
        );
        if self.disclosed_to.len() > MAX_DISCLOSED_TO {
            v.add(
                format!("{at}.disclosed_to"),
                format!("at most {MAX_DISCLOSED_TO} entries"),
            );
        }
        for (i, d) in self.disclosed_to.iter().enumerate() {
            v.take(
                &format!("{at}.disclosed_to[{i}]"),
                check_line(d, 1, MAX_THIRD_PARTY),
            );
        }
    }
}

/// Checks a set of records sent together (a result's, or one uploaded
/// chunk): their texts within [`super::MAX_DATA_RECORD_BYTES`] in all,
/// and each record's rules under `records[i]`.
pub fn check_records(records: &[DataRecord], v: &mut Violations) {
    let bytes: usize = records.iter().map(DataRecord::text_bytes).sum();
    if bytes > super::MAX_DATA_RECORD_BYTES {
        v.add(
            "records",
            format!(
                "at most {} bytes of texts in all",
                super::MAX_DATA_RECORD_BYTES
            ),
        );
    }
    for (i, r) in records.iter().enumerate() {
        r.check(&format!("records[{i}]"), v);
    }
}

/// The disclosures of a right-to-know response, gathered record by record
/// (or, for a categories-only federated answer, carried up whole from the
/// downstream report: see `dispatch::federation_data`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disclosures {
    /// Categories collected.
    pub categories: BTreeSet<String>,
    /// Categories of sources.
    pub sources: BTreeSet<String>,
    /// Business or commercial purposes.
    pub purposes: BTreeSet<String>,
    /// Categories of third parties disclosed to.
    pub third_parties: BTreeSet<String>,
    /// Categories sold or shared.
    pub sold_or_shared: BTreeSet<String>,
    /// Categories disclosed for a business purpose (to someone, neither
    /// sold nor shared).
    pub disclosed_for_business_purpose: BTreeSet<String>,
    /// Specific pieces counted.
    pub pieces: u64,
}

impl Disclosures {
    /// Adds what `record` discloses.
    pub fn add(&mut self, record: &DataRecord) {
        let category = record.category_name();
        let put = |set: &mut BTreeSet<String>, text: &str| {
            if !text.is_empty() && !set.contains(text) {
                set.insert(text.to_string());
            }
        };
        put(&mut self.sources, &record.source);
        put(&mut self.purposes, &record.purpose);
        for d in &record.disclosed_to {
            put(&mut self.third_parties, d);
        }
        if record.sold_or_shared {
            put(&mut self.sold_or_shared, &category);
        } else if !record.disclosed_to.is_empty() {
            put(&mut self.disclosed_for_business_purpose, &category);
        }
        put(&mut self.categories, &category);
        self.pieces += 1;
    }

    /// Records every rule its names break, under `disclosures.<list>[i]`:
    /// the rules a data record's names keep (a category of the list, or
    /// `other: ` and a label; sources and purposes of at most 200
    /// characters, third parties of at most 100, on one line), and the
    /// categories sold or shared, or disclosed for a business purpose,
    /// among the categories. For disclosures that come whole from
    /// elsewhere, not folded from checked records.
    pub fn check(&self, v: &mut Violations) {
        let each = |v: &mut Violations, list: &str, set: &BTreeSet<String>, max: usize| {
            for (i, name) in set.iter().enumerate() {
                v.take(
                    &format!("disclosures.{list}[{i}]"),
                    check_line(name, 1, max),
                );
            }
        };
        for (i, name) in self.categories.iter().enumerate() {
            let at = format!("disclosures.categories[{i}]");
            match name.strip_prefix("other: ") {
                Some(label) => {
                    v.take(&at, check_line(label, 1, MAX_LABEL));
                }
                None if name != "other" && CATEGORIES.contains(&name.as_str()) => {}
                None => {
                    let named: Vec<&str> = CATEGORIES
                        .iter()
                        .copied()
                        .filter(|c| *c != "other")
                        .collect();
                    v.add(
                        at,
                        format!("must be one of {}, or other: and a label", named.join(", ")),
                    );
                }
            }
        }
        each(v, "sources", &self.sources, MAX_SOURCE);
        each(v, "purposes", &self.purposes, MAX_SOURCE);
        each(v, "third_parties", &self.third_parties, MAX_THIRD_PARTY);
        for (list, set) in [
            ("sold_or_shared", &self.sold_or_shared),
            (
                "disclosed_for_business_purpose",
                &self.disclosed_for_business_purpose,
            ),
        ] {
            for (i, name) in set.iter().enumerate() {
                if !self.categories.contains(name) {
                    v.add(
                        format!("disclosures.{list}[{i}]"),
                        "must be one of the categories",
                    );
                }
            }
        }
    }

    /// Adds everything `other` disclosed.
    pub fn merge(&mut self, other: &Disclosures) {
        self.categories.extend(other.categories.iter().cloned());
        self.sources.extend(other.sources.iter().cloned());
        self.purposes.extend(other.purposes.iter().cloned());
        self.third_parties
            .extend(other.third_parties.iter().cloned());
        self.sold_or_shared
            .extend(other.sold_or_shared.iter().cloned());
        self.disclosed_for_business_purpose
            .extend(other.disclosed_for_business_purpose.iter().cloned());
        self.pieces += other.pieces;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(category: &str) -> DataRecord {
        DataRecord {
            category: category.into(),
            category_label: String::new(),
            field: "email".into(),
            value: "v".into(),
            source: "the consumer".into(),
            purpose: "billing".into(),
            collected_at: None,
            disclosed_to: vec![],
            sold_or_shared: false,
        }
    }

    #[test]
    fn disclosures_from_elsewhere_keep_the_records_rules() {
        let mut d = Disclosures::default();
        let mut other = record("other");
        other.category_label = "loyalty tier".into();
        d.add(&record("identifiers"));
        d.add(&other);
        let mut v = Violations::new();
        d.check(&mut v);
        assert!(v.is_empty(), "{v:?}");

        d.categories.insert("gossip".into());
        d.categories.insert("other".into());
        d.sources.insert("a\u{202e}b".into());
        d.third_parties.insert(String::new());
        d.sold_or_shared.insert("geolocation".into());
        let mut v = Violations::new();
        d.check(&mut v);
        let fields: Vec<_> = v.iter().map(|x| x.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "disclosures.categories[0]",
                "disclosures.categories[2]",
                "disclosures.sources[0]",
                "disclosures.third_parties[0]",
                "disclosures.sold_or_shared[0]",
            ]
        );
    }

    #[test]
    fn disclosures_fold_records() {
        let mut d = Disclosures::default();
        let mut shared = record("internet_activity");
        shared.disclosed_to = vec!["advertising networks".into()];
        shared.sold_or_shared = true;
        let mut told = record("identifiers");
        told.disclosed_to = vec!["payment processors".into()];
        let mut other = record("other");
        other.category_label = "loyalty tier".into();
        for r in [&record("identifiers"), &shared, &told, &other] {
            d.add(r);
        }
        assert_eq!(
            d.categories.iter().collect::<Vec<_>>(),
            ["identifiers", "internet_activity", "other: loyalty tier"]
        );
        assert_eq!(
            d.sold_or_shared.iter().collect::<Vec<_>>(),
            ["internet_activity"]
        );
        assert_eq!(
            d.disclosed_for_business_purpose.iter().collect::<Vec<_>>(),
            ["identifiers"]
        );
        assert_eq!(
            d.third_parties.iter().collect::<Vec<_>>(),
            ["advertising networks", "payment processors"]
        );
        assert_eq!(d.pieces, 4);
    }

    #[test]
    fn categories_are_a_closed_set() {
        let mut v = Violations::new();
        record("identifiers").check("r", &mut v);
        assert!(v.is_empty());
        record("hobbies").check("r", &mut v);
        record("other").check("s", &mut v);
        let mut empty = record("identifiers");
        empty.value.clear();
        empty.check("t", &mut v);
        empty.value = " \t ".into();
        empty.check("u", &mut v);
        let fields: Vec<_> = v.iter().map(|x| x.field.as_str()).collect();
        assert_eq!(
            fields,
            ["r.category", "s.category_label", "t.value", "u.value"]
        );
    }
}
