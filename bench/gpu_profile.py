"""Where a lock-step training step's time goes on this device: timed variants of one step of 20 members.

For each of the paper's CNNs at its real input size (Dogs & Cats with the paper's augmentation), the same
training step (:func:`core.training.stacked.train_program`: forward, loss, backward, Adam, for 20 members at
batch 32) is compiled in every convolution formulation (:data:`core.training.stacked.CONV_FORMS`) and timed
over a chunk of steps on synthetic images; the fastest float32 formulation is then also timed with TF32 and
bfloat16, and Dogs & Cats without its augmentation layers (their share of the step). The step's arithmetic
(multiply-adds counted from the layers' shapes, x2 for FLOPs, x3 for forward and backward) gives the achieved
TFLOP/s, to compare with the device's peak. Compilation runs in threads (XLA compiles on the host), the
timings one after another.

``run(out)`` writes ``profile.json`` and ``profile.md`` under ``out`` and returns the fastest float32
formulation per dataset, which :mod:`bench.gpu` trains with.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

MEMBERS, BATCH, STEPS = 20, 32, 10
MODELS = {"fashion-mnist": ((28, 28, 1), 10, False), "cifar10": ((32, 32, 3), 10, False),
          "dogs-cats": ((128, 128, 3), 2, True)}


def macs_per_image(model) -> int:
    """Multiply-adds of one image's forward pass through the model's convolutions and dense layers."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, out = layer.output.shape
            kh, kw, cin, _ = layer.kernel.shape
            total += h * w * out * kh * kw * cin
        elif isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape))
    return int(total)


def _cohort(name: str, precision: str, augment: bool):
    """20 members of the dataset's CNN with their own seeds, as the lock-step engine stacks them."""
    import keras

    from core.models.models import build_stage1
    from core.models.optim import stage1_optimizer
    from core.protocol.config import Augmentation, Protocol
    from core.training import stacked

    shape, classes, _ = MODELS[name]
    protocol = Protocol(dataset="cifar10" if name == "cifar10" else "fashion-mnist", precision=precision)
    models = []
    for seed in range(MEMBERS):
        keras.utils.set_random_seed(seed)
        models.append(build_stage1(name, shape, classes, Augmentation() if augment else None, seed, precision))
    optimizer = stage1_optimizer(protocol)
    optimizer.build(models[0].trainable_variables)
    weights = [stacked.variable_values(m) for m in models]
    return stacked.Cohort.create("stage1", models[0], optimizer, list(range(MEMBERS)), list(range(MEMBERS)),
                                 [0] * MEMBERS, weights, protocol), classes, shape


def _inputs(cohort, classes: int, shape: tuple):
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    n = BATCH * STEPS
    x = jnp.asarray(rng.integers(0, 256, (1, n, *shape)), jnp.uint8)
    y = jnp.asarray(rng.integers(0, classes, (1, n)), jnp.int32)
    batches = jnp.asarray(np.stack([rng.permutation(n).reshape(STEPS, BATCH) for _ in range(MEMBERS)], axis=1),
                          jnp.int32)
    keeps = jnp.ones((STEPS, MEMBERS), bool)
    state = (cohort.state["trainable"], cohort.state["non_trainable"], cohort.state["optimizer"])
    sums = jnp.zeros((MEMBERS, 3), jnp.float32)
    return ((state,), (sums,), (x,), y, (jnp.zeros(MEMBERS, jnp.int32),), (batches,), (keeps,))


def _variants(name: str, forms: list[str], precision: str, augment: bool) -> list[dict]:
    """Compile ``forms`` in threads, then time each over STEPS steps (best of 3 calls after a warm-up)."""
    import jax

    from core.training import stacked

    cohort, classes, shape = _cohort(name, precision, augment)
    args = _inputs(cohort, classes, shape)
    macs = macs_per_image(cohort.model)
    matmul = {"float32": "highest", "tf32": "tensorfloat32"}.get(precision, "default")

    def compile_one(form: str):
        with jax.default_matmul_precision(matmul):
            started = time.perf_counter()
            program = stacked.train_program([cohort], classes, form)
            compiled = program.lower(*args).compile()
            return compiled, time.perf_counter() - started

    with ThreadPoolExecutor(len(forms)) as pool:
        compiled = dict(zip(forms, pool.map(compile_one, forms)))
    rows = []
    for form in forms:
        program, compile_s = compiled[form]
        jax.block_until_ready(program(*args))
        times = []
        for _ in range(3):
            started = time.perf_counter()
            jax.block_until_ready(program(*args))
            times.append(time.perf_counter() - started)
        step = min(times) / STEPS
        rows.append({"dataset": name, "form": form, "precision": precision, "augmentation": augment,
                     "ms_per_step": round(step * 1e3, 3), "images_per_s": round(MEMBERS * BATCH / step),
                     "tflops": round(6 * macs * MEMBERS * BATCH / step / 1e12, 2), "compile_s": round(compile_s, 1),
                     "macs_per_image": macs})
        print(f"profile {name} {form} {precision} aug={augment}: {rows[-1]['ms_per_step']} ms/step "
              f"({rows[-1]['tflops']} TFLOP/s), compiled in {compile_s:.1f} s", flush=True)
    return rows


