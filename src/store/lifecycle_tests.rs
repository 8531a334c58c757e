//! The store's tests of what follows uploads: prunes and their guard, local removals, drift.

use super::tests::{add_files, removed_from_disk, seen, spec_with, verified};
use super::*;
use crate::core::diff::Local;
use crate::core::lifecycle::PruneHold;

/// A job "job" with these files, all uploaded, and `edit` applied to its spec.
async fn uploaded_job(
    paths: &[&str],
    edit: impl FnOnce(&mut crate::core::spec::SpecFields),
) -> Store {
    let store = Store::open(&DatabaseLocation::Memory).await.unwrap();
    store
        .create_job("job", &spec_with("job", "/src", "bucket", edit))
        .await
        .unwrap();
    let files: Vec<_> = paths.iter().map(|p| seen(p, 3, 7)).collect();
    add_files(&store, "job", &files).await;
    let claimed = store.claim_files(paths.len(), &[]).await.unwrap();
    let done: Vec<_> = claimed
        .iter()
        .map(|c| Verified {
            read: Some("1:2".into()),
            ..verified(c.version(), Some("\"etag\""))
        })
        .collect();
    assert!(
        store
            .mark_uploaded_all(&done)
            .await
            .unwrap()
            .iter()
            .all(|m| *m)
    );
    store
}

async fn id_of(store: &Store, path: &str) -> i64 {
    store.recorded_files("job").await.unwrap()[path].file_id
}

#[tokio::test]
async fn a_gone_file_is_pruned_a_few_at_once_and_many_only_once_confirmed() {
    let store = uploaded_job(&["a", "b", "c", "d"], |f| f.prune = true).await;
    // One of four: within the guard, released at once.
    removed_from_disk(&store, id_of(&store, "a").await).await;
    assert_eq!(store.guard_prunes("job").await.unwrap(), (1, None));
    let due = store.due_prunes(10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].key, "job/a");
    store.prune_done(due[0].id).await.unwrap();

    // Every file left gone: more than half, held.
    for p in ["b", "c", "d"] {
        removed_from_disk(&store, id_of(&store, p).await).await;
    }
    let (released, hold) = store.guard_prunes("job").await.unwrap();
    assert_eq!(released, 0);
    assert_eq!(
        hold,
        Some(PruneHold::TooMany {
            prunes: 3,
            objects: 3
        })
    );
    assert!(store.due_prunes(10).await.unwrap().is_empty());
    let job = store.get_job("job").await.unwrap().unwrap();
    assert!(job.prune_hold.unwrap().contains("3 of the job's 3"));

    // "c" comes back as it was: it is its object again, not uploaded anew, and not pruned.
    add_files(&store, "job", &[seen("c", 3, 7)]).await;
    let rows = store.list_files("job", None, None, 10).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state.0, crate::core::model::FileState::Uploaded);
    assert_eq!(rows[0].etag.as_deref(), Some("\"etag\""));
    assert_eq!(
        store.prune_counts(Some(&["job"])).await.unwrap()["job"].held,
        2
    );
    assert_eq!(store.prune_counts(None).await.unwrap()["job"].held, 2);
    assert!(
        store
            .prune_counts(Some(&["other"]))
            .await
            .unwrap()
            .is_empty()
    );

    // The confirm releases that batch.
    assert_eq!(
        store.confirm_prunes("job").await.unwrap(),
        Confirmed::Released(2)
    );
    let mut keys: Vec<_> = store
        .due_prunes(10)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.key)
        .collect();
    keys.sort();
    assert_eq!(keys, ["job/b", "job/d"]);
    assert!(
        store
            .get_job("job")
            .await
            .unwrap()
            .unwrap()
            .prune_hold
            .is_none()
    );
}

#[tokio::test]
async fn a_walk_error_prunes_nothing_and_refuses_the_confirm() {
    let store = uploaded_job(&["a", "b", "c"], |f| f.prune = true).await;
    removed_from_disk(&store, id_of(&store, "a").await).await;
    store
        .mark_scanned("job", 1, true, Some("sub: permission denied"))
        .await
        .unwrap();
    assert_eq!(
        store.guard_prunes("job").await.unwrap(),
        (0, Some(PruneHold::WalkError))
    );
    assert!(matches!(
        store.confirm_prunes("job").await.unwrap(),
        Confirmed::WalkError(_)
    ));
    assert!(store.due_prunes(10).await.unwrap().is_empty());
    // Once a scan reads everything, the one gone file is pruned.
    store.mark_scanned("job", 1, true, None).await.unwrap();
    assert_eq!(store.guard_prunes("job").await.unwrap(), (1, None));
}

