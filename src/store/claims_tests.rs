//! The store's tests of claiming across jobs: jobs take turns, and no slot idles while work is
//! due.

use super::tests::{add_files, assert_tallies_agree, seen, spec};
use super::*;
use crate::core::model::Blocker;

/// A store with these jobs (each in a bucket of its own), each with `files` files.
async fn jobs_with_files(jobs: &[(&str, usize)]) -> Store {
    let store = Store::open(&DatabaseLocation::Memory).await.unwrap();
    for &(job, files) in jobs {
        store
            .create_job(job, &spec(job, &format!("/{job}"), &format!("b-{job}")))
            .await
            .unwrap();
        let seen: Vec<_> = (0..files)
            .map(|i| seen(&format!("f{i:03}"), 1, 1))
            .collect();
        add_files(&store, job, &seen).await;
    }
    store
}

/// The jobs of the files claimed, in the order claimed.
async fn claim_jobs(store: &Store, limit: usize) -> Vec<String> {
    let claimed = store.claim_files(limit, &[]).await.unwrap();
    claimed.into_iter().map(|f| f.upload_id).collect()
}

fn count(jobs: &[String], job: &str) -> usize {
    jobs.iter().filter(|j| *j == job).count()
}

#[tokio::test]
async fn a_small_job_is_not_held_back_by_a_large_one_older_than_it() {
    let store = jobs_with_files(&[("big", 100), ("small", 3)]).await;
    // Two jobs, four slots: two each.
    let first = claim_jobs(&store, 4).await;
    assert_eq!((count(&first, "big"), count(&first, "small")), (2, 2));
    // The small job's last file is in the next claim; its share left over goes to the big one.
    let second = claim_jobs(&store, 4).await;
    assert_eq!((count(&second, "big"), count(&second, "small")), (3, 1));
    assert_eq!(store.job_tally("small").await.unwrap().pending.files, 0);
    // One slot at a time, the jobs alternate.
    let store = jobs_with_files(&[("big", 100), ("small", 3)]).await;
    let mut order = Vec::new();
    for _ in 0..8 {
        order.extend(claim_jobs(&store, 1).await);
    }
    assert_eq!(
        order,
        ["big", "small", "big", "small", "big", "small", "big", "big"]
    );
    assert_tallies_agree(&store).await;
}

#[tokio::test]
async fn with_more_jobs_than_slots_every_job_has_a_turn_before_any_has_two() {
    let names: Vec<String> = (0..10).map(|i| format!("job{i}")).collect();
    let jobs: Vec<(&str, usize)> = names.iter().map(|n| (n.as_str(), 2)).collect();
    let store = jobs_with_files(&jobs).await;
    let mut claimed = Vec::new();
    for _ in 0..3 {
        claimed.extend(claim_jobs(&store, 3).await);
    }
    assert_eq!(claimed, names[..9], "nine turns, nine jobs, in id order");
    // The tenth job's turn, then the turn wraps to the first.
    assert_eq!(claim_jobs(&store, 3).await, ["job9", "job0", "job1"]);
    assert_tallies_agree(&store).await;
}

#[tokio::test]
async fn slots_a_job_cannot_use_go_to_the_oldest_files_of_the_others() {
    let store = jobs_with_files(&[("a-blocked", 5), ("b-waiting", 1), ("c-ready", 10)]).await;
    store
        .set_job_error(
            "a-blocked",
            Some((Blocker::BucketUnavailable, "bucket gone")),
        )
        .await
        .unwrap();
    // b's one file waits for a retry a minute away.
    let b = store.claim_files(1, &[]).await.unwrap();
    assert_eq!(b[0].upload_id, "b-waiting");
    assert!(
        store
            .retry_later(b[0].version(), "503", now_ms() + 60_000, true, true)
            .await
            .unwrap()
    );
    // a and b have their turn and nothing to give: every slot goes to c, oldest first.
    let claimed = store.claim_files(6, &[]).await.unwrap();
    let paths: Vec<_> = claimed
        .iter()
        .map(|f| (f.upload_id.as_str(), f.path.as_str()))
        .collect();
    assert_eq!(
        paths,
        [
            ("c-ready", "f000"),
            ("c-ready", "f001"),
            ("c-ready", "f002"),
            ("c-ready", "f003"),
            ("c-ready", "f004"),
            ("c-ready", "f005")
        ]
    );
    // A busy object is passed over in a job's share too.
    let busy = ["b-c-ready/c-ready/f006".to_owned()];
    let claimed = store.claim_files(2, &busy).await.unwrap();
    let paths: Vec<_> = claimed.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["f007", "f008"]);
    assert!(store.claim_files(0, &[]).await.unwrap().is_empty());
    assert_tallies_agree(&store).await;
}
