"""`collabopt report`: the HTML page, its figures, and how it renders in a real browser."""
from __future__ import annotations

import dataclasses
import html
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from click.testing import CliRunner

from collabopt.pipelines.cli import main
from collabopt.pipelines.metadata.leaves import LeafRecord
from collabopt.pipelines.report import SelectionInfo, focus_leaf, pareto_front
from tests.pipelines.test_lineage import expected_nodes

CHROMIUM = "/usr/bin/chromium"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Page(HTMLParser):
    """The <img> sources, the cells of each table (by table id) of a page."""

    def __init__(self):
        super().__init__()
        self.images: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._table = None
        self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        elif tag == "table":
            self._table = attrs.get("id", "")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self._table][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _parse(path: str) -> _Page:
    page = _Page()
    with open(path, encoding="utf-8") as f:
        page.feed(f.read())
    return page


def _record(path, accuracy, blessed=True, selected=False, ms=1.0) -> LeafRecord:
    fields = {f.name: None for f in dataclasses.fields(LeafRecord)}
    fields.update(path=path, uri="", int8_accuracy=accuracy, tflite_bytes=1000,
                  vela=[{"target": "ethos-u55-128", "inference_ms": ms, "flash_bytes": 900}],
                  blessed=blessed, selected=selected, reasons=[], evaluation_id=1, tflite_id=2)
    return LeafRecord(**fields)


# --- fast ----------------------------------------------------------------------------------------

def test_pareto_front_keeps_only_undominated_points():
    points = [(1.0, 0.90), (2.0, 0.95), (2.0, 0.93), (3.0, 0.94), (0.5, 0.80)]
    assert pareto_front(points) == [4, 0, 1]


def test_focus_leaf_without_a_selection_follows_the_closest_then_the_most_accurate():
    records = [_record("ptq", 0.95, blessed=False), _record("prune>ptq", 0.90, blessed=False)]
    closest = SelectionInfo(explanation="No leaf meets the thresholds; closest is prune>ptq: "
                                        "int8_accuracy 0.9 is below min_accuracy=0.97.",
                            closest_path="prune>ptq")
    leaf, note = focus_leaf(records, closest)
    assert leaf.path == "prune>ptq" and "came closest" in note
    leaf, note = focus_leaf(records, SelectionInfo())
    assert leaf.path == "ptq" and "best int8 accuracy" in note
    leaf, note = focus_leaf(records, SelectionInfo(selected_path="prune>ptq"))
    assert leaf.path == "prune>ptq" and note == ""


# --- a real run ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def report_dir(small_run, tmp_path_factory):
    from collabopt.pipelines.report import build_report

    out = str(tmp_path_factory.mktemp("report"))
    index = build_report(small_run.metadata, out)
    assert index == os.path.join(out, "index.html")
    return out


@pytest.mark.e2e
def test_report_page_references_its_images_by_relative_path(report_dir, small_run):
    page = _parse(os.path.join(report_dir, "index.html"))
    assert sorted(page.images) == ["pareto.png", "tree.png", "weights.png"]
    for src in page.images:
        with open(os.path.join(report_dir, src), "rb") as f:
            data = f.read()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, src
    # The leaves table lists both leaves, and the selected one is named on the page.
    leaves = [row[0] for row in page.tables["leaves"][1:] if row and row[0]]
    assert leaves == ["ptq", "prune50>cluster16>pcqat"]
    from collabopt.pipelines.metadata.read import read_lineage

    selected = read_lineage(small_run.metadata, selected=True)
    path = selected.artifacts[selected.root].properties["selected_path"]
    selected_rows = [row for row in page.tables["leaves"] if row and row[-1] == "SELECTED"]
    assert [row[0] for row in selected_rows] == [path]
    # The page's lineage is the selected model's: every component of its path, Selector included.
    lineage_nodes = [row[0].split()[0] for row in page.tables["lineage"][1:]]
    assert set(lineage_nodes) == expected_nodes(path)
    assert lineage_nodes[0] == "ImportExampleGen" and lineage_nodes[-1] == "Selector"


@pytest.mark.e2e
def test_report_weights_follow_the_path_of_the_leaf(small_run, tmp_path):
    from collabopt.pipelines.metadata.read import read_leaves, read_lineage
    from collabopt.pipelines.metadata.store import open_store
    from collabopt.pipelines.report import weight_densities

    leaf = {r.path: r for r in read_leaves(small_run.metadata)}["prune50>cluster16>pcqat"]
    lineage = read_lineage(small_run.metadata, leaf.tflite_id)
    weights = weight_densities(open_store(small_run.metadata), lineage, leaf,
                               str(tmp_path / "w.png"))
    assert weights["reason"] == ""
    labels = [s["label"].split()[0] for s in weights["stages"]]
    assert labels == ["float", "pruned", "clustered", "PCQAT", "int8"]
    by_label = dict(zip(labels, weights["stages"]))
    assert float(by_label["float"]["sparsity"].rstrip("%")) < 5
    # Measured on the kernel itself: pruning zeroed weights, clustering kept few values, and the
    # int8 .tflite still has both.
    for stage in ("pruned", "clustered", "PCQAT", "int8"):
        assert float(by_label[stage]["sparsity"].rstrip("%")) > 30, stage
    assert by_label["clustered"]["unique"] <= 17
    assert by_label["int8"]["unique"] <= 17
    assert (tmp_path / "w.png").stat().st_size > 5000


@pytest.mark.e2e
def test_report_cli(small_run, tmp_path):
    out = tmp_path / "cli-report"
    result = CliRunner().invoke(main, ["report", "--metadata", small_run.metadata,
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "index.html").exists() and (out / "tree.png").exists()


_CHECK_SCRIPT = """<script>
window.addEventListener('load', function () {
  var out = document.createElement('pre');
  out.id = 'img-check';
  out.textContent = JSON.stringify(Array.prototype.map.call(document.images, function (i) {
    return {src: i.getAttribute('src'), complete: i.complete, width: i.naturalWidth,
            height: i.naturalHeight};
  }));
  document.body.appendChild(out);
});
</script>
"""


def _chromium(args: list[str], profile: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=180)


@pytest.mark.e2e
@pytest.mark.skipif(not os.path.exists(CHROMIUM),
                    reason="headless Chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(report_dir, tmp_path):
    # A copy of the page next to the original (same relative image paths) with a script that
    # writes what the browser loaded into the DOM.
    with open(os.path.join(report_dir, "index.html"), encoding="utf-8") as f:
        page = f.read()
    check = os.path.join(report_dir, "_check.html")
    with open(check, "w", encoding="utf-8") as f:
        f.write(page.replace("</body>", _CHECK_SCRIPT + "</body>"))
    try:
        result = _chromium(["--virtual-time-budget=10000", "--dump-dom", f"file://{check}"],
                           str(tmp_path / "profile"))
    finally:
        os.remove(check)
    assert result.returncode == 0, result.stderr[-2000:]
    match = re.search(r'<pre id="img-check">(.*?)</pre>', result.stdout, re.S)
    assert match, "the page's load handler did not run: " + result.stdout[-1000:]
    images = json.loads(html.unescape(match.group(1)))
    assert sorted(i["src"] for i in images) == ["pareto.png", "tree.png", "weights.png"]
    for image in images:
        assert image["complete"] and image["width"] > 300 and image["height"] > 200, image
    assert 'id="leaves"' in result.stdout and "prune50&gt;cluster16&gt;pcqat" in result.stdout

    screenshot = tmp_path / "report.png"
    shot = _chromium([f"--screenshot={screenshot}", "--window-size=1400,3000",
                      "--hide-scrollbars", f"file://{os.path.join(report_dir, 'index.html')}"],
                     str(tmp_path / "profile2"))
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert screenshot.read_bytes().startswith(PNG_MAGIC)
    keep = os.environ.get("COLLABOPT_REPORT_SCREENSHOT")  # to look at it after the run
    if keep:
        shutil.copy(screenshot, keep)
