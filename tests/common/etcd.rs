//! A real etcd (Debian's `etcd-server`) on ephemeral loopback ports with its own data
//! folder, for the fleet tests. Stopped (killed) when dropped; `kill` and `start_again`
//! take it away and bring it back on the same ports and data, as an outage would.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_until};

pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub client: SocketAddr,
    peer: SocketAddr,
    /// Serving https, asking clients for a certificate signed by `ca`.
    pub tls: Option<Tls>,
}

pub struct Tls {
    pub ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn binary() -> PathBuf {
    std::env::var_os("ETCD")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|p| p.join("etcd"))
                    .find(|p| p.is_file())
            })
        })
        .expect("etcd is installed (.ci/run installs Debian's `etcd-server`)")
}

impl Etcd {
    pub fn start() -> Etcd {
        let mut e = Etcd {
            child: None,
            dir: tempfile::tempdir().expect("etcd data dir"),
            client: ([127, 0, 0, 1], free_port()).into(),
            peer: ([127, 0, 0, 1], free_port()).into(),
            tls: None,
        };
        e.start_again();
        e
    }

    /// etcd over https with a certificate for 127.0.0.1 signed by `ca`, requiring client
    /// certificates signed by it too.
    pub fn start_tls(ca: &super::pki::Ca) -> Etcd {
        let dir = tempfile::tempdir().expect("etcd data dir");
        let issued = ca.server(&["127.0.0.1", "localhost"], dir.path(), "etcd");
        let mut e = Etcd {
            child: None,
            client: ([127, 0, 0, 1], free_port()).into(),
            peer: ([127, 0, 0, 1], free_port()).into(),
            tls: Some(Tls {
                ca: ca.write(dir.path(), "etcd-ca"),
                cert: issued.cert,
                key: issued.key,
            }),
            dir,
        };
        e.start_again();
        e
    }

    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.client)
    }

    /// Starts it again after `kill`, on the same ports and data.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "etcd is running");
        let (client, peer) = (self.endpoint(), format!("http://{}", self.peer));
        let mut command = Command::new(binary());
        if let Some(t) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&t.cert)
                .arg("--key-file")
                .arg(&t.key)
                .arg("--trusted-ca-file")
                .arg(&t.ca)
                .arg("--client-cert-auth");
        }
        let child = command
            .args(["--name", "test"])
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("test={peer}")])
            .args(["--logger", "zap", "--log-level", "error"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        let addr = self.client;
        if self.tls.is_some() {
            // Its health answer needs a client certificate: a listening port is enough
            // here, the replicas wait for the store themselves.
            wait_until("etcd to listen", || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            });
            return;
        }
        wait_until("etcd to answer", || {
            let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
                return false;
            };
            use std::io::{Read, Write};
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            if write!(
                s,
                "GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            )
            .is_err()
            {
                return false;
            }
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            answer.contains("\"health\":\"true\"")
        });
    }

    /// Kills it, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}
