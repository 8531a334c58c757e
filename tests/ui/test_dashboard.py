"""The dashboard in a real browser (headless Chromium through chromedriver and selenium).

Run by scripts/check-ui.sh, which installs what it needs. One `ferry serve` (target/debug) with
a token, a fresh database and a bandwidth cap that keeps a job running long enough to be seen,
run as the user nobody when the tests run as root, so that a file made unreadable fails for
real; S3 is LocalStack on 127.0.0.1:4566 (FERRY_TEST_S3_ENDPOINT), a new bucket per job.
"""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

ROOT = Path(__file__).resolve().parents[2]
S3 = os.environ.get("FERRY_TEST_S3_ENDPOINT", "http://127.0.0.1:4566")
NOBODY = 65534
WAIT = 60


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Ferry:
    """A `ferry serve` of its own, stopped by `stop`."""

    def __init__(self, work: Path):
        self.token = "ui-" + secrets.token_hex(12)
        self.base = f"http://127.0.0.1:{free_port()}"
        state = work / "state"
        state.mkdir()
        cmd = [str(ROOT / "target/debug/ferry"), "serve"]
        if os.geteuid() == 0:
            os.chown(state, NOBODY, NOBODY)
            cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"] + cmd
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FERRY_", "AWS_"))}
        env.update({
            "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": S3, "AWS_EC2_METADATA_DISABLED": "true",
            "FERRY_S3_FORCE_PATH_STYLE": "true", "FERRY_LISTEN": self.base.removeprefix("http://"),
            "FERRY_DATABASE_URL": f"sqlite://{state}/ferry.db", "FERRY_API_TOKEN": self.token,
            "FERRY_SETTLE_TIME": "0s", "FERRY_SCAN_INTERVAL": "1h", "FERRY_MAX_BANDWIDTH": "1MiB",
            "FERRY_LOG": "warn",
        })
        self.log = open(work / "ferry.log", "w+b")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                urllib.request.urlopen(self.base + "/healthz", timeout=1)
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("ferry did not become healthy: " + self.read_log())

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method, headers={
            "Authorization": "Bearer " + self.token, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as res:
                text = res.read()
                return res.status, json.loads(text) if text else None
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def job(self, folder: Path, name: str):
        bucket = f"ui-{name}-{secrets.token_hex(4)}"
        urllib.request.urlopen(urllib.request.Request(f"{S3}/{bucket}", method="PUT"), timeout=10)
        status, body = self.call("PUT", f"/uploads/{name}",
                                 {"source_folder": str(folder), "destination_bucket": bucket})
        assert status in (200, 201), (status, body)
        return name

    def read_log(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def browser(width, height):
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage", f"--window-size={width},{height}",
                 f"--user-data-dir={tempfile.mkdtemp(prefix='ferry-ui-chrome-')}"]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    return webdriver.Chrome(options=opts, service=service)


class Dashboard(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.work = Path(tempfile.mkdtemp(prefix="ferry-ui-"))
        cls.work.chmod(0o755)
        cls.ferry = Ferry(cls.work)
        cls.driver = browser(1280, 900)

    @classmethod
    def tearDownClass(cls):
        cls.driver.quit()
        cls.ferry.stop()
        if cls.failed:
            sys.stderr.write("ferry's log:\n" + cls.ferry.read_log()[-4000:])
        shutil.rmtree(cls.work, ignore_errors=True)

    failed = False

    def run(self, result=None):
        result = super().run(result)
        if result and (result.failures or result.errors):
            type(self).failed = True
        return result

    def wait(self, what, predicate, timeout=WAIT):
        def check(driver):
            try:
                return predicate(driver)
            except StaleElementReferenceException:
                return False
        return WebDriverWait(self.driver, timeout, poll_frequency=0.2).until(check, message=what)

    def folder(self, name, files):
        d = self.work / name
        d.mkdir()
        for rel, content in files.items():
            (d / rel).write_bytes(content)
        d.chmod(0o755)
        return d

    def row_text(self, job_id):
        rows = self.driver.find_elements(By.CSS_SELECTOR, f'#jobs tr[data-job="{job_id}"]')
        return rows[0].text if rows else ""

    def login(self):
        """Opens / (which redirects to /ui/) and answers the token prompt, first wrongly."""
        d = self.driver
        d.get(self.ferry.base + "/")
        self.assertTrue(d.current_url.endswith("/ui/"), d.current_url)
        dialog = self.wait("the token prompt", lambda d: d.find_element(By.ID, "token-dialog").is_displayed() and
                           d.find_element(By.ID, "token-dialog"))
        self.assertIn("API token", dialog.text)
        field = d.find_element(By.ID, "token")
        field.send_keys("not-the-token", Keys.ENTER)
        self.wait("the prompt again, saying the token was refused",
                  lambda d: "refused" in d.find_element(By.ID, "token-why").text)
        field = d.find_element(By.ID, "token")
        field.send_keys(self.ferry.token, Keys.ENTER)
        self.wait("the prompt closed", lambda d: not d.find_element(By.ID, "token-dialog").is_displayed())
        self.assertEqual(d.execute_script("return sessionStorage.getItem('ferry.token')"), self.ferry.token)

    def test_the_dashboard(self):
        d = self.driver
        self.login()
        self.wait("the list", lambda d: d.find_element(By.ID, "list-view").is_displayed())

        # A running job, then its COMPLETED state (6 MiB under a 1 MiB/s cap: about 6 s).
        big = self.folder("big", {"big.bin": os.urandom(6 * 1024 * 1024), "small.txt": b"small"})
        running = self.ferry.job(big, "running-job")
        self.wait("the running job in the list",
                  lambda d: any(s in self.row_text(running) for s in ("IN_PROGRESS", "PENDING")))
        # A rate above nothing while it uploads, read off the same row as its state.
        self.wait("a rate while it runs", lambda d: "IN_PROGRESS" in self.row_text(running) and
                  any(u + "/s" in self.row_text(running) for u in ("KiB", "MiB")))
        self.wait("the job COMPLETED in the list", lambda d: "COMPLETED" in self.row_text(running))
        self.assertIn("100.0 %", self.row_text(running))
        self.assertIn("6.00 MiB of 6.00 MiB", self.row_text(running))

        # A file ferry may not read: FAILED with its error; readable again, retry brings it back.
        broken = self.folder("broken", {"ok.txt": b"fine", "secret.txt": b"hidden"})
        secret = broken / "secret.txt"
        if os.geteuid() == 0:
            os.chown(secret, 0, 0)
        secret.chmod(0o000)
        failing = self.ferry.job(broken, "failing-job")
        self.wait("the failing job in the list", lambda d: "FAILED" in self.row_text(failing))
        link = d.find_element(By.LINK_TEXT, failing)
        link.send_keys(Keys.ENTER)  # by keyboard
        self.wait("the job's page", lambda d: d.find_element(By.ID, "job-view").is_displayed())
        failures = self.wait("the failure with its error", lambda d: d.find_element(By.ID, "failures-card").is_displayed()
                             and d.find_element(By.ID, "failures"))
        self.assertIn("secret.txt", failures.text)
        self.assertIn("ermission denied", failures.text)
        Select(d.find_element(By.ID, "file-state")).select_by_value("FAILED")
        self.wait("the files filtered to FAILED", lambda d: "secret.txt" in d.find_element(By.ID, "files").text
                  and "ok.txt" not in d.find_element(By.ID, "files").text)
        secret.chmod(0o644)
        d.find_element(By.ID, "do-retry").click()
        self.wait("the job COMPLETED after the retry",
                  lambda d: "COMPLETED" in d.find_element(By.ID, "summary").text)
        self.wait("no failures left", lambda d: not d.find_element(By.ID, "failures-card").is_displayed())
        Select(d.find_element(By.ID, "file-state")).select_by_value("UPLOADED")
        self.wait("both files UPLOADED", lambda d: "secret.txt" in d.find_element(By.ID, "files").text
                  and "ok.txt" in d.find_element(By.ID, "files").text)
        spec = d.find_element(By.ID, "spec").text
        self.assertIn(str(broken), spec)
        self.assertIn("Reconciled", d.find_element(By.ID, "conditions").text)

        # Delete asks first: cancel keeps the job, confirm deletes it.
        d.find_element(By.ID, "do-delete").click()
        self.wait("the delete dialog", lambda d: d.find_element(By.ID, "delete-dialog").is_displayed())
        d.find_element(By.ID, "delete-cancel").click()
        self.wait("the dialog closed", lambda d: not d.find_element(By.ID, "delete-dialog").is_displayed())
        time.sleep(0.5)
        self.assertEqual(self.ferry.call("GET", f"/uploads/{failing}")[0], 200)
        d.find_element(By.ID, "do-delete").click()
        self.wait("the delete dialog", lambda d: d.find_element(By.ID, "delete-dialog").is_displayed())
        d.find_element(By.ID, "delete-confirm").click()
        self.wait("back on the list", lambda d: d.find_element(By.ID, "list-view").is_displayed())
        self.wait("the job gone", lambda d: self.ferry.call("GET", f"/uploads/{failing}")[0] == 404)
        self.wait("the job gone from the list", lambda d: self.row_text(failing) == "" and
                  self.row_text(running) != "")

        # Every control has a name a screen reader can say.
        unnamed = d.execute_script("""
            return [...document.querySelectorAll('button, input, select, a[href]')].filter((e) => {
              const label = e.labels && e.labels.length ? e.labels[0].textContent : '';
              return !(label || e.getAttribute('aria-label') || e.textContent.trim());
            }).map((e) => e.outerHTML);""")
        self.assertEqual(unnamed, [])

        shot = Path(os.environ.get("UI_SCREENSHOT") or ROOT / "target/ui/dashboard.png")
        shot.parent.mkdir(parents=True, exist_ok=True)
        d.get(self.ferry.base + "/ui/")
        self.wait("the list again", lambda d: "COMPLETED" in self.row_text(running))
        d.save_screenshot(str(shot))

        # 400 px wide: nothing runs off the side.
        d.set_window_size(400, 900)
        self.wait("the narrow layout", lambda d: d.execute_script(
            "return document.documentElement.scrollWidth") <= d.execute_script("return window.innerWidth"))
        d.get(self.ferry.base + f"/ui/#/jobs/{running}")
        self.wait("the job's page, narrow", lambda d: "COMPLETED" in d.find_element(By.ID, "summary").text)
        self.assertLessEqual(d.execute_script("return document.documentElement.scrollWidth"),
                             d.execute_script("return window.innerWidth"))
        d.set_window_size(1280, 900)

        # No console errors, but the 401s the token prompt answers (logged by the browser as
        # failed loads, not by the page).
        errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE"
                  and "status of 401" not in e["message"]]
        self.assertEqual(errors, [])

    def test_a_file_the_dashboard_does_not_have_is_a_json_404(self):
        try:
            urllib.request.urlopen(self.ferry.base + "/ui/nothing.js", timeout=5)
            self.fail("no 404")
        except urllib.error.HTTPError as e:
            self.assertEqual(e.code, 404)
            self.assertEqual(json.loads(e.read())["error"]["code"], "not_found")
        with urllib.request.urlopen(self.ferry.base + "/ui/app.js", timeout=5) as res:
            self.assertIn("default-src 'none'", res.headers["content-security-policy"])
            self.assertTrue(res.headers["content-type"].startswith("text/javascript"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
