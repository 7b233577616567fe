//! Tests of `adapter`.

use super::*;

#[test]
fn endpoints() {
    for ok in ["http://127.0.0.1:5000", "https://dsr.vendor.example:443"] {
        assert!(AdapterConfig::grpc(ok, None, None).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "127.0.0.1:5000",
        "ftp://x:1",
        "http://host",
        "http://host:1/path",
        "not a uri",
        "http://user:secret@host:1",
        "https://token@host:443",
    ] {
        assert!(AdapterConfig::grpc(bad, None, None).is_err(), "{bad}");
    }
}

#[test]
fn webhook_urls() {
    for ok in [
        "http://127.0.0.1:5000/hook",
        "https://dsr.vendor.example/hooks/dsr?tenant=7",
        "https://dsr.vendor.example",
    ] {
        assert!(AdapterConfig::webhook(ok, None, None).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "dsr.vendor.example/hook",
        "ftp://x:1/hook",
        "https://user:secret@host/hook",
        "https://host/hook#frag",
    ] {
        assert!(AdapterConfig::webhook(bad, None, None).is_err(), "{bad}");
    }
    let tls = ProcessorTls {
        ca_file: Some("/etc/ca.pem".into()),
        ..ProcessorTls::default()
    };
    assert!(AdapterConfig::webhook("http://127.0.0.1:1/h", None, Some(tls)).is_err());
}
