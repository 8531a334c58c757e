#!/usr/bin/env python3
"""ferry at scale: one job of many files, and many jobs. Run through scripts/bench-scale.sh.

`--files N` (one job): N files of 64 bytes in folders of 1,000. ferry uploads them from a fresh
`ferry serve`; while it does, a sampler reads ferry's RSS and times a status read
(GET /uploads/{id}) and the job list (GET /uploads) every second. When a tenth is uploaded, a
second job of ten files is created: the time it takes to complete shows whether the large job
holds it back. Then a rescan of the unchanged tree is timed (the no-op), and the database's size
is read. `s5cmd cp` and `rclone copy` upload the same tree (`--peers`), timed by GNU time;
`--peers-only` runs them alone, without ferry's upload.

`--jobs N` (many jobs): one job of `--big-files` files first, then N jobs of `--files-per-job`
files each, created over the API by four clients at once. Reported: how long the creations took,
when every small job had completed against when the large one did (seen within 6 s), the
latency of a page of 100 jobs (GET /uploads?limit=100, every 2 s while they upload) and of the
whole list (every 6 s), of every job read by pages of 1,000, and peak RSS.

Objects go to `rclone serve s3` on a tmpfs. A bucket's objects are removed after its run by
removing its folder under the server's root: deleting a million objects one request at a time
would take longer than uploading them.
"""
import argparse
import json
import os
import random
import shutil
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402  (the shared parts: the server, ferry, the peers' commands)

ROOT = peers.ROOT


def make_tree(folder, files, size=64):
    """`files` files of `size` bytes in folders of 1,000, made once and kept (by its count)."""
    done = folder.with_suffix(".done")
    if done.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    data = random.Random(7).randbytes(size)
    for i in range(files):
        d = folder / f"d{i // 1000:04d}"
        if i % 1000 == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:07d}.txt").write_bytes(data)
    done.touch()
    time.sleep(4)  # past FERRY_SETTLE_TIME, so that the first run times uploads, not the wait
    return folder


def dir_bytes(path):
    return sum(p.stat().st_size for p in Path(path).iterdir() if p.is_file())


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def timed_call(ferry, method, path, body=None):
    t0 = time.perf_counter()
    answer = ferry.call(method, path, body)
    return answer, time.perf_counter() - t0


def pct(values, q):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class Sampler(threading.Thread):
    """Every `every` seconds: ferry's RSS, a status read's latency, the job list's latency."""

    def __init__(self, ferry, job_id, every=1.0):
        super().__init__(daemon=True)
        self.ferry, self.job_id, self.every = ferry, job_id, every
        self.samples, self.stop_event = [], threading.Event()

    def run(self):
        t0 = time.perf_counter()
        while not self.stop_event.is_set():
            try:
                job, status_s = timed_call(self.ferry, "GET", f"/uploads/{self.job_id}")
                jobs, list_s = timed_call(self.ferry, "GET", "/uploads")
                self.samples.append({"t": time.perf_counter() - t0, "done": job["completed_files"],
                                     "rss_kib": rss_kib(self.ferry.proc.pid), "status_s": status_s,
                                     "list_s": list_s, "jobs": len(jobs)})
            except Exception as e:  # a sample lost is reported, not fatal
                self.samples.append({"t": time.perf_counter() - t0, "error": str(e)})
            self.stop_event.wait(self.every)

    def stop(self):
        self.stop_event.set()
        self.join()


def wait_state(ferry, job_id, poll=0.2):
    while True:
        job = ferry.call("GET", f"/uploads/{job_id}")
        if job["state"] in ("COMPLETED", "FAILED"):
            return job
        time.sleep(poll)


def drop_bucket_dir(server, bucket):
    shutil.rmtree(server.root / bucket, ignore_errors=True)


def rss_at(samples, total, fraction):
    """The RSS of the first sample with at least this fraction of the files uploaded."""
    for s in samples:
        if "done" in s and s["done"] >= fraction * total:
            return s["rss_kib"]
    return None


def run_files(args, server, work):
    total = args.files
    folder = make_tree(args.work / "data" / f"scale-{total}", total)
    few = make_tree(args.work / "data" / "scale-few-10", 10)
    result = {"files": total}
    if not args.peers_only:
        run_ferry_files(args, server, work, folder, few, result)
    for tool in [t for t in args.peers.split(",") if t]:
        bucket = f"scale-{tool}-{random.randrange(1 << 30):x}"
        peers.make_bucket(args.tools, server, bucket)
        cmd, env = peers.peer_cmd(tool, args.tools, server, folder, bucket)
        m = peers.timed(cmd, peers.env_with(env))
        result[tool] = m
        print(f"  {tool} {m['wall']:.1f} s, cpu {m['cpu']:.1f} s, rss {m['rss_kib'] / 1024:.1f} MiB", flush=True)
        drop_bucket_dir(server, bucket)
    return result


