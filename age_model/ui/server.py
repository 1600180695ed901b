"""One web server: the public demo at `/`, the annotators' tool at `/annotate` behind login, `/healthz`."""

import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import gradio as gr  # noqa: E402  (the environment above must be set before gradio is imported)
import uvicorn  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from fastapi.responses import JSONResponse, RedirectResponse  # noqa: E402

from age_model.resources import EXAMPLES_DIR  # noqa: E402
from age_model.ui.guard import GuardMiddleware, GuardPolicy  # noqa: E402
from age_model.ui.predict_tab import VERDICT_CSS, build_predict_tab  # noqa: E402
from age_model.ui.state import AppState  # noqa: E402

logger = logging.getLogger(__name__)

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
    annotators_file: str | None = None  # where they were read from: never served
    hf_annotators: tuple[str, ...] = ()  # Hugging Face user names allowed through a Space's OAuth sign-in
    review: str | None = None
    examples: str | None = None
    queue_size: int = 32
    max_file_size: str = "20mb"
    push_feedback_to: str | None = None
    push_every_minutes: float = 60.0
    guard: GuardPolicy = field(default_factory=GuardPolicy)
    cache_minutes: float = 30.0  # uploads and results older than this are deleted (Gradio's delete_cache)


def example_photos(folder: str | None) -> list[str]:
    """Clickable examples: the user's folder if given, else the public-domain photos shipped in the repo."""
    root = Path(folder) if folder else EXAMPLES_DIR
    suffixes = {".jpg", ".jpeg", ".png", ".webp"}
    return [str(p) for p in sorted(root.iterdir()) if p.suffix.lower() in suffixes][:12] if root.is_dir() else []


def build_demo(state: AppState, options: ServerOptions) -> gr.Blocks:
    """The public page: the Predict and Age groups tabs."""
    from age_model.ui.groups_tab import build_groups_tab

    with gr.Blocks(title=TITLE, delete_cache=_delete_cache(options)) as demo:
        gr.Markdown(
            f"# {TITLE}\nUpload a photo, paste one, or use the webcam. Every face gets an age estimate, "
            f"its uncertainty and a Challenge-{options.threshold:g} verdict. Annotators: [review labels](/annotate)."
        )
        if options.hf_annotators:  # on a Space: annotators sign in with Hugging Face, then open /annotate
            gr.LoginButton("Annotators: sign in with Hugging Face", size="sm", elem_id="hf_login")
        with gr.Tab("Predict"):
            build_predict_tab(state, example_photos(options.examples))
        with gr.Tab("Age groups"):
            build_groups_tab(state)
    return demo.queue(max_size=options.queue_size, default_concurrency_limit=1)


def build_annotator_app(state: AppState, options: ServerOptions) -> gr.Blocks:
    """The annotators' page: Annotate and Stats tabs (login required)."""
    from age_model.ui.annotate import build_annotate_app

    return build_annotate_app(state, options).queue(max_size=options.queue_size)


def warm_up(state: AppState, examples: list[str]) -> float:
    """Run one photo through the whole Predict path before the first visitor does (seconds taken).

    The first call pays for ONNX Runtime's first run, the detector, the font, the JPEG encoder and
    Gradio's own first-event imports: time the first user would otherwise wait. Nothing is kept from it.
    """
    from PIL import Image

    from age_model.ui.predict_tab import predict_photo

    start = time.perf_counter()
    try:  # Gradio's first event switches matplotlib's backend, importing pyplot: ~0.4 s of the first request
        from gradio.utils import MatplotlibBackendMananger

        with MatplotlibBackendMananger():
            pass
    except (ImportError, AttributeError):  # another Gradio version: the first request pays, nothing breaks
        pass
    if state.predictor is None:
        return time.perf_counter() - start
    folder = Path(tempfile.mkdtemp(prefix="agecheck-warmup-"))
    try:
        photo = examples[0] if examples else str(folder / "gray.png")
        if not examples:
            Image.new("RGB", (320, 240), "gray").save(photo)
        predict_photo(state, photo, state.threshold)
    except Exception as error:  # a bad example must not stop the server: the first request just pays
        logger.warning("warm-up failed (%s); the first request will be slower", error)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    seconds = time.perf_counter() - start
    logger.info("warm-up: one photo through the Predict path in %.2f s", seconds)
    return seconds


