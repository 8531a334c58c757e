//! Prometheus metrics: what ferry counts while it works, kept in `prometheus-client` types and
//! encoded by it for GET /metrics (Prometheus text format 0.0.4).
//!
//! Counters and histograms live in one process-wide registry, updated with relaxed atomics on
//! the hot paths (a part sent, a request retried); gauges that describe the database (jobs by
//! state, files waiting) are computed when /metrics is read, so they are never stale. Labels are
//! closed sets of static strings (S3 operations, failure reasons): no job ids or paths, so the
//! series stay few and /metrics shows nothing a probe should not.
//!
//! Counters are registered without their `_total`: the encoder adds it, so the series are
//! `ferry_uploaded_bytes_total` and so on, the names users' dashboards know.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter as PromCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge as PromGauge;
use prometheus_client::metrics::histogram::Histogram as PromHistogram;
use prometheus_client::registry::Registry;

/// The `Content-Type` of what [`render`] writes.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Every metric ferry keeps.
pub struct Metrics {
    pub uploaded_bytes: Counter,
    pub uploaded_files: Counter,
    pub parts_uploaded: Counter,
    /// Objects brought to a job's new look without their bytes sent again, by how (`copy`:
    /// CopyObject, `tags`: PutObjectTagging).
    pub objects_restyled: LabeledCounter<1>,
    /// Objects deleted from S3 by prune, by what found them (`scan`: the file is gone,
    /// `resync`: untracked under the prefix).
    pub objects_pruned: LabeledCounter<1>,
    /// Local files removed after their objects were verified (`after_upload: delete`).
    pub local_files_removed: Counter,
    /// Objects found drifted in S3 by a resync and queued to upload again, by kind (`missing`,
    /// `changed`).
    pub drift_repaired: LabeledCounter<1>,
    /// Resyncs done (prefix listings compared with the records).
    pub resyncs: Counter,
    /// S3 requests tried again after a passing fault, by operation (`UploadPart`: parts retried).
    pub s3_retries: LabeledCounter<1>,
    /// Failed upload attempts, by reason and by what happened next.
    pub upload_failures: LabeledCounter<2>,
    pub scans: Counter,
    /// Times the circuit breaker opened: S3 could not be reached at all.
    pub s3_outages: Counter,
    pub uploads_in_flight: Gauge,
    /// Files allowed to upload at once: FERRY_CONCURRENCY, or the controller's current limit.
    pub upload_concurrency: Gauge,
    /// S3 answers that said the store is overloaded (503 SlowDown, throttling, timeouts).
    pub s3_pushback: Counter,
    /// FERRY_MAX_BANDWIDTH in bytes per second; 0: no cap.
    pub max_bandwidth: Gauge,
    /// Whole files, from the first byte read to the verified object.
    pub file_upload_seconds: Histogram,
    /// One part (or one single PutObject), retries included.
    pub part_upload_seconds: Histogram,
    pub scan_seconds: Histogram,
    /// All of the above, by their exposed names.
    registry: Registry,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let r = &mut Registry::with_prefix("ferry");
        Metrics {
            uploaded_bytes: Counter::registered(
                r,
                "uploaded_bytes",
                "Bytes acknowledged by S3 (parts and single objects)",
            ),
            uploaded_files: Counter::registered(r, "uploaded_files", "Files uploaded and verified"),
            parts_uploaded: Counter::registered(
                r,
                "parts_uploaded",
                "Multipart parts acknowledged by S3",
            ),
            objects_restyled: LabeledCounter::registered(
                r,
                "objects_restyled",
                "Objects brought to a job's new look in S3 without their bytes sent again, by how",
                ["how"],
            ),
            objects_pruned: LabeledCounter::registered(
                r,
                "objects_pruned",
                "Objects deleted from S3 by prune, by what found them (scan: file gone, resync: untracked)",
                ["found_by"],
            ),
            local_files_removed: Counter::registered(
                r,
                "local_files_removed",
                "Local files removed after their objects were verified (after_upload: delete)",
            ),
            drift_repaired: LabeledCounter::registered(
                r,
                "drift_repaired",
                "Objects found missing or changed in S3 by a resync and uploaded again, by kind",
                ["kind"],
            ),
            resyncs: Counter::registered(
                r,
                "resyncs",
                "Resyncs: a job's prefix listed and compared with what ferry recorded",
            ),
            s3_retries: LabeledCounter::registered(
                r,
                "s3_retries",
                "S3 requests tried again after a passing fault, by operation",
                ["operation"],
            ),
            upload_failures: LabeledCounter::registered(
                r,
                "upload_failures",
                "Failed upload attempts, by reason and by what follows (retry, failed, blocked)",
                ["reason", "outcome"],
            ),
            scans: Counter::registered(r, "scans", "Completed scans of source folders"),
            s3_outages: Counter::registered(
                r,
                "s3_outages",
                "Times S3 could not be reached at all and uploads paused until it answered",
            ),
            uploads_in_flight: Gauge::registered(
                r,
                "uploads_in_flight",
                "Files being uploaded right now",
            ),
            upload_concurrency: Gauge::registered(
                r,
                "upload_concurrency",
                "Files allowed to upload at once: FERRY_CONCURRENCY, or the adaptive controller's current limit",
            ),
            s3_pushback: Counter::registered(
                r,
                "s3_pushback",
                "S3 answers that said the store is overloaded (503 SlowDown, throttling, timeouts); each lowers the adaptive concurrency",
            ),
            max_bandwidth: Gauge::registered(
                r,
                "max_bandwidth_bytes_per_second",
                "The upload rate cap every upload shares (FERRY_MAX_BANDWIDTH); 0: no cap",
            ),
            file_upload_seconds: Histogram::registered(
                r,
                "file_upload_duration_seconds",
                "Time to upload and verify one file",
                &[
                    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
                ],
            ),
            part_upload_seconds: Histogram::registered(
                r,
                "part_upload_duration_seconds",
                "Time to send one part or single object, retries included",
                &[
                    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                ],
            ),
            scan_seconds: Histogram::registered(
                r,
                "scan_duration_seconds",
                "Time to scan one job's source folder",
                &[
                    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0,
                ],
            ),
            registry: std::mem::take(r),
        }
    }
}

