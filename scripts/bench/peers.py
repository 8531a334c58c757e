#!/usr/bin/env python3
"""ferry against aws s3, s5cmd and rclone, on the same data and the same local S3 server.

Run through scripts/bench-peers.sh, which installs the peers and builds ferry. Each workload is
run by every tool `--runs` times, the tools interleaved run by run so that a noisy moment hurts
all of them alike; the figures are medians. ferry is timed from its POST /uploads to COMPLETED on
a freshly started `ferry serve` (release build, fresh database), and its CPU and peak RSS are
read from /proc for that process; the peers are timed as whole processes by GNU time.

Each peer runs its fastest command for the work: a first upload is `aws s3 cp --recursive`,
`s5cmd cp` and `rclone copy` (they compare nothing); a no-op is `sync` over what is already there.

No-op: each tool uploads 100,000 small files once (not timed), then the timed runs repeat the
sync over the unchanged folder. For ferry that is a rescan (POST /uploads/{id}/rescan until the
job's scanned_at moves).

WAN: `--rtt-ms 0,20,60` runs every workload at each round trip, every tool through the same
latency proxy (scripts/bench/latency_proxy.py) in front of the server. A bandwidth-capped link
(`--link 200mbit`, through scripts/bench-peers.sh) runs everything in a network namespace whose
loopback is shaped by `tc ... tbf`. `--cap 50MiB` adds a run of ferry alone with
FERRY_MAX_BANDWIDTH set, on the large workload, and reports the rate it achieved against the cap.
"""
import argparse
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KIB = 1024
MIB = 1024 * KIB


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"nothing answers at {url}")


# ---- data ----

def write_random(path, size, rng):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 * MIB)
            f.write(rng.randbytes(n))
            left -= n


def make_data(root, workload, noop_files, small_files=2000):
    """The workload's folder, created once and reused (its mtimes must not change). The no-op's
    and the small one's are named by their file counts, so that another count makes another tree."""
    names = {"noop": f"noop-{noop_files}", "small": f"small-{small_files}"}
    folder = root / names.get(workload, workload)
    done = folder.with_suffix(".done")
    if done.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    rng = random.Random(42)
    if workload == "small":
        for i in range(small_files):
            write_random(folder / f"f{i:05d}.bin", 16 * KIB, rng)
    elif workload == "large":
        write_random(folder / "big.bin", 1024 * MIB, rng)
    elif workload == "mixed":
        for i, size in enumerate([200 * MIB, 64 * MIB, 64 * MIB, 24 * MIB]):
            write_random(folder / "media" / f"video{i}.bin", size, rng)
        for i in range(1000):
            depth = f"d{i % 5}/e{i % 7}" if i % 3 else f"d{i % 5}"
            write_random(folder / "docs" / depth / f"doc{i:04d}.txt", rng.randint(1 * KIB, 256 * KIB), rng)
    elif workload == "noop":
        for i in range(noop_files):
            write_random(folder / f"d{i // 1000:03d}" / f"f{i:06d}.txt", 1 * KIB, rng)
    else:
        raise SystemExit(f"unknown workload {workload}")
    done.touch()
    # ferry uploads a file once it has gone FERRY_SETTLE_TIME (3 s) without a change; files made
    # a moment ago would time that wait, not the upload, in the first run.
    time.sleep(4)
    return folder


def folder_bytes(folder):
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# ---- servers ----

