//! The store's own tests, on an in-memory database.

use std::time::Duration;

use super::*;
use crate::core::diff::SeenFile;
use crate::core::model::{Blocker, FileState};
use crate::core::spec::{JobSpec, SpecFields};
use crate::store::Restyle;

/// The tallies triggers keep (migration 0005) against a count over the files themselves.
pub(super) async fn assert_tallies_agree(store: &Store) {
    let rows = sqlx::query_as::<_, (String, String, i64, i64, i64)>(
        "SELECT upload_job_id, state, COUNT(*), SUM(size), SUM(bytes_sent)
         FROM files GROUP BY upload_job_id, state",
    )
    .fetch_all(&store.pool)
    .await
    .unwrap();
    let counted = Store::tallies(rows).unwrap();
    assert_eq!(store.all_tallies().await.unwrap(), counted);
    for (job, tally) in &counted {
        assert_eq!(&store.job_tally(job).await.unwrap(), tally);
    }
}

/// A spec of the job `id`, with `edit` applied to its fields.
pub(super) fn spec_with(
    id: &str,
    folder: &str,
    bucket: &str,
    edit: impl FnOnce(&mut SpecFields),
) -> JobSpec {
    let mut fields = SpecFields {
        source_folder: folder.into(),
        destination_bucket: bucket.into(),
        ..SpecFields::default()
    };
    edit(&mut fields);
    JobSpec::parse(id, &fields).unwrap()
}

pub(super) fn spec(id: &str, folder: &str, bucket: &str) -> JobSpec {
    spec_with(id, folder, bucket, |_| {})
}

pub(super) async fn store_with_job() -> Store {
    let store = Store::open(&DatabaseLocation::Memory).await.unwrap();
    store
        .create_job("job", &spec("job", "/src", "bucket"))
        .await
        .unwrap();
    store
}

fn open(id: &str) -> OpenUpload {
    OpenUpload {
        multipart_upload_id: id.into(),
        part_size: 5,
        checksum: "crc32c".into(),
        settings: None,
    }
}

fn part(number: i64, size: i64) -> PartRecord {
    PartRecord {
        number,
        size,
        etag: format!("\"etag-{number}\""),
        checksum: Some("AAAAAA==".into()),
        md5: "00".repeat(16),
    }
}

pub(super) fn seen(path: &str, size: u64, mtime_ns: i64) -> SeenFile {
    SeenFile {
        path: path.into(),
        size,
        mtime_ns,
    }
}

/// What a scan records when it first sees these files of `job`.
pub(super) async fn add_files(store: &Store, job: &str, files: &[SeenFile]) {
    store
        .apply_scan_changes(job, "bucket", files, &[], &[], Duration::ZERO)
        .await
        .unwrap();
}

pub(super) fn verified(version: FileVersion, etag: Option<&str>) -> Verified {
    Verified {
        version,
        etag: etag.map(str::to_owned),
        read: None,
    }
}

/// What a scan records when a file of "job" is gone from disk.
pub(super) async fn removed_from_disk(store: &Store, file_id: i64) {
    store
        .apply_scan_changes("job", "bucket", &[], &[], &[file_id], Duration::ZERO)
        .await
        .unwrap();
}

/// What a scan records when it sees a file of "job" change on disk.
pub(super) async fn changed_on_disk(store: &Store, file_id: i64, now: SeenFile) {
    store
        .apply_scan_changes("job", "bucket", &[], &[(file_id, now)], &[], Duration::ZERO)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_job_id_is_taken_once() {
    let store = store_with_job().await;
    let again = store
        .create_job("job", &spec("job", "/other", "bucket"))
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(id)) if id == "job"));
    assert_tallies_agree(&store).await;
}

