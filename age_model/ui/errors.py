"""User errors: one clear message for the person, one line in the server log, no traceback.

A bad upload or a wrong value is the user's mistake, not the server's: Gradio would print a full
traceback for every ``gr.Error`` unless told not to.
"""

import logging

import gradio as gr

logger = logging.getLogger("age_model.ui")


def user_error(message: str) -> gr.Error:
    """The exception to raise for a user's mistake (``raise user_error("...")``)."""
    logger.info("refused: %s", message.splitlines()[0][:300])
    return gr.Error(message, print_exception=False)
