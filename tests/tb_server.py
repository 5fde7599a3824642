"""Test utilities: a real TensorBoard server and a headless Chromium that looks at it.

Not a test module. `running_tensorboard` starts the `tensorboard` program of this interpreter's
environment as a subprocess and always stops it; `open_images_dashboard` loads its images
dashboard in the system Chromium through Playwright (never `playwright install`: the browser
is `/usr/bin/chromium`, or `$CHROMIUM`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
_URL = re.compile(r"TensorBoard \S+ at (http://\S+?)/? ")


def wait_for(predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.25) -> T:
    """Calls `predicate` until it returns a truthy value, and returns that value.

    Exceptions raised by `predicate` (a failed assert, an HTTP error while TensorBoard is still
    loading) count as "not yet".

    Raises:
        TimeoutError: Still falsy or failing after `timeout` seconds; chained to the last
            exception, and naming the last value.
    """
    deadline = time.monotonic() + timeout
    while True:
        error: Exception | None = None
        try:
            result = predicate()
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            result, error = None, exc
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"Condition not met within {timeout} s; last value: {result!r:.500}"
            ) from error
        time.sleep(interval)


@dataclass
class TensorBoardServer:
    """A running TensorBoard: its base URL and small HTTP helpers."""

    url: str
    logdir: Path
    process: subprocess.Popen
    log_path: Path

    def get_bytes(self, path: str, **params: Any) -> bytes:
        """GET `{url}/{path}?{params}`; raises `urllib.error.HTTPError` unless 200."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/{path.lstrip('/')}{query}", timeout=10) as r:
            return r.read()

    def get_json(self, path: str, **params: Any) -> Any:
        """GET a JSON document, e.g. `get_json("data/plugin/images/tags")`."""
        return json.loads(self.get_bytes(path, **params))

    def wait_for(
        self, predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.25
    ) -> T:
        """`wait_for` that also fails at once, with TensorBoard's log, if the server died."""

        def check() -> T:
            if self.process.poll() is not None:
                raise _Died(f"TensorBoard exited with {self.process.returncode}:\n{self.log()}")
            return predicate()

        try:
            return wait_for(check, timeout, interval)
        except TimeoutError as exc:
            if isinstance(exc.__cause__, _Died):
                raise exc.__cause__ from None
            raise

    def log(self) -> str:
        """TensorBoard's output so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace")


class _Died(RuntimeError):
    pass


@contextlib.contextmanager
def running_tensorboard(
    logdir: str | os.PathLike,
    samples_per_plugin: str | None = "images=1000,scalars=10000",
    startup_timeout: float = 120.0,
    load_fast: str | None = "false",
) -> Iterator[TensorBoardServer]:
    """Runs `python -m tensorboard.main` on `logdir` for the duration of the block.

    Serves on 127.0.0.1 at a free port, with `--load_fast false --reload_interval 1`
    (`samples_per_plugin=None` / `load_fast=None` leave those flags at TensorBoard's
    defaults, as a user's plain `tensorboard --logdir` has them). Yields
    once `/data/runs` answers; data loads asynchronously after that, so poll with
    `server.wait_for`. The server is always stopped at exit (terminate, then kill).

    Example:
        with running_tensorboard(tmp_path) as tb:
            tags = tb.wait_for(lambda: tb.get_json("data/plugin/images/tags").get("run"))
    """
    with tempfile.TemporaryDirectory(prefix="tensorboard-") as tmp:
        log_path = Path(tmp, "tensorboard.log")
        command = [
            sys.executable, "-m", "tensorboard.main",
            "--logdir", os.fspath(logdir),
            "--host", "127.0.0.1", "--port", "0",
            "--reload_interval", "1",
        ]  # fmt: skip
        if load_fast is not None:
            command += ["--load_fast", load_fast]
        if samples_per_plugin is not None:
            command += ["--samples_per_plugin", samples_per_plugin]
        # TensorBoard imports TensorFlow when installed: keep it quiet and off any GPU.
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=tmp
            )
        try:
            server = TensorBoardServer("", Path(logdir), process, log_path)

            def printed_url() -> str | None:
                match = _URL.search(server.log())
                return match and match.group(1)

            server.url = server.wait_for(printed_url, startup_timeout, 0.1)
            server.wait_for(lambda: server.get_json("data/runs") is not None, 30.0, 0.1)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@dataclass(frozen=True)
class ImageCard:
    """One card of the images dashboard, as rendered."""

    run: str
    tag: str
    description: str  # the description HTML the card's info button shows
    src: str  # the <img> URL ("" if the card has no image)
    natural_width: int  # > 0 once the browser has decoded the image
    natural_height: int


@dataclass(frozen=True)
class DashboardView:
    """What the images dashboard showed."""

    cards: list[ImageCard]
    description_shown: str | None  # text of the opened description dialog, if one was opened

    @property
    def tags(self) -> list[str]:
        return [card.tag for card in self.cards]


_CARDS_JS = """loaders => loaders.map(loader => {
  const heading = loader.shadowRoot.querySelector('tf-card-heading');
  const img = loader.shadowRoot.querySelector('img');
  return {
    run: heading.querySelector('[itemprop=run]')?.textContent
      ?? heading.shadowRoot.querySelector('[itemprop=run]')?.textContent ?? '',
    tag: heading.shadowRoot.querySelector('[itemprop=tag]')?.textContent ?? '',
    description: heading.description ?? '',
    src: img ? img.src : '',
    natural_width: img && img.complete ? img.naturalWidth : 0,
    natural_height: img && img.complete ? img.naturalHeight : 0,
  };
})"""


def open_images_dashboard(
    url: str,
    screenshot_path: str | os.PathLike,
    min_loaded: int = 1,
    tag_filter: str | None = None,
    open_description_of: str | None = None,
    timeout: float = 60.0,
) -> DashboardView:
    """Loads `{url}/#images` in headless Chromium and reports the image cards it renders.

    `tag_filter` (a regular expression) goes into the dashboard's tag filter through the URL,
    so that only the matching cards are shown. Waits until at least `min_loaded` cards show a
    decoded image (`naturalWidth > 0`);
    optionally clicks the info button of the card with tag `open_description_of` and waits
    for its description dialog; then saves a full-page screenshot to `screenshot_path`.

    Raises:
        TimeoutError: Fewer than `min_loaded` images loaded (or no such description dialog)
            within `timeout` seconds.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            page = context.new_page()
            page.set_default_timeout(timeout * 1000)
            fragment = "images"
            if tag_filter is not None:
                fragment += f"&tagFilter={urllib.parse.quote(tag_filter, safe='')}"
            page.goto(f"{url}/#{fragment}", wait_until="load")

            def rendered_cards() -> list[ImageCard]:
                cards = [
                    ImageCard(**card)
                    for card in page.locator("tf-image-loader").evaluate_all(_CARDS_JS)
                ]
                loaded = [card for card in cards if card.natural_width > 0]
                return cards if len(loaded) >= min_loaded else []

            cards = wait_for(rendered_cards, timeout)
            description_shown = None
            if open_description_of is not None:
                loader = (
                    page.locator("tf-image-loader")
                    .filter(has=page.locator(f"[itemprop=tag]:text-is('{open_description_of}')"))
                    .first  # a filtered dashboard may show a card twice: search results, group
                )
                loader.locator("paper-icon-button[icon=info]").click()
                dialog = loader.locator("#descriptionDialog")
                dialog.wait_for(state="visible")
                description_shown = dialog.locator("tf-markdown-view").evaluate(
                    "view => view.shadowRoot.querySelector('#markdown').innerText"
                )
            page.screenshot(path=os.fspath(screenshot_path), full_page=True)
            return DashboardView(cards, description_shown)
        finally:
            context.close()
