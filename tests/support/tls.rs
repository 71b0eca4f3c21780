//! Test certificates for etcd's mutual TLS: a CA, a server certificate for 127.0.0.1 and a
//! client certificate, written as PEM files (keys 0600) into a temp dir; plus a second,
//! unrelated CA for wrong-certificate tests. Test support only.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// PEM files of one test PKI.
pub struct EtcdCerts {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed nothing here.
    pub other_ca: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

impl EtcdCerts {
    /// Generates everything into `dir` (created if missing).
    pub fn generate(dir: &Path) -> EtcdCerts {
        EtcdCerts::generate_for(dir, &[])
    }

    /// Like [`EtcdCerts::generate`], with `names` (DNS names) added to the certificates'
    /// subject alternative names, as kubeadm adds the node's names to etcd's.
    pub fn generate_for(dir: &Path, names: &[&str]) -> EtcdCerts {
        std::fs::create_dir_all(dir).unwrap();
        let issuer = ca("etcd-ca");
        let leaf = |cn: &str, usage: ExtendedKeyUsagePurpose| {
            let mut dns = vec!["localhost".to_string()];
            dns.extend(names.iter().map(|n| n.to_string()));
            let mut p = CertificateParams::new(dns).unwrap();
            p.subject_alt_names
                .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
            p.distinguished_name.push(DnType::CommonName, cn);
            p.extended_key_usages = vec![usage];
            p.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            let key = KeyPair::generate().unwrap();
            let cert = p.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (scert, skey) = leaf("etcd-server", ExtendedKeyUsagePurpose::ServerAuth);
        let (ccert, ckey) = leaf("healthcheck-client", ExtendedKeyUsagePurpose::ClientAuth);
        let c = EtcdCerts {
            dir: dir.to_path_buf(),
            ca: dir.join("ca.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("healthcheck-client.crt"),
            client_key: dir.join("healthcheck-client.key"),
            other_ca: dir.join("other-ca.crt"),
        };
        write(&c.ca, &issuer.pem(), 0o644);
        write(&c.server_cert, &scert, 0o644);
        write(&c.server_key, &skey, 0o600);
        write(&c.client_cert, &ccert, 0o644);
        write(&c.client_key, &ckey, 0o600);
        write(&c.other_ca, &ca("someone-else").pem(), 0o644);
        c
    }
}

/// The day `days` from now, as rcgen's validity dates take it.
pub fn day_from_now(days: i64) -> (i32, u8, u8) {
    use chrono::Datelike;
    let d = chrono::Utc::now().date_naive() + chrono::Duration::days(days);
    (d.year(), d.month() as u8, d.day() as u8)
}

/// Which key file goes beside a certificate [`TestCa::issue`] writes.
pub enum LeafKey {
    /// Its own key.
    Own,
    /// The key of another key pair.
    Other,
    /// None.
    Absent,
}

/// A CA for a kubeadm-like PKI of real certificates: `<name>.crt` and `<name>.key` written
/// into a dir, valid 2020–2040; [`TestCa::issue`] signs leaves with chosen validity.
pub struct TestCa(CertifiedIssuer<'static, KeyPair>);

impl TestCa {
    /// A new CA written as `dir/<name>.crt` and `dir/<name>.key` (0600).
    pub fn new(dir: &Path, name: &str) -> TestCa {
        std::fs::create_dir_all(dir).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2040, 1, 1);
        let key = KeyPair::generate().unwrap();
        let key_pem = key.serialize_pem();
        let ca = CertifiedIssuer::self_signed(p, key).unwrap();
        write(&dir.join(format!("{name}.crt")), &ca.pem(), 0o644);
        write(&dir.join(format!("{name}.key")), &key_pem, 0o600);
        TestCa(ca)
    }

    /// Writes `dir/<name>.crt` (CN=`name`, signed by this CA, valid from 2020-01-01 until
    /// `until`) and, per `key`, `dir/<name>.key`.
    pub fn issue(&self, dir: &Path, name: &str, until: (i32, u8, u8), key: LeafKey) {
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
        let own = KeyPair::generate().unwrap();
        let cert = p.signed_by(&own, &self.0).unwrap();
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        write(&path.with_extension("crt"), &cert.pem(), 0o644);
        let key_pem = match key {
            LeafKey::Own => own.serialize_pem(),
            LeafKey::Other => KeyPair::generate().unwrap().serialize_pem(),
            LeafKey::Absent => return,
        };
        write(&path.with_extension("key"), &key_pem, 0o600);
    }
}
