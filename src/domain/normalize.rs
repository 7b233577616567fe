//! One form per identifier, so that the suppression list finds a person
//! however an identifier was written. The list keeps keyed hashes of these
//! forms, never the identifiers.
//!
//! | type | normal form |
//! |---|---|
//! | EMAIL | trimmed, lower-cased (the whole address) |
//! | PHONE | E.164 digits: spaces, dashes, dots and brackets dropped, a leading `00` read as `+`; `+` kept when given (a number without its country code stays as written) |
//! | IP_ADDRESS | the address as parsed and written back (IPv6 compressed, lower case); an IPv4-mapped IPv6 address as its IPv4 form |
//! | NAME, POSTAL_ADDRESS | trimmed, inner white space collapsed to one space, lower-cased |
//! | ACCOUNT_ID, DEVICE_ID, OTHER | trimmed (identifiers are case-sensitive) |

use std::net::IpAddr;

use super::{IdentityType, SubjectIdentity};

/// The normal form of `identity` (see the module documentation).
pub fn normal_form(identity: &SubjectIdentity) -> String {
    let value = identity.value.trim();
    match identity.kind {
        IdentityType::Email => value.to_lowercase(),
        IdentityType::Phone => phone(value),
        IdentityType::IpAddress => match value.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => v6.to_string(),
            },
            Ok(ip) => ip.to_string(),
            Err(_) => value.to_lowercase(),
        },
        IdentityType::Name | IdentityType::PostalAddress => value
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase(),
        IdentityType::AccountId | IdentityType::DeviceId | IdentityType::Other => value.to_string(),
    }
}

/// A telephone number's E.164 form, as far as the number says.
fn phone(value: &str) -> String {
    let plus = value.starts_with('+') || value.starts_with("00");
    let digits: String = value.chars().filter(char::is_ascii_digit).collect();
    let digits = if value.starts_with("00") {
        digits.trim_start_matches("00").to_string()
    } else {
        digits
    };
    if plus { format!("+{digits}") } else { digits }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(kind: IdentityType, value: &str) -> String {
        normal_form(&SubjectIdentity::new(kind, value).unwrap())
    }

    #[test]
    fn each_type_has_one_form() {
        use IdentityType as T;
        assert_eq!(
            form(T::Email, "  Jane.Doe@Example.COM "),
            "jane.doe@example.com"
        );
        for written in ["+1 (555) 010-0100", "+1.555.010.0100", "001 555 010 0100"] {
            assert_eq!(form(T::Phone, written), "+15550100100", "{written}");
        }
        assert_eq!(form(T::Phone, "03-1234-5678"), "0312345678");
        assert_eq!(form(T::IpAddress, "2001:DB8:0:0::1"), "2001:db8::1");
        assert_eq!(form(T::IpAddress, "::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(form(T::Name, " Jürgen   Müller "), "jürgen müller");
        assert_eq!(form(T::AccountId, " A-1001 "), "A-1001");
        assert_ne!(form(T::AccountId, "a-1001"), form(T::AccountId, "A-1001"));
    }
}
