"""Images/s of the DALI pipeline vs the torchvision/PIL fallback (train and eval, float and
uint8 output), against the limit: decode-only throughput of the same files on the same
threads, measured in the same run. Synthetic dataset (default size), 224 px, 2 threads/workers.

    python -m bench.bench_data [--threads 2] [--rounds 3]   # bench/results/data.{json,csv} (bench/common.py)

Prints a table and writes ``<out>.json`` and ``<out>.csv``. Besides images/s, each row has the
CPU time spent per image by this process and its children (the fallback's workers), read from
/proc: on a shared machine the rate depends on the load, the CPU cost much less.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from bench.common import format_table, save_results


def _tree_cpu_seconds() -> float:
    """User + system CPU seconds of this process and all its descendants (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    parent, cpu = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:  # exited meanwhile
                continue
            parent[int(entry)] = int(fields[1])
            cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [os.getpid()]
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo.extend(child for child, ppid in parent.items() if ppid == pid)
    return total


def _timed(run_epoch):
    """Wraps ``run_epoch() -> images`` into a callable → (images/s, CPU ms per image)."""

    def one_epoch() -> tuple[float, float]:
        cpu, start = _tree_cpu_seconds(), time.perf_counter()
        count = run_epoch()
        return count / (time.perf_counter() - start), 1e3 * (_tree_cpu_seconds() - cpu) / count

    return one_epoch


def _loader_epoch(loader):
    """A callable timing one epoch of ``loader`` (epochs advance per call)."""
    state = {"epoch": 0}

    def run_epoch() -> int:
        loader.set_epoch(state["epoch"])
        state["epoch"] += 1
        count = 0
        for batch in loader:
            count += len(batch["indices"])
        return count

    return _timed(run_epoch)


def _dali_stage(files: list[str], threads: int, batch_size: int, stage: str):
    """DALI throughput up to ``stage``: "decode", "resize" (decode + resize to 224²)."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=batch_size, num_threads=threads, device_id=None, prefetch_queue_depth=2)
    def pipeline():
        encoded, _ = fn.readers.file(files=files, labels=list(range(len(files))), name="Reader")
        images = fn.decoders.image(encoded, device="cpu", output_type=types.RGB, adjust_orientation=False)
        if stage == "resize":
            images = fn.resize(images, size=[224, 224], interp_type=types.INTERP_LINEAR, antialias=True)
        return images

    pipe = pipeline()
    pipe.build()
    steps = len(files) // batch_size

    def run_epoch() -> int:
        for _ in range(steps):
            pipe.run()
        return steps * batch_size

    return _timed(run_epoch)


def _pil_decode(files: list[str], pool: ThreadPoolExecutor):
    """PIL decode (+ convert RGB) on a thread pool (decoding releases the GIL)."""
    from PIL import Image

    def decode(path):
        with Image.open(path) as img:
            return img.convert("RGB").size

    def run_epoch() -> int:
        list(pool.map(decode, files))
        return len(files)

    return _timed(run_epoch)


def run(threads: int = 2, epochs: int = 3, batch_size: int = 32, data: str | None = None) -> dict:
    from fastwsol.data import build_loader, make_synthetic_dataset
    from fastwsol.data.metadata import read_split_metadata

    tmp = None
    if data is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_data_")
        data = tmp.name
    paths = make_synthetic_dataset(data)  # the default synthetic set
    train_meta = read_split_metadata(paths.metadata_root, paths.dataset, "train", require_localization=False)
    files = [str(paths.data_root / paths.dataset / i) for i in train_meta.image_ids]
    sizes = train_meta.sizes

    # Every configuration is built and warmed up (one untimed epoch: worker start-up, pipeline
    # build), then timed one epoch at a time in interleaved rounds; the median over rounds is
    # reported, so load from other processes on a shared machine hits every row alike.
    pool = ThreadPoolExecutor(threads)
    configs = {
        ("dali_decode", "-", "-"): _dali_stage(files, threads, batch_size, "decode"),
        ("dali_decode_resize224", "-", "-"): _dali_stage(files, threads, batch_size, "resize"),
        ("pil_decode", "-", "-"): _pil_decode(files, pool),
    }
    for pipeline in ("train", "eval"):  # the same (train) files for every row
        for output in ("float", "uint8"):
            for kind in ("dali", "torch"):
                loader = build_loader(paths.data_root, paths.metadata_root, paths.dataset, "train",
                                      train=pipeline == "train", batch_size=batch_size, loader=kind, device="cpu",
                                      num_threads=threads, output=output)
                configs[(kind, pipeline, output)] = _loader_epoch(loader)
    for one_epoch in configs.values():
        one_epoch()
    samples = {key: [] for key in configs}
    for _ in range(epochs):
        for key, one_epoch in configs.items():
            samples[key].append(one_epoch())
    pool.shutdown()
    rows = []
    for (what, pipeline, output), measured in samples.items():
        rates, cpu_ms = np.array(measured).T
        rows.append({"what": what, "pipeline": pipeline, "output": output,
                     "images_per_s": round(float(np.median(rates)), 1), "min": round(float(np.min(rates)), 1),
                     "max": round(float(np.max(rates)), 1), "cpu_ms_per_image": round(float(np.median(cpu_ms)), 3)})

    def rate(kind, pipeline, output):
        return next(r["images_per_s"] for r in rows if (r["what"], r["pipeline"], r["output"]) == (kind, pipeline, output))

    def cpu_ms(kind, pipeline, output):
        return next(r["cpu_ms_per_image"] for r in rows
                    if (r["what"], r["pipeline"], r["output"]) == (kind, pipeline, output))

    speedups = {f"{p}_{o}": round(rate("dali", p, o) / rate("torch", p, o), 2)
                for p in ("train", "eval") for o in ("float", "uint8")}
    cpu_ratios = {f"{p}_{o}": round(cpu_ms("torch", p, o) / cpu_ms("dali", p, o), 2)
                  for p in ("train", "eval") for o in ("float", "uint8")}
    result = {
        "benchmark": "data loaders, synthetic set (default), 224 px, CPU",
        "threads": threads,
        "batch_size": batch_size,
        "timed_rounds": epochs,
        "statistic": "median images/s over rounds (min, max kept); median CPU ms per image (process tree)",
        "images": len(files),
        "image_size_px": {"min": int(sizes.min()), "max": int(sizes.max()), "mean_w": float(sizes[:, 0].mean()),
                          "mean_h": float(sizes[:, 1].mean())},
        "machine": {"cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg(), "python": platform.python_version()},
        "rows": rows,
        "dali_speedup_over_torch": speedups,
        "torch_cpu_per_image_over_dali": cpu_ratios,
        "target": "DALI >= 1.5x the fallback on CPU",
    }
    if tmp is not None:
        tmp.cleanup()
    return result


def _print(result: dict) -> None:
    print(f"{result['benchmark']}: {result['images']} train images, {result['threads']} threads, "
          f"batch {result['batch_size']}, load avg at end {result['machine']['load_avg_at_end'][0]:.1f}")
    print(format_table(("what", "pipeline", "output", "images/s", "min", "max", "CPU ms/img"), [
        (row["what"], row["pipeline"], row["output"], f"{row['images_per_s']:.1f}", f"{row['min']:.1f}",
         f"{row['max']:.1f}", f"{row['cpu_ms_per_image']:.3f}") for row in result["rows"]
    ]))
    print("DALI / fallback images/s: "
          + ", ".join(f"{k} {v:.2f}x" for k, v in result["dali_speedup_over_torch"].items()))
    print("fallback / DALI CPU per image: "
          + ", ".join(f"{k} {v:.2f}x" for k, v in result["torch_cpu_per_image_over_dali"].items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs per configuration")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--data", default=None, help="where to write the synthetic set (default: a temp dir)")
    args = parser.parse_args()
    result = run(args.threads, args.rounds, args.batch_size, args.data)
    _print(result)
    columns = ["what", "pipeline", "output", "images_per_s", "min", "max", "cpu_ms_per_image"]
    save_results("data", result, result["rows"], columns, parser=parser, args=args, ignore=("data",))


if __name__ == "__main__":
    main()