def tree_cpu_seconds(pid):
    """CPU (user+sys) of a process and all its descendants, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    procs = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                fields = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            procs[int(d)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    tree, grew = {pid}, True
    while grew:
        grew = False
        for p, (ppid, _) in procs.items():
            if ppid in tree and p not in tree:
                tree.add(p)
                grew = True
    return sum(procs[p][1] for p in tree if p in procs) / tick


class Server:
    def __init__(self, kind, work, tools, root=None):
        self.kind = kind
        self.proc = None
        if kind == "rclone":
            self.port = free_port()
            self.root = (root or work) / "s3root"
            shutil.rmtree(self.root, ignore_errors=True)
            self.root.mkdir(parents=True)
            self.proc = subprocess.Popen(
                [str(tools / "rclone"), "serve", "s3", "--auth-key", "test,test", "--addr",
                 f"127.0.0.1:{self.port}", "--log-level", "ERROR", str(self.root)],
                stdout=subprocess.DEVNULL, stderr=open(work / "rclone-serve.log", "w"))
        else:
            # LocalStack spools request bodies to temporary files: on the same storage as
            # rclone serve s3's objects, when it is started here.
            script = str(ROOT / "scripts" / "localstack.sh")
            self.started = subprocess.run([script, "status"], capture_output=True).returncode != 0
            self.tmp = root if root else Path(tempfile.gettempdir())
            env = {**os.environ, **({"TMPDIR": str(root)} if root else {})}
            subprocess.run([script, "start"], check=True, env=env)
            self.port = 4566
            pid = subprocess.run([script, "pid"], capture_output=True, text=True).stdout.strip()
            self.pid = int(pid) if pid.isdigit() else None  # None: not started by localstack.sh
        if self.proc:
            self.pid = self.proc.pid
        self.url = f"http://127.0.0.1:{self.port}"
        wait_http(self.url)

    def cpu_seconds(self):
        """The server's CPU so far (None when unknown): a run's share shows how much of the
        server's work each tool's requests cost, and when the server, not the tool, is the limit."""
        return tree_cpu_seconds(self.pid) if self.pid else None

    def version(self, tools):
        if self.kind == "rclone":
            out = subprocess.run([str(tools / "rclone"), "version"], capture_output=True, text=True).stdout
            return f"rclone serve s3 ({out.splitlines()[0]}), objects in {self.root}"
        if self.started:
            return f"LocalStack 4.14 (S3), temporary files in {self.tmp}"
        return "LocalStack 4.14 (S3), already running when the benchmark started"

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait()
            shutil.rmtree(self.root, ignore_errors=True)  # a tmpfs holds it in memory


class Link:
    """The server as the tools reach it: directly (RTT 0), or through the latency proxy, which
    delays every chunk by half the round trip each way."""

    def __init__(self, server, rtt_ms, work):
        self.server, self.rtt_ms, self.proc = server, rtt_ms, None
        self.url = server.url
        if rtt_ms > 0:
            port = free_port()
            self.proc = subprocess.Popen(
                [sys.executable, str(ROOT / "scripts" / "bench" / "latency_proxy.py"), "--listen",
                 f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{server.port}", "--rtt-ms", str(rtt_ms)],
                stdout=subprocess.DEVNULL, stderr=open(work / f"latency-proxy-{rtt_ms}.log", "w"))
            self.url = f"http://127.0.0.1:{port}"
            wait_http(self.url)

    def cpu_seconds(self):
        return self.server.cpu_seconds()

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait()


# ---- tools ----

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
}


def env_with(extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FERRY_", "RCLONE_"))}
    env.update(AWS_ENV)
    env.update(extra)
    return env


def make_bucket(tools, server, bucket):
    subprocess.run([str(tools / "s5cmd"), "--endpoint-url", server.url, "mb", f"s3://{bucket}"],
                   env=env_with({}), check=True, capture_output=True)


def drop_bucket(tools, server, bucket):
    """Empties and removes a bucket after its run: LocalStack keeps every object it holds in
    temporary files, and runs of 1 GiB each filled the disk."""
    s5 = [str(tools / "s5cmd"), "--endpoint-url", server.url]
    subprocess.run([*s5, "rm", f"s3://{bucket}/*"], env=env_with({}), capture_output=True)
    subprocess.run([*s5, "rb", f"s3://{bucket}"], env=env_with({}), capture_output=True)


def timed(cmd, env):
    """Wall, CPU (user+sys) and peak RSS (KiB) of a whole process, by GNU time."""
    with tempfile.NamedTemporaryFile("r") as out:
        run = subprocess.run(["/usr/bin/time", "-o", out.name, "-f", "%e %U %S %M", *cmd],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if run.returncode != 0:
            raise SystemExit(f"{cmd[0]} failed: {run.stderr[-2000:]}")
        wall, user, sys_, rss = out.read().split()[-4:]
    return {"wall": float(wall), "cpu": float(user) + float(sys_), "rss_kib": int(rss)}


def peer_cmd(tool, tools, server, folder, bucket, sync=False):
    """The peer's fastest command: a copy for a first upload, a sync (which compares) for a no-op."""
    dest = f"s3://{bucket}/run"
    if tool == "aws":
        verb = ["sync"] if sync else ["cp", "--recursive"]
        return [str(tools / "aws"), "s3", *verb, str(folder), dest, "--endpoint-url", server.url, "--only-show-errors"], {}
    if tool == "s5cmd":
        return [str(tools / "s5cmd"), "--endpoint-url", server.url, "sync" if sync else "cp", f"{folder}/", f"{dest}/"], {}
    if tool == "rclone":
        env = {
            "RCLONE_CONFIG_BENCH_TYPE": "s3", "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
            "RCLONE_CONFIG_BENCH_ENDPOINT": server.url, "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": "test",
            "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": "test", "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true",
            "RCLONE_CONFIG_BENCH_REGION": "us-east-1",
        }
        return [str(tools / "rclone"), "sync" if sync else "copy", str(folder), f"bench:{bucket}/run"], env
    raise SystemExit(tool)


