"""Gradio components with safer defaults. Kept apart because Gradio writes a .pyi stub beside any
module that subclasses a component (ignored by git)."""

from typing import Any

import gradio as gr
from PIL import Image

from age_model.faces import MAX_PIXELS
from age_model.ui.errors import user_error


class SafeImage(gr.Image):
    """gr.Image whose decoding errors become a readable message (the built-in one leaks a temp path)."""

    # Drawn by gr.Image's own frontend; without it the page looks for a custom "safeimage" one and shows no photo input.
    is_template = True

    def preprocess(self, payload: Any) -> Any:
        try:
            return super().preprocess(payload)
        except Image.DecompressionBombError as error:  # Pillow's message gives the size, not the path
            raise user_error(
                f"This image is too large to open safely: {error} Use a photo under {MAX_PIXELS // 1_000_000} MP."
            ) from None
        except Exception as error:  # Pillow raises many kinds for broken files
            raise user_error(
                f"This file could not be opened as an image ({type(error).__name__}). Upload a JPEG, PNG or WebP photo."
            ) from None