def run_ferry_files(args, server, work, folder, few, result):
    """ferry's first upload of the tree, with a small job beside it and the no-op rescans."""
    total = args.files
    bucket = f"scale-ferry-{random.randrange(1 << 30):x}"
    peers.make_bucket(args.tools, server, bucket)
    ferry = peers.Ferry(server, work, {"FERRY_SCAN_INTERVAL": "24h"})
    try:
        cpu0, t0 = ferry.cpu_seconds(), time.perf_counter()
        job_id = ferry.call("POST", "/uploads", {"source_folder": str(folder), "destination_bucket": bucket})["upload_id"]
        sampler = Sampler(ferry, job_id)
        sampler.start()
        small = None
        while True:
            job = ferry.call("GET", f"/uploads/{job_id}")
            if small is None and job["completed_files"] >= total // 10:
                small_t0 = time.perf_counter()
                small = ferry.call("POST", "/uploads", {"source_folder": str(few), "destination_bucket": bucket})["upload_id"]
                small_done = threading.Thread(target=lambda: result.update(
                    small_job_s=(wait_state(ferry, small, 0.05), time.perf_counter() - small_t0)[1],
                    small_job_created_at_done=job["completed_files"]), daemon=True)
                small_done.start()
            if job["state"] in ("COMPLETED", "FAILED"):
                break
            time.sleep(0.5)
        wall = time.perf_counter() - t0
        sampler.stop()
        if small is not None:
            small_done.join()
        if job["state"] != "COMPLETED":
            raise SystemExit(f"ferry's job failed: {job}")
        samples = [s for s in sampler.samples if "done" in s]
        result["ferry"] = {
            "wall": wall, "cpu": ferry.cpu_seconds() - cpu0, "peak_rss_kib": ferry.peak_rss_kib(),
            "rss_kib_at": {f"{int(f * 100)}%": rss_at(samples, total, f) for f in (0.1, 0.25, 0.5, 0.75, 1.0)},
            "status_s": {"p50": pct([s["status_s"] for s in samples], 0.5), "p99": pct([s["status_s"] for s in samples], 0.99),
                         "max": max((s["status_s"] for s in samples), default=None)},
            "list_s": {"p50": pct([s["list_s"] for s in samples], 0.5), "max": max((s["list_s"] for s in samples), default=None)},
            "samples_lost": sum(1 for s in sampler.samples if "error" in s),
        }
        result["db_bytes"] = dir_bytes(ferry.dir)
        print(f"  ferry first upload {wall:.1f} s, peak RSS {ferry.peak_rss_kib() / 1024:.1f} MiB, "
              f"db {result['db_bytes'] / 2**20:.1f} MiB, small job {result.get('small_job_s', 0):.2f} s", flush=True)
        noops = []
        for _ in range(args.noop_runs):
            noops.append(ferry.rescan(job_id))
            print(f"  ferry no-op rescan {noops[-1]['wall']:.1f} s", flush=True)
        result["ferry"]["noop"] = {"wall": statistics.median(n["wall"] for n in noops),
                                   "cpu": statistics.median(n["cpu"] for n in noops),
                                   "peak_rss_kib": ferry.peak_rss_kib()}
        result["ferry"]["samples"] = samples
    finally:
        ferry.stop()
        drop_bucket_dir(server, bucket)


