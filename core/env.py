"""Where a run ran: Keras backend, device and library versions, stored in every run record."""

from __future__ import annotations

import functools
import os
import platform
import socket
from importlib import metadata

LIBRARIES = ("keras", "tensorflow", "tensorflow-cpu", "jax", "jaxlib", "torch", "numpy", "scipy",
             "opencv-python-headless", "streamlit")


def backend() -> str:
    import keras

    return keras.config.backend()


@functools.lru_cache(maxsize=1)
def device() -> str:
    """A human-readable accelerator name, or ``"CPU (N cores)"``."""
    name = backend()
    try:
        if name == "jax":
            import jax

            dev = jax.devices()[0]
            if dev.platform != "cpu":
                return f"{dev.platform.upper()}: {getattr(dev, 'device_kind', str(dev))}"
        elif name == "tensorflow":
            import tensorflow as tf  # device listing only; training code never touches tf.*

            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                details = tf.config.experimental.get_device_details(gpus[0])
                return f"GPU: {details.get('device_name', gpus[0].name)}"
        elif name == "torch":
            import torch

            if torch.cuda.is_available():
                return f"GPU: {torch.cuda.get_device_name(0)}"
    except Exception:  # noqa: BLE001 - device naming must never break a run
        pass
    return f"CPU ({os.cpu_count()} cores)"


def has_gpu() -> bool:
    return not device().startswith("CPU")


@functools.lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            found[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            continue
    return found


def info() -> dict:
    """Everything a record needs to say where its numbers came from."""
    return {
        "backend": backend(),
        "device": device(),
        "versions": versions(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
    }
