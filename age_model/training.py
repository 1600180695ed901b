"""Fine-tune an image backbone as an age estimator with `transformers.Trainer`.

One readable flow, like transformers' run_image_classification example: load data, build model and
processor, transforms, Trainer, train, evaluate, calibrate the uncertainty, save, card, push.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import random
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset, DatasetDict, load_from_disk
from datasets import Image as DatasetImage
from PIL import Image, ImageEnhance, ImageFilter, ImageOps
from transformers import BaseImageProcessor, EvalPrediction, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import IntervalStrategy, SaveStrategy, get_last_checkpoint

from age_model.cards import age_band_counts, age_stats, render_model_card
from age_model.cards.render import display_path
from age_model.data import LoadOptions, load_age_datasets
from age_model.faces.calibration import calibrate_crop
from age_model.faces.crops import DEFAULT_CROP, CropSpec, largest_face_crop
from age_model.hub import HubError, push_model
from age_model.metrics import load_age_error
from age_model.metrics.age_error.age_error import age_errors
from age_model.modeling import (
    BINS_MAX_AGE,
    HEADS,
    AgeSettings,
    build_age_model,
    fit_calibration,
    fit_spread_scale,
    fold_into_head,
    freeze_identity_squeeze_excite,
    head_parameter_names,
    is_config_only,
    load_processor,
    outputs_to_age,
)

logger = logging.getLogger(__name__)


BALANCE_MODES = ("none", "source", "source-age")


def balance_weights(sources: Sequence[str], ages: Sequence[float], mode: str) -> np.ndarray | None:
    """Per-row sampling weights that give every group (source, or source x age decade) the same total."""
    if mode == "none":
        return None
    keys = [s if mode == "source" else f"{s}/{min(int(a) // 10, 9)}" for s, a in zip(sources, ages)]
    counts: dict[str, int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    weights = np.asarray([1.0 / counts[key] for key in keys])
    return weights / weights.sum()


@dataclass
class DataArguments:
    """Where the faces come from and how to read them."""

    data: list[str] = field(
        metadata={
            "help": (
                "Data folder, labels CSV, save_to_disk folder or Hub dataset id; repeat (--data A --data B) to "
                "train on "
                "several sources at once. The first source's framing is the reference: face crops of the other "
                "sources are re-framed through the face detector exactly as serving cuts them."
            ),
            "action": "extend",
        }
    )
    data_format: str = field(default="auto", metadata={"help": "auto, appa-real, final-files, csv, filenames or hub."})
    target: str = field(default="real", metadata={"help": "APPA-REAL label to learn: 'real' or 'apparent' age."})
    image_column: str = field(default="file_name", metadata={"help": "CSV column with the image file name."})
    age_column: str = field(default="real_age", metadata={"help": "CSV column with the age in years."})
    split_column: str = field(
        default="split",
        metadata={"help": "CSV column with train/valid/test; without it a seeded split stratified by age is made."},
    )
    labels_file: str | None = field(
        default=None, metadata={"help": "Labels CSV inside the data folder (default labels.csv or the only CSV)."}
    )
    on_bad_rows: str = field(
        default="error",
        metadata={"help": "'error' stops at the first bad row; 'skip' leaves bad rows out and counts them."},
    )
    faces: str = field(
        default="auto",
        metadata={
            "help": (
                "'cropped': images are face crops; 'detect': photos, find and crop the face; 'auto': from the format."
            )
        },
    )
    feedback: str | None = field(
        default=None,
        metadata={
            "help": (
                "Feedback store URL or export folder: settled corrections override labels (train and validation), "
                "consented uploads join train."
            )
        },
    )
    feedback_on_test: bool = field(
        default=False,
        metadata={
            "help": (
                "Also apply feedback corrections to the test split (off: an annotator saw the model's estimate, "
                "so test figures would lean towards it)."
            )
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.data, (str, Path)):
            self.data = [str(self.data)]
        if self.balance not in BALANCE_MODES:
            raise ValueError(f"--balance must be one of {', '.join(BALANCE_MODES)}, not {self.balance!r}.")
        if self.reframe not in ("auto", "none"):
            raise ValueError(f"--reframe must be 'auto' or 'none', not {self.reframe!r}.")

    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only this many training images (quick runs)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Use only this many validation and test images (quick runs)."}
    )
    balance: str = field(
        default="none",
        metadata={
            "help": (
                "Resample training faces so each group weighs the same: 'none', 'source', or 'source-age' (source "
                "x decade of age). Single-process runs only (DDP keeps the plain sampler)."
            )
        },
    )
    reframe: str = field(
        default="auto",
        metadata={
            "help": (
                "'auto': crops of the second and later sources are re-cut by the detector with the serving crop; "
                "'none': use them as they are."
            )
        },
    )


@dataclass
class ModelArguments:
    """Which backbone, which head, and the preprocessing that is saved with the model."""

    base_model: str = field(
        default="microsoft/resnet-50",
        metadata={
            "help": (
                "Hub id or local folder of any image-classification checkpoint. A folder with a config and no "
                "weights builds the model from scratch."
            )
        },
    )
    head: str = field(
        default="regression",
        metadata={
            "help": (
                f"Output head: {', '.join(HEADS)} (regression: one output; gaussian: age and its variance; bins: "
                f"softmax expectation over ages 0-{BINS_MAX_AGE})."
            )
        },
    )
    loss: str = field(default="l1", metadata={"help": "Loss of the regression head: l1, mse or huber."})
    label_sigma: float = field(
        default=2.0, metadata={"help": "Width in years of the label distribution that the bins head learns."}
    )
    image_size: int = field(
        default=224,
        metadata={
            "help": "Side of the square model input in pixels (use multiples of 32; 160 trains ~2x faster on CPU)."
        },
    )
    crop_margin: float = field(
        default=DEFAULT_CROP.margin,
        metadata={"help": "Margin around a detected face box when photos are cropped (APPA-REAL: 0.4)."},
    )
    crop_style: str = field(
        default=DEFAULT_CROP.style,
        metadata={
            "help": "How photos are cropped around a detected face: box (enlarged by --crop-margin), square, "
            "or aligned (eyes level)."
        },
    )
    freeze_backbone_epochs: int = field(
        default=0, metadata={"help": "Train only the new head for this many epochs first."}
    )
    augment: bool = field(
        default=True,
        metadata={"help": "Random crop/scale, flip, rotation, colour, greyscale and blur on training images."},
    )
    threshold: float = field(default=25.0, metadata={"help": "ID-check age for the policy metrics (Challenge 25)."})


@dataclass
class AgeTrainingArguments(TrainingArguments):
    """TrainingArguments with defaults that suit age regression; every Trainer option still passes through."""

    output_dir: str | None = field(
        default="runs/age-model", metadata={"help": "Where checkpoints, the final model, metrics and card go."}
    )
    eval_strategy: IntervalStrategy | str = field(
        default="epoch", metadata={"help": "When to evaluate on the validation split."}
    )
    save_strategy: SaveStrategy | str = field(
        default="epoch", metadata={"help": "When to save a checkpoint (must match eval_strategy)."}
    )
    load_best_model_at_end: bool = field(
        default=True, metadata={"help": "Keep the checkpoint with the best validation MAE."}
    )
    metric_for_best_model: str = field(
        default="mae", metadata={"help": "Validation metric that picks the best checkpoint."}
    )
    greater_is_better: bool = field(default=False, metadata={"help": "MAE: lower is better."})
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept on disk (the best is always kept)."})
    num_train_epochs: float = field(default=10.0, metadata={"help": "Epochs over the training split."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate (AdamW, cosine decay)."})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay."})
    warmup_steps: float = field(
        default=0.05, metadata={"help": "Warm-up steps (a float below 1 is a share of all steps)."}
    )
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Training batch size per device."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Evaluation batch size per device."})
    logging_steps: float = field(default=20, metadata={"help": "Log the training loss every N steps."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep the image column for the on-the-fly transforms."}
    )
    dataloader_num_workers: int = field(default=0, metadata={"help": "Processes that decode and augment images."})
    channels_last: bool = field(
        default=True, metadata={"help": "channels_last memory format: 1.3-1.9x faster CNN training on CPU."}
    )
    # None = not given: mixed precision is then chosen for the GPU; an explicit False is kept (fp32 training).
    fp16: bool | None = field(
        default=None,
        metadata={
            "help": (
                "float16 mixed precision. Given neither --fp16 nor --bf16, a GPU trains in bf16 where it has it, "
                "else "
                "fp16; a CPU in fp32. --fp16 False --bf16 False trains in fp32 on a GPU too."
            ),
            "nargs": "?",
            "const": True,
        },
    )
    bf16: bool | None = field(
        default=None, metadata={"help": "bfloat16 mixed precision (see --fp16).", "nargs": "?", "const": True}
    )

    def __post_init__(self) -> None:
        self.fp16, self.bf16 = resolve_precision(self.fp16, self.bf16)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available() and not self.use_cpu:
            # torchrun on CPUs: without this, accelerate leaves every process a separate run of its own
            self.use_cpu, self.ddp_backend = True, self.ddp_backend or "gloo"
        super().__post_init__()


def resolve_precision(
    fp16: bool | None, bf16: bool | None, cuda: bool | None = None, bf16_supported: bool | None = None
) -> tuple[bool, bool]:
    """(fp16, bf16): the user's choice where either flag was given, else bf16 (or fp16) on a GPU, fp32 on a CPU."""
    if fp16 is not None or bf16 is not None:
        return bool(fp16), bool(bf16)
    if not (torch.cuda.is_available() if cuda is None else cuda):
        return False, False
    bf16 = torch.cuda.is_bf16_supported() if bf16_supported is None else bf16_supported
    return not bf16, bf16