class Ferry:
    """A fresh `ferry serve` (release build) with its own database."""

    def __init__(self, server, work, extra=None):
        self.dir = Path(tempfile.mkdtemp(dir=work))
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = env_with({
            "AWS_ENDPOINT_URL": server.url, "FERRY_S3_FORCE_PATH_STYLE": "true",
            "FERRY_LISTEN": f"127.0.0.1:{self.port}", "FERRY_DATABASE_URL": f"sqlite://{self.dir}/ferry.db",
        })
        # Extra settings for experiments, e.g. BENCH_FERRY_ENV="FERRY_CONCURRENCY=16".
        for pair in os.environ.get("BENCH_FERRY_ENV", "").split():
            k, _, v = pair.partition("=")
            env[k] = v
        env.update(extra or {})
        self.proc = subprocess.Popen([str(ROOT / "target" / "release" / "ferry"), "serve"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=open(self.dir / "ferry.log", "w"))
        wait_http(self.base + "/healthz")

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"null")

    def cpu_seconds(self):
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_kib(self):
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return 0

    def upload(self, folder, bucket):
        cpu0, t0 = self.cpu_seconds(), time.perf_counter()
        job = self.call("POST", "/uploads", {"source_folder": str(folder), "destination_bucket": bucket})
        job_id = job["upload_id"]
        while True:
            state = self.call("GET", f"/uploads/{job_id}")
            if state["state"] in ("COMPLETED", "FAILED"):
                break
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        if state["state"] != "COMPLETED":
            raise SystemExit(f"ferry's job failed: {state}")
        return job_id, {"wall": wall, "cpu": self.cpu_seconds() - cpu0, "rss_kib": self.peak_rss_kib()}

    def rescan(self, job_id):
        before = self.call("GET", f"/uploads/{job_id}")["scanned_at"]
        cpu0, t0 = self.cpu_seconds(), time.perf_counter()
        self.call("POST", f"/uploads/{job_id}/rescan")
        while self.call("GET", f"/uploads/{job_id}")["scanned_at"] == before:
            time.sleep(0.02)
        return {"wall": time.perf_counter() - t0, "cpu": self.cpu_seconds() - cpu0, "rss_kib": self.peak_rss_kib()}

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- the runs ----

