"""Train rsfiqa-mobile, the default model shipped in the package, on CLIVE (../shared/data/clive-train).

    python examples/train_rsfiqa_mobile.py --output_dir outputs/rsfiqa-mobile [--ship]

Recipe (measured on a fixed 80/20 split of the 813 CLIVE training images, see the model card):
* RSFIQA with a MobileNetV2 backbone (TF-PTQ ImageNet weights, TF "same" padding, BN folded and frozen),
  superpixel regions (no SAM / MLLM offline), RSA over backbone stages 3 and 4, mean+std pooling;
* the stem .. stage 3 is frozen and its output is computed ONCE per image and per horizontal flip
  (``model.encode_prefix``) and cached on disk: epochs then cost only stages 4 + RSA + head;
* augmentation: horizontal flip and random 24x24-cell crops of the cached stride-16 map (~384 px of the
  500 px image) with the matching crop of the region label map; evaluation on the full image;
* AdamW, backbone lr 1e-4 / new layers 1e-3, cosine schedule with 5% warm-up, L1 + PLCC (+ rank) loss on
  z-scored MOS, best epoch by validation SRCC (Trainer: checkpoints every epoch, ``--resume`` continues);
* synthetic ranking (``--synthetic_weight``): CLIVE has almost no compression artefacts and few strong
  synthetic distortions, so each step also scores groups of one clean CBSD68 photo and its 5 levels of one
  KADID-style distortion (same crop) and adds a margin ranking loss that orders them by level. Only the
  ORDER is supervised (no invented MOS). Kodak24 is held out: the fraction of its groups ranked fully in
  order is reported (``synthetic_order_acc``).

Validation split: file names sorted, ``np.random.RandomState(0).permutation(n)``, the last 20% validate.
``--ship`` copies the final model, processor and model card into ``modeling_rsfiqa/default_model``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.util
import json
import math
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import Trainer, TrainingArguments, get_cosine_schedule_with_warmup

from modeling_rsfiqa.factory import create_model
from modeling_rsfiqa.image_io import load_image_rgb
from modeling_rsfiqa.losses import rank_loss
from modeling_rsfiqa.quality_metrics import compute_iqa_metrics

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
#: lever runs over 5 validation splits (examples/rsfiqa_mobile_levers.py), committed; the card's accuracy table
LEVERS_RESULTS = ROOT / "docs" / "rsfiqa_mobile_levers.jsonl"
# common capture/processing distortions; colour and brightness edits are left out (their "quality" is taste)
SYNTHETIC_DISTORTIONS = (
    "gaussian_blur",
    "motion_blur",
    "white_noise",
    "impulse_noise",
    "jpeg",
    "jpeg2000",
    "pixelate",
)
LEVELS = (0, 1, 2, 3, 4, 5)  # 0 = clean


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", default=str(SHARED / "data" / "clive-train"))
    p.add_argument("--weights", default=str(SHARED / "weights" / "mobilenetv2_100.tf2ptq_in1k.safetensors"))
    p.add_argument("--output_dir", default=str(ROOT / "outputs" / "rsfiqa-mobile"))
    p.add_argument("--cache_dir", default=None, help="prefix-feature cache (default: <output_dir>/cache)")
    p.add_argument("--epochs", type=float, default=6)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate of the new layers (RSA, head)")
    p.add_argument("--backbone_lr", type=float, default=1e-4)
    p.add_argument("--weight_decay", type=float, default=1e-4)
    p.add_argument(
        "--train_work_size",
        type=int,
        default=256,
        help="superpixels for the cached TRAINING label maps run on a copy this size (computed once, so "
        "finer than the shipped inference setting, the preset's superpixel_work_size)",
    )
    p.add_argument("--crop_cells", type=int, default=24, help="random crop of the stride-16 map (0 = none)")
    p.add_argument("--val_fraction", type=float, default=0.2)
    p.add_argument(
        "--split_seed",
        type=int,
        default=0,
        help="validation split: names sorted, np.random.RandomState(split_seed).permutation, last val_fraction",
    )
    p.add_argument(
        "--select_best",
        type=int,
        default=1,
        help="1: keep the epoch with the best validation SRCC (optimistic figures); 0: keep the last epoch",
    )
    p.add_argument(
        "--config_overrides",
        default="",
        help="preset fields to change, e.g. backbone_conv_head=true,head_hidden_size=128 (experiments)",
    )
    p.add_argument("--skip_pipeline_validation", action="store_true", help="experiments: no pipeline pass")
    p.add_argument(
        "--train_from_pixels",
        action="store_true",
        help="fine-tune the WHOLE backbone (no frozen prefix): images kept in memory, flip + crop in pixels, "
        "synthetic groups distorted on the fly (several times slower than the cached-prefix recipe)",
    )
    p.add_argument("--loss_weights", default="l1=1,plcc=1", help="CLIVE loss, e.g. l1=1,plcc=1,rank=1")
    p.add_argument(
        "--synthetic_dir",
        default=str(SHARED / "data" / "pristine"),
        help="clean photos: <dir>/cbsd68 trains the ranking, <dir>/kodak24 validates it",
    )
    p.add_argument(
        "--synthetic_sets",
        default="cbsd68",
        help="folders of --synthetic_dir whose photos train the ranking (comma-separated, e.g. cbsd68,sun-hays80)",
    )
    p.add_argument("--synthetic_distortions", default=",".join(SYNTHETIC_DISTORTIONS))
    p.add_argument("--synthetic_weight", type=float, default=0.5, help="weight of the ranking loss (0 = off)")
    p.add_argument("--synthetic_groups", type=int, default=2, help="groups (clean + 5 levels) per step")
    p.add_argument("--rank_margin", type=float, default=0.1, help="margin between levels, in z units")
    p.add_argument("--full", action="store_true", help="train on all images (no validation; fixed epochs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="use only the first N images (smoke tests)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--resume", action="store_true", help="resume from the last checkpoint in output_dir")
    p.add_argument("--ship", action="store_true", help="copy the result into modeling_rsfiqa/default_model")
    p.add_argument(
        "--card_only",
        default=None,
        metavar="DIR",
        help="only (re)write DIR/README.md from DIR/training_summary.json and the committed lever results; exit",
    )
    p.add_argument(
        "--order_only",
        default=None,
        metavar="DIR",
        help="only print the held-out Kodak24 order accuracy of the model saved in DIR, from pixels (for "
        "--train_from_pixels models; label maps from --cache_dir) and exit",
    )
    p.add_argument(
        "--reference_only",
        default=None,
        metavar="DIR",
        help="only (re)write DIR/reference_scores.json (scores of bundled photos) and exit",
    )
    return p.parse_args(argv)


def split_indices(n: int, val_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.RandomState(seed).permutation(n)
    cut = int(round((1 - val_fraction) * n))
    return np.sort(perm[:cut]), np.sort(perm[cut:])


def save_atomic(obj, path: Path) -> None:
    """torch.save to a temp file, then rename: a killed run never leaves half a cache file, and runs sharing a
    cache directory (the levers script next to a training run) never write into each other's temp file."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def cache_dirs(model, processor, cache_root: Path) -> tuple[Path, Path]:
    """Directories of the two caches, named by a hash of everything their contents depend on.

    Prefix features depend on the backbone, its weights and the input transform; region label maps on the
    partition settings and the input size. Changing either (another preset, ``--weights``, superpixel settings)
    therefore starts a new cache instead of silently reusing stale entries; ``settings.json`` records the key.
    """
    c = model.config
    feature_settings = {
        "backbone_name": c.backbone_name,
        "backbone_kwargs": c.backbone_kwargs,
        "prefix_stage": c.backbone_out_indices[0],
        "weights": c.backbone_pretrained,
        "image_size": c.image_size,
        "image_mean": c.image_mean,
        "image_std": c.image_std,
        "flip": True,
    }
    # the label maps' size follows the prefix map (twice its cells), so it depends on the prefix stage too
    region_settings = {
        **processor.partition_settings,
        "image_size": c.image_size,
        "label_scale": 2,
        "label_size": list(label_map_size(model)),
    }
    dirs = []
    for kind, settings in (("prefix", feature_settings), ("regions", region_settings)):
        key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
        d = cache_root / f"{kind}-{key}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "settings.json").write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
        dirs.append(d)
    return dirs[0], dirs[1]


