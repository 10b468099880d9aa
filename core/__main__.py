"""``python -m core``: see :mod:`core.cli.main`."""

import sys

from .cli.quiet import import_keras_quietly

import_keras_quietly()  # before anything imports Keras: TensorFlow's start-up notices would bury a one-line answer

from .cli.main import main  # noqa: E402

sys.exit(main())
