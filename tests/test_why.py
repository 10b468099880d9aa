"""core.results.why and Table 3's multiple-test correction, on hand-made records with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from core.protocol.config import Protocol
from core.results import why
from core.results.stats import PRIMARY, holm, table3


def record(repeat: int, stage1: float, bn: float, adam: float, momentum: float = 0.99, train: int = 1120,
           readings: dict | None = None, volatility: float = 0.0) -> dict:
    """A repeat with what these readings use: stage one as reported and with BatchNorm re-estimated (last
    and best alike), the heads, the split's size, stage one's validation curve, the readings."""
    def part(test):
        scores = {"test_accuracy": test, "test_loss": 0.5, "val_accuracy": test, "train_accuracy": test}
        return {"last": scores, "best": scores, "epochs_run": 20, "best_epoch": 10}
    stage1_part = {**part(stage1), "last_bn": part(bn)["last"], "best_bn": part(bn)["last"],
                   "history": {"val_accuracy": [0.7 + volatility * (-1) ** i for i in range(20)]},
                   "batchnorm": {"layers": 4, "sample_sizes": [{"images": 100, "test_accuracy": bn - 0.02},
                                                               {"images": train, "test_accuracy": bn}]}}
    protocol = Protocol(dataset="dogs-cats", data_path="/d", bn_momentum=momentum)
    return {"repeat": repeat, "protocol": protocol.to_dict(),
            "dataset": {"sizes": {"train": train}}, "stage1": stage1_part, "adam": part(adam), "sgd": part(adam),
            "readings": readings or {}}


def test_holm_adjusts_step_down_and_stays_monotone():
    # sorted 0.01, 0.02, 0.04 with m = 3: 0.03, 0.04, 0.04 (max with the previous), NaN untouched
    assert holm([0.04, 0.01, float("nan"), 0.02]) == pytest.approx([0.04, 0.03, float("nan"), 0.04], nan_ok=True)
    assert holm([0.6, 0.9]) == [1.0, 1.0]


def test_table3_declares_its_primary_comparison_and_adjusts_the_rest():
    runs = [record(i, 0.6 + 0.01 * i, 0.7 + 0.01 * i, 0.69 + 0.012 * i) for i in range(6)]
    table = table3(runs)
    primary = table[table["primary"]]
    assert len(primary) == 1 and tuple(primary[["head", "baseline"]].iloc[0]) == PRIMARY
    assert primary["p (Holm)"].isna().all()
    others = table[~table["primary"]]
    assert (others["p (Holm)"] >= others["p (t-test)"] - 1e-15).all()


def test_readings_enter_table3_only_when_every_repeat_holds_them():
    with_readings = [record(i, 0.6, 0.7, 0.69 + 0.001 * i,
                            readings={"logistic": {"test_accuracy": 0.72 + 0.002 * i}}) for i in range(4)]
    assert set(table3(with_readings)["head"]) == {"adam", "sgd", "logistic"}
    assert set(table3(with_readings[:3] + [record(3, 0.6, 0.7, 0.7)])["head"]) == {"adam", "sgd"}


def test_the_gain_tracking_the_bn_lift_is_found_and_volatility_is_not():
    rng = np.random.default_rng(0)
    lifts = np.linspace(0.0, 0.1, 12)
    runs = [record(i, 0.6, 0.6 + lift, 0.6 + lift + rng.normal(0, 0.003), volatility=float(rng.uniform(0, 0.05)))
            for i, lift in enumerate(lifts)]
    frame, found = why.lift_scatter(runs)
    assert list(frame["repeat"]) == list(range(12)) and frame["bn_lift"].to_numpy() == pytest.approx(lifts)
    assert found["bn_lift"]["rho"] > 0.9 and found["bn_lift"]["p"] < 0.001
    assert abs(found["volatility"]["rho"]) < 0.7
    assert found["reading"].startswith("Across 12 repeats the head's gain tracks the BatchNorm lift")


def test_the_intervention_pairs_repeats_and_says_when_the_gain_goes():
    control = [record(i, 0.60 + 0.01 * i, 0.70 + 0.01 * i, 0.69 + 0.01 * i) for i in range(5)]
    treated = [record(i, 0.69 + 0.01 * i, 0.70 + 0.01 * i, 0.695 + 0.011 * i, momentum=0.9) for i in range(5)]
    found = why.intervention(control, treated[::-1])  # order does not matter: pairs by repeat
    assert found["pairs"] == 5 and found["arms"] == ("BatchNorm momentum 0.99", "BatchNorm momentum 0.9")
    expected = np.mean([0.005 + 0.001 * i - 0.09 for i in range(5)])
    assert found["delta_gain"]["mean difference"] == pytest.approx(expected)
    assert "removes gain, as the BatchNorm explanation predicts" in found["reading"]


def test_the_size_curve_orders_sizes_with_their_steps_and_confidence_intervals():
    sizes = {800: 0.08, 1600: 0.05, 6400: 0.02}
    experiments = [[record(i, 0.6, 0.6 + g, 0.6 + g + 0.005 * (i - 1), train=n) for i in range(3)]
                   for n, g in sizes.items()][::-1]
    frame, reading = why.size_curve(experiments)
    assert list(frame["training images"]) == [800, 1600, 6400] and list(frame["steps per epoch"]) == [25, 50, 200]
    assert frame["gain"].to_numpy() == pytest.approx(list(sizes.values()))
    assert (frame["gain low"] < frame["gain"]).all() and (frame["gain"] < frame["gain high"]).all()
    assert reading.startswith("From 800 to 6,400 training images the head's gain over stage one goes from +8.00")


def test_the_ceiling_and_sample_sizes_read_the_records():
    runs = [record(i, 0.6, 0.7, 0.69, readings={"logistic": {"test_accuracy": 0.72},
                                                 "heldout": {"test_accuracy": 0.71}}) for i in range(3)]
    frame, reading = why.ceiling(runs)
    assert list(frame["key"]) == ["stage1", "adam", "sgd", "logistic", "heldout"]
    assert "72.00 %" in reading and "-3.00 pp" in reading and "held-out data only reaches 71.00 %" in reading
    assert why.ceiling([record(0, 0.6, 0.7, 0.69)])[1].startswith("These records hold no readings")
    sizes = why.sample_sizes(runs)
    assert list(sizes["images"]) == [100, 1120] and sizes["test mean"].to_numpy() == pytest.approx([0.68, 0.7])


def test_related_experiments_differ_in_exactly_one_field():
    from types import SimpleNamespace

    def exp(**changes):
        return SimpleNamespace(protocol=Protocol(dataset="dogs-cats", data_path="/d", resplit=True, **changes),
                               runs=[{}])
    base = exp()
    pool = [base, exp(limit=2000), exp(limit=1000), exp(bn_momentum=0.9), exp(limit=2000, bn_momentum=0.9),
            exp(epochs=3)]
    assert [e.protocol.limit for e in why.related(pool, base, "limit")] == [1000, 2000, None]
    assert [e.protocol.bn_momentum for e in why.related(pool, base, "bn_momentum")] == [0.9, 0.99]
    arms = why.related(pool, pool[1], "bn_momentum")
    assert [(e.protocol.limit, e.protocol.bn_momentum) for e in arms] == [(2000, 0.9), (2000, 0.99)]


def test_families_find_every_set_differing_in_one_field_largest_first():
    from types import SimpleNamespace

    def exp(repeats=1, **changes):
        return SimpleNamespace(protocol=Protocol(**{"dataset": "dogs-cats", "data_path": "/d", **changes}),
                               runs=[{}] * repeats)
    small = dict(data_path="/paper", image_size=64)
    pool = [exp(20), exp(3, limit=2000, **small), exp(2, limit=2000, bn_momentum=0.9, **small),
            exp(5, limit=1000, **small), exp(5, limit=1000, bn_momentum=0.9, **small), exp(2, epochs=3)]
    arms = why.families(pool, "dogs-cats", "bn_momentum")
    assert [[(e.protocol.limit, e.protocol.bn_momentum) for e in f] for f in arms] == [
        [(1000, 0.9), (1000, 0.99)], [(2000, 0.9), (2000, 0.99)]]
    sizes = why.families(pool, "dogs-cats", "limit")
    # one curve per momentum, the one with more repeats first; the 20-repeat run has no partner
    assert [[(e.protocol.limit, e.protocol.bn_momentum) for e in f] for f in sizes] == [
        [(1000, 0.99), (2000, 0.99)], [(1000, 0.9), (2000, 0.9)]]
    assert why.families(pool, "face-mask", "limit") == []


def test_the_gain_is_also_scored_without_test_copies_of_training_images():
    """Two repeats of 10 test images; the head is right on rows 0-7, stage one on rows 0-5 and 8-9. Rows 8
    and 9 copy training images: on the 8 others the gain is 2/8, on all 10 it is 0."""
    from core.results import predictions

    y = np.zeros(10, int)
    head = np.where(np.arange(10) < 8, 0, 1)
    stage1 = np.where((np.arange(10) < 6) | (np.arange(10) >= 8), 0, 1)
    runs = []
    for repeat in range(2):
        probs = {name: np.eye(2)[labels].astype(np.float32) for name, labels in
                 [("adam", head), ("sgd", head)] + [(f"stage1_{w}", stage1) for w in ("last", "best", "last_bn",
                                                                                      "best_bn")]}
        block = predictions.encode(y, probs, "last", lambda rows: [f"#{i}" for i in rows])
        runs.append({"repeat": repeat, "predictions": block, "dataset": {"test_duplicates_of_train": [8, 9]}})
    found = why.without_duplicates(runs)
    assert found["all"]["mean difference"] == pytest.approx(0.0)
    assert found["unique"]["mean difference"] == pytest.approx(0.25) and found["copies"] == [2, 2]
    assert why.without_duplicates([{**runs[0], "dataset": {}}]) is None


def test_the_verdict_says_which_explanation_is_left_standing_and_where_the_ceiling_is():
    from core.results.stats import verdict

    # BatchNorm explains it: stage one re-estimated equals the head, the reported stage one is well below
    explained = [record(i, 0.60 + 0.01 * i, 0.70 + 0.012 * i, 0.70 + 0.012 * i + 0.001 * (i % 2),
                        readings={"logistic": {"test_accuracy": 0.72 + 0.012 * i}}) for i in range(6)]
    text = verdict(explained)
    assert ("Left standing: the BatchNorm statistics stage one uses at inference and the checkpoint choice explain "
            "the gain.") in text
    assert "the same features (a logistic regression fitted to convergence) scores +1.95 pp against the Adam" in text
    # a real gain: the head beats even the fixed stage one, consistently
    real = [record(i, 0.60 + 0.01 * i, 0.62 + 0.01 * i, 0.70 + 0.011 * i) for i in range(6)]
    assert "Left standing: a gain of the second stage beyond the known artefacts." in verdict(real)


def test_the_augmentation_arm_is_read_like_the_momentum_arm_and_says_when_the_lift_shrinks():
    """Re-estimation uses clean images, so part of its lift may be augmented-batch statistics, not lag: the
    no-augmentation arm is the intervention on that, and its reading names it."""
    control = [record(i, 0.60 + 0.01 * i, 0.70 + 0.01 * i, 0.69 + 0.01 * i) for i in range(5)]
    treated = [record(i, 0.66 + 0.01 * i, 0.67 + 0.01 * i + 0.002 * (i % 2), 0.67 + 0.01 * i) for i in range(5)]
    for run in treated:
        run["protocol"]["augment"] = False
    found = why.intervention(control, treated, field="augment")
    assert found["arms"] == ("with augmentation", "without augmentation")
    assert found["reading"].startswith("Without augmentation the head's gain is")
    assert "Re-estimation's lift shrinks" in found["reading"]


def test_each_intervention_names_its_arms_and_knows_the_papers_arm():
    assert why.arm_name({"no_dropout": True}, "no_dropout") == "without dropout"
    assert why.is_control({"no_dropout": False}, "no_dropout") and why.is_control({"augment": None}, "augment")
    assert not why.is_control({"augment": False}, "augment")
    assert not why.is_control({"bn_momentum": 0.9}, "bn_momentum")


def test_the_interventions_summary_names_the_causes_ruled_out_or_confirmed():
    control = [record(i, 0.60 + 0.01 * i, 0.70 + 0.01 * i, 0.69 + 0.01 * i) for i in range(5)]
    same = [record(i, 0.60 + 0.01 * i + 0.003 * (-1) ** i, 0.70 + 0.01 * i, 0.69 + 0.01 * i, momentum=0.9)
            for i in range(5)]
    fixed = [record(i, 0.69 + 0.01 * i, 0.70 + 0.01 * i + 0.001 * (i % 2), 0.69 + 0.01 * i) for i in range(5)]
    for run in fixed:
        run["protocol"]["no_dropout"] = True
    momentum = why.intervention(control, same)
    dropout = why.intervention(control, fixed, field="no_dropout")
    assert why.interventions_summary([momentum]).startswith(
        "None of the 1 interventions shrinks re-estimation's lift significantly: removing the moving averages' "
        "lag from training, one at a time, leaves the mismatch")
    assert why.interventions_summary([momentum, dropout]) == (
        "Of 2 interventions, 1 shrinks re-estimation's lift significantly: without dropout (dropout's variance "
        "shift).")


def test_precise_split_reads_how_much_of_the_lift_averaging_recovers():
    """Stage one 60 %, re-estimated 70 %, PreciseBN as fvcore runs it 66 %: averaging recovers 60 % of the lift;
    with only BatchNorm in training mode it lands on re-estimation's 70 % (within 0.2 pp)."""
    from types import SimpleNamespace

    def with_reading(runs, precise, bn_only):
        for run in runs:
            run["stage1"]["precise_bn"] = {"weights": "last", "test_accuracy": precise,
                                           "bn_only_test_accuracy": bn_only}
        return runs

    paper = with_reading([record(i, 0.60, 0.70, 0.69, train=800) for i in range(3)], 0.66, 0.702)
    arm = with_reading([record(i, 0.60, 0.70, 0.69, momentum=0.9, train=800) for i in range(3)], 0.68, 0.699)
    unread = [record(i, 0.60, 0.70, 0.69, train=3200) for i in range(3)]
    exps = [SimpleNamespace(protocol=Protocol.from_dict(runs[0]["protocol"]), runs=runs)
            for runs in (arm, unread, paper)]
    frame, reading = why.precise_split(exps, "dogs-cats")
    assert list(frame["arm"]) == ["the paper's protocol", "BatchNorm momentum 0.9"]  # the paper's arm first
    assert frame["share recovered"].tolist() == pytest.approx([0.6, 0.8])
    assert frame["training images"].tolist() == [800, 800] and frame["repeats"].tolist() == [3, 3]
    assert reading.startswith("Trained as the paper trains it, averaging the training batches' statistics as "
                              "fvcore does (augmentation and dropout on) recovers 60 % of re-estimation's lift")
    assert "(means within 0.20 pp)" in reading
    assert reading.endswith("in the intervention arms: BatchNorm momentum 0.9 (800 images) 80 %.")
    first, base = why.precise_source(exps, "dogs-cats")
    assert first is exps[0] and base.bn_momentum == 0.99 and base.limit is None
    assert why.precise_split(exps, "face-mask")[0].empty and why.precise_source(exps, "face-mask") is None
    with_reading(paper, 0.66, 0.68)  # batch statistics 2 pp under exact ones: the method matters, said so
    assert "differ from re-estimation's by up to 2.00 pp in a mean" in why.precise_split(exps, "dogs-cats")[1]