def label_map_size(model) -> tuple[int, int]:
    """Region label maps are cached at twice the prefix map's resolution, so that crops stay aligned."""
    with torch.no_grad():
        pre = model.encode_prefix(torch.zeros(1, 3, *model.config.image_size))
    return 2 * pre.shape[-2], 2 * pre.shape[-1]


def load_or_compute(feat_path: Path, map_path: Path, compute) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and label maps of one cache entry: what is on disk is loaded, only the missing part is
    computed (``compute(need_feats, need_maps) -> (feats | None, maps | None)``) and saved atomically."""
    feats = torch.load(feat_path) if feat_path.exists() else None
    maps = torch.load(map_path) if map_path.exists() else None
    if feats is None or maps is None:
        new_feats, new_maps = compute(feats is None, maps is None)
        if feats is None:
            feats = new_feats
            save_atomic(feats, feat_path)
        if maps is None:
            maps = new_maps
            save_atomic(maps, map_path)
    return feats, maps


def build_cache(model, processor, files: list[Path], cache_root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Prefix features (N, 2, C, h, w) fp16 for image + h-flip, and label maps (N, 2, 2h, 2w) int16.

    Computed in chunks saved as they finish (features and label maps in their own keyed caches, see
    :func:`cache_dirs`), so an interrupted run resumes where it stopped."""
    feat_dir, map_dir = cache_dirs(model, processor, cache_root)
    size = label_map_size(model)
    chunk = 64
    feats_all, maps_all = [], []
    for start in tqdm(range(0, len(files), chunk), desc="caching prefix features + regions", unit="chunk"):

        def compute(need_feats: bool, need_maps: bool, start: int = start):
            feats, maps = [], []
            for f in files[start : start + chunk]:
                image = load_image_rgb(f)
                if need_feats:
                    pixel_values = processor.image_processor(image, return_tensors="pt")["pixel_values"]
                    feats.append(model.encode_prefix(torch.cat([pixel_values, pixel_values.flip(-1)])).half())
                if need_maps:
                    labels = processor.partition(image, output_size=size)
                    maps.append(torch.from_numpy(np.stack([labels, labels[:, ::-1].copy()]).astype(np.int16)))
            return (torch.stack(feats) if need_feats else None), (torch.stack(maps) if need_maps else None)

        feats, maps = load_or_compute(
            feat_dir / f"prefix_{start:05d}.pt", map_dir / f"regions_{start:05d}.pt", compute
        )
        feats_all.append(feats)
        maps_all.append(maps)
    return torch.cat(feats_all), torch.cat(maps_all)


