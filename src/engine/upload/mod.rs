//! Uploading one file: a PutObject for small files, a multipart upload part by part for large
//! ones. Each part is read into memory from a process-wide budget of part buffers (PART_BUFFERS),
//! checksummed as it is read, sent with its checksum (S3 checks it on receipt; without one, its
//! ETag is checked against its MD5), and recorded in the store as soon as S3 acknowledges it, so
//! that a crash loses at most the parts in flight: the next attempt lists what the server holds
//! and sends only the missing parts.
//!
//! Every object is verified before it counts as uploaded, by the answer that stored it
//! (PutObject's, or CompleteMultipartUpload's with the composite checksum and `md5-of-md5s-N`
//! ETag): the ETag and checksum S3 computed from the bytes it received. When that answer proves
//! nothing, HeadObject reads the object back (size, checksum, ETag).

mod error;
mod local;
mod look;
mod resume;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::core::lifecycle::LocalIdentity;
use crate::core::md5::md5_many;
use crate::core::object::content_type;
use crate::core::plan::{
    UploadPlan, check_key, expected_etag, md5_digest, part_range, plan_upload,
};
use crate::core::spec::SymlinkPolicy;
use crate::core::verify::{Expected, Verdict, judge_etag};
use crate::s3::{ObjectInfo, ObjectStore, StoredAnswer, name_refused_option};
use crate::store::{ClaimedFile, OpenUpload, PartRecord, Store};
use error::read_error;
pub use error::{Cause, Recovery, Refund, UploadError};
use local::{Local, ReadPart, current_version, open_local, read_part};
pub use local::{identity_of, local_path};
use resume::{Resumed, expectations};

/// How an upload ended, short of an error.
#[derive(Debug)]
pub enum Outcome {
    /// In S3 and verified, from the file `read` (None when no file was read: a restyle of an
    /// object whose local file ferry removed).
    Uploaded {
        etag: Option<String>,
        read: Option<LocalIdentity>,
    },
    /// The file on disk is not the version claimed: its size and mtime now, or None when gone.
    Changed { now: Option<(u64, i64)> },
    /// The store no longer wants this upload (the job was deleted or a scan saw a change).
    Superseded,
}

impl Outcome {
    /// The outcome of an upload of the bytes of the file `read`.
    fn read_from(self, read: LocalIdentity) -> Self {
        match self {
            Outcome::Uploaded { etag, .. } => Outcome::Uploaded {
                etag,
                read: Some(read),
            },
            other => other,
        }
    }
}

/// Parts of one file sent at once: enough to hide a 100 ms round trip behind the sending of the
/// others (a 1 GiB file at 100 ms: 7.60 s with 4, 5.74 s with 6, 4.94 s with 8), few enough that
/// one large file stays inside the 64 MiB goal (47, 57 and 68 MiB peak RSS), and fewer than the
/// PART_BUFFERS every upload shares, so that a large file leaves buffers for the others.
/// BENCHMARKS.md "WAN" has the figures at each round trip.
pub const PARTS_IN_FLIGHT: usize = 6;

/// The memory budget of the bytes read for uploading, across every upload: this many part
/// sizes (40 MiB at the default 5 MiB), whatever the number of files in flight. A part being
/// read or sent holds its size of it, a small file read whole its own size: many small files go
/// at once, few large parts.
pub const PART_BUFFERS: usize = 8;

/// The budget is counted in KiB.
const BUDGET_UNIT: u64 = 1024;

/// The memory budget every upload shares (PART_BUFFERS part sizes), and the part buffers, reused.
///
/// Reused rather than allocated per part: a fresh 5 MiB allocation per part is faulted in page
/// by page, and freed ones made on the blocking pool's threads stay in those threads' malloc
/// arenas, so the peak memory grew beyond the buffers themselves.
pub struct PartBuffers {
    budget: Arc<Semaphore>,
    /// The whole budget, in BUDGET_UNITs.
    total: u32,
    free: std::sync::Mutex<Vec<Vec<u8>>>,
}

