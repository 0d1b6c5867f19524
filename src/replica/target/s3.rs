//! A replica in an S3 bucket (AWS, Ceph RGW, SeaweedFS, MinIO...), through
//! opendal's S3 service. Immutable objects are created with
//! `If-None-Match: *`, so an object is never replaced behind a reader's
//! back; a 412 is success when the object already holds our bytes (a
//! retried upload). Objects above [`MULTIPART_ABOVE`] go up in parts.
//! Every request is retried with exponential backoff and jitter on
//! temporary failures (5xx, throttling, timeouts) and bounded by a timeout.

use super::Target;
use crate::error::{Error, Result};
use opendal::{ErrorKind, Operator};
use std::fs::File;
use std::time::Duration;

/// Larger objects go by multipart upload, in parts of this size.
const MULTIPART_ABOVE: u64 = 16 << 20;
const PART: usize = 8 << 20;

pub struct S3Target {
    url: String,
    op: Operator,
    rt: tokio::runtime::Runtime,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// How to reach an S3 service.
#[derive(Clone, Debug, Default)]
pub struct S3Config {
    /// None: AWS itself.
    pub endpoint: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub region: String,
}

impl S3Config {
    /// The standard AWS environment: `AWS_ENDPOINT_URL` (a non-AWS
    /// server), `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`, `AWS_REGION` (default us-east-1).
    pub fn from_env() -> S3Config {
        S3Config {
            endpoint: env("AWS_ENDPOINT_URL_S3").or_else(|| env("AWS_ENDPOINT_URL")),
            access_key_id: env("AWS_ACCESS_KEY_ID"),
            secret_access_key: env("AWS_SECRET_ACCESS_KEY"),
            session_token: env("AWS_SESSION_TOKEN"),
            region: env("AWS_REGION")
                .or_else(|| env("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| "us-east-1".into()),
        }
    }
}

impl S3Target {
    /// The target `s3://BUCKET/PREFIX`, configured by the standard AWS
    /// environment ([`S3Config::from_env`]). No request is made here.
    pub fn new(url: &str) -> Result<S3Target> {
        S3Target::with_config(url, &S3Config::from_env())
    }

    /// The target `s3://BUCKET/PREFIX` on the service `cfg` names.
    pub fn with_config(url: &str, cfg: &S3Config) -> Result<S3Target> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| Error::Store(format!("{url}: not an s3:// URL")))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::Store(format!("{url}: no bucket in the URL")));
        }
        // The reqwest HTTP transport (first install wins; idempotent).
        opendal::install_default();
        let mut b = opendal::services::S3::default()
            .bucket(bucket)
            .root(&format!("/{}", prefix.trim_matches('/')))
            .region(&cfg.region)
            // Only the environment configures it: no profile files, and no
            // EC2 metadata lookups that hang off AWS.
            .disable_config_load()
            .disable_ec2_metadata();
        if let Some(e) = &cfg.endpoint {
            b = b.endpoint(e);
        }
        if let Some(k) = &cfg.access_key_id {
            b = b.access_key_id(k);
        }
        if let Some(k) = &cfg.secret_access_key {
            b = b.secret_access_key(k);
        }
        if let Some(t) = &cfg.session_token {
            b = b.session_token(t);
        }
        let op = Operator::new(b)
            .map_err(|e| Error::Store(format!("{url}: {}", one_line(&e))))?
            .layer(
                opendal::layers::RetryLayer::new()
                    .with_max_times(5)
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(5))
                    .with_jitter(),
            )
            .layer(
                opendal::layers::TimeoutLayer::new()
                    .with_timeout(Duration::from_secs(120))
                    .with_io_timeout(Duration::from_secs(30)),
            );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("revfs-s3")
            .enable_all()
            .build()
            .map_err(Error::Io)?;
        Ok(S3Target {
            url: url.trim_end_matches('/').to_string(),
            op,
            rt,
        })
    }

    fn err(&self, name: &str, e: opendal::Error) -> Error {
        let errno = match e.kind() {
            ErrorKind::RateLimited => "(throttled) ",
            _ => "",
        };
        Error::Store(format!("{}/{name}: {errno}{}", self.url, one_line(&e)))
    }

    /// Whether `name` holds the `len` bytes of `src` at `offset`.
    fn holds(&self, name: &str, src: &File, offset: u64, len: u64) -> Result<bool> {
        let Some(have) = self.get(name)? else {
            return Ok(false);
        };
        Ok(have.len() as u64 == len && have == super::read_range(src, offset, len)?)
    }
}

/// An opendal error as one line: its kind and the server's message.
fn one_line(e: &opendal::Error) -> String {
    let msg = e.message().lines().next().unwrap_or("").trim();
    format!("{} ({msg})", e.kind())
}

impl Target for S3Target {
    fn describe(&self) -> String {
        self.url.clone()
    }

    fn put_immutable(&self, name: &str, src: &File, offset: u64, len: u64) -> Result<()> {
        let put = self.rt.block_on(async {
            if len <= MULTIPART_ABOVE {
                let bytes = super::read_range(src, offset, len).map_err(|e| {
                    opendal::Error::new(ErrorKind::Unexpected, format!("reading the source: {e}"))
                })?;
                self.op
                    .write_with(name, bytes)
                    .if_not_exists(true)
                    .await
                    .map(|_| ())
            } else {
                let mut w = self
                    .op
                    .writer_with(name)
                    .if_not_exists(true)
                    .chunk(PART)
                    .await?;
                let mut at = 0;
                while at < len {
                    let n = (len - at).min(PART as u64);
                    let part = super::read_range(src, offset + at, n).map_err(|e| {
                        opendal::Error::new(
                            ErrorKind::Unexpected,
                            format!("reading the source: {e}"),
                        )
                    })?;
                    w.write(part).await?;
                    at += n;
                }
                w.close().await.map(|_| ())
            }
        });
        match put {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::ConditionNotMatch => {
                if self.holds(name, src, offset, len)? {
                    Ok(())
                } else {
                    Err(Error::Store(format!(
                        "{}/{name}: holds other bytes than this store's; refusing to replace it",
                        self.url
                    )))
                }
            }
            Err(e) => Err(self.err(name, e)),
        }
    }

    fn put_replace(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.rt
            .block_on(self.op.write(name, bytes.to_vec()))
            .map(|_| ())
            .map_err(|e| self.err(name, e))
    }

    fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        match self.rt.block_on(self.op.read(name)) {
            Ok(b) => Ok(Some(b.to_vec())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(name, e)),
        }
    }

    fn get_range(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let b = self
            .rt
            .block_on(async {
                self.op
                    .read_with(name)
                    .range(offset..offset + len as u64)
                    .await
            })
            .map_err(|e| self.err(name, e))?;
        if b.len() != len {
            return Err(Error::Store(format!(
                "{}/{name}: {} bytes at {offset}, wanted {len}",
                self.url,
                b.len()
            )));
        }
        Ok(b.to_vec())
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let entries = self
            .rt
            .block_on(async { self.op.list_with(prefix).recursive(true).await })
            .map_err(|e| self.err(prefix, e))?;
        let mut out: Vec<(String, u64)> = entries
            .into_iter()
            .filter(|e| e.metadata().mode() == opendal::EntryMode::FILE)
            .map(|e| {
                let size = e.metadata().content_length();
                (e.path().trim_start_matches('/').to_string(), size)
            })
            .collect();
        out.sort();
        Ok(out)
    }

    fn delete(&self, name: &str) -> Result<()> {
        match self.rt.block_on(self.op.delete(name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err(name, e)),
        }
    }
}
