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
        };
        e.start_again();
        e
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.client)
    }

    /// Starts it again after `kill`, on the same ports and data.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "etcd is running");
        let (client, peer) = (
            format!("http://{}", self.client),
            format!("http://{}", self.peer),
        );
        let child = Command::new(binary())
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