#[tokio::test]
async fn key_prefixes_in_one_bucket_must_not_overlap() {
    let store = store_with_job().await; // job/ in bucket
    let prefixed = |id: &str, bucket: &str, prefix: &str| {
        let prefix = prefix.to_owned();
        spec_with(id, "/src", bucket, move |f| f.key_prefix = Some(prefix))
    };
    for (id, prefix) in [("a", "job/sub/"), ("b", "jo"), ("c", "")] {
        let refused = store.create_job(id, &prefixed(id, "bucket", prefix)).await;
        assert!(
            matches!(&refused, Err(StoreError::Overlap { other, .. }) if other == "job"),
            "{prefix:?}: {refused:?}"
        );
        let put = store
            .apply_job(id, &prefixed(id, "bucket", prefix), Origin::Api)
            .await;
        assert!(matches!(put, Err(StoreError::Overlap { .. })), "{prefix:?}");
    }
    // Another bucket, or a prefix beside it, is fine; so is the job itself, changed.
    store
        .create_job("d", &prefixed("d", "other-bucket", ""))
        .await
        .unwrap();
    store
        .create_job("e", &prefixed("e", "bucket", "job-2/"))
        .await
        .unwrap();
    let (applied, _) = store
        .apply_job("job", &prefixed("job", "bucket", "job/v2/"), Origin::Api)
        .await
        .unwrap();
    assert_eq!(applied, Applied::Updated { reset: true });
    // And no job was stored by a refusal.
    assert_eq!(store.job_ids().await.unwrap(), ["job", "d", "e"]);
}

/// Each file's `(state, restyle, restyle_from)`, by path.
async fn restyles(store: &Store) -> Vec<(String, FileState, Option<String>, Option<String>)> {
    sqlx::query_as::<_, (String, String, Option<String>, Option<String>)>(
        "SELECT path, state, restyle, restyle_from FROM files ORDER BY path",
    )
    .fetch_all(&store.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(p, s, r, f)| (p, s.parse().unwrap(), r, f))
    .collect()
}

#[tokio::test]
async fn a_change_to_how_objects_look_restyles_what_is_in_s3_and_uploads_the_rest() {
    let store = store_with_job().await;
    add_files(&store, "job", &[seen("a", 1, 1), seen("b", 2, 1)]).await;
    let claimed = store.claim_files(2, &[]).await.unwrap();
    assert_eq!(claimed[0].key(), "job/a");
    assert_eq!(claimed[0].location(), "bucket/job/a");
    assert_eq!(claimed[0].restyle, None);
    store
        .set_multipart_upload(claimed[0].version(), &open("mpu-a"))
        .await
        .unwrap();
    assert!(
        store
            .mark_uploaded(claimed[1].version(), None)
            .await
            .unwrap()
    );

    // A pattern or an exclude changes no object.
    for edit in [
        (|f: &mut SpecFields| f.pattern = Some("*".into())) as fn(&mut SpecFields),
        |f| f.exclude = vec!["*.tmp".into()],
    ] {
        let (applied, _) = store
            .apply_job(
                "job",
                &spec_with("job", "/src", "bucket", edit),
                Origin::Api,
            )
            .await
            .unwrap();
        assert_eq!(applied, Applied::Updated { reset: false });
    }
    // Tags alone: the object in S3 (b) is retagged in place; the upload of a starts afresh.
    let tagged = |f: &mut SpecFields| {
        f.tags.insert("team".into(), "a".into());
    };
    let (applied, _) = store
        .apply_job(
            "job",
            &spec_with("job", "/src", "bucket", tagged),
            Origin::Api,
        )
        .await
        .unwrap();
    assert_eq!(applied, Applied::Updated { reset: true });
    assert_eq!(
        restyles(&store).await,
        [
            ("a".into(), FileState::Pending, None, None),
            (
                "b".into(),
                FileState::Pending,
                Some("tags".into()),
                Some("bucket/job/b".into())
            ),
        ]
    );
    // The open upload was queued for abort under the key it was begun with, for its job.
    let queued: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT key, upload_job_id FROM pending_aborts")
            .fetch_all(&store.pool)
            .await
            .unwrap();
    assert_eq!(queued, [("job/a".to_owned(), Some("job".to_owned()))]);
    // Then a new prefix and class before b was retagged: b is copied from where its bytes are.
    let moved = |f: &mut SpecFields| {
        f.key_prefix = Some("moved/".into());
        f.storage_class = Some("STANDARD_IA".into());
    };
    store
        .apply_job(
            "job",
            &spec_with("job", "/src", "bucket", moved),
            Origin::Api,
        )
        .await
        .unwrap();
    let claimed = store.claim_files(2, &[]).await.unwrap();
    let b = claimed.iter().find(|c| c.path == "b").unwrap();
    assert_eq!(b.key(), "moved/b");
    assert_eq!(
        b.restyle,
        Some(Restyle::Copy {
            bucket: "bucket".into(),
            key: "job/b".into()
        })
    );
    assert_eq!(
        claimed.iter().find(|c| c.path == "a").unwrap().restyle,
        None
    );
    // Once uploaded (copied), nothing is left to restyle; a change on disk uploads afresh.
    assert!(store.mark_uploaded(b.version(), None).await.unwrap());
    assert_eq!(restyles(&store).await[1].2, None);
    // The same spec again changes nothing.
    let (again, _) = store
        .apply_job(
            "job",
            &spec_with("job", "/src", "bucket", moved),
            Origin::Api,
        )
        .await
        .unwrap();
    assert_eq!(again, Applied::Unchanged);
    // A new folder forgets the files: they are others.
    store
        .apply_job("job", &spec("job", "/elsewhere", "bucket"), Origin::Api)
        .await
        .unwrap();
    assert!(restyles(&store).await.is_empty());
    assert_tallies_agree(&store).await;
    store
        .apply_job("job", &spec("job", "/src", "bucket"), Origin::Api)
        .await
        .unwrap();
    let row = store.get_job("job").await.unwrap().unwrap();
    let fields = row.fields().unwrap();
    assert_eq!(fields.key_prefix.as_deref(), Some("job/"));
    assert!(row.spec().unwrap().is_ok());
}

