"""`lenstrt inspect`: the grading page built from a real serve output, the grade merge against hand-computed
figures, `--serve` writing grades.csv, and the page driven in a real headless Chromium (Selenium)."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from lenstrt.cli.main import cli
from lenstrt.errors import InputError
from lenstrt.inspect.grades import GradeStore, fleiss_kappa, merge, read_grades
from lenstrt.inspect.page import build_page, current_page, page_ids
from lenstrt.inspect.server import make_server


def _catalog(out: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted((out / "catalog").glob("*.parquet"))])


def _index(page: Path) -> dict:
    text = (page / "data" / "index.js").read_text()
    return json.loads(text[text.index("=") + 1:].strip().rstrip(";"))


def _one_line_error(res, *needles: str) -> str:
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def serve_out(bundle_dir, sim_dir, tmp_path_factory) -> Path:
    """A real `lenstrt serve` output: the 96 simulated cutouts scored by the two-member bundle (ort)."""
    from lenstrt.serve.pipeline import ServeOptions, serve

    out = tmp_path_factory.mktemp("inspect_serve")
    serve(bundle_dir, [str(sim_dir)], out, ServeOptions(backend="ort", unit_rows=40, batch_size=16),
          progress=False, log=lambda *a: None)
    return out


@pytest.fixture(scope="module")
def page(serve_out, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("inspect_page") / "page"
    res = CliRunner().invoke(cli, ["inspect", str(serve_out), "--top", "1000", "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    assert f"page: {out / 'index.html'}" in res.output
    return out


def test_every_candidate_has_a_tile_and_the_page_data(page, serve_out):
    cat = _catalog(serve_out)
    idx = _index(page)
    assert idx["n"] == cat.num_rows == 96
    order = sorted(zip(cat.column("score").to_pylist(), cat.column("id").to_pylist()), key=lambda x: (-x[0], x[1]))
    assert idx["ids"] == [i for _, i in order]  # best first
    assert idx["score"] == pytest.approx([s for s, _ in order], abs=1e-5)
    std = dict(zip(cat.column("id").to_pylist(), cat.column("score_std").to_pylist()))
    assert idx["std"] == pytest.approx([std[i] for i in idx["ids"]], abs=1e-5)
    assert idx["members"] == ["resnet18-s0", "vit_tiny-s1000"]
    tiles = sorted((page / "tiles").iterdir())
    assert [t.name for t in tiles] == [f"{r:06d}.png" for r in range(96)]
    for t in tiles[:3] + tiles[-3:]:
        im = Image.open(t)
        assert im.format == "PNG" and im.mode == "RGB" and im.size == (64, 64)
    # member scores in the on-demand chunks, in rank order
    chunk = (page / "data" / "chunk-000000.js").read_text()
    k, rows = json.loads("[" + chunk[chunk.index("(") + 1:chunk.rindex(")")] + "]")
    assert k == 0 and len(rows) == 96
    member = dict(zip(cat.column("id").to_pylist(), cat.column("score_vit_tiny-s1000").to_pylist()))
    assert [r["m"][1] for r in rows] == pytest.approx([member[i] for i in idx["ids"]], abs=1e-5)
    assert page_ids(page) == idx["ids"]
    meta = json.loads((page / "page.json").read_text())
    assert meta["n"] == 96 and meta["serve_out"] == str(serve_out.resolve())
    assert not list(page.parent.glob(".page.*"))  # no temp directory left


def test_tile_is_the_galleries_composite(page, serve_out, bundle_dir):
    """The same asinh g,r,i mapping as candidates.png (lenstrt.plots.composite), origin at the bottom."""
    from lenstrt.bundle import Bundle
    from lenstrt.data.readers import CutoutFile
    from lenstrt.plots import composite

    cat = _catalog(serve_out).to_pylist()
    ids = _index(page)["ids"]
    for rank in (0, 57):
        row = next(r for r in cat if r["id"] == ids[rank])
        with CutoutFile.for_bundle(row["source"], Bundle(bundle_dir).input, ()) as f:
            img = f.read(row["index"], row["index"] + 1).images[0]
        want = np.clip(np.rint(np.flipud(composite(img)) * 255), 0, 255).astype(np.uint8)
        got = np.asarray(Image.open(page / "tiles" / f"{rank:06d}.png"))
        assert np.array_equal(got, want)


def test_page_references_only_local_files(page):
    texts = {p.name: p.read_text() for p in page.iterdir() if p.suffix in (".html", ".js", ".css")}
    texts["index.js"] = (page / "data" / "index.js").read_text()[:2000]
    assert set(texts) >= {"index.html", "app.js", "style.css"}
    for name, text in texts.items():
        assert not re.search(r"(https?:)?//[a-z0-9]", text, re.I), f"{name} references a remote URL"
        assert "@import" not in text and "url(" not in text
    html = texts["index.html"]
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert refs and all((page / r).is_file() for r in refs), refs
    assert "fetch(" not in html
    # the data files are loaded with <script> tags (file:// refuses fetch), from paths inside the page
    assert '"data/chunk-"' in texts["app.js"] and '"tiles/"' in texts["app.js"]


def test_top_min_score_rebuild_and_reuse(serve_out, tmp_path):
    out = tmp_path / "p"
    scores = sorted(_catalog(serve_out).column("score").to_pylist(), reverse=True)
    cut = scores[9]
    meta = build_page(serve_out, out, top=5, min_score=cut, progress=False)
    assert meta["n"] == 5 and len(list((out / "tiles").iterdir())) == 5
    assert current_page(serve_out, out, 5, cut) is not None and current_page(serve_out, out, 6, cut) is None
    meta = build_page(serve_out, out, top=50, min_score=cut, progress=False)  # replaces the page whole
    assert meta["n"] == sum(s >= np.float32(cut) for s in scores) == 10
    assert len(list((out / "tiles").iterdir())) == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]


def test_bad_input_is_one_line(serve_out, tmp_path):
    run = CliRunner().invoke
    _one_line_error(run(cli, ["inspect", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]),
                    "nope: no such directory", "lenstrt serve --out")
    (tmp_path / "empty").mkdir()
    _one_line_error(run(cli, ["inspect", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]),
                    "not a `lenstrt serve` output")
    _one_line_error(run(cli, ["inspect", str(serve_out), "--min-score", "0.99999", "--out", str(tmp_path / "o")]),
                    "no candidates with score >= 0.99999", "lower --min-score")
    _one_line_error(run(cli, ["inspect", str(serve_out)]), "--out PAGE_DIR is needed")
    (tmp_path / "afile").write_text("x")
    _one_line_error(run(cli, ["inspect", str(serve_out), "--out", str(tmp_path / "afile")]), "afile", "is a file")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    _one_line_error(run(cli, ["inspect", str(serve_out), "--out", str(tmp_path / "mine")]), "not a page written")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    _one_line_error(run(cli, ["inspect", str(serve_out), "--out", str(tmp_path / "afile" / "page")]),
                    "cannot be used as --out")
    _one_line_error(run(cli, ["inspect", str(serve_out), "a", "b", "--out", str(tmp_path / "o")]), "one SERVE_OUT")


def test_moved_cutout_file_is_one_line_naming_it(serve_out, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(serve_out, moved)
    for p in (moved / "catalog").glob("*.parquet"):
        t = pq.read_table(p)
        src = [str(tmp_path / "gone" / Path(s).name) for s in t.column("source").to_pylist()]
        pq.write_table(t.set_column(t.column_names.index("source"), "source", pa.array(src)), p)
    res = CliRunner().invoke(cli, ["inspect", str(moved), "--out", str(tmp_path / "o"), "-q"])
    line = _one_line_error(res, str(tmp_path / "gone"), "is missing", "put it back")
    assert ".h5" in line
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.*"))


# -- merge -----------------------------------------------------------------------------------------------------
def _write(path: Path, rows: list[tuple]) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "grade", "grader", "time"])
        w.writerows(rows)
    return path


def test_merge_equals_hand_computed(tmp_path):
    a = _write(tmp_path / "alice.csv", [("a", 1, "alice", "2026-01-01T10:00:00Z"), ("b", 2, "alice", "2026-01-01T10:00:01Z"),
                                         ("c", 4, "alice", "2026-01-01T10:00:02Z"), ("d", 1, "alice", "2026-01-01T10:00:03Z")])
    b = _write(tmp_path / "bob.csv", [("a", 1, "", "2026-01-02T10:00:00Z"), ("b", 3, "", "2026-01-02T10:00:00Z"),
                                       ("c", 4, "", "2026-01-02T10:00:00Z"), ("e", 0, "", "")])
    c = _write(tmp_path / "carol.csv", [("a", 4, "carol", "2026-01-03T09:00:00Z"), ("b", 3, "carol", "2026-01-03T09:00:00Z"),
                                         ("c", 4, "carol", "2026-01-03T09:00:00Z"),
                                         ("a", 2, "carol", "2026-01-03T11:00:00Z")])  # carol changed her mind on a
    rows, stats = merge([a, b, c])
    got = {r["id"]: r for r in rows}
    # a: 1,1,2  b: 2,3,3  c: 4,4,4  d: 1 (one grader); e: 0 = ungraded, not a grade
    assert [r["id"] for r in rows] == ["d", "a", "b", "c"]  # most lens-like mean first
    assert got["a"]["mean_grade"] == pytest.approx(4 / 3, abs=1e-4) and got["a"]["modal_grade"] == 1
    assert got["a"]["agreement"] == pytest.approx(2 / 3, abs=1e-4) and got["a"]["n_graders"] == 3
    assert got["b"]["mean_grade"] == pytest.approx(8 / 3, abs=1e-4) and got["b"]["modal_grade"] == 3
    assert got["b"]["agreement"] == pytest.approx(2 / 3, abs=1e-4)
    assert (got["c"]["mean_grade"], got["c"]["agreement"], got["c"]["n_4"]) == (4.0, 1.0, 3)
    assert (got["d"]["n_graders"], got["d"]["mean_grade"], got["d"]["agreement"]) == (1, 1.0, 1.0)
    assert got["a"]["graders"] == "alice=1;bob=1;carol=2"  # bob's rows have no grader: the file's stem
    # Fleiss' kappa by hand over a, b, c (3 graders each; d has one): P_i = 1/3, 1/3, 1 -> P = 5/9;
    # p_j = 2/9, 2/9, 2/9, 3/9 -> P_e = 21/81; kappa = (5/9 - 21/81) / (1 - 21/81) = 0.4
    assert stats["fleiss_kappa"] == pytest.approx(0.4, abs=1e-4)
    assert stats["mean_agreement"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3, abs=1e-4)
    assert stats["graders"] == ["alice", "bob", "carol"] and stats["ids"] == 4
    # the CLI writes the same table
    out = tmp_path / "merged.csv"
    res = CliRunner().invoke(cli, ["inspect", "--merge", str(a), str(b), str(c), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "Fleiss' kappa 0.4" in res.output
    table = list(csv.DictReader(out.open()))
    assert [r["id"] for r in table] == ["d", "a", "b", "c"]
    assert table[1]["mean_grade"] == "1.3333" and table[1]["agreement"] == "0.6667" and table[1]["n_graders"] == "3"


def test_fleiss_kappa_matches_the_published_example():
    """Fleiss (1971) as worked on Wikipedia: 10 items, 14 raters, 5 categories, kappa = 0.210."""
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(table) == pytest.approx(0.2099, abs=5e-4)
    assert fleiss_kappa([[3, 0, 0, 0], [0, 0, 0, 3]]) == pytest.approx(1.0)
    assert fleiss_kappa([[1, 0, 0, 0]]) is None and fleiss_kappa([[2, 0, 0, 0], [3, 0, 0, 0]]) is None


def test_bad_grades_file_is_one_line(tmp_path):
    bad = _write(tmp_path / "bad.csv", [("a", 1, "x", ""), ("b", 7, "x", "")])
    with pytest.raises(InputError, match=r"bad.csv: line 3: grade '7' is not 1-4"):
        read_grades(bad)
    (tmp_path / "other.csv").write_text("name,value\na,1\n")
    res = CliRunner().invoke(cli, ["inspect", "--merge", str(tmp_path / "other.csv")])
    _one_line_error(res, "other.csv: not a grades file", "Export CSV")
    _one_line_error(CliRunner().invoke(cli, ["inspect", "--merge", str(tmp_path / "none.csv")]), "none.csv")


# -- --serve -----------------------------------------------------------------------------------------------------
def _post(url: str, payload, ctype: str = "application/json", origin: str | None = None):
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": ctype, **({"Origin": origin} if origin else {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_server_writes_posted_grades_atomically(page, tmp_path):
    grades = tmp_path / "grades.csv"
    ids = page_ids(page)
    server = make_server(page, grades, port=0, ids=ids)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        with urllib.request.urlopen(base, timeout=10) as r:
            assert b"<title>lenstrt inspect</title>" in r.read()
        with urllib.request.urlopen(base + "tiles/000000.png", timeout=10) as r:
            assert r.read()[:8] == b"\x89PNG\r\n\x1a\n"
        status, body = _post(base + "grades", {"id": ids[0], "grade": 1, "grader": "ann", "time": "2026-01-01T00:00:00Z"})
        assert status == 200 and body["ok"]
        assert list(csv.DictReader(grades.open())) == [
            {"id": ids[0], "grade": "1", "grader": "ann", "time": "2026-01-01T00:00:00Z"}]
        status, _ = _post(base + "grades", [{"id": ids[1], "grade": 3, "grader": "ann", "time": "2026-01-01T00:00:01Z"},
                                            {"id": ids[0], "grade": 2, "grader": "ann", "time": "2026-01-01T00:00:02Z"}])
        assert status == 200
        rows = {r["id"]: r["grade"] for r in csv.DictReader(grades.open())}
        assert rows == {ids[0]: "2", ids[1]: "3"}
        assert _post(base + "grades", {"id": ids[1], "grade": 0, "grader": "ann"})[0] == 200  # 0 clears
        assert [r["id"] for r in csv.DictReader(grades.open())] == [ids[0]]
        assert _post(base + "grades", {"id": "no-such", "grade": 1})[0] == 400
        assert _post(base + "grades", {"id": ids[0], "grade": 9})[0] == 400
        assert _post(base + "grades", {"id": ids[0], "grade": 1}, ctype="text/plain")[0] == 415
        assert _post(base + "grades", {"id": ids[0], "grade": 1}, origin="http://evil.example")[0] == 403
        with urllib.request.urlopen(base + "grades", timeout=10) as r:
            assert [g["id"] for g in json.loads(r.read())["grades"]] == [ids[0]]
        assert not list(tmp_path.glob(".grades.csv.tmp*"))
    finally:
        server.shutdown()
        server.server_close()
    assert GradeStore(grades).rows[(ids[0], "ann")]["grade"] == 2  # a restarted server keeps them


def test_cli_serve_subprocess(serve_out, page, tmp_path):
    """`lenstrt inspect SERVE_OUT --serve` as a user runs it: the page reused, a POST lands in
    SERVE_OUT/grades.csv."""
    so = tmp_path / "so"
    shutil.copytree(serve_out, so)
    proc = subprocess.Popen([sys.executable, "-m", "lenstrt.cli.main", "inspect", str(so), "--serve", "--port", "0",
                             "-q"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if line.startswith("serving "):
                break
        m = re.search(r"serving (http://127\.0\.0\.1:\d+/)", "".join(lines))
        assert m, "".join(lines)
        ids = page_ids(so / "inspect")
        status, body = _post(m.group(1) + "grades", {"id": ids[2], "grade": 4, "grader": "zoe"})
        assert status == 200 and body["file"] == str(so / "grades.csv")
        row = next(csv.DictReader((so / "grades.csv").open()))
        assert (row["id"], row["grade"], row["grader"]) == (ids[2], "4", "zoe")
    finally:
        proc.terminate()
        proc.wait(timeout=20)


# -- a real browser ------------------------------------------------------------------------------------------------
def _chromium() -> tuple[str, str] | None:
    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture()
def browser(tmp_path):
    if importlib.util.find_spec("selenium") is None:
        pytest.skip("selenium is not installed (pip install -e '.[dev]')")
    found = _chromium()
    if found is None:
        pytest.skip("Chromium and chromedriver not found (Debian/Ubuntu: apt-get install chromium chromium-driver; "
                    ".ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,900"):
        opts.add_argument(a)
    opts.binary_location = found[0]
    driver = webdriver.Chrome(options=opts, service=Service(found[1]))
    driver.set_script_timeout(20)
    yield driver
    driver.quit()


def _wait(driver, js: str, timeout: float = 15.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: d.execute_script(js))


def _badges(driver) -> dict[str, str]:
    return driver.execute_script(
        "var o = {}; document.querySelectorAll('#grid .tile').forEach(function (li) {"
        " var g = li.querySelector('.grade').textContent; if (g) o[li.querySelector('.id').textContent] = g; });"
        " return o;")


def test_browser_keyboard_grades_survive_reload_and_export(browser, page):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.select import Select

    ids = page_ids(page)
    browser.get((page / "index.html").as_uri())
    _wait(browser, "return document.querySelectorAll('#grid .tile').length === 96 && "
                   "document.querySelector('#grid .tile .members').textContent !== ''")
    assert browser.execute_script("return document.activeElement.dataset.rank") == "0"
    grader = browser.find_element(By.ID, "grader")
    grader.send_keys("ann", Keys.TAB)
    browser.find_elements(By.CSS_SELECTOR, "#grid .tile")[0].click()
    # 1 on the first (moves on), 3 on the second (moves on), skip the third, 4 on the fourth, then back to 0 and 2
    ActionChains(browser).send_keys("1", "3", Keys.ARROW_RIGHT, "4", Keys.HOME, "2").perform()
    want = {ids[0]: "2 probable lens", ids[1]: "3 possible lens", ids[3]: "4 not a lens"}
    assert _badges(browser) == want
    browser.refresh()
    _wait(browser, "return document.querySelectorAll('#grid .tile').length === 96")
    assert _badges(browser) == want
    assert browser.find_element(By.ID, "grader").get_attribute("value") == "ann"
    text = browser.execute_script("return window.LenstrtInspect.exportCSV()")
    rows = list(csv.DictReader(text.splitlines()))
    assert [(r["id"], r["grade"], r["grader"]) for r in rows] == [(ids[0], "2", "ann"), (ids[1], "3", "ann"),
                                                                  (ids[3], "4", "ann")]
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", r["time"]) for r in rows)
    # ArrowDown goes to the tile straight below, whatever the window's width makes the columns
    ActionChains(browser).send_keys(Keys.HOME, Keys.ARROW_DOWN).perform()
    below = browser.execute_script(
        "var t = document.querySelectorAll('#grid .tile'), a = document.activeElement;"
        " return [a.offsetLeft === t[0].offsetLeft, a.offsetTop > t[0].offsetTop, Number(a.dataset.rank)];")
    assert below[:2] == [True, True] and below[2] > 3
    # sorting and filtering: spread, high first; only the graded
    Select(browser.find_element(By.ID, "show")).select_by_value("graded")
    _wait(browser, "return document.querySelectorAll('#grid .tile').length === 3")
    Select(browser.find_element(By.ID, "sort")).select_by_value("std-desc")
    shown = browser.execute_script("return Array.from(document.querySelectorAll('#grid .tile .id'), e => e.textContent)")
    std = dict(zip(ids, _index(page)["std"]))
    assert shown == sorted([ids[0], ids[1], ids[3]], key=lambda i: (-std[i], ids.index(i)))
    # the exported file merges
    (page.parent / "ann.csv").write_text(text)
    merged, stats = merge([page.parent / "ann.csv"])
    assert {r["id"]: r["mean_grade"] for r in merged} == {ids[0]: 2.0, ids[1]: 3.0, ids[3]: 4.0}


def test_browser_served_page_posts_grades(browser, page, tmp_path):
    grades = tmp_path / "grades.csv"
    server = make_server(page, grades, port=0, ids=page_ids(page))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        from selenium.webdriver.common.action_chains import ActionChains

        browser.get(f"http://127.0.0.1:{server.server_address[1]}/")
        _wait(browser, "return document.querySelectorAll('#grid .tile').length === 96 && window.LenstrtInspect.served")
        ActionChains(browser).send_keys("1", "1").perform()
        _wait(browser, "return window.LenstrtInspect.outbox().length === 0 && "
                       "document.getElementById('saving').textContent.indexOf('saved to') === 0")
        ids = page_ids(page)
        rows = list(csv.DictReader(grades.open()))
        assert sorted((r["id"], r["grade"], r["grader"]) for r in rows) == sorted(
            [(ids[0], "1", "anonymous"), (ids[1], "1", "anonymous")])
    finally:
        server.shutdown()
        server.server_close()
