"""Photos in, an age with its uncertainty per face out: load, detect, crop as trained, batch, estimate.

One :class:`AgePredictor` per process holds the model; ``predict`` batches the faces of all the
photos it is given into a few forward passes. A photo that cannot be read gets its error in its own
:class:`PhotoResult` and the others still run.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
import torch
from PIL import Image

from age_model.faces.crops import crop_face
from age_model.faces.detection import DEFAULT_SCORE_THRESHOLD, MIN_FACE_PX, Face, detect_faces
from age_model.faces.intake import ImageError, ImageSource, load_image
from age_model.modeling import (
    AgeSettings,
    calibrated_spread,
    drop_identity_squeeze_excite,
    load_age_model,
    outputs_to_age,
)

logger = logging.getLogger(__name__)

# Spread of a checkpoint with no uncertainty of its own (plain regression head, no validation
# calibration, no TTA): between the 6.5 and 13.3 years MAE measured on raw photos (DESIGN.md).
UNCALIBRATED_SPREAD = 10.0
MAD_PER_SIGMA = math.sqrt(2.0 / math.pi)  # mean absolute deviation of a normal distribution per unit sigma
NO_FACE_MESSAGE = f"No face found: use a photo where the face is visible, frontal and at least {MIN_FACE_PX} px wide."


@dataclass
class FaceEstimate:
    """One face: ``box`` (x0, y0, x1, y1) in the photo's upright pixels, clipped to the photo;
    ``age`` in years (not clipped); ``spread`` the expected absolute error in years; ``score`` the
    detection score (1.0 when the model takes ready-made crops)."""

    box: tuple[float, float, float, float]
    age: float
    spread: float
    score: float


@dataclass
class PhotoResult:
    """One input photo. ``error`` is set when the photo could not be used; ``message`` explains an
    empty ``faces`` (no face found) without it being an error; ``seconds`` is this photo's own
    decode/detect/crop time plus its share (per face) of the batched model time."""

    faces: list[FaceEstimate] = field(default_factory=list)
    error: str | None = None
    message: str | None = None
    seconds: float = 0.0
    size: tuple[int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def combine_spread(
    age: np.ndarray, head_sigma: np.ndarray | None, tta_gap: np.ndarray | None, settings: AgeSettings
) -> np.ndarray:
    """Expected absolute error (years) per face from every uncertainty the checkpoint offers.

    The model part is the larger of the head's own spread (sigma converted to a mean absolute
    deviation) and the validation MAE of the predicted-age band: never claim less than validation
    showed, but let the head say where it is unsure. Half the disagreement between the image and its
    mirror image adds to it in quadrature: a face the model reads differently when flipped is one it
    is unsure about. Last, the checkpoint's ``spread_scale`` (fitted across sources) widens it.
    """
    age = np.asarray(age, dtype=float)
    parts = [
        p
        for p in (
            None if head_sigma is None else np.asarray(head_sigma, dtype=float) * MAD_PER_SIGMA,
            calibrated_spread(age, settings),
        )
        if p is not None
    ]
    model_part = np.maximum.reduce(parts) if parts else np.full(age.shape, UNCALIBRATED_SPREAD)
    if tta_gap is not None:
        model_part = np.sqrt(model_part**2 + np.asarray(tta_gap, dtype=float) ** 2)
    return np.maximum(model_part * float(settings.spread_scale or 1.0), 1e-3)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class TorchRunner:
    """Pixels (numpy, N x 3 x H x W) -> logits (numpy) through the transformers model."""

    name = "torch"

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.device = device
        drop_identity_squeeze_excite(model)  # exact identities (EfficientNet-Lite): same outputs, less work
        # channels_last: measured faster for the EfficientNets on CPU (shared/weights/README.txt)
        self.model = model.to(memory_format=torch.channels_last) if device.type == "cpu" else model

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device)
        if self.device.type == "cpu":
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return self.model(pixel_values=batch).logits.float().cpu().numpy()


class OnnxRunner:
    """The same function through ONNX Runtime on ``model.onnx`` (``python -m age_model.export``).

    ``InferenceSession.run`` is thread-safe, so one runner serves concurrent requests.
    """

    name = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        # No busy-waiting between runs: spinning threads stole the cores from detection and from
        # concurrent requests (a batch of two took 27-31 ms with it, 9 ms without, on 2 busy cores).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(pixels, dtype=np.float32)})[0]


def onnx_runner_for(model: str | Path) -> OnnxRunner | None:
    """A runner on the folder's ``model.onnx`` if it was exported from the weights now there, else
    None (with a warning when one exists but is stale: a retrained folder must not serve the old graph)."""
    from age_model.export import ONNX_FILE, WEIGHTS_KEY, weights_digest

    path = Path(model) / ONNX_FILE
    if not path.is_file():
        return None
    try:
        runner = OnnxRunner(path)
    except ImportError:
        logger.warning("%s exists but onnxruntime is not installed: using torch (pip install onnxruntime).", path)
        return None
    if runner.session.get_modelmeta().custom_metadata_map.get(WEIGHTS_KEY) != weights_digest(model):
        logger.warning(
            "%s was exported from other weights than the folder holds now: using torch. "
            "Run `python -m age_model.export %s` to refresh it.",
            path,
            model,
        )
        return None
    return runner


class AgePredictor:
    """A loaded age model plus the face detector, ready to estimate ages on photos or crops.

    The model runs through ONNX Runtime when the model folder holds an up-to-date ``model.onnx``
    and the device is the CPU (``backend="auto"``), through torch otherwise; both give the same
    logits (tests/test_export.py checks it to 1e-4).
    """

    def __init__(
        self,
        model: str | Path,
        device: str | None = None,
        tta: bool = True,
        batch_size: int = 32,
        score_threshold: float = DEFAULT_SCORE_THRESHOLD,
        backend: str = "auto",
    ) -> None:
        if backend not in ("auto", "torch", "onnxruntime"):
            raise ValueError(f"Unknown backend {backend!r}: choose auto, torch or onnxruntime.")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model, self.processor, self.settings = load_age_model(str(model), self.device)
        onnx = onnx_runner_for(model) if backend != "torch" and self.device.type == "cpu" else None
        if backend == "onnxruntime" and onnx is None:
            raise ValueError(f"{model} has no up-to-date model.onnx: run `python -m age_model.export {model}` first.")
        self.runner: TorchRunner | OnnxRunner = onnx or TorchRunner(self.model, self.device)
        self.model_name = str(model)
        self.tta = tta
        self.batch_size = max(1, int(batch_size))
        self.score_threshold = score_threshold

    @property
    def backend(self) -> str:
        """``"onnxruntime"`` or ``"torch"``: what runs the model."""
        return self.runner.name

    @property
    def spread_basis(self) -> str:
        """What the spreads rest on, e.g. ``"head+calibration+flip"``: shown beside them in the UI."""
        parts = [
            name
            for name, present in (
                ("head", self.settings.head in ("gaussian", "bins")),
                ("calibration", bool(self.settings.calibration_mae)),
                ("flip", self.tta),
            )
            if present
        ]
        return "+".join(parts) if parts else "uncalibrated"

    # ------------------------------------------------------------------ crops

    def preprocess(self, crops: Sequence[Image.Image]) -> np.ndarray:
        """Crops to the model's input (float32, N x 3 x H x W) with the checkpoint's own image processor."""
        return self.processor(images=[c.convert("RGB") for c in crops], return_tensors="np")["pixel_values"]

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        """The model's raw outputs for a batch of preprocessed crops."""
        return self.runner(np.asarray(pixels, dtype=np.float32))

    def estimate(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One forward pass (one batch of two images per face with flip TTA) -> (ages, spreads) in years."""
        pixels = np.asarray(pixels, dtype=np.float32)
        count = pixels.shape[0]
        batch = np.concatenate([pixels, pixels[..., ::-1]]) if self.tta else pixels
        ages, sigma = outputs_to_age(self.logits(batch), self.settings)
        tta_gap = None
        if self.tta:
            tta_gap = np.abs(ages[:count] - ages[count:]) / 2
            ages = (ages[:count] + ages[count:]) / 2
            sigma = None if sigma is None else (sigma[:count] + sigma[count:]) / 2
        return ages.astype(float), combine_spread(ages, sigma, tta_gap, self.settings)

    def predict_crops(self, crops: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """Ages and spreads for ready-made face crops (no detection), in batches of ``batch_size``."""
        ages, spreads = [], []
        for chunk in _chunks(list(crops), self.batch_size):
            a, s = self.estimate(self.preprocess(chunk))
            ages.append(a)
            spreads.append(s)
        if not ages:
            return np.zeros(0), np.zeros(0)
        return np.concatenate(ages), np.concatenate(spreads)

    # ------------------------------------------------------------------ photos

    def find_faces(self, photo: Image.Image) -> tuple[list[Face], list[Image.Image]]:
        """The faces of an upright RGB photo and their crops, framed as the model was trained.

        Raises ``ValueError`` when the model's settings name an unknown crop style.
        """
        if self.settings.faces == "cropped":
            width, height = photo.size
            return [Face(box=(0.0, 0.0, float(width), float(height)), score=1.0, landmarks=())], [photo]
        faces = detect_faces(photo, self.score_threshold)
        crop = self.settings.crop
        return faces, [crop_face(photo, face, crop) for face in faces]

    def predict(self, images: ImageSource | Sequence[ImageSource]) -> list[PhotoResult]:
        """One :class:`PhotoResult` per input (a single input is treated as a list of one).

        Faces of all photos go through the model together, ``batch_size`` at a time, so memory
        stays bounded however many photos come in. Unreadable photos carry ``error``; photos without
        a face carry an empty ``faces`` and a ``message``.
        """
        if isinstance(images, (str, Path, bytes, bytearray, Image.Image, np.ndarray)):
            images = [images]
        results: list[PhotoResult] = []
        pending: list[tuple[int, Face, Image.Image]] = []
        for index, source in enumerate(images):
            result, found = self._prepare(source)
            results.append(result)
            pending.extend((index, face, crop) for face, crop in found)
            while len(pending) >= self.batch_size:
                self._estimate_pending(results, pending[: self.batch_size])
                pending = pending[self.batch_size :]
        self._estimate_pending(results, pending)
        return results

    def _prepare(self, source: ImageSource) -> tuple[PhotoResult, list[tuple[Face, Image.Image]]]:
        start = time.perf_counter()
        try:
            photo = load_image(source)
            faces, crops = self.find_faces(photo)
        except (ImageError, cv2.error) as error:
            return PhotoResult(error=str(error), seconds=time.perf_counter() - start), []
        result = PhotoResult(
            size=photo.size, message=None if faces else NO_FACE_MESSAGE, seconds=time.perf_counter() - start
        )
        return result, list(zip(faces, crops))

    def _estimate_pending(self, results: list[PhotoResult], pending: list[tuple[int, Face, Image.Image]]) -> None:
        """One forward pass over at most ``batch_size`` faces (``predict`` cuts the batches)."""
        if not pending:
            return
        start = time.perf_counter()
        ages, spreads = self.estimate(self.preprocess([crop for _, _, crop in pending]))
        share = (time.perf_counter() - start) / len(pending)
        for (index, face, _), age, spread in zip(pending, ages, spreads):
            result = results[index]
            result.faces.append(
                FaceEstimate(
                    box=_clip_box(face.box, result.size), age=float(age), spread=float(spread), score=float(face.score)
                )
            )
            result.seconds += share


def _clip_box(box: Sequence[float], size: tuple[int, int] | None) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    if size is None:
        return (x0, y0, x1, y1)
    width, height = size
    return (min(max(x0, 0.0), width), min(max(y0, 0.0), height), min(max(x1, 0.0), width), min(max(y1, 0.0), height))


# --------------------------------------------------------------------------- loading by name


HOW_TO_GET_A_MODEL = (
    "Get one by training: `.venv/bin/python train.py --help` (it writes a model folder; e.g. "
    "`--data ../shared/data/utkface --base-model ../shared/weights/efficientnet-lite0 --image-size 160 "
    "--output-dir runs/utk`), then name it with --model FOLDER_OR_HUB_ID or set AGE_MODEL."
)


class ModelLoadError(RuntimeError):
    """No age model could be loaded from what was named; show it with HOW_TO_GET_A_MODEL."""


def use_threads(threads: int | None) -> None:
    """Pin torch's and OpenCV's CPU threads (1 keeps latency steady on a CPU shared with other work)."""
    if threads:
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)


def load_predictor(
    model: str | Path | None = None,
    *,
    tta: bool = True,
    batch_size: int = 32,
    device: str | None = None,
    score_threshold: float | None = None,
    backend: str = "auto",
    threads: int | None = None,
) -> AgePredictor:
    """An :class:`AgePredictor` for a model folder or Hub id (None: ``resources.default_model()``).

    The one way the CLI, the app and the benchmarks load a model by name. Raises :class:`ModelLoadError`
    when nothing is at a local path (a missing folder is never sent to the Hub unless it was named as
    ``owner/name``), when the weights cannot be read, or for an unknown ``backend``.
    """
    from age_model.repo_ids import is_repo_id
    from age_model.resources import default_model

    use_threads(threads)
    explicit = model is not None
    name = str(model) if explicit else default_model()
    if not Path(name).expanduser().exists() and not (explicit and is_repo_id(name)):
        where = "as named" if explicit else "the default: $AGE_MODEL, else the shipped agecheck-default"
        raise ModelLoadError(f"no age model at {name} ({where})")
    try:
        return AgePredictor(
            name,
            device=device,
            tta=tta,
            batch_size=batch_size,
            backend=backend,
            score_threshold=DEFAULT_SCORE_THRESHOLD if score_threshold is None else score_threshold,
        )
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"could not load the age model {name}: {error}") from error