/// A count that only grows.
#[derive(Default)]
pub struct Counter(PromCounter);

impl Counter {
    fn registered(r: &mut Registry, name: &str, help: &str) -> Self {
        let c = Counter::default();
        r.register(name, help, c.0.clone());
        c
    }
    pub fn add(&self, n: u64) {
        self.0.inc_by(n);
    }
    pub fn inc(&self) {
        self.0.inc();
    }
    pub fn value(&self) -> u64 {
        self.0.get()
    }
}

/// A value that goes up and down.
#[derive(Default)]
pub struct Gauge(PromGauge);

impl Gauge {
    fn registered(r: &mut Registry, name: &str, help: &str) -> Self {
        let g = Gauge::default();
        r.register(name, help, g.0.clone());
        g
    }
    pub fn add(&self, n: i64) {
        self.0.inc_by(n);
    }
    pub fn set(&self, n: i64) {
        self.0.set(n);
    }
    pub fn value(&self) -> i64 {
        self.0.get()
    }
}

/// Holds a gauge one higher while it lives.
pub struct GaugeGuard(&'static Gauge);

impl GaugeGuard {
    pub fn new(gauge: &'static Gauge) -> Self {
        gauge.add(1);
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.add(-1);
    }
}

/// The labels of one series: name and value pairs, in the order the family names them.
type Labels<const N: usize> = [(&'static str, &'static str); N];

/// A counter per combination of `N` label values, under label names fixed at registration.
pub struct LabeledCounter<const N: usize> {
    names: [&'static str; N],
    family: Family<Labels<N>, PromCounter>,
}

impl<const N: usize> LabeledCounter<N> {
    fn new(names: [&'static str; N]) -> Self {
        LabeledCounter {
            names,
            family: Family::default(),
        }
    }
    fn registered(r: &mut Registry, name: &str, help: &str, names: [&'static str; N]) -> Self {
        let c = LabeledCounter::new(names);
        r.register(name, help, c.family.clone());
        c
    }
    pub fn inc(&self, values: &[&'static str; N]) {
        self.add(values, 1);
    }
    pub fn add(&self, values: &[&'static str; N], n: u64) {
        if n == 0 {
            return;
        }
        let labels: Labels<N> = std::array::from_fn(|i| (self.names[i], values[i]));
        self.family.get_or_create(&labels).inc_by(n);
    }
}

/// A histogram of durations over fixed upper bounds (seconds).
pub struct Histogram(PromHistogram);

impl Histogram {
    fn new(bounds: &[f64]) -> Self {
        Histogram(PromHistogram::new(bounds.iter().copied()))
    }
    fn registered(r: &mut Registry, name: &str, help: &str, bounds: &[f64]) -> Self {
        let h = Histogram::new(bounds);
        r.register(name, help, h.0.clone());
        h
    }
    pub fn observe(&self, took: Duration) {
        self.0.observe(took.as_secs_f64());
    }
}

/// What /metrics reads from the database at scrape time.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Jobs by state name (every state, zeros included).
    pub jobs: Vec<(&'static str, u64)>,
    /// Files by state name, over all jobs.
    pub files: Vec<(&'static str, u64)>,
    /// Files waiting to be uploaded (PENDING), over all jobs.
    pub queue_depth: u64,
    /// Multipart uploads to abort: `waiting` (the janitor tries again) and `given_up` (the
    /// store refused every try or does not do aborts).
    pub multipart_aborts: Vec<(&'static str, u64)>,
    /// The circuit breaker is open: S3 cannot be reached, uploads pause.
    pub s3_paused: bool,
}

/// The text exposition of every metric: the process's registry, then the gauges of `snapshot`
/// in a registry of their own, made for this scrape.
pub fn render(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail; the encoder's error type is fmt::Error all the same.
    let _ = prometheus_text::encode(&mut out, &get().registry);
    let _ = prometheus_text::encode(&mut out, &snapshot_registry(snapshot));
    out
}

fn snapshot_registry(snapshot: &Snapshot) -> Registry {
    let mut r = Registry::with_prefix("ferry");
    let gauge = |value: u64| {
        let g: PromGauge = PromGauge::default();
        g.set(i64::try_from(value).unwrap_or(i64::MAX));
        g
    };
    let by_state = |values: &[(&'static str, u64)]| {
        let family: Family<Labels<1>, PromGauge> = Family::default();
        for (state, n) in values {
            family
                .get_or_create(&[("state", *state)])
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        family
    };
    r.register(
        "s3_reachable",
        "1 while uploads go on, 0 while they pause because S3 cannot be reached",
        gauge(u64::from(!snapshot.s3_paused)),
    );
    r.register("jobs", "Upload jobs by state", by_state(&snapshot.jobs));
    r.register(
        "files",
        "Tracked files by state, over all jobs",
        by_state(&snapshot.files),
    );
    r.register(
        "queue_depth",
        "Files waiting to be uploaded (PENDING)",
        gauge(snapshot.queue_depth),
    );
    r.register(
        "multipart_aborts",
        "Multipart uploads let go of and not yet aborted: waiting for the janitor, or given up",
        by_state(&snapshot.multipart_aborts),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(name: &str, help: &str, metric: impl prometheus_client::registry::Metric) -> String {
        let mut r = Registry::with_prefix("x");
        r.register(name, help, metric);
        let mut out = String::new();
        prometheus_text::encode(&mut out, &r).unwrap();
        out
    }

    #[test]
    fn histograms_are_cumulative_and_end_with_inf() {
        let h = Histogram::new(&[0.1, 1.0]);
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_millis(500));
        h.observe(Duration::from_secs(5));
        let out = encoded("seconds", "help", h.0.clone());
        assert!(out.contains("# TYPE x_seconds histogram\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.1\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_sum 5.55\n"), "{out}");
        assert!(out.contains("x_seconds_count 3\n"), "{out}");
    }

    #[test]
    fn labeled_counters_render_one_series_per_label_set_with_total() {
        let c = LabeledCounter::new(["reason", "outcome"]);
        c.inc(&["read", "retry"]);
        c.add(&["read", "retry"], 2);
        c.inc(&["read", "failed"]);
        c.add(&["s3_refused", "failed"], 0);
        let out = encoded("failures", "help", c.family.clone());
        assert!(out.contains("# TYPE x_failures_total counter\n"), "{out}");
        assert!(
            out.contains("x_failures_total{reason=\"read\",outcome=\"retry\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("x_failures_total{reason=\"read\",outcome=\"failed\"} 1\n"),
            "{out}"
        );
        assert!(
            !out.contains("s3_refused"),
            "a zero add makes no series: {out}"
        );
    }

    #[test]
    fn a_scrape_keeps_the_names_dashboards_know() {
        let out = render(&Snapshot {
            jobs: vec![("PENDING", 1), ("COMPLETED", 2)],
            files: vec![("UPLOADED", 7)],
            queue_depth: 3,
            multipart_aborts: vec![("waiting", 0), ("given_up", 1)],
            s3_paused: true,
        });
        for line in [
            "# TYPE ferry_uploaded_bytes_total counter\n",
            "# TYPE ferry_file_upload_duration_seconds histogram\n",
            "# TYPE ferry_max_bandwidth_bytes_per_second gauge\n",
            "# TYPE ferry_upload_concurrency gauge\n",
            "ferry_s3_reachable 0\n",
            "ferry_jobs{state=\"COMPLETED\"} 2\n",
            "ferry_files{state=\"UPLOADED\"} 7\n",
            "ferry_queue_depth 3\n",
            "ferry_multipart_aborts{state=\"given_up\"} 1\n",
        ] {
            assert!(out.contains(line), "no {line:?} in\n{out}");
        }
        assert!(!out.contains("_total_total"), "{out}");
        assert!(!out.contains("# EOF"), "format 0.0.4 has no EOF: {out}");
    }
}
