#!/usr/bin/env python3
"""Checks charts/ferry without a cluster (run by scripts/check-chart.sh, which sets up the tools).

1. helm's own lint, twice: the helm v4 library through helm-sdkpy's Lint action, and the helm
   3.17 binary (`helm lint --strict`) for every example values file. Both render every template
   and check the values against values.schema.json.
2. `helm template` in each mode: every object is validated against the Kubernetes 1.33 schemas
   (kubernetes-validate, strict: unknown fields fail), and held to what docs/deploy.md promises
   (probes, non-root, read-only root filesystem, a shared volume, SQLite on a volume, the token
   from a Secret, IRSA, hostPaths in DaemonSet mode).
3. The UploadJob manifests the chart renders into its ConfigMap are validated by ferry itself
   (`ferry apply --dry-run`), with the same parser the running service uses.
4. Bad values are refused by the schema with a message naming the field.
"""
import asyncio
import base64
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "ferry"
HERE = Path(__file__).resolve().parent
HELM = os.environ.get("HELM", "helm")
FERRY = os.environ.get("FERRY_BIN", str(ROOT / "target" / "debug" / "ferry"))
K8S_VERSION = "1.33.0"

failures = []


def check(ok, what):
    if not ok:
        failures.append(what)
    return ok


def helm(*args, ok=True):
    run = subprocess.run([HELM, *args], capture_output=True, text=True)
    if ok and run.returncode != 0:
        raise SystemExit(f"helm {' '.join(args)} failed:\n{run.stdout}\n{run.stderr}")
    return run


def render(values_file, *extra):
    out = helm("template", "demo", str(CHART), "--namespace", "apps", "-f", str(values_file), *extra).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def validate_all(objects, label):
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            failures.append(f"{label}: {obj['kind']}/{obj['metadata']['name']} is not a valid object: {e.message} at {list(e.path)}")
        except Exception as e:  # a schema the tool lacks is a failure too, not a pass
            failures.append(f"{label}: {obj['kind']}/{obj['metadata']['name']} could not be validated: {e}")