# --- transforms --------------------------------------------------------------------------------


def augment_face(image: Image.Image, rng: random.Random) -> Image.Image:
    """Photometric and geometric jitter that mimics checkout cameras and old photos.

    Framing jitter (the detector never cuts twice alike), flip, rotation, colour, exposure and
    colour casts, greyscale, blur, low resolution (faces of 24-64 px scaled back up), sensor noise and
    JPEG artefacts (quality 20-95): the gaps between clean training crops and real frames.
    """
    width, height = image.size
    scale = rng.uniform(0.85, 1.08)
    crop_w, crop_h = width * scale, height * scale
    left = rng.uniform(min(0.0, width - crop_w), max(0.0, width - crop_w)) + rng.uniform(-0.04, 0.04) * width
    top = rng.uniform(min(0.0, height - crop_h), max(0.0, height - crop_h)) + rng.uniform(-0.04, 0.04) * height
    image = image.crop((left, top, left + crop_w, top + crop_h))
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    if rng.random() < 0.5:
        image = image.rotate(rng.uniform(-12, 12), resample=Image.BILINEAR)
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.6, 1.4))
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.7, 1.3))
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.6, 1.4))
    if rng.random() < 0.2:  # colour cast: white balance of a cheap camera or a faded print
        gains = [rng.uniform(0.8, 1.2) for _ in range(3)]
        image = Image.merge(
            "RGB", [band.point(lambda v, g=g: min(255, int(v * g))) for band, g in zip(image.split(), gains)]
        )
    if rng.random() < 0.2:  # exposure: gamma
        gamma = rng.uniform(0.6, 1.6)
        image = image.point([min(255, int(255 * (v / 255) ** gamma)) for v in range(256)] * 3)
    if rng.random() < 0.15:
        image = ImageOps.grayscale(image).convert("RGB")
    if rng.random() < 0.15:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0)))
    if rng.random() < 0.2:  # a small face in a wide frame: 24-64 px, scaled back up
        side = rng.randint(24, 64)
        size = image.size
        image = image.resize((side, max(1, round(side * size[1] / size[0]))), Image.BILINEAR).resize(
            size, Image.BILINEAR
        )
    if rng.random() < 0.15:  # sensor noise
        pixels = np.asarray(image, dtype=np.float32)
        noise = np.random.default_rng(rng.getrandbits(32)).normal(0, rng.uniform(3, 12), pixels.shape)
        image = Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))
    if rng.random() < 0.3:  # JPEG artefacts
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=rng.randint(20, 95))
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return image


