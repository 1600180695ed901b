"""Build an age model from any image-classification checkpoint and turn its outputs into ages.

Everything inference needs to reproduce training (head type, age normalisation, face framing,
uncertainty calibration) lives in ``config.agecheck`` so it travels inside ``config.json`` with
``save_pretrained`` / ``push_to_hub`` and comes back with ``from_pretrained``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    BaseImageProcessor,
    PretrainedConfig,
    PreTrainedModel,
)

from age_model.faces.crops import DEFAULT_CROP, CropSpec

logger = logging.getLogger(__name__)

HEADS = ("regression", "gaussian", "bins")
# The bins head covers 0..BINS_MAX_AGE inclusive (older labels fall in the last bin); not a label bound.
BINS_MAX_AGE = 100
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


@dataclass
class AgeSettings:
    """What a checkpoint must carry so that serving reproduces training exactly."""

    head: str = "regression"
    age_mean: float = 30.0
    age_std: float = 20.0
    target: str = "real"
    faces: str = "detect"  # "detect": photos go through face detection; "cropped": inputs are crops
    # How faces.crop_face frames a detected face, stored flat in config.json and read as one
    # CropSpec by `crop` (the defaults are CropSpec's): "box" (box + crop_margin per side, APPA-REAL),
    # "square" (the same around a square box) or "aligned" (eyes level, square, sized from the
    # landmarks by align_scale / align_shift). faces.calibrate_crop fits these on training crops.
    crop_margin: float = DEFAULT_CROP.margin
    crop_style: str = DEFAULT_CROP.style
    align_scale: float = DEFAULT_CROP.align_scale
    align_shift: float = DEFAULT_CROP.align_shift
    image_size: int = 224
    # Uncertainty calibration from validation: predicted-age band edges and the mean absolute error
    # the model made in each band. Used as the spread where the head gives no uncertainty of its own.
    calibration_edges: list[float] = field(default_factory=list)
    calibration_mae: list[float] = field(default_factory=list)
    # One factor on the spread, fitted on held-out faces of every source (fit_spread_scale), so that
    # at least `spread_target` of errors fall within ± on each; `spread_coverage` is what it gave.
    spread_scale: float = 1.0
    spread_target: float = 0.7
    spread_coverage: dict[str, float] = field(default_factory=dict)
    base_model: str = ""
    # True once fold_into_head has put age_mean/age_std into the output layer (regression and
    # gaussian heads): the outputs are then years, which plain transformers shows as they are.
    outputs_in_years: bool = False

    @property
    def crop(self) -> CropSpec:
        """How this model frames a detected face. Raises ``ValueError`` for an unknown ``crop_style``."""
        return CropSpec(
            style=self.crop_style, margin=self.crop_margin, align_scale=self.align_scale, align_shift=self.align_shift
        )

    @crop.setter
    def crop(self, crop: CropSpec) -> None:
        self.crop_style, self.crop_margin = crop.style, crop.margin
        self.align_scale, self.align_shift = crop.align_scale, crop.align_shift

    def num_outputs(self) -> int:
        return {"regression": 1, "gaussian": 2, "bins": BINS_MAX_AGE + 1}[self.head]

    @classmethod
    def from_config(cls, config: PretrainedConfig) -> "AgeSettings":
        raw = getattr(config, "agecheck", None) or {}
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def save_to_config(self, config: PretrainedConfig) -> None:
        config.agecheck = asdict(self)

    def output_scale(self) -> tuple[float, float]:
        """(mean, std) that turn the first output into years: identity once folded into the head."""
        return (0.0, 1.0) if self.outputs_in_years else (self.age_mean, self.age_std)


def output_labels(head: str) -> list[str]:
    """The name of each output: what plain transformers (pipeline, Hub widget) shows beside it."""
    return {"regression": ["age"], "gaussian": ["age", "log_variance"]}.get(
        head, [str(a) for a in range(BINS_MAX_AGE + 1)]
    )


def is_config_only(path: str | Path) -> bool:
    """A local base folder with a config but no weights means: build the architecture from scratch."""
    folder = Path(path)
    return (
        folder.is_dir()
        and (folder / "config.json").exists()
        and not any((folder / name).exists() for name in WEIGHT_FILES)
    )


def build_age_model(base_model: str, settings: AgeSettings, **config_overrides: Any) -> PreTrainedModel:
    """A fresh age model on top of ``base_model`` (Hub id or local folder) with the head ``settings`` asks for."""
    if settings.head not in HEADS:
        raise ValueError(f"Unknown head {settings.head!r}: choose one of {', '.join(HEADS)}.")
    num_labels = settings.num_outputs()
    labels = output_labels(settings.head)
    kwargs: dict[str, Any] = dict(
        num_labels=num_labels,
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
        problem_type="regression",
        **config_overrides,
    )
    if is_config_only(base_model):
        logger.warning(
            "\n%s\n!! %s has a config but NO WEIGHTS: building the architecture with RANDOM weights.\n"
            "!! Training from scratch needs far more data and epochs than fine-tuning.\n%s",
            "!" * 78,
            base_model,
            "!" * 78,
        )
        config = AutoConfig.from_pretrained(base_model, **kwargs)
        model = AutoModelForImageClassification.from_config(config)
    else:
        model = AutoModelForImageClassification.from_pretrained(base_model, ignore_mismatched_sizes=True, **kwargs)
    settings.base_model = str(base_model)
    settings.save_to_config(model.config)
    freeze_identity_squeeze_excite(model)
    return model


def freeze_identity_squeeze_excite(model: torch.nn.Module) -> int:
    """EfficientNet-Lite has no squeeze-excite; the shared checkpoints make it an exact identity. Keep it one."""
    frozen = 0
    for name, param in model.named_parameters():
        if "squeeze_excite" in name and param.numel() > 0:
            if name.endswith("expand.bias") and float(param.detach().min()) >= 10.0:
                param.requires_grad_(False)
                frozen += 1
            elif "squeeze_excite.reduce" in name or "squeeze_excite.expand.weight" in name:
                if float(param.detach().abs().max()) == 0.0:
                    param.requires_grad_(False)
                    frozen += 1
    return frozen


def drop_identity_squeeze_excite(model: torch.nn.Module) -> int:
    """Replace every squeeze-excite layer that multiplies by exactly 1.0 with ``nn.Identity``, for serving.

    EfficientNet-Lite's shared checkpoints carry squeeze-excite layers with zero weights and a bias of
    50: sigmoid(50) is 1.0 in float32, so each one costs a pooling, two convolutions and a full-size
    multiplication to give back its input. Only layers where that holds exactly are replaced: the
    outputs stay the same bit for bit. Returns how many were replaced. Never call it before training.
    """
    replaced = 0
    for name, module in list(model.named_modules()):
        expand = getattr(module, "expand", None)
        if not (name.endswith("squeeze_excite") and isinstance(expand, torch.nn.Conv2d) and expand.bias is not None):
            continue
        with torch.no_grad():
            identity = not expand.weight.any() and bool((torch.sigmoid(expand.bias.float()) == 1.0).all())
        if identity:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, torch.nn.Identity())
            replaced += 1
    return replaced


def head_parameter_names(model: PreTrainedModel) -> set[str]:
    """Names of the freshly initialised output layer(s): what stays trainable while the backbone is frozen."""
    names = set()
    for name, _ in model.named_parameters():
        if name.startswith(("classifier", "fc.", "head", "score")) or ".classifier." in name:
            names.add(name)
    if not names:  # fall back to the last two parameters (weight and bias of the final layer)
        names = {name for name, _ in list(model.named_parameters())[-2:]}
    return names


def configure_processor(processor: BaseImageProcessor, image_size: int) -> BaseImageProcessor:
    """Make the image processor bring a face crop to ``image_size`` without cutting into a square crop.

    Square crops (UTKFace chips, the "square" and "aligned" styles) pass whole. A non-square crop
    (APPA-REAL's box + 40 % margin) keeps its centre square with processors that resize the short
    side (ConvNeXt/EfficientNet/ResNet): part of the margin above and below the face is lost, the
    same way in training and serving, so the framing still matches.
    """
    size = getattr(processor, "size", None)
    if size is not None and (
        getattr(size, "shortest_edge", None) or (isinstance(size, dict) and "shortest_edge" in size)
    ):
        processor.size = {"shortest_edge": image_size}
        if hasattr(processor, "crop_pct"):
            processor.crop_pct = 1.0
    else:
        processor.size = {"height": image_size, "width": image_size}
    if hasattr(processor, "crop_size"):
        processor.crop_size = {"height": image_size, "width": image_size}
    if hasattr(processor, "do_center_crop"):
        processor.do_center_crop = False
    return processor


def load_processor(base_model: str, image_size: int) -> BaseImageProcessor:
    return configure_processor(AutoImageProcessor.from_pretrained(base_model), image_size)


def outputs_to_age(logits: np.ndarray | torch.Tensor, settings: AgeSettings) -> tuple[np.ndarray, np.ndarray | None]:
    """Model outputs -> (age in years, model's own spread in years or None)."""
    out = torch.as_tensor(np.asarray(logits) if not isinstance(logits, torch.Tensor) else logits).float()
    if out.ndim == 1:
        out = out[:, None]
    mean, std = settings.output_scale()
    if settings.head == "regression":
        return (out[:, 0] * std + mean).numpy(), None
    if settings.head == "gaussian":
        age = out[:, 0] * std + mean
        log_variance = out[:, 1] - (2 * math.log(settings.age_std) if settings.outputs_in_years else 0.0)
        sigma = torch.exp(0.5 * log_variance.clamp(-20, 20)) * settings.age_std  # clamped in normalised units
        return age.numpy(), sigma.numpy()
    probs = torch.softmax(out, dim=-1)
    bins = torch.arange(out.shape[-1], dtype=torch.float32)
    age = (probs * bins).sum(-1)
    sigma = torch.sqrt((probs * (bins - age[:, None]) ** 2).sum(-1))
    return age.numpy(), sigma.numpy()


def calibrated_spread(age: np.ndarray, settings: AgeSettings) -> np.ndarray | None:
    """Validation MAE of the band each predicted age falls in; None when the checkpoint has no calibration."""
    if not settings.calibration_mae:
        return None
    edges = np.asarray(settings.calibration_edges, dtype=float)
    band = np.clip(
        np.searchsorted(edges, np.asarray(age, dtype=float), side="right") - 1, 0, len(settings.calibration_mae) - 1
    )
    return np.asarray(settings.calibration_mae, dtype=float)[band]


def fit_calibration(
    predicted: np.ndarray, true: np.ndarray, band_width: float = 10.0, min_count: int = 10
) -> tuple[list[float], list[float]]:
    """Per predicted-age band, the MAE on held-out data; sparse bands borrow from their neighbours."""
    predicted = np.asarray(predicted, dtype=float)
    errors = np.abs(predicted - np.asarray(true, dtype=float))
    edges = [float(e) for e in np.arange(0.0, BINS_MAX_AGE + band_width, band_width)][:-1]
    maes: list[float] = []
    overall = float(errors.mean()) if errors.size else float("nan")
    for i, low in enumerate(edges):
        high = edges[i + 1] if i + 1 < len(edges) else math.inf
        width = 0
        while True:  # widen the window until it holds enough samples
            in_band = (predicted >= low - width * band_width) & (predicted < high + width * band_width)
            if in_band.sum() >= min_count or width > len(edges):
                break
            width += 1
        maes.append(float(errors[in_band].mean()) if in_band.any() else overall)
    return edges, maes


def fit_spread_scale(
    errors: np.ndarray,
    spreads: np.ndarray,
    groups: Sequence[str] | None = None,
    target: float = 0.7,
    min_scale: float = 1.0,
) -> tuple[float, dict[str, float]]:
    """The smallest factor on the spread that puts ``target`` of the absolute errors within ±
    in every group (source) at once: a split-conformal quantile taken on the worst group.

    The spread is never narrowed below what it was (``min_scale``): the ID verdict leans on it.
    Returns the scale and the share of errors within the scaled spread per group.
    """
    errors = np.abs(np.asarray(errors, dtype=float))
    spreads = np.maximum(np.asarray(spreads, dtype=float), 1e-6)
    labels = np.asarray(["all"] * len(errors) if groups is None else list(groups))
    ratios = errors / spreads
    scale = min_scale
    for group in sorted(set(labels)):
        chosen = ratios[labels == group]
        if chosen.size:
            scale = max(scale, float(np.quantile(chosen, target, method="higher")))
    coverage = {str(g): float(np.mean(ratios[labels == g] <= scale)) for g in sorted(set(labels))}
    return scale, coverage


def output_layer(model: torch.nn.Module, outputs: int) -> torch.nn.Linear:
    """The last linear layer with ``outputs`` outputs: the age head of any image classifier."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == outputs]
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no linear layer with {outputs} outputs to fold the age scale into."
        )
    return layers[-1]


def fold_into_head(model: PreTrainedModel, settings: AgeSettings) -> AgeSettings:
    """Make the saved model readable by plain transformers (``pipeline("image-classification")``).

    Regression and gaussian heads: ``age_mean`` and ``age_std`` go into the output layer, so the
    first output is the age in years and the second (gaussian) the log-variance in years²;
    ``settings.outputs_in_years`` records it (``age_mean``/``age_std`` stay, for the record). The
    bins head already outputs a score per age: it is declared ``single_label_classification`` so the
    pipeline and the Hub widget apply the softmax and show a probability per age. Idempotent; the
    model gives the same ages through :func:`outputs_to_age` before and after. Call it just before
    saving (training resumes from checkpoints, never from a folded model).
    """
    config = model.config
    labels = output_labels(settings.head)
    config.id2label, config.label2id = dict(enumerate(labels)), {name: i for i, name in enumerate(labels)}
    if settings.head == "bins":
        config.problem_type = "single_label_classification"
    elif not settings.outputs_in_years:
        layer = output_layer(model, settings.num_outputs())
        if layer.bias is None:
            raise ValueError("The age head has no bias: the age mean cannot be folded into it.")
        with torch.no_grad():
            layer.weight[0].mul_(settings.age_std)
            layer.bias[0].mul_(settings.age_std).add_(settings.age_mean)
            if settings.head == "gaussian":
                layer.bias[1].add_(2 * math.log(settings.age_std))
        settings.outputs_in_years = True
        config.problem_type = "regression"
    settings.save_to_config(config)
    return settings


def load_age_model(
    path_or_repo_id: str,
    device: str | torch.device = "cpu",
) -> tuple[PreTrainedModel, BaseImageProcessor, AgeSettings]:
    """Load a fine-tuned age model, its image processor and its settings (local folder or Hub id).

    Raises ``OSError`` saying what to give when the folder or id holds no loadable model.
    """
    try:
        # fp32 always: the shipped checkpoint is stored in fp16 to stay small, and CPUs run fp32 fastest
        model = AutoModelForImageClassification.from_pretrained(path_or_repo_id, dtype=torch.float32)
        processor = AutoImageProcessor.from_pretrained(path_or_repo_id)
    except (OSError, ValueError) as error:
        raise OSError(
            f"Could not load an age model from {path_or_repo_id!r}: {error}\n"
            "Give a folder written by train.py (it holds config.json, model.safetensors and "
            "preprocessor_config.json) or a Hugging Face Hub model id."
        ) from error
    settings = AgeSettings.from_config(model.config)
    if not getattr(model.config, "agecheck", None):
        logger.warning("%s carries no agecheck settings; assuming a plain regressor in years.", path_or_repo_id)
        settings = AgeSettings(head="regression", age_mean=0.0, age_std=1.0)
    model.to(device).eval()
    return model, processor, settings