#[tokio::test]
async fn files_are_claimed_once_oldest_first_and_not_from_blocked_jobs() {
    let store = store_with_job().await;
    add_files(&store, "job", &[seen("a", 1, 1), seen("b", 2, 2)]).await;
    let first = store.claim_next_file().await.unwrap().unwrap();
    assert_eq!((first.path.as_str(), first.attempt), ("a", 1));
    assert_eq!(first.bucket, "bucket");
    store
        .set_job_error("job", Some((Blocker::BucketUnavailable, "bucket gone")))
        .await
        .unwrap();
    assert!(store.claim_next_file().await.unwrap().is_none());
    store.set_job_error("job", None).await.unwrap();
    let second = store.claim_next_file().await.unwrap().unwrap();
    assert_eq!(second.path, "b");
    assert!(store.claim_next_file().await.unwrap().is_none());
    assert_tallies_agree(&store).await;
}

#[tokio::test]
async fn several_files_are_claimed_at_once_oldest_first_each_once() {
    let store = store_with_job().await;
    let files: Vec<SeenFile> = (0..5).map(|i| seen(&format!("f{i}"), 1, 1)).collect();
    add_files(&store, "job", &files).await;
    let paths = |claimed: Vec<ClaimedFile>| -> Vec<String> {
        claimed.into_iter().map(|f| f.path).collect()
    };
    assert_eq!(
        paths(store.claim_files(3, &[]).await.unwrap()),
        ["f0", "f1", "f2"]
    );
    // A file whose older upload still runs is left until it ends.
    let busy = ["bucket/job/f3".to_owned()];
    assert_eq!(paths(store.claim_files(3, &busy).await.unwrap()), ["f4"]);
    assert_eq!(paths(store.claim_files(3, &[]).await.unwrap()), ["f3"]);
    assert!(store.claim_files(3, &[]).await.unwrap().is_empty());
    let tally = store.job_tally("job").await.unwrap();
    assert_eq!(tally.in_progress.files, 5);
    assert_tallies_agree(&store).await;
}

