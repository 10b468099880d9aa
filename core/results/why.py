"""Why the second stage helps: the evidence beyond Table 3, computed from run records.

Table 3 (:func:`core.results.stats.table3`) reads the gain apart after the fact. Here are the readings that
test the explanation more directly, each a function of stored records only:

- :func:`lift_scatter`: per repeat, the head's gain over stage one against how much re-estimating stage one's
  BatchNorm statistics lifts it (the PreciseBN reading, Wu & Johnson 2021), with Spearman's rank correlation;
  and the same against the volatility of stage one's last validation epochs (the alternative explanation);
- :func:`intervention`: the same experiment trained two ways, repeat by repeat (same seeds, same splits):
  at a lower BatchNorm momentum (if the moving averages' lag causes the gain, stage one's inference-mode score
  rises and the gain shrinks), without augmentation (re-estimation uses clean images, so part of its lift
  may be the gap between augmented training batches and clean images, not lag) or without dropout (dropout
  ahead of a BatchNorm layer shifts the variance it sees in training only); :func:`interventions_summary`
  reads them together;
- :func:`precise_split`: on the same models, PreciseBN's average of training batches' statistics (fvcore's
  ``update_bn_stats``) beside exact re-estimation: how much of the lift averaging alone recovers (the moving
  averages' lag and noise) and how much is left to the training batches' augmentation and dropout;
- :func:`size_curve`: the same protocol at several training-set sizes (optimizer steps per epoch): the gain
  over stage one as reported and over stage one with BatchNorm re-estimated, with 95 % confidence intervals;
- :func:`ceiling`: the paper's heads beside second stages that train no network (the convex optimum cRT,
  Kang et al. 2020; a held-out DFR-style head, Kirichenko et al. 2022; the convex head on BN-re-estimated
  features), from :mod:`core.training.ceiling`'s readings;
- :func:`sample_sizes`: stage one's test accuracy after re-estimating BatchNorm on 100, 1,000 and all images.

Every function returns plain data (a DataFrame or dict) and a one-line reading computed by a fixed rule.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from .stats import baseline_weights, metric, paired_test

READINGS = {"logistic": "convex head (L-BFGS, cRT)", "heldout": "held-out head (validation only, DFR)",
            "logistic_bn": "convex head on BN-re-estimated features"}
"""The second-stage readings that train no network, as the pages name them."""
INTERVENTIONS = {"bn_momentum": "the moving averages' lag", "augment": "augmented training batches",
                 "no_dropout": "dropout's variance shift"}
"""The protocol fields an intervention varies, and the suspected cause of the BatchNorm mismatch each removes."""
SAME_ACCURACY_PP = 0.5
"""Below this gap in mean test accuracy (percentage points) two BatchNorm estimates count as giving the same."""
VOLATILITY_EPOCHS = 10
"""Stage one's last epochs whose validation accuracy's spread measures how unsettled it ended."""


def _gain(run: dict[str, Any], head: str) -> float:
    return metric(run, head, "test") - metric(run, "stage1", "test", baseline_weights(run, "reported"))


def _bn_lift(run: dict[str, Any]) -> float:
    return (metric(run, "stage1", "test", baseline_weights(run, "bn"))
            - metric(run, "stage1", "test", baseline_weights(run, "reported")))


def volatility(run: dict[str, Any]) -> float:
    """Standard deviation of stage one's validation accuracy over its last :data:`VOLATILITY_EPOCHS` epochs."""
    values = run["stage1"]["history"].get("val_accuracy", [])[-VOLATILITY_EPOCHS:]
    return float(np.std(values)) if len(values) > 1 else float("nan")


def lift_scatter(runs: list[dict[str, Any]], head: str = "adam") -> tuple[pd.DataFrame, dict[str, Any]]:
    """One row per repeat (``repeat``, ``gain``, ``bn_lift``, ``volatility``) and the rank correlations of
    the gain with each, with a reading. Needs the records' BatchNorm evaluations."""
    usable = [r for r in runs if "last_bn" in r["stage1"]]
    frame = pd.DataFrame({"repeat": [r["repeat"] for r in usable], "gain": [_gain(r, head) for r in usable],
                          "bn_lift": [_bn_lift(r) for r in usable], "volatility": [volatility(r) for r in usable]})
    out: dict[str, Any] = {"n": len(frame)}
    for column in ("bn_lift", "volatility"):
        ok = frame[["gain", column]].dropna()
        if len(ok) >= 4 and ok[column].nunique() > 1 and ok["gain"].nunique() > 1:
            result = sps.spearmanr(ok["gain"], ok[column])
            out[column] = {"rho": float(result.statistic), "p": float(result.pvalue)}
        else:
            out[column] = {"rho": float("nan"), "p": float("nan")}
    out["reading"] = _scatter_reading(out)
    return frame, out


