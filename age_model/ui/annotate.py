"""The annotators' page (placeholder until the review tab lands)."""

import gradio as gr


def build_annotate_app(state, options) -> gr.Blocks:
    with gr.Blocks(title="agecheck annotators") as page:
        gr.Markdown("# Annotate\nComing next.")
    return page