/// The right to one part buffer, and the buffer itself once one is free to reuse.
struct PartBuffer {
    _share: OwnedSemaphorePermit,
    reuse: Option<Vec<u8>>,
}

/// A share of the memory budget, held while a small file's bytes are in memory.
pub struct Share(#[allow(dead_code)] OwnedSemaphorePermit);

impl PartBuffers {
    /// The budget for parts of `chunk_size` (FERRY_CHUNK_SIZE).
    pub fn new(chunk_size: u64) -> Self {
        let total = (PART_BUFFERS as u64 * chunk_size).div_ceil(BUDGET_UNIT);
        let total = u32::try_from(total).unwrap_or(u32::MAX >> 3);
        PartBuffers {
            budget: Arc::new(Semaphore::new(total as usize)),
            total,
            free: std::sync::Mutex::default(),
        }
    }

    /// The units of the budget `bytes` take: never more than all of it, so that a part larger
    /// than the budget (a huge file's) still goes, alone.
    fn units(&self, bytes: u64) -> u32 {
        u32::try_from(bytes.div_ceil(BUDGET_UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, self.total)
    }

    fn ready(&self, share: OwnedSemaphorePermit) -> PartBuffer {
        let reuse = self.free.lock().expect("part buffers lock").pop();
        PartBuffer {
            _share: share,
            reuse,
        }
    }

    /// A buffer for a part of `len` bytes now if the budget has room, else None.
    fn try_take(&self, len: u64) -> Option<PartBuffer> {
        let share = self
            .budget
            .clone()
            .try_acquire_many_owned(self.units(len))
            .ok()?;
        Some(self.ready(share))
    }

    /// A buffer for a part of `len` bytes, once the budget has room.
    async fn take(&self, len: u64) -> PartBuffer {
        let share = self.share(len).await;
        self.ready(share.0)
    }

    /// A share of the budget for `bytes` read whole, once it has room.
    pub async fn share(&self, bytes: u64) -> Share {
        Share(
            self.budget
                .clone()
                .acquire_many_owned(self.units(bytes))
                .await
                .expect("the memory budget's semaphore is never closed"),
        )
    }

    /// Takes back a part's bytes for the next part, if nothing else holds them.
    fn give_back(&self, data: Bytes) {
        if let Ok(bytes) = data.try_into_mut() {
            let free = &mut self.free.lock().expect("part buffers lock");
            if free.len() < PART_BUFFERS {
                free.push(Vec::from(bytes));
            }
        }
    }
}

pub struct Uploader<'a> {
    pub store: &'a Store,
    pub s3: &'a ObjectStore,
    pub chunk_size: u64,
    pub links: SymlinkPolicy,
    /// Part buffers for the whole process (PART_BUFFERS), shared by every upload.
    pub part_buffers: &'a PartBuffers,
    /// True once the start-up orphan sweep has ended; a new multipart upload waits for it, or
    /// the sweep could take it for an orphan.
    pub sweep_done: tokio::sync::watch::Receiver<bool>,
}

/// What was sent, what S3 should now hold, and what its answer said it holds.
struct Sent {
    /// None when the MD5s were not computed (a checksum proves the bytes instead).
    expected_etag: Option<String>,
    expected_checksum: Option<String>,
    /// The ETag and checksum of the answer that stored the object (PutObject's,
    /// CompleteMultipartUpload's), when it carried them.
    answer: StoredAnswer,
}

impl Sent {
    fn expected(&self) -> Expected<'_> {
        Expected {
            etag: self.expected_etag.as_deref(),
            checksum: self.expected_checksum.as_deref(),
        }
    }

    /// What the answer that stored the object proves; an ETag that differs proves nothing
    /// unless `md5_etags` (not under SSE-KMS, whose ETags need not be MD5s of the bytes).
    fn verdict(&self, md5_etags: bool) -> Verdict {
        judge_etag(
            &self.expected(),
            self.answer.etag.as_deref(),
            self.answer.checksum.as_deref(),
            md5_etags,
        )
    }
}

