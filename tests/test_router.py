"""Classify's model chooser (core/classify/router.py): it learns which dataset a photo's features come from, is used only
for the model sets it was fitted with, and a damaged file is one clear line."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from core.app import catalog
from core.app import reference
from core.classify import router
from core.cli.main import main


def blobs(seed: int, n: int = 60) -> list[np.ndarray]:
    """Design rows of three 'datasets' whose features differ in the mean of a few dimensions, as two models'
    features at two depths would (4 + 2 and 3 + 1 values)."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(3):
        x = rng.normal(size=(n, 10))
        x[:, k] += 3.0
        rows.append(x)
    return rows


@pytest.fixture
def fitted() -> router.Router:
    return router.build(["a", "b", "c"], ["a:k1:0", "b:k2:1", "c:k3:0"], blobs(0), blobs(1, 40),
                        [np.zeros(40), np.ones(40), np.zeros(40)])


def test_it_routes_held_out_rows_to_their_dataset_and_reports_both_rules(fitted):
    assert fitted.accuracy.min() >= 0.95
    assert fitted.rank_accuracy.tolist() == [1.0, 1.0, 0.0]  # the picks given for the comparison, scored
    assert fitted.images.tolist() == [[60, 40]] * 3
    p = fitted.probabilities(blobs(2, 1)[1][0])
    assert p.shape == (3,) and abs(p.sum() - 1) < 1e-12 and p.argmax() == 1


def test_a_design_row_is_every_models_features_in_order():
    row = router.design_row([[np.arange(4), np.arange(2)], [np.arange(3), np.array([9.0])]])
    assert row.tolist() == [0, 1, 2, 3, 0, 1, 0, 1, 2, 9]


def test_it_is_saved_and_read_back_without_pickle(fitted, tmp_path):
    again = router.Router.load(fitted.save(tmp_path / router.FILE))
    assert again.datasets == fitted.datasets and again.models == fitted.models
    np.testing.assert_array_equal(again.weights, fitted.weights)
    row = blobs(3, 1)[0][0]
    np.testing.assert_allclose(again.probabilities(row), fitted.probabilities(row))


@pytest.mark.parametrize("damage", ["truncated", "pickled", "missing field", "wrong shape"])
def test_a_damaged_file_is_one_clear_error(fitted, tmp_path, damage):
    path = fitted.save(tmp_path / router.FILE)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "pickled":
        np.savez(path, datasets=np.array([{"x": 1}], dtype=object), models=np.array(["a"]))
    elif damage == "missing field":
        with np.load(path) as z:
            np.savez(path, **{k: z[k] for k in z.files if k != "bias"})
    else:
        with np.load(path) as z:
            fields = {k: z[k] for k in z.files}
        np.savez(path, **{**fields, "weights": fields["weights"][:, :2]})
    with pytest.raises(router.RouterError) as err:
        router.Router.load(path)
    assert "\n" not in str(err.value) and router.FILE in str(err.value)


def test_a_row_of_the_wrong_length_says_to_rebuild(fitted):
    with pytest.raises(router.RouterError, match="rebuild it"):
        fitted.probabilities(np.zeros(4))


def test_fewer_than_two_datasets_or_an_empty_one_is_refused():
    with pytest.raises(router.RouterError, match="two"):
        router.build(["a"], ["a:k:0"], blobs(0)[:1], blobs(1)[:1], [np.zeros(60)])
    with pytest.raises(router.RouterError, match="held out"):
        router.build(["a", "b"], ["a:k:0", "b:k:0"], blobs(0)[:2], [blobs(1)[0], np.zeros((0, 10))],
                     [np.zeros(60), np.zeros(0)])


@dataclass
class Choice:
    dataset: str
    key: str
    repeat: int
    shipped: bool = True


def test_it_is_used_only_for_the_model_sets_it_was_fitted_with(fitted, tmp_path):
    assert router.for_choices([Choice("a", "k1", 0)], tmp_path) is None  # no file
    fitted.save(tmp_path / router.FILE)
    choices = [Choice("mine", "x", 0, shipped=False), Choice("c", "k3", 0), Choice("a", "k1", 0),
               Choice("b", "k2", 1)]
    found = router.for_choices(choices, tmp_path)
    assert found is not None and found[1] == [2, 3, 1]  # index in the choices of a, b, c
    rebundled = [Choice("c", "k3", 0), Choice("a", "k1", 0), Choice("b", "k2", 4)]  # b now ships another repeat
    assert router.for_choices(rebundled, tmp_path) is None


def test_the_cli_refuses_a_photo_dataset_without_its_folder(capsys):
    shipped = [c for c in catalog.models() if c.shipped and c.ood_path and c.dataset not in ("fashion-mnist",)]
    assert shipped, "reference/ ships no photo model"
    assert main(["router", "--data", "nonsense"]) == 2
    assert "DATASET=PATH" in capsys.readouterr().err
    assert main(["router"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no folder of") and "Nothing was changed" in err and "\n" not in err


def test_the_shipped_chooser_fits_the_shipped_models_and_beats_the_rank_rule():
    """`python -m core router` must be run again whenever `bundle` replaces a shipped model: this fails until it is."""
    models = [c for c in catalog.models() if c.shipped and c.ood_path]
    assert len({c.dataset for c in models}) >= 2, "reference/ ships fewer than two model sets"
    assert (reference.REFERENCE_DIR / router.FILE).is_file(), "run `python -m core router`"
    found = catalog.model_chooser(models)
    assert found is not None, "reference/router.npz was fitted for other models: run `python -m core router`"
    fitted = found[0]
    assert sorted(fitted.datasets) == sorted(c.dataset for c in models)
    assert fitted.images[:, 1].min() >= 100 and fitted.accuracy.min() >= 0.9
    assert np.all(fitted.accuracy >= fitted.rank_accuracy)


UNPICKLED: list[str] = []


def _ran_on_unpickling() -> str:
    UNPICKLED.append("code from the file ran")
    return "a"


class Payload:
    """Unpickling this runs :func:`_ran_on_unpickling`: what a hostile file would run instead."""

    def __reduce__(self):
        return _ran_on_unpickling, ()


def test_loading_never_unpickles(fitted, tmp_path):
    """A router file whose class names are a pickled object array is refused without running its code (read
    with ``allow_pickle=True`` it would run, and this test fails)."""
    path = fitted.save(tmp_path / router.FILE)
    with np.load(path, allow_pickle=False) as z:
        fields = {k: z[k] for k in z.files}
    fields["datasets"] = np.array([Payload() for _ in fitted.datasets], dtype=object)
    np.savez(path, **fields)
    UNPICKLED.clear()
    with pytest.raises(router.RouterError, match="cannot be read"):
        router.Router.load(path)
    assert UNPICKLED == []


def test_a_photo_is_routed_from_its_predictions_features(fitted):
    """What Classify passes: each model's prediction, whose ``features`` are per-depth arrays."""
    from types import SimpleNamespace

    row = blobs(4, 1)[2][0]
    preds = [SimpleNamespace(features=[row[:4], row[4:6]]), SimpleNamespace(features=[row[6:9], row[9:]])]
    np.testing.assert_allclose(fitted.route(preds), fitted.probabilities(row))