def _scatter_reading(found: dict[str, Any]) -> str:
    lift, vol = found["bn_lift"], found["volatility"]
    if not np.isfinite(lift["rho"]):
        return f"Too few repeats with differing values ({found['n']}) to rank the gain against the BatchNorm lift."
    tracks = "tracks" if lift["p"] < 0.05 and lift["rho"] > 0 else "does not track"
    text = (f"Across {found['n']} repeats the head's gain {tracks} the BatchNorm lift (Spearman rho = "
            f"{lift['rho']:.2f}, p = {lift['p']:.2g})")
    if np.isfinite(vol["rho"]):
        text += f"; against stage one's late validation volatility rho = {vol['rho']:.2f} (p = {vol['p']:.2g})"
    return text + "."


def _mean_ci(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and its 95 % t confidence interval (NaN bounds for fewer than 2 values)."""
    values = np.asarray(values, float)
    mean = float(values.mean()) if len(values) else float("nan")
    if len(values) < 2 or np.ptp(values) == 0:
        return mean, float("nan"), float("nan")
    low, high = sps.t.interval(0.95, len(values) - 1, loc=mean, scale=sps.sem(values))
    return mean, float(low), float(high)


def arm_summary(runs: list[dict[str, Any]], head: str = "adam") -> dict[str, Any]:
    """One experiment's means: stage one as reported and with BatchNorm re-estimated, the head, and the
    head's gain over each (with 95 % CIs)."""
    usable = [r for r in runs if "last_bn" in r["stage1"]]
    reported = np.array([metric(r, "stage1", "test", baseline_weights(r, "reported")) for r in usable])
    bn = np.array([metric(r, "stage1", "test", baseline_weights(r, "bn")) for r in usable])
    both = np.array([metric(r, "stage1", "test", "best_bn") for r in usable])
    second = np.array([metric(r, head, "test") for r in usable])
    out = {"repeats": len(usable), "stage1": _mean_ci(reported), "stage1_bn": _mean_ci(bn),
           "head": _mean_ci(second), "gain": _mean_ci(second - reported), "gain_over_bn": _mean_ci(second - bn),
           "gain_over_both": _mean_ci(second - both), "bn_lift": _mean_ci(bn - reported)}
    sizes = usable[0]["dataset"].get("sizes", {}) if usable else {}
    batch = usable[0]["protocol"].get("batch_size", 32) if usable else 32
    out["train_images"] = sizes.get("train")
    out["steps_per_epoch"] = -(-int(sizes["train"]) // int(batch)) if sizes.get("train") else None
    return out


def intervention(control: list[dict[str, Any]], treated: list[dict[str, Any]], head: str = "adam",
                 field: str = "bn_momentum") -> dict[str, Any]:
    """Two arms of one experiment that differ only in ``field`` (:data:`INTERVENTIONS`), paired repeat by
    repeat: each arm's summary, the paired differences treated - control of stage one, of its BatchNorm lift
    and of the gain, and the reading of the prediction "removing the cause removes the lift, and the gain"."""
    by_repeat = {r["repeat"]: r for r in control if "last_bn" in r["stage1"]}
    pairs = [(by_repeat[r["repeat"]], r) for r in treated if r["repeat"] in by_repeat and "last_bn" in r["stage1"]]
    out = {"control": arm_summary([a for a, _ in pairs], head), "treated": arm_summary([b for _, b in pairs], head),
           "pairs": len(pairs), "field": field}
    for name, value in (("stage1", lambda r: metric(r, "stage1", "test", baseline_weights(r, "reported"))),
                        ("bn_lift", _bn_lift), ("gain", lambda r: _gain(r, head))):
        first = np.array([value(a) for a, _ in pairs])
        second = np.array([value(b) for _, b in pairs])
        out[f"delta_{name}"] = paired_test(first, second)
    out["arms"] = (arm_name(control[0]["protocol"], field) if control else None,
                   arm_name(treated[0]["protocol"], field) if treated else None)
    out["reading"] = _intervention_reading(out)
    return out


def arm_name(protocol: dict[str, Any], field: str) -> str:
    """"BatchNorm momentum 0.9", "without augmentation": an arm in words."""
    if field == "bn_momentum":
        return f"BatchNorm momentum {protocol.get('bn_momentum', 0.99):g}"
    if field == "no_dropout":
        return "without dropout" if protocol.get("no_dropout") else "with dropout"
    return "without augmentation" if protocol.get("augment") is False else "with augmentation"


def is_control(protocol: dict[str, Any], field: str) -> bool:
    """The arm trained as the paper trains it: Keras' momentum, the paper's augmentation, its dropout."""
    return arm_name(protocol, field) in ("BatchNorm momentum 0.99", "with augmentation", "with dropout")


def _intervention_reading(found: dict[str, Any]) -> str:
    n = found["pairs"]
    if n < 2:
        return f"{n} paired repeat(s) so far: at least 2 are needed to compare the two arms."
    control, treated = found["arms"]
    gain, lift = found["delta_gain"], found["delta_bn_lift"]
    c, t = found["control"]["gain"][0], found["treated"]["gain"][0]
    lead = f"At {treated}" if found["field"] == "bn_momentum" else treated.capitalize()
    said = (f"{lead} the head's gain is {100 * t:+.2f} pp against {100 * c:+.2f} pp "
            f"{'at ' + control.split()[-1] if found['field'] == 'bn_momentum' else control} ({n} paired repeats; "
            f"change {100 * gain['mean difference']:+.2f} pp, p = {gain['p (t-test)']:.2g}); re-estimation's lift "
            f"changes by {100 * lift['mean difference']:+.2f} pp (p = {lift['p (t-test)']:.2g}).")
    if np.isfinite(gain["p (t-test)"]) and gain["p (t-test)"] < 0.05 and gain["mean difference"] < 0:
        said += " The intervention removes gain, as the BatchNorm explanation predicts."
    elif np.isfinite(gain["p (t-test)"]) and gain["p (t-test)"] < 0.05:
        said += " The gain grows: the BatchNorm explanation does not predict that."
    else:
        said += " No significant change in the gain with this many repeats."
    if np.isfinite(lift["p (t-test)"]) and lift["p (t-test)"] < 0.05 and lift["mean difference"] < 0:
        return said + " Re-estimation's lift shrinks: this arm removes part of what re-estimation corrects."
    return said + " Re-estimation's lift does not shrink significantly with this many repeats."


def intervention_pairs(experiments: list[Any], dataset: str | None = None) -> list[tuple[Any, Any, dict[str, Any]]]:
    """Every intervention the experiments hold (of ``dataset``, or of every dataset): ``(control, treated,
    :func:`intervention`)`` per treated arm, paired with the arm trained as the paper trains it."""
    datasets = [dataset] if dataset else sorted({e.protocol.dataset for e in experiments})
    out = []
    for name in datasets:
        for field in INTERVENTIONS:
            for arms in families(experiments, name, field):
                control = next((a for a in arms if is_control(a.protocol.to_dict(), field)), None)
                out += [(control, treated, intervention(control.runs, treated.runs, field=field))
                        for treated in arms if control is not None and treated is not control]
    return out


def interventions_summary(found: list[dict[str, Any]], alpha: float = 0.05) -> str:
    """One sentence over every intervention read (:func:`intervention` results): which of them shrink
    re-estimation's lift significantly, i.e. which suspected cause of the BatchNorm mismatch is confirmed."""
    read = [f for f in found if f["pairs"] >= 2]
    if not read:
        return ""
    shrinks = [f for f in read if np.isfinite(f["delta_bn_lift"]["p (t-test)"])
               and f["delta_bn_lift"]["p (t-test)"] < alpha and f["delta_bn_lift"]["mean difference"] < 0]
    if shrinks:
        names = ", ".join(f"{f['arms'][1]} ({INTERVENTIONS[f['field']]})" for f in shrinks)
        verb = "shrinks" if len(shrinks) == 1 else "shrink"
        return f"Of {len(read)} interventions, {len(shrinks)} {verb} re-estimation's lift significantly: {names}."
    causes = sorted({INTERVENTIONS[f["field"]] for f in read}, key=list(INTERVENTIONS.values()).index)
    listed = causes[0] if len(causes) == 1 else ", ".join(causes[:-1]) + " or " + causes[-1]
    return (f"None of the {len(read)} interventions shrinks re-estimation's lift significantly: removing "
            f"{listed} from training, one at a time, leaves the mismatch re-estimation corrects, as far as these "
            f"repeats can tell.")


def arm_label(protocol: dict[str, Any]) -> str:
    """"the paper's protocol", or the intervention arm it is ("BatchNorm momentum 0.9", ...)."""
    return next((arm_name(protocol, f) for f in INTERVENTIONS if not is_control(protocol, f)), "the paper's protocol")


def precise_split(experiments: list[Any], dataset: str | None = None) -> tuple[pd.DataFrame, str]:
    """Every experiment (of ``dataset``) whose records carry PreciseBN's reading (:mod:`core.app.precise`): a row
    with its arm, training images, repeats and mean test accuracies of stage one, PreciseBN as fvcore runs it,
    PreciseBN with only BatchNorm in training mode and exact re-estimation; the share of re-estimation's lift
    that PreciseBN recovers (ratio of the means); and a reading."""
    rows = []
    for exp in experiments:
        if (dataset and exp.protocol.dataset != dataset) or not _carries_precise(exp):
            continue
        read = exp.runs
        weights = read[0]["stage1"]["precise_bn"]["weights"]
        mean = {name: float(np.mean(values)) for name, values in {
            "stage one": [r["stage1"][weights]["test_accuracy"] for r in read],
            "PreciseBN": [r["stage1"]["precise_bn"]["test_accuracy"] for r in read],
            "PreciseBN, BatchNorm only": [r["stage1"]["precise_bn"]["bn_only_test_accuracy"] for r in read],
            "re-estimated": [r["stage1"][f"{weights}_bn"]["test_accuracy"] for r in read]}.items()}
        lift = mean["re-estimated"] - mean["stage one"]
        rows.append({"arm": arm_label(read[0]["protocol"]), "training images": read[0]["dataset"]["sizes"]["train"],
                     "repeats": len(read), **mean,
                     "share recovered": (mean["PreciseBN"] - mean["stage one"]) / lift if lift > 0 else float("nan")})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame, "No experiment's records carry PreciseBN's reading yet."
    frame = frame.sort_values(["arm", "training images"], key=lambda c: c.map(
        lambda v: (v != "the paper's protocol", v) if isinstance(v, str) else v)).reset_index(drop=True)
    return frame, _precise_reading(frame)


def _carries_precise(exp: Any) -> bool:
    """Whether every record of the experiment carries PreciseBN's reading (a partly read one is not shown)."""
    return bool(exp.runs) and all("precise_bn" in r["stage1"] for r in exp.runs)


def precise_source(experiments: list[Any], dataset: str) -> tuple[Any, Any] | None:
    """For a caption: the first experiment of ``dataset`` whose records carry PreciseBN's reading, and the protocol
    :func:`precise_split`'s rows share (the paper's arm, any size); None when none carries it."""
    first = next((e for e in experiments if e.protocol.dataset == dataset and _carries_precise(e)), None)
    if first is None:
        return None
    return first, first.protocol.with_(limit=None, bn_momentum=0.99, augment=None, no_dropout=False)


def _precise_reading(frame: pd.DataFrame) -> str:
    paper = frame[frame["arm"] == "the paper's protocol"]
    main, others = (paper, frame.drop(paper.index)) if len(paper) else (frame, frame.iloc[:0])
    share = main["share recovered"].dropna()
    if share.empty:
        return "Re-estimation does not lift stage one here, so there is no lift to split."
    low, high = 100 * share.min(), 100 * share.max()
    amount = f"{low:.0f} %" if round(low) == round(high) else f"{low:.0f} to {high:.0f} %"
    gap = 100 * (frame["PreciseBN, BatchNorm only"] - frame["re-estimated"]).abs().max()
    text = (f"{'Trained as the paper trains it, a' if len(paper) else 'A'}veraging the training batches' statistics "
            f"as fvcore does (augmentation and dropout on) recovers {amount} of re-estimation's lift: that part is "
            f"the moving averages' lag and noise. ")
    if gap <= SAME_ACCURACY_PP:
        within = "the same mean" if gap < 0.005 else f"means within {gap:.2f} pp"
        text += (f"With only BatchNorm in training mode the batches' statistics give re-estimation's accuracy "
                 f"({within}), so the rest is the difference between augmented, dropout-perturbed training "
                 f"batches and clean images, not how the statistics are computed.")
    else:
        text += (f"With only BatchNorm in training mode the batches' statistics differ from re-estimation's by up "
                 f"to {gap:.2f} pp in a mean, so how the statistics are computed matters here too.")
    if len(others):
        arms = "; ".join(f"{r['arm']} ({int(r['training images']):,} images) {100 * r['share recovered']:.0f} %"
                         for _, r in others.iterrows() if np.isfinite(r["share recovered"]))
        text += f" The share averaging recovers in the intervention arms: {arms}."
    return text


def size_curve(experiments: list[list[dict[str, Any]]], head: str = "adam") -> tuple[pd.DataFrame, str]:
    """The same protocol at several training-set sizes (each item one experiment's records): a row per size
    with the training images, optimizer steps per epoch, repeats and the gains with 95 % CIs; and a reading."""
    rows = []
    for runs in experiments:
        s = arm_summary(runs, head)
        if not s["repeats"]:
            continue
        rows.append({"training images": s["train_images"], "steps per epoch": s["steps_per_epoch"],
                     "repeats": s["repeats"], "gain": s["gain"][0], "gain low": s["gain"][1],
                     "gain high": s["gain"][2], "gain over BN": s["gain_over_bn"][0],
                     "gain over BN low": s["gain_over_bn"][1], "gain over BN high": s["gain_over_bn"][2],
                     "BN lift": s["bn_lift"][0]})
    frame = pd.DataFrame(rows).sort_values("training images").reset_index(drop=True) if rows else pd.DataFrame()
    return frame, _size_reading(frame)


def _size_reading(frame: pd.DataFrame) -> str:
    if len(frame) < 2:
        return f"{len(frame)} training-set size(s) with results so far: at least 2 are needed for a curve."
    varied = len(frame) > 2 and frame["gain"].nunique() > 1
    rho = sps.spearmanr(frame["training images"], frame["gain"]).statistic if varied else float("nan")
    first, last = frame.iloc[0], frame.iloc[-1]
    text = (f"From {int(first['training images']):,} to {int(last['training images']):,} training images the "
            f"head's gain over stage one goes from {100 * first['gain']:+.2f} to {100 * last['gain']:+.2f} pp, "
            f"and over stage one with BatchNorm re-estimated from {100 * first['gain over BN']:+.2f} to "
            f"{100 * last['gain over BN']:+.2f} pp")
    if np.isfinite(rho):
        text += f" (rank correlation of gain with size {rho:.2f})"
    return text + "."


def ceiling(runs: list[dict[str, Any]]) -> tuple[pd.DataFrame, str]:
    """Mean test accuracy (95 % CI) of stage one, the paper's heads and the readings that train no network,
    over the repeats whose records hold the readings; and a reading."""
    usable = [r for r in runs if r.get("readings")]
    sources = {"stage1": ("stage one as reported",
                          lambda r: metric(r, "stage1", "test", baseline_weights(r, "reported"))),
               "adam": ("Adam head (the paper's)", lambda r: metric(r, "adam", "test")),
               "sgd": ("SGD head (the paper's)", lambda r: metric(r, "sgd", "test")),
               **{k: (label, lambda r, k=k: r["readings"][k]["test_accuracy"]) for k, label in READINGS.items()}}
    rows = []
    for key, (label, get) in sources.items():
        values = np.array([get(r) for r in usable if key not in READINGS or key in r["readings"]])
        if len(values):
            mean, low, high = _mean_ci(values)
            rows.append({"second stage": label, "key": key, "repeats": len(values), "test mean": mean,
                         "ci low": low, "ci high": high})
    frame = pd.DataFrame(rows)
    if frame.empty or "logistic" not in set(frame["key"]):
        return frame, "These records hold no readings of a second stage that trains no network (made before them)."
    means = dict(zip(frame["key"], frame["test mean"]))
    text = (f"The convex optimum on the same features reaches {100 * means['logistic']:.2f} % against the Adam "
            f"head's {100 * means['adam']:.2f} % (the head is {100 * (means['adam'] - means['logistic']):+.2f} pp from "
            f"the optimum)")
    if "heldout" in means:
        text += f"; a head fitted on held-out data only reaches {100 * means['heldout']:.2f} %"
    if "logistic_bn" in means:
        text += f"; on BatchNorm-re-estimated features {100 * means['logistic_bn']:.2f} %"
    return frame, text + "."


def sample_sizes(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """Stage one's mean test accuracy after re-estimating BatchNorm on each recorded number of images."""
    found: dict[int, list[float]] = {}
    for run in runs:
        for entry in run["stage1"].get("batchnorm", {}).get("sample_sizes", []):
            found.setdefault(int(entry["images"]), []).append(float(entry["test_accuracy"]))
    return pd.DataFrame([{"images": n, "repeats": len(v), "test mean": float(np.mean(v))}
                         for n, v in sorted(found.items())])


def related(experiments: list[Any], base: Any, field: str) -> list[Any]:
    """The experiments (objects with ``protocol`` and ``runs``) whose protocol equals ``base``'s in every
    field but ``field`` (the base included), ordered by that field: the arms of an intervention
    (``bn_momentum``) or the points of a size curve (``limit``; all images last)."""
    from dataclasses import replace

    def without(protocol):
        return replace(protocol, **{field: getattr(base.protocol, field)})

    found = [e for e in experiments if without(e.protocol) == base.protocol]
    unique = {getattr(e.protocol, field): e for e in sorted(found, key=lambda e: len(e.runs))}  # most repeats
    return [unique[k] for k in sorted(unique, key=lambda v: (v is None, v if v is not None else 0))]


def families(experiments: list[Any], dataset: str, field: str) -> list[list[Any]]:
    """Every set of ``dataset``'s experiments that differ only in ``field`` (at least two values of it), each
    ordered as :func:`related` orders it, the set with the most repeats first. An intervention or a size curve
    is often run on other data or at another image size than the dataset's headline experiment (the CPU's
    64x64 px runs on the paper-size photos), so the page finds them wherever they are."""
    from dataclasses import replace

    bases: dict[Any, Any] = {}
    for e in experiments:
        if e.protocol.dataset == dataset:
            bases.setdefault(replace(e.protocol, **{field: getattr(type(e.protocol)(), field)}), e)
    found = [related(experiments, e, field) for e in bases.values()]
    found = [f for f in found if len(f) > 1]
    return sorted(found, key=lambda f: -sum(len(e.runs) for e in f))


def without_duplicates(runs: list[dict[str, Any]], head: str = "adam") -> dict[str, Any] | None:
    """The gain scored twice: on the whole test split and on the test images that are not copies of a
    training or validation image of the same split (Face Mask ships such copies). None when no record says
    which test images are copies (records made before they did: ``python -m core identify``)."""
    from . import predictions

    usable = [r for r in runs if "test_duplicates_of_train" in r.get("dataset", {}) and r.get("predictions")]
    if not usable or not any(r["dataset"]["test_duplicates_of_train"] for r in usable):
        return None
    gains = {"all": [], "unique": []}
    copies = []
    for run in usable:
        block = predictions.decode(run["predictions"])
        keep = np.ones(block["n"], bool)
        keep[np.asarray(run["dataset"]["test_duplicates_of_train"], int)] = False
        stage1 = block["labels"][f"stage1_{block['stage1_weights']}"]
        for name, rows in (("all", np.ones(block["n"], bool)), ("unique", keep)):
            right = block["y_true"][rows]
            gains[name].append(np.mean(block["labels"][head][rows] == right) - np.mean(stage1[rows] == right))
        copies.append(int((~keep).sum()))
    test = {name: paired_test(np.zeros(len(v)), np.asarray(v)) for name, v in gains.items()}
    reading = (f"Without the test images that copy a training image ({np.mean(copies):.0f} per repeat on average) "
               f"the head's gain is {100 * test['unique']['mean difference']:+.2f} pp (p = "
               f"{test['unique']['p (t-test)']:.2g}) against {100 * test['all']['mean difference']:+.2f} pp on the "
               f"whole test split ({len(usable)} repeats).")
    return {"repeats": len(usable), "copies": copies, "all": test["all"], "unique": test["unique"],
            "reading": reading}