def run(out: Path, budget_s: float = 240.0, smoke: bool = False) -> dict[str, str]:
    """Profile every model (within ``budget_s``), write the tables, return the fastest float32 formulation
    per dataset (Face Mask's CNN has Dogs & Cats' shapes and takes its formulation). ``smoke``: 2 members,
    2 steps, Fashion-MNIST only (a test of the code on a CPU, not a measurement)."""
    from core.training.stacked import CONV_FORMS

    global MEMBERS, STEPS
    if smoke:
        MEMBERS, STEPS = 2, 2

    started = time.time()
    rows: list[dict] = []
    best: dict[str, str] = {}
    order = ["fashion-mnist"] if smoke else ["dogs-cats", "fashion-mnist", "cifar10"]
    for name in order:
        if time.time() - started > budget_s:
            break
        found = _variants(name, list(CONV_FORMS), "float32", MODELS[name][2])
        rows += found
        best[name] = min(found, key=lambda r: r["ms_per_step"])["form"]
        _write(out, rows, best)
    for name in ("dogs-cats", "fashion-mnist"):
        for precision in ("tf32",) if smoke else ("tf32", "bfloat16"):
            if name in best and time.time() - started < budget_s:
                rows += _variants(name, [best[name]], precision, MODELS[name][2])
        if name == "dogs-cats" and name in best and time.time() - started < budget_s:
            rows += _variants(name, [best[name]], "float32", False)
        _write(out, rows, best)
    fastest = min((r for r in rows if r["precision"] == "float32"), key=lambda r: r["ms_per_step"] / r["macs_per_image"])
    for name in ("fashion-mnist", "cifar10", "dogs-cats"):
        best.setdefault(name, fastest["form"])  # not profiled within the budget: the fastest per operation
    best.setdefault("face-mask", best["dogs-cats"])  # Face Mask's CNN has Dogs & Cats' shapes
    _write(out, rows, best)
    return best


def _write(out: Path, rows: list[dict], best: dict[str, str]) -> None:
    import jax

    device = jax.devices()[0]
    info = {"device": getattr(device, "device_kind", str(device)), "jax": jax.__version__, "members": MEMBERS,
            "batch": BATCH, "steps_timed": STEPS, "date": time.strftime("%Y-%m-%d")}
    (out / "profile.json").write_text(json.dumps({"info": info, "rows": rows, "best": best}, indent=1))
    lines = [f"{info['date']} · {info['device']} · JAX {info['jax']} · {MEMBERS} members x batch {BATCH}, "
             f"best of 3 chunks of {STEPS} steps", "",
             "| model | formulation | precision | augmentation | ms/step | images/s | TFLOP/s | compile s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['form']} | {r['precision']} | {'on' if r['augmentation'] else 'off'} "
                     f"| {r['ms_per_step']} | {r['images_per_s']:,} | {r['tflops']} | {r['compile_s']} |")
    (out / "profile.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.gpu_profile --out DIR [--members N --steps N --datasets ...]``: the formulations timed
    on whatever device JAX has (on a CPU, fewer members keep it to minutes; bench/README.md has such a run)."""
    import argparse

    from core.training.stacked import CONV_FORMS

    global MEMBERS, STEPS
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_profile", description=main.__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--members", type=int, default=MEMBERS)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--datasets", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--no-augment", action="store_true", help="time Dogs & Cats without its augmentation")
    args = parser.parse_args(argv)
    MEMBERS, STEPS = args.members, args.steps
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for name in args.datasets:
        rows += _variants(name, list(CONV_FORMS), "float32", MODELS[name][2] and not args.no_augment)
        _write(args.out, rows, {})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