class FaceTransform:
    """Batch transform for `Dataset.with_transform`: RGB, optional augmentation, the model's own processor."""

    def __init__(self, processor: BaseImageProcessor, augment: bool, flip: bool = False, seed: int = 0) -> None:
        self.processor, self.augment, self.flip, self.seed = processor, augment, flip, seed
        self._rng: random.Random | None = None
        self._rng_owner: tuple[int, int] | None = None

    @property
    def rng(self) -> random.Random:
        """A generator per process: DataLoader workers and DDP ranks each draw their own augmentations."""
        worker = torch.utils.data.get_worker_info()
        owner = (os.getpid(), worker.id if worker else -1)
        if self._rng is None or self._rng_owner != owner:
            rank = int(os.environ.get("RANK", 0))
            self._rng = random.Random(f"{self.seed}-{rank}-{owner[1]}-{torch.initial_seed() if worker else 0}")
            self._rng_owner = owner
        return self._rng

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, Any]:
        images = [image.convert("RGB") for image in batch["image"]]
        if self.augment:
            rng = self.rng
            images = [augment_face(image, rng) for image in images]
        if self.flip:
            images = [ImageOps.mirror(image) for image in images]
        pixel_values = self.processor(images=images, return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixel_values, "labels": torch.tensor(batch["age"], dtype=torch.float32)}


