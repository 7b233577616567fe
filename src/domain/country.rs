//! Country codes: ISO 3166-1 alpha-2, the codes assigned to a country or
//! territory, and `XK` (Kosovo), user-assigned by the standard but the code
//! the European Commission and most registries use. A processor's country
//! and a sub-processor's say where personal data went, which the completion
//! record keeps as evidence of a cross-border transfer, so a code of the
//! right shape that is not assigned (`XX`, or `UK` and `EU`, which the
//! standard only reserves) is refused rather than recorded.

/// The assigned ISO 3166-1 alpha-2 codes (249), sorted.
const ASSIGNED: [&str; 249] = [
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
    "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
    "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
    "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
    "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
    "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW",
];

/// The user-assigned codes taken as countries.
const USER_ASSIGNED: [&str; 1] = ["XK"];

/// What a violation says of a code not in the list.
pub(crate) const COUNTRY_RULE: &str =
    "must be an ISO 3166-1 alpha-2 code assigned to a country, in upper case (e.g. \"JP\")";

/// Whether `s` is an assigned country code (upper case).
pub(crate) fn is_country_code(s: &str) -> bool {
    ASSIGNED.binary_search(&s).is_ok() || USER_ASSIGNED.contains(&s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_sorted_and_each_code_two_upper_case_letters() {
        assert!(ASSIGNED.windows(2).all(|w| w[0] < w[1]));
        assert!(
            ASSIGNED
                .iter()
                .all(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()))
        );
    }

    #[test]
    fn assigned_codes_are_countries_and_others_are_not() {
        for code in ["JP", "US", "DE", "GB", "SS", "XK", "AX", "ZW"] {
            assert!(is_country_code(code), "{code}");
        }
        for code in ["XX", "UK", "EU", "ZZ", "AA", "jp", "Jp", "JPN", "J", ""] {
            assert!(!is_country_code(code), "{code}");
        }
    }
}
