//! Prometheus metrics: what ferry counts while it works, and their text exposition (format
//! 0.0.4) for GET /metrics.
//!
//! Counters and histograms live in one process-wide registry, updated with relaxed atomics on
//! the hot paths (a part sent, a request retried); gauges that describe the database (jobs by
//! state, files waiting) are computed when /metrics is read, so they are never stale. Labels are
//! closed sets of static strings (S3 operations, failure reasons): no job ids or paths, so the
//! series stay few and /metrics shows nothing a probe should not.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

/// Every metric ferry keeps.
pub struct Metrics {
    pub uploaded_bytes: Counter,
    pub uploaded_files: Counter,
    pub parts_uploaded: Counter,
    /// Objects brought to a job's new look without their bytes sent again, by how (`copy`:
    /// CopyObject, `tags`: PutObjectTagging).
    pub objects_restyled: LabeledCounter,
    /// Objects deleted from S3 by prune, by what found them (`scan`: the file is gone,
    /// `resync`: untracked under the prefix).
    pub objects_pruned: LabeledCounter,
    /// Local files removed after their objects were verified (`after_upload: delete`).
    pub local_files_removed: Counter,
    /// Objects found drifted in S3 by a resync and queued to upload again, by kind (`missing`,
    /// `changed`).
    pub drift_repaired: LabeledCounter,
    /// Resyncs done (prefix listings compared with the records).
    pub resyncs: Counter,
    /// S3 requests tried again after a passing fault, by operation (`UploadPart`: parts retried).
    pub s3_retries: LabeledCounter,
    /// Failed upload attempts, by reason and by what happened next.
    pub upload_failures: LabeledCounter,
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
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    uploaded_bytes: Counter::default(),
    uploaded_files: Counter::default(),
    parts_uploaded: Counter::default(),
    objects_restyled: LabeledCounter::default(),
    objects_pruned: LabeledCounter::default(),
    local_files_removed: Counter::default(),
    drift_repaired: LabeledCounter::default(),
    resyncs: Counter::default(),
    s3_retries: LabeledCounter::default(),
    upload_failures: LabeledCounter::default(),
    scans: Counter::default(),
    s3_outages: Counter::default(),
    uploads_in_flight: Gauge::default(),
    upload_concurrency: Gauge::default(),
    s3_pushback: Counter::default(),
    max_bandwidth: Gauge::default(),
    file_upload_seconds: Histogram::new(&[
        0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
    ]),
    part_upload_seconds: Histogram::new(&[
        0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ]),
    scan_seconds: Histogram::new(&[
        0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0,
    ]),
});

