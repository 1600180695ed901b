"""Write ``model.onnx`` beside a model's weights so the predictor can serve it with ONNX Runtime.

    python -m age_model.export models/agecheck-default            # writes model.onnx and handler.py there
    python -m age_model.export runs/my-model --output /tmp/m.onnx   # somewhere else

The graph is the torch model's own (``torch.onnx.export``), fp32, with a free batch dimension:
pixels ``(batch, 3, size, size)`` in, logits ``(batch, outputs)`` out, exactly what the torch model
gives, so every ``config.agecheck`` rule (head, calibration, framing) applies unchanged. The file
records the SHA-256 of the weights it came from: the predictor ignores a ``model.onnx`` whose weights
have changed since (a retrained folder) and says to export again. Beside it goes ``handler.py``, the
Inference Endpoints entry point (``age_model.endpoint``), when the ONNX file is written into the folder.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
from pathlib import Path
from typing import Sequence

import torch

from age_model.modeling import WEIGHT_FILES, drop_identity_squeeze_excite, load_age_model

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
HANDLER_FILE = "handler.py"
WEIGHTS_KEY = "agecheck_weights_sha256"  # ONNX metadata: which weights the graph was exported from
INPUT_NAME, OUTPUT_NAME = "pixel_values", "logits"
OPSET = 18


class _LogitsOnly(torch.nn.Module):
    """The model as a plain tensor -> tensor function (no ModelOutput dataclass in the graph)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def weights_digest(model_dir: str | Path) -> str | None:
    """SHA-256 of the folder's weights file (the first of WEIGHT_FILES present), or None."""
    for name in WEIGHT_FILES:
        path = Path(model_dir) / name
        if path.is_file():
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            return digest.hexdigest()
    return None


def export_onnx(model_dir: str | Path, output: str | Path | None = None, opset: int = OPSET) -> Path:
    """Export the age model in ``model_dir`` (a local folder) to ONNX; returns the file written.

    Raises FileNotFoundError when the folder has no config.json or no weights."""
    import onnx

    folder = Path(model_dir)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json: give a model folder written by train.py.")
    digest = weights_digest(folder)
    if digest is None:
        raise FileNotFoundError(f"{folder} has no weights ({', '.join(WEIGHT_FILES)}): nothing to export.")
    model, _, settings = load_age_model(str(folder), "cpu")
    dropped = drop_identity_squeeze_excite(model)  # exact identities: same logits, fewer operations
    if dropped:
        logger.info("left out %d squeeze-excite layers that multiply by exactly 1", dropped)
    size = int(settings.image_size)
    example = torch.zeros(2, 3, size, size)
    target = Path(output) if output else folder / ONNX_FILE
    partial = target.with_name(f".{target.name}.part")
    with torch.inference_mode():
        torch.onnx.export(
            _LogitsOnly(model).eval(),
            (example,),
            str(partial),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamo=False,
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    graph = onnx.load(str(partial))
    onnx.helper.set_model_props(graph, {WEIGHTS_KEY: digest, "agecheck_image_size": str(size)})
    onnx.save(graph, str(partial))
    partial.replace(target)  # never a half-written model.onnx for a predictor to pick up
    logger.info("wrote %s (%.1f MB)", target, target.stat().st_size / 1e6)
    if output is None:
        from age_model.endpoint import HANDLER_SOURCE

        (folder / HANDLER_FILE).write_text(HANDLER_SOURCE)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m age_model.export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help="a local model folder (config.json + model.safetensors)")
    parser.add_argument("--output", default=None, help=f"where to write (default: MODEL/{ONNX_FILE})")
    parser.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = export_onnx(args.model, args.output, args.opset)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
