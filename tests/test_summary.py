"""The results tables in README.md and docs/ are the records' own: generated from reference/, and a committed
table that differs from what the records give fails here (run `python -m core summary --write README.md
docs/results.md`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.app import reference, summary
from core.cli.main import main
from core.protocol.config import Protocol

from .test_store import record

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_committed_tables_are_what_the_records_give():
    tables = summary.generate()
    stale = []
    for document in DOCUMENTS:
        text = document.read_text()
        if summary.fill(text, tables) != text:
            stale.append(document.name)
    assert not stale, (f"results tables differ from reference/ in {', '.join(stale)}: run "
                       "`python -m core summary --write README.md docs/results.md`")
    assert "headline" in summary.marked((ROOT / "README.md").read_text())
    assert set(summary.marked((ROOT / "docs" / "results.md").read_text())) == set(summary.TABLES) - {"reports"}
    assert "reports" in summary.marked((ROOT / "docs" / "reports.md").read_text())


def test_the_readme_stays_a_front_page():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 150
    for link in [part.split(")")[0] for part in text.split("](")[1:]]:
        assert (ROOT / link).exists(), f"README links to {link}, which does not exist"


@pytest.fixture
def shipped(tmp_path, monkeypatch) -> Path:
    """A reference folder holding one 3-repeat Fashion-MNIST experiment."""
    folder = tmp_path / "reference" / "fashion-mnist"
    folder.mkdir(parents=True)
    runs = [record(Protocol(), r, acc) for r, acc in enumerate((0.80, 0.82, 0.84))]
    for run in runs:
        run["dataset"]["sizes"] = {"train": 48_000, "val": 12_000, "test": 10_000}
    (folder / "records.json").write_text(json.dumps(runs))
    monkeypatch.setattr(reference, "REFERENCE_DIR", folder.parent)
    return folder.parent


def test_a_table_follows_the_records_and_only_the_marked_block_changes(shipped, tmp_path, capsys):
    headline = summary.headline()
    assert "| Fashion-MNIST | 3 | 60,000 / 10,000 | 82.00 % ± 2.00 |" in headline
    assert "91.75 / 91.86 / 91.91 %" in headline  # the paper's, labelled as such in the header
    doc = tmp_path / "doc.md"
    doc.write_text("before\n<!-- summary:headline -->\nold\n<!-- /summary:headline -->\nafter\n")
    assert main(["summary", "--write", str(doc)]) == 0
    assert doc.read_text() == f"before\n<!-- summary:headline -->\n{headline}<!-- /summary:headline -->\nafter\n"
    assert "rewrote headline" in capsys.readouterr().out
    with pytest.raises(ValueError, match="no generated table called 'nonsense'"):
        summary.fill("<!-- summary:nonsense -->\n<!-- /summary:nonsense -->", summary.generate())


def test_table3_says_so_where_there_is_no_batchnorm_layer(shipped):
    text = summary.table3()
    assert "| BatchNorm statistics re-estimated | same as reported (no BatchNorm layer) |" in text
    assert "| *the paper's gain* | +0.11 pp, p = 0.026 |" in text


def test_the_engine_table_pairs_each_bundle_with_its_cpu_twin_by_welch_test(shipped):
    twin = shipped / "fashion-mnist-cpu"
    twin.mkdir()
    runs = [record(Protocol(), r, acc) for r, acc in enumerate((0.81, 0.83, 0.85, 0.79))]
    (twin / "records.json").write_text(json.dumps(runs))
    text = summary.engines()
    assert "| `fashion-mnist` vs `fashion-mnist-cpu` | stage one | 3 / 4 | 82.00 % vs 82.00 % | 1.0 |" in text
    assert "`fashion-mnist-cpu` vs" not in text, "a CPU bundle has no twin of its own"


def test_the_environment_table_names_each_bundles_libraries(shipped):
    records = shipped / "fashion-mnist" / "records.json"
    runs = json.loads(records.read_text())
    runs[0]["env"]["versions"] = {"python": "3.12.3", "numpy": "2.5.2", "jax": "0.11.2"}
    records.write_text(json.dumps(runs))
    row = next(line for line in summary.environment().splitlines() if line.startswith("| `fashion-mnist`"))
    assert row.endswith("| float32 | 3.12.3 | 2.5.2 | – | – | 0.11.2 | – |"), row


def test_the_docs_reading_is_the_verdict_rule(shipped):
    from core.results import stats

    runs = reference.load_runs(shipped / "fashion-mnist")
    assert summary.verdicts() == f"- **Fashion-MNIST** (Fashion-MNIST, 3 repeats): {stats.verdict(runs, 'adam')}\n"


def test_the_why_tables_read_the_interventions_and_size_curves_the_records_hold(monkeypatch):
    """docs/results.md's intervention and size tables come from the same functions as the Why page."""
    from types import SimpleNamespace

    from core.app import catalog
    from tests.test_why import record

    def exp(momentum=0.99, train=800, shift=0.0):
        runs = [record(i, 0.60 + shift + 0.01 * i, 0.70 + 0.01 * i, 0.69 + 0.01 * i, momentum, train)
                for i in range(3)]
        for run in runs:
            run["protocol"]["limit"] = train * 5 // 4
        return SimpleNamespace(protocol=Protocol.from_dict(runs[0]["protocol"]), runs=runs)
    exps = [exp(), exp(momentum=0.9, shift=0.05), exp(train=1600)]
    monkeypatch.setattr(catalog, "experiments", lambda store=None: exps)
    text = summary.intervention()
    assert "| BatchNorm momentum 0.99 | 800 | 3 | 61.00 % | 71.00 % | 70.00 % |" in text
    assert "At BatchNorm momentum 0.9 the head's gain is +4.00 pp against +9.00 pp at 0.99 (3 paired" in text
    assert "From 800 to 1,600 training images" in summary.sizes()
    assert summary.ceilings() == "No shipped experiment holds the readings yet.\n"
