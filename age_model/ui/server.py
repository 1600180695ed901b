"""One web server: the public demo at `/`, the annotators' tool at `/annotate` behind login, `/healthz`."""

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import gradio as gr  # noqa: E402  (the environment above must be set before gradio is imported)
import uvicorn  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from fastapi.responses import RedirectResponse  # noqa: E402

from age_model.ui.predict import build_predict_tab  # noqa: E402
from age_model.ui.state import REPO_ROOT, AppState  # noqa: E402

logger = logging.getLogger(__name__)

EXAMPLES_DIR = REPO_ROOT / "examples"
TITLE = "agecheck: how old does this face look?"


@dataclass
class ServerOptions:
    """Everything `app.py --help` lists, in one place."""

    model: str
    store: str
    host: str = "127.0.0.1"
    port: int = 7860
    threshold: float = 25.0
    annotators: dict[str, str] = field(default_factory=dict)  # user -> password
    review: str | None = None
    examples: str | None = None
    queue_size: int = 32
    max_file_size: str = "20mb"
    push_feedback_to: str | None = None
    push_every_minutes: float = 60.0


def example_photos(folder: str | None) -> list[str]:
    """Clickable examples: the user's folder if given, else the public-domain photos shipped in the repo."""
    root = Path(folder) if folder else EXAMPLES_DIR
    suffixes = {".jpg", ".jpeg", ".png", ".webp"}
    return [str(p) for p in sorted(root.iterdir()) if p.suffix.lower() in suffixes][:12] if root.is_dir() else []


def build_demo(state: AppState, options: ServerOptions) -> gr.Blocks:
    """The public page: the Predict tab."""
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"# {TITLE}\nUpload a photo, paste one, or use the webcam. Every face gets an age estimate, "
                    f"its uncertainty and a Challenge-{options.threshold:g} verdict. Annotators: [review labels](/annotate).")
        with gr.Tab("Predict"):
            build_predict_tab(state, example_photos(options.examples))
    return demo.queue(max_size=options.queue_size, default_concurrency_limit=1)


def build_annotator_app(state: AppState, options: ServerOptions) -> gr.Blocks:
    """The annotators' page: Annotate and Stats tabs (login required)."""
    from age_model.ui.annotate import build_annotate_app

    return build_annotate_app(state, options).queue(max_size=options.queue_size)


def create_app(options: ServerOptions, state: AppState | None = None) -> FastAPI:
    """The FastAPI app with both Gradio pages mounted; `state` is loaded from `options` unless given."""
    state = state or AppState.load(options.model, options.store, options.threshold)
    app = FastAPI(title="agecheck")

    @app.get("/healthz")
    def healthz() -> dict:
        return state.health()

    @app.get("/annotate", include_in_schema=False)
    def annotate_without_slash() -> RedirectResponse:  # else the demo mounted at / answers 404
        return RedirectResponse("annotate/")

    common = dict(max_file_size=options.max_file_size, show_error=True, run_history=False, footer_links=["api"])
    auth = list(options.annotators.items()) or None
    from age_model.ui.annotate import ANNOTATE_CSS, ANNOTATE_HEAD  # keyboard shortcuts: Gradio 6 takes them at mount

    app = gr.mount_gradio_app(app, build_annotator_app(state, options), path="/annotate", auth=auth,
                              auth_message="agecheck annotators: log in with the name and password you were given.",
                              head=ANNOTATE_HEAD, css=ANNOTATE_CSS, **common)
    app = gr.mount_gradio_app(app, build_demo(state, options), path="/", **common)
    app.state.agecheck = state
    return app


class BackgroundServer:
    """uvicorn in a thread: for tests and notebooks (`with BackgroundServer(options) as url: ...`)."""

    def __init__(self, options: ServerOptions, state: AppState | None = None) -> None:
        self.app = create_app(options, state)
        config = uvicorn.Config(self.app, host=options.host, port=options.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.url = f"http://{options.host}:{options.port}"
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"the app did not start on {self.url}")
            time.sleep(0.05)
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=1)
        if self.thread.is_alive():  # open heartbeat streams (browsers, gradio_client) would hold it ~15 s
            self.server.force_exit = True
            self.thread.join(timeout=10)


def serve(options: ServerOptions) -> None:
    """Run until interrupted (what `python app.py` does)."""
    app = create_app(options)
    logger.info("agecheck on http://%s:%d (annotators: /annotate)", options.host, options.port)
    uvicorn.run(app, host=options.host, port=options.port, log_level="info")