def build_synthetic_cache(
    model, processor, files: list[Path], distortions: list[str], cache_root: Path, split: str
):
    """Per (photo, distortion): prefix features (G, 6, C, h, w) and label maps for clean + levels 1..5.

    Photos are resized to the model's input size first; saved per photo (features and label maps in their
    keyed caches), so the job resumes."""
    from modeling_rsfiqa.distortions import distort

    feat_dir, map_dir = cache_dirs(model, processor, cache_root)
    tag = hashlib.sha1(",".join(distortions).encode()).hexdigest()[:8]
    size = label_map_size(model)
    height, width = model.config.image_size
    feats_all, maps_all = [], []
    for f in tqdm(files, desc=f"caching synthetic groups ({split})", unit="photo"):

        def compute(need_feats: bool, need_maps: bool, f: Path = f):
            clean = load_image_rgb(f).resize((width, height))
            feats, maps = [], []
            for name in distortions:
                variants = [clean] + [distort(clean, name, lv, seed=0) for lv in LEVELS[1:]]
                if need_feats:
                    pixel_values = processor.image_processor(variants, return_tensors="pt")["pixel_values"]
                    feats.append(model.encode_prefix(pixel_values).half())
                if need_maps:
                    labels = [processor.partition(v, output_size=size) for v in variants]
                    maps.append(torch.from_numpy(np.stack(labels).astype(np.int16)))
            return (torch.stack(feats) if need_feats else None), (torch.stack(maps) if need_maps else None)

        name = f"synthetic-{split}-{f.stem}-{tag}.pt"
        feats, maps = load_or_compute(feat_dir / name, map_dir / name, compute)
        feats_all.append(feats)
        maps_all.append(maps)
    return torch.cat(feats_all), torch.cat(maps_all)


class SyntheticGroups:
    """Samples groups (clean + 5 levels of one distortion of one photo) with one shared random crop."""

    def __init__(self, feats: torch.Tensor, maps: torch.Tensor, crop_cells: int, seed: int):
        self.feats, self.maps, self.crop = feats, maps, crop_cells
        self.rng = np.random.default_rng(seed + 1)
        self.levels = torch.tensor(LEVELS, dtype=torch.float32)

    def sample(self, n_groups: int) -> dict[str, torch.Tensor]:
        idx = self.rng.choice(len(self.feats), n_groups, replace=False)
        f, m = self.feats[idx].float(), self.maps[idx].long()  # (G, 6, C, h, w), (G, 6, 2h, 2w)
        if self.rng.integers(2):
            f, m = f.flip(-1), m.flip(-1)
        h, w = f.shape[-2:]
        if self.crop and self.crop < w:
            y0, x0 = int(self.rng.integers(h - self.crop + 1)), int(self.rng.integers(w - self.crop + 1))
            f = f[..., y0 : y0 + self.crop, x0 : x0 + self.crop]
            m = m[..., 2 * y0 : 2 * (y0 + self.crop), 2 * x0 : 2 * (x0 + self.crop)]
        return {"prefix_features": f.flatten(0, 1), "region_labels": m.flatten(0, 1)}


