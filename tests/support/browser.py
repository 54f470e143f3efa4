"""Headless Chromium playing replies as a chat app's web view would: ``<audio>``, WebAudio's decoder, MediaSource.

The page is served from a loopback HTTP server that also takes the page's results (a POST), so the
test waits on that event, not on a timer. Only where Debian's ``chromium`` is installed
(``apt-get install -y chromium``); CI does not install it.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
    "--remote-debugging-port=0",  # keeps headless Chromium running the page until it is stopped
)
PAGE = """<!doctype html><html><body><script>
const files = FILES;
async function element(name) {
  return new Promise(resolve => {
    const a = new Audio(); a.preload = 'auto';
    a.onloadedmetadata = () => resolve({duration_ms: isFinite(a.duration) ? a.duration * 1000 : null});
    a.onerror = () => resolve({error: a.error && a.error.code});
    a.src = name;
  });
}
async function decoded(name) {
  const data = await (await fetch(name)).arrayBuffer();
  try { return {duration_ms: (await new OfflineAudioContext(1, 48000, 48000).decodeAudioData(data)).duration * 1000}; }
  catch (e) { return {error: String(e)}; }
}
async function mse(mime, parts) {
  if (!MediaSource.isTypeSupported(mime)) return {error: 'unsupported ' + mime};
  const ms = new MediaSource(); const a = new Audio(); a.src = URL.createObjectURL(ms);
  await new Promise(r => ms.addEventListener('sourceopen', r, {once: true}));
  const sb = ms.addSourceBuffer(mime);
  try {
    for (const part of parts) {
      sb.appendBuffer(await (await fetch(part)).arrayBuffer());
      await new Promise((r, j) => {
        sb.addEventListener('updateend', r, {once: true});
        sb.addEventListener('error', j, {once: true});
      });
    }
  } catch (e) { return {error: 'append failed'}; }
  ms.endOfStream();
  const b = sb.buffered;
  return {ranges: b.length, start_ms: b.start(0) * 1000, end_ms: b.end(b.length - 1) * 1000};
}
(async () => {
  const results = {};
  for (const [fmt, f] of Object.entries(files)) {
    results[fmt] = {whole: await element(f.whole), decoded: await decoded(f.whole), mse: await mse(f.mime, f.parts)};
  }
  fetch('/result', {method: 'POST', body: JSON.stringify(results)});
})();
</script></body></html>"""


def play_in_chromium(folder: Path, files: dict[str, dict[str, Any]], timeout_s: float = 60) -> dict[str, Any]:
    """``files``: per format, the whole file's name, the stream's message files in order and the MediaSource type."""
    (folder / "index.html").write_text(PAGE.replace("FILES", json.dumps(files)))
    posted: dict[str, Any] = {}
    arrived = threading.Event()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_POST(self) -> None:  # the page's results
            posted.update(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()
            arrived.set()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    assert CHROMIUM is not None
    url = f"http://127.0.0.1:{server.server_address[1]}/index.html"
    with _running([CHROMIUM, *FLAGS, f"--user-data-dir={folder / 'profile'}", url]):
        arrived.wait(timeout_s)
    server.shutdown()
    assert arrived.is_set(), "Chromium did not report within the timeout"
    return posted


@contextlib.contextmanager
def _running(command: list[str]) -> Iterator[None]:
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