#[tokio::test]
async fn a_change_seen_by_a_scan_wins_over_the_upload_of_the_old_bytes() {
    let store = store_with_job().await;
    add_files(&store, "job", &[seen("a", 10, 1)]).await;
    let claimed = store.claim_next_file().await.unwrap().unwrap();
    assert!(
        store
            .set_multipart_upload(claimed.version(), &open("mpu-1"))
            .await
            .unwrap()
    );
    assert!(
        store
            .holds_upload(claimed.version(), "mpu-1")
            .await
            .unwrap()
    );
    assert!(
        !store
            .holds_upload(claimed.version(), "mpu-2")
            .await
            .unwrap()
    );
    // The scan sees the file grow while it uploads.
    changed_on_disk(&store, claimed.file_id, seen("a", 20, 2)).await;
    assert!(
        !store
            .record_part(claimed.version(), "mpu-1", &part(1, 5))
            .await
            .unwrap()
    );
    assert!(
        !store
            .mark_uploaded(claimed.version(), Some("etag"))
            .await
            .unwrap()
    );
    // Nor may the old upload be completed.
    assert!(
        !store
            .holds_upload(claimed.version(), "mpu-1")
            .await
            .unwrap()
    );
    // The old upload is queued for abort, and the new version waits its turn.
    let aborts = store.pending_aborts(10).await.unwrap();
    assert_eq!(aborts.len(), 1);
    assert_eq!(
        (
            aborts[0].key.as_str(),
            aborts[0].multipart_upload_id.as_str()
        ),
        ("job/a", "mpu-1")
    );
    let again = store.claim_next_file().await.unwrap().unwrap();
    assert_eq!((again.size, again.mtime_ns), (20, 2));
    assert!(store.mark_uploaded(again.version(), None).await.unwrap());
    let tally = store.job_tally("job").await.unwrap();
    assert_eq!(tally.uploaded.files, 1);
    assert_eq!(tally.uploaded.bytes, 20);
    assert_tallies_agree(&store).await;
}