def ferry_container(pod_spec):
    containers = pod_spec.get("initContainers", []) + pod_spec["containers"]
    found = [c for c in containers if c["name"] == "ferry"]
    assert len(found) == 1, f"expected one ferry container, found {len(found)}"
    return found[0]


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def check_ferry_container(c, label):
    sc = c.get("securityContext", {})
    check(sc.get("readOnlyRootFilesystem") is True, f"{label}: ferry's root filesystem is not read-only")
    check(sc.get("runAsNonRoot") is True, f"{label}: ferry may run as root")
    check(sc.get("allowPrivilegeEscalation") is False, f"{label}: privilege escalation allowed")
    check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{label}: capabilities not dropped")
    check(c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz", f"{label}: no liveness probe on /healthz")
    check(c.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz", f"{label}: no readiness probe on /readyz")
    check("limits" in c.get("resources", {}), f"{label}: no resource limits")
    env = env_of(c)
    token = env.get("FERRY_API_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef")
    check(token is not None, f"{label}: FERRY_API_TOKEN does not come from a Secret")
    check(env.get("FERRY_LISTEN", {}).get("value", "").startswith("0.0.0.0:"), f"{label}: ferry does not listen on the pod's address")
    check(env.get("FERRY_DATABASE_URL", {}).get("value") == "sqlite:///var/lib/ferry/ferry.db", f"{label}: database not on the state volume")
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    check(mounts.get("ferry-state", {}).get("mountPath") == "/var/lib/ferry", f"{label}: no state volume at /var/lib/ferry")
    return env, mounts


def check_manifests(configmap, label):
    """The chart's UploadJob documents, read by ferry's own parser."""
    with tempfile.TemporaryDirectory() as d:
        for name, text in configmap["data"].items():
            Path(d, name).write_text(text)
        run = subprocess.run([FERRY, "apply", "--dry-run", "-f", d], capture_output=True, text=True)
        check(run.returncode == 0, f"{label}: ferry refuses the chart's manifests: {run.stderr.strip()}")
        return run.stdout


def sidecar():
    label = "sidecar"
    objects = render(HERE / "values-sidecar.yaml")
    validate_all(objects, label)
    deployments = by_kind(objects, "Deployment")
    if not check(len(deployments) == 1, f"{label}: expected one Deployment"):
        return
    d = deployments[0]
    spec = d["spec"]
    pod = spec["template"]["spec"]
    check(spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate", f"{label}: more than one writer of SQLite possible")
    ferry = ferry_container(pod)
    check(ferry in pod.get("initContainers", []) and ferry.get("restartPolicy") == "Always", f"{label}: ferry is not a native sidecar")
    env, mounts = check_ferry_container(ferry, label)
    app = [c for c in pod["containers"] if c["name"] == "app"][0]
    app_mounts = {m["name"]: m["mountPath"] for m in app["volumeMounts"]}
    check(app_mounts.get("data") == "/data" and mounts.get("data", {}).get("mountPath") == "/data", f"{label}: app and ferry do not share /data")
    check(mounts.get("data", {}).get("readOnly") is True, f"{label}: ferry can write the app's data")
    check(env.get("FERRY_ALLOWED_ROOTS", {}).get("value") == "/data", f"{label}: ferry is not confined to /data")
    check(env.get("FERRY_MANIFESTS_DIR", {}).get("value") == "/etc/ferry/jobs", f"{label}: no manifests folder")
    check(ferry.get("envFrom") == [{"secretRef": {"name": "ferry-aws"}}], f"{label}: AWS credentials not from the Secret")
    volumes = {v["name"]: v for v in pod["volumes"]}
    pvcs = by_kind(objects, "PersistentVolumeClaim")
    check(len(pvcs) == 1 and volumes["ferry-state"].get("persistentVolumeClaim", {}).get("claimName") == pvcs[0]["metadata"]["name"], f"{label}: SQLite is not on the PVC")
    configmaps = by_kind(objects, "ConfigMap")
    check(volumes["ferry-jobs"]["configMap"]["name"] == configmaps[0]["metadata"]["name"], f"{label}: the jobs ConfigMap is not mounted")
    out = check_manifests(configmaps[0], label)
    check("uploadjob/app-logs valid" in out and "uploadjob/app-reports valid" in out, f"{label}: ferry did not read both jobs: {out}")
    docs = list(yaml.safe_load_all(configmaps[0]["data"]["jobs.yaml"]))
    reports = [d for d in docs if d["metadata"]["name"] == "app-reports"][0]["spec"]
    want = {"keyPrefix": "", "exclude": ["**/*.tmp", "drafts"], "storageClass": "STANDARD_IA", "sse": "aws:kms",
            "kmsKeyId": "alias/reports", "metadata": {"owner": "team-a"}, "tags": {"team": "data", "retention": "7y"},
            "prune": True}
    for k, v in want.items():
        check(reports.get(k) == v, f"{label}: the jobs ConfigMap renders {k} as {reports.get(k)!r}, not {v!r}")
    logs = [d for d in docs if d["metadata"]["name"] == "app-logs"][0]["spec"]
    check("keyPrefix" not in logs, f"{label}: a job without keyPrefix must keep the default")
    check("prune" not in logs and "afterUpload" not in logs, f"{label}: a job without prune or afterUpload must keep the defaults")
    check(env.get("FERRY_RESYNC_INTERVAL", {}).get("value") == "1h", f"{label}: FERRY_RESYNC_INTERVAL not passed")
    secrets = by_kind(objects, "Secret")
    token = base64.b64decode(secrets[0]["data"]["token"]).decode() if secrets else ""
    check(len(token) >= 16, f"{label}: the generated token is too short for ferry")
    annotations = spec["template"]["metadata"].get("annotations", {})
    check(annotations.get("prometheus.io/path") == "/metrics", f"{label}: no scrape annotations")
    services = by_kind(objects, "Service")
    check(services and services[0]["spec"]["ports"][0]["targetPort"] == "http", f"{label}: no Service on the http port")


def irsa():
    label = "irsa"
    objects = render(HERE / "values-irsa.yaml")
    validate_all(objects, label)
    sa = by_kind(objects, "ServiceAccount")[0]
    check(sa["metadata"].get("annotations", {}).get("eks.amazonaws.com/role-arn", "").startswith("arn:aws:iam::"), f"{label}: no IRSA role on the service account")
    pod = by_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]
    check(pod["serviceAccountName"] == sa["metadata"]["name"], f"{label}: the pod does not use the service account")
    ferry = ferry_container(pod)
    check(ferry in pod["containers"], f"{label}: nativeSidecar=false should make ferry a plain container")
    check("envFrom" not in ferry, f"{label}: AWS keys used although IRSA was asked for")
    env, mounts = check_ferry_container(ferry, label)
    check(env["FERRY_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "ferry-token", "key": "api-token"}, f"{label}: not the user's token Secret")
    check(not by_kind(objects, "Secret"), f"{label}: a token Secret was made although one was given")
    check(not by_kind(objects, "PersistentVolumeClaim"), f"{label}: a PVC was made with persistence off")
    check(not by_kind(objects, "ConfigMap"), f"{label}: a ConfigMap was made although an existing one was named")
    volumes = {v["name"]: v for v in pod["volumes"]}
    check(volumes["ferry-jobs"]["configMap"]["name"] == "team-jobs", f"{label}: the existing ConfigMap is not mounted")
    check(volumes["data"] == {"name": "data", "persistentVolumeClaim": {"claimName": "shared-data"}}, f"{label}: the data volume is not the user's")
    check(env["FERRY_ALLOWED_ROOTS"]["value"] == "/shared", f"{label}: roots do not follow data.mountPath")


def daemonset():
    label = "daemonset"
    objects = render(HERE / "values-daemonset.yaml")
    validate_all(objects, label)
    check(not by_kind(objects, "Deployment") and not by_kind(objects, "PersistentVolumeClaim"), f"{label}: sidecar objects rendered")
    ds = by_kind(objects, "DaemonSet")
    if not check(len(ds) == 1, f"{label}: expected one DaemonSet"):
        return
    pod = ds[0]["spec"]["template"]["spec"]
    ferry = ferry_container(pod)
    env, mounts = check_ferry_container(ferry, label)
    volumes = {v["name"]: v for v in pod["volumes"]}
    check(volumes["pod-logs"]["hostPath"]["path"] == "/var/log/pods", f"{label}: the node folder is not mounted")
    check(mounts["pod-logs"] == {"name": "pod-logs", "mountPath": "/host/var/log/pods", "readOnly": True}, f"{label}: the node folder is not read-only")
    check(volumes["ferry-state"]["hostPath"]["path"] == "/var/lib/ferry/demo", f"{label}: state is not node-local per release")
    check(env["FERRY_ALLOWED_ROOTS"]["value"] == "/host/var/log/pods", f"{label}: ferry is not confined to the node folders")
    check(env["AWS_ENDPOINT_URL"]["value"] == "http://minio.storage:9000", f"{label}: s3.endpoint not passed")
    check(env["FERRY_S3_FORCE_PATH_STYLE"]["value"] == "true", f"{label}: path style not passed")
    check(pod.get("tolerations") == [{"operator": "Exists"}], f"{label}: tolerations not passed")
    out = check_manifests(by_kind(objects, "ConfigMap")[0], label)
    check("uploadjob/node-logs valid" in out, f"{label}: ferry did not read the job: {out}")


def bad_values():
    cases = [
        (["--set", "mode=statefulset"], "mode"),
        (["--set", "ferry.checksum=md5"], "checksum"),
        (["--set", "mode=daemonset"], "allOf"),
        (["--set", "jobs[0].name=Bad_Name", "--set", "jobs[0].sourceFolder=/data", "--set", "jobs[0].destinationBucket=b-1"], "name"),
        (["--set", "jobs[0].name=ok", "--set", "jobs[0].sourceFolder=relative", "--set", "jobs[0].destinationBucket=b-1"], "sourceFolder"),
        (["--set", "ferry.concurrency=0"], "concurrency"),
        (["--set", "ferry.maxBandwidth=fast"], "maxBandwidth"),
        (["--set", "jobs[0].name=ok", "--set", "jobs[0].sourceFolder=/data", "--set", "jobs[0].destinationBucket=b-1", "--set", "jobs[0].storageClass=COLD"], "storageClass"),
        (["--set", "jobs[0].name=ok", "--set", "jobs[0].sourceFolder=/data", "--set", "jobs[0].destinationBucket=b-1", "--set", "jobs[0].keyPrefix=/abs/"], "keyPrefix"),
        (["--set", "unknownSetting=1"], "unknownSetting"),
        (["--set", "jobs[0].name=ok", "--set", "jobs[0].sourceFolder=/data", "--set", "jobs[0].destinationBucket=b-1", "--set", "jobs[0].afterUpload=move"], "afterUpload"),
    ]
    for args, needle in cases:
        run = helm("template", "demo", str(CHART), *args, ok=False)
        check(run.returncode != 0, f"bad values accepted: {args}")
        check(needle in run.stderr, f"the error for {args} does not name {needle!r}: {run.stderr.strip()}")


async def sdk_lint():
    import helm_sdkpy

    config = helm_sdkpy.Configuration(namespace="default")
    result = await helm_sdkpy.Lint(config).run(str(CHART))
    # helm's severities: 1 info, 2 warning, 3 error. Warnings fail too, as with --strict.
    messages = result.get("Messages") or []
    problems = [m for m in messages if int(m.get("Severity", 0)) >= 2]
    check(result.get("TotalChartsLinted") == 1, f"helm-sdkpy lint linted nothing: {result}")
    check(not problems and not result.get("Errors"), f"helm-sdkpy lint: {problems} {result.get('Errors')}")
    return result


def moving_sidecar():
    """A job that moves its files (afterUpload: delete) needs the data folder writable."""
    label = "sidecar with a move"
    objects = render(HERE / "values-sidecar.yaml", "--set", "jobs[0].afterUpload=delete")
    validate_all(objects, label)
    pod = by_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in ferry_container(pod)["volumeMounts"]}
    check(mounts["data"].get("readOnly") is False, f"{label}: ferry cannot remove the files it moves")
    docs = list(yaml.safe_load_all(by_kind(objects, "ConfigMap")[0]["data"]["jobs.yaml"]))
    logs = [d for d in docs if d["metadata"]["name"] == "app-logs"][0]["spec"]
    check(logs.get("afterUpload") == "delete", f"{label}: afterUpload not rendered: {logs}")


def main():
    version = helm("version", "--short").stdout.strip()
    result = asyncio.run(sdk_lint())
    print(f"helm-sdkpy lint: {result}")
    for values in sorted(HERE.glob("values-*.yaml")):
        run = helm("lint", "--strict", str(CHART), "-f", str(values), ok=False)
        check(run.returncode == 0, f"helm lint --strict -f {values.name}:\n{run.stdout}{run.stderr}")
    run = helm("lint", "--strict", str(CHART), ok=False)
    check(run.returncode == 0, f"helm lint --strict (defaults):\n{run.stdout}{run.stderr}")
    validate_all(render(CHART / "values.yaml"), "defaults")
    sidecar()
    moving_sidecar()
    irsa()
    daemonset()
    bad_values()
    if failures:
        print(f"{len(failures)} problem(s) with the chart:", file=sys.stderr)
        for f in failures:
            print(f"  - {f}", file=sys.stderr)
        sys.exit(1)
    print(f"chart ok: lint (helm-sdkpy and {version}), 5 renderings valid against Kubernetes {K8S_VERSION}, bad values refused")


if __name__ == "__main__":
    main()
