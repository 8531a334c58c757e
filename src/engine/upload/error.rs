//! Why an upload failed, and what follows: whether the attempt counts, and how the file goes
//! again (resume, start over, fail, or block its job).

use std::path::Path;

use crate::core::plan::PlanError;
use crate::s3::{ErrorKind, S3Error};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("{0}")]
    S3(#[from] S3Error),
    #[error("verification failed: {0}")]
    Verify(String),
    /// The store took an object option (a class, an encryption, metadata, tags) and the
    /// object does not carry it.
    #[error("{0}")]
    OptionsNotApplied(String),
    /// The object must be sent again but ferry removed its local file after the upload
    /// (`after_upload: delete`).
    #[error("{0}")]
    LocalFileRemoved(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why an attempt is given back (`UploadError::not_the_files_fault`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    S3Unreachable,
    ChecksumsRefused,
    DatabaseUnavailable,
}

/// How a file whose attempt is given back goes again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refund {
    pub cause: Cause,
    /// From now, in milliseconds.
    pub delay_ms: i64,
    /// Resume the open multipart upload (else it is let go of, and the file starts over).
    pub keep_upload: bool,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Try again later, resuming the multipart upload (a passing fault).
    Resume,
    /// Try again later from scratch (the upload itself is suspect).
    StartOver,
    /// The bucket refused the job: block the job with the reason.
    BlockJob,
    /// Trying again cannot help until someone acts (permissions on the file, a 6 TiB file).
    Fail,
}

impl UploadError {
    /// A short, fixed name for the kind of failure (a metrics label).
    pub fn reason(&self) -> &'static str {
        match self {
            UploadError::Read { .. } => "read",
            UploadError::Plan(PlanError::TooLarge { .. }) => "too_large",
            UploadError::Plan(PlanError::KeyTooLong { .. }) => "key_too_long",
            UploadError::S3(e) => match e.kind {
                ErrorKind::Transient => "s3_transient",
                ErrorKind::NoSuchBucket => "no_such_bucket",
                ErrorKind::AccessDenied => "access_denied",
                ErrorKind::NoSuchUpload => "no_such_upload",
                ErrorKind::NotSupported => "not_supported",
                ErrorKind::Malformed => "s3_malformed",
                ErrorKind::ChecksumsRefused => "checksums_refused",
                ErrorKind::Permanent => "s3_refused",
            },
            UploadError::Verify(_) => "verification",
            UploadError::OptionsNotApplied(_) => "options_not_applied",
            UploadError::LocalFileRemoved(_) => "local_file_removed",
            UploadError::Store(_) => "database",
        }
    }

    /// When the attempt failed through no fault of the file's, so that it must not count: how
    /// the file goes again. S3 gave no answer at all (the breaker then holds every upload); the
    /// store refused the checksum headers (ferry sends none from now on); ferry's own database
    /// could not take a write (a full disk). None: the attempt counts.
    pub fn not_the_files_fault(&self) -> Option<Refund> {
        match self {
            UploadError::S3(e) if e.unreachable && self.recovery() == Recovery::Resume => {
                Some(Refund {
                    cause: Cause::S3Unreachable,
                    delay_ms: 0,
                    keep_upload: true,
                })
            }
            UploadError::S3(e) if e.kind == ErrorKind::ChecksumsRefused => Some(Refund {
                cause: Cause::ChecksumsRefused,
                delay_ms: 0,
                keep_upload: false,
            }),
            UploadError::Store(e) if e.is_unavailable() => Some(Refund {
                cause: Cause::DatabaseUnavailable,
                delay_ms: 1000,
                keep_upload: true,
            }),
            _ => None,
        }
    }

    pub fn recovery(&self) -> Recovery {
        match self {
            UploadError::S3(e) => match e.kind {
                ErrorKind::Transient => Recovery::Resume,
                ErrorKind::NoSuchBucket | ErrorKind::AccessDenied => Recovery::BlockJob,
                ErrorKind::NoSuchUpload
                | ErrorKind::Permanent
                | ErrorKind::Malformed
                | ErrorKind::ChecksumsRefused => Recovery::StartOver,
                // The store does not do what this upload needs: trying again cannot help.
                ErrorKind::NotSupported => Recovery::Fail,
            },
            UploadError::Read { source, .. }
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::InvalidData
                ) =>
            {
                Recovery::Fail
            }
            UploadError::Read { .. } | UploadError::Store(_) => Recovery::Resume,
            UploadError::Verify(_) => Recovery::StartOver,
            // The store keeps objects so: another try stores it the same way.
            UploadError::Plan(_) | UploadError::OptionsNotApplied(_) => Recovery::Fail,
            UploadError::LocalFileRemoved(_) => Recovery::Fail,
        }
    }
}

pub(super) fn read_error(path: &Path, source: std::io::Error) -> UploadError {
    UploadError::Read {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_happens_after_each_kind_of_failure() {
        let s3 = |kind| {
            UploadError::S3(S3Error {
                kind,
                message: String::new(),
                unreachable: false,
                congestion: false,
            })
        };
        assert_eq!(s3(ErrorKind::Transient).recovery(), Recovery::Resume);
        assert_eq!(s3(ErrorKind::NoSuchBucket).recovery(), Recovery::BlockJob);
        assert_eq!(s3(ErrorKind::AccessDenied).recovery(), Recovery::BlockJob);
        assert_eq!(s3(ErrorKind::NoSuchUpload).recovery(), Recovery::StartOver);
        assert_eq!(s3(ErrorKind::Permanent).recovery(), Recovery::StartOver);
        assert_eq!(
            UploadError::Verify(String::new()).recovery(),
            Recovery::StartOver
        );
        let read = |kind| UploadError::Read {
            path: String::new(),
            source: std::io::Error::from(kind),
        };
        assert_eq!(
            read(std::io::ErrorKind::PermissionDenied).recovery(),
            Recovery::Fail
        );
        assert_eq!(
            read(std::io::ErrorKind::Interrupted).recovery(),
            Recovery::Resume
        );
        assert_eq!(
            UploadError::Plan(PlanError::TooLarge { size: 0 }).recovery(),
            Recovery::Fail
        );
        // A store that takes an option and drops it keeps objects so: no retry.
        let dropped = UploadError::OptionsNotApplied(String::new());
        assert_eq!(dropped.recovery(), Recovery::Fail);
        assert_eq!(dropped.reason(), "options_not_applied");
    }
}
