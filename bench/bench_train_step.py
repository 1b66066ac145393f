"""Training-step throughput: the compiled + fused step vs the eager reference step.

One step = normalise uint8 images, forward of both paths, CE + L_drop + L_sim + L_norm
(full objective, fine-grained masks), backward, SGD step: exactly what ``fastwsol train`` runs.
The eager step is ``train.compile=false`` with the reference ops; the compiled step is
``torch.compile`` of the same function with ``backend=auto`` (on CPU: the compiled
reference ops; on CUDA: the Triton kernels).

    python bench/bench_train_step.py [--quick]

Prints a table and writes ``bench/results/train_step.{json,csv}``. Timings are the median of
the timed steps after warm-up (compile time is reported separately, not included).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from fastwsol.checkpoint import write_csv_atomic, write_text_atomic
from fastwsol.config import load_config
from fastwsol.models import create_model
from fastwsol.train import TrainStep, build_optimizer

RESULTS = Path(__file__).resolve().parent / "results"

# (label, model, image size, batch, classes)
CASES = [
    ("vgg_small@112", "vgg_small", 112, 32, 200),
    ("vgg16@224", "vgg16", 224, 4, 200),
]


def time_steps(model_name, size, batch, classes, *, compiled, warmup, repeats, channels_last=False):
    torch.manual_seed(0)
    config = load_config(
        None,
        [f"model.name={model_name}", f"train.compile={compiled}", f"train.backend={'auto' if compiled else 'reference'}",
         f"train.channels_last={channels_last}"],
    )
    model = create_model(model_name, classes).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.ops_backend = config.train.backend
    optimizer = build_optimizer(model, config)
    step = TrainStep(model, model.fc.weight, config, uint8_input=True)
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    labels = torch.randint(0, classes, (batch,))

    def one_step():
        optimizer.zero_grad(set_to_none=True)
        values = step(images, labels, full=True)
        optimizer.step()
        return values

    started = time.perf_counter()
    one_step()  # the first call compiles (when compiled)
    first = time.perf_counter() - started
    for _ in range(warmup):
        one_step()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        one_step()
        times.append(time.perf_counter() - started)
    median = statistics.median(times)
    return {"first_step_s": first, "median_step_s": median, "images_per_s": batch / median, "repeats": repeats}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the small case, fewer repeats")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    cases = CASES[:1] if args.quick else CASES
    rows = []
    for label, name, size, batch, classes in cases:
        eager = time_steps(name, size, batch, classes, compiled=False, warmup=1, repeats=args.repeats)
        compiled = time_steps(name, size, batch, classes, compiled=True, warmup=2, repeats=args.repeats)
        rows.append({
            "case": label, "batch": batch, "classes": classes,
            "eager_img_s": round(eager["images_per_s"], 2),
            "compiled_img_s": round(compiled["images_per_s"], 2),
            "speedup": round(compiled["images_per_s"] / eager["images_per_s"], 3),
            "compile_first_step_s": round(compiled["first_step_s"], 1),
            "repeats": args.repeats,
        })
    header = f"{'case':<16}{'batch':>6}{'eager img/s':>13}{'compiled img/s':>16}{'speedup':>9}{'first step (compile) s':>24}"
    print(f"training step, {platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(header)
    for r in rows:
        print(f"{r['case']:<16}{r['batch']:>6}{r['eager_img_s']:>13.2f}{r['compiled_img_s']:>16.2f}{r['speedup']:>8.2f}×"
              f"{r['compile_first_step_s']:>24.1f}")
    print("target: compiled + fused step ≥ 1.5× the eager reference step")
    meta = {"device": "cuda" if torch.cuda.is_available() else "cpu", "threads": torch.get_num_threads(),
            "torch": torch.__version__, "rows": rows}
    write_text_atomic(RESULTS / "train_step.json", json.dumps(meta, indent=2) + "\n")
    write_csv_atomic(RESULTS / "train_step.csv", rows)
    return rows


if __name__ == "__main__":
    main()
