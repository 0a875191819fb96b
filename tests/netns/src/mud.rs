//! MUD servers for the lab: `openssl s_server -WWW` in the upstream namespace serving MUD files
//! and their detached CMS signatures over HTTPS, with a TLS CA and a MUD signing anchor made by
//! `openssl` (needs it on the PATH). Reachable only inside the lab.
use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use iotgw_test_support::checked;

use crate::lab::{self, Lab, UPSTREAM_IP};

fn openssl(dir: &Path, args: &[&str]) {
    checked(Command::new("openssl").current_dir(dir).args(args));
}

/// A CA named `name` in `dir` (`<name>.pem`, `<name>.key`) and a certificate it issues for
/// `leaf` with the extensions `extensions` (`<leaf>.pem`, `<leaf>.key`).
fn ca_and_leaf(dir: &Path, name: &str, leaf: &str, extensions: &str) {
    let (ca_pem, ca_key) = (format!("{name}.pem"), format!("{name}.key"));
    let (pem, key, csr) = (format!("{leaf}.pem"), format!("{leaf}.key"), format!("{leaf}.csr"));
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    let subject = format!("/CN={name}");
    let mut args = vec!["req", "-x509", "-days", "2", "-subj", &subject, "-keyout", &ca_key, "-out", &ca_pem];
    args.extend(ec);
    args.extend(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"]);
    openssl(dir, &args);
    let subject = format!("/CN={leaf}");
    let mut args = vec!["req", "-new", "-subj", &subject, "-keyout", &key, "-out", &csr];
    args.extend(ec);
    openssl(dir, &args);
    std::fs::write(dir.join("ext.cnf"), extensions).unwrap();
    openssl(
        dir,
        &[
            "x509", "-req", "-days", "2", "-in", &csr, "-CA", &ca_pem, "-CAkey", &ca_key, "-out", &pem, "-extfile",
            "ext.cnf",
        ],
    );
}

/// Servers on `addresses`, all serving the same folder; killed and the folder removed on drop.
pub struct MudServer {
    children: Vec<Child>,
    dir: PathBuf,
    addresses: Vec<SocketAddrV4>,
}

impl MudServer {
    /// Serves `files` (name, JSON), each signed as `<stem>.p7s` by a certificate of the MUD
    /// anchor, at every one of `addresses` in the upstream namespace (an address other than
    /// the upstream host's own is added to its interface first).
    pub fn start(lab: &Lab, addresses: &[SocketAddrV4], files: &[(&str, &str)]) -> MudServer {
        let dir = std::env::temp_dir().join(format!("{}-mud", lab.id));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let names: Vec<String> = addresses.iter().map(|a| format!("IP:{}", a.ip())).collect();
        let server_extensions = format!("subjectAltName={}\nextendedKeyUsage=serverAuth\n", names.join(","));
        ca_and_leaf(&dir, "tls-ca", "server", &server_extensions);
        ca_and_leaf(&dir, "mud-anchor", "signer", "keyUsage=critical,digitalSignature\n");
        for (name, json) in files {
            std::fs::write(dir.join(name), json).unwrap();
            let signature = format!("{}.p7s", name.trim_end_matches(".json"));
            let args = ["cms", "-sign", "-binary", "-md", "sha256", "-outform", "DER", "-in", name, "-signer"];
            let mut args = args.to_vec();
            args.extend(["signer.pem", "-inkey", "signer.key", "-out", &signature]);
            openssl(&dir, &args);
        }
        let mut server = MudServer { children: Vec::new(), dir, addresses: addresses.to_vec() };
        for address in addresses {
            if address.ip().octets() != UPSTREAM_IP {
                lab::ip(&lab.up, &["addr", "add", &format!("{}/24", address.ip()), "dev", "eth0"]);
            }
            let accept = address.to_string();
            let child = Command::new("ip")
                .args(["netns", "exec", &lab.up, "openssl", "s_server", "-quiet", "-WWW", "-accept", &accept])
                .args(["-cert", "server.pem", "-key", "server.key"])
                .current_dir(&server.dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("starting openssl s_server");
            server.children.push(child);
            // Until it listens: a TCP connect from the upstream namespace succeeds.
            let deadline = Instant::now() + Duration::from_secs(5);
            while !connects(&lab.up, *address) {
                assert!(Instant::now() < deadline, "openssl s_server on {address} did not start listening");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        server
    }

    /// SHA-256 of the served file `name`, hex (by `openssl dgst`, not the gateway's code).
    pub fn sha256(&self, name: &str) -> String {
        let out = checked(Command::new("openssl").current_dir(&self.dir).args(["dgst", "-sha256", "-r", name]));
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace().next().expect("a digest").to_owned()
    }

    /// The `[mud]` section that allows every server's authority and trusts its anchors.
    pub fn config(&self) -> String {
        let authorities: Vec<String> = self
            .addresses
            .iter()
            .map(|a| if a.port() == 443 { format!("\"{}\"", a.ip()) } else { format!("\"{a}\"") })
            .collect();
        format!(
            "[mud]\nauthorities = [{}]\ntrust_anchors = \"{}\"\ntls_roots = \"{}\"\n",
            authorities.join(", "),
            self.dir.join("mud-anchor.pem").display(),
            self.dir.join("tls-ca.pem").display()
        )
    }
}

fn connects(ns: &str, address: SocketAddrV4) -> bool {
    let probe = format!("exec 3<>/dev/tcp/{}/{}", address.ip(), address.port());
    let mut command = Command::new("ip");
    // Refused until the server listens: not worth a line of output each time.
    command.args(["netns", "exec", ns, "bash", "-c", &probe]).stderr(Stdio::null());
    command.status().is_ok_and(|status| status.success())
}

impl Drop for MudServer {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The upstream host's address on `port`, where the lab's first MUD server listens.
pub fn upstream(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(UPSTREAM_IP), port)
}
