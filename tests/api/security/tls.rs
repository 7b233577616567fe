//! TLS on every hop (written next).