def warm_page_cache(folder):
    """Reads every file once, so that no tool pays for reading from disk: without it, the first
    tool of the first round (always ferry) read the 1 GiB file from disk, cold, and took 5.4 s
    and 2.5 CPU seconds against 4.3 s and 1.1 warm (LocalStack, one run each)."""
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                while f.read(1 << 20):
                    pass


def with_server_cpu(server, run):
    """A run's measurements, with the server's CPU during it (None when it is not known)."""
    before = server.cpu_seconds()
    m = run()
    m["server_cpu"] = server.cpu_seconds() - before if before is not None else None
    return m


def report(workload, r, tool, m):
    server_cpu = f"  server cpu {m['server_cpu']:6.2f} s" if m["server_cpu"] is not None else ""
    print(f"  {workload:6} run {r + 1} {tool:7} {m['wall']:7.2f} s  cpu {m['cpu']:6.2f} s  "
          f"rss {m['rss_kib'] / 1024:6.1f} MiB{server_cpu}", flush=True)


def run_workload(workload, key, folder, args, tools, server, work, results):
    """Runs one workload over `server` (a Link), recording under `key`."""
    tool_names = [t for t in ["ferry", "aws", "s5cmd", "rclone"] if t in args.only.split(",")]
    warm_page_cache(folder)
    if workload != "noop":
        for r in range(args.runs):
            k = r % len(tool_names)
            order = tool_names[k:] + tool_names[:k]
            for tool in order:
                bucket = f"bench-{workload}-{tool}-{r}-{random.randrange(1 << 30):x}"
                make_bucket(tools, server.server, bucket)
                if tool == "ferry":
                    ferry = Ferry(server, work)
                    try:
                        m = with_server_cpu(server, lambda: ferry.upload(folder, bucket)[1])
                    finally:
                        ferry.stop()
                else:
                    cmd, env = peer_cmd(tool, tools, server, folder, bucket)
                    m = with_server_cpu(server, lambda: timed(cmd, env_with(env)))
                results.setdefault(key, {}).setdefault(tool, []).append(m)
                report(key, r, tool, m)
                drop_bucket(tools, server.server, bucket)
        return
    # No-op: one untimed upload per tool, then timed repeats over the unchanged folder.
    for tool in tool_names:
        bucket = f"bench-noop-{tool}-{random.randrange(1 << 30):x}"
        make_bucket(tools, server.server, bucket)
        started = time.perf_counter()
        if tool == "ferry":
            ferry = Ferry(server, work)
            job_id, _ = ferry.upload(folder, bucket)
        else:
            cmd, env = peer_cmd(tool, tools, server, folder, bucket, sync=True)
            timed(cmd, env_with(env))
        print(f"  noop   setup   {tool:7} first upload took {time.perf_counter() - started:7.1f} s", flush=True)
        try:
            for r in range(args.runs):
                if tool == "ferry":
                    m = with_server_cpu(server, lambda: ferry.rescan(job_id))
                else:
                    m = with_server_cpu(server, lambda: timed(cmd, env_with(env)))
                results.setdefault(key, {}).setdefault(tool, []).append(m)
                report(key, r, tool, m)
        finally:
            if tool == "ferry":
                ferry.stop()
            drop_bucket(tools, server.server, bucket)


def summarize(results, sizes):
    rows = []
    for workload, by_tool in results.items():
        med = {t: {"wall": statistics.median(m["wall"] for m in ms), "cpu": statistics.median(m["cpu"] for m in ms),
                   "server_cpu": statistics.median(m["server_cpu"] for m in ms) if all(m.get("server_cpu") is not None for m in ms) else None,
                   "rss_kib": max(m["rss_kib"] for m in ms), "runs": len(ms)} for t, ms in by_tool.items()}
        peers = {t: v for t, v in med.items() if t != "ferry"}
        best = min(peers, key=lambda t: peers[t]["wall"]) if peers else None
        for tool, v in med.items():
            rows.append({"workload": workload, "tool": tool, **v,
                         "ratio_to_best_peer": v["wall"] / peers[best]["wall"] if best else None,
                         "best_peer": best, "bytes": sizes[workload]})
    return rows


