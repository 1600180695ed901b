"""Hugging Face Inference Endpoints: the model folder's ``handler.py`` hands every request to here.

``handler.py`` (written by ``python -m age_model.export``) is a two-line shim, so the rules live in
one place, this package. A request is a photo (the raw bytes Endpoints passes for an image
content type, a PIL image, or base64 text in JSON ``{"inputs": "...", "parameters": {"threshold": 25}}``);
the answer lists every face with its age, ± (spread), box, detection score and ID verdict.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from PIL import Image

from age_model.faces import ImageError
from age_model.policy import DEFAULT_THRESHOLD, THRESHOLD_RANGE, verdict
from age_model.predictor import AgePredictor

HANDLER_SOURCE = '''"""Inference Endpoints handler: needs the agecheck package (age_model) installed in the endpoint."""

from age_model.endpoint import EndpointHandler  # noqa: F401
'''


def _photo(inputs: Any) -> bytes | Image.Image:
    if isinstance(inputs, (bytes, bytearray, Image.Image)):
        return inputs
    if isinstance(inputs, str):
        try:
            return base64.b64decode(inputs.split(",", 1)[-1], validate=True)  # also a data: URL
        except (binascii.Error, ValueError):
            raise ImageError("`inputs` must be a photo: its bytes, or base64 text.") from None
    raise ImageError(f"`inputs` must be a photo (bytes or base64 text), got {type(inputs).__name__}.")


class EndpointHandler:
    """What Inference Endpoints instantiates with the repository folder and then calls per request."""

    def __init__(self, path: str = "") -> None:
        self.predictor = AgePredictor(path or ".")

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        parameters = data.get("parameters") or {}
        threshold = parameters.get("threshold", DEFAULT_THRESHOLD)
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, (int, float))
            or not THRESHOLD_RANGE[0] <= threshold <= THRESHOLD_RANGE[1]
        ):
            return {
                "error": f"parameters.threshold must be a number between {THRESHOLD_RANGE[0]} and {THRESHOLD_RANGE[1]}."
            }
        try:
            result = self.predictor.predict([_photo(data.get("inputs", data.get("image")))])[0]
        except ImageError as error:
            return {"error": str(error)}
        if result.error:
            return {"error": result.error}
        return {
            "faces": [
                {
                    "age": round(f.age, 2),
                    "spread": round(f.spread, 2),
                    "box": [round(v, 1) for v in f.box],
                    "score": round(f.score, 3),
                    "verdict": verdict(f.age, f.spread, threshold),
                }
                for f in result.faces
            ],
            "threshold": threshold,
            "message": result.message,
        }