#[tokio::test]
async fn without_prune_a_gone_file_only_leaves_the_job() {
    let store = uploaded_job(&["a", "b"], |_| {}).await;
    removed_from_disk(&store, id_of(&store, "a").await).await;
    assert!(store.prune_counts(None).await.unwrap().is_empty());
    assert_eq!(
        store.confirm_prunes("job").await.unwrap(),
        Confirmed::PruneOff
    );
}

#[tokio::test]
async fn a_moved_file_is_recorded_before_and_after_its_removal() {
    let store = uploaded_job(&["a", "b"], |f| f.after_upload = Some("delete".into())).await;
    let due = store.due_removals(10).await.unwrap();
    assert_eq!(due.len(), 2);
    assert_eq!(due[0].local_identity.as_deref(), Some("1:2"));
    let a = &due[0];
    assert!(store.removal_done(a.id, a.size, a.mtime_ns).await.unwrap());
    let recorded = store.recorded_files("job").await.unwrap();
    assert_eq!(recorded["a"].local, Local::Removed);
    assert_eq!(recorded["b"].local, Local::Removing);
    // A scan that finds "b" gone too (removed before a stop): done, not a deletion.
    store.removals_done(&[recorded["b"].file_id]).await.unwrap();
    assert_eq!(
        store.recorded_files("job").await.unwrap()["b"].local,
        Local::Removed
    );
    assert!(store.due_removals(10).await.unwrap().is_empty());
    assert_eq!(store.job_tally("job").await.unwrap().uploaded.files, 2);
}

#[tokio::test]
async fn a_job_that_keeps_its_files_removes_none() {
    let store = uploaded_job(&["a"], |_| {}).await;
    assert!(store.due_removals(10).await.unwrap().is_empty());
    // Switched to delete and back: what was due stays.
    let store = uploaded_job(&["a"], |f| f.after_upload = Some("delete".into())).await;
    store
        .apply_job(
            "job",
            &spec_with("job", "/src", "bucket", |_| {}),
            Origin::Api,
        )
        .await
        .unwrap();
    assert!(store.due_removals(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn drift_is_repaired_only_for_objects_recorded_before_the_listing() {
    let store = uploaded_job(&["a", "b"], |_| {}).await;
    let (a, b) = (id_of(&store, "a").await, id_of(&store, "b").await);
    // A listing begun before the upload was recorded proves nothing about it.
    assert_eq!(
        store
            .repair_drift(&[a], "2000-01-01T00:00:00.000Z", "drift")
            .await
            .unwrap(),
        0
    );
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let now = store.db_now().await.unwrap();
    assert_eq!(store.repair_drift(&[a, b], &now, "drift").await.unwrap(), 2);
    let rows = store.list_files("job", None, None, 10).await.unwrap();
    assert!(
        rows.iter()
            .all(|r| r.state.0 == crate::core::model::FileState::Pending)
    );
    assert_eq!(rows[0].last_error.as_deref(), Some("drift"));
    // A moved file's object cannot be sent again.
    let store = uploaded_job(&["a"], |f| f.after_upload = Some("delete".into())).await;
    let a = &store.due_removals(1).await.unwrap()[0];
    store.removal_done(a.id, a.size, a.mtime_ns).await.unwrap();
    let now = store.db_now().await.unwrap();
    assert_eq!(store.repair_drift(&[a.id], &now, "drift").await.unwrap(), 0);
}

#[tokio::test]
async fn untracked_objects_are_queued_only_for_a_pruning_job_under_its_prefix() {
    let store = uploaded_job(&["a"], |f| f.prune = true).await;
    let keys = [
        "job/a".to_owned(),
        "job/stray".to_owned(),
        "other/x".to_owned(),
    ];
    assert_eq!(
        store
            .queue_untracked("job", "bucket", "job/", &keys)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.prune_counts(Some(&["job"])).await.unwrap()["job"].held,
        1
    );
    let store = uploaded_job(&["a"], |_| {}).await;
    assert_eq!(
        store
            .queue_untracked("job", "bucket", "job/", &keys)
            .await
            .unwrap(),
        0
    );
}
