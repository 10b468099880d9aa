"""How well Classify's out-of-distribution check and its model preselection work with the shipped models.

Run by hand (it needs the photo datasets, which the repository does not ship), from the repository root:

    python -m bench.classify_fit --dogs-cats ~/data/dogs-cats --face-mask ~/data/face-mask -n 150

For each set of real images (Fashion-MNIST test items from the installed dataset, Dogs & Cats ``test_set``
photos, Face Mask photos from the whole set) it prints, per shipped model with statistics, the share of images
flagged, and how often Classify preselects the image's own model: by the shipped model chooser
(:mod:`core.classify.router`) when there is one for these models, by rank (:func:`core.classify.classify.best_fit`), and by the rule
rank replaced (lowest score-to-threshold ratio). The images are sent as encoded files, as an upload would be.
The chooser was fitted on images drawn with another seed, so some images here may be ones it was fitted on:
``python -m core router`` prints its accuracy on images it did not see.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import cv2  # noqa: E402
import numpy as np  # noqa: E402


def image_sets(dogs_cats: str | None, face_mask: str | None, n: int, seed: int) -> dict[str, list[bytes]]:
    """Up to ``n`` encoded images per dataset found, keyed by the dataset name the catalogue uses."""
    from core.data.datasets import DatasetUnavailable, load_raw

    rng = np.random.default_rng(seed)
    sets = {}
    try:
        raw = load_raw("fashion-mnist")
        picks = rng.choice(len(raw.x_test), min(n, len(raw.x_test)), replace=False)
        sets["fashion-mnist"] = [cv2.imencode(".png", raw.x_test[i][..., 0])[1].tobytes() for i in picks]
    except DatasetUnavailable:
        pass
    for name, folder, pattern in (("dogs-cats", dogs_cats, "test_set/*/*"), ("face-mask", face_mask, "*/*")):
        if folder:
            files = sorted(p for p in Path(folder).expanduser().glob(pattern) if p.is_file())
            rng.shuffle(files)
            sets[name] = [p.read_bytes() for p in files[:n]]
    return sets


def main(argv: list[str] | None = None) -> int:
    from core.app import catalog
    from core.classify.classify import best_fit, fit_predictions, load_models

    parser = argparse.ArgumentParser(prog="python -m bench.classify_fit", description=__doc__.splitlines()[0])
    parser.add_argument("--dogs-cats", metavar="PATH")
    parser.add_argument("--face-mask", metavar="PATH")
    parser.add_argument("-n", type=int, default=150, help="images per set (default 150)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    shipped = [c for c in catalog.models() if c.source == catalog.REFERENCE and c.ood_path]
    models = [load_models(c.paths, c.class_names, c.ood_path) for c in shipped]
    names = [c.dataset for c in shipped]
    found = catalog.model_chooser(shipped)
    print("shipped models with statistics:", ", ".join(c.title for c in shipped),
          "· model chooser:", "yes" if found else "none for these models")
    for truth, images in image_sets(args.dogs_cats, args.face_mask, args.n, args.seed).items():
        preds = [fit_predictions(models, data) for data in images]
        verdicts = [[p.ood for p in pred] for pred in preds]
        by_rank = np.mean([names[best_fit(v)] == truth for v in verdicts])
        by_ratio = np.mean([names[int(np.argmin([x.ratio for x in v]))] == truth for v in verdicts])
        chooser = ""
        if found:
            fitted, order = found
            picks = [order[int(fitted.route([p[i] for i in order]).argmax())] for p in preds]
            chooser = f"by the chooser {np.mean([names[i] == truth for i in picks]):.1%}; "
        flagged = {name: np.mean([v[i].flagged for v in verdicts]) for i, name in enumerate(names)}
        print(f"{truth} ({len(images)} images): preselects its own model {chooser}by rank {by_rank:.1%}; by ratio "
              f"{by_ratio:.1%}; flagged by " + ", ".join(f"{k} {v:.1%}" for k, v in flagged.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