/// S3 reported other bytes than those sent.
fn differs(key: &str, what: &str, reported: &str, expected: &str) -> UploadError {
    UploadError::Verify(format!(
        "S3 reports {what} {reported} for {key:?}, the bytes sent give {expected}"
    ))
}

/// Why sending stopped short of an object.
enum Stopped {
    Changed(Option<(u64, i64)>),
    Superseded,
}

impl Uploader<'_> {
    /// Uploads a file (or restyles its object). A store's refusal is named here, once, by the
    /// job's options it may be about: every request of the upload counts, the parts and the
    /// completion too, which carry no options but belong to an upload begun with them
    /// (SeaweedFS answers a bare 500 to each part of an SSE-KMS upload).
    #[tracing::instrument(skip_all, fields(upload_id = %file.upload_id, path = %file.path, size = file.size, attempt = file.attempt))]
    pub async fn upload(&self, file: &ClaimedFile) -> Result<Outcome, UploadError> {
        self.upload_file(file).await.map_err(|e| match e {
            UploadError::S3(e) => UploadError::S3(name_refused_option(e, &file.object)),
            other => other,
        })
    }

    async fn upload_file(&self, file: &ClaimedFile) -> Result<Outcome, UploadError> {
        let key = file.key();
        check_key(&key)?;
        if let Some(restyle) = &file.restyle
            && let Some(outcome) = self.restyle(file, &key, restyle).await?
        {
            return Ok(outcome);
        }
        if file.removed_locally {
            return Err(UploadError::LocalFileRemoved(format!(
                "the object at {key:?} must be sent again, but ferry removed its local file after the upload (after_upload: delete)"
            )));
        }
        let plan = plan_upload(file.size, self.chunk_size)?;
        // Every local step (resolve, stat, open, and for a small file the whole read and the
        // stat after it) in one trip to the blocking pool: per file, the hand-offs between
        // threads cost more than the work.
        let (folder, relative, links) = (file.source_folder.clone(), file.path.clone(), self.links);
        let part_size = match plan {
            UploadPlan::Single => None,
            UploadPlan::Multipart { part_size, .. } => Some(part_size),
        };
        let (claimed, whole) = ((file.size, file.mtime_ns), part_size.is_none());
        let mode = self.s3.checksum_mode();
        // A small file is read whole: its bytes hold a share of the memory budget until sent.
        let _share = if whole {
            Some(self.part_buffers.share(file.size).await)
        } else {
            None
        };
        let local = tokio::task::spawn_blocking(move || {
            open_local(&folder, &relative, links, claimed, whole.then_some(mode))
        })
        .await
        .map_err(|e| read_error(&file.source_folder, std::io::Error::other(e)))??;
        let (path, reader, read) = match local {
            Local::Changed(now) => return Ok(Outcome::Changed { now }),
            Local::Whole(data, checksum, read) => {
                return Ok(self
                    .put_single(file, &key, data, checksum)
                    .await?
                    .read_from(read));
            }
            Local::Open(path, f, read) => (path, Arc::new(f), read),
        };
        // Open only comes for a multipart plan.
        let part_size = part_size.unwrap_or(self.chunk_size);
        let sent = match self
            .put_multipart(file, &path, &key, reader, part_size)
            .await?
        {
            Ok(sent) => sent,
            Err(Stopped::Changed(now)) => return Ok(Outcome::Changed { now }),
            Err(Stopped::Superseded) => return Ok(Outcome::Superseded),
        };

        // The bytes read must be the version claimed from start to end, or the object may hold
        // a mix of two versions: then it goes again.
        match current_version(&path).await {
            Ok(now) if now == Some((file.size, file.mtime_ns)) => {}
            Ok(now) => return Ok(Outcome::Changed { now }),
            Err(source) => return Err(read_error(&path, source)),
        }
        Ok(self.settle(file, &key, sent).await?.read_from(read))
    }

    /// Judges the answer that stored the object. When it proves the bytes (a checksum, or an
    /// ETag in MD5 form, equal to what the bytes sent give), reading the object back would add
    /// a request and prove nothing more; when it proves nothing, HeadObject reads it back.
    ///
    /// Then the object must show the job's options (class, encryption, metadata, tags): a store
    /// that takes one and drops it fails the file, naming it, instead of a COMPLETED job whose
    /// objects are not what was asked for.
    async fn settle(
        &self,
        file: &ClaimedFile,
        key: &str,
        sent: Sent,
    ) -> Result<Outcome, UploadError> {
        let md5_etags = file.object.etags_are_md5();
        let head = match sent.verdict(md5_etags) {
            Verdict::Proven => None,
            Verdict::Differs {
                what,
                reported,
                expected,
            } => return Err(differs(key, what, &reported, &expected)),
            Verdict::Unproven => Some(self.verify(file, key, &sent, md5_etags).await?),
        };
        let etag = head
            .as_ref()
            .and_then(|h| h.etag.clone())
            .or(sent.answer.etag.clone());
        self.prove_options(file, key, sent.answer.sse.as_deref(), head)
            .await?;
        tracing::info!(key, bytes = file.size, "uploaded");
        Ok(Outcome::Uploaded { etag, read: None })
    }

    /// HeadObject must show the size, the ETag and the checksum the bytes sent give.
    async fn verify(
        &self,
        file: &ClaimedFile,
        key: &str,
        sent: &Sent,
        md5_etags: bool,
    ) -> Result<ObjectInfo, UploadError> {
        let info = self.s3.head_object(&file.bucket, key).await?;
        if info.size != file.size {
            return Err(UploadError::Verify(format!(
                "S3 holds {} bytes at {key:?}, the file has {}",
                info.size, file.size
            )));
        }
        let etag = info.etag.clone().or(sent.answer.etag.clone());
        // The size matched; an opaque ETag without a checksum (SSE-KMS on a store that keeps
        // none) is all some stores give, and is accepted.
        if let Verdict::Differs {
            what,
            reported,
            expected,
        } = judge_etag(
            &sent.expected(),
            etag.as_deref(),
            info.checksum.as_deref(),
            md5_etags,
        ) {
            return Err(differs(key, what, &reported, &expected));
        }
        Ok(info)
    }

    /// Sends a small file in one PutObject. Its answer carries the checksum S3 computed from the
    /// bytes it received (and an ETag, an MD5 on most stores), which settles it. The MD5 is
    /// computed only when the checksum cannot prove it: none is sent, or the answer carries none.
    async fn put_single(
        &self,
        file: &ClaimedFile,
        key: &str,
        data: Bytes,
        checksum: Option<String>,
    ) -> Result<Outcome, UploadError> {
        let sending = Instant::now();
        let answer = self
            .s3
            .put_object(
                &file.bucket,
                key,
                data.clone(),
                checksum.as_deref(),
                (&file.object, &content_type(&file.path)),
            )
            .await?;
        let metrics = crate::metrics::get();
        metrics.part_upload_seconds.observe(sending.elapsed());
        metrics.uploaded_bytes.add(file.size);
        // Without a checksum on both sides, the ETag is the proof, and it needs the MD5.
        let digest = (checksum.is_none() || answer.checksum.is_none()).then(|| md5_digest(&data));
        let sent = Sent {
            expected_etag: digest.map(|d| expected_etag(&[d], false)),
            expected_checksum: checksum,
            answer,
        };
        self.settle(file, key, sent).await
    }

    async fn put_multipart(
        &self,
        file: &ClaimedFile,
        path: &Path,
        key: &str,
        reader: Arc<std::fs::File>,
        part_size: u64,
    ) -> Result<Result<Sent, Stopped>, UploadError> {
        let version = file.version();
        let mode = self.s3.checksum_mode();
        let (upload, mut done) = match self.resume(file, key).await? {
            Resumed::Parts(upload, parts) => (upload, parts),
            Resumed::AlreadyComplete(sent) => return Ok(Ok(sent)),
            Resumed::Nothing => {
                // A closed channel means the engine is stopping: go on, it changes nothing.
                let _ = self.sweep_done.clone().wait_for(|done| *done).await;
                let id = self
                    .s3
                    .create_multipart_upload(
                        &file.bucket,
                        key,
                        (&file.object, &content_type(&file.path)),
                    )
                    .await?;
                let upload = OpenUpload {
                    multipart_upload_id: id,
                    part_size,
                    checksum: mode.as_str().to_owned(),
                    settings: Some(file.object.fingerprint()),
                };
                let recorded = match self.store.set_multipart_upload(version, &upload).await {
                    Ok(recorded) => recorded,
                    Err(e) => {
                        // Not recorded, so nothing would ever abort it: abort it now, while its
                        // id is known (the start-up sweep is the net if this fails too).
                        if let Err(abort) = self
                            .s3
                            .abort_multipart_upload(&file.bucket, key, &upload.multipart_upload_id)
                            .await
                        {
                            tracing::warn!(error = %abort, "cannot abort a multipart upload that could not be recorded; the next start's sweep will");
                        }
                        return Err(e.into());
                    }
                };
                if !recorded {
                    // Nobody would know of this upload unless it is queued for abort now.
                    self.store
                        .queue_abort(
                            &file.upload_id,
                            &upload.multipart_upload_id,
                            &file.bucket,
                            key,
                        )
                        .await?;
                    return Ok(Err(Stopped::Superseded));
                }
                tracing::debug!(multipart_upload_id = %upload.multipart_upload_id, part_size, "multipart upload created");
                (upload, BTreeMap::new())
            }
        };
        let part_size = upload.part_size;
        let parts = file.size.div_ceil(part_size);
        let upload_id = upload.multipart_upload_id.as_str();
        // Up to PARTS_IN_FLIGHT parts travel at once: reading stays in order on this task, and
        // each part is recorded as soon as S3 acknowledges it, in whatever order that happens,
        // so a crash still loses only the parts in flight.
        let missing: Vec<u64> = (1..=parts)
            .filter(|n| !done.contains_key(&(*n as i64)))
            .collect();
        let mut todo = missing.into_iter().peekable();
        // Declared before the parts in flight, which borrow it, so that it outlives them.
        let md5s = OwedMd5s::default();
        let mut in_flight = FuturesUnordered::new();
        loop {
            while in_flight.len() < PARTS_IN_FLIGHT {
                let Some(number) = todo.peek().copied() else {
                    break;
                };
                // A part buffer from the process-wide budget; with none free, wait for one of
                // this file's parts in flight, or (with none in flight) for another file's.
                let (offset, len) = part_range(file.size, part_size, number);
                let mut buffer = match self.part_buffers.try_take(len) {
                    Some(buffer) => buffer,
                    None if !in_flight.is_empty() => break,
                    None => self.part_buffers.take(len).await,
                };
                todo.next();
                let reuse = buffer.reuse.take().unwrap_or_default();
                let part =
                    match read_part(reader.clone(), file.size, offset, len, mode, reuse).await {
                        Ok(part) => part,
                        Err(e) => return changed_or(path, file, e).await,
                    };
                // The MD5 is needed only to judge S3's answer, so the part goes at once and its
                // MD5 is computed when an answer needs it, with the other parts owed by then.
                let md5 = self
                    .s3
                    .parts_need_md5()
                    .then(|| md5s.owe(part.data.clone()));
                in_flight
                    .push(self.send_part(file, key, upload_id, number, part, md5, &md5s, buffer));
            }
            let Some(sent) = in_flight.next().await else {
                break;
            };
            let Some(record) = sent? else {
                return Ok(Err(Stopped::Superseded));
            };
            done.insert(record.number, record);
        }
        // The store may have let go of this upload since the last part was recorded (a scan saw
        // the file change, the job was deleted): then it must not become the object.
        if !self.store.holds_upload(version, upload_id).await? {
            return Ok(Err(Stopped::Superseded));
        }
        let completed: Vec<crate::s3::UploadedPart> = done
            .values()
            .map(|p| crate::s3::UploadedPart {
                number: p.number as i32,
                etag: p.etag.clone(),
                checksum: p.checksum.clone(),
            })
            .collect();
        let answer = self
            .s3
            .complete_multipart_upload(&file.bucket, key, upload_id, &completed)
            .await?;
        tracing::debug!(
            multipart_upload_id = upload_id,
            parts,
            "multipart upload completed"
        );
        Ok(Ok(expectations(mode, &done, answer)))
    }

    /// Sends one part and records it; None when the file was superseded meanwhile. `md5` is the
    /// part's MD5 owed to `md5s`, when its ETag must prove it. The part's buffer (`_buffer`, from
    /// the budget) is given back when this ends.
    #[allow(clippy::too_many_arguments)]
    async fn send_part(
        &self,
        file: &ClaimedFile,
        key: &str,
        upload_id: &str,
        number: u64,
        part: ReadPart,
        md5: Option<Owed>,
        md5s: &OwedMd5s,
        _buffer: PartBuffer,
    ) -> Result<Option<PartRecord>, UploadError> {
        let part_number = i32::try_from(number).expect("at most 10,000 parts");
        let len = part.data.len() as u64;
        let sending = Instant::now();
        let acked = self
            .s3
            .upload_part(
                &file.bucket,
                key,
                upload_id,
                part_number,
                part.data.clone(),
                part.checksum.as_deref(),
            )
            .await;
        // The MD5 (if owed) is computed before the buffer goes back, so that nothing else holds
        // the bytes and the buffer can be reused.
        let md5 = match (md5, &acked) {
            (Some(owed), Ok(_)) => Some(
                md5s.settle(owed)
                    .await
                    .map_err(|e| UploadError::Verify(format!("part {number} of {key:?}: {e}")))?,
            ),
            _ => None,
        };
        // The request is done with the bytes, whatever its outcome: the buffer goes back.
        self.part_buffers.give_back(part.data);
        let acked = acked?;
        let metrics = crate::metrics::get();
        metrics.part_upload_seconds.observe(sending.elapsed());
        metrics.uploaded_bytes.add(len);
        metrics.parts_uploaded.inc();
        // S3 checks a part's checksum on receipt, and its answer says so where it carries the
        // checksum; where it does not, the ETag must be the MD5 computed (a store not known to
        // answer with checksums, or none sent).
        // Under SSE-KMS a part's ETag need not be its MD5: one that differs proves nothing.
        let md5 = md5.map(|d| expected_etag(&[d], false));
        let expected = Expected {
            etag: md5.as_deref(),
            checksum: part.checksum.as_deref(),
        };
        if let Verdict::Differs {
            what,
            reported,
            expected,
        } = judge_etag(
            &expected,
            Some(&acked.etag),
            acked.checksum.as_deref(),
            file.object.etags_are_md5(),
        ) {
            return Err(UploadError::Verify(format!(
                "part {number} of {key:?}: S3 answered {what} {reported}, the bytes sent give {expected}"
            )));
        }
        let record = PartRecord {
            number: number as i64,
            size: len as i64,
            etag: acked.etag,
            checksum: part.checksum,
            md5: md5.unwrap_or_default(),
        };
        if !self
            .store
            .record_part(file.version(), upload_id, &record)
            .await?
        {
            return Ok(None);
        }
        tracing::debug!(part = number, bytes = len, "part uploaded");
        Ok(Some(record))
    }
}

