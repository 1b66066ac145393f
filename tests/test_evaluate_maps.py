"""`fastwsol evaluate-maps`: score maps saved in wsolevaluation's layout scored as the evaluators
score them directly (and, for boxes, as the literal wsolevaluation loop does), every bad map
named before or while scoring, exit 1 with the message and no traceback."""

import json

import numpy as np
import pytest

import fastwsol.evaluate_maps as evaluate_maps
from fastwsol.cli import main
from fastwsol.cli.evaluate_maps import DEFAULT_CAM_CURVE_INTERVAL as CLI_DEFAULT
from fastwsol.data.metadata import BUILTIN_METADATA_ROOT, read_split_metadata
from fastwsol.evaluate import gt_boxes_224
from fastwsol.evaluate_maps import DEFAULT_CAM_CURVE_INTERVAL, ScoreMapError, evaluate_scoremaps, scoremap_path
from fastwsol.evaluation import IGNORE, MASK_BACKENDS, BoxEvaluator, MapDiagnostics, MaskEvaluator, load_gt_masks

# image id, (width, height), boxes in original pixels
IMAGES = (
    ("001.Red/red_1.jpg", (300, 200), [(30, 20, 200, 180)]),
    ("001.Red/red_2.jpg", (224, 224), [(0, 0, 100, 120), (150, 140, 223, 223)]),
    ("002.Blue/blue_1.jpg", (500, 400), [(100, 50, 450, 390)]),
    ("002.Blue/blue_2.jpg", (120, 180), [(10, 30, 90, 170)]),
)
STEP = 0.01  # a coarser CAM threshold step than the default keeps the OpenCV loop quick


def write_box_metadata(root, images=IMAGES, dataset="CUB", split="test"):
    folder = root / dataset / split
    folder.mkdir(parents=True)
    (folder / "image_ids.txt").write_text("".join(f"{i}\n" for i, _, _ in images))
    (folder / "class_labels.txt").write_text("".join(f"{i},{n // 2}\n" for n, (i, _, _) in enumerate(images)))
    (folder / "image_sizes.txt").write_text("".join(f"{i},{w},{h}\n" for i, (w, h), _ in images))
    (folder / "localization.txt").write_text(
        "".join(f"{i},{x0},{y0},{x1},{y1}\n" for i, _, boxes in images for x0, y0, x1, y1 in boxes)
    )
    return root


def smooth_maps(count, seed=0, size=224):
    """Random smooth maps in [0, 1]: a few Gaussian bumps, min-max normalised."""
    rng = np.random.default_rng(seed)
    grid = np.arange(size)
    maps = np.empty((count, size, size))
    for n in range(count):
        m = rng.normal(0, 0.02, (size, size))
        for _ in range(rng.integers(1, 4)):
            cx, cy = rng.uniform(0, size, 2)
            sx, sy = rng.uniform(10, 70, 2)
            m += rng.uniform(0.3, 1) * np.exp(-0.5 * (((grid[None] - cx) / sx) ** 2 + ((grid[:, None] - cy) / sy) ** 2))
        maps[n] = (m - m.min()) / (m.max() - m.min())
    return maps


def save_maps(root, image_ids, maps, dtypes=(np.float64,)):
    for n, (image_id, scoremap) in enumerate(zip(image_ids, maps)):
        path = scoremap_path(root, image_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, scoremap.astype(dtypes[n % len(dtypes)]))


@pytest.fixture
def box_maps(tmp_path):
    """(metadata root, score map root, the maps as float64) for IMAGES."""
    metadata = write_box_metadata(tmp_path / "metadata")
    maps = smooth_maps(len(IMAGES))
    save_maps(tmp_path / "maps", [i for i, _, _ in IMAGES], maps)
    return metadata, tmp_path / "maps", maps


