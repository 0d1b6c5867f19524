//! A TCP proxy in front of a real server that, on demand, answers every
//! request with `503 Slow Down` (what S3 says when it sheds load), or every
//! upload with `403 QuotaExceeded` (what Ceph RGW says when a bucket's
//! quota is full) while reads, listings and deletes still reach the server.
//! In its normal mode every byte goes to and from the real server unchanged.
#![allow(dead_code)] // not every test binary injects faults

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct FaultProxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    upstream: SocketAddr,
    unavailable: AtomicBool,
    quota_full: AtomicBool,
    stop: AtomicBool,
    /// 503 answers given so far.
    refused: AtomicU64,
    /// Live piped connections (both halves), cut when a burst starts.
    live: Mutex<Vec<TcpStream>>,
}

impl FaultProxy {
    /// A proxy on 127.0.0.1 (a free port) to `upstream` (host:port).
    pub fn start(upstream: &str) -> FaultProxy {
        let upstream: SocketAddr = upstream.parse().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream,
            unavailable: AtomicBool::new(false),
            quota_full: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            refused: AtomicU64::new(0),
            live: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let thread = std::thread::spawn(move || {
            while !s.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let s = s.clone();
                        std::thread::spawn(move || s.serve(conn));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultProxy {
            addr,
            shared,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts (true) or ends a burst of 503s; a burst also cuts every
    /// connection that is open, so pooled ones meet it too.
    pub fn unavailable(&self, on: bool) {
        self.shared.unavailable.store(on, Ordering::SeqCst);
        if on {
            for c in self.shared.live.lock().unwrap().drain(..) {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
    }

    /// Starts (true) or ends a full quota: from then on each connection
    /// carries one request (`Connection: close` is added), and an upload
    /// (PUT, POST) is answered `403 QuotaExceeded`.
    pub fn quota_full(&self, on: bool) {
        self.shared.quota_full.store(on, Ordering::SeqCst);
        if on {
            for c in self.shared.live.lock().unwrap().drain(..) {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
    }

    /// How many requests were answered with 503 or 403.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }
}

impl Shared {
    fn serve(&self, mut conn: TcpStream) {
        let _ = conn.set_nodelay(true);
        let unavailable = self.unavailable.load(Ordering::SeqCst);
        let quota = self.quota_full.load(Ordering::SeqCst);
        let mut first = Vec::new();
        if unavailable || quota {
            let Some((head, rest)) = read_head(&mut conn) else {
                return;
            };
            let upload = head.starts_with(b"PUT ") || head.starts_with(b"POST ");
            if unavailable || upload {
                let (status, code) = match unavailable {
                    true => ("503 Slow Down", "SlowDown"),
                    false => ("403 Forbidden", "QuotaExceeded"),
                };
                let body = format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code></Error>"
                );
                let reply = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes());
                self.refused.fetch_add(1, Ordering::SeqCst);
                let _ = conn.shutdown(Shutdown::Write);
                return;
            }
            // Let the server close after this one request, so that the
            // next one comes on a new connection and is looked at too.
            let text = String::from_utf8_lossy(&head[..head.len() - 4]).into_owned();
            let kept: Vec<&str> = text
                .split("\r\n")
                .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
                .collect();
            first = format!("{}\r\nConnection: close\r\n\r\n", kept.join("\r\n")).into_bytes();
            first.extend_from_slice(&rest);
        }
        let Ok(mut up) = TcpStream::connect(self.upstream) else {
            return;
        };
        let _ = up.set_nodelay(true);
        if up.write_all(&first).is_err() {
            return;
        }
        {
            let mut live = self.live.lock().unwrap();
            live.push(conn.try_clone().unwrap());
            live.push(up.try_clone().unwrap());
        }
        let (mut c2, mut u2) = (conn.try_clone().unwrap(), up.try_clone().unwrap());
        let back = std::thread::spawn(move || {
            let _ = std::io::copy(&mut u2, &mut c2);
            let _ = c2.shutdown(Shutdown::Write);
        });
        let (mut c, mut u) = (conn, up);
        let _ = std::io::copy(&mut c, &mut u);
        let _ = u.shutdown(Shutdown::Write);
        let _ = back.join();
    }
}

/// The request head (through its blank line) and what came after it.
fn read_head(conn: &mut TcpStream) -> Option<(Vec<u8>, Vec<u8>)> {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = got.split_off(i + 4);
            let _ = conn.set_read_timeout(None);
            return Some((got, rest));
        }
        match conn.read(&mut b) {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&b[..n]),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.unavailable(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
