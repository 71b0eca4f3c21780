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
