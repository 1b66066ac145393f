"""check-gpu's rows around the training step: the evaluator on score maps the GPU made, and
DALI's GPU JPEG decoding (skipped where DALI is not installed)."""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np
import torch

from fastwsol.check_gpu.runner import RowSkipped, Settings
from fastwsol.check_gpu.training import CLASSES, TrainCase, build_model, case_config, initial_state

MAP_DIFFERENCE_BOUND = 1e-3  # GPU against CPU score maps of the same features (bicubic in fp32)


def _random_boxes(count: int, seed: int) -> list[np.ndarray]:
    """One or two boxes per image in 224² score-map pixels."""
    rng = np.random.default_rng(seed)
    boxes = []
    for _ in range(count):
        corners = rng.integers(0, 224, (rng.integers(1, 3), 2, 2))
        low, high = corners.min(axis=1), corners.max(axis=1) + 1
        boxes.append(np.concatenate([low[:, :1], low[:, 1:], high[:, :1], high[:, 1:]], axis=1))
    return boxes


def evaluate_maps(settings: Settings, shared: dict, *, case_name: str, case: TrainCase, batches: int) -> dict:
    """Score maps made on this device by the evaluation path (model in eval mode → CAM of the
    target class → 224² bicubic, min-max) go through BoxEvaluator's component-tree counter and
    wsolevaluation's literal OpenCV loop: the counts must be equal; images/s of each; the same
    features' maps made on the CPU beside them."""
    from fastwsol.data import normalize_on_device
    from fastwsol.evaluate import scoremaps_for
    from fastwsol.evaluation import BoxEvaluator

    start = initial_state(case)
    config = case_config(case, compiled=False, backend="reference", precision="fp32", channels_last=False)
    model = build_model(config, start, settings.device).eval()
    generator = torch.Generator().manual_seed(2)
    device_maps, cpu_maps, labels = [], [], []
    with torch.no_grad():
        for _ in range(batches):
            settings.check_time("while making score maps")
            images = torch.randint(0, 256, start["images"].shape, dtype=torch.uint8, generator=generator)
            target = torch.randint(0, CLASSES, (images.shape[0],), generator=generator)
            feature = model(normalize_on_device(images.to(settings.device)))["feature"].float()
            weight = model.fc.weight.float()
            device_maps.append(scoremaps_for(feature, weight, target.to(settings.device), "cam").cpu())
            cpu_maps.append(scoremaps_for(feature.cpu(), weight.cpu(), target, "cam"))
            labels.append(target)
    maps, maps_cpu = torch.cat(device_maps).numpy(), torch.cat(cpu_maps).numpy()
    boxes = _random_boxes(len(maps), seed=3)
    results = {}
    for backend, source in (("component_tree", maps), ("opencv", maps), ("component_tree on CPU maps", maps_cpu)):
        settings.check_time("in the evaluator")
        evaluator = BoxEvaluator(backend=backend.split(" ")[0])
        BoxEvaluator(backend=backend.split(" ")[0]).accumulate(source[:1], boxes[:1])  # numba compiles here
        started = time.perf_counter()
        evaluator.accumulate(source, boxes)
        seconds = time.perf_counter() - started
        results[backend] = {"images_per_s": len(source) / seconds,
                            "max_box_acc_v2": evaluator.compute()["max_box_acc_v2"], "counts": evaluator.correct_counts}
    counts_equal = bool(np.array_equal(results["component_tree"]["counts"], results["opencv"]["counts"]))
    difference = float(np.abs(maps - maps_cpu).max())
    for result in results.values():
        del result["counts"]
    return {"case": case_name, "model": case.model, "images": len(maps),
            "maps_from": "GPU" if settings.on_gpu else "CPU (dry run)",
            "compared_with": "wsolevaluation's OpenCV loop on the same maps (equal counts); CPU-made maps",
            "evaluators": results, "counts_equal": counts_equal, "max_map_difference_to_cpu": difference,
            "speedup_over_opencv": results["component_tree"]["images_per_s"] / results["opencv"]["images_per_s"],
            "ok": counts_equal and difference <= MAP_DIFFERENCE_BOUND}


def dali_decode(settings: Settings, shared: dict) -> dict:
    """images/s of DALI's mixed (nvJPEG) decoder + resize to 224² on generated JPEGs."""
    from fastwsol.data.dali_loader import dali_available

    if not dali_available():
        raise RowSkipped("DALI not installed")
    if not settings.on_gpu:
        raise RowSkipped("no GPU (--dry-run)")
    from nvidia.dali import fn, pipeline_def, types
    from PIL import Image

    count, batch = (256, 64) if settings.quick else (1024, 64)
    with tempfile.TemporaryDirectory() as folder:
        rng = np.random.default_rng(0)
        files = []
        for index in range(count):
            path = os.path.join(folder, f"{index}.jpg")
            Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(path, quality=90)
            files.append(path)

        @pipeline_def(batch_size=batch, num_threads=4, device_id=torch.cuda.current_device(), prefetch_queue_depth=2)
        def pipeline():
            encoded, _ = fn.readers.file(files=files, labels=list(range(count)), name="Reader")
            images = fn.decoders.image(encoded, device="mixed", output_type=types.RGB)
            return fn.resize(images, size=[224, 224], antialias=True)

        pipe = pipeline()
        pipe.build()
        steps = count // batch
        for _ in range(steps):  # warm-up epoch
            settings.check_time("in DALI's warm-up")
            pipe.run()
        started = time.perf_counter()
        for _ in range(2 * steps):
            settings.check_time("in DALI's timed epochs")
            pipe.run()
        seconds = time.perf_counter() - started
    return {"images": 2 * steps * batch, "images_per_s": 2 * steps * batch / seconds,
            "jpeg": "500×375 random pixels, quality 90", "compared_with": "-", "ok": True}