def markdown(rows, meta):
    link = meta.get("link") or "loopback, not capped"
    out = [f"Server: {meta['server']}. Machine: {meta['machine']}. Runs per figure: {meta['runs']} (median wall and CPU; RSS is the highest). "
           f"Round trips: {', '.join(str(r) for r in meta.get('rtt_ms', [0]))} ms (latency proxy). Link: {link}. Small workload: {meta.get('small_files')} files of 16 KiB.", ""]
    out.append("| workload | tool | wall (s) | vs best peer | CPU user+sys (s) | CPU s per GiB | peak RSS (MiB) | server CPU (s) |")
    out.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        gib = r["bytes"] / (1024 * MIB)
        per_gib = f"{r['cpu'] / gib:.2f}" if gib >= 0.01 else "-"
        ratio = f"{r['ratio_to_best_peer']:.2f}x" if r["ratio_to_best_peer"] else "-"
        server_cpu = f"{r['server_cpu']:.2f}" if r.get("server_cpu") is not None else "-"
        out.append(f"| {r['workload']} | {r['tool']} | {r['wall']:.2f} | {ratio} | {r['cpu']:.2f} | {per_gib} | {r['rss_kib'] / 1024:.1f} | {server_cpu} |")
    return "\n".join(out) + "\n"


def run_cap(args, link, server):
    """ferry alone on the large workload under FERRY_MAX_BANDWIDTH: the rate achieved against the
    cap (medians of --runs)."""
    folder = make_data(args.work / "data", "large", args.noop_files)
    size = folder_bytes(folder)
    cap = parse_size(args.cap)
    walls = []
    for r in range(args.runs):
        bucket = f"bench-cap-{r}-{random.randrange(1 << 30):x}"
        make_bucket(args.tools, server, bucket)
        ferry = Ferry(link, args.work, {"FERRY_MAX_BANDWIDTH": args.cap})
        try:
            walls.append(ferry.upload(folder, bucket)[1]["wall"])
        finally:
            ferry.stop()
            drop_bucket(args.tools, server, bucket)
        print(f"  cap {args.cap} @ {link.rtt_ms} ms run {r + 1}: {walls[-1]:.2f} s, {size / walls[-1] / MIB:.1f} MiB/s", flush=True)
    wall = statistics.median(walls)
    return {"cap": args.cap, "cap_bytes": cap, "rtt_ms": link.rtt_ms, "bytes": size, "wall": wall,
            "achieved": size / wall, "ratio": size / wall / cap, "walls": walls}


def parse_size(text):
    units = {"kib": KIB, "mib": MIB, "gib": 1024 * MIB, "": 1}
    t = text.strip().lower().removesuffix("/s")
    n = t.rstrip("kmgib")
    return int(float(n) * units[t[len(n):]])


