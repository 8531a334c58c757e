//! Fair claiming: which jobs the next free slots go to, so that one job's million files do not
//! hold back another job's ten.
//!
//! Jobs take turns in id order, from the one after the last served, wrapping around. Each claim
//! offers the free slots to as many jobs as there are slots, in equal shares; slots a job cannot
//! fill (it has fewer files due) go to the oldest files of any job, so no slot idles while work
//! is due.

/// The jobs whose turn it is, at most `limit`: those after the last served first (`after`, in id
/// order), then those from the start (`from_start`, in id order), each once.
pub fn turn(after: Vec<String>, from_start: Vec<String>, limit: usize) -> Vec<String> {
    let mut jobs = after;
    jobs.truncate(limit);
    for job in from_start {
        if jobs.len() >= limit {
            break;
        }
        if !jobs.contains(&job) {
            jobs.push(job);
        }
    }
    jobs
}

/// How many of `limit` slots each of `jobs` jobs is offered, in turn order: equal shares, one
/// more for the first ones while the division leaves some over. Every job is offered at least
/// one when there are as many slots as jobs, which [`turn`] ensures.
pub fn shares(limit: usize, jobs: usize) -> Vec<usize> {
    if jobs == 0 {
        return Vec::new();
    }
    let (each, over) = (limit / jobs, limit % jobs);
    (0..jobs).map(|i| each + usize::from(i < over)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_jobs_after_the_last_served_come_first_then_the_turn_wraps() {
        assert_eq!(
            turn(ids(&["c", "d"]), ids(&["a", "b", "c", "d"]), 3),
            ids(&["c", "d", "a"])
        );
        // Every job once, even when the two lists overlap whole.
        assert_eq!(turn(ids(&["c"]), ids(&["a", "c"]), 5), ids(&["c", "a"]));
        assert_eq!(turn(ids(&["a", "b", "c"]), vec![], 2), ids(&["a", "b"]));
        assert!(turn(vec![], vec![], 4).is_empty());
    }

    #[test]
    fn shares_are_equal_and_add_up_to_the_slots() {
        assert_eq!(shares(64, 2), [32, 32]);
        assert_eq!(shares(10, 3), [4, 3, 3]);
        assert_eq!(shares(1, 1), [1]);
        assert!(shares(8, 0).is_empty());
        for limit in 1..40 {
            for jobs in 1..=limit {
                let s = shares(limit, jobs);
                assert_eq!(s.iter().sum::<usize>(), limit);
                assert!(s.iter().all(|&n| n >= 1));
                assert!(s.iter().max().unwrap() - s.iter().min().unwrap() <= 1);
            }
        }
    }
}
