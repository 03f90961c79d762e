"""RSFIQA configuration.

RSFIQA (Song et al., "Segmenting and Understanding: Region-aware Semantic Attention for Fine-grained
Image Quality Assessment with Large Language Models", arXiv 2508.07818): SAM partitions the image into
non-overlapping regions, an MLLM describes each region, Region-Aware Semantic Attention (RSA) turns the
region representations into a global attention map over any backbone, and a head predicts the score.
Where the paper is silent (sizes, pooling, the head) the choices here are ours and documented.
"""

from __future__ import annotations

from dataclasses import field
from typing import Literal

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

__all__ = ["RSFIQAConfig", "DEFAULT_DISTORTION_DIMENSIONS", "DEFAULT_LEVEL_WORDS"]

DEFAULT_DISTORTION_DIMENSIONS = ["blur", "noise", "compression artifacts", "color", "exposure", "overall"]
# Q-Align's five level words, worst to best; level i (1-based) has numeric value i.
DEFAULT_LEVEL_WORDS = ["bad", "poor", "fair", "good", "excellent"]


class RSFIQAConfig(PreTrainedConfig):
    r"""Configuration of [`RSFIQAForQualityScoring`].

    Backbone:
        backbone_name: timm architecture name (any CNN or ViT that supports ``features_only``).
        backbone_kwargs: extra ``timm.create_model`` kwargs (e.g. ``{"pad_type": "same"}``).
        backbone_out_indices: feature stages fed to RSA (timm ``out_indices``); several stages are
            pooled and concatenated.
        backbone_pretrained: where :meth:`RSFIQAForQualityScoring.load_pretrained_backbone` reads
            ImageNet weights from (a local file, or ``"timm"`` for timm's own tag); never used in
            ``__init__`` (weights are loaded after construction, as transformers v5 requires).
        backbone_freeze_bn: keep the backbone's batch-norm layers in eval mode while training (small
            IQA batches make batch statistics noisy).
        backbone_conv_head: MobileNet / EfficientNet family only: after the last feature stage, also run the
            classifier's final 1x1 convolution (timm ``conv_head`` + ``bn2``: 320 -> 1280 channels on
            MobileNetV2, ImageNet weights loaded with the backbone's) and give its output to RSA as one more
            stage. The last of ``backbone_out_indices`` must be the final stage.
        backbone_freeze_prefix: freeze the backbone up to and including the first stage RSA uses; that
            stage's output can then be computed once and cached (``encode_prefix`` / ``prefix_features``),
            which makes fine-tuning the remaining stages on a CPU several times cheaper.
        inference_fuse_batchnorm: in eval mode without gradients, run a copy of the backbone with every
            batch norm folded into the convolution that feeds it (same outputs to float round-off;
            MobileNetV2 at 500 px on 2 CPU threads: 54 -> 31 ms). The copy is rebuilt when weights change.
        inference_batch_pixels: on CPU, in eval mode without gradients, the backbone runs over at most this
            many input pixels at a time (a batch is split into chunks of at least one image; the features
            are concatenated). A CPU convolution gains nothing from a large batch: its activations outgrow
            the caches and glibc's mmap threshold, so they are page-faulted in again on every call
            (MobileNetV2 at 500 px, 1 thread: 86 ms per image at batch 1, 154 at batch 8). 0 = no split.
        image_size: (height, width) of ``pixel_values``; image_mean / image_std: normalisation.
    Regions (step 1 of the paper):
        partition_method: ``"sam"`` (automatic mask generation with the ``sam_config`` model) or
            ``"superpixel"`` (scikit-image SLIC; offline stand-in, no extra model).
        max_regions: K, the most regions an image is split into (background included).
        min_region_area: regions smaller than this fraction of the image are merged into a neighbour.
        superpixel_segments / superpixel_compactness: SLIC settings; superpixel_work_size: longest side of
            the copy SLIC runs on (the label map is much coarser than the image, so a small copy suffices).
        sam_points_per_side / sam_points_per_batch / sam_pred_iou_thresh / sam_stability_score_thresh:
            SAM automatic-mask-generation settings (as in segment-anything's ``SamAutomaticMaskGenerator``).
        region_label_stride: region label maps are given at ``image_size / region_label_stride``.
    Region understanding (step 2):
        use_region_descriptions: whether MLLM annotations feed the region representation.
        description_embed_dim: size of each region's description embedding (the MLLM's hidden size).
        distortion_dimensions / level_words / prompt_version: the structured question asked per region.
        annotation_model / annotation_prompt / annotation_partition: provenance of the annotations the
            semantic branch was trained with (set by ``examples/train.py --annotations``): the annotator's
            model fingerprint, its prompt fingerprint (``"<prompt_version>:<digest>"``) and the partition
            settings of the annotated regions (with the SAM fingerprint). Annotation stores are checked
            against them at scoring time.
    Region-Aware Semantic Attention (step 3) and head:
        rsa_hidden_size, rsa_num_layers, rsa_num_heads, rsa_dropout: the region-token transformer.
        region_pooling: ``"mean"`` or ``"mean_std"`` pooling of backbone features inside a region.
        head_hidden_size, head_dropout: the MLP head shared by the image and the regions.
        semantic_head: the head also reads the RSA region tokens (ours; see the modeling module, step 7), so
            that absolute MLLM distortion levels reach the score, not only their differences between regions.
            ``examples/train.py --annotations`` turns it on for new models.
    Scores and loss (step 4):
        score_range / higher_is_better: the scale the model predicts on (e.g. MOS 0-100, higher better).
        label_mean / label_std: the head predicts z-scores; ``score = z * label_std + label_mean``.
        loss_weights: weights of ``l1``, ``mse``, ``plcc`` and ``rank`` losses on z-scores.
    """

    model_type = "rsfiqa"
    sub_configs_defaults = {
        "sam_config": SubConfigSpec(config_class=AutoConfig, model_type="sam", optional=True),
        "mllm_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen2_5_vl", optional=True),
    }

    # backbone
    backbone_name: str = "mobilenetv2_100"
    backbone_kwargs: dict = field(default_factory=dict)
    backbone_out_indices: list[int] = field(default_factory=lambda: [4])
    backbone_pretrained: str | None = None
    backbone_freeze_bn: bool = False
    backbone_freeze_prefix: bool = False
    backbone_conv_head: bool = False
    inference_fuse_batchnorm: bool = True
    inference_batch_pixels: int = 131072
    image_size: list[int] = field(default_factory=lambda: [384, 384])
    image_mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    image_std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    # regions
    partition_method: Literal["sam", "superpixel"] = "superpixel"
    max_regions: int = 16
    min_region_area: float = 0.005
    superpixel_segments: int = 24
    superpixel_compactness: float = 10.0
    superpixel_work_size: int = 256
    sam_points_per_side: int = 16
    sam_points_per_batch: int = 64
    sam_pred_iou_thresh: float = 0.86
    sam_stability_score_thresh: float = 0.92
    sam_longest_edge: int = 1024
    region_label_stride: int = 4
    sam_config: dict | PreTrainedConfig | None = None
    # region understanding
    use_region_descriptions: bool = True
    description_embed_dim: int = 64
    distortion_dimensions: list[str] = field(default_factory=lambda: list(DEFAULT_DISTORTION_DIMENSIONS))
    level_words: list[str] = field(default_factory=lambda: list(DEFAULT_LEVEL_WORDS))
    prompt_version: str = "rsfiqa-region-v2"
    mllm_name_or_path: str | None = None
    mllm_config: dict | PreTrainedConfig | None = None
    annotation_model: str | None = None
    annotation_prompt: str | None = None
    annotation_partition: dict | None = None
    # RSA + head
    rsa_hidden_size: int = 128
    rsa_num_layers: int = 1
    rsa_num_heads: int = 4
    rsa_dropout: float = 0.1
    region_pooling: Literal["mean", "mean_std"] = "mean_std"
    head_hidden_size: int = 256
    head_dropout: float = 0.1
    semantic_head: bool = False
    # scores and loss
    score_range: list[float] = field(default_factory=lambda: [0.0, 100.0])
    higher_is_better: bool = True
    label_mean: float = 50.0
    label_std: float = 20.0
    loss_weights: dict = field(default_factory=lambda: {"l1": 1.0, "plcc": 1.0})
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.image_size = [int(s) for s in self.image_size]
        self.backbone_out_indices = [int(i) for i in self.backbone_out_indices]
        self.validate_rsfiqa()

    def validate_rsfiqa(self) -> None:
        """Raise ``ValueError`` for settings that cannot work (checked at construction)."""
        if self.partition_method not in ("sam", "superpixel"):
            raise ValueError(f"partition_method must be 'sam' or 'superpixel', got {self.partition_method!r}")
        if self.partition_method == "sam" and self.sam_config is None:
            raise ValueError("partition_method='sam' needs a sam_config")
        if self.max_regions < 1:
            raise ValueError(f"max_regions must be >= 1, got {self.max_regions}")
        if not 0.0 <= self.min_region_area < 1.0:
            raise ValueError(
                f"min_region_area is a fraction of the image in [0, 1), got {self.min_region_area}"
            )
        if len(self.image_size) != 2 or min(self.image_size) < 8:
            raise ValueError(f"image_size must be [height, width] >= 8, got {self.image_size}")
        if self.region_label_stride < 1:
            raise ValueError("region_label_stride must be >= 1")
        if self.inference_batch_pixels < 0:
            raise ValueError(
                f"inference_batch_pixels must be >= 0 (0 = no split), got {self.inference_batch_pixels}"
            )
        if len(self.level_words) != 5:
            raise ValueError(f"level_words must list 5 words worst to best, got {self.level_words}")
        if self.rsa_hidden_size % self.rsa_num_heads:
            raise ValueError("rsa_hidden_size must be divisible by rsa_num_heads")
        if len(self.score_range) != 2 or self.score_range[0] >= self.score_range[1]:
            raise ValueError(f"score_range must be [low, high], got {self.score_range}")
        if self.label_std <= 0:
            raise ValueError("label_std must be > 0")

    @property
    def label_size(self) -> tuple[int, int]:
        """(h, w) of region label maps: ``image_size`` divided by ``region_label_stride`` (rounded up)."""
        s = self.region_label_stride
        return (-(-self.image_size[0] // s), -(-self.image_size[1] // s))