#[tokio::test]
async fn uploads_are_marked_together_and_only_the_versions_still_in_progress() {
    let store = store_with_job().await;
    let files: Vec<SeenFile> = ["small", "multipart", "changed", "done"]
        .iter()
        .map(|p| seen(p, 10, 1))
        .collect();
    add_files(&store, "job", &files).await;
    let claimed = store.claim_files(4, &[]).await.unwrap();
    let [small, multipart, changed, done] = &claimed[..] else {
        panic!("four files claimed: {claimed:?}");
    };
    // One multipart upload with a part recorded; one file changed meanwhile; one marked
    // already.
    assert!(
        store
            .set_multipart_upload(multipart.version(), &open("mpu-1"))
            .await
            .unwrap()
    );
    assert!(
        store
            .record_part(multipart.version(), "mpu-1", &part(1, 5))
            .await
            .unwrap()
    );
    changed_on_disk(&store, changed.file_id, seen("changed", 20, 2)).await;
    assert!(store.mark_uploaded(done.version(), None).await.unwrap());

    let marked = store
        .mark_uploaded_all(&[
            verified(small.version(), Some("\"e-small\"")),
            verified(multipart.version(), Some("\"e-multi-1\"")),
            verified(changed.version(), None),
            verified(done.version(), Some("\"e-again\"")),
        ])
        .await
        .unwrap();
    assert_eq!(marked, [true, true, false, false]);
    let rows = store.list_files("job", None, None, 10).await.unwrap();
    let row = |path: &str| rows.iter().find(|r| r.path == path).unwrap();
    assert_eq!(row("small").etag.as_deref(), Some("\"e-small\""));
    assert_eq!(row("small").bytes_sent, 10);
    assert_eq!(row("multipart").etag.as_deref(), Some("\"e-multi-1\""));
    assert_eq!(row("multipart").multipart_upload_id, None);
    assert!(
        store
            .parts(multipart.file_id, "mpu-1")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(row("changed").state.0, FileState::Pending);
    assert_eq!(row("done").etag, None);
    let tally = store.job_tally("job").await.unwrap();
    assert_eq!(tally.uploaded.files, 3);
    assert!(store.mark_uploaded_all(&[]).await.unwrap().is_empty());
    assert_tallies_agree(&store).await;
}

#[tokio::test]
async fn a_failure_records_the_reason_and_lets_go_of_the_multipart_upload() {
    let store = store_with_job().await;
    add_files(&store, "job", &[seen("big", 10, 1)]).await;
    let claimed = store.claim_next_file().await.unwrap().unwrap();
    store
        .set_multipart_upload(claimed.version(), &open("mpu-2"))
        .await
        .unwrap();
    assert!(
        store
            .mark_failed(claimed.version(), "S3 said no")
            .await
            .unwrap()
    );
    let files = store.list_files("job", None, None, 10).await.unwrap();
    assert_eq!(files[0].state.0, FileState::Failed);
    assert_eq!(files[0].last_error.as_deref(), Some("S3 said no"));
    assert!(files[0].multipart_upload_id.is_none());
    assert_eq!(store.pending_aborts(10).await.unwrap().len(), 1);
    store.abort_done("mpu-2").await.unwrap();
    assert!(store.pending_aborts(10).await.unwrap().is_empty());
    assert_tallies_agree(&store).await;
}

#[tokio::test]
async fn interrupted_uploads_go_back_to_pending_at_start() {
    let store = store_with_job().await;
    add_files(&store, "job", &[seen("a", 10, 1)]).await;
    let claimed = store.claim_next_file().await.unwrap().unwrap();
    store
        .set_multipart_upload(claimed.version(), &open("mpu-3"))
        .await
        .unwrap();
    assert!(
        store
            .record_part(claimed.version(), "mpu-3", &part(1, 5))
            .await
            .unwrap()
    );
    assert_eq!(store.recover_interrupted().await.unwrap(), 1);
    // The upload and its parts are kept, to resume; nothing is aborted.
    let tally = store.job_tally("job").await.unwrap();
    assert_eq!((tally.pending.files, tally.pending.bytes_sent), (1, 5));
    assert!(store.pending_aborts(10).await.unwrap().is_empty());
    let again = store.claim_next_file().await.unwrap().unwrap();
    assert_eq!(again.resume, Some(open("mpu-3")));
    assert_eq!(again.attempt, 1, "an interrupted attempt is not counted");
    assert_eq!(
        store.parts(again.file_id, "mpu-3").await.unwrap(),
        vec![part(1, 5)]
    );
    assert_tallies_agree(&store).await;
}

#[tokio::test]
async fn deleting_a_job_removes_its_files_and_queues_its_open_uploads() {
    let store = store_with_job().await;
    add_files(&store, "job", &[seen("a", 10, 1), seen("b", 1, 1)]).await;
    let claimed = store.claim_next_file().await.unwrap().unwrap();
    store
        .set_multipart_upload(claimed.version(), &open("mpu-4"))
        .await
        .unwrap();
    assert!(store.delete_job("job").await.unwrap());
    assert!(!store.delete_job("job").await.unwrap());
    assert!(store.get_job("job").await.unwrap().is_none());
    assert_eq!(store.job_tally("job").await.unwrap().total_files(), 0);
    assert_eq!(store.pending_aborts(10).await.unwrap()[0].bucket, "bucket");
    // The uploader's next write finds nothing, so it stops.
    assert!(
        !store
            .record_part(claimed.version(), "mpu-4", &part(1, 5))
            .await
            .unwrap()
    );
    assert_tallies_agree(&store).await;
}

#[tokio::test]
async fn parts_are_recorded_counted_and_forgotten() {
    let store = store_with_job().await;
    add_files(&store, "job", &[seen("a", 12, 1)]).await;
    let claimed = store.claim_next_file().await.unwrap().unwrap();
    store
        .set_multipart_upload(claimed.version(), &open("mpu-5"))
        .await
        .unwrap();
    for p in [part(1, 5), part(2, 5), part(3, 2)] {
        assert!(
            store
                .record_part(claimed.version(), "mpu-5", &p)
                .await
                .unwrap()
        );
    }
    // Another upload id is not this file's upload.
    assert!(
        !store
            .record_part(claimed.version(), "other", &part(1, 5))
            .await
            .unwrap()
    );
    assert_eq!(
        store.job_tally("job").await.unwrap().in_progress.bytes_sent,
        12
    );
    store.forget_parts(claimed.file_id, &[2]).await.unwrap();
    let numbers: Vec<i64> = store
        .parts(claimed.file_id, "mpu-5")
        .await
        .unwrap()
        .iter()
        .map(|p| p.number)
        .collect();
    assert_eq!(numbers, vec![1, 3]);
    assert_eq!(
        store.job_tally("job").await.unwrap().in_progress.bytes_sent,
        7
    );
    assert!(store.mark_uploaded(claimed.version(), None).await.unwrap());
    assert!(
        store
            .parts(claimed.file_id, "mpu-5")
            .await
            .unwrap()
            .is_empty()
    );
    assert_tallies_agree(&store).await;
}

#[tokio::test]
async fn a_retry_waits_until_due_and_failed_files_can_be_put_back() {
    let store = store_with_job().await;
    add_files(&store, "job", &[seen("a", 1, 1)]).await;
    let claimed = store.claim_next_file().await.unwrap().unwrap();
    let due = now_ms() + 60_000;
    assert!(
        store
            .retry_later(claimed.version(), "503", due, true, true)
            .await
            .unwrap()
    );
    assert!(
        store.claim_next_file().await.unwrap().is_none(),
        "not due yet"
    );
    assert_eq!(store.next_retry_due().await.unwrap(), Some(due));
    assert!(
        store
            .retry_later(claimed.version(), "x", due, true, true)
            .await
            .is_ok()
    );
    sqlx::query("UPDATE files SET next_attempt_at = 0")
        .execute(&store.pool)
        .await
        .unwrap();
    let again = store.claim_next_file().await.unwrap().unwrap();
    assert_eq!(again.attempt, 2);
    assert!(store.mark_failed(again.version(), "gave up").await.unwrap());
    assert_eq!(store.retry_failed("job").await.unwrap(), 1);
    let third = store.claim_next_file().await.unwrap().unwrap();
    assert_eq!(third.attempt, 1, "attempts start again");
    assert_tallies_agree(&store).await;
}

#[tokio::test]
async fn a_refusing_bucket_blocks_the_job_without_failing_the_file() {
    let store = store_with_job().await;
    add_files(&store, "job", &[seen("a", 1, 1)]).await;
    let claimed = store.claim_next_file().await.unwrap().unwrap();
    store
        .block_job(claimed.version(), "job", "bucket gone")
        .await
        .unwrap();
    let job = store.get_job("job").await.unwrap().unwrap();
    assert_eq!(job.error.as_deref(), Some("bucket gone"));
    assert_eq!(store.job_tally("job").await.unwrap().pending.files, 1);
    assert!(store.claim_next_file().await.unwrap().is_none());
    assert_tallies_agree(&store).await;
}

#[tokio::test]
async fn removed_files_leave_the_count() {
    let store = store_with_job().await;
    add_files(&store, "job", &[seen("a", 10, 1), seen("b", 1, 1)]).await;
    let recorded = store.recorded_files("job").await.unwrap();
    removed_from_disk(&store, recorded["b"].file_id).await;
    let tally = store.job_tally("job").await.unwrap();
    assert_eq!((tally.total_files(), tally.total_bytes()), (1, 10));
    assert_tallies_agree(&store).await;
}

#[tokio::test]
async fn the_tallies_follow_every_change_to_the_files() {
    let store = store_with_job().await;
    store
        .create_job("other", &spec("other", "/o", "bucket"))
        .await
        .unwrap();
    let files = [
        seen("a", 12, 1),
        seen("b", 3, 1),
        seen("c", 0, 1),
        seen("d", 7, 1),
    ];
    add_files(&store, "job", &files).await;
    assert_tallies_agree(&store).await;
    let tally = store.job_tally("job").await.unwrap();
    assert_eq!((tally.pending.files, tally.pending.bytes), (4, 22));

    let claimed = store.claim_files(3, &[]).await.unwrap();
    // The other job's file comes after the claim, which would have given it its turn.
    add_files(&store, "other", &[seen("x", 4, 1)]).await;
    assert_tallies_agree(&store).await;
    let (a, b, c) = (&claimed[0], &claimed[1], &claimed[2]);
    store
        .set_multipart_upload(a.version(), &open("mpu-a"))
        .await
        .unwrap();
    store
        .record_part(a.version(), "mpu-a", &part(1, 5))
        .await
        .unwrap();
    assert_tallies_agree(&store).await;
    assert_eq!(
        store.job_tally("job").await.unwrap().in_progress.bytes_sent,
        5
    );
    store.forget_parts(a.file_id, &[1]).await.unwrap();
    assert_tallies_agree(&store).await;
    assert!(store.mark_uploaded(b.version(), None).await.unwrap());
    assert!(store.mark_failed(c.version(), "gone").await.unwrap());
    assert_tallies_agree(&store).await;
    // A change on disk while uploading, a retry, the failed file put back, a restart.
    changed_on_disk(&store, a.file_id, seen("a", 20, 2)).await;
    assert_tallies_agree(&store).await;
    assert_eq!(store.retry_failed("job").await.unwrap(), 1);
    let d = store.claim_next_file().await.unwrap().unwrap();
    assert!(
        store
            .retry_later(d.version(), "503", 0, true, true)
            .await
            .unwrap()
    );
    store.claim_next_file().await.unwrap().unwrap();
    assert!(store.recover_interrupted().await.unwrap() >= 1);
    assert_tallies_agree(&store).await;
    // A file gone from disk; then the job's folder changes, which forgets all its files.
    let recorded = store.recorded_files("job").await.unwrap();
    removed_from_disk(&store, recorded["d"].file_id).await;
    assert_tallies_agree(&store).await;
    store
        .apply_job("job", &spec("job", "/elsewhere", "bucket"), Origin::Api)
        .await
        .unwrap();
    assert_tallies_agree(&store).await;
    assert_eq!(store.job_tally("job").await.unwrap().total_files(), 0);
    // Deleting a job takes its tallies with it and leaves the other job's.
    assert!(store.delete_job("other").await.unwrap());
    assert_tallies_agree(&store).await;
    let left: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM file_tallies WHERE upload_job_id = 'other'")
            .fetch_one(&store.pool)
            .await
            .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn unreadable_object_options_block_their_job_and_strand_no_file() {
    let store = store_with_job().await;
    store
        .create_job("other", &spec("other", "/o", "bucket"))
        .await
        .unwrap();
    add_files(&store, "job", &[seen("a", 1, 1)]).await;
    add_files(&store, "other", &[seen("b", 1, 1)]).await;
    sqlx::query("UPDATE upload_jobs SET metadata = 'not json' WHERE id = 'job'")
        .execute(&store.pool)
        .await
        .unwrap();
    let claimed = store.claim_files(10, &[]).await.unwrap();
    let claimed: Vec<String> = claimed.into_iter().map(|c| c.path).collect();
    assert_eq!(claimed, ["b"], "the other job's file is still claimed");
    let job = store.get_job("job").await.unwrap().unwrap();
    assert_eq!(
        job.blocker().map(|(b, _)| b),
        Some(Blocker::InvalidSpec),
        "{job:?}"
    );
    let files = store.list_files("job", None, None, 10).await.unwrap();
    assert_eq!(
        files[0].state.0,
        FileState::Pending,
        "not stranded IN_PROGRESS"
    );
    assert_eq!(files[0].attempts, 0, "the attempt is not counted");
    assert_tallies_agree(&store).await;
}

#[tokio::test]
async fn a_page_of_files_in_one_state_is_read_from_its_index_in_path_order() {
    let store = store_with_job().await;
    let files: Vec<_> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|p| seen(p, 1, 1))
        .collect();
    add_files(&store, "job", &files).await;
    sqlx::query("UPDATE files SET state = 'FAILED' WHERE path IN ('b', 'd')")
        .execute(&store.writer)
        .await
        .unwrap();
    let paths = |rows: Vec<FileRow>| rows.into_iter().map(|r| r.path).collect::<Vec<_>>();
    let failed = Some(FileState::Failed);
    let page = |state, after, limit| store.list_files("job", state, after, limit);
    assert_eq!(paths(page(failed, None, 10).await.unwrap()), ["b", "d"]);
    assert_eq!(paths(page(failed, None, 1).await.unwrap()), ["b"]);
    assert_eq!(paths(page(failed, Some("b"), 10).await.unwrap()), ["d"]);
    assert_eq!(paths(page(None, Some("c"), 10).await.unwrap()), ["d", "e"]);
    assert_eq!(paths(page(None, None, 2).await.unwrap()), ["a", "b"]);

    for (sql, index) in [
        (files::LIST_IN_STATE, "files_by_job_state_path"),
        (files::LIST_ALL, "sqlite_autoindex_files"),
    ] {
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                .fetch_all(&store.pool)
                .await
                .unwrap();
        let plan: Vec<&str> = plan.iter().map(|row| row.3.as_str()).collect();
        assert!(
            plan.iter().any(|step| step.contains(index)),
            "{sql}: {plan:?}"
        );
        assert!(
            !plan.iter().any(|step| step.contains("TEMP B-TREE")),
            "no sort: {plan:?}"
        );
    }
}
