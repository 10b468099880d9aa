"""Two-stage CNN training (Zhou): datasets, models, training, records and statistics.

Nothing in this package imports Streamlit; the app's pages are thin views over it. Keras 3 only, so the same
code runs on the TensorFlow backend (tests, CPU) and on JAX (GPU machines): no ``tf.*`` on the training path.
"""

import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow warns about "retracing" whenever a model's predict function is built for a new model or a last,
# smaller batch; that is expected here (one probe model per BatchNorm layer) and only clutters the output.
logging.getLogger("tensorflow").setLevel(logging.ERROR)
