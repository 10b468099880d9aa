"""Statistics against values worked out by hand (see the comments), not against scipy itself."""

import numpy as np
import pytest

from core.protocol import paper
from core.protocol.config import Protocol
from core.results.stats import at_chance, option_effects, outlier_mask, paired_test, table1, table2, table3, verdict


def fake_run(repeat, s1_test, adam_test, sgd_test=None, s1_best_test=None):
    """A minimal record with the fields statistics read (real records carry much more)."""
    def part(test, best_test=None):
        last = {"train_accuracy": test + 0.05, "val_accuracy": test + 0.01, "test_accuracy": test,
                "train_loss": 0.1, "val_loss": 0.2, "test_loss": 0.3}
        best = {**last, "test_accuracy": best_test if best_test is not None else test}
        return {"last": last, "best": best, "epochs_run": 12, "best_epoch": 7, "fit_seconds": 1.0}
    return {"key": "k", "repeat": repeat, "seed": repeat, "protocol": Protocol().to_dict(), "describe": "d",
            "dataset": {"name": "fashion-mnist"}, "stage1": part(s1_test, s1_best_test),
            "adam": part(adam_test), "sgd": part(sgd_test if sgd_test is not None else adam_test),
            "features": {"seconds": 0.1}, "finished_at": "2026-11-21T00:00:00+00:00",
            "env": {"backend": "tensorflow", "device": "CPU (2 cores)", "versions": {"keras": "3"}}}


STAGE1 = [0.80, 0.82, 0.81, 0.83]
ADAM = [0.85, 0.86, 0.84, 0.88]
RUNS = [fake_run(i, a, b) for i, (a, b) in enumerate(zip(STAGE1, ADAM))]


def test_table1_means_and_standard_deviations():
    t1 = table1(RUNS)
    assert t1.loc["CNN (Adam)", "test mean"] == pytest.approx(0.815)
    # sample sd of 0.80, 0.82, 0.81, 0.83: sqrt(0.0005 / 3)
    assert t1.loc["CNN (Adam)", "test std"] == pytest.approx(np.sqrt(0.0005 / 3))
    assert t1.loc["CNN + second stage (Adam)", "train mean"] == pytest.approx(0.8575 + 0.05)
    assert (t1["repeats"] == 4).all()


def test_paired_t_test_and_confidence_interval_by_hand():
    # differences 0.05 0.04 0.03 0.05: mean 0.0425, sd sqrt(2.75e-4 / 3) = 0.0095743, se 0.0047871
    # t = 8.878 with 3 df; two-tailed p from the closed-form t(3) CDF = 0.00302
    # 95% CI = 0.0425 -/+ 3.182446 * 0.0047871 = [0.027265, 0.057735]
    result = paired_test(np.array(STAGE1), np.array(ADAM))
    assert result["mean difference"] == pytest.approx(0.0425)
    assert result["t"] == pytest.approx(8.878, abs=1e-3)
    assert result["p (t-test)"] == pytest.approx(0.00302, abs=5e-5)
    assert (result["ci low"], result["ci high"]) == pytest.approx((0.027265, 0.057735), abs=1e-5)


def test_wilcoxon_exact_p_by_hand():
    # five positive differences without ties: exact two-sided p = 2 * (1/2)^5 = 0.0625
    result = paired_test(np.zeros(5), np.array([0.01, 0.02, 0.03, 0.04, 0.05]))
    assert result["p (Wilcoxon)"] == pytest.approx(0.0625)


def test_degenerate_inputs_give_nan_not_errors():
    assert np.isnan(paired_test(np.array([0.5]), np.array([0.6]))["p (t-test)"])
    same = paired_test(np.array([0.5, 0.6]), np.array([0.5, 0.6]))
    assert same["mean difference"] == 0 and np.isnan(same["p (Wilcoxon)"])


def test_outlier_rule_flags_the_one_collapsed_repeat():
    values = np.array([0.978, 0.975, 0.980, 0.977, 0.976, 0.70])
    assert outlier_mask(values).tolist() == [False] * 5 + [True]
    assert not outlier_mask(values[:5]).any()
    assert not outlier_mask(values[:3]).any()  # too few repeats to call anything an outlier


def test_table2_adds_an_outlier_excluded_row_like_the_paper():
    s1 = [0.978, 0.975, 0.980, 0.977, 0.976, 0.70]
    adam = [0.984, 0.983, 0.985, 0.984, 0.982, 0.97]
    t2 = table2([fake_run(i, a, b) for i, (a, b) in enumerate(zip(s1, adam))])
    assert list(t2["repeats used"]) == ["all repeats", "without the outlying repeat 6"] * 2  # numbered from 1
    excluded = t2.iloc[1]
    assert excluded["n"] == 5 and excluded["mean first"] == pytest.approx(np.mean(s1[:5]))
    assert excluded["significant"] and excluded["p (t-test)"] < t2.iloc[0]["p (t-test)"]


