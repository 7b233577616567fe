//! A test PKI: certificate authorities made on the spot (rcgen), issuing
//! server and client certificates, written to files as an operator would
//! mount them.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, SanType,
};

/// A certificate authority.
pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    /// Its certificate (PEM).
    pub pem: String,
}

/// A certificate and its key (PEM).
pub struct Issued {
    pub cert: String,
    pub key: String,
}

/// Files of an issued certificate and its CA.
pub struct Files {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl Ca {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Self { params, key, pem }
    }

    fn issue(&self, mut params: CertificateParams) -> Issued {
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        params.is_ca = IsCa::NoCa;
        Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server(&self) -> Issued {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A server certificate for `localhost` that expired years ago.
    pub fn expired_server(&self) -> Issued {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A client certificate with common name `cn` and the URI SAN `san`.
    pub fn client(&self, cn: &str, san: Option<&str>) -> Issued {
        self.issue(client_params(cn, san))
    }

    /// A client certificate with common name `cn` that stops being valid
    /// after `not_after` (Unix seconds).
    pub fn client_until(&self, cn: &str, not_after: i64) -> Issued {
        let mut params = client_params(cn, None);
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        let at = |secs: i64| epoch + std::time::Duration::from_secs(secs as u64);
        params.not_before = at(not_after - 3600);
        params.not_after = at(not_after);
        self.issue(params)
    }
}

/// The parameters of a client certificate with common name `cn` and the
/// URI SAN `san`.
fn client_params(cn: &str, san: Option<&str>) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    if let Some(san) = san {
        params
            .subject_alt_names
            .push(SanType::URI(san.try_into().unwrap()));
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
}

impl Issued {
    /// Writes the certificate, its key and `ca`'s certificate into `dir`
    /// as `<name>.crt`, `<name>.key` and `<name>-ca.crt`.
    pub fn write(&self, dir: &Path, name: &str, ca: &Ca) -> Files {
        let files = Files {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
            ca: dir.join(format!("{name}-ca.crt")),
        };
        std::fs::write(&files.cert, &self.cert).unwrap();
        std::fs::write(&files.key, &self.key).unwrap();
        std::fs::write(&files.ca, &ca.pem).unwrap();
        files
    }
}