def _delete_cache(options: ServerOptions) -> tuple[int, int]:
    seconds = max(60, int(options.cache_minutes * 60))
    return (max(60, seconds // 4), seconds)


def private_upload_folder() -> Path:
    """This process's folder for uploads and results (Gradio's GRADIO_TEMP_DIR), removed when `serve` stops.

    One per process, made before the pages are built (Gradio reads the variable when a Blocks or
    its app is created, and again on every upload check). A GRADIO_TEMP_DIR the user set is
    respected and never removed.
    """
    if not os.environ.get("GRADIO_TEMP_DIR"):
        os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="agecheck-uploads-")
        os.environ["AGECHECK_OWNS_TEMP_DIR"] = os.environ["GRADIO_TEMP_DIR"]
    # The clickable examples' cached results: a fresh folder per process (else ./.gradio/cached_examples,
    # which a restart with another model would serve stale), removed when `serve` stops.
    if not os.environ.get("GRADIO_EXAMPLES_CACHE"):
        os.environ["GRADIO_EXAMPLES_CACHE"] = tempfile.mkdtemp(
            prefix="cached-examples-", dir=os.environ["GRADIO_TEMP_DIR"]
        )
        os.environ["AGECHECK_OWNS_EXAMPLES_CACHE"] = os.environ["GRADIO_EXAMPLES_CACHE"]
    return Path(os.environ["GRADIO_TEMP_DIR"])


def remove_upload_folder() -> None:
    """Delete this process's uploads folder, if agecheck made it (never a folder the user chose)."""
    examples = os.environ.get("AGECHECK_OWNS_EXAMPLES_CACHE")
    if examples and examples == os.environ.get("GRADIO_EXAMPLES_CACHE"):
        shutil.rmtree(examples, ignore_errors=True)
    owned = os.environ.get("AGECHECK_OWNS_TEMP_DIR")
    if owned and owned == os.environ.get("GRADIO_TEMP_DIR"):
        shutil.rmtree(owned, ignore_errors=True)


def private_paths(state: AppState, options: ServerOptions) -> list[str]:
    """Files no page may ever read or serve, whatever else is allowed: the store and the logins."""
    paths = [str(Path(options.annotators_file).resolve())] if options.annotators_file else []
    location = getattr(state.store, "location", None)
    if location is not None:
        if location.backend == "sqlite" and location.url.database:
            paths.append(str(Path(location.url.database).resolve().parent))
        if location.images_dir:
            paths.append(str(Path(location.images_dir).resolve()))
    return paths


def seal(blocks: gr.Blocks) -> None:
    """Make a mounted Blocks check file paths as a launched one does.

    Gradio only refuses request payloads that name server files (``{"path": "/etc/passwd"}``)
    once ``has_launched`` is set, which only ``Blocks.launch()`` does; ``mount_gradio_app`` leaves
    it unset, and then any file on the server could be copied into the cache and served.
    """
    blocks.has_launched = True


def create_app(options: ServerOptions, state: AppState | None = None) -> FastAPI:
    """The FastAPI app with both Gradio pages mounted; `state` is loaded from `options` unless given."""
    uploads = private_upload_folder()
    state = state or AppState.load(options.model, options.store, options.threshold)
    state.upload_folder = uploads
    warm_up(state, example_photos(options.examples))
    app = FastAPI(title="agecheck")

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        health = state.health()
        return JSONResponse(health, status_code=200 if health["status"] == "ok" else 503)

    @app.get("/annotate", include_in_schema=False)
    def annotate_without_slash() -> RedirectResponse:  # else the demo mounted at / answers 404
        return RedirectResponse("annotate/")

    annotator_login = None  # Hugging Face sign-in on a Space instead of passwords (age_model/ui/hf_login.py)
    if options.hf_annotators:
        from age_model.ui import hf_login

        if options.annotators:
            raise hf_login.HfLoginError(
                "Annotators sign in either with passwords (--annotators) or with Hugging Face "
                "(--hf-annotators), not both."
            )
        annotator_login = hf_login.enable(app, options.hf_annotators)
    common = dict(
        max_file_size=options.max_file_size,
        show_error=True,
        run_history=False,
        footer_links=["api"],
        blocked_paths=private_paths(state, options),
    )
    auth = list(options.annotators.items()) or None
    # Keyboard shortcuts and styles: Gradio 6 takes them at mount.
    from age_model.ui.annotate import CSS_PATHS, HEAD_PATHS

    annotator_app, demo = build_annotator_app(state, options), build_demo(state, options)
    app = gr.mount_gradio_app(
        app,
        annotator_app,
        path="/annotate",
        auth=auth,
        auth_dependency=annotator_login,
        auth_message="agecheck annotators: log in with the name and password you were given.",
        head_paths=HEAD_PATHS,
        css_paths=CSS_PATHS,
        **common,
    )
    app = gr.mount_gradio_app(app, demo, path="/", css=VERDICT_CSS, **common)
    for blocks in (annotator_app, demo):
        seal(blocks)
    app.add_middleware(GuardMiddleware, policy=options.guard)
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
        self.app.state.agecheck.shutdown()


class _Server(uvicorn.Server):
    """uvicorn's server, except that a caught Ctrl-C / SIGTERM is not raised again after shutdown:
    `serve` still has to stop the background work and remove the uploads."""

    @contextlib.contextmanager
    def capture_signals(self):  # noqa: ANN201 (uvicorn's signature)
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def serve(options: ServerOptions) -> None:
    """Run until Ctrl-C or SIGTERM (what `python app.py` does), then stop cleanly within a few seconds."""
    app = create_app(options)
    state = app.state.agecheck
    logger.info(
        "agecheck on http://%s:%d (annotators: /annotate); uploads kept in %s for %g minutes at most",
        options.host,
        options.port,
        state.upload_folder,
        options.cache_minutes,
    )
    # Open heartbeat streams (every browser tab) would otherwise hold the shutdown for long.
    server = _Server(
        uvicorn.Config(app, host=options.host, port=options.port, log_level="info", timeout_graceful_shutdown=2)
    )
    try:
        server.run()
    finally:
        stopped = state.shutdown(timeout=3.0)
        remove_upload_folder()
        if not stopped:
            logger.warning("a background task did not stop in time; exiting anyway")
        logger.info("agecheck stopped")
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        # Skip the interpreter's slow teardown of torch and gradio (seconds on a busy CPU), and
        # never let a thread still inside torch abort the process at exit.
        os._exit(0)