/// A part's MD5, once computed.
struct Owed {
    id: u64,
    digest: oneshot::Receiver<[u8; 16]>,
}

/// The MD5s a multipart upload owes for the parts it has sent, when their ETags must prove them
/// (ObjectStore::parts_need_md5). They are computed together, one part per SIMD lane
/// (core::md5), when the first answer needs one: by then the other parts in flight have usually
/// been read, and four MD5s in lanes take about a third longer than one alone (13.3 ms against
/// about 10 for 5 MiB parts here). Sending a part does not wait for its MD5.
#[derive(Default)]
struct OwedMd5s {
    queue: std::sync::Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    next_id: u64,
    owed: Vec<(u64, Bytes, oneshot::Sender<[u8; 16]>)>,
}

impl OwedMd5s {
    /// Owes the MD5 of `data` (a clone of the part's bytes, held until it is computed).
    fn owe(&self, data: Bytes) -> Owed {
        let (tx, rx) = oneshot::channel();
        let queue = &mut *self.queue.lock().expect("owed MD5s lock");
        let id = queue.next_id;
        queue.next_id += 1;
        queue.owed.push((id, data, tx));
        Owed { id, digest: rx }
    }

    /// The MD5 owed. If it is still to be computed, every one owed by now is computed with it, on
    /// the blocking pool; else an earlier call took it with its own, and it is waited for.
    async fn settle(&self, owed: Owed) -> Result<[u8; 16], String> {
        let batch = {
            let queue = &mut *self.queue.lock().expect("owed MD5s lock");
            if queue.owed.iter().any(|(id, ..)| *id == owed.id) {
                std::mem::take(&mut queue.owed)
            } else {
                Vec::new()
            }
        };
        if !batch.is_empty() {
            // Not cancelled with this future: whoever waits for one of these gets it.
            tokio::task::spawn_blocking(move || {
                let (data, senders): (Vec<Bytes>, Vec<_>) =
                    batch.into_iter().map(|(_, data, tx)| (data, tx)).unzip();
                let messages: Vec<&[u8]> = data.iter().map(|d| &d[..]).collect();
                let digests = md5_many(&messages);
                // The bytes are let go of before anyone is told, so buffers can be reused.
                drop(messages);
                drop(data);
                for (tx, digest) in senders.into_iter().zip(digests) {
                    let _ = tx.send(digest);
                }
            })
            .await
            .map_err(|e| format!("computing its MD5 failed: {e}"))?;
        }
        owed.digest
            .await
            .map_err(|_| "computing its MD5 failed".to_owned())
    }
}

