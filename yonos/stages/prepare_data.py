"""prepare_data: the training images and the held-out evaluation crops of the active profile.

embedded (data.source: dataset): registry entries (yonos.data.sources), the classic "291" training set
(T91 + BSD200) for training and held-out crops of B100 images for the step sweep; each is read from
data/<name> or the mirror ($YONOS_DATA_MIRROR, datasets.mirror) and installed with `yonos download`'s
code (pinned per-file URLs) when neither has it. The training images are indexed, not copied.
smoke (data.source: skimage): photographs bundled inside scikit-image (no download), split by image.
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
from collections.abc import Sequence
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


def dataset_folder(name: str, cfg: dict) -> Path:
    """Where registry entry `name` is: data/<name> or the mirror; installed (pinned) when neither has it."""
    from yonos.data.download import install
    from yonos.data.eval_sets import data_settings
    from yonos.data.sources import locate

    root, mirror = data_settings(cfg)
    try:
        return locate(name, root, mirror)
    except UserError:
        return install(name, root, source_dir=mirror)  # offline and unmirrored: one line naming the fix


def dataset_images(name: str, cfg: dict) -> tuple[Path, dict[str, Path]]:
    """(folder, {name: file}) of a registry entry's images, over all its sub-folders (t91/, bsd200/)."""
    from yonos.data.sources import dataset_info, subfolder

    folder, info = dataset_folder(name, cfg), dataset_info(name)
    files: dict[str, Path] = {}
    for sub in info.folders or ("",):
        for key, path in folder_images(subfolder(folder, info, sub) if sub else folder).items():
            files[f"{sub}/{key}" if len(info.folders) > 1 else key] = path
    return folder, files


def write_index(folder: str | Path, files: dict[str, Path], out: Path) -> None:
    """train/index.json: the images of a folder, by path relative to it, and a digest of their content."""
    from yonos.stages.scan_data import folder_digest

    root = Path(os.path.expandvars(str(folder)))
    names = [files[n].relative_to(root).as_posix() for n in sorted(files)]
    write_json(out / INDEX, {"dir": str(folder), "files": names,
                             "sha256": folder_digest(root)["sha256"]})


def texture(crop: torch.Tensor) -> float:
    """Mean gradient magnitude of luminance: high on fur, foliage, gravel; low on sky and walls."""
    y = (0.299 * crop[0] + 0.587 * crop[1] + 0.114 * crop[2])
    return float((y[1:, :-1] - y[:-1, :-1]).abs().mean() + (y[:-1, 1:] - y[:-1, :-1]).abs().mean())


def training_images(cfg: dict) -> tuple[Sequence[torch.Tensor], str]:
    """The profile's training images (streamed from disk unless bundled) and a digest of their content."""
    import hashlib

    from yonos.stages._common import StreamedImages
    from yonos.stages.scan_data import folder_digest

    dcfg = cfg["data"]
    if dcfg["source"] == "skimage":
        images = skimage_images(dcfg["train_images"])
        h = hashlib.sha256()
        for name in sorted(images):
            h.update(name.encode() + b"\0" + images[name].numpy().tobytes())
        return [images[n] for n in sorted(images)], h.hexdigest()
    if dcfg["source"] == "dataset":
        folder, files = dataset_images(dcfg["train_set"], cfg)
    elif dcfg["source"] == "folder":
        folder = Path(os.path.expandvars(dcfg["train_dir"]))
        files = folder_images(str(folder))
    else:
        raise UserError(f"params.yaml: data.source {dcfg['source']!r} is not one of skimage, folder, dataset")
    return StreamedImages([files[n] for n in sorted(files)]), folder_digest(folder)["sha256"]


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
        train_dir = dcfg["train_dir"]
        train, val = folder_images(os.path.expandvars(train_dir)), folder_images(os.path.expandvars(dcfg["val_dir"]))
    elif dcfg["source"] == "dataset":
        train_dir, train = dataset_images(dcfg["train_set"], cfg)
        _, val = dataset_images(dcfg["val_set"], cfg)
        val = {k: val[k] for k in sorted(val)[: dcfg["val_images"]]}  # the first N by name: a fixed, documented subset
    else:
        raise UserError(f"params.yaml: data.source {dcfg['source']!r} is not one of skimage, folder, dataset")
    if set(train) & set(val):
        raise UserError(f"params.yaml: images in both train and val: {sorted(set(train) & set(val))}")

    if dcfg["source"] in ("folder", "dataset"):
        write_index(train_dir, train, out / "train")
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
