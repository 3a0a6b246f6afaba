//! A throw-away PKI for tests, made with the openssl CLI: a CA, a server certificate for given IP
//! addresses, and client certificates whose CN is the etcd user name. ECDSA P-256 (fast).

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug)]
pub struct Pki {
    pub dir: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Pki {
    /// A new CA named `ca_name` in `dir`.
    pub fn new(dir: &Path, ca_name: &str) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        openssl(dir, &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key"]);
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                &format!("/CN={ca_name}"),
            ],
        );
        Pki { dir: dir.to_path_buf() }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// Issues `<name>.crt`/`<name>.key` with CN `cn`, for server auth on `ips` and client auth.
    pub fn issue(&self, name: &str, cn: &str, ips: &[&str]) -> (PathBuf, PathBuf) {
        let d = &self.dir;
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let crt = format!("{name}.crt");
        openssl(d, &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &key]);
        openssl(d, &["req", "-new", "-key", &key, "-out", &csr, "-subj", &format!("/CN={cn}")]);
        let mut ext = String::from("extendedKeyUsage=serverAuth,clientAuth\n");
        if !ips.is_empty() {
            let sans: Vec<String> = ips.iter().map(|ip| format!("IP:{ip}")).collect();
            ext.push_str(&format!("subjectAltName={}\n", sans.join(",")));
        }
        let extfile = format!("{name}.ext");
        std::fs::write(d.join(&extfile), ext).unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &extfile,
            ],
        );
        (d.join(crt), d.join(key))
    }
}