def run_jobs(args, server, work):
    jobs_root = args.work / "data" / f"jobs-{args.jobs}x{args.files_per_job}"
    done = jobs_root.with_suffix(".done")
    if not done.exists():
        shutil.rmtree(jobs_root, ignore_errors=True)
        data = b"x" * 64
        for j in range(args.jobs):
            d = jobs_root / f"j{j:05d}"
            d.mkdir(parents=True)
            for i in range(args.files_per_job):
                (d / f"f{i}.txt").write_bytes(data)
        done.touch()
        time.sleep(4)
    big = make_tree(args.work / "data" / f"scale-{args.big_files}", args.big_files)
    bucket = f"scale-jobs-{random.randrange(1 << 30):x}"
    peers.make_bucket(args.tools, server, bucket)
    ferry = peers.Ferry(server, work, {"FERRY_SCAN_INTERVAL": "24h"})
    result = {"jobs": args.jobs, "files_per_job": args.files_per_job, "big_files": args.big_files}
    try:
        t0 = time.perf_counter()
        big_id = ferry.call("POST", "/uploads", {"source_folder": str(big), "destination_bucket": bucket})["upload_id"]
        # Four clients at once, as a controller applying many specs would.
        def create(j):
            return timed_call(ferry, "POST", "/uploads", {"source_folder": str(jobs_root / f"j{j:05d}"), "destination_bucket": bucket})
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(create, range(args.jobs)))
        posts = [s for _, s in answers]
        ids = [a["upload_id"] for a, _ in answers]
        created = time.perf_counter() - t0
        print(f"  {args.jobs} jobs created in {created:.1f} s (POST p50 {pct(posts, 0.5) * 1000:.1f} ms, max {max(posts) * 1000:.1f} ms)", flush=True)
        # A page of 100 jobs every 2 s, as a dashboard reads; every job (the whole list) every 6 s,
        # which is also how completion is seen (so the times below are within 6 s).
        lists, pages, small_done_at, big_done_at = [], [], None, None
        rounds = 0
        while small_done_at is None or big_done_at is None:
            _, s = timed_call(ferry, "GET", "/uploads?limit=100")
            pages.append(s)
            rounds += 1
            if rounds % 3:
                time.sleep(2)
                continue
            jobs, s = timed_call(ferry, "GET", "/uploads")
            lists.append(s)
            now = time.perf_counter() - t0
            by_id = {j["upload_id"]: j for j in jobs}
            if big_done_at is None and by_id[big_id]["state"] == "COMPLETED":
                big_done_at = now
                big_then = sum(1 for i in ids if by_id[i]["state"] == "COMPLETED")
                print(f"  the large job completed at {now:.1f} s, with {big_then} small jobs completed", flush=True)
            if small_done_at is None and all(by_id[i]["state"] == "COMPLETED" for i in ids):
                small_done_at = now
                big_then = by_id[big_id]["completed_files"]
                result["big_done_when_small_done"] = big_then
                print(f"  every small job completed at {now:.1f} s, the large one at {big_then} of {args.big_files}", flush=True)
            if any(j["state"] == "FAILED" for j in jobs):
                raise SystemExit("a job failed")
            time.sleep(2)
        settled = [timed_call(ferry, "GET", "/uploads")[1] for _ in range(5)]
        settled_pages = [timed_call(ferry, "GET", "/uploads?limit=100")[1] for _ in range(5)]
        # Every job read page by page, following the Link header's cursor (`after`).
        walks = []
        for _ in range(3):
            t = time.perf_counter()
            seen, after = 0, None
            while True:
                page = ferry.call("GET", "/uploads?limit=1000" + (f"&after={after}" if after else ""))
                seen += len(page)
                if len(page) < 1000:
                    break
                after = page[-1]["upload_id"]
            walks.append(time.perf_counter() - t)
            assert seen == args.jobs + 1, f"the pages held {seen} jobs"
        result.update({
            "create_s": created, "post_s": {"p50": pct(posts, 0.5), "p99": pct(posts, 0.99), "max": max(posts)},
            "small_done_s": small_done_at, "big_done_s": big_done_at,
            "list_s_during": {"p50": pct(lists, 0.5), "max": max(lists)},
            "list_s_settled": {"p50": statistics.median(settled), "max": max(settled)},
            "page_s_during": {"p50": pct(pages, 0.5), "max": max(pages)},
            "page_s_settled": {"p50": statistics.median(settled_pages), "max": max(settled_pages)},
            "paged_walk_s": {"p50": statistics.median(walks), "max": max(walks)},
            "peak_rss_kib": ferry.peak_rss_kib(), "db_bytes": dir_bytes(ferry.dir),
            "cpu": ferry.cpu_seconds(),
        })
        print(f"  GET /uploads with {args.jobs + 1} jobs: {statistics.median(settled) * 1000:.0f} ms settled, "
              f"{pct(lists, 0.5) * 1000:.0f} ms p50 during; a page of 100: {statistics.median(settled_pages) * 1000:.1f} ms settled, "
              f"{pct(pages, 0.5) * 1000:.1f} ms p50 during; every job by pages of 1000: {statistics.median(walks) * 1000:.0f} ms; "
              f"peak RSS {ferry.peak_rss_kib() / 1024:.1f} MiB", flush=True)
    finally:
        ferry.stop()
        drop_bucket_dir(server, bucket)
    return result