def crop_pixels(x: torch.Tensor, y0: int, x0: int, cells: int, grid: int) -> torch.Tensor:
    """The pixels under cells ``[y0, y0 + cells) x [x0, x0 + cells)`` of a ``grid x grid`` cell map."""
    h, w = x.shape[-2:]
    ch, cw = round(cells * h / grid), round(cells * w / grid)  # the same size for every crop
    top, left = min(round(y0 * h / grid), h - ch), min(round(x0 * w / grid), w - cw)
    return x[..., top : top + ch, left : left + cw]


class SyntheticPixelGroups:
    """``SyntheticGroups`` for whole-backbone fine-tuning: the 5 levels are made on the fly from the photo
    (same deterministic distortions as the feature cache) and fed as pixels, with one shared crop."""

    def __init__(self, photos, distortions, maps, grid: int, crop_cells: int, seed: int, normalize):
        self.photos, self.distortions, self.maps = photos, distortions, maps
        self.grid, self.crop, self.normalize = grid, crop_cells, normalize
        self.rng = np.random.default_rng(seed + 1)
        self.levels = torch.tensor(LEVELS, dtype=torch.float32)

    def sample(self, n_groups: int) -> dict[str, torch.Tensor]:
        from modeling_rsfiqa.distortions import distort

        idx = self.rng.choice(len(self.photos) * len(self.distortions), n_groups, replace=False)
        pixels, maps = [], []
        for i in idx:
            photo, d = divmod(int(i), len(self.distortions))
            clean = self.photos[photo]
            variants = [clean] + [distort(clean, self.distortions[d], lv, seed=0) for lv in LEVELS[1:]]
            pixels.append(self.normalize(variants))
            maps.append(self.maps[i].long())
        x, m = torch.stack(pixels), torch.stack(maps)  # (G, 6, 3, H, W), (G, 6, 2g, 2g)
        if self.rng.integers(2):
            x, m = x.flip(-1), m.flip(-1)
        if self.crop and self.crop < self.grid:
            y0, x0 = (int(v) for v in self.rng.integers(self.grid - self.crop + 1, size=2))
            x = crop_pixels(x, y0, x0, self.crop, self.grid)
            m = m[..., 2 * y0 : 2 * (y0 + self.crop), 2 * x0 : 2 * (x0 + self.crop)]
        return {"pixel_values": x.flatten(0, 1), "region_labels": m.flatten(0, 1)}


