"""Drive headless chromium through the Chrome DevTools Protocol: open a page, wait for text,
fill the Prefect UI's schema form, click. Only what the UI tests need."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import procs

# Fills one field of a Prefect schema form, found by its labels from the outside in
# (["Self Instruct", "Target"]); returns what it did (or, with read, what the field holds), or why it could not.
_FILL = r"""
(([path, value, read]) => {
  let scope = document;
  for (const name of path) {
    const span = Array.from(scope.querySelectorAll('.schema-form-property__label'))
      .find(s => s.innerText.trim().replace(/ \(Optional\)$/, '') === name);
    if (!span) return 'no field ' + name;
    scope = span.closest('.schema-form-property');
  }
  const input = scope.querySelector('input, textarea, select');
  if (!input) return 'no input';
  if (read) return typeof value === 'boolean' ? 'checked=' + input.checked : 'value=' + input.value;
  if (typeof value === 'boolean') {
    if (input.checked !== value) input.click();
    return 'checked=' + input.checked;
  }
  const setter = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(input), 'value').set;
  setter.call(input, String(value));
  input.dispatchEvent(new Event('input', {bubbles: true}));
  input.dispatchEvent(new Event('change', {bubbles: true}));
  return 'value=' + input.value;
})(ARGS)
"""


class Browser:
    def __init__(self, profile: Path):
        from websockets.sync.client import connect

        assert shutil.which("chromium"), "Debian's chromium is needed: `make browser` installs it (CI does this)"
        profile.mkdir(parents=True, exist_ok=True)
        self.proc = procs.spawn(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--remote-debugging-address=127.0.0.1",
             "--remote-debugging-port=0", f"--user-data-dir={profile}", "--window-size=1400,1100", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            self.ws = connect(self._page_socket(profile / "DevToolsActivePort", time.monotonic() + 120), max_size=None)
        except BaseException:
            procs.kill(self.proc)
            raise
        self.shots = profile.parent  # where a timed-out wait leaves its screenshot
        self.sent = 0

    def _page_socket(self, port_file: Path, deadline: float) -> str:
        """The DevTools websocket of chromium's page, once chromium has written its port file whole
        (port, then the browser's path) and lists a page target."""
        last = None
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"chromium exited with code {self.proc.returncode} while starting"
            try:
                lines = port_file.read_text().splitlines()
                if len(lines) >= 2:
                    targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{int(lines[0])}/json/list", timeout=10).read())
                    pages = [t for t in targets if t["type"] == "page"]
                    if pages:
                        return pages[0]["webSocketDebuggerUrl"]
            except (OSError, ValueError) as err:
                last = err
            time.sleep(0.1)
        raise RuntimeError(f"chromium did not open a DevTools page within 120 s (last: {last!r})")

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.ws.close()
        finally:
            procs.kill(self.proc)  # chromium's renderer and GPU helpers too

    def call(self, method: str, **params) -> dict:
        self.sent += 1
        self.ws.send(json.dumps({"id": self.sent, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=120))  # a busy machine
            if msg.get("id") == self.sent:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    def text(self) -> str:
        return self.js("document.body ? document.body.innerText : ''") or ""

    def open(self, url: str, *wait_for: str, timeout: float = 180) -> str:
        self.call("Page.navigate", url=url)
        return self.wait_for(*wait_for, timeout=timeout)

    def wait_for(self, *texts: str, timeout: float = 180) -> str:
        """The page's text once every one of `texts` is on it (a page renders in pieces: the
        labels of a form can be there before their descriptions)."""
        end = time.time() + timeout
        while True:
            body = self.text()
            missing = [t for t in texts if t not in body]
            if not missing:
                return body
            if time.time() > end:
                raise AssertionError(f"{missing} did not appear within {timeout} s (screenshot: {self.evidence()}); "
                                     f"the page says: {body[:3000]}")
            time.sleep(0.5)

    def left(self, url: str, timeout: float = 90) -> bool:
        """Whether the page moved away from `url` (e.g. after a form is submitted) within `timeout`."""
        end = time.time() + timeout
        while self.js("location.href") == url:
            if time.time() > end:
                return False
            time.sleep(0.5)
        return True

    def evidence(self, name: str = "timed-out.png") -> Path | str:
        """A screenshot of the page as it is now, for a failure message (or why there is none)."""
        try:
            self.screenshot(self.shots / name)
            return self.shots / name
        except Exception as err:  # the failure being reported matters more
            return f"none: {err}"

    def fill(self, path: list[str], value, read: bool = False) -> str:
        did = self.js(_FILL.replace("ARGS", json.dumps([path, value, read])))
        assert did and not did.startswith("no "), f"form field {'/'.join(path)}: {did}"
        return did

    def fill_form(self, fields: list[tuple[list[str], object]], timeout: float = 120) -> None:
        """Fill every field, and again, until the form holds every value a second later (a form
        that is still rendering can re-create a field and drop what was typed into it)."""
        def held() -> list[str]:
            want = lambda v: f"checked={str(v).lower()}" if isinstance(v, bool) else f"value={v}"
            return ["/".join(p) for p, v in fields if self.fill(p, v, read=True) != want(v)]

        end = time.time() + timeout
        while True:
            for path, value in fields:
                self.fill(path, value)
            time.sleep(1)
            if not (lost := held()):
                return
            if time.time() > end:
                raise AssertionError(f"the form kept dropping {lost} for {timeout} s (screenshot: {self.evidence()})")

    def click(self, label: str) -> None:
        found = self.js(f"""(() => {{ const b = Array.from(document.querySelectorAll('button'))
            .find(x => x.innerText.trim() === {json.dumps(label)}); if (b) b.click(); return !!b; }})()""")
        assert found, f"no {label!r} button on the page"

    def screenshot(self, path: Path) -> None:
        import base64

        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", captureBeyondViewport=True)["data"]))
