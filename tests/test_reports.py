"""The four related reports as data: published numbers, plans that build valid protocols, the CLI commands."""

from __future__ import annotations

import pytest

from core.studies import reports
from core.protocol.arch_spec import ARCH_INFO
from core.cli.main import main


@pytest.mark.parametrize("report", reports.REPORTS.values(), ids=list(reports.REPORTS))
def test_published_tables_are_well_formed_and_labelled(report):
    assert report.published and report.claims and report.data_here
    for table in report.published:
        assert all(len(row) == len(table.columns) for row in table.rows), table.title
        assert list(table.frame().columns) == list(table.columns)
    assert set(report.models) <= set(ARCH_INFO)
    assert all(ARCH_INFO[a].source == report.id for a in report.models)


@pytest.mark.parametrize("size", reports.SIZES)
@pytest.mark.parametrize("report", reports.REPORTS.values(), ids=list(reports.REPORTS))
def test_every_plan_step_is_a_valid_protocol_on_the_reports_dataset_and_on_dogs_cats(report, size):
    for dataset in (report.dataset, "dogs-cats"):
        plan = reports.plan(report, size, dataset, "/data")
        assert len(plan) == len(report.plans[size])
        for planned in plan:
            assert planned.problem is None, planned.problem
            assert planned.protocol.model_id in report.models and planned.repeats >= 1
            assert planned.step.command().startswith(("python -m core run", "python -m core sweep"))


def test_numbers_quoted_in_the_plans_are_the_published_tables():
    r2 = reports.get("2")
    table3 = {row[0]: row[1] for row in r2.published[2].rows}
    lr_step = next(s for s in r2.plans["full"] if s.sweep and s.sweep.param == "learning_rate")
    assert dict(lr_step.published) == table3
    r4 = reports.get("004")
    assert dict(reports.published_sweep(r4, "004-model2", "augment_preset")) == {"none": .843, "aug1": .798,
                                                                                "aug2": .781}
    assert reports.published_for(reports.get("003"), "003-cows-horses")[1] == ("CNN: test accuracy", .55)


def test_weights_override_reaches_the_backbone_steps_only():
    plan = reports.plan(reports.get("004"), "full", weights="none", repeats=2)
    assert all(p.protocol.weights is None for p in plan) and all(p.repeats == 2 for p in plan)
    bad = reports.plan(reports.get("002"), "small", "fashion-mnist")
    assert all(p.protocol is None and ("colour images" in p.problem or "at least" in p.problem) for p in bad)


@pytest.mark.parametrize("size", reports.SIZES)
def test_imagenet_weights_go_to_the_imagenet_models_and_the_cnns_train_from_scratch(size):
    """Report 004 has CNNs trained from scratch beside its ImageNet models: one --weights for the report reaches
    only the latter (the page and the CLI share this plan, so both run it)."""
    plan = reports.plan(reports.get("004"), size, weights="imagenet")
    assert all(p.problem is None for p in plan), [p.problem for p in plan if p.problem]
    for p in plan:
        cnn = ARCH_INFO[p.protocol.model_id].kind == "cnn"
        assert p.protocol.weights == (None if cnn else "imagenet")