def cli(capsys, *argv):
    code = main(["evaluate-maps", *map(str, argv)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def direct_metrics(maps, metadata, multi_contour=True, backend="component_tree"):
    """The same maps scored by the evaluators themselves."""
    boxes = gt_boxes_224(metadata, np.arange(len(metadata)))
    evaluators = {}
    for name, multi in (("multi", multi_contour), ("single", False)):
        evaluators[name] = BoxEvaluator((30, 50, 70), STEP, multi_contour=multi, backend=backend)
        evaluators[name].accumulate(maps, boxes)
    diagnostics = MapDiagnostics()
    diagnostics.accumulate(maps, boxes)
    return evaluators["multi"].compute(), evaluators["single"].compute(), diagnostics.compute()


def test_the_cli_default_threshold_step_is_the_librarys():
    assert CLI_DEFAULT == DEFAULT_CAM_CURVE_INTERVAL == 0.001


def test_box_metrics_equal_the_evaluators_and_the_opencv_loop(box_maps):
    metadata_root, root, maps = box_maps
    result = evaluate_scoremaps(root, "CUB", "test", metadata_root=metadata_root, cam_curve_interval=STEP,
                                progress=False, batch_size=3)  # two batches, the second partial
    multi, single, diagnostics = direct_metrics(maps, read_split_metadata(metadata_root, "CUB", "test"))
    for key in ("box_acc", "max_box_acc_v2", "gt_known_loc", "best_threshold", "num_images"):
        assert result[key] == multi[key], key
    for key in ("box_acc", "max_box_acc_v2", "gt_known_loc"):
        assert result[f"{key}_single"] == single[key], key
    assert {k: result[k] for k in diagnostics} == diagnostics
    assert "top1_loc" not in result and "top5_loc" not in result  # no classifier
    assert result["localization"] == "boxes" and result["num_images"] == len(IMAGES)
    opencv = evaluate_scoremaps(root, "CUB", "test", metadata_root=metadata_root, cam_curve_interval=STEP,
                                progress=False, box_backend="opencv")
    assert opencv == result
    assert 0 < result["max_box_acc_v2"] < 100  # the maps neither all hit nor all miss: the check can fail


def test_float16_and_float32_maps_score_as_their_exact_float64_values(box_maps, tmp_path):
    metadata_root, _, _ = box_maps
    maps = smooth_maps(len(IMAGES), seed=1)
    save_maps(tmp_path / "mixed", [i for i, _, _ in IMAGES], maps, dtypes=(np.float16, np.float32))
    result = evaluate_scoremaps(tmp_path / "mixed", "CUB", "test", metadata_root=metadata_root,
                                cam_curve_interval=STEP, progress=False)
    exact = np.stack([m.astype(t).astype(np.float64) for m, t in zip(maps, (np.float16, np.float32) * 2)])
    multi, _, _ = direct_metrics(exact, read_split_metadata(metadata_root, "CUB", "test"), backend="opencv")
    assert result["box_acc"] == multi["box_acc"]


def test_cli_writes_json_and_markdown(box_maps, tmp_path, capsys):
    metadata_root, root, _ = box_maps
    code, out, err = cli(capsys, "--scoremap-root", root, "--dataset", "CUB", "--metadata-root", metadata_root,
                         "--cam-curve-interval", STEP, "--out", tmp_path / "out")
    assert code == 0, err
    saved = json.loads((tmp_path / "out" / "evaluate_maps_CUB_test.json").read_text())
    markdown = (tmp_path / "out" / "evaluate_maps_CUB_test.md").read_text()
    assert "| MaxBoxAccV2 |" in out and f"| MaxBoxAccV2 | {saved['max_box_acc_v2']:.2f} |" in markdown
    assert "| BoxAcc at IoU 70 % |" in markdown and "single contour" in markdown
    assert saved["cam_curve_interval"] == STEP and saved["multi_contour"] is True


def test_json_prints_the_results_to_stdout(box_maps, tmp_path, capsys):
    metadata_root, root, _ = box_maps
    code, out, err = cli(capsys, "--scoremap-root", root, "--dataset", "CUB", "--metadata-root", metadata_root,
                         "--cam-curve-interval", STEP, "--out", tmp_path / "out", "--json", "--no-multi-contour")
    assert code == 0, err
    printed = json.loads(out)
    assert printed == json.loads((tmp_path / "out" / "evaluate_maps_CUB_test.json").read_text())
    assert printed["multi_contour"] is False and printed["max_box_acc_v2"] == printed["max_box_acc_v2_single"]
    assert "wrote" in err


def test_a_subset_of_the_builtin_metadata(tmp_path, capsys):
    """The user's own metadata folder, here four images of the builtin CUB test split; a map folder
    of more images than the metadata lists is scored with a warning naming the others."""
    builtin = BUILTIN_METADATA_ROOT / "CUB" / "test"
    subset = tmp_path / "metadata" / "CUB" / "test"
    subset.mkdir(parents=True)
    ids = (builtin / "image_ids.txt").read_text().splitlines()[::1500][:4]
    for name in ("image_ids.txt", "class_labels.txt", "image_sizes.txt", "localization.txt"):
        lines = (builtin / name).read_text().splitlines()
        (subset / name).write_text("".join(f"{line}\n" for line in lines if line.split(",")[0] in ids))
    maps = smooth_maps(5, seed=2)
    save_maps(tmp_path / "maps", ids, maps)
    np.save(tmp_path / "maps" / "not_in_the_metadata.jpg.npy", maps[4])
    code, out, err = cli(capsys, "--scoremap-root", tmp_path / "maps", "--dataset", "CUB", "--metadata-root",
                         tmp_path / "metadata", "--cam-curve-interval", STEP, "--out", tmp_path, "--json")
    assert code == 0, err
    assert "warning: 1 .npy file(s)" in err and "not_in_the_metadata.jpg.npy" in err
    result = json.loads(out)
    multi, _, _ = direct_metrics(maps[:4], read_split_metadata(tmp_path / "metadata", "CUB", "test"))
    assert result["num_images"] == 4 and result["box_acc"] == {str(k): v for k, v in multi["box_acc"].items()}
    assert "not_in_the_metadata.jpg.npy" in result["warnings"][0]


def forbid_scoring(monkeypatch):
    monkeypatch.setattr(evaluate_maps, "_box_metrics", lambda *a, **k: pytest.fail("scored before the check"))


def bad_map_cases():
    good = smooth_maps(1)[0]
    return {
        "shape": (lambda p: np.save(p, good[:100, :100]), "shape (100, 100)"),
        "3-D": (lambda p: np.save(p, good[None]), "must be 2-D (H, W), this one has shape (1, 224, 224)"),
        "dtype": (lambda p: np.save(p, (good * 255).astype(np.uint8)), "dtype uint8"),
        "not npy": (lambda p: p.write_bytes(b"this is not an array"), "not a readable .npy file"),
        "truncated": (lambda p: p.write_bytes(p.read_bytes()[:200]), "not a readable .npy file"),
    }


@pytest.mark.parametrize("case", list(bad_map_cases()))
def test_a_bad_map_header_is_named_before_scoring(box_maps, case, tmp_path, capsys, monkeypatch):
    metadata_root, root, _ = box_maps
    write, expected = bad_map_cases()[case]
    bad = scoremap_path(root, IMAGES[2][0])
    write(bad)
    forbid_scoring(monkeypatch)
    code, out, err = cli(capsys, "--scoremap-root", root, "--dataset", "CUB", "--metadata-root", metadata_root,
                         "--out", tmp_path / "out")
    assert code == 1
    assert f"error: 1 of 4 score maps of CUB/test are not valid: {bad}: " in err and expected in err
    assert not (tmp_path / "out" / "evaluate_maps_CUB_test.json").exists()


@pytest.mark.parametrize("value, expected", [(np.nan, "1 NaN value(s)"), (1.5, "values in [0, 1.5]"),
                                             (-0.25, "values in [-0.25, 1]")])
def test_a_bad_value_is_named_and_every_bad_map_reported(box_maps, value, expected, tmp_path, capsys):
    metadata_root, root, maps = box_maps
    bad = [scoremap_path(root, IMAGES[n][0]) for n in (0, 3)]
    for path, scoremap in zip(bad, maps[[0, 3]]):
        scoremap[5, 7] = value
        np.save(path, scoremap)
    code, out, err = cli(capsys, "--scoremap-root", root, "--dataset", "CUB", "--metadata-root", metadata_root,
                         "--cam-curve-interval", STEP, "--out", tmp_path / "out")
    assert code == 1 and "error: 2 of 4 score maps are not valid" in err
    assert all(f"{path}: {expected}" in err for path in bad), err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_missing_maps_are_counted_and_named_before_scoring(box_maps, tmp_path, capsys, monkeypatch):
    metadata_root, root, _ = box_maps
    missing = [scoremap_path(root, IMAGES[n][0]) for n in (1, 2)]
    for path in missing:
        path.unlink()
    forbid_scoring(monkeypatch)
    code, out, err = cli(capsys, "--scoremap-root", root, "--dataset", "CUB", "--metadata-root", metadata_root)
    assert code == 1 and f"error: 2 of 4 score maps of CUB/test are missing under {root}" in err
    assert f"{missing[0]}, {missing[1]}" in err


def test_maps_named_without_the_image_extension_get_a_hint(box_maps, tmp_path, capsys, monkeypatch):
    metadata_root, _, maps = box_maps
    root = tmp_path / "stems"
    save_maps(root, [i.removesuffix(".jpg") for i, _, _ in IMAGES], maps)
    forbid_scoring(monkeypatch)
    code, out, err = cli(capsys, "--scoremap-root", root, "--dataset", "CUB", "--metadata-root", metadata_root)
    assert code == 1 and "4 of 4 score maps of CUB/test are missing" in err
    assert "4 .npy file(s) there match no image id, e.g. 001.Red/red_1.npy" in err
    assert f"must be {root / '001.Red/red_1.jpg.npy'}" in err


def test_a_scoremap_root_that_is_not_a_folder(box_maps, tmp_path, capsys):
    metadata_root, _, _ = box_maps
    (tmp_path / "afile").write_text("x")
    code, out, err = cli(capsys, "--scoremap-root", tmp_path / "afile", "--dataset", "CUB", "--metadata-root",
                         metadata_root)
    assert code == 1 and f"--scoremap-root {tmp_path / 'afile'} is not a folder" in err


def test_metadata_that_is_not_there_is_named(tmp_path, capsys):
    code, out, err = cli(capsys, "--scoremap-root", tmp_path, "--dataset", "CUB", "--metadata-root", tmp_path / "none")
    assert code == 1 and f"{tmp_path / 'none' / 'CUB' / 'test'}" in err


def test_bad_options_exit_2(capsys, tmp_path):
    for argv, expected in ((["--iou-thresholds", "120"], "'120': must be a percentage in [0, 100]"),
                           (["--cam-curve-interval", "0"], "'0': must lie in (0, 1)")):
        with pytest.raises(SystemExit) as info:
            main(["evaluate-maps", "--scoremap-root", str(tmp_path), "--dataset", "CUB", *argv])
        assert info.value.code == 2 and expected in capsys.readouterr().err


def test_scan_accepts_every_float_width(tmp_path):
    for dtype in (np.float16, np.float32, np.float64, ">f4"):
        np.save(tmp_path / "m.npy", np.zeros((224, 224), dtype))
        assert evaluate_maps.read_header(tmp_path / "m.npy") is None
        assert evaluate_maps.read_scoremap(tmp_path / "m.npy").dtype == np.float64
    with pytest.raises(ScoreMapError, match="missing"):
        evaluate_maps.read_scoremap(tmp_path / "none.npy")


# image id, instance mask PNGs, ignore PNG (or None): wsolevaluation's mask localization.txt
MASK_IMAGES = (
    ("test/01abc/aaa.jpg", ("test/01abc/aaa_m1.png", "test/01abc/aaa_m2.png"), "test/01abc/aaa_ignore.png"),
    ("test/01abc/bbb.jpg", ("test/01abc/bbb_m1.png",), None),
    ("test/02xyz/ccc.jpg", ("test/02xyz/ccc_m1.png",), "test/02xyz/ccc_ignore.png"),
)


def write_mask_metadata(root, images=MASK_IMAGES):
    folder = root / "OpenImages" / "test"
    folder.mkdir(parents=True)
    (folder / "image_ids.txt").write_text("".join(f"{i}\n" for i, _, _ in images))
    (folder / "class_labels.txt").write_text("".join(f"{i},{n}\n" for n, (i, _, _) in enumerate(images)))
    (folder / "image_sizes.txt").write_text("")  # empty, as in the OpenImages release
    (folder / "localization.txt").write_text("".join(
        f"{i},{m},{(ignore or '') if k == 0 else ''}\n" for i, masks, ignore in images for k, m in enumerate(masks)
    ))
    return root


def write_mask_pngs(mask_root, images=MASK_IMAGES, seed=0):
    """Instance and ignore PNGs (0 or 255) of assorted sizes: ellipses and a rectangle."""
    import cv2

    rng = np.random.default_rng(seed)
    for _, masks, ignore in images:
        height, width = rng.integers(150, 400, 2)
        for name in (*masks, *([ignore] if ignore else [])):
            png = np.zeros((height, width), np.uint8)
            cx, cy = int(rng.integers(20, width - 20)), int(rng.integers(20, height - 20))
            if name.endswith("_ignore.png"):
                cv2.rectangle(png, (cx - 40, cy - 30), (cx + 40, cy + 30), 255, -1)
            else:
                cv2.ellipse(png, (cx, cy), (int(rng.integers(10, 80)), int(rng.integers(10, 80))), 0, 0, 360, 255, -1)
            path = mask_root / "OpenImages" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(path), png)


@pytest.fixture
def mask_maps(tmp_path):
    """(metadata root, mask root, score map root, the maps) for MASK_IMAGES."""
    metadata = write_mask_metadata(tmp_path / "metadata")
    write_mask_pngs(tmp_path / "data")
    maps = smooth_maps(len(MASK_IMAGES), seed=3)
    save_maps(tmp_path / "maps", [i for i, _, _ in MASK_IMAGES], maps, dtypes=(np.float64, np.float32))
    return metadata, tmp_path / "data", tmp_path / "maps", maps


@pytest.mark.parametrize("backend", MASK_BACKENDS)
def test_mask_metrics_equal_the_mask_evaluator(mask_maps, backend):
    metadata_root, mask_root, root, maps = mask_maps
    result = evaluate_scoremaps(root, "OpenImages", "test", metadata_root=metadata_root, mask_root=mask_root,
                                progress=False, batch_size=2, mask_backend=backend)
    metadata = read_split_metadata(metadata_root, "OpenImages", "test")
    gt = load_gt_masks(mask_root / "OpenImages", metadata.masks)
    assert (gt == 1).any() and (gt == 0).any() and (gt == IGNORE).any()  # all three kinds of pixel
    evaluator = MaskEvaluator(DEFAULT_CAM_CURVE_INTERVAL, backend="reference")
    for n, (scoremap, mask) in enumerate(zip(maps, gt)):  # one at a time, as saved (float64, float32)
        scoremap = scoremap.astype((np.float64, np.float32)[n % 2])
        evaluator.accumulate(scoremap[None], mask[None])
    expected = evaluator.compute()
    assert {k: result[k] for k in expected} == expected
    assert result["localization"] == "masks" and "max_box_acc_v2" not in result and "multi_contour" not in result


def test_cli_masks_json_and_markdown(mask_maps, tmp_path, capsys):
    metadata_root, mask_root, root, _ = mask_maps
    code, out, err = cli(capsys, "--scoremap-root", root, "--dataset", "OpenImages", "--metadata-root", metadata_root,
                         "--mask-root", mask_root, "--out", tmp_path / "out", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert 0 < result["pxap"] < 100 and 0 < result["piou"] < 100 and result["mask_root"] == str(mask_root)
    markdown = (tmp_path / "out" / "evaluate_maps_OpenImages_test.md").read_text()
    assert f"| PxAP | {result['pxap']:.2f} |" in markdown and "CAM threshold (PIoU-optimal)" in markdown


def test_masks_need_a_mask_root(mask_maps, capsys):
    metadata_root, _, root, _ = mask_maps
    code, out, err = cli(capsys, "--scoremap-root", root, "--dataset", "OpenImages", "--metadata-root", metadata_root)
    assert code == 1 and "localization of OpenImages/test" in err and "is masks: give --mask-root DIR" in err


def test_missing_mask_pngs_are_named_before_scoring(mask_maps, capsys, monkeypatch):
    metadata_root, mask_root, root, _ = mask_maps
    missing = mask_root / "OpenImages" / MASK_IMAGES[2][2]
    missing.unlink()
    forbid_scoring(monkeypatch)
    monkeypatch.setattr(evaluate_maps, "scan_scoremaps", lambda *a, **k: pytest.fail("read maps before the masks"))
    code, out, err = cli(capsys, "--scoremap-root", root, "--dataset", "OpenImages", "--metadata-root", metadata_root,
                         "--mask-root", mask_root)
    assert code == 1 and f"1 of the 6 mask PNGs of OpenImages/test are missing under {mask_root / 'OpenImages'}" in err
    assert str(missing) in err


def test_an_unreadable_mask_png_is_named(mask_maps, capsys):
    metadata_root, mask_root, root, _ = mask_maps
    bad = mask_root / "OpenImages" / MASK_IMAGES[1][1][0]
    bad.write_bytes(b"not a png")
    code, out, err = cli(capsys, "--scoremap-root", root, "--dataset", "OpenImages", "--metadata-root", metadata_root,
                         "--mask-root", mask_root)
    assert code == 1 and str(bad) in err


def test_a_mask_root_for_boxes_is_a_warning(box_maps, tmp_path, capsys):
    metadata_root, root, _ = box_maps
    code, out, err = cli(capsys, "--scoremap-root", root, "--dataset", "CUB", "--metadata-root", metadata_root,
                         "--cam-curve-interval", STEP, "--mask-root", tmp_path, "--out", tmp_path / "out")
    assert code == 0 and f"warning: --mask-root {tmp_path} is not used: the localization of CUB/test is boxes" in err
