"""The Results page answers "does the second stage help, and why?": deep links, Table 3 and the verdicts,
confusion-matrix cells that open their images, and Figure 16 coloured per comparison.

The records are real: two repeats of a tiny Dogs & Cats run (``tests/data/dogs_cats_records.json``, made by
``python -m core run --dataset dogs-cats --repeats 2 --epochs 2 --limit 200 --test-limit 100``). The test
images they name are written as small JPEGs under a temporary folder, so the page can show them.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.app import gallery
from core.results import predictions
from core.app import reference
from core.results import stats
from core.results.store import RunStore
from ui.charts import GAIN_COLORS, cell_from_selection, confusion_figure, figure16

APP = str(Path(__file__).resolve().parent.parent / "app.py")
RECORDS = Path(__file__).resolve().parent / "data" / "dogs_cats_records.json"
TIMEOUT = 120


def real_runs() -> list[dict]:
    return json.loads(RECORDS.read_text())


def write_test_images(root: Path, runs: list[dict]) -> Path:
    """A JPEG for every image name the records hold (cats dark, dogs bright), under the names they use."""
    for run in runs:
        dec = predictions.decode(run["predictions"])
        for row, image_id in zip(dec["rows"], dec["ids"]):
            path = root / image_id
            path.parent.mkdir(parents=True, exist_ok=True)
            shade = 200 if dec["y_true"][row] else 40
            assert cv2.imwrite(str(path), np.full((40, 48, 3), shade, np.uint8))
    return root


def other_experiment(runs: list[dict]) -> list[dict]:
    """The same repeats stored under a second protocol (3 epochs), finished later: the page's default pick."""
    out = copy.deepcopy(runs)
    for run in out:
        run["protocol"]["epochs"] = 3
        run["key"] = "0ther0experiment"
        run["finished_at"] = "2030-01-01T00:00:00+00:00"
    return out


@pytest.fixture
def results_cache(tmp_path, monkeypatch):
    """A cache with the real Dogs & Cats experiment (its images under tmp) and a second experiment."""
    monkeypatch.setattr(reference, "REFERENCE_DIR", tmp_path / "no_reference")
    monkeypatch.delenv("TWO_STAGE_DEMO", raising=False)
    runs = real_runs()
    images = write_test_images(tmp_path / "dogs-cats", runs)
    for run in runs:
        run["dataset"]["source"] = str(images)
    store = RunStore(tmp_path / "cache")
    for run in runs + other_experiment(runs):
        store.put(run)
    store.close()
    monkeypatch.setenv("TWO_STAGE_CACHE", str(tmp_path / "cache"))
    return runs