/// The process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn value(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn set(&self, n: i64) {
        self.0.store(n, Ordering::Relaxed);
    }
    pub fn value(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
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

/// A counter per combination of label values; the label names are given when rendering.
#[derive(Default)]
pub struct LabeledCounter(Mutex<BTreeMap<Vec<&'static str>, u64>>);

impl LabeledCounter {
    pub fn inc(&self, labels: &[&'static str]) {
        self.add(labels, 1);
    }
    pub fn add(&self, labels: &[&'static str], n: u64) {
        if n == 0 {
            return;
        }
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(labels.to_vec()).or_default() += n;
    }
    pub fn snapshot(&self) -> Vec<(Vec<&'static str>, u64)> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// A histogram over fixed upper bounds (seconds).
pub struct Histogram {
    bounds: Vec<f64>,
    /// One count per bound, and a last one for +Inf (not cumulative; summed when rendering).
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &[f64]) -> Self {
        Histogram {
            bounds: bounds.to_vec(),
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let slot = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
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

/// The text exposition of every metric.
pub fn render(snapshot: &Snapshot) -> String {
    let m = get();
    let mut out = String::new();
    counter(
        &mut out,
        "ferry_uploaded_bytes_total",
        "Bytes acknowledged by S3 (parts and single objects)",
        m.uploaded_bytes.value(),
    );
    counter(
        &mut out,
        "ferry_uploaded_files_total",
        "Files uploaded and verified",
        m.uploaded_files.value(),
    );
    counter(
        &mut out,
        "ferry_s3_pushback_total",
        "S3 answers that said the store is overloaded (503 SlowDown, throttling, timeouts); each lowers the adaptive concurrency",
        m.s3_pushback.value(),
    );
    counter(
        &mut out,
        "ferry_parts_uploaded_total",
        "Multipart parts acknowledged by S3",
        m.parts_uploaded.value(),
    );
    labeled(
        &mut out,
        "ferry_objects_restyled_total",
        "Objects brought to a job's new look in S3 without their bytes sent again, by how",
        &["how"],
        &m.objects_restyled.snapshot(),
    );
    labeled(
        &mut out,
        "ferry_objects_pruned_total",
        "Objects deleted from S3 by prune, by what found them (scan: file gone, resync: untracked)",
        &["found_by"],
        &m.objects_pruned.snapshot(),
    );
    counter(
        &mut out,
        "ferry_local_files_removed_total",
        "Local files removed after their objects were verified (after_upload: delete)",
        m.local_files_removed.value(),
    );
    labeled(
        &mut out,
        "ferry_drift_repaired_total",
        "Objects found missing or changed in S3 by a resync and uploaded again, by kind",
        &["kind"],
        &m.drift_repaired.snapshot(),
    );
    counter(
        &mut out,
        "ferry_resyncs_total",
        "Resyncs: a job's prefix listed and compared with what ferry recorded",
        m.resyncs.value(),
    );
    labeled(
        &mut out,
        "ferry_s3_retries_total",
        "S3 requests tried again after a passing fault, by operation",
        &["operation"],
        &m.s3_retries.snapshot(),
    );
    labeled(
        &mut out,
        "ferry_upload_failures_total",
        "Failed upload attempts, by reason and by what follows (retry, failed, blocked)",
        &["reason", "outcome"],
        &m.upload_failures.snapshot(),
    );
    counter(
        &mut out,
        "ferry_scans_total",
        "Completed scans of source folders",
        m.scans.value(),
    );
    counter(
        &mut out,
        "ferry_s3_outages_total",
        "Times S3 could not be reached at all and uploads paused until it answered",
        m.s3_outages.value(),
    );
    gauge(
        &mut out,
        "ferry_s3_reachable",
        "1 while uploads go on, 0 while they pause because S3 cannot be reached",
        if snapshot.s3_paused { 0.0 } else { 1.0 },
    );
    gauge_family(
        &mut out,
        "ferry_jobs",
        "Upload jobs by state",
        "state",
        &snapshot.jobs,
    );
    gauge_family(
        &mut out,
        "ferry_files",
        "Tracked files by state, over all jobs",
        "state",
        &snapshot.files,
    );
    gauge(
        &mut out,
        "ferry_queue_depth",
        "Files waiting to be uploaded (PENDING)",
        snapshot.queue_depth as f64,
    );
    gauge_family(
        &mut out,
        "ferry_multipart_aborts",
        "Multipart uploads let go of and not yet aborted: waiting for the janitor, or given up",
        "state",
        &snapshot.multipart_aborts,
    );
    gauge(
        &mut out,
        "ferry_uploads_in_flight",
        "Files being uploaded right now",
        m.uploads_in_flight.value() as f64,
    );
    gauge(
        &mut out,
        "ferry_upload_concurrency",
        "Files allowed to upload at once: FERRY_CONCURRENCY, or the adaptive controller's current limit",
        m.upload_concurrency.value() as f64,
    );
    gauge(
        &mut out,
        "ferry_max_bandwidth_bytes_per_second",
        "The upload rate cap every upload shares (FERRY_MAX_BANDWIDTH); 0: no cap",
        m.max_bandwidth.value() as f64,
    );
    histogram(
        &mut out,
        "ferry_file_upload_duration_seconds",
        "Time to upload and verify one file",
        &m.file_upload_seconds,
    );
    histogram(
        &mut out,
        "ferry_part_upload_duration_seconds",
        "Time to send one part or single object, retries included",
        &m.part_upload_seconds,
    );
    histogram(
        &mut out,
        "ferry_scan_duration_seconds",
        "Time to scan one job's source folder",
        &m.scan_seconds,
    );
    out
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, help, "counter");
    let _ = writeln!(out, "{name} {value}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    header(out, name, help, "gauge");
    let _ = writeln!(out, "{name} {value}");
}

fn gauge_family(out: &mut String, name: &str, help: &str, label: &str, values: &[(&str, u64)]) {
    header(out, name, help, "gauge");
    for (value, n) in values {
        let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {n}", escape(value));
    }
}

fn labeled(
    out: &mut String,
    name: &str,
    help: &str,
    label_names: &[&str],
    series: &[(Vec<&str>, u64)],
) {
    header(out, name, help, "counter");
    for (values, n) in series {
        let labels: Vec<String> = label_names
            .iter()
            .zip(values)
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        let _ = writeln!(out, "{name}{{{}}} {n}", labels.join(","));
    }
}

fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    header(out, name, help, "histogram");
    let mut cumulative = 0;
    for (i, bound) in h.bounds.iter().enumerate() {
        cumulative += h.counts[i].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    cumulative += h.counts[h.bounds.len()].load(Ordering::Relaxed);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
    let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
    let _ = writeln!(out, "{name}_sum {sum}");
    let _ = writeln!(out, "{name}_count {cumulative}");
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_end_with_inf() {
        let h = Histogram::new(&[0.1, 1.0]);
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_millis(500));
        h.observe(Duration::from_secs(5));
        let mut out = String::new();
        histogram(&mut out, "x_seconds", "help", &h);
        assert!(out.contains("x_seconds_bucket{le=\"0.1\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_sum 5.55\n"), "{out}");
        assert!(out.contains("x_seconds_count 3\n"), "{out}");
    }

    #[test]
    fn labeled_counters_render_one_series_per_label_set() {
        let c = LabeledCounter::default();
        c.inc(&["UploadPart"]);
        c.inc(&["UploadPart"]);
        c.inc(&["PutObject"]);
        let mut out = String::new();
        labeled(&mut out, "r_total", "help", &["operation"], &c.snapshot());
        assert!(out.contains("# TYPE r_total counter\n"));
        assert!(
            out.contains("r_total{operation=\"UploadPart\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("r_total{operation=\"PutObject\"} 1\n"),
            "{out}"
        );
    }
}
