//! The JSON of a data record (the HTTP callback API's `records`, see
//! [`super::json`]): the protobuf `DataRecord` with its field names, its
//! time as RFC 3339.

use serde::{Deserialize, Serialize};

use super::time::rfc3339 as time;
use crate::domain::Violations;
use crate::pb;

/// A piece of personal information returned for an access request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataRecord {
    /// The category (one of the CCPA's, or `other`).
    pub category: String,
    /// With `other`: what it is.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub category_label: String,
    /// The field it is held in.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub field: String,
    /// The value.
    pub value: String,
    /// The category of source.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// The business or commercial purpose.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub purpose: String,
    /// When it was collected (RFC 3339).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub collected_at: String,
    /// Categories of third parties it was disclosed to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disclosed_to: Vec<String>,
    /// Whether it was sold or shared.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sold_or_shared: bool,
}

/// `POST /v1/instructions/{id}/records`: one chunk of `UploadDataRecords`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadBody {
    /// The chunk's index, 0 to 999.
    #[serde(default)]
    pub chunk_index: u32,
    /// 1 to 1000 records.
    #[serde(default, deserialize_with = "super::json_bodies::object::each")]
    pub records: Vec<DataRecord>,
}

/// Its answer: what the instruction holds in chunks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadAnswer {
    /// The instruction.
    pub instruction_id: String,
    /// Chunks it holds.
    pub chunks: u32,
    /// Records in them.
    pub records: u64,
}

/// The JSON of a record.
pub fn record_json(d: &pb::DataRecord) -> DataRecord {
    DataRecord {
        category: d.category.clone(),
        category_label: d.category_label.clone(),
        field: d.field.clone(),
        value: d.value.clone(),
        source: d.source.clone(),
        purpose: d.purpose.clone(),
        collected_at: d.collected_at.as_ref().map(time).unwrap_or_default(),
        disclosed_to: d.disclosed_to.clone(),
        sold_or_shared: d.sold_or_shared,
    }
}

/// The protobuf message of a record; a `collected_at` that is not RFC
/// 3339 is a violation under `<at>.collected_at`.
pub fn record_pb(d: DataRecord, at: &str, v: &mut Violations) -> pb::DataRecord {
    let collected_at = if d.collected_at.is_empty() {
        None
    } else {
        match chrono::DateTime::parse_from_rfc3339(&d.collected_at) {
            Ok(t) => Some(super::timestamp(t.to_utc())),
            Err(_) => {
                v.add(
                    format!("{at}.collected_at"),
                    "must be an RFC 3339 time, e.g. 2026-01-31T09:00:00Z",
                );
                None
            }
        }
    };
    pb::DataRecord {
        category: d.category,
        value: d.value,
        source: d.source,
        field: d.field,
        purpose: d.purpose,
        collected_at,
        disclosed_to: d.disclosed_to,
        sold_or_shared: d.sold_or_shared,
        category_label: d.category_label,
    }
}
