#!/usr/bin/env python3
"""Checks the Dockerfile and docker-compose.yml without a Docker engine.

No engine runs on the CI machine, so the files are parsed and held to what docs/deploy.md promises:
a multi-stage build, a non-root runtime with a health check, and a Compose file where ferry waits
for a healthy LocalStack 4.14 and reaches it through AWS_ENDPOINT_URL with path-style addressing.
"""
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
problems = []


def check(ok, what):
    if not ok:
        problems.append(what)


docker = (ROOT / "Dockerfile").read_text()
lines = [l.strip() for l in docker.splitlines() if l.strip() and not l.strip().startswith("#")]
froms = [l for l in lines if l.upper().startswith("FROM ")]
check(len(froms) >= 2, "Dockerfile: expected a multi-stage build (two FROM lines)")
check(any(" AS " in f.upper() for f in froms[:-1]), "Dockerfile: the build stage needs a name")
user = [l for l in lines if l.upper().startswith("USER ")]
check(bool(user) and user[-1].split()[1] not in ("0", "root"), "Dockerfile: the runtime must not run as root")
check(any(l.upper().startswith("HEALTHCHECK ") and "/healthz" in docker for l in lines), "Dockerfile: no HEALTHCHECK on /healthz")
check(any(l.startswith("ENTRYPOINT") and "ferry" in l for l in lines), "Dockerfile: ferry must be the entrypoint")
for copied in re.findall(r"^COPY (?!--from)(.+?) \S+$", docker, re.M):
    for src in copied.split():
        check((ROOT / src).exists(), f"Dockerfile: COPY source {src} does not exist")

compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
services = compose.get("services", {})
ls = services.get("localstack", {})
ferry = services.get("ferry", {})
check(ls.get("image") == "localstack/localstack:4.14", "compose: LocalStack must be localstack/localstack:4.14")
check("healthcheck" in ls, "compose: LocalStack needs a health check")
check(ferry.get("depends_on", {}).get("localstack", {}).get("condition") == "service_healthy",
      "compose: ferry must wait for a healthy LocalStack")
env = ferry.get("environment", {})
check(env.get("AWS_ENDPOINT_URL") == "http://localstack:4566", "compose: ferry must reach S3 through AWS_ENDPOINT_URL")
check(str(env.get("FERRY_S3_FORCE_PATH_STYLE")).lower() == "true", "compose: LocalStack needs path-style addressing")
check(env.get("FERRY_LISTEN", "").startswith("0.0.0.0:"), "compose: ferry must listen beyond the container's loopback")
check("healthcheck" in ferry, "compose: ferry needs a health check")
check(bool(env.get("FERRY_API_TOKEN")) or str(env.get("FERRY_INSECURE_LISTEN")).lower() == "true",
      "compose: ferry listens beyond loopback, so it needs FERRY_API_TOKEN (or refuses to start)")
for volume in ferry.get("volumes", []) + ls.get("volumes", []):
    host = volume.split(":")[0]
    if host.startswith("./"):
        check((ROOT / host).exists(), f"compose: mounted path {host} does not exist")
jobs_dir = next((v.split(":")[1] for v in ferry.get("volumes", []) if v.startswith("./deploy/compose/jobs:")), None)
check(jobs_dir is not None and env.get("FERRY_MANIFESTS_DIR") == jobs_dir,
      "compose: the sample manifest folder must be mounted at FERRY_MANIFESTS_DIR")
mounted = {v.split(":")[1]: v.split(":")[0] for v in ferry.get("volumes", []) if v.startswith("./")}
for manifest in (ROOT / "deploy/compose/jobs").glob("*.yaml"):
    for doc in yaml.safe_load_all(manifest.read_text()):
        spec = (doc or {}).get("spec", {})
        check(spec.get("sourceFolder") in mounted, f"compose: {manifest.name} uploads {spec.get('sourceFolder')}, which is not mounted")
        check(spec.get("sourceFolder") == env.get("FERRY_ALLOWED_ROOTS"), f"compose: {manifest.name}'s folder is outside FERRY_ALLOWED_ROOTS")
for f in (ROOT / "deploy/localstack/ready.d").glob("*.sh"):
    check(f.stat().st_mode & 0o111 != 0, f"{f.name} must be executable for LocalStack to run it")

if problems:
    print("deploy files: " + "\n  ".join(["problems found:"] + problems))
    sys.exit(1)
print("deploy files: Dockerfile and docker-compose.yml check out")
