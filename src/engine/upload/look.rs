//! An object's look: proving that a stored object carries the job's options (class,
//! encryption, metadata, tags), and bringing an object already in S3 to a new look without
//! sending its bytes again (CopyObject, or PutObjectTagging for the tags alone).

use super::local::{Local, open_local};
use super::{Outcome, UploadError, Uploader, read_error};
use crate::core::object::content_type;
use crate::s3::{MAX_COPY_BYTES, ObjectInfo};
use crate::store::{ClaimedFile, Restyle};

impl Uploader<'_> {
    /// The stored object carries every option of the job, or the file fails naming those it
    /// lacks. One HeadObject for a job with a class, metadata or tags (none when the storing
    /// answer confirmed the encryption and nothing else is asked), and GetObjectTagging when the
    /// HeadObject does not count the tags.
    pub(super) async fn prove_options(
        &self,
        file: &ClaimedFile,
        key: &str,
        answered_sse: Option<&str>,
        head: Option<ObjectInfo>,
    ) -> Result<(), UploadError> {
        let o = &file.object;
        if !o.needs_proof(answered_sse) {
            return Ok(());
        }
        let mut look = match head {
            Some(info) => info.look,
            None => self.s3.head_object(&file.bucket, key).await?.look,
        };
        if look.sse.is_none() {
            look.sse = answered_sse.map(str::to_owned);
        }
        if !o.tags.is_empty() && look.tag_count.is_none() {
            look.tag_count = self.s3.tag_count(&file.bucket, key).await?;
        }
        let missing = o.missing_from(&look);
        if missing.is_empty() {
            return Ok(());
        }
        Err(UploadError::OptionsNotApplied(format!(
            "the store took this job's {} but does not keep it on {key:?}; the object is in the bucket without it",
            missing.join(", ")
        )))
    }

    /// Brings the object of a file whose bytes are in S3 already to the job's look, and proves
    /// it: Some(outcome) when done (or when the file changed on disk meanwhile), None when the
    /// file must be uploaded instead (the object is gone, too large to copy in one request, or
    /// the store will not copy or tag it).
    pub(super) async fn restyle(
        &self,
        file: &ClaimedFile,
        key: &str,
        restyle: &Restyle,
    ) -> Result<Option<Outcome>, UploadError> {
        // The object holds the bytes of the version claimed; the file must still be it, unless
        // ferry removed it after its upload (only the object is left, and it is the one).
        let read = if file.removed_locally {
            None
        } else {
            let (folder, relative, links) =
                (file.source_folder.clone(), file.path.clone(), self.links);
            let claimed = (file.size, file.mtime_ns);
            let local = tokio::task::spawn_blocking(move || {
                open_local(&folder, &relative, links, claimed, None)
            })
            .await
            .map_err(|e| read_error(&file.source_folder, std::io::Error::other(e)))??;
            match local {
                Local::Changed(now) => return Ok(Some(Outcome::Changed { now })),
                Local::Open(_, _, read) | Local::Whole(_, _, read) => Some(read),
            }
        };
        let answer = match restyle {
            Restyle::Copy { .. } if file.size > MAX_COPY_BYTES => return Ok(None),
            Restyle::Copy { bucket, key: from } => {
                self.s3
                    .copy_object(
                        (bucket, from),
                        &file.bucket,
                        key,
                        (&file.object, &content_type(&file.path)),
                    )
                    .await
            }
            Restyle::Tags => self
                .s3
                .put_object_tagging(&file.bucket, key, &file.object)
                .await
                .map(|()| Default::default()),
        };
        let answer = match answer {
            Ok(answer) => answer,
            // Passing: the next attempt restyles again.
            Err(e) if e.is_transient() => return Err(e.into()),
            Err(e) => {
                tracing::info!(key, error = %e, "the object cannot be brought to the new look in place; the file is uploaded again");
                return Ok(None);
            }
        };
        // The object must be the file's bytes still, in the new look.
        let info: ObjectInfo = self.s3.head_object(&file.bucket, key).await?;
        if info.size != file.size {
            tracing::warn!(
                key,
                stored = info.size,
                size = file.size,
                "the restyled object is not the file's size; the file is uploaded again"
            );
            return Ok(None);
        }
        let etag = info.etag.clone().or(answer.etag.clone());
        self.prove_options(file, key, answer.sse.as_deref(), Some(info))
            .await?;
        let how = match restyle {
            Restyle::Copy { .. } => "copied to its new look",
            Restyle::Tags => "retagged",
        };
        tracing::info!(
            key,
            bytes = file.size,
            how,
            "object restyled without sending its bytes"
        );
        crate::metrics::get().objects_restyled.inc(&[match restyle {
            Restyle::Copy { .. } => "copy",
            Restyle::Tags => "tags",
        }]);
        Ok(Some(Outcome::Uploaded { etag, read }))
    }
}