def collate(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return {
        "pixel_values": torch.stack([e["pixel_values"] for e in examples]).contiguous(
            memory_format=torch.channels_last
        ),
        "labels": torch.stack([e["labels"] for e in examples]),
    }


SHARED_CROPS = ".face-crops"  # under the output folder: the main process's crops for the other DDP ranks


def crop_once(
    dataset: DatasetDict, settings: AgeSettings, training_args: TrainingArguments, sources: Iterable[str] | None = None
) -> tuple[DatasetDict, dict[str, int]]:
    """`crop_photos` run by the main process only; under DDP the other ranks wait, then load its result.

    The crops go through the output folder (which every rank of a run shares, as checkpoints do) and
    are removed at the end of the run.
    """
    if training_args.world_size <= 1:
        return crop_photos(dataset, settings, sources)
    shared = Path(training_args.output_dir) / SHARED_CROPS
    with training_args.main_process_first(local=False, desc="finding and cropping faces"):
        if training_args.process_index == 0:
            cropped, dropped = crop_photos(dataset, settings, sources)
            shutil.rmtree(shared, ignore_errors=True)
            cropped.save_to_disk(str(shared))
            (shared / "dropped.json").write_text(json.dumps(dropped))
        else:
            cropped, dropped = load_from_disk(str(shared)), json.loads((shared / "dropped.json").read_text())
    return cropped, dropped


def _remove_shared_crops(trainer: Trainer, output_dir: Path) -> None:
    """Delete the crops `crop_once` shared, once every rank is done with them."""
    if trainer.args.world_size > 1:  # every rank reaches the barrier, whatever it sees on disk
        trainer.accelerator.wait_for_everyone()
        if trainer.is_world_process_zero():
            shutil.rmtree(output_dir / SHARED_CROPS, ignore_errors=True)


def crop_photos(
    dataset: DatasetDict, settings: AgeSettings, sources: Iterable[str] | None = None
) -> tuple[DatasetDict, dict[str, int]]:
    """Detect the largest face in each image and crop it exactly as serving does; drop images without a face.

    ``sources`` limits this to rows of those sources (the others are kept as they are); None: every row.
    Returns the dataset and, per source, how many images had no detectable face.
    """
    chosen = None if sources is None else set(sources)
    framing = settings.crop

    def crop(image: dict[str, Any], source: str) -> dict[str, Any]:
        if chosen is not None and source not in chosen:  # untouched: the stored bytes, never re-encoded
            return {"image": image, "has_face": True}
        photo = Image.open(io.BytesIO(image["bytes"]) if image.get("bytes") else image["path"])
        face = largest_face_crop(photo, framing)
        return {"image": face if face is not None else image, "has_face": face is not None}

    dataset = dataset.cast_column("image", DatasetImage(decode=False))
    dataset = dataset.map(crop, input_columns=["image", "source"], desc="finding and cropping faces")
    dataset = dataset.cast_column("image", DatasetImage())
    dropped: dict[str, int] = {}
    for split in dataset.values():
        for source, has_face in zip(split["source"], split["has_face"]):
            if not has_face:
                dropped[source] = dropped.get(source, 0) + 1
    dataset = dataset.filter(lambda has_face: has_face, input_columns="has_face").remove_columns("has_face")
    return dataset, dropped


# --- loss and metrics --------------------------------------------------------------------------


class AgeTrainer(Trainer):
    """A Trainer whose loss matches the age head; labels are ages in years."""

    def __init__(
        self,
        *args: Any,
        settings: AgeSettings,
        loss: str = "l1",
        label_sigma: float = 2.0,
        sample_weights: np.ndarray | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.settings, self.loss_name, self.label_sigma = settings, loss, label_sigma
        self.sample_weights = sample_weights

    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler | None:
        """With --balance: draw faces by weight (with replacement), as many per epoch as the split holds."""
        if self.sample_weights is None or self.args.world_size > 1:
            return super()._get_train_sampler(train_dataset)
        generator = torch.Generator().manual_seed(self.args.seed)
        return torch.utils.data.WeightedRandomSampler(
            torch.as_tensor(self.sample_weights, dtype=torch.double),
            num_samples=len(self.sample_weights),
            replacement=True,
            generator=generator,
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001 (Trainer's signature)
        outputs = model(pixel_values=inputs["pixel_values"])
        loss = age_loss(
            outputs.logits.float(), inputs["labels"].float(), self.settings, self.loss_name, self.label_sigma
        )
        return (loss, outputs) if return_outputs else loss


def age_loss(
    logits: torch.Tensor, ages: torch.Tensor, settings: AgeSettings, loss: str = "l1", label_sigma: float = 2.0
) -> torch.Tensor:
    """The training loss for each head; ages in years."""
    if settings.head == "bins":
        bins = torch.arange(logits.shape[-1], device=logits.device, dtype=logits.dtype)
        target = torch.exp(-0.5 * ((bins[None, :] - ages[:, None]) / label_sigma) ** 2)
        target = target / target.sum(-1, keepdim=True)
        log_probs = F.log_softmax(logits, dim=-1)
        expectation = (log_probs.exp() * bins).sum(-1)
        # DLDL-v2: match the label distribution, and pull its expectation to the age
        return -(target * log_probs).sum(-1).mean() + 0.1 * (expectation - ages).abs().mean()
    normalized = (ages - settings.age_mean) / settings.age_std
    if settings.head == "gaussian":
        mean, log_var = logits[:, 0], logits[:, 1].clamp(-10, 10)
        return (0.5 * (log_var + (normalized - mean) ** 2 * torch.exp(-log_var))).mean() + 0.5 * (
            normalized - mean
        ).abs().mean()
    prediction = logits[:, 0]
    if loss == "mse":
        return F.mse_loss(prediction, normalized)
    if loss == "huber":
        return F.smooth_l1_loss(prediction, normalized, beta=0.1)
    return F.l1_loss(prediction, normalized)


def metrics_function(settings: AgeSettings, threshold: float, sources: Sequence[str] | None = None):
    """compute_metrics for the Trainer: outputs to ages, then the shipped age-error metric, pooled and per source.

    With several sources the validation metrics also hold ``{source}_mae`` for each and
    ``worst_source_mae`` (the largest), so ``--metric-for-best-model worst_source_mae`` can pick
    the checkpoint that is best on its weakest population; the default ``mae`` is pooled.
    """
    metric = load_age_error()

    def compute(prediction: EvalPrediction) -> dict[str, float]:
        ages, _ = outputs_to_age(prediction.predictions, settings)
        result = metric.compute(predictions=ages, references=prediction.label_ids, threshold=threshold)
        if sources is not None and len(set(sources)) > 1 and len(sources) == len(ages):
            result.update(per_source_errors(ages, np.asarray(prediction.label_ids), sources, threshold, keys=("mae",)))
        return result

    return compute


def per_source_errors(
    predicted: np.ndarray, true: np.ndarray, sources: Sequence[str], threshold: float, keys: Sequence[str] | None = None
) -> dict[str, float]:
    """``{source}_{metric}`` for each source (only ``keys`` where given) and ``worst_source_mae``."""
    labels = np.asarray(sources)
    result: dict[str, float] = {}
    maes = []
    for source in sorted(set(sources)):
        mask = labels == source
        errors = age_errors(np.asarray(predicted)[mask], np.asarray(true)[mask], threshold)
        result.update({f"{source}_{k}": v for k, v in errors.items() if keys is None or k in keys})
        maes.append(errors["mae"])
    result["worst_source_mae"] = max(maes)
    return result


class FreezeBackboneCallback(TrainerCallback):
    """Train only the head for the first epochs, then everything.

    The optimizer is built before on_train_begin with every parameter, so unfrozen weights join in
    later without rebuilding it (AdamW skips parameters whose gradient is None).
    """

    def __init__(self, model: torch.nn.Module, epochs: int) -> None:
        self.model, self.epochs, self.frozen = model, epochs, False
        self.head = head_parameter_names(model)

    def _set(self, frozen: bool) -> None:
        for name, param in self.model.named_parameters():
            if name not in self.head:
                param.requires_grad_(not frozen)
        freeze_identity_squeeze_excite(self.model)
        self.frozen = frozen

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
        if self.epochs > 0 and (state.epoch or 0) < self.epochs:
            self._set(True)
            logger.info("Backbone frozen for the first %d epoch(s)", self.epochs)

    def on_epoch_begin(self, args, state, control, **kwargs):  # noqa: ANN001
        if self.frozen and (state.epoch or 0) >= self.epochs - 1e-6:
            self._set(False)
            logger.info("Backbone unfrozen at epoch %.2f", state.epoch)


# --- the flow ----------------------------------------------------------------------------------


def run_training(
    data_args: DataArguments, model_args: ModelArguments, training_args: AgeTrainingArguments
) -> dict[str, Any]:
    """Train, evaluate, calibrate, save and (optionally) push. Returns the test metrics."""
    output_dir = Path(training_args.output_dir)
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False  # we push our own card, after training
    if push_to_hub and not training_args.hub_model_id:
        raise ValueError("--push-to-hub needs --hub-model-id ORG/NAME.")

    options = LoadOptions(
        data_format=data_args.data_format,
        target=data_args.target,
        image_column=data_args.image_column,
        age_column=data_args.age_column,
        split_column=data_args.split_column,
        labels_file=data_args.labels_file,
        on_bad_rows=data_args.on_bad_rows,
        split_seed=training_args.seed,
    )
    dataset, reports = load_age_datasets(data_args.data, options)
    feedback_summary = None
    if data_args.feedback:
        from age_model.feedback.merge import apply_feedback

        dataset, feedback_summary = apply_feedback(dataset, data_args.feedback, include_test=data_args.feedback_on_test)
        logger.info("Feedback applied: %s", feedback_summary)
    dataset = _limit(dataset, data_args)
    faces = reports[0].faces if data_args.faces == "auto" else data_args.faces
    if "validation" not in dataset or "test" not in dataset:
        raise ValueError(f"{', '.join(data_args.data)}: need validation and test splits; found {list(dataset)}.")
    train_ages = np.asarray(dataset["train"]["age"], dtype=float)
    settings = AgeSettings(
        head=model_args.head,
        age_mean=float(train_ages.mean()),
        age_std=float(train_ages.std() or 1.0),
        target=data_args.target,
        faces=faces,
        crop_margin=model_args.crop_margin,
        crop_style=model_args.crop_style,
        image_size=model_args.image_size,
    )
    source_names = _source_order(dataset)
    dropped: dict[str, int] = {}
    reframed: list[str] = []
    if faces == "detect":  # photos: crop with the very options the predictor will use
        dataset, dropped = crop_once(dataset, settings, training_args)
    else:  # ready-made crops: measure the detection crop that reproduces the reference source's framing
        reference = dataset["train"].filter(lambda s: s == source_names[0], input_columns="source")
        settings = _calibrate_serving_crop(reference, settings, training_args)
        others = [
            name
            for name, report in zip(source_names[1:], reports[1:])
            if report.faces == "detect" or data_args.reframe == "auto"
        ]
        if others and settings.faces == "detect":  # cut them the way serving will cut a photo of them
            dataset, dropped = crop_once(dataset, settings, training_args, sources=others)
            reframed = others
    if dropped:
        logger.info("Faces cropped by detection; images without a detectable face left out: %s", dropped)
    summary = {
        "name": "+".join(Path(str(d)).name or str(d) for d in data_args.data),
        "source": ", ".join(display_path(str(d)) for d in data_args.data),  # published: no absolute local paths
        "sources": source_names,
        "reframed_sources": reframed,
        "format": "+".join(r.data_format for r in reports),
        "target": data_args.target,
        "faces": faces,
        "photos_without_face": sum(dropped.values()),
        "photos_without_face_by_source": dropped,
        "skipped_rows": dict(sum((Counter(r.skipped) for r in reports), Counter())),
        "feedback": feedback_summary,
        "from_scratch": is_config_only(model_args.base_model),
        "splits": {name: len(split) for name, split in dataset.items()},
        "splits_by_source": {name: dict(Counter(split["source"])) for name, split in dataset.items()},
        "age_stats": {name: age_stats(split["age"]) for name, split in dataset.items()},
        "age_bands": age_band_counts(train_ages),
    }
    model = build_age_model(model_args.base_model, settings)
    if training_args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    processor = load_processor(model_args.base_model, model_args.image_size)

    dataset["train"].set_transform(FaceTransform(processor, augment=model_args.augment, seed=training_args.seed))
    for name in ("validation", "test"):
        dataset[name].set_transform(FaceTransform(processor, augment=False))

    callbacks = (
        [FreezeBackboneCallback(model, model_args.freeze_backbone_epochs)] if model_args.freeze_backbone_epochs else []
    )
    trainer = AgeTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset["train"],
        eval_dataset=dataset["validation"],
        data_collator=collate,
        processing_class=processor,
        compute_metrics=metrics_function(settings, model_args.threshold, _sources(dataset["validation"])),
        callbacks=callbacks,
        settings=settings,
        loss=model_args.loss,
        label_sigma=model_args.label_sigma,
        sample_weights=balance_weights(_sources(dataset["train"]), _true(dataset["train"]).tolist(), data_args.balance),
    )
    checkpoint = training_args.resume_from_checkpoint
    if checkpoint == "last":
        checkpoint = get_last_checkpoint(str(output_dir))
        if checkpoint is None:
            raise ValueError(f"--resume-from-checkpoint last: no checkpoint found in {output_dir}.")
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.log_metrics("train", train_result.metrics)

    # Uncertainty calibration: the validation error per predicted-age band travels with the model.
    # Reported figures use flip TTA (the mean of the image and its mirror), as the predictor serves.
    # Then one factor on the ± so that >= spread_target of validation errors fall inside it on every source.
    validation = predict_ages(trainer, dataset["validation"], processor)
    val_ages, val_true, val_sources = validation.ages, _true(dataset["validation"]), _sources(dataset["validation"])
    settings.calibration_edges, settings.calibration_mae = fit_calibration(val_ages, val_true)
    settings.spread_scale, settings.spread_coverage = fit_spread_scale(
        val_ages - val_true,
        validation.spreads(replace(settings, spread_scale=1.0)),
        val_sources,
        target=settings.spread_target,
    )
    settings.base_model = display_path(settings.base_model)  # config.json is published: no absolute local paths
    settings.save_to_config(trainer.model.config)

    eval_metrics = {
        f"eval_{k}": v
        for k, v in _pooled_and_per_source(val_ages, val_true, dataset["validation"], model_args.threshold).items()
    }
    eval_metrics.update(
        {
            f"eval_{k}": v
            for k, v in within_spread(val_ages - val_true, validation.spreads(settings), val_sources).items()
        }
    )
    test = predict_ages(trainer, dataset["test"], processor)
    test_true = _true(dataset["test"])
    test_metrics = {
        f"test_{k}": v
        for k, v in _pooled_and_per_source(test.ages, test_true, dataset["test"], model_args.threshold).items()
    }
    test_metrics.update(
        {
            f"test_{k}": v
            for k, v in within_spread(test.ages - test_true, test.spreads(settings), _sources(dataset["test"])).items()
        }
    )
    test_metrics["test_mae_without_flip_tta"] = float(np.abs(test.plain - test_true).mean())
    trainer.log_metrics("test", test_metrics)

    _save(trainer, output_dir, settings, test_metrics, eval_metrics, summary, model_args, training_args, data_args)
    _remove_shared_crops(trainer, output_dir)
    if push_to_hub and trainer.is_world_process_zero():  # one push, from the process that wrote the card
        try:
            push_model(
                output_dir,
                training_args.hub_model_id,
                private=training_args.hub_private_repo is not False,
                token=training_args.hub_token,
            )
        except HubError as error:  # the model is saved; say how to push it later
            logger.error(
                "%s\nThe trained model is saved in %s: push it later with "
                "`python -m age_model.hub push-model %s --repo-id %s`.",
                error,
                output_dir,
                output_dir,
                training_args.hub_model_id,
            )
    return test_metrics


@dataclass
class SplitPredictions:
    """A split's ages from each image as is and mirrored, and the head's own sigma (or None)."""

    plain: np.ndarray
    mirrored: np.ndarray
    sigma: np.ndarray | None

    @property
    def ages(self) -> np.ndarray:
        """Flip TTA: the mean of the image and its mirror, as the predictor serves."""
        return (self.plain + self.mirrored) / 2

    def spreads(self, settings: AgeSettings) -> np.ndarray:
        """The ± the predictor would show for each face (same function as serving)."""
        from age_model.predictor import combine_spread

        return combine_spread(self.ages, self.sigma, np.abs(self.plain - self.mirrored) / 2, settings)


def predict_ages(trainer: Trainer, split: Dataset, processor: BaseImageProcessor) -> SplitPredictions:
    """Ages for a split from each image as is and mirrored, with the head's sigma."""
    settings: AgeSettings = trainer.settings  # type: ignore[attr-defined]
    ages, sigmas = [], []
    for flip in (False, True):
        split.set_transform(FaceTransform(processor, augment=False, flip=flip))
        logits = trainer.predict(split, metric_key_prefix="predict").predictions
        age, sigma = outputs_to_age(logits, settings)
        ages.append(age.astype(float))
        sigmas.append(None if sigma is None else sigma.astype(float))
    split.set_transform(FaceTransform(processor, augment=False))
    sigma = None if sigmas[0] is None else (sigmas[0] + sigmas[1]) / 2
    return SplitPredictions(ages[0], ages[1], sigma)


def within_spread(errors: np.ndarray, spreads: np.ndarray, sources: Sequence[str]) -> dict[str, float]:
    """Share of absolute errors within ± (pooled as ``within_spread``, and per source when several)."""
    inside = np.abs(errors) <= spreads
    result = {"within_spread": float(inside.mean())}
    labels = np.asarray(sources)
    if len(set(sources)) > 1:
        result.update(
            {f"{source}_within_spread": float(inside[labels == source].mean()) for source in sorted(set(sources))}
        )
    return result


def _pooled_and_per_source(
    predicted: np.ndarray, true: np.ndarray, split: Dataset, threshold: float
) -> dict[str, float]:
    metrics = age_errors(predicted, true, threshold)
    sources = _sources(split)
    if len(set(sources)) > 1:
        metrics.update(per_source_errors(predicted, true, sources, threshold))
    return metrics


def _sources(split: Dataset) -> list[str]:
    return list(split.with_format(None).select_columns(["source"])["source"])


def _source_order(dataset: DatasetDict) -> list[str]:
    """Source names in the order they were given (first appearance in train, then the other splits)."""
    names: list[str] = []
    for name in ("train", "validation", "test"):
        for source in dataset[name]["source"] if name in dataset else []:
            if source not in names:
                names.append(source)
    return names


def _true(split: Dataset) -> np.ndarray:
    return np.asarray(split.with_format(None).select_columns(["age"])["age"], dtype=float)


def _calibrate_serving_crop(train: Dataset, settings: AgeSettings, training_args: TrainingArguments) -> AgeSettings:
    """Measure which detection crop reproduces the training crops' framing, and store it with the model.

    Under DDP the main process measures and sends the result to the other ranks.
    """
    found: list[CropSpec | None] = [None]
    if training_args.process_index == 0:
        sample = train.select(range(min(200, len(train))))
        found = [calibrate_crop([image.convert("RGB") for image in sample["image"]])]
    if training_args.world_size > 1:
        torch.distributed.broadcast_object_list(found, src=0)
    if found[0] is not None:  # with the fitted crop the model can serve whole photos
        settings.crop, settings.faces = found[0], "detect"
    return settings


def _limit(dataset: DatasetDict, data_args: DataArguments) -> DatasetDict:
    limits = {
        "train": data_args.max_train_samples,
        "validation": data_args.max_eval_samples,
        "test": data_args.max_eval_samples,
    }
    for name, limit in limits.items():
        if limit is not None and name in dataset and len(dataset[name]) > limit:
            dataset[name] = dataset[name].shuffle(seed=0).select(range(limit))
    return dataset


def _save(
    trainer: Trainer,
    output_dir: Path,
    settings: AgeSettings,
    test_metrics: dict,
    eval_metrics: dict,
    summary: dict,
    model_args: ModelArguments,
    training_args: TrainingArguments,
    data_args: DataArguments,
) -> None:
    """Model + processor + metrics + data summary + model card, everything a push needs, in one folder.

    Every rank calls this (saving the model may need them all); only the main process writes files.
    """
    fold_into_head(trainer.model, settings)  # plain transformers then reads years / a probability per age
    trainer.save_model(str(output_dir))
    if not trainer.is_world_process_zero():
        return
    _write_json(output_dir / "test_metrics.json", test_metrics)
    _write_json(output_dir / "eval_metrics.json", eval_metrics)
    _write_json(output_dir / "data_summary.json", summary)
    hyperparameters = training_hyperparameters(trainer, model_args, data_args, summary)
    _write_json(output_dir / "training_options.json", hyperparameters)
    card = render_model_card(
        output_dir,
        {**test_metrics, **eval_metrics},
        settings,
        summary,
        training_args.hub_model_id,
        hyperparameters=hyperparameters,
    )
    card.save(str(output_dir / "README.md"))
    logger.info("Saved model, processor, metrics and card to %s", output_dir)


def training_hyperparameters(
    trainer: Trainer, model_args: ModelArguments, data_args: DataArguments, summary: dict
) -> dict[str, Any]:
    """What the run did, for training_options.json and the card: options, precision, steps, and whether it
    was a smoke run.

    A smoke run (subsets of the data, or stopped before one epoch) shows the pipeline works, not how good
    the model can be; the card says so.
    """
    args: TrainingArguments = trainer.args
    state = trainer.state
    train_images = (summary.get("splits") or {}).get("train", 0)
    subsets = {
        name: limit
        for name, limit in (
            ("max_train_samples", data_args.max_train_samples),
            ("max_eval_samples", data_args.max_eval_samples),
        )
        if limit is not None
    }
    epochs_trained = float(state.epoch or 0.0)
    return {
        "model": {**asdict(model_args), "base_model": display_path(model_args.base_model)},
        "learning_rate": args.learning_rate,
        "lr_scheduler_type": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
        "warmup_steps": args.warmup_steps,
        "weight_decay": args.weight_decay,
        "optimizer": str(getattr(args.optim, "value", args.optim)),
        "epochs": args.num_train_epochs,
        "max_steps": args.max_steps,
        "batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "processes": args.world_size,
        "total_batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size,
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "seed": args.seed,
        "balance": data_args.balance,
        "steps_trained": int(state.global_step),
        "epochs_trained": round(epochs_trained, 3),
        "train_images": train_images,
        **subsets,
        "smoke_run": bool(subsets) or epochs_trained < 1.0,
    }


def _write_json(path: Path, data: dict) -> None:
    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, (np.floating, np.integer)):
            return clean(value.item())
        return value

    path.write_text(json.dumps({k: clean(v) for k, v in data.items()}, indent=2, default=str) + "\n")
