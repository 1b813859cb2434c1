//! A real etcd (Debian's `etcd-server`) on ephemeral loopback ports with its own data
//! folder, for the fleet tests. Stopped (killed) when dropped; `kill` and `start_again`
//! take it away and bring it back on the same ports and data, as an outage would.
//!
//! Its data lives in memory (`/dev/shm` where there is one): on a fresh machine's disk an
//! fsync can take seconds, and etcd syncs its log on every write, its health read included,
//! so a test would wait on the disk rather than on what it tests.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::free_port;

pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub client: SocketAddr,
    peer: SocketAddr,
    /// Serving https, asking clients for a certificate signed by `ca`.
    pub tls: Option<Tls>,
}

struct Failed {
    exited: bool,
    message: String,
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

fn data_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::Builder::new()
            .prefix("banyan-etcd")
            .tempdir_in(shm)
        {
            return dir;
        }
    }
    tempfile::tempdir().expect("etcd data dir")
}

impl Etcd {
    pub fn start() -> Etcd {
        let mut e = Etcd {
            child: None,
            dir: data_dir(),
            client: ([127, 0, 0, 1], free_port()).into(),
            peer: ([127, 0, 0, 1], free_port()).into(),
            tls: None,
        };
        e.first_start();
        e
    }

    /// etcd over https with a certificate for 127.0.0.1 signed by `ca`, requiring client
    /// certificates signed by it too.
    pub fn start_tls(ca: &super::pki::Ca) -> Etcd {
        let dir = data_dir();
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
        e.first_start();
        e
    }

    /// Starts it on its new ports; should another process have taken one since it was
    /// picked (etcd exits), on fresh ports.
    fn first_start(&mut self) {
        for _ in 0..2 {
            match self.launch() {
                Ok(()) => return,
                Err(Failed { exited: true, .. }) => {
                    self.kill();
                    let _ = std::fs::remove_dir_all(self.dir.path().join("data"));
                    self.client = ([127, 0, 0, 1], free_port()).into();
                    self.peer = ([127, 0, 0, 1], free_port()).into();
                }
                Err(f) => panic!("{}", f.message),
            }
        }
        self.start_again();
    }

    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.client)
    }

    /// Starts it again after `kill`, on the same ports and data.
    pub fn start_again(&mut self) {
        if let Err(f) = self.launch() {
            panic!("{}", f.message);
        }
    }

    fn launch(&mut self) -> Result<(), Failed> {
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
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.log())
                    .expect("etcd log file"),
            ))
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        let addr = self.client;
        if self.tls.is_some() {
            // Its health answer needs a client certificate: a listening port is enough
            // here, the replicas wait for the store themselves.
            return self.wait_for("etcd to listen", || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            });
        }
        self.wait_for("etcd to answer", || {
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
        })
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// [`wait_until`], failing with what etcd said (and how it ended, if it did) instead of
    /// a bare timeout.
    fn wait_for(&mut self, what: &str, mut cond: impl FnMut() -> bool) -> Result<(), Failed> {
        let start = std::time::Instant::now();
        while !cond() {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || start.elapsed() >= super::DEADLINE {
                let log = std::fs::read_to_string(self.log()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                let tail = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
                return Err(Failed {
                    exited: exited.is_some(),
                    message: format!(
                        "timed out waiting for {what} (exited: {exited:?}); its log ends:\n{tail}"
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
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