def test_weight_choice_is_read_from_protocol_or_overridden():
    runs = [fake_run(i, 0.80, 0.85, s1_best_test=0.84) for i in range(3)]
    assert table1(runs).loc["CNN (Adam)", "test mean"] == pytest.approx(0.80)
    assert table1(runs, stage1_weights="best").loc["CNN (Adam)", "test mean"] == pytest.approx(0.84)
    effects = option_effects(runs).set_index(["stage-one weights", "stage-two weights", "head"])
    assert effects.loc[("last", "last", "adam"), "mean gain"] == pytest.approx(0.05)
    assert effects.loc[("best", "last", "adam"), "mean gain"] == pytest.approx(0.01)


def test_the_papers_tables_are_data_labelled_as_the_papers():
    assert paper.table1("Fashion-MNIST").loc["CNN (Adam)", "test mean"] == 0.9175
    assert paper.columns_for("face-mask") == ["Face Mask Detection v1", "Face Mask Detection v2",
                                              "Face Mask Detection v2 (excluding one outlier)"]
    assert paper.table2().set_index("dataset").loc["Dogs & Cats", "p (two-tailed)"] == 0.000016


def bn_run(repeat, last, best, last_bn, best_bn, adam, sgd, bn_layers=4):
    """A record with the four stage-one evaluations Table 3 compares the heads with."""
    run = fake_run(repeat, last, adam, sgd, s1_best_test=best)
    for name, test in (("last_bn", last_bn), ("best_bn", best_bn)):
        run["stage1"][name] = {**run["stage1"]["last"], "test_accuracy": test}
    run["stage1"]["batchnorm"] = {"layers": bn_layers}
    return run


# Four repeats. Adam head - reported stage one: 0.06, 0.05, 0.07, 0.06 (mean 0.06).
# BN re-estimated stage one - reported: 0.05, 0.04, 0.06, 0.05 (mean 0.05): it recovers 0.05 / 0.06 = 83%.
# Best checkpoint - reported: 0.01 each: 17%. Both: 0.055 on average: 92%.
TABLE3_RUNS = [bn_run(0, 0.80, 0.81, 0.85, 0.855, 0.86, 0.85),
               bn_run(1, 0.82, 0.83, 0.86, 0.875, 0.87, 0.86),
               bn_run(2, 0.79, 0.80, 0.85, 0.845, 0.86, 0.84),
               bn_run(3, 0.81, 0.82, 0.86, 0.865, 0.87, 0.85)]


def test_table3_rows_against_hand_computed_values():
    t3 = table3(TABLE3_RUNS).set_index(["head", "baseline"])
    main = t3.loc[("adam", "reported")]
    assert main["mean difference"] == pytest.approx(0.06)
    # differences 0.06 0.05 0.07 0.06: sd sqrt(0.0002 / 3) = 0.0081650, se 0.0040825, t = 14.697 (3 df)
    assert main["t"] == pytest.approx(14.697, abs=1e-3)
    assert main["ci low"] == pytest.approx(0.06 - 3.182446 * 0.0040825, abs=1e-5)
    assert main["share of gain"] == pytest.approx(0.0)
    assert t3.loc[("adam", "bn"), "share of gain"] == pytest.approx(0.05 / 0.06)
    assert t3.loc[("adam", "best"), "share of gain"] == pytest.approx(0.01 / 0.06)
    assert t3.loc[("adam", "best_bn"), "share of gain"] == pytest.approx(0.055 / 0.06)
    # head vs BN-fixed stage one: differences 0.01 0.01 0.01 0.01 are constant: no test, not "p = 0"
    assert np.isnan(t3.loc[("adam", "bn"), "p (t-test)"])
    # head vs both fixes: 0.005 -0.005 0.015 0.005: mean 0.005, sd 0.0081650, t = 1.2247, p = 0.308
    both = t3.loc[("adam", "best_bn")]
    assert both["mean difference"] == pytest.approx(0.005)
    assert both["p (t-test)"] == pytest.approx(0.308, abs=1e-3) and not both["significant"]


def test_verdict_follows_its_documented_rule():
    text = verdict(TABLE3_RUNS)
    assert text.startswith("The second stage's (Adam head) gain is reproduced: +6.00 pp")
    assert "Re-estimating BatchNorm statistics alone recovers 83% of it" in text
    assert "best checkpoint alone recovers 17%" in text and "both together 92%" in text
    assert "Against stage one with both fixes the head is +0.50 pp (p = 0.31, not significant)" in text
    no_bn = [bn_run(i, r["stage1"]["last"]["test_accuracy"], r["stage1"]["best"]["test_accuracy"],
                    r["stage1"]["last"]["test_accuracy"], r["stage1"]["best"]["test_accuracy"],
                    r["adam"]["last"]["test_accuracy"], 0.8, bn_layers=0) for i, r in enumerate(TABLE3_RUNS)]
    assert "has no BatchNorm layer" in verdict(no_bn) and "best checkpoint alone recovers 17%" in verdict(no_bn)
    noise = verdict([bn_run(i, 0.8, 0.8, 0.8, 0.8, a, a) for i, a in enumerate([0.79, 0.82, 0.80, 0.81])])
    assert "not significant with 4 repeats" in noise and "recovers" not in noise  # no shares of a noisy gain