def cap_markdown(caps):
    if not caps:
        return ""
    out = ["", "| FERRY_MAX_BANDWIDTH | RTT (ms) | bytes | wall (s) | achieved (MiB/s) | achieved / cap |",
           "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for c in caps:
        out.append(f"| {c['cap']} | {c['rtt_ms']} | {c['bytes']} | {c['wall']:.2f} | {c['achieved'] / MIB:.2f} | {c['ratio']:.3f} |")
    return "\n".join(out) + "\n"


def default_server_root():
    """A tmpfs, when there is one with room: on a disk the server's file system work (creating
    and deleting thousands of files, ext4's inode allocator searching past recently deleted
    ones) took a third of the server's CPU and made the same run take 2 to 6 s; it is the same
    for every tool and measures the disk, not the tools."""
    shm = Path("/dev/shm")
    try:
        st = os.statvfs(shm)
    except OSError:
        return None
    is_tmpfs = any(line.split()[1:3] == ["/dev/shm", "tmpfs"] for line in open("/proc/mounts"))
    return shm if is_tmpfs and st.f_bavail * st.f_frsize >= 4 * 1024 * MIB else None


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", choices=["rclone", "localstack"], default="rclone")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--workloads", default="small,large,mixed,noop")
    p.add_argument("--noop-files", type=int, default=100_000)
    p.add_argument("--small-files", type=int, default=None,
                   help="files of 16 KiB in the small workload (default 2000 at RTT 0 only, 500 with --rtt-ms)")
    p.add_argument("--rtt-ms", default="0", help="round trips to run at, comma-separated (0,20,60,100)")
    p.add_argument("--link", default=None, help="the link's cap, as set up by bench-peers.sh (recorded only)")
    p.add_argument("--cap", default=None, help="also run ferry alone on the large workload with FERRY_MAX_BANDWIDTH=CAP (50MiB)")
    p.add_argument("--only", default="ferry,aws,s5cmd,rclone", help="the tools to run, comma-separated")
    p.add_argument("--tools", type=Path, required=True, help="folder with aws, s5cmd, rclone")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "ferry-bench")
    p.add_argument("--out", type=Path, default=ROOT / "target" / "bench")
    p.add_argument("--server-root", type=Path, default=default_server_root(),
                   help="where rclone serve s3 keeps the objects, and a LocalStack started here "
                        "its temporary files (default: /dev/shm when it is a tmpfs with 4 GiB "
                        "free, else under --work, and LocalStack's TMPDIR)")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    server = Server(args.server, args.work, args.tools, args.server_root)
    results, sizes, caps = {}, {}, []
    rtts = [float(r) if "." in r else int(r) for r in args.rtt_ms.split(",")]
    small = args.small_files or (2000 if rtts == [0] else 500)
    try:
        for rtt in rtts:
            link = Link(server, rtt, args.work)
            try:
                for workload in args.workloads.split(","):
                    folder = make_data(args.work / "data", workload, args.noop_files, small)
                    key = workload if rtts == [0] else f"{workload} @ {rtt} ms"
                    sizes[key] = folder_bytes(folder)
                    print(f"{key}: {sum(1 for p in folder.rglob('*') if p.is_file())} files, {sizes[key] / MIB:.1f} MiB", flush=True)
                    run_workload(workload, key, folder, args, args.tools, link, args.work, results)
                if args.cap:
                    caps.append(run_cap(args, link, server))
            finally:
                link.stop()
    finally:
        server_name = server.version(args.tools)
        server.stop()
    versions = {
        "ferry": subprocess.run([str(ROOT / "target/release/ferry"), "--version"], capture_output=True, text=True).stdout.strip(),
        "aws": subprocess.run([str(args.tools / "aws"), "--version"], capture_output=True, text=True).stdout.strip(),
        "s5cmd": subprocess.run([str(args.tools / "s5cmd"), "version"], capture_output=True, text=True).stdout.strip(),
        "rclone": subprocess.run([str(args.tools / "rclone"), "version"], capture_output=True, text=True).stdout.splitlines()[0],
    }
    meta = {"server": server_name, "runs": args.runs, "versions": versions, "rtt_ms": rtts,
            "link": args.link, "small_files": small,
            "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Linux {platform.release()}"}
    rows = summarize(results, sizes)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (args.out / f"peers-{args.server}-{stamp}.json").write_text(json.dumps({"meta": meta, "rows": rows, "raw": results, "caps": caps}, indent=2))
    md = markdown(rows, meta) + cap_markdown(caps)
    (args.out / f"peers-{args.server}-{stamp}.md").write_text(md)
    print()
    print(md)
    print("versions: " + "; ".join(f"{k} {v}" for k, v in versions.items()))


if __name__ == "__main__":
    main()
