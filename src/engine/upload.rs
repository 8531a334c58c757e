//! Uploading one file: a PutObject for small files, a multipart upload part by part for large
//! ones, each part read into memory (so memory is bounded by concurrency x part size), checked
//! against its MD5, and the object verified after completion.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::core::plan::{
    EtagCheck, PlanError, UploadPlan, check_etag, expected_etag, md5_digest, object_key,
    part_range, plan_upload,
};
use crate::s3::{ObjectStore, S3Error};
use crate::scan::file_version;
use crate::store::{ClaimedFile, Store, StoreError};

/// How an upload ended, short of an error.
#[derive(Debug)]
pub enum Outcome {
    /// In S3 and verified.
    Uploaded { etag: Option<String> },
    /// The file on disk is not the version claimed: its size and mtime now, or None when gone.
    Changed { now: Option<(u64, i64)> },
    /// The store no longer wants this upload (the job was deleted or a scan saw a change).
    Superseded,
}

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
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Uploader<'a> {
    pub store: &'a Store,
    pub s3: &'a ObjectStore,
    pub chunk_size: u64,
}

impl Uploader<'_> {
    #[tracing::instrument(skip_all, fields(upload_id = %file.upload_id, path = %file.path, size = file.size, attempt = file.attempt))]
    pub async fn upload(&self, file: &ClaimedFile) -> Result<Outcome, UploadError> {
        let path = local_path(&file.source_folder, &file.path);
        match current_version(&path).await {
            Ok(now) if now == Some((file.size, file.mtime_ns)) => {}
            Ok(now) => return Ok(Outcome::Changed { now }),
            Err(source) => return Err(read_error(&path, source)),
        }
        let key = object_key(&file.upload_id, &file.path);
        let plan = plan_upload(file.size, self.chunk_size)?;
        let mut reader = match tokio::fs::File::open(&path).await {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Outcome::Changed { now: None });
            }
            Err(source) => return Err(read_error(&path, source)),
        };

        let sent = match plan {
            UploadPlan::Single => self.put_single(file, &path, &key, &mut reader).await?,
            UploadPlan::Multipart { part_size, parts } => {
                self.put_multipart(file, &path, &key, &mut reader, part_size, parts)
                    .await?
            }
        };
        let Sent::Done {
            expected_etag,
            etag,
        } = sent
        else {
            return Ok(match sent {
                Sent::Changed(now) => Outcome::Changed { now },
                _ => Outcome::Superseded,
            });
        };

        // The bytes read must be the version claimed from start to end, or the object may hold
        // a mix of two versions: then it goes again.
        match current_version(&path).await {
            Ok(now) if now == Some((file.size, file.mtime_ns)) => {}
            Ok(now) => return Ok(Outcome::Changed { now }),
            Err(source) => return Err(read_error(&path, source)),
        }

        let info = self.s3.head_object(&file.bucket, &key).await?;
        if info.size != file.size {
            return Err(UploadError::Verify(format!(
                "S3 holds {} bytes at {key:?}, the file has {}",
                info.size, file.size
            )));
        }
        let etag = info.etag.or(etag);
        if let Some(actual) = &etag
            && let EtagCheck::Mismatch { expected, actual } = check_etag(&expected_etag, actual)
        {
            return Err(UploadError::Verify(format!(
                "S3 answered ETag {actual} for {key:?}, the bytes sent give {expected}"
            )));
        }
        tracing::info!(key, bytes = file.size, "uploaded");
        Ok(Outcome::Uploaded { etag })
    }

    async fn put_single(
        &self,
        file: &ClaimedFile,
        path: &Path,
        key: &str,
        reader: &mut tokio::fs::File,
    ) -> Result<Sent, UploadError> {
        let data = match read_part(reader, 0, file.size).await {
            Ok(d) => d,
            Err(e) => return changed_or(path, file, e).await,
        };
        let digest = md5_digest(&data);
        let etag = self.s3.put_object(&file.bucket, key, data).await?;
        Ok(Sent::Done {
            expected_etag: expected_etag(&[digest], false),
            etag,
        })
    }

    async fn put_multipart(
        &self,
        file: &ClaimedFile,
        path: &Path,
        key: &str,
        reader: &mut tokio::fs::File,
        part_size: u64,
        parts: u64,
    ) -> Result<Sent, UploadError> {
        let version = file.version();
        let upload_id = self.s3.create_multipart_upload(&file.bucket, key).await?;
        if !self.store.set_multipart_upload(version, &upload_id).await? {
            // Nobody will know of this upload unless it is queued for abort now.
            self.store
                .queue_abort(&upload_id, &file.bucket, key)
                .await?;
            return Ok(Sent::Superseded);
        }
        tracing::debug!(multipart_upload_id = %upload_id, parts, part_size, "multipart upload created");
        let mut done = Vec::with_capacity(parts as usize);
        let mut digests = Vec::with_capacity(parts as usize);
        for number in 1..=parts {
            let (offset, len) = part_range(file.size, part_size, number);
            let data = match read_part(reader, offset, len).await {
                Ok(d) => d,
                Err(e) => return changed_or(path, file, e).await,
            };
            let digest = md5_digest(&data);
            let part_number = i32::try_from(number).expect("at most 10,000 parts");
            let part = self
                .s3
                .upload_part(&file.bucket, key, &upload_id, part_number, data)
                .await?;
            let expected = expected_etag(&[digest], false);
            if let EtagCheck::Mismatch { actual, .. } = check_etag(&expected, &part.etag) {
                return Err(UploadError::Verify(format!(
                    "part {number} of {key:?}: S3 answered ETag {actual}, the bytes sent give {expected}"
                )));
            }
            tracing::debug!(part = number, bytes = len, "part uploaded");
            done.push(part);
            digests.push(digest);
            if !self.store.record_bytes_sent(version, offset + len).await? {
                return Ok(Sent::Superseded);
            }
        }
        let etag = self
            .s3
            .complete_multipart_upload(&file.bucket, key, &upload_id, &done)
            .await?;
        Ok(Sent::Done {
            expected_etag: expected_etag(&digests, true),
            etag,
        })
    }
}

