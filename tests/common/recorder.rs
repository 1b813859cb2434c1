//! A raw HTTP/1.1 upstream that frames requests by RFC 9112 with its own parse (httparse
//! for heads; `Content-Length`, or `Transfer-Encoding: chunked` read the way a lenient
//! server reads it) and records every request it parsed whole, so a test can see exactly
//! where a proxy's messages began and ended. It answers each with a small keep-alive
//! 200 naming what it saw, except under `/r/`, where it answers with broken framing.
//! Each connection runs on its own thread; dropping the recorder stops accepting.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as the upstream framed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub conn: u64,
    pub method: String,
    pub target: String,
    pub host: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// A chunked body's trailer field lines, as they came.
    pub trailers: Vec<String>,
}

impl Seen {
    /// "METHOD target body-length", as cases write what they expect.
    pub fn line(&self) -> String {
        format!("{} {} {}", self.method, self.target, self.body.len())
    }
}

pub struct Recorder {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl Recorder {
    pub fn start() -> Recorder {
        let listener = super::bind_loopback();
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (Arc::clone(&seen), Arc::clone(&stop));
        std::thread::spawn(move || {
            let ids = AtomicU64::new(0);
            for conn in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let id = ids.fetch_add(1, Ordering::Relaxed);
                let s = Arc::clone(&s);
                std::thread::spawn(move || serve(conn, id, &s));
            }
        });
        Recorder { addr, seen, stop }
    }

    /// Every request recorded since the last call.
    pub fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

enum Parsed {
    Need,
    Bad,
    Whole(usize, Seen),
}

/// A chunked body at the start of `buf`: (bytes taken, data, trailer field lines).
type Chunked = (usize, Vec<u8>, Vec<String>);

/// Decodes a chunked body at the start of `buf`. Extensions are read past up to CRLF, as
/// most servers do.
fn chunked(buf: &[u8]) -> Option<Result<Chunked, ()>> {
    let mut at = 0;
    let mut data = Vec::new();
    loop {
        let line_end = at + buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&buf[at..line_end]).ok();
        let size = line
            .and_then(|l| l.split(';').next())
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok());
        let Some(size) = size else {
            return Some(Err(()));
        };
        at = line_end + 2;
        if size == 0 {
            // Trailers up to the empty line.
            let mut trailers = Vec::new();
            loop {
                let end = at + buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
                if end == at {
                    return Some(Ok((end + 2, data, trailers)));
                }
                trailers.push(String::from_utf8_lossy(&buf[at..end]).into_owned());
                at = end + 2;
            }
        }
        let end = at.checked_add(size)?;
        data.extend_from_slice(buf.get(at..end)?);
        if buf.get(end..end + 2)? != b"\r\n" {
            return Some(Err(()));
        }
        at = end + 2;
    }
}

fn parse(buf: &[u8], conn: u64) -> Parsed {
    let mut hs = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut hs);
    let head = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Need,
        Err(_) => return Parsed::Bad,
    };
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let te = get("transfer-encoding");
    let (len, body, trailers) = if te
        .as_deref()
        .is_some_and(|t| t.to_ascii_lowercase().ends_with("chunked"))
    {
        match chunked(&buf[head..]) {
            None => return Parsed::Need,
            Some(Err(())) => return Parsed::Bad,
            Some(Ok(x)) => x,
        }
    } else if let Some(cl) = get("content-length") {
        let Ok(n) = cl.trim().parse::<usize>() else {
            return Parsed::Bad;
        };
        if buf.len() < head + n {
            return Parsed::Need;
        }
        (n, buf[head..head + n].to_vec(), Vec::new())
    } else {
        (0, Vec::new(), Vec::new())
    };
    Parsed::Whole(
        head + len,
        Seen {
            conn,
            method: req.method.unwrap_or("").to_string(),
            target: req.path.unwrap_or("").to_string(),
            host: get("host"),
            headers,
            body,
            trailers,
        },
    )
}

/// What the upstream writes for a request: broken framing under `/r/`.
fn answer(seen: &Seen) -> Vec<u8> {
    let broken: &[u8] = match seen.target.as_str() {
        "/r/dup-cl" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        "/r/cl-list" => b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
        "/r/cl-te" => b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
        "/r/te-gzip" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello",
        "/r/ext-lf" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;a\nb\r\nx\r\n0\r\n\r\n",
        "/r/conn-cl" => b"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\nhello",
        _ => b"",
    };
    if !broken.is_empty() {
        return broken.to_vec();
    }
    let body = format!(
        "{} host={}",
        seen.line(),
        seen.host.as_deref().unwrap_or("-")
    );
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn serve(mut conn: TcpStream, id: u64, seen: &Mutex<Vec<Seen>>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match parse(&buf, id) {
            Parsed::Whole(n, s) => {
                buf.drain(..n);
                let out = answer(&s);
                seen.lock().unwrap_or_else(|e| e.into_inner()).push(s);
                if conn.write_all(&out).is_err() {
                    return;
                }
                continue;
            }
            Parsed::Bad => return,
            Parsed::Need => {}
        }
        match conn.read(&mut chunk) {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    }
}
