"""Two-stage CNN training (Zhou): datasets, models, training, records and statistics.

Nothing in this package imports Streamlit; the app's pages are thin views over it. Keras 3 only, so the same
code runs on the TensorFlow backend (tests, CPU) and on JAX (GPU machines): no ``tf.*`` on the training path.

The modules are grouped by concern into the sub-packages of :data:`GROUPS`, lowest first: a module imports
from its own group and from groups before it, never from a later one, and no import chain comes back to where it
started (``tests/test_layout.py`` walks every import, those inside functions too).
"""

import logging
import os

GROUPS = ("protocol", "data", "models", "results", "training", "studies", "classify", "app", "jobs", "cli")
"""core's groups, lowest first.

- ``protocol``: what an experiment is (options, architectures, the vocabulary, progress events, the paper's
  numbers, how things are written);
- ``data``: reading datasets and images; ``models``: building networks; ``results``: run records, statistics;
- ``training``: running repeats (one Keras fit each, or all at once on JAX, locally or on Ray);
- ``studies``: sweeps and the related reports' plans; ``classify``: a photo through a trained model set;
- ``app``: what the pages show (the catalog, the shipped reference, previews, estimates);
- ``jobs``: the background queue and its workers; ``cli``: ``python -m core``.
"""

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow warns about "retracing" whenever a model's predict function is built for a new model or a last,
# smaller batch; that is expected here (one probe model per BatchNorm layer) and only clutters the output.
logging.getLogger("tensorflow").setLevel(logging.ERROR)
