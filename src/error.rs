//! One error type for the library and its one exhaustive mapping to errno.
//!
//! Rules: library code returns `Result<T, Error>`; the FUSE adapter turns an
//! `Error` into an errno with [`Error::errno`] and nothing else; EIO is the
//! fallback and every EIO is logged where it is produced (corruption,
//! I/O failure, poisoned store). The CLI prints `Display` as one line.

use std::path::PathBuf;

/// Everything that can go wrong in revfs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("file name too long")]
    NameTooLong,
    #[error("invalid argument")]
    Invalid,
    #[error("operation not permitted")]
    NotPermitted,
    #[error("permission denied")]
    Access,
    #[error("read-only file system")]
    ReadOnly,
    #[error("no such attribute")]
    NoAttr,
    #[error("result too large for the buffer")]
    Range,
    #[error("file too large")]
    TooBig,
    #[error("too many links")]
    TooManyLinks,
    #[error("operation not supported")]
    NotSupported,
    #[error("cross-device link")]
    CrossDevice,
    #[error("no space left on device")]
    NoSpace,
    /// A stored object failed its hash check or could not be decoded.
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: String, detail: String },
    /// An earlier write or sync failed; the store refuses writes until reopened.
    #[error("store refuses writes after an earlier I/O failure: {0}")]
    Poisoned(String),
    #[error("{path}: {source}")]
    IoAt {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The catalog (fjall) refused a read or write other than by an I/O
    /// error: damaged bytes, or a database that failed a write before.
    #[error(
        "metadata database: {0}; `revfs verify` checks the store, `revfs recover` rebuilds it from a replica"
    )]
    Db(String),
    /// A user-facing problem with a store path, format or configuration.
    #[error("{0}")]
    Store(String),
    /// No key slot of an encrypted store opens with the passphrase given.
    #[error("wrong passphrase for {}", .0.display())]
    WrongPassphrase(PathBuf),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<fjall::Error> for Error {
    fn from(e: fjall::Error) -> Self {
        match e {
            fjall::Error::Io(io) => Error::Io(io),
            other => Error::Db(other.to_string()),
        }
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Io(io) => Error::Io(io),
            other => Error::Db(other.to_string()),
        }
    }
}

impl Error {
    pub fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            what: what.into(),
            detail: detail.into(),
        }
    }

    pub fn io_at(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::IoAt { path, source }
    }

    /// The errno this error means at the FUSE boundary. Exhaustive on purpose:
    /// a new variant must decide its errno here.
    pub fn errno(&self) -> i32 {
        match self {
            Error::NotFound => libc::ENOENT,
            Error::Exists => libc::EEXIST,
            Error::NotDir => libc::ENOTDIR,
            Error::IsDir => libc::EISDIR,
            Error::NotEmpty => libc::ENOTEMPTY,
            Error::NameTooLong => libc::ENAMETOOLONG,
            Error::Invalid => libc::EINVAL,
            Error::NotPermitted => libc::EPERM,
            Error::Access => libc::EACCES,
            Error::ReadOnly => libc::EROFS,
            Error::NoAttr => libc::ENODATA,
            Error::Range => libc::ERANGE,
            Error::TooBig => libc::EFBIG,
            Error::TooManyLinks => libc::EMLINK,
            Error::NotSupported => libc::EOPNOTSUPP,
            Error::CrossDevice => libc::EXDEV,
            Error::NoSpace => libc::ENOSPC,
            Error::Io(e) | Error::IoAt { source: e, .. } => match e.raw_os_error() {
                Some(libc::ENOSPC) => libc::ENOSPC,
                Some(libc::EDQUOT) => libc::EDQUOT,
                _ => libc::EIO,
            },
            Error::Corrupt { .. } | Error::Poisoned(_) | Error::Db(_) | Error::Store(_) => {
                libc::EIO
            }
            Error::WrongPassphrase(_) => libc::EACCES,
        }
    }
}