def test_the_report_command_stops_on_a_step_that_does_not_fit_before_training(capsys, tmp_path):
    code = main(["report", "002", "--dataset", "fashion-mnist", "--cache", str(tmp_path / "cache")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in err


def test_unknown_report_is_one_line(capsys):
    assert main(["report", "7"]) == 2
    assert "unknown report '7'" in capsys.readouterr().err


def test_architectures_command_lists_counts_beside_the_published_ones(capsys):
    assert main(["architectures", "--source", "001"]) == 0
    out = capsys.readouterr().out
    assert "001-baseline" in out and "4,294,739" in out and "13,305,315" in out and " NO " not in out


def test_two_stage_rows_answer_the_question_per_experiment():
    from core.app.catalog import Experiment
    from core.protocol.config import Protocol

    from .test_sweeps import fake_run

    p = Protocol(dataset="cifar10", architecture="004-model2")
    y = [0, 1]
    runs = [fake_run(p, i, {"stage1": .60 + i / 100, "adam": .65 + i / 50, "sgd": .60}, y,
                     {k: y for k in ("stage1", "adam", "sgd")}) for i in range(3)]
    mine = reports.experiments_of(reports.get("004"), [Experiment(p.key(), p, runs, "your runs"),
                                                       Experiment("x", Protocol(), runs, "your runs")])
    assert len(mine) == 1
    row = reports.two_stage_rows(mine).iloc[0]
    assert row["repeats"] == 3 and row["Adam gain"] == pytest.approx(0.06)
    assert 0 <= row["p (Adam)"] < 0.05 and row["SGD gain"] == pytest.approx(-0.01)


def test_a_report_on_a_folder_that_is_not_there_is_one_line(tmp_path, capsys):
    code = main(["report", "003", "--data", str(tmp_path / "nowhere"), "--cache", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 2 and "error:" in err and "is not a folder" in err and "Traceback" not in err


@pytest.mark.parametrize("report", reports.REPORTS.values(), ids=list(reports.REPORTS))
def test_published_tables_fit_in_a_page_table(report):
    """Report 001's epoch column ends in "average": the page's table (Arrow) logged ArrowInvalid for the mix."""
    import pyarrow as pa

    for table in report.published:
        pa.Table.from_pandas(table.frame())  # raises ArrowInvalid for a column of numbers and words


@pytest.mark.parametrize("report", reports.REPORTS.values(), ids=list(reports.REPORTS))
def test_a_small_plans_note_says_what_its_commands_run(report):
    """Report 004's note once said "model 2 on Dogs & Cats" under a CIFAR-10 command, and 002's "500 images at
    224x224" under --image-size 64: a note names no other dataset than the report's own (the page and CLI name
    the chosen one) and every
    size it quotes is one the plan uses, the backbone's 224 or CIFAR-10's own 32."""
    import re

    from core.protocol.vocabulary import DATASET_TITLES

    note = report.small_note
    others = [t for d, t in DATASET_TITLES.items() if d != report.dataset]
    assert not [t for t in others if t in note], note
    sizes = {int(n) for n in re.findall(r"(\d+)x\1", note)}
    planned = {s.options.get("image_size") for s in report.plans["small"]} | {224, 32}
    assert sizes <= planned, (sizes, planned)
    for planned_step in reports.plan(report, "small", report.dataset, "/data"):
        size = planned_step.step.options.get("image_size")
        if size and "image-size" in planned_step.step.command(report.dataset):
            assert f"{size}x{size}" in note, (size, note)


def test_the_report_command_ships_the_plans_records(tmp_path, capsys, monkeypatch):
    """`report ID --ship` writes every record of the small plan (records only) to reference/reports/ID/, which
    the Related reports page reads as our results."""
    import json

    from core.app import catalog, reference
    from core.protocol.config import Protocol
    from core.results.store import RunStore

    from .test_sweeps import fake_run

    monkeypatch.setattr(reference, "REFERENCE_DIR", tmp_path / "ref")
    report = reports.get("004")
    store = RunStore(tmp_path / "cache")
    plan = reports.plan(report, "small", "cifar10", None)
    y = [0, 1, 2, 1]
    for planned in plan:
        for protocol in planned.step.sweep.protocols(planned.protocol):
            store.put(fake_run(protocol, 0, {"stage1": .5, "adam": .52, "sgd": .5}, y,
                               {"stage1": [0, 1, 2, 2], "adam": y, "sgd": y}))
    store.close()
    from core.cli.reports import ship_plan

    ship_plan(type("Args", (), {"cache": str(tmp_path / "cache")})(), report, plan)
    shipped = json.loads((tmp_path / "ref" / "reports" / "004" / "records.json").read_text())
    assert len(shipped) == 5 and len({r["key"] for r in shipped}) == 5  # the shared lr 1e-3 point once
    exps = catalog.report_experiments("004")
    assert len(exps) == 5 and all(e.source == catalog.REFERENCE for e in exps)
    assert {e.protocol.model_id for e in exps} == {"004-model2"}
    assert "wrote" in capsys.readouterr().out
    assert catalog.experiments(None) == [], "the reports' records are not the paper's reference experiments"


@pytest.mark.parametrize("report", reports.REPORTS.values(), ids=list(reports.REPORTS))
def test_every_report_ships_its_small_plans_records(report):
    """The Related reports page shows our numbers beside each report's from a visitor's first look: every
    experiment of the small plan ships in reference/reports/ (records only; the CIFAR-10 plans on the CIFAR-10
    JPEG copy), and the records number repeats from 0 (the page shows them from 1)."""
    from core.app import catalog

    exps = catalog.report_experiments(report.id)
    assert exps, f"reference/reports/{report.id}/records.json is missing"
    plan = reports.plan(report, "small", report.dataset, None)
    wanted = set()
    for planned in plan:
        points = planned.step.sweep.protocols(planned.protocol) if planned.step.sweep else [planned.protocol]
        wanted |= {_without_path(p) for p in points}
    assert {_without_path(e.protocol) for e in exps} == wanted
    for exp in exps:
        assert sorted(r["repeat"] for r in exp.runs) == list(range(len(exp.runs)))
        if report.dataset == "cifar10":
            assert exp.runs[0]["dataset"]["form"] == "jpeg-copy"


def _without_path(protocol) -> str:
    import json

    return json.dumps({k: v for k, v in protocol.to_dict().items() if k != "data_path"}, sort_keys=True)
