//! The parsers of configuration values that clap's own do not cover.

use std::time::Duration;

use crate::domain::Period;

/// A duration such as `10s` or `2m 30s`.
pub(super) fn duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

/// A duration above zero and at most a day: how often something is done
/// again (a zero period cannot tick, and timers multiply it), or how long
/// to wait for something (no wait at all would fail whenever it is not
/// there at once).
pub(super) fn interval(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if !d.is_zero() && d <= Duration::from_secs(24 * 3600) => Ok(d),
        Ok(_) => Err("must be above 0s and at most 1day".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// A count of at least 1.
pub(super) fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("must be a whole number of at least 1".into()),
    }
}

/// A rate above zero.
pub(super) fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err("must be a number above 0".into()),
    }
}

/// A burst of at least one call.
pub(super) fn at_least_one_call(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 1.0 => Ok(r),
        _ => Err("must be a number of at least 1".into()),
    }
}

/// An `http://` or `https://` URL with a host, without user information
/// (it is handed to every OpenDSR processor, so a password in it would be
/// too), query or fragment. Checked after parsing ([`super::Config::check`]),
/// not by clap, whose refusal would print the value, password and all.
pub(super) fn public_url(s: &str) -> Result<(), String> {
    let refused = || "must be an http:// or https:// URL with a host, without user information, query or fragment";
    let uri: http::Uri = s.parse().map_err(|_| refused())?;
    let ok = matches!(uri.scheme_str(), Some("http" | "https"))
        && uri.host().is_some_and(|h| !h.is_empty())
        && uri.authority().is_some_and(|a| !a.as_str().contains('@'))
        && uri.query().is_none()
        && !s.contains('#');
    if ok { Ok(()) } else { Err(refused().into()) }
}

/// A database URL the server can keep its state in: PostgreSQL, or a
/// SQLite file (an in-memory SQLite database would be one database per
/// pooled connection, and gone at exit). Checked after parsing, as
/// [`public_url`] is: the URL may hold a password.
pub(super) fn database_url(s: &str) -> Result<(), String> {
    use crate::store::{Backend, sqlite_file};
    match Backend::from_url(s) {
        Some(Backend::Postgres) => Ok(()),
        Some(Backend::Sqlite) if sqlite_file(s).is_some() => Ok(()),
        Some(Backend::Sqlite) => {
            Err("SQLite needs a file: sqlite://FILE (e.g. sqlite://dsr.db)".into())
        }
        None => Err("must be sqlite://FILE or postgres://USER@HOST/DB \
             (postgresql:// too); no other database is supported"
            .into()),
    }
}

/// A duration of at least one second.
pub(super) fn at_least_a_second(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d >= Duration::from_secs(1) => Ok(d),
        Ok(_) => Err("must be at least 1s".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// A retention period in days or months.
pub(super) fn retention(s: &str) -> Result<Period, String> {
    match s.parse::<Period>()? {
        Period::BusinessDays(_) => Err("must be in days or months".into()),
        p => Ok(p),
    }
}