def open_results(experiment: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("app_pages/results.py")
    if experiment:
        at.query_params["experiment"] = experiment
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not [e.value for e in at.error if "Something went wrong" in str(e.value)]
    return at


def markdown(at: AppTest) -> list[str]:
    return [str(m.value) for m in at.markdown]


def test_a_deep_link_opens_its_experiment_and_the_url_follows_the_choice(results_cache):
    key = results_cache[0]["key"]
    plain = open_results()
    assert plain.selectbox(key="results_exp").value == "0ther0experiment"  # the default: most recent
    assert plain.query_params["experiment"] == "0ther0experiment"
    at = open_results(key)
    assert at.selectbox(key="results_exp").value == key
    assert any(key in str(c.value) for c in at.caption), "the shareable link names the experiment"
    at.selectbox(key="results_exp").set_value("0ther0experiment").run()
    assert at.query_params["experiment"] == "0ther0experiment", "the URL follows the reader's choice"


def test_a_link_to_a_missing_experiment_says_so_and_shows_another(results_cache):
    at = open_results("no-such-experiment")
    assert any("not stored here" in str(w.value) for w in at.warning)
    assert at.selectbox(key="results_exp").value in ("0ther0experiment", results_cache[0]["key"])


def test_verdicts_come_first_adam_then_sgd_and_table_3_follows(results_cache):
    runs = results_cache
    at = open_results(runs[0]["key"])
    text = markdown(at)
    adam = next(i for i, t in enumerate(text) if t.startswith("**Ours, Adam head:**"))
    sgd = next(i for i, t in enumerate(text) if t.startswith("**Ours, SGD head:**"))
    table3 = next(i for i, t in enumerate(text) if "Table 3" in t)
    assert adam < sgd < table3 < next(i for i, t in enumerate(text) if "Table 1" in t)
    assert stats.verdict(runs, "adam") in text[adam] and stats.verdict(runs, "sgd") in text[sgd]
    assert any("Paper (Dogs & Cats, 20 repeats" in str(c.value) for c in at.caption)
    sizes = runs[0]["dataset"]["sizes"]  # 200 images: Table 1 says the paper had about 8,000 + 2,000
    assert any(f"Data: ours {sizes['train'] + sizes['val']:,} training + validation and {sizes['test']:,} test "
               "images; the paper about 8,000 and 2,000" in str(c.value) for c in at.caption)
    shown = at.dataframe[0].value  # the Adam head's Table 3: key columns only, all four baselines
    assert list(shown.columns[:3]) == ["stage one", "stage one test", "Adam head test"]
    assert {"difference", "p-value", "significant"} <= set(shown.columns)
    assert list(shown["stage one"]) == ["as reported", "best checkpoint", "BatchNorm re-estimated",
                                        "best + BatchNorm"]
    assert "None" not in shown.to_string() and "nan" not in shown.to_string()
    # these two real repeats' Adam head is within noise of stage one (p = 1): no share of it is stated
    assert stats.table3(runs).set_index(["head", "baseline"]).loc[("adam", "reported"), "p (t-test)"] >= 0.05
    assert set(shown["share of gain"]) == {"–"}


def test_a_confusion_matrix_cell_shows_its_misclassified_images(results_cache):
    runs = results_cache
    at = open_results(runs[0]["key"])
    at.radio(key="cm_method").set_value("stage1").run()
    at.selectbox(key="cm_cell").set_value("1,0").run()  # true dogs, predicted cats
    assert not at.exception
    expected = gallery.cell_images(runs, "stage1", 1, 0)
    count = len(expected)
    said = f"**{count} test image{'' if count == 1 else 's'} of *dogs* that stage one (CNN) called *cats*"
    assert any(t.startswith(said) for t in markdown(at)), markdown(at)
    cell_images = [img for img in at.image if "cats" in " ".join(img.captions)]
    assert len(cell_images) >= min(18, expected["id"].nunique())
    table = next(d.value for d in at.dataframe if "P(predicted)" in d.value.columns)
    assert len(table) == len(expected) and set(table["predicted"]) == {"cats"}
    assert table["repeat"].min() == 1, "repeats are numbered from 1"


def test_without_the_dataset_here_the_cell_lists_names_and_probabilities(results_cache, tmp_path, monkeypatch):
    store = RunStore(tmp_path / "cache")
    for run in results_cache:
        moved = copy.deepcopy(run)
        moved["dataset"]["source"] = str(tmp_path / "gone")
        moved["protocol"]["data_path"] = str(tmp_path / "gone")
        store.put(moved)
    store.close()
    at = open_results(results_cache[0]["key"])
    at.selectbox(key="cm_cell").set_value("1,0").run()
    assert any("not on this machine" in str(c.value) for c in at.caption)
    assert not at.image
    assert any("image" in d.value.columns and "P(true)" in d.value.columns for d in at.dataframe)


def test_a_click_on_a_matrix_marker_selects_that_cell():
    names = ["cats", "dogs", "birds"]
    fig = confusion_figure(np.array([[5, 1, 0], [3, 4, 2], [0, 0, 6]]), names)
    index = 1 * 3 + 0  # the marker of true dogs, predicted cats
    point = {"point_index": index, "x": fig.data[1].x[index], "y": fig.data[1].y[index],
             "customdata": list(fig.data[1].customdata[index])}
    assert (point["x"], point["y"]) == ("cats", "dogs")
    assert cell_from_selection({"selection": {"points": [point], "point_indices": [index]}}, names) == (1, 0)
    assert cell_from_selection({"selection": {"points": [{"point_index": index}]}}, names) == (1, 0)
    assert cell_from_selection({"selection": {"points": []}}, names) is None


def test_figure_16_colours_each_segment_by_its_own_head():
    import pandas as pd

    frame = pd.DataFrame({"repeat": [0, 1], "stage1_test_accuracy": [0.80, 0.80],
                          "adam_test_accuracy": [0.85, 0.78], "sgd_test_accuracy": [0.75, 0.80]})
    fig = figure16(frame)
    segments = {(t.meta["head"], t.name): t.line.color for t in fig.data
                if t.meta and "gain" in t.meta}
    assert segments == {("adam", "repeat 1"): GAIN_COLORS["up"], ("sgd", "repeat 1"): GAIN_COLORS["down"],
                        ("adam", "repeat 2"): GAIN_COLORS["down"], ("sgd", "repeat 2"): GAIN_COLORS["same"]}


def test_figure_16_draws_no_mean_over_a_single_repeat():
    import pandas as pd

    one = pd.DataFrame({"repeat": [0], "stage1_test_accuracy": [0.80], "adam_test_accuracy": [0.85],
                        "sgd_test_accuracy": [0.75]})
    two = pd.concat([one, one.assign(repeat=1)])
    means = lambda fig: [t for t in fig.data if t.meta and t.meta.get("mean")]  # noqa: E731
    assert means(figure16(one)) == [] and len(means(figure16(two))) == 2
    assert figure16(one).layout.yaxis.tickformat == ".1%"  # a 10 pp span; a 0.6 pp one needs two decimals:
    assert figure16(one.assign(adam_test_accuracy=0.801, sgd_test_accuracy=0.795)).layout.yaxis.tickformat == ".2%"
    assert [t.line.color for t in figure16(one).data if t.meta and "gain" in t.meta] == \
        [GAIN_COLORS["up"], GAIN_COLORS["down"]]


def test_a_link_followed_from_another_page_wins_over_the_last_choice(results_cache):
    key = results_cache[0]["key"]
    at = open_results(key)
    at.switch_page("app_pages/overview.py").run()
    at.switch_page("app_pages/results.py")
    at.query_params["experiment"] = key
    at.run()
    assert at.selectbox(key="results_exp").value == key


def test_stage_one_can_be_read_with_its_batchnorm_statistics_re_estimated(results_cache):
    """Table 1's stage-one row then shows the mean of the records' ``last_bn`` test accuracy, and Table 2 tests
    the heads against it (Table 3's 'BatchNorm re-estimated' row, read as the paper's tables)."""
    runs = results_cache
    at = open_results(runs[0]["key"])
    box = at.selectbox(key="stage1_weights")
    assert "last epoch, BatchNorm re-estimated" in box.options
    box.set_value("last epoch, BatchNorm re-estimated").run()
    assert not at.exception
    expected = np.mean([r["stage1"]["last_bn"]["test_accuracy"] for r in runs])
    table1 = next(d.value for d in at.dataframe if "test, ours" in d.value.columns)
    assert table1["test, ours"].iloc[0].startswith(f"{100 * expected:.2f}%")
    assert table1["method"].iloc[0] == "stage one, BN re-estimated"
    table2 = next(d.value for d in at.dataframe if "head test" in d.value.columns)
    assert table2["stage one, BN re-estimated test"].iloc[0] == table1["test, ours"].iloc[0].split(" ±")[0]
    assert any("stage-one last-epoch BatchNorm-re-estimated / stage-two" in str(c.value) for c in at.caption)


def with_readings(runs: list[dict]) -> list[dict]:
    """The records as they are now made: each repeat also holds the second-stage readings that train no network
    (:mod:`core.training.ceiling`), here a little above the Adam head."""
    out = copy.deepcopy(runs)
    for i, run in enumerate(out):
        adam = run["adam"][run["protocol"]["stage2_eval"]]["test_accuracy"]
        run["readings"] = {k: {f"{s}_accuracy": min(1.0, adam + 0.01 * (j + 1) + 0.003 * i) for s in
                               ("train", "val", "test")} | {"test_loss": 0.5}
                           for j, k in enumerate(stats.READING_ROWS)}
    return out


def test_table_3_shows_the_readings_and_holm_adjusted_p_values(results_cache, tmp_path):
    """Table 3 as core.results.stats.table3 makes it: the second-stage readings (cRT, DFR, cRT on BN-re-estimated
    features) compared like the heads, every row but the declared primary one with its Holm-adjusted p."""
    from core.protocol.vocabulary import SECOND_STAGE_NAMES

    runs = with_readings(results_cache)
    store = RunStore(tmp_path / "cache")
    for run in runs:
        store.put(run)
    store.close()
    at = open_results(runs[0]["key"])
    text = markdown(at)
    table = stats.table3(runs)
    for key in stats.READING_ROWS:
        assert any(t.startswith(f"**{SECOND_STAGE_NAMES[key]}**") for t in text), (key, text)
    shown = [d.value for d in at.dataframe if {"p (Holm)", "stage one"} <= set(d.value.columns)]
    assert len(shown) == len(stats.HEADS) + len(stats.READING_ROWS)
    adam = shown[0]
    expected = table[(table["head"] == "adam")]["p (Holm)"]
    assert adam["p (Holm)"].iloc[0] == ("–" if np.isnan(expected.iloc[0]) else f"{expected.iloc[0]:.4f}"
                                        if expected.iloc[0] >= 1e-4 else f"{expected.iloc[0]:.2e}")
    assert adam["p (Holm)"].iloc[3] == "primary", "the primary comparison is not adjusted"
    full = next(d.value for d in at.dataframe if {"p (Holm)", "t"} <= set(d.value.columns))
    assert set(full["head"]) == {SECOND_STAGE_NAMES[k] for k in (*stats.HEADS, *stats.READING_ROWS)}


def test_the_per_class_table_counts_one_repeat_and_its_accuracy_is_table_1s(results_cache, tmp_path):
    """Summed over repeats, the per-class table's support is still the test images of the class in one repeat
    (Fashion-MNIST said "support 20000" for 1,000 images), and the accuracy under the matrix is the records'
    number, rounded as Table 1 rounds it (it said 64.68 % beside Table 1's 64.67 %)."""
    runs = copy.deepcopy(results_cache)
    for run in runs:  # the records' number apart from the predictions' (float32 vs exact counts, exaggerated)
        run["stage1"][run["protocol"]["stage1_eval"]]["test_accuracy"] += 0.0004
    store = RunStore(tmp_path / "cache")
    for run in runs:
        store.put(run)
    store.close()
    at = open_results(runs[0]["key"])
    at.radio(key="cm_method").set_value("stage1").run()
    table = next(d.value for d in at.dataframe if "support" in d.value.columns)
    per_repeat = int(runs[0]["predictions"]["n"])
    assert table.loc["macro average", "support"] == per_repeat
    assert table.drop(index="macro average")["support"].sum() == per_repeat
    table1 = next(d.value for d in at.dataframe if "test, ours" in d.value.columns)
    mean = table1["test, ours"].iloc[0].split(" ±")[0]
    assert any(str(c.value).startswith(f"Accuracy {mean};") for c in at.caption), mean


def test_the_gallery_counts_images_and_occurrences_alike(results_cache):
    """The outcome's count (occurrences: an image per repeat) and the grid's note (distinct images) said
    "fixed (68)" beside "all 63 images": the note names both."""
    at = open_results(results_cache[0]["key"])
    at.radio(key="chg_outcome").set_value("fixed").run()
    frame = gallery.changes(results_cache, at.radio(key="chg_head").value)
    fixed = frame[frame["outcome"] == "fixed"]
    assert len(fixed) != fixed["id"].nunique(), "the records must hold an image fixed in both repeats"
    note = next(str(c.value) for c in at.caption if str(c.value).startswith("Showing"))
    assert f"{fixed['id'].nunique()} images" in note and f"{len(fixed)} occurrences" in note, note


def test_figure_16_titles_fit_a_phone():
    """On a 390 px phone each panel is about 160 px wide: its title (plotly's 16 px font, about 0.55 em a
    character) must fit in it, or the two titles overlap ("stage one → Adam head" did)."""
    import pandas as pd

    frame = pd.DataFrame({"repeat": [0, 1], "stage1_test_accuracy": [0.80, 0.81],
                          "adam_test_accuracy": [0.85, 0.78], "sgd_test_accuracy": [0.75, 0.80]})
    for axis in ("stage one", "stage one,<br>BN re-estimated"):
        fig = figure16(frame, axis)
        titles = [a for a in fig.layout.annotations]
        assert len(titles) == 2
        for title in titles:
            size = title.font.size or 16
            widest = max(len(line) for line in title.text.split("<br>"))
            assert widest * 0.55 * size <= 150, title.text


def test_table_2_without_outliers_and_the_verdict_say_the_same(tmp_path, monkeypatch):
    """The shipped Face Mask v1 records: Table 2's outlier row said "18 (without outlier repeat 3, repeat 19)",
    +1.15 pp, while the README said +1.30 pp without repeat 3. Now both the row and the verdict (the docs'
    sentence) come from core.results.stats.table2."""
    import shutil

    bundle = tmp_path / "reference" / "face-mask-v1"
    bundle.mkdir(parents=True)
    shutil.copy(Path(reference.__file__).resolve().parents[2] / "reference" / "face-mask-v1" / "records.json", bundle)
    monkeypatch.setattr(reference, "REFERENCE_DIR", tmp_path / "reference")
    monkeypatch.setenv("TWO_STAGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TWO_STAGE_DEMO", raising=False)
    runs = reference.load_runs(bundle)
    at = open_results(runs[0]["key"])
    table2 = next(d.value for d in at.dataframe if "head test" in d.value.columns)
    row = table2[(table2["head"] == "Adam head") & table2["repeats"].str.contains("outlying")].iloc[0]
    verdict = next(t for t in markdown(at) if t.startswith("**Ours, Adam head:**"))
    assert stats.outlier_note(runs, "adam") in verdict
    used = row["repeats"].split(" (", 1)[1].rstrip(")")
    assert used[0].upper() + used[1:] in verdict and f"the gain is {row['difference']}" in verdict, (row, verdict)


def test_experiments_that_differ_name_their_options_and_values_in_words(results_cache, tmp_path):
    """"differ in: patience, reduce_lr, engine" and True/False cells: the options' own labels (or flags) and
    on/off instead."""
    other = other_experiment(results_cache)
    for run in other:
        run["protocol"]["reduce_lr"] = True
    store = RunStore(tmp_path / "cache")
    for run in other:
        store.put(run)
    store.close()
    at = open_results(results_cache[0]["key"])
    said = next(t for t in markdown(at) if t.startswith("**Experiments of this dataset that differ in:**"))
    assert "ReduceLROnPlateau" in said and "Max epochs" in said and "reduce_lr" not in said, said
    table = next(d.value for d in at.dataframe if "ReduceLROnPlateau" in d.value.columns)
    assert set(table["ReduceLROnPlateau"]) == {"on", "off"}


def test_the_per_class_tables_macro_average_is_never_below_the_fold(results_cache, monkeypatch):
    """A table shows ten rows unless told otherwise: Fashion-MNIST's ten classes hid their macro average."""
    import streamlit as st

    heights: list[object] = []
    original = st.dataframe

    def recording(data=None, *args, **kwargs):
        if "macro average" in getattr(data, "index", []):
            heights.append(kwargs.get("height"))
        return original(data, *args, **kwargs)

    monkeypatch.setattr(st, "dataframe", recording)
    open_results(results_cache[0]["key"])
    assert heights and set(heights) == {"content"}, heights


def test_ours_names_the_data_and_which_copy_of_it(results_cache):
    """Issue 25: every result says which form and copy of the data produced it (CIFAR-10's official batches vs
    its JPEG copy; the paper's 8,000 + 2,000 pet photos vs a subset)."""
    from core.app import catalog

    at = open_results(results_cache[0]["key"])
    ours = next(str(i.value) for i in at.info if str(i.value).startswith("Ours: "))
    run = results_cache[0]
    assert ours.startswith(f"Ours: {catalog.dataset_form(run)} · ")
    assert catalog.dataset_form({**run, "dataset": {**run["dataset"], "form": "folder", "source_sizes": {
        "train": 8000, "test": 2000}}}) == "Dogs & Cats, image folder of 8,000 + 2,000 images"
