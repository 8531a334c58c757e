//! What the client prints: tables, `describe`, and the progress line of `--wait`. Pure: API
//! answers (JSON values) in, text out, so that every format is unit-tested.

use std::collections::VecDeque;
use std::fmt::Write as _;

use serde_json::Value;

/// `1.5 MiB`: binary units, one decimal above bytes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `1m05s`, `2h03m`, `42s`.
pub fn human_duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60),
    }
}

/// Columns padded to their widest cell, separated by three spaces, as kubectl prints them.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            text.push_str(cell);
            if i < last {
                let pad = w - cell.chars().count() + 3;
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

fn text(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(s) => s.clone(),
        Value::Null => "<none>".into(),
        other => other.to_string(),
    }
}

fn number(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

fn percent(v: &Value) -> String {
    format!("{:.0}%", v["progress"].as_f64().unwrap_or(0.0) * 100.0)
}

/// `ferry get jobs`.
pub fn jobs_table(jobs: &[Value]) -> String {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                text(j, "upload_id"),
                text(j, "state"),
                percent(j),
                format!(
                    "{}/{}",
                    number(j, "completed_files"),
                    number(j, "total_files")
                ),
                number(j, "failed_files").to_string(),
                format!(
                    "{}/{}",
                    human_bytes(number(j, "uploaded_bytes")),
                    human_bytes(number(j, "total_bytes"))
                ),
                text(j, "destination_bucket"),
                text(j, "managed_by"),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "STATE",
            "PROGRESS",
            "FILES",
            "FAILED",
            "BYTES",
            "BUCKET",
            "MANAGED-BY",
        ],
        &rows,
    )
}

/// `ferry get files NAME`.
pub fn files_table(files: &[Value]) -> String {
    let rows: Vec<Vec<String>> = files
        .iter()
        .map(|f| {
            vec![
                text(f, "path"),
                text(f, "state"),
                human_bytes(number(f, "size")),
                f["attempts"].as_i64().unwrap_or(0).to_string(),
                f["last_error"].as_str().unwrap_or("").to_owned(),
            ]
        })
        .collect();
    table(&["PATH", "STATE", "SIZE", "ATTEMPTS", "ERROR"], &rows)
}

/// `ferry describe job NAME`: the spec, the status, the conditions and the failing files.
pub fn describe_job(job: &Value, failing: &[Value]) -> String {
    let mut out = String::new();
    let field = |out: &mut String, name: &str, value: String| {
        let _ = writeln!(out, "{:<22}{value}", format!("{name}:"));
    };
    field(&mut out, "Name", text(job, "upload_id"));
    field(&mut out, "Managed-By", text(job, "managed_by"));
    if let Some(m) = job["manifest"].as_str() {
        field(&mut out, "Manifest", m.to_owned());
    }
    field(&mut out, "Created", text(job, "created_at"));
    field(&mut out, "Generation", text(job, "generation"));
    out.push_str("Spec:\n");
    field(&mut out, "  Source Folder", text(job, "source_folder"));
    field(
        &mut out,
        "  Destination Bucket",
        text(job, "destination_bucket"),
    );
    field(&mut out, "  Pattern", text(job, "pattern"));
    field(
        &mut out,
        "  Key Prefix",
        format!("{:?}", text(job, "key_prefix")),
    );
    let list = |key: &str| {
        job[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "<none>".into())
    };
    let pairs = |key: &str| {
        job[key]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "<none>".into())
    };
    field(&mut out, "  Exclude", list("exclude"));
    field(&mut out, "  Storage Class", text(job, "storage_class"));
    let sse = match (job["sse"].as_str(), job["kms_key_id"].as_str()) {
        (Some(s), Some(k)) => format!("{s} (key {k})"),
        (Some(s), None) => s.to_owned(),
        _ => "<none>".to_owned(),
    };
    field(&mut out, "  Encryption", sse);
    field(&mut out, "  Metadata", pairs("metadata"));
    field(&mut out, "  Tags", pairs("tags"));
    field(&mut out, "  After Upload", text(job, "after_upload"));
    field(&mut out, "  Prune", text(job, "prune"));
    out.push_str("Status:\n");
    field(&mut out, "  State", text(job, "state"));
    field(&mut out, "  Progress", percent(job));
    field(
        &mut out,
        "  Files",
        format!(
            "{} total, {} uploaded, {} pending, {} in progress, {} failed",
            number(job, "total_files"),
            number(job, "completed_files"),
            number(job, "pending_files"),
            number(job, "in_progress_files"),
            number(job, "failed_files"),
        ),
    );
    field(
        &mut out,
        "  Bytes",
        format!(
            "{} of {}",
            human_bytes(number(job, "uploaded_bytes")),
            human_bytes(number(job, "total_bytes"))
        ),
    );
    field(
        &mut out,
        "  Observed Generation",
        text(job, "observed_generation"),
    );
    field(&mut out, "  Last Scan", text(job, "scanned_at"));
    if job["prune"] == true {
        let prunes = &job["prunes"];
        let mut line = format!(
            "{} held, {} being deleted",
            number(prunes, "held"),
            number(prunes, "due")
        );
        if let Some(why) = prunes["hold_reason"].as_str() {
            line.push_str(&format!(" (held: {why}; `ferry prune job NAME` confirms)"));
        }
        if let Some(e) = prunes["last_error"].as_str() {
            line.push_str(&format!("; last refusal: {e}"));
        }
        field(&mut out, "  Prunes", line);
    }
    let resync = &job["last_resync"];
    field(
        &mut out,
        "  Last Resync",
        match resync["at"].as_str() {
            Some(at) => format!("{at}: {}", text(resync, "message")),
            None => "<none>".into(),
        },
    );
    if let Some(e) = job["error"].as_str() {
        field(&mut out, "  Error", e.to_owned());
    }
    out.push_str("Conditions:\n");
    let conditions: Vec<Vec<String>> = job["conditions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|c| {
            vec![
                text(c, "type"),
                text(c, "status"),
                text(c, "reason"),
                text(c, "message"),
            ]
        })
        .collect();
    out.push_str(&indent(&table(
        &["TYPE", "STATUS", "REASON", "MESSAGE"],
        &conditions,
    )));
    out.push_str("Failing Files:");
    if failing.is_empty() {
        out.push_str(" <none>\n");
    } else {
        out.push('\n');
        out.push_str(&indent(&files_table(failing)));
    }
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// Bytes per second over the last few seconds of samples.
#[derive(Debug, Default)]
pub struct RateMeter {
    samples: VecDeque<(f64, u64)>,
}