def markdown(r):
    out = []
    if "files" in r:
        f = r.get("ferry")
        n = r["files"]
        out += [f"One job of {n:,} files of 64 bytes (`--files {n}`).", "",
                "| tool | wall (s) | files/s | CPU (s) | peak RSS (MiB) |", "| --- | ---: | ---: | ---: | ---: |"]
        if f:
            out.append(f"| ferry | {f['wall']:.1f} | {n / f['wall']:.0f} | {f['cpu']:.1f} | {f['peak_rss_kib'] / 1024:.1f} |")
        for tool in ("s5cmd", "rclone", "aws"):
            if tool in r:
                m = r[tool]
                out.append(f"| {tool} | {m['wall']:.1f} | {n / m['wall']:.0f} | {m['cpu']:.1f} | {m['rss_kib'] / 1024:.1f} |")
        if f:
            at = ", ".join(f"{k}: {v / 1024:.1f}" for k, v in f["rss_kib_at"].items() if v)
            out += ["", f"- ferry's RSS (MiB) by share of the files uploaded: {at}.",
                    f"- Status read (GET /uploads/{{id}}) during the upload: p50 {f['status_s']['p50'] * 1000:.1f} ms, "
                    f"p99 {f['status_s']['p99'] * 1000:.1f} ms, max {f['status_s']['max'] * 1000:.1f} ms; the job list "
                    f"p50 {f['list_s']['p50'] * 1000:.1f} ms.",
                    f"- A job of 10 files created at {r.get('small_job_created_at_done', 0):,} files uploaded completed in "
                    f"{r.get('small_job_s', float('nan')):.2f} s.",
                    f"- Database: {r['db_bytes'] / 2**20:.1f} MiB ({r['db_bytes'] / n:.0f} bytes a file).",
                    f"- No-op rescan: {f['noop']['wall']:.1f} s, {f['noop']['cpu']:.1f} CPU s."]
    if "jobs" in r:
        out += ["", f"{r['jobs']:,} jobs of {r['files_per_job']} files, after one of {r['big_files']:,} (`--jobs`).", "",
                f"- Created over the API in {r['create_s']:.1f} s (POST p50 {r['post_s']['p50'] * 1000:.1f} ms, max {r['post_s']['max'] * 1000:.1f} ms).",
                f"- Every small job completed at {r['small_done_s']:.1f} s, when the large one had {r['big_done_when_small_done']:,} of "
                f"{r['big_files']:,}; the large one completed at {r['big_done_s']:.1f} s.",
                f"- GET /uploads ({r['jobs'] + 1:,} jobs): p50 {r['list_s_during']['p50'] * 1000:.0f} ms during, "
                f"{r['list_s_settled']['p50'] * 1000:.0f} ms after.",
                f"- GET /uploads?limit=100: p50 {r['page_s_during']['p50'] * 1000:.1f} ms during, max "
                f"{r['page_s_during']['max'] * 1000:.1f} ms; {r['page_s_settled']['p50'] * 1000:.1f} ms after. Every job "
                f"by pages of 1000: {r['paged_walk_s']['p50'] * 1000:.0f} ms.",
                f"- Peak RSS {r['peak_rss_kib'] / 1024:.1f} MiB; database {r['db_bytes'] / 2**20:.1f} MiB; ferry's CPU {r['cpu']:.1f} s."]
    return "\n".join(out) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=None, help="one job of this many files")
    p.add_argument("--peers", default="s5cmd,rclone", help="peers to run on the --files tree ('' for none)")
    p.add_argument("--peers-only", action="store_true", help="run only the peers on the --files tree, not ferry")
    p.add_argument("--noop-runs", type=int, default=1)
    p.add_argument("--jobs", type=int, default=None, help="this many jobs")
    p.add_argument("--files-per-job", type=int, default=10)
    p.add_argument("--big-files", type=int, default=100_000)
    p.add_argument("--tools", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("/tmp/ferry-bench"))
    p.add_argument("--out", type=Path, default=ROOT / "target" / "bench")
    args = p.parse_args()
    if args.files is None and args.jobs is None:
        p.error("give --files N, --jobs N, or both")
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    server = peers.Server("rclone", args.work, args.tools, peers.default_server_root())
    result = {}
    try:
        if args.files:
            result.update(run_files(args, server, args.work))
        if args.jobs:
            result.update(run_jobs(args, server, args.work))
    finally:
        server.stop()
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (args.out / f"scale-{stamp}.json").write_text(json.dumps(result, indent=2))
    md = markdown(result)
    (args.out / f"scale-{stamp}.md").write_text(md)
    print()
    print(md)


if __name__ == "__main__":
    main()