class SyntheticRankTrainer(Trainer):
    """Trainer whose training loss adds a margin ranking loss over synthetic distortion groups."""

    def __init__(
        self,
        *args,
        synthetic: SyntheticGroups | None = None,
        synthetic_weight: float = 0.0,
        synthetic_groups: int = 2,
        rank_margin: float = 0.1,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.synthetic, self.synthetic_weight = synthetic, synthetic_weight
        self.synthetic_groups, self.rank_margin = synthetic_groups, rank_margin

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        loss = outputs.loss
        if model.training and self.synthetic is not None and self.synthetic_weight > 0:
            z = model(**self.synthetic.sample(self.synthetic_groups)).logits.view(
                self.synthetic_groups, len(LEVELS)
            )
            target = -self.synthetic.levels  # level 0 (clean) is best
            ranking = torch.stack([rank_loss(row, target, margin=self.rank_margin) for row in z]).mean()
            loss = loss + self.synthetic_weight * ranking
        return (loss, outputs) if return_outputs else loss


@torch.no_grad()
def synthetic_order_accuracy(model, feats: torch.Tensor, maps: torch.Tensor) -> float:
    """Fraction of held-out groups whose 6 scores are strictly decreasing with the level."""
    model.eval()
    ok = 0
    for g in range(len(feats)):
        z = model(prefix_features=feats[g].float(), region_labels=maps[g].long()).logits
        ok += bool((z[:-1] > z[1:]).all())
    return ok / max(len(feats), 1)


@torch.no_grad()
def synthetic_order_accuracy_pixels(
    model, photos, distortions: list[str], maps: torch.Tensor, normalize
) -> float:
    """:func:`synthetic_order_accuracy` from pixels (whole-backbone fine-tuning changes the cached prefix):
    each held-out group (photo x distortion, the cache's order) distorted again, full image, cached maps."""
    from modeling_rsfiqa.distortions import distort

    model.eval()
    ok = 0
    for i in tqdm(range(len(photos) * len(distortions)), desc="held-out order (pixels)", unit="group"):
        photo, d = divmod(i, len(distortions))
        clean = photos[photo]
        variants = [clean] + [distort(clean, distortions[d], lv, seed=0) for lv in LEVELS[1:]]
        z = model(pixel_values=normalize(variants), region_labels=maps[i].long()).logits
        ok += bool((z[:-1] > z[1:]).all())
    return ok / max(len(photos) * len(distortions), 1)


class CachedPrefixDataset(torch.utils.data.Dataset):
    """Items ``{prefix_features, region_labels, labels}`` from the cache, with flip + crop when training."""

    def __init__(self, feats, maps, mos, indices, train: bool, crop_cells: int, seed: int, flip: int = 0):
        self.feats, self.maps, self.mos, self.indices = feats, maps, mos, indices
        self.train, self.crop, self.flip = train, crop_cells, flip
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        j = int(self.indices[i])
        flip = int(self.rng.integers(2)) if self.train else self.flip
        f, m = self.feats[j, flip].float(), self.maps[j, flip].long()
        if self.train and self.crop and self.crop < f.shape[-1]:
            h, w = f.shape[-2:]
            y0, x0 = int(self.rng.integers(h - self.crop + 1)), int(self.rng.integers(w - self.crop + 1))
            f = f[:, y0 : y0 + self.crop, x0 : x0 + self.crop]
            m = m[2 * y0 : 2 * (y0 + self.crop), 2 * x0 : 2 * (x0 + self.crop)]
        return {"prefix_features": f, "region_labels": m, "labels": torch.tensor(float(self.mos[j]))}


class PixelDataset(torch.utils.data.Dataset):
    """Items ``{pixel_values, region_labels, labels}`` for whole-backbone fine-tuning: the processor's input
    (uint8, model size) kept in memory, flip + crop (the same cells as :class:`CachedPrefixDataset`) in pixels."""

    def __init__(
        self, images, maps, mos, indices, train, crop_cells, seed, grid: int, normalize, flip: int = 0
    ):
        self.images, self.maps, self.mos, self.indices = images, maps, mos, indices
        self.train, self.crop, self.grid, self.normalize, self.flip = train, crop_cells, grid, normalize, flip
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        j = int(self.indices[i])
        flip = int(self.rng.integers(2)) if self.train else self.flip
        x, m = self.normalize([self.images[j]])[0], self.maps[j, flip].long()
        if flip:
            x = x.flip(-1)
        if self.train and self.crop and self.crop < self.grid:
            y0, x0 = (int(v) for v in self.rng.integers(self.grid - self.crop + 1, size=2))
            x = crop_pixels(x, y0, x0, self.crop, self.grid)
            m = m[2 * y0 : 2 * (y0 + self.crop), 2 * x0 : 2 * (x0 + self.crop)]
        return {"pixel_values": x, "region_labels": m, "labels": torch.tensor(float(self.mos[j]))}


def compute_metrics(eval_pred) -> dict[str, float]:
    preds = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
    return compute_iqa_metrics(np.asarray(preds).reshape(-1), np.asarray(eval_pred.label_ids).reshape(-1))


def levers_section() -> str:
    """The card's table of recipe changes measured over 5 validation splits (``LEVERS_RESULTS``, written by
    ``examples/rsfiqa_mobile_levers.py``), or a note when none are recorded."""
    if not LEVERS_RESULTS.is_file():
        return "No recipe changes measured over several splits yet (`examples/rsfiqa_mobile_levers.py`)."
    spec = importlib.util.spec_from_file_location(
        "rsfiqa_mobile_levers", ROOT / "examples" / "rsfiqa_mobile_levers.py"
    )
    levers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(levers)
    return levers.table(LEVERS_RESULTS)


def write_model_card(out: Path, metrics: dict, info: dict) -> None:
    keys = ("srcc", "plcc", "plcc_logistic", "krcc", "rmse", "synthetic_order_acc")
    rows = "\n".join(f"| {k} | {metrics[k]:.4f} |" for k in keys if k in metrics)
    piped = info.get("pipeline_validation")
    pipeline_line = (
        f'Scored end to end through `pipeline("image-quality")` as shipped (full 500 px image, superpixels on a '
        f"{info['superpixel_work_size']} px copy): SRCC {piped['srcc']:.4f}, PLCC {piped['plcc']:.4f} on the same "
        f"{info['n_val']} images."
        if piped
        else "No validation split (--full): no pipeline figures."
    )
    card = (ROOT / "examples" / "rsfiqa_mobile_card.md").read_text()
    info = {"split_seed": 0, "select_best": 1, "synthetic_sets": "cbsd68", **info}
    selection = "best epoch by validation SRCC" if info["select_best"] else "the last epoch (no selection)"
    if info.get("config_overrides", {}).get("backbone_freeze_prefix") is False:  # --train_from_pixels
        backbone_training = "the whole backbone fine-tuned (`--train_from_pixels`)"
        recipe_inputs = (
            "the whole network trained from pixels; horizontal flip and random crops of 24x24 cells of the\n"
            "  stride-16 map (about 384 px) with the matching crop of the cached region label map"
        )
    else:
        backbone_training = "stem to stage 3 frozen, stages 4-5 fine-tuned"
        recipe_inputs = (
            "frozen-prefix features cached per image and horizontal flip; random 24x24-cell crops of the\n"
            "  stride-16 map (about 384 px)"
        )
    card = card.format(
        metrics_table=rows,
        pipeline_line=pipeline_line,
        levers_table=levers_section(),
        selection=selection,
        backbone_training=backbone_training,
        recipe_inputs=recipe_inputs,
        **info,
    )
    (out / "README.md").write_text(card)


def record_reference(model_dir: Path) -> dict:
    """Scores of scikit-image's bundled photos with the saved pipeline: the shipped model's calibration
    record, checked by tests/test_default_model.py on every machine."""
    import skimage.data
    from PIL import Image
    from transformers import pipeline

    pipe = pipeline("image-quality", model=str(model_dir))
    record = {
        "skimage": {
            n: round(pipe(Image.fromarray(getattr(skimage.data, n)()))["score"], 4)
            for n in ("chelsea", "coffee", "astronaut", "rocket")
        }
    }
    (model_dir / "reference_scores.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def pipeline_validation(model_dir: Path, files: list[Path], mos: np.ndarray) -> dict[str, float]:
    """The validation images scored end to end by ``pipeline("image-quality")`` from the saved folder (full
    500 px image, regions from the shipped partition settings): what users get, not the training-time eval."""
    from transformers import pipeline

    pipe = pipeline("image-quality", model=str(model_dir))
    preds = np.array([pipe(str(f))["score"] for f in tqdm(files, desc="pipeline validation", unit="image")])
    return {k: float(v) for k, v in compute_iqa_metrics(preds, mos).items() if k in ("srcc", "plcc")}


def order_only(args: argparse.Namespace) -> float:
    """Held-out Kodak24 order accuracy of a saved model, from pixels (``--order_only``)."""
    from modeling_rsfiqa import RSFIQAForQualityScoring, RSFIQAProcessor

    torch.set_num_threads(args.threads)
    model = RSFIQAForQualityScoring.from_pretrained(args.order_only).eval()
    processor = RSFIQAProcessor.from_pretrained(args.order_only)
    processor.superpixel_work_size = args.train_work_size  # the cached label maps' setting
    distortions = [d for d in args.synthetic_distortions.split(",") if d]
    photos = sorted((Path(args.synthetic_dir) / "kodak24").glob("*.png"))[: args.limit]
    cache_root = Path(args.cache_dir or Path(args.output_dir) / "cache")
    _, maps = build_synthetic_cache(model, processor, photos, distortions, cache_root, "val")
    height, width = model.config.image_size
    return synthetic_order_accuracy_pixels(
        model,
        [load_image_rgb(p).resize((width, height)) for p in photos],
        distortions,
        maps,
        lambda images: processor.image_processor(images, return_tensors="pt")["pixel_values"],
    )


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.reference_only:
        print(record_reference(Path(args.reference_only)))
        return
    if args.order_only:
        print(json.dumps({"synthetic_order_acc": order_only(args)}))
        return
    if args.card_only:
        summary = json.loads((Path(args.card_only) / "training_summary.json").read_text())
        write_model_card(Path(args.card_only), summary.pop("metrics"), summary)
        return
    command = shlex.join(
        ["python", "examples/train_rsfiqa_mobile.py", *(sys.argv[1:] if argv is None else argv)]
    )
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.output_dir)
    data_dir = Path(args.data_dir)
    rows = sorted(csv.DictReader(open(data_dir / "metadata.csv")), key=lambda r: r["file_name"])
    rows = rows[: args.limit] if args.limit else rows
    files = [data_dir / r["file_name"] for r in rows]
    mos = np.array([float(r["mos"]) for r in rows], dtype=np.float32)
    train_idx, val_idx = split_indices(len(files), args.val_fraction, args.split_seed)
    if args.full:
        train_idx, val_idx = np.arange(len(files)), np.array([], dtype=int)

    from modeling_rsfiqa.training_rsfiqa import parse_config_overrides

    overrides = parse_config_overrides(args.config_overrides)
    if args.train_from_pixels:
        overrides["backbone_freeze_prefix"] = False
    model, processor = create_model("rsfiqa-mobile", pretrained_backbone=args.weights, **overrides)
    model.config.label_mean = float(mos[train_idx].mean())
    model.config.label_std = float(mos[train_idx].std())
    model.config.backbone_pretrained = Path(args.weights).name
    model.config.loss_weights = {
        k: float(v) for k, v in (kv.split("=") for kv in args.loss_weights.split(","))
    }
    model.eval()
    t0 = time.time()
    inference_work_size = processor.superpixel_work_size
    processor.superpixel_work_size = args.train_work_size  # training label maps only; restored before saving
    feats, maps = build_cache(model, processor, files, Path(args.cache_dir or out / "cache"))

    synthetic, held_out, held_out_pixels = None, None, None
    if args.synthetic_weight > 0:
        distortions = [d for d in args.synthetic_distortions.split(",") if d]
        pristine = Path(args.synthetic_dir)
        cache_root = Path(args.cache_dir or out / "cache")
        train_photos = [
            p
            for name in args.synthetic_sets.split(",")
            if name
            for p in sorted((pristine / name).iterdir())[: args.limit]
            if p.suffix.lower() in (".png", ".jpg", ".jpeg")
        ]
        val_photos = sorted((pristine / "kodak24").glob("*.png"))[: args.limit]
        synthetic_feats, synthetic_maps = build_synthetic_cache(
            model, processor, train_photos, distortions, cache_root, "train"
        )
        synthetic = SyntheticGroups(synthetic_feats, synthetic_maps, args.crop_cells, args.seed)
        held_out = build_synthetic_cache(model, processor, val_photos, distortions, cache_root, "val")
        print(
            f"synthetic groups: {len(synthetic.feats)} train ({args.synthetic_sets}), "
            f"{len(held_out[0])} held out (kodak24)"
        )
    cache_seconds = time.time() - t0
    processor.superpixel_work_size = inference_work_size

    if args.train_from_pixels:
        height, width = model.config.image_size
        grid = feats.shape[-1]  # the prefix map's cells: crops in pixels cover the same cells
        del feats

        def normalize(images) -> torch.Tensor:
            return processor.image_processor(images, return_tensors="pt")["pixel_values"]

        images = []
        for f in tqdm(files, desc="images", unit="image"):  # CLIVE photos are 500x500 already
            image = load_image_rgb(f)
            images.append(image if image.size == (width, height) else image.resize((width, height)))
        if synthetic is not None:
            photos = [load_image_rgb(p).resize((width, height)) for p in train_photos]
            synthetic = SyntheticPixelGroups(
                photos, distortions, synthetic_maps, grid, args.crop_cells, args.seed, normalize
            )
            del synthetic_feats  # prefix features of the synthetic groups: unused from pixels (~0.8 GB)
        train_ds = PixelDataset(
            images, maps, mos, train_idx, True, args.crop_cells, args.seed, grid, normalize
        )
        val_ds = (
            PixelDataset(images, maps, mos, val_idx, False, 0, args.seed, grid, normalize)
            if len(val_idx)
            else None
        )
        flipped_val = PixelDataset(images, maps, mos, val_idx, False, 0, args.seed, grid, normalize, flip=1)
        if held_out is not None:  # its cached features come from the original prefix, which this run changes
            held_out_pixels = (
                [load_image_rgb(p).resize((width, height)) for p in val_photos],
                distortions,
                held_out[1],
                normalize,
            )
            held_out = None
    else:
        train_ds = CachedPrefixDataset(feats, maps, mos, train_idx, True, args.crop_cells, args.seed)
        val_ds = CachedPrefixDataset(feats, maps, mos, val_idx, False, 0, args.seed) if len(val_idx) else None
        flipped_val = CachedPrefixDataset(feats, maps, mos, val_idx, False, 0, args.seed, flip=1)
    steps_per_epoch = math.ceil(len(train_ds) / args.batch_size)
    total_steps = int(math.ceil(args.epochs * steps_per_epoch))
    backbone = [p for m in model.backbone_modules() for p in m.parameters(recurse=False) if p.requires_grad]
    backbone_ids = {id(p) for p in backbone}
    new = [p for p in model.parameters() if p.requires_grad and id(p) not in backbone_ids]
    optimizer = torch.optim.AdamW(
        [{"params": backbone, "lr": args.backbone_lr}, {"params": new, "lr": args.lr}],
        weight_decay=args.weight_decay,
    )
    scheduler = get_cosine_schedule_with_warmup(optimizer, max(1, int(0.05 * total_steps)), total_steps)
    training_args = TrainingArguments(
        output_dir=str(out / "checkpoints"),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=32,
        eval_strategy="epoch" if val_ds else "no",
        save_strategy="epoch",
        save_total_limit=2,
        load_best_model_at_end=val_ds is not None and bool(args.select_best),
        metric_for_best_model="srcc",
        greater_is_better=True,
        logging_steps=10,
        report_to="none",
        use_cpu=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        label_names=["labels"],
        seed=args.seed,
    )
    trainer = SyntheticRankTrainer(
        model=model,
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        compute_metrics=compute_metrics,
        optimizers=(optimizer, scheduler),
        synthetic=synthetic,
        synthetic_weight=args.synthetic_weight,
        synthetic_groups=args.synthetic_groups,
        rank_margin=args.rank_margin,
    )
    t1 = time.time()
    trainer.train(resume_from_checkpoint=args.resume or None)
    train_seconds = time.time() - t1
    # the last epoch's figures (no choice made on the validation split), read BEFORE the final evaluate(),
    # which appends the kept (best) epoch's figures to the log history
    last = [h for h in trainer.state.log_history if "eval_srcc" in h]
    metrics = trainer.evaluate() if val_ds else {}
    metrics = {k.removeprefix("eval_"): v for k, v in metrics.items() if isinstance(v, float)}
    if val_ds is not None:
        # ... and flip averaging at test time
        if last:
            metrics["last_epoch_srcc"], metrics["last_epoch_plcc"] = (
                last[-1]["eval_srcc"],
                last[-1]["eval_plcc"],
            )
        both = (trainer.predict(val_ds).predictions, trainer.predict(flipped_val).predictions)
        averaged = np.mean([np.asarray(p[0] if isinstance(p, tuple) else p).reshape(-1) for p in both], 0)
        flip_metrics = compute_iqa_metrics(averaged, mos[val_idx])
        metrics["flip_tta_srcc"], metrics["flip_tta_plcc"] = flip_metrics["srcc"], flip_metrics["plcc"]
    if held_out is not None:
        metrics["synthetic_order_acc"] = synthetic_order_accuracy(model, *held_out)
    elif held_out_pixels is not None:
        metrics["synthetic_order_acc"] = synthetic_order_accuracy_pixels(model, *held_out_pixels)
    print(json.dumps(metrics, indent=2))

    final = out / "final"
    model.eval()
    trainer.save_model(str(final))
    processor.save_pretrained(final)
    for stale in final.glob("*.py"):  # the package provides the code; Hub exports keep them (pipeline.save)
        stale.unlink()
    (final / "training_args.bin").unlink(missing_ok=True)
    info = {
        "n_train": len(train_idx),
        "n_val": len(val_idx),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "backbone_lr": args.backbone_lr,
        "crop_cells": args.crop_cells,
        "loss_weights": args.loss_weights,
        "synthetic_weight": args.synthetic_weight,
        "synthetic_distortions": args.synthetic_distortions,
        "rank_margin": args.rank_margin,
        "cache_minutes": cache_seconds / 60,
        "train_minutes": train_seconds / 60,
        "label_mean": model.config.label_mean,
        "label_std": model.config.label_std,
        "superpixel_work_size": processor.superpixel_work_size,
        "train_work_size": args.train_work_size,
        "split_seed": args.split_seed,
        "select_best": args.select_best,
        "synthetic_sets": args.synthetic_sets,
        "config_overrides": overrides,
        "command": command,
    }
    if len(val_idx) and not args.skip_pipeline_validation:
        info["pipeline_validation"] = pipeline_validation(final, [files[i] for i in val_idx], mos[val_idx])
        print("through the pipeline:", info["pipeline_validation"])
    (final / "training_summary.json").write_text(json.dumps({"metrics": metrics, **info}, indent=2))
    shutil.copy(ROOT / "examples" / "NOTICE-rsfiqa-mobile.txt", final / "NOTICE.txt")
    shutil.copy(data_dir / "LIVE_COPYRIGHT.txt", final / "LIVE_COPYRIGHT.txt")
    write_model_card(final, metrics, info)
    record_reference(final)
    print(f"saved {final} (cache {cache_seconds / 60:.1f} min, training {train_seconds / 60:.1f} min)")
    if args.ship:
        target = ROOT / "modeling_rsfiqa" / "default_model"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(final, target)
        print(f"shipped to {target}")


if __name__ == "__main__":
    main()