/// A read failed: if the file changed under us that is the reason, else it is a read error.
async fn changed_or<T>(
    path: &Path,
    file: &ClaimedFile,
    err: std::io::Error,
) -> Result<Result<T, Stopped>, UploadError> {
    match current_version(path).await {
        Ok(now) if now != Some((file.size, file.mtime_ns)) => Ok(Err(Stopped::Changed(now))),
        _ => Err(read_error(path, err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn owed_md5s_are_computed_together_and_let_go_of_the_bytes() {
        let md5s = OwedMd5s::default();
        let parts: Vec<Bytes> = (0..5u8)
            .map(|i| Bytes::from(vec![i; 100_000 + usize::from(i)]))
            .collect();
        let owed: Vec<Owed> = parts.iter().map(|p| md5s.owe(p.clone())).collect();
        let mut owed = owed.into_iter();
        // The first answer computes all five; the others find theirs done.
        let first = md5s.settle(owed.next().unwrap()).await.unwrap();
        assert!(md5s.queue.lock().unwrap().owed.is_empty());
        assert_eq!(first, md5_digest(&parts[0]));
        // A part owed after that waits for an answer that needs it, so that it can share lanes:
        // the answers of the parts already computed leave it owed.
        let later = Bytes::from(vec![9u8; 70_000]);
        let later_owed = md5s.owe(later.clone());
        for (part, owed) in parts.iter().skip(1).zip(owed) {
            assert_eq!(md5s.settle(owed).await.unwrap(), md5_digest(part));
        }
        assert_eq!(md5s.queue.lock().unwrap().owed.len(), 1);
        assert_eq!(md5s.settle(later_owed).await.unwrap(), md5_digest(&later));
        assert!(later.try_into_mut().is_ok());
        // Nothing holds the bytes any more, so the buffers can be reused.
        for part in parts {
            assert!(part.try_into_mut().is_ok());
        }
    }
}