def test_verdict_names_a_disagreement_between_the_t_test_and_the_signed_rank_test():
    # 12 repeats: the head gains 0.5 to 1.5 pp in 11 and collapses by 30 pp in the 12th. Mean -1.58 pp, t-test
    # p = 0.55; signed ranks: the loss has rank 12, so T- = 12 and the exact two-sided p is 2 * 70 / 4096 = 0.034.
    gains = [0.005, 0.006, 0.007, 0.008, 0.009, 0.010, 0.011, 0.012, 0.013, 0.014, 0.015, -0.30]
    collapsed = verdict([bn_run(i, 0.9, 0.9, 0.9, 0.9, 0.9 + g, 0.9) for i, g in enumerate(gains)])
    assert collapsed.startswith("The second stage's (Adam head) gain is not significant with 12 repeats: -1.58 pp")
    assert ("disagrees: the head is ahead in 11 of 12 repeats (median +0.95 pp, Wilcoxon p = 0.034); the mean is "
            "moved most by repeat 12 (-30.00 pp)") in collapsed
    # 6 repeats, one small loss: t-test p = 0.011, signed ranks T- = 1, p = 2 * 2 / 64 = 0.0625
    gains = [0.06, 0.05, 0.07, 0.06, 0.08, -0.01]
    unconfirmed = verdict([bn_run(i, 0.8, 0.8, 0.8, 0.8, 0.8 + g, 0.8) for i, g in enumerate(gains)])
    assert "is reproduced" in unconfirmed
    assert "does not confirm it (Wilcoxon p = 0.062; the head is ahead in 5 of 6 repeats)" in unconfirmed
    # 5 repeats can never give a signed-rank p below 0.05 (2 / 32 = 0.0625): no sentence about it
    five = [bn_run(i, 0.8, 0.8, 0.8, 0.8, 0.8 + g, 0.8) for i, g in enumerate(gains[:4] + [-0.01])]
    assert "signed-rank" not in verdict(five)
    assert "signed-rank" not in verdict(TABLE3_RUNS)  # both tests agree


def test_training_accuracy_as_reported_during_fit_or_in_inference_mode():
    runs = [fake_run(i, 0.80, 0.85) for i in range(2)]
    for run in runs:
        for part in ("stage1", "adam", "sgd"):
            run[part]["history"] = {"accuracy": [0.5 + 0.01 * e for e in range(12)]}
    assert table1(runs).loc["CNN (Adam)", "train mean"] == pytest.approx(0.85)  # inference mode (last)
    fit = table1(runs, train_source="fit")
    assert fit.loc["CNN (Adam)", "train mean"] == pytest.approx(0.61)  # epoch 12 of 12, as fit reported
    assert table1(runs, stage1_weights="best", train_source="fit").loc["CNN (Adam)", "train mean"] == \
        pytest.approx(0.56)  # best epoch 7


def test_table3_uses_only_records_that_hold_the_batchnorm_evaluations():
    old = [fake_run(9, 0.8, 0.9)]  # a record made before BN re-estimation was stored
    assert len(table3(TABLE3_RUNS + old)) == len(table3(TABLE3_RUNS))
    assert set(table3(TABLE3_RUNS + old)["n"]) == {4}
    assert verdict(old).startswith("No repeat holds")


def test_a_head_no_better_than_guessing_is_named_with_its_optimizer_steps():
    runs = [fake_run(i, 0.70, 0.40, sgd_test=0.51) for i in range(2)]  # two classes: chance is 50%
    for run in runs:
        run["dataset"].update(class_names=["cat", "dog"], sizes={"train": 100, "val": 20, "test": 40})
        run["adam"]["epochs_run"] = run["sgd"]["epochs_run"] = 2
    lines = at_chance(runs)
    # 100 images at batch 32 = 4 steps per epoch, 2 epochs = 8 steps; 51% is within 2 pp of chance
    assert len(lines) == 2 and lines[0].startswith("CNN + second stage (Adam) ends at 40.0% test accuracy")
    assert "chance (50% for 2 classes) after about 8 optimizer steps (2 epochs of 100 images)" in lines[0]
    assert lines[1].startswith("CNN + second stage (SGD) ends at 51.0%")
    assert at_chance([fake_run(0, 0.70, 0.80)]) == []  # no class names in the record: nothing to judge by
