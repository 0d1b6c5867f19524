//! The `/metrics` endpoint: a listener thread that answers `GET /metrics`
//! with the registry's text exposition and anything else with 404. One
//! connection at a time (Prometheus scrapes a target serially), each with
//! a timeout, so a stuck client cannot hold the thread.

use crate::error::{Error, Result};
use prometheus_client::registry::Registry;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds `addr` (an error says so if it is taken) and serves `registry` on
/// a thread of its own for as long as the process runs.
pub fn serve(addr: &str, registry: Registry) -> Result<std::net::SocketAddr> {
    let listener =
        TcpListener::bind(addr).map_err(|e| Error::Store(format!("--metrics-addr {addr}: {e}")))?;
    let local = listener.local_addr().map_err(Error::Io)?;
    std::thread::Builder::new()
        .name("revfs-metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(c) => {
                        if let Err(e) = answer(c, &registry) {
                            tracing::debug!("metrics: {e}");
                        }
                    }
                    Err(e) => tracing::warn!("metrics: accept: {e}"),
                }
            }
        })
        .map_err(Error::Io)?;
    tracing::info!("metrics at http://{local}/metrics");
    Ok(local)
}

/// OpenMetrics text as the classic Prometheus text format (0.0.4): a
/// counter's family is named as its sample (`_total`), no `# EOF`.
fn classic(open: &str) -> String {
    let counters: std::collections::HashSet<&str> = open
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open.len());
    for l in open.lines() {
        if l == "# EOF" || l.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = l.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(l));
        out.push('\n');
    }
    out
}

fn answer(conn: TcpStream, registry: &Registry) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(&conn);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // The headers, up to the blank line: OpenMetrics to a client that
    // asks for it (Prometheus does), the classic text format otherwise.
    let (mut line, mut open) = (String::new(), false);
    while reader.read_line(&mut line)? > 2 {
        let l = line.to_ascii_lowercase();
        open |= l.starts_with("accept:") && l.contains("application/openmetrics-text");
        line.clear();
    }
    let mut words = request.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, kind, body) =
        if method == "GET" && (path == "/metrics" || path.starts_with("/metrics?")) {
            let text = super::render(registry);
            if open {
                ("200 OK", OPENMETRICS, text)
            } else {
                ("200 OK", PROMETHEUS_TEXT, classic(&text))
            }
        } else {
            (
                "404 Not Found",
                "text/plain",
                "only /metrics is served here\n".to_string(),
            )
        };
    let mut w = &conn;
    write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    w.flush()
}
