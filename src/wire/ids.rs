//! Identifiers from request fields. The domain parsers report at an empty
//! path; these put the violation under the field the caller names, since
//! the same id travels in fields of different names (`request_id`,
//! `processor.processor_id`, `processor_ids[3]`).

use crate::domain::{InstructionId, ProcessorId, RequestId, Violations};

/// Parses a request id; violations are reported under `field`.
pub fn parse_request_id(s: &str, field: &str) -> Result<RequestId, Violations> {
    super::within(field, RequestId::parse(s))
}

/// Parses an instruction id; violations are reported under `field`.
pub fn parse_instruction_id(s: &str, field: &str) -> Result<InstructionId, Violations> {
    super::within(field, InstructionId::parse(s))
}

/// Parses a processor id; violations are reported under `field`.
pub fn parse_processor_id(s: &str, field: &str) -> Result<ProcessorId, Violations> {
    super::within(field, ProcessorId::parse(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::fields;

    #[test]
    fn violations_name_the_field() {
        assert_eq!(fields(parse_request_id("", "request_id")), ["request_id"]);
        assert_eq!(
            fields(parse_instruction_id("nope", "instruction_id")),
            ["instruction_id"]
        );
        assert_eq!(
            fields(parse_processor_id("Bad", "processor_id")),
            ["processor_id"]
        );
        assert!(parse_processor_id("platform-vendor", "processor_id").is_ok());
        assert!(parse_request_id("6f1c2b1e-3a4d-4c5e-9f60-718293a4b5c6", "request_id").is_ok());
    }
}
