//! Certificates for `EtcdMode::Tls`, made with openssl when the lab starts.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::etcd::{EtcdMode, ETCD_IP_BASE};
use crate::process::run;
use crate::{Lab, UNDERLAY_NET};

/// PEM files made for `EtcdMode::Tls` (EC P-256, keys PKCS#8). etcd's own server certificate
/// (IP SANs 198.18.0.2 and 127.0.0.1) is signed by `ca` too.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The CA that signed etcd's server certificate and the client certificate.
    pub ca: PathBuf,
    /// A client certificate (CN `weft`, clientAuth) signed by `ca`.
    pub cert: PathBuf,
    /// The client certificate's key.
    pub key: PathBuf,
    /// An unrelated CA, which etcd's server certificate does not chain to.
    pub wrong_ca: PathBuf,
}

impl Lab {
    /// The certificates of `EtcdMode::Tls`; panics in any other mode.
    pub fn tls_files(&self) -> TlsFiles {
        assert_eq!(self.mode, EtcdMode::Tls, "tls_files() needs EtcdMode::Tls");
        let dir = self.tls_dir();
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("client.pem"),
            key: dir.join("client.key"),
            wrong_ca: dir.join("wrong-ca.pem"),
        }
    }

    pub(crate) fn tls_dir(&self) -> PathBuf {
        self.dir.join("tls")
    }
}

/// Makes in `dir` (with openssl): `ca.pem`, etcd's `server.pem` (IP SANs 198.18.0.2 and
/// 127.0.0.1), `client.pem`, all signed by the CA, and an unrelated `wrong-ca.pem`; each with a
/// `.key`. EC P-256 keys in PKCS#8 ("BEGIN PRIVATE KEY"), which both Go and rustls read.
pub(crate) fn make_tls_files(dir: &Path) {
    fs::create_dir(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    make_ca(dir, "ca");
    make_ca(dir, "wrong-ca");
    let [a, b, c] = UNDERLAY_NET;
    let etcd_ip = Ipv4Addr::new(a, b, c, ETCD_IP_BASE);
    // clientAuth too: etcd's own gRPC gateway dials etcd with the server certificate.
    let server = format!("extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:{etcd_ip},IP:127.0.0.1\n");
    make_leaf(dir, "server", "weft-lab-etcd", &server);
    make_leaf(dir, "client", "weft", "extendedKeyUsage=clientAuth\n");
}

/// A self-signed CA: `<name>.pem` and `<name>.key`.
fn make_ca(dir: &Path, name: &str) {
    let raw_key = dir.join(format!("{name}.raw.key"));
    let cert = dir.join(format!("{name}.pem"));
    run(Command::new("openssl")
        .args(["req", "-x509", "-new", "-newkey", "ec"])
        .args(["-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "3650"])
        .args(["-subj", &format!("/CN=weft lab {name}")])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        .arg("-keyout")
        .arg(&raw_key)
        .arg("-out")
        .arg(&cert));
    to_pkcs8(&raw_key, &dir.join(format!("{name}.key")));
}

/// A certificate `<name>.pem` for `cn` with extensions `ext` (openssl config lines), signed by
/// `ca.pem`, and its key `<name>.key`.
fn make_leaf(dir: &Path, name: &str, cn: &str, ext: &str) {
    let path = |suffix: &str| dir.join(format!("{name}{suffix}"));
    run(Command::new("openssl")
        .args(["req", "-new", "-newkey", "ec"])
        .args(["-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"])
        .args(["-subj", &format!("/CN={cn}")])
        .arg("-keyout")
        .arg(path(".raw.key"))
        .arg("-out")
        .arg(path(".csr")));
    // A v3 certificate: rustls (webpki) rejects v1 ones and ignores the CN, matching SANs only.
    let common = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                  subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n";
    fs::write(path(".ext"), format!("{common}{ext}")).expect("write extensions file");
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "3650", "-set_serial"])
        .arg(format!("0x{:x}", SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos()))
        .arg("-in")
        .arg(path(".csr"))
        .arg("-CA")
        .arg(dir.join("ca.pem"))
        .arg("-CAkey")
        .arg(dir.join("ca.key"))
        .arg("-extfile")
        .arg(path(".ext"))
        .arg("-out")
        .arg(path(".pem")));
    to_pkcs8(&path(".raw.key"), &path(".key"));
}

/// Rewrites a key as unencrypted PKCS#8 (openssl 1.1 writes "EC PRIVATE KEY" from `req`).
fn to_pkcs8(from: &Path, to: &Path) {
    run(Command::new("openssl").args(["pkcs8", "-topk8", "-nocrypt", "-in"]).arg(from).arg("-out").arg(to));
    let _ = fs::remove_file(from);
}
