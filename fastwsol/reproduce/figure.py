"""The reproduction's figure: CAM, F̂ and S of vanilla CAM and the method side by side on test
images (the paper's Fig. 6)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fastwsol.method import MAP_KINDS


@torch.no_grad()
def comparison_figure(run_dirs: dict[str, Path], path: Path, num_images: int = 6) -> Path:
    """Rows: test images; columns: the image with its GT box, then CAM, F̂, S of each model."""
    import cv2

    from fastwsol.checkpoint import load_trained
    from fastwsol.data import loader_from_config, normalize_on_device
    from fastwsol.evaluate import gt_boxes_224, scoremaps_for
    from fastwsol.evaluation.boxes import SCOREMAP_SIZE
    from fastwsol.visualize import GT_COLOUR, contact_sheet, draw_boxes, label, localization_picture, write_png

    models = {name: load_trained(d / "best.pt") for name, d in run_dirs.items()}
    config = next(iter(models.values())).config
    # one batch of the whole (small) split, read on the CPU where the models are
    loader = loader_from_config(config, "test", batch_size=256, device="cpu", loader="torch", num_threads=0)
    # evenly spread over the split, so several classes show
    picks = np.linspace(0, loader.num_samples - 1, num_images).astype(int)
    batches = list(loader)  # the whole split (a few hundred small images): picks span every batch
    images, labels, indices = (torch.cat([b[key] for b in batches])[picks] for key in ("images", "labels", "indices"))
    indices = indices.numpy()
    gt = gt_boxes_224(loader.metadata, indices)
    tiles = []
    for i in range(num_images):
        image = cv2.resize(
            images[i].permute(1, 2, 0).numpy(), (SCOREMAP_SIZE, SCOREMAP_SIZE), interpolation=cv2.INTER_LINEAR
        )
        tiles.append(label(draw_boxes(image, gt[i], GT_COLOUR), "image + GT"))
        for name, trained in models.items():
            out = trained.model(normalize_on_device(images[i : i + 1]))
            for kind in MAP_KINDS:
                scoremap = scoremaps_for(out["feature"], trained.model.fc.weight, labels[i : i + 1], kind)[0].numpy()
                symbol = {"cam": "CAM", "norm": "norm F^", "sim": "sim S"}[kind]
                tiles.append(label(localization_picture(image, scoremap, gt[i]), f"{name}: {symbol}"))
    columns = 1 + len(models) * len(MAP_KINDS)
    return write_png(path, contact_sheet(tiles, columns=columns, tile=150))
