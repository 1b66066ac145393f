"""Training-step throughput: the compiled + fused step vs the eager reference step.

One step = zero_grad, normalise uint8 images, forward of both paths, CE + L_drop + L_sim + L_norm
(full objective, fine-grained masks), backward, SGD step: exactly what ``fastwsol train`` runs
(``TrainStep`` + the optimizer of ``build_optimizer``). Variants, all from the same initial
weights and the same batch:

- ``eager``: ``train.compile=false``, ``train.backend=reference``, NCHW: the reference step;
- ``eager_cl``: the same with ``train.channels_last=true`` (oneDNN's favourite layout on CPU, so
  the speedup is also reported against the best eager step, not only the default one);
- ``compiled``: ``train.compile=true``, ``backend=auto`` (on CPU: the compiled reference ops
  fused into the step's graph; on CUDA: the Triton kernels), the default layout;
- ``compiled_cl``: the same with ``train.channels_last=true``.

Fair timing on a shared machine: every variant is built and warmed up first (the first call,
which compiles, is timed apart), then the timed rounds interleave the variants (one step of each
per round, the order rotating), so a change of load hits every variant alike. Images/s are
batch / median step time; a speedup is the median over the rounds of the within-round ratio of
step times (robust to load drifting between rounds). The 1-minute load average is printed and
saved before and after each case.

    python -m bench.bench_train_step [--quick] [--repeats 9]

Prints a table and writes ``bench/results/train_step.{json,csv}`` (``results/quick/`` unless a full run: bench/common.py).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from bench.common import save_results
from fastwsol.config import load_config
from fastwsol.models import create_model
from fastwsol.train import TrainStep, build_optimizer

# (label, model, image size, batch, classes)
CASES = [
    ("vgg_small@112", "vgg_small", 112, 32, 200),
    ("vgg16@224", "vgg16", 224, 4, 200),
]
# name → (train.compile, train.channels_last)
VARIANTS = {
    "eager": (False, False),
    "eager_cl": (False, True),
    "compiled": (True, False),
    "compiled_cl": (True, True),
}


def load_average() -> float:
    return os.getloadavg()[0]


def build_variant(model_name: str, classes: int, *, compiled: bool, channels_last: bool, state: dict, overrides=()):
    """(one-step closure, config) for a variant, starting from ``state`` (the same weights for all)."""
    config = load_config(
        None,
        [f"model.name={model_name}", f"train.compile={compiled}", f"train.backend={'auto' if compiled else 'reference'}",
         f"train.channels_last={channels_last}", *overrides],
    )
    model = create_model(model_name, classes).train()
    model.load_state_dict(state)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, config)
    step = TrainStep(model, model.fc.weight, config, uint8_input=True)

    def one_step(images, labels):
        optimizer.zero_grad(set_to_none=True)
        values = step(images, labels, full=True)
        optimizer.step()
        return values

    return one_step


def run_case(model_name, size, batch, classes, *, variants, warmup, repeats, overrides=()) -> dict:
    torch.manual_seed(0)
    state = create_model(model_name, classes).state_dict()
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    labels = torch.randint(0, classes, (batch,))
    steps, first = {}, {}
    load_before = load_average()
    for name in variants:
        compiled, channels_last = VARIANTS[name]
        torch.manual_seed(1)
        steps[name] = build_variant(model_name, classes, compiled=compiled, channels_last=channels_last, state=state,
                                    overrides=overrides)
        started = time.perf_counter()
        steps[name](images, labels)  # compiles, when compiled
        first[name] = time.perf_counter() - started
        for _ in range(warmup):
            steps[name](images, labels)
    times = {name: [] for name in variants}
    for round_index in range(repeats):
        order = variants[round_index % len(variants):] + variants[:round_index % len(variants)]
        for name in order:
            started = time.perf_counter()
            steps[name](images, labels)
            times[name].append(time.perf_counter() - started)
    return {"times": times, "first": first, "load_before": load_before, "load_after": load_average()}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the small case")
    parser.add_argument("--repeats", type=int, default=9, help="timed rounds (one step of every variant each)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each variant after the first")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every variant (exploration; results are not saved)")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    if "eager" not in args.variants or not {"compiled", "compiled_cl"} & set(args.variants):
        parser.error("--variants needs eager and at least one compiled variant")
    cases = CASES[:1] if args.quick else CASES
    print(f"training step, {platform.machine()} CPU ({os.cpu_count()} cores), {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; median of {args.repeats} interleaved rounds after {args.warmup} warm-up steps")
    rows = []
    for label, name, size, batch, classes in cases:
        result = run_case(name, size, batch, classes, variants=args.variants, warmup=args.warmup, repeats=args.repeats,
                          overrides=args.overrides)
        median = {v: statistics.median(t) for v, t in result["times"].items()}
        rate = {v: batch / m for v, m in median.items()}
        best_compiled = max((v for v in rate if v.startswith("compiled")), key=rate.get)
        best_eager = max((v for v in rate if v.startswith("eager")), key=rate.get)

        def paired(slow: str, fast: str) -> float:
            """Median over the rounds of the within-round ratio: robust to load drifting between rounds."""
            return statistics.median(a / b for a, b in zip(result["times"][slow], result["times"][fast]))

        row = {
            "case": label, "batch": batch, "classes": classes,
            "eager_img_s": round(rate["eager"], 2),
            "compiled_img_s": round(rate[best_compiled], 2),
            "compiled_variant": best_compiled,
            "speedup": round(paired("eager", best_compiled), 3),
            "best_eager_variant": best_eager,
            "speedup_vs_best_eager": round(paired(best_eager, best_compiled), 3),
            **{f"speedup_{v}_vs_{e}": round(paired(e, v), 3)
               for v in rate if v.startswith("compiled") for e in rate if e.startswith("eager")},
            **{f"img_s_{v}": round(r, 2) for v, r in rate.items()},
            **{f"step_s_min_max_{v}": f"{min(t):.3f}-{max(t):.3f}" for v, t in result["times"].items()},
            **{f"first_step_s_{v}": round(s, 1) for v, s in result["first"].items() if v.startswith("compiled")},
            "repeats": args.repeats,
            "load_avg_1min_before": round(result["load_before"], 2),
            "load_avg_1min_after": round(result["load_after"], 2),
        }
        rows.append(row)
        print(f"\n{label}, batch {batch}  (1-min load average {row['load_avg_1min_before']:.2f} → "
              f"{row['load_avg_1min_after']:.2f})")
        print(f"  {'variant':<13}{'img/s':>9}{'median step s':>15}{'min-max s':>15}{'first step s':>14}")
        for v in args.variants:
            times = result["times"][v]
            print(f"  {v:<13}{rate[v]:>9.2f}{median[v]:>15.3f}{min(times):>7.3f}-{max(times):<7.3f}"
                  f"{result['first'][v]:>14.1f}")
        print("  speedups (median of within-round ratios): " + ", ".join(
            f"{k.removeprefix('speedup_').replace('_vs_', ' vs ')} {v:.2f}×" for k, v in row.items()
            if k.startswith("speedup_") and "_vs_" in k and k != "speedup_vs_best_eager"))
        print(f"  speedup {best_compiled} vs eager: {row['speedup']:.2f}×, vs {best_eager}: "
              f"{row['speedup_vs_best_eager']:.2f}×  (target ≥ 1.5×)")
    if args.overrides or args.no_save:
        return rows
    meta = {"device": "cuda" if torch.cuda.is_available() else "cpu", "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "repeats": args.repeats, "warmup": args.warmup,
            "timing": "median over interleaved rounds after warm-up; first (compiling) step apart", "rows": rows}
    save_results("train_step", meta, rows, parser=parser, args=args)
    return rows


if __name__ == "__main__":
    main()