enum Sent {
    Done {
        expected_etag: String,
        etag: Option<String>,
    },
    Changed(Option<(u64, i64)>),
    Superseded,
}

/// Where a tracked file lives on disk.
fn local_path(source_folder: &Path, relative: &str) -> PathBuf {
    relative
        .split('/')
        .fold(source_folder.to_path_buf(), |p, c| p.join(c))
}

/// The file's size and mtime now; None when it is gone.
async fn current_version(path: &Path) -> std::io::Result<Option<(u64, i64)>> {
    match tokio::fs::metadata(path).await {
        Ok(meta) if meta.is_file() => Ok(Some(file_version(&meta))),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

async fn read_part(reader: &mut tokio::fs::File, offset: u64, len: u64) -> std::io::Result<Bytes> {
    let len = usize::try_from(len).map_err(std::io::Error::other)?;
    let mut buf = vec![0u8; len];
    reader.seek(SeekFrom::Start(offset)).await?;
    reader.read_exact(&mut buf).await?;
    Ok(Bytes::from(buf))
}

/// A read failed: if the file changed under us that is the reason, else it is a read error.
async fn changed_or(
    path: &Path,
    file: &ClaimedFile,
    err: std::io::Error,
) -> Result<Sent, UploadError> {
    match current_version(path).await {
        Ok(now) if now != Some((file.size, file.mtime_ns)) => Ok(Sent::Changed(now)),
        _ => Err(read_error(path, err)),
    }
}

fn read_error(path: &Path, source: std::io::Error) -> UploadError {
    UploadError::Read {
        path: path.display().to_string(),
        source,
    }
}
