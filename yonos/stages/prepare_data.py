"""prepare_data: the training images and the held-out evaluation crops of the active profile.

embedded/smoke: natural photographs bundled inside scikit-image, split by image (never by crop).
Evaluation crops are the most textured non-overlapping crops of each held-out image: flat crops
flatter bicubic and hide differences between methods. LR images come from `degradation`.
paper (data.source: folder): HR images from data.train_dir / data.val_dir (e.g. DIV2K, fetched with
`yonos download`). The training images are not copied: train/index.json lists them with a digest of
their content, and the training stages stream them from their folder (yonos.stages._common.load_folder).
Validation images are read one at a time. Under DVC the stage re-runs when a folder's content
changes (its dependency runs/<profile>/scan_data/train.json, written by the scan_data stage).
Writes runs/<profile>/prepare_data/{train/, eval/{hr,lr,lr_x2}/, manifest.json}.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from yonos.config import run_dir
from yonos.data.degradations import degrade
from yonos.errors import UserError
from yonos.io import list_images, pil_to_array, read_image, save_image, write_json
from yonos.stages._common import INDEX, stage_main
from yonos.train import example_seed

NAME = "prepare_data"


def skimage_images(names: list[str]) -> dict[str, torch.Tensor]:
    """Images shipped inside scikit-image's package folder (no download), as RGB tensors."""
    import skimage.data

    folder = Path(skimage.data.__file__).parent
    out = {}
    for name in names:
        hits = [p for p in folder.glob(f"{name}.*") if p.suffix in (".png", ".jpg")]
        if not hits:
            raise UserError(f"{folder}: scikit-image ships no image named {name!r}; fix data.*_images in params.yaml")
        with Image.open(hits[0]) as im:
            out[name] = torch.from_numpy(pil_to_array(im)).permute(2, 0, 1).contiguous()
    return out


def folder_images(folder: str) -> dict[str, Path]:
    """{name: file} of a folder of images, without decoding them."""
    files = list_images(folder)
    names = [p.stem for p in files]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise UserError(f"{folder}: several files named {dup[0]}.*; keep one image per name")
    return dict(zip(names, files))


def write_index(folder: str, files: dict[str, Path], out: Path) -> None:
    """train/index.json: the images of a user's folder, by name, and a digest of their content."""
    from yonos.stages.scan_data import folder_digest

    write_json(out / INDEX, {"dir": folder, "files": [files[n].name for n in sorted(files)],
                             "sha256": folder_digest(Path(os.path.expandvars(folder)))["sha256"]})


def texture(crop: torch.Tensor) -> float:
    """Mean gradient magnitude of luminance: high on fur, foliage, gravel; low on sky and walls."""
    y = (0.299 * crop[0] + 0.587 * crop[1] + 0.114 * crop[2])
    return float((y[1:, :-1] - y[:-1, :-1]).abs().mean() + (y[:-1, 1:] - y[:-1, :-1]).abs().mean())


def textured_crops(img: torch.Tensor, size: int, k: int) -> list[tuple[int, int]]:
    """Top-k crops by texture on a non-overlapping grid (deterministic: ties broken by position)."""
    h, w = img.shape[-2:]
    cells = [(y, x) for y in range(0, h - size + 1, size) for x in range(0, w - size + 1, size)]
    scored = sorted(cells, key=lambda yx: (-texture(img[:, yx[0]: yx[0] + size, yx[1]: yx[1] + size]), yx))
    return sorted(scored[:k])


def run(cfg: dict) -> dict:
    dcfg = cfg["data"]
    out = run_dir(cfg, NAME)
    if dcfg["source"] == "skimage":
        train = skimage_images(dcfg["train_images"])
        val = skimage_images(dcfg["val_images"])
    elif dcfg["source"] == "folder":
        train_dir = os.path.expandvars(dcfg["train_dir"])
        train, val = folder_images(train_dir), folder_images(os.path.expandvars(dcfg["val_dir"]))
    else:
        raise UserError(f"params.yaml: data.source {dcfg['source']!r} is not one of skimage, folder")
    if set(train) & set(val):
        raise UserError(f"params.yaml: images in both train and val: {sorted(set(train) & set(val))}")

    if dcfg["source"] == "folder":
        write_index(dcfg["train_dir"], train, out / "train")
    else:
        for name, img in tqdm(train.items(), desc="train images", mininterval=2.0):
            save_image(img, out / "train" / f"{name}.png")

    size, scale = dcfg["eval_hr_size"], dcfg["eval_scale"]
    manifest = []
    for name, img in tqdm(val.items(), desc="eval crops", mininterval=2.0):
        img = read_image(img) if isinstance(img, Path) else img  # a folder's image: one in memory at a time
        for y, x in textured_crops(img, size, dcfg["eval_crops_per_image"]):
            crop_id = f"{name}_y{y:04d}_x{x:04d}"
            hr = img[:, y: y + size, x: x + size]
            seed = example_seed(cfg["seed"], "eval", len(manifest))
            lrs = degrade(hr[None], [scale, scale // 2], [seed % 2**31], cfg["degradation"])
            save_image(hr, out / "eval" / "hr" / f"{crop_id}.png")
            save_image(lrs[scale][0], out / "eval" / "lr" / f"{crop_id}.png")
            save_image(lrs[scale // 2][0], out / "eval" / f"lr_x{scale // 2}" / f"{crop_id}.png")
            manifest.append({"id": crop_id, "image": name, "y": y, "x": x, "size": size,
                             "degradation_seed": seed % 2**31, "texture": round(texture(hr), 5)})
    if not manifest:
        raise UserError(f"params.yaml: no {size}px evaluation crop fits in {list(val)}; lower data.eval_hr_size")
    write_json(out / "manifest.json", {
        "train_images": sorted(train), "val_images": sorted(val), "eval_scale": scale,
        "degradation": cfg["degradation"], "crops": manifest,
    })
    return {"timing": {"train_images": len(train), "eval_crops": len(manifest)}}


def main() -> int:
    return stage_main(NAME, run)


if __name__ == "__main__":
    raise SystemExit(main())
