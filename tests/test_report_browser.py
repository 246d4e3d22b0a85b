"""The review report of every sample, opened in a real browser (headless Chromium, Debian's
package; `make test` installs it): no console error, no network request beyond the file
itself, and the page shows the verdict, the findings and each changed function that the
sample's expect.toml names.  One browser session for all samples, driven over the DevTools
protocol on a pipe (--remote-debugging-pipe: no port, no extra client library)."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import IN_CI, ROOT, load_expect, scenario_dirs

import pehotpatch as pehp

CHROMIUM = os.environ.get("PEHP_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,1000"]


def _high(fd: int) -> int:
    new = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return new


class Browser:
    """Chromium with the DevTools protocol on fds 3 (commands) and 4 (replies, events), NUL-separated JSON."""

    def __init__(self, profile: Path):
        cmd_r, self._cmd_w = os.pipe()
        self._out_r, out_w = os.pipe()
        cmd_r, out_w = _high(cmd_r), _high(out_w)  # not 3 or 4, which the child's redirections set
        args = " ".join([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe"])
        self.proc = subprocess.Popen(["bash", "-c", f"exec {args} 3<&{cmd_r} 4>&{out_w} {cmd_r}<&- {out_w}>&-"],
                                     pass_fds=(cmd_r, out_w), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL if not os.environ.get("PEHP_CHROMIUM_LOG") else None)
        os.close(cmd_r)
        os.close(out_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self._buf:
            chunk = os.read(self._out_r, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        while True:
            m = self._read()
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m["result"]
            self.events.append(m)

    def wait_for(self, method: str, session: str) -> None:
        while not any(e.get("method") == method and e.get("sessionId") == session for e in self.events):
            self.events.append(self._read())

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd_w)
        os.close(self._out_r)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        if IN_CI:
            raise AssertionError(f"{CHROMIUM} missing: make test installs it")
        pytest.skip("chromium is not installed (make test installs it)")
    b = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


# What the page shows, read from the DOM the browser built (no script in the page itself).
PROBE = """(() => {
  const q = s => Array.from(document.querySelectorAll(s));
  return {
    title: document.title,
    verdict: (document.querySelector('.verdict') || {}).textContent,
    findings: q('tr.finding').map(r => [r.dataset.rule, r.cells[4].textContent, r.cells[3].textContent]),
    ruleLinks: q('tr.finding a').map(a => a.getAttribute('href')),
    rulePages: q('section.rule-page').map(s => s.id),
    functions: q('h3.function').map(h => h.dataset.name),
    changedRows: q('table.listing tr.change, table.listing tr.delete, table.listing tr.insert').length,
    graphNodes: q('svg.plan-graph g.node').length,
    sections: q('body > section').map(s => s.id),
    inputs: q('table.inputs tbody tr').length,
    scripts: document.scripts.length,
    overflowX: document.documentElement.scrollWidth > document.documentElement.clientWidth,
  };
})()"""


def _hp_inputs(d: Path) -> dict[str, Path]:
    out = {}
    if (d / "hotpatch_functions.txt").is_file():
        out["functions_file"] = d / "hotpatch_functions.txt"
    if (d / "intermediate.objs").is_dir():
        out["objects"] = d / "intermediate.objs"
    return out


def open_report(browser: Browser, path: Path) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
    target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        browser.send(f"{domain}.enable", session=session)
    start = len(browser.events)
    browser.send("Page.navigate", {"url": path.as_uri()}, session=session)
    browser.wait_for("Page.loadEventFired", session)
    page = browser.send("Runtime.evaluate", {"expression": PROBE, "returnByValue": True}, session=session)
    shot = browser.send("Page.captureScreenshot", {"format": "png"}, session=session)["data"]
    events = [e for e in browser.events[start:] if e.get("sessionId") == session]
    browser.send("Target.closeTarget", {"targetId": target})
    return page["result"]["value"], events, shot


def problems(events: list[dict[str, Any]], url: str) -> list[str]:
    out = []
    for e in events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.exceptionThrown":
            out.append(f"exception: {p['exceptionDetails'].get('text')}")
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning", "assert"):
            out.append(f"console {p['type']}: {p.get('args')}")
        elif m == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
            out.append(f"log {p['entry']['level']}: {p['entry']['text']}")
        elif m == "Network.requestWillBeSent" and p["request"]["url"] != url:
            out.append(f"request: {p['request']['url']}")
        elif m == "Network.loadingFailed":
            out.append(f"failed load: {p.get('errorText')}")
    return out


def test_every_sample_report_in_chromium(browser, tmp_path, monkeypatch):
    """PEHP_REPORT_SCREENSHOTS=DIR keeps the screenshots (docs/report.png is x64-inline_pulls.png)."""
    monkeypatch.chdir(ROOT)  # relative paths in the reports, as a user would give them
    shots = tmp_path / "shots"
    shots.mkdir()
    dirs = scenario_dirs()
    assert len(dirs) >= 30
    for d in (p.relative_to(ROOT) for p in dirs):
        exp = load_expect(d)
        name = f"{d.parent.name}-{d.name}"
        out = tmp_path / f"{name}.html"
        model = pehp.report_pair(d / "base.dll", d / "intermediate.dll", out, **_hp_inputs(d))
        page, events, shot = open_report(browser, out)
        assert problems(events, out.as_uri()) == [], name
        assert page["scripts"] == 0 and not page["overflowX"], name
        assert page["verdict"] == exp["check"]["verdict"].upper(), name
        assert page["sections"] == ["findings", "functions", "plan", "image", "pairing", "inputs", "rules"]
        # every finding, each linked to its embedded rule page
        assert len(page["findings"]) == len(model.findings), name
        shown = {(rule, symbol) for rule, symbol, _ in page["findings"]}
        for req in exp["check"].get("findings", []):
            assert any(r == req["rule"] and (req.get("symbol") is None or s == req["symbol"]) for r, s in shown), \
                (name, req)
        assert sorted(set(page["ruleLinks"])) == sorted({f"#rule-{r}" for r, _, _ in page["findings"]})
        assert sorted(page["rulePages"]) == sorted({f"rule-{r}" for r, _, _ in page["findings"]})
        # each changed function the sample names, with its listings side by side
        assert sorted(page["functions"]) == sorted(exp["diff"]["changed_functions"]), name
        if any(f.status == "changed" for f in model.functions):
            assert page["changedRows"] > 0, name
        if model.plan is not None and model.plan.forward:
            assert page["graphNodes"] >= 2 * len(model.plan.forward), name
        assert page["inputs"] >= 2
        (shots / f"{name}.png").write_bytes(base64.b64decode(shot))
    for png in shots.iterdir():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000, png.name
    keep = os.environ.get("PEHP_REPORT_SCREENSHOTS")
    if keep:  # e.g. to refresh docs/report.png
        shutil.copytree(shots, keep, dirs_exist_ok=True)


def test_report_prints(browser, tmp_path):
    d = ROOT / "samples" / "x64" / "inline_pulls"
    out = tmp_path / "r.html"
    pehp.report_pair(d / "base.dll", d / "intermediate.dll", out, **_hp_inputs(d))
    target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    browser.send("Page.enable", session=session)
    browser.send("Page.navigate", {"url": out.as_uri()}, session=session)
    browser.wait_for("Page.loadEventFired", session)
    pdf = base64.b64decode(browser.send("Page.printToPDF", {}, session=session)["data"])
    browser.send("Target.closeTarget", {"targetId": target})
    assert pdf.startswith(b"%PDF") and pdf.count(b"/Type /Page") + pdf.count(b"/Type/Page") >= 2