impl RateMeter {
    const WINDOW_SECS: f64 = 5.0;

    /// Records `bytes` done at `at` seconds (any fixed origin); returns the rate, once two
    /// samples are far enough apart to say anything.
    pub fn sample(&mut self, at: f64, bytes: u64) -> Option<f64> {
        self.samples.push_back((at, bytes));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| at - t > Self::WINDOW_SECS)
            && self.samples.len() > 2
        {
            self.samples.pop_front();
        }
        let (t0, b0) = *self.samples.front()?;
        let elapsed = at - t0;
        (elapsed >= 0.5).then(|| bytes.saturating_sub(b0) as f64 / elapsed)
    }
}

/// The live line of `--wait`:
/// `[##########----------]  50%  5.0 MiB/10.0 MiB  2.5 MiB/s  ETA 2s  (3/6 files)`.
pub fn progress_line(done: u64, total: u64, files: (u64, u64), rate: Option<f64>) -> String {
    const WIDTH: usize = 24;
    // Before the first scan nothing is known: 0 %, not a full bar. Empty files count by number.
    let fraction = if total == 0 {
        if files.1 > 0 && files.0 == files.1 {
            1.0
        } else {
            0.0
        }
    } else {
        (done as f64 / total as f64).clamp(0.0, 1.0)
    };
    let filled = (fraction * WIDTH as f64).round() as usize;
    let bar: String = "#".repeat(filled) + &"-".repeat(WIDTH - filled);
    let rate_text = match rate {
        Some(r) => format!("{}/s", human_bytes(r as u64)),
        None => "-".into(),
    };
    let eta = match rate {
        Some(r) if r > 0.0 && done < total => {
            format!(
                "ETA {}",
                human_duration(((total - done) as f64 / r).ceil() as u64)
            )
        }
        _ if done >= total => "ETA 0s".into(),
        _ => "ETA -".into(),
    };
    format!(
        "[{bar}] {:>3.0}%  {}/{}  {rate_text}  {eta}  ({}/{} files)",
        fraction * 100.0,
        human_bytes(done),
        human_bytes(total),
        files.0,
        files.1
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bytes_and_durations_read_like_people_write_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12 * 1024 * 1024), "12.0 MiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        assert_eq!(human_duration(42), "42s");
        assert_eq!(human_duration(65), "1m05s");
        assert_eq!(human_duration(7380), "2h03m");
    }

    #[test]
    fn tables_align_columns_and_trim_line_ends() {
        let t = table(
            &["NAME", "STATE"],
            &[
                vec!["a".into(), "COMPLETED".into()],
                vec!["longer-name".into(), "".into()],
            ],
        );
        assert_eq!(
            t,
            "NAME          STATE\na             COMPLETED\nlonger-name\n"
        );
    }

    fn job() -> Value {
        json!({
            "upload_id": "nightly-logs", "state": "IN_PROGRESS", "progress": 0.5,
            "total_files": 4, "completed_files": 2, "failed_files": 1, "pending_files": 1,
            "in_progress_files": 0, "total_bytes": 2048, "uploaded_bytes": 1024,
            "source_folder": "/data/logs", "destination_bucket": "logs", "pattern": null,
            "error": null, "created_at": "2026-11-28T10:00:00Z", "scanned_at": null,
            "generation": 2, "observed_generation": 2, "managed_by": "api", "manifest": null,
            "key_prefix": "logs/host-1/", "exclude": ["tmp/**"], "storage_class": "STANDARD_IA",
            "sse": "aws:kms", "kms_key_id": "alias/logs", "metadata": {"owner": "team-a"},
            "tags": {}, "after_upload": "delete", "prune": true,
            "prunes": {"held": 7, "due": 0, "failing": 0, "last_error": null,
                "hold_reason": "7 of the job's 8 objects would be pruned"},
            "last_resync": {"at": "2026-11-28T11:00:00Z", "in_sync": true, "message": "8 objects listed"},
            "conditions": [{"type": "FilesFailing", "status": "True", "reason": "UploadFailed", "message": "1 file failed"}]
        })
    }

    #[test]
    fn the_jobs_table_shows_state_progress_files_and_bytes() {
        let t = jobs_table(&[job()]);
        let mut lines = t.lines();
        let header = lines.next().unwrap();
        assert!(header.starts_with("NAME"), "{t}");
        let row = lines.next().unwrap();
        for part in [
            "nightly-logs",
            "IN_PROGRESS",
            "50%",
            "2/4",
            "1.0 KiB/2.0 KiB",
            "logs",
            "api",
        ] {
            assert!(row.contains(part), "{part} missing: {row}");
        }
    }

    #[test]
    fn describe_shows_spec_status_conditions_and_failing_files() {
        let failing = [
            json!({"path": "bad.bin", "state": "FAILED", "size": 10, "attempts": 5, "last_error": "cannot read"}),
        ];
        let d = describe_job(&job(), &failing);
        for part in [
            "Name:                 nightly-logs",
            "Source Folder:",
            "/data/logs",
            "Pattern:",
            "<none>",
            "  Key Prefix:         \"logs/host-1/\"",
            "  Exclude:            tmp/**",
            "  Storage Class:      STANDARD_IA",
            "  Encryption:         aws:kms (key alias/logs)",
            "  Metadata:           owner=team-a",
            "  Tags:               <none>",
            "  After Upload:       delete",
            "  Prune:              true",
            "  Prunes:             7 held, 0 being deleted (held: 7 of the job's 8",
            "  Last Resync:        2026-11-28T11:00:00Z: 8 objects listed",
            "State:",
            "IN_PROGRESS",
            "FilesFailing",
            "UploadFailed",
            "Failing Files:\n",
            "bad.bin",
            "cannot read",
        ] {
            assert!(d.contains(part), "{part:?} missing:\n{d}");
        }
        assert!(describe_job(&job(), &[]).contains("Failing Files: <none>"));
    }

    #[test]
    fn the_progress_line_has_bytes_rate_and_eta() {
        let mib = 1024 * 1024;
        let line = progress_line(5 * mib, 10 * mib, (3, 6), Some(2.5 * mib as f64));
        assert!(
            line.starts_with("[############------------]  50%"),
            "{line}"
        );
        for part in ["5.0 MiB/10.0 MiB", "2.5 MiB/s", "ETA 2s", "(3/6 files)"] {
            assert!(line.contains(part), "{part} missing: {line}");
        }
        assert!(progress_line(0, 10, (0, 1), None).contains("ETA -"));
        assert!(progress_line(10, 10, (1, 1), None).contains("100%"));
        assert!(progress_line(0, 0, (0, 0), None).contains("  0%"));
        assert!(progress_line(0, 0, (2, 2), None).contains("100%"));
    }

    #[test]
    fn the_rate_is_measured_over_a_recent_window() {
        let mut m = RateMeter::default();
        assert_eq!(m.sample(0.0, 0), None);
        assert_eq!(m.sample(0.2, 100), None, "too soon to say");
        assert_eq!(m.sample(1.0, 1000), Some(1000.0));
        // An early burst ages out of the window.
        for t in 2..=20 {
            m.sample(t as f64, 1000 + (t as u64 - 1) * 10);
        }
        let r = m.sample(21.0, 1200).unwrap();
        assert!((r - 10.0).abs() < 0.01, "{r}");
    }
}
