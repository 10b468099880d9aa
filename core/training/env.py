"""Where a run ran: Keras backend, device and library versions, stored in every run record."""

from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CODE_VERSION_VAR = "TWO_STAGE_CODE_VERSION"
"""Where the code came from when this copy has no git metadata (a device machine receives a bare copy of the
tree): ``<commit>`` or ``<commit>-dirty``, set by whoever copied it."""

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


@functools.lru_cache(maxsize=1)
def bf16_units() -> str | None:
    """The bfloat16 matrix units this machine offers, or None: a GPU, or the CPU flags ``amx_bf16`` /
    ``avx512_bf16`` (TensorFlow's oneDNN uses them). Without them bfloat16 is emulated, and slower."""
    if not device().startswith("CPU"):
        return device()
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line.split(":", 1)[1].split() for line in fh if line.startswith("flags")), [])
    except OSError:
        return None
    found = [flag for flag in ("amx_bf16", "avx512_bf16") if flag in flags]
    return ", ".join(found) or None


NO_BF16 = ("this CPU has no bfloat16 units (no amx_bf16 or avx512_bf16 flag): bfloat16 runs emulated, "
           "slower than float32")


EXACT_FLOAT32 = "float32 matrix products and convolutions at JAX precision 'highest' (no TF32)"
EXACT_FLOAT32_TF = "float32 matrix products and convolutions with TensorFlow's TF32 execution switched off"
TF32 = ("tf32: float32 weights and activations; matrix products and convolutions on the GPU's TF32 tensor "
        "cores (inputs rounded to a 10-bit mantissa, float32 accumulation)")
TF32_ON_CPU = "tf32 asked for on a CPU, which has no TF32 units: every product is computed in float32"


def apply_precision(precision: str) -> None:
    """Make the process compute matrix products and convolutions at the protocol's precision, before anything
    is compiled (both training engines call it first).

    Why: on an NVIDIA GPU, XLA (JAX) and TensorFlow run float32 products on TF32 units (10-bit mantissa) by
    default; a record labelled float32 must not hide that, and one labelled tf32 must really use them. CPUs
    compute float32 in float32 either way. bfloat16 is a Keras dtype policy (:mod:`core.models.models`), not
    a setting here."""
    if precision not in ("float32", "tf32") or device().startswith("CPU"):
        return
    if backend() == "jax":
        import jax

        jax.config.update("jax_default_matmul_precision", "highest" if precision == "float32" else "tensorfloat32")
    elif backend() == "tensorflow":
        import tensorflow as tf  # a process setting, like JAX's above; the training path stays backend-agnostic

        tf.config.experimental.enable_tensor_float_32_execution(precision == "tf32")


def precision_support(precision: str) -> dict[str, str | None]:
    """What a record says about its compute precision and whether the hardware accelerates it."""
    if precision == "bfloat16":
        units = bf16_units()
        return {"name": precision, "bf16_units": units, "note": None if units else NO_BF16}
    if precision == "tf32":
        return {"name": precision, "bf16_units": None,
                "note": TF32_ON_CPU if device().startswith("CPU") else TF32}
    return {"name": precision, "bf16_units": None, "note": _float32_note()}


def _float32_note() -> str | None:
    """Said only where it had to be enforced: on a GPU (a CPU computes float32 in float32 anyway)."""
    if device().startswith("CPU"):
        return None
    if backend() == "jax":
        import jax

        return EXACT_FLOAT32 if jax.config.jax_default_matmul_precision == "highest" else None
    return EXACT_FLOAT32_TF if backend() == "tensorflow" else None


@functools.lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            found[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            continue
    return found


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, object]:
    """The git commit the code was run from and whether the tree differed from it (uncommitted changes to
    tracked files, or untracked files outside ``.gitignore``), so a number can be traced to the code that
    made it. A copy without git metadata reads :data:`CODE_VERSION_VAR`; failing both, ``commit`` is None."""
    try:
        run = functools.partial(subprocess.run, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10,
                                check=True)
        commit = run(["git", "rev-parse", "HEAD"]).stdout.strip()
        dirty = bool(run(["git", "status", "--porcelain", "--untracked-files=normal"]).stdout.strip())
        return {"commit": commit, "dirty": dirty, "source": "git"}
    except (OSError, subprocess.SubprocessError):
        pass
    given = os.environ.get(CODE_VERSION_VAR, "").strip()
    if given:
        commit, _, flag = given.partition("-")
        return {"commit": commit, "dirty": flag == "dirty", "source": CODE_VERSION_VAR}
    return {"commit": None, "dirty": None, "source": None}


@functools.lru_cache(maxsize=1)
def accelerator() -> dict[str, str] | None:
    """The GPU's driver, CUDA and cuDNN versions (None on a CPU): what a GPU number also depends on.

    The driver comes from ``nvidia-smi``; CUDA and cuDNN from the installed NVIDIA wheels JAX uses, or from
    TensorFlow's build information. Any part that cannot be read is left out."""
    if device().startswith("CPU"):
        return None
    found: dict[str, str] = {}
    try:
        line = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20, check=True).stdout.strip()
        if line:
            found["driver"] = line.splitlines()[0].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    for part, packages in (("cuda", ("nvidia-cuda-runtime", "nvidia-cuda-runtime-cu13", "nvidia-cuda-runtime-cu12")),
                           ("cudnn", ("nvidia-cudnn-cu13", "nvidia-cudnn-cu12"))):
        for package in packages:
            try:
                found[part] = metadata.version(package)
                break
            except metadata.PackageNotFoundError:
                continue
    if backend() == "tensorflow" and not {"cuda", "cudnn"} <= found.keys():
        try:
            import tensorflow as tf  # build information only

            build = tf.sysconfig.get_build_info()
            found.setdefault("cuda", str(build.get("cuda_version", "")) or None)
            found.setdefault("cudnn", str(build.get("cudnn_version", "")) or None)
        except Exception:  # noqa: BLE001 - provenance must never break a run
            pass
    return {k: v for k, v in found.items() if v}


def info() -> dict:
    """Everything a record needs to say where its numbers came from."""
    out = {
        "backend": backend(),
        "device": device(),
        "versions": versions(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "code": code_version(),
    }
    gpu = accelerator()
    if gpu is not None:
        out["accelerator"] = gpu
    return out
