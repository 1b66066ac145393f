"""The reproduction's figure: CAM, F̂ and S of vanilla CAM and the method side by side on test
images (the paper's Fig. 6), titled so that it explains itself: a caption, each column's model and
map, each row's class, and the maps' colour scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fastwsol.method import MAP_KINDS

# each map's column title (F̂ with a combining circumflex: fastwsol.visualize draws it)
MAP_TITLES = {"cam": "CAM", "norm": "F\u0302 (norm)", "sim": "S (sim)"}
MAP_MEANINGS = "CAM: class activation map; F\u0302: feature norm map; S: cosine similarity to the class weight"


@torch.no_grad()
def comparison_figure(run_dirs: dict[str, Path], path: Path, *, title: str, seed: int, num_images: int = 6) -> Path:
    """Rows: test images (class name and label at the left); columns: the image with its GT box,
    then CAM, F̂, S of each model (``run_dirs``: column group title → run folder). ``title``
    (what is compared) and ``seed`` (the runs' training seed) open the caption. The maps are of
    the true class, each scaled to [0, 1]."""
    import cv2

    from fastwsol.checkpoint import load_trained
    from fastwsol.data import loader_from_config, normalize_on_device
    from fastwsol.evaluate import gt_boxes_224, scoremaps_for
    from fastwsol.evaluation.boxes import SCOREMAP_SIZE
    from fastwsol.visualize import GT_COLOUR, colour_bar, draw_boxes, localization_picture, titled_grid, write_png

    models = {name: load_trained(d / "best.pt") for name, d in run_dirs.items()}
    first = next(iter(models.values()))
    config = first.config
    # one batch of the whole (small) split, read on the CPU where the models are
    loader = loader_from_config(config, "test", batch_size=256, device="cpu", loader="torch", num_threads=0)
    # evenly spread over the split, so several classes show
    picks = np.linspace(0, loader.num_samples - 1, num_images).astype(int)
    batches = list(loader)  # the whole split (a few hundred small images): picks span every batch
    images, labels, indices = (torch.cat([b[key] for b in batches])[picks] for key in ("images", "labels", "indices"))
    indices = indices.numpy()
    gt = gt_boxes_224(loader.metadata, indices)
    rows, row_titles = [], []
    for i in range(num_images):
        image = cv2.resize(
            images[i].permute(1, 2, 0).numpy(), (SCOREMAP_SIZE, SCOREMAP_SIZE), interpolation=cv2.INTER_LINEAR
        )
        row = [draw_boxes(image, gt[i], GT_COLOUR)]
        for trained in models.values():
            out = trained.model(normalize_on_device(images[i : i + 1]))
            for kind in MAP_KINDS:
                scoremap = scoremaps_for(out["feature"], trained.model.fc.weight, labels[i : i + 1], kind)[0].numpy()
                row.append(localization_picture(image, scoremap, gt[i]))
        rows.append(row)
        label = int(labels[i])
        name = first.class_names.get(label)
        row_titles.append([f"test image {i + 1}", *([name] if name else []), f"label {label}"])
    caption = [
        f"{title} (training seed {seed}): maps of the true class on {num_images} test images",
        MAP_MEANINGS,
        "each map scaled to [0, 1] and blended half and half over the image (colour scale at the bottom)",
    ]
    figure = titled_grid(
        rows,
        column_titles=["image + GT box", *(MAP_TITLES[kind] for _ in models for kind in MAP_KINDS)],
        row_titles=row_titles,
        caption=caption,
        groups=[(name, len(MAP_KINDS)) for name in models],
        footer=lambda width: colour_bar(width, 0.55),
    )
    return write_png(path, figure)
