"""`lifelong serve`: a model store over HTTP (FastAPI). Predictions follow the store's current version: after a
`learn` (from the command line or `POST /learn`) the next request loads the new version, with no restart.

A client's mistake is a 4xx, never a 500: every request is checked before the model sees it (`Gate`: the token of
`POST /learn` before its body is read, body size 413, a body that stalls 408; the schemas below: batch size, and
each text and label through the same checks as the loaders, 422), and the validation-error answer never echoes
input (a lone surrogate or NaN cannot be encoded). An unreadable model is a 503 with a message on every route.
Messages name files relative to the model folder: a client has no business knowing the server's paths. Inference
is serialised: the backbone already uses every core it is given, so concurrent requests would only contend.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import os
import re
import threading
from typing import Annotated

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from starlette.exceptions import HTTPException as StarletteHTTPException
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..data.rows import check_label, check_text, show
from ..errors import LifelongError
from .store import Model, ModelStore, StoreBusy

log = logging.getLogger(__name__)

MAX_BATCH = 256
MAX_TEXT_CHARS = 2_000
MAX_PREDICT_BODY = 1_000_000  # bytes
MAX_LEARN_BODY = 64_000_000
MAX_LEARN_EXAMPLES = 200_000
HEADER_TIMEOUT = 10.0  # seconds for a request's headers to arrive, from connect or the previous answer
BODY_TIMEOUT = 30.0  # seconds between two chunks of a body
MAX_HEADER_BYTES = 16_384


def _checked(check, **kw):
    """A pydantic validator from a `rows` check: its LifelongError becomes a field error (a 422)."""
    def validate(value):
        try:
            return check(value, "request", **kw)
        except LifelongError as e:
            raise ValueError(str(e).removeprefix("request: ")) from None
    return AfterValidator(validate)


Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS), _checked(check_text)]
Label = Annotated[str, _checked(check_label)]
TaskName = Annotated[str, _checked(lambda v, where: v and check_label(v, where, "name", reserved=()))]


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    texts: list[Text] = Field(min_length=1, max_length=MAX_BATCH)
    top_k: int = Field(default=1, ge=1, le=20)


class TopClass(BaseModel):
    label: str
    score: float


class Prediction(BaseModel):
    label: str = Field(description="The predicted class, or `out_of_scope` when `score` is below the threshold.")
    score: float = Field(description="The confidence the out-of-scope threshold is compared with: the method's own "
                                     "measure of being in scope, not necessarily the top class's score.")
    top: list[TopClass] = Field(description="The `top_k` classes and their class scores, best first.")


class PredictResponse(BaseModel):
    version: int
    predictions: list[Prediction]


class Health(BaseModel):
    status: str
    version: int


class LearnResponse(BaseModel):
    version: int
    threshold: float | None
    metrics: dict | None


class Example(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    text: Text
    label: Label


class LearnRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: TaskName = ""
    examples: list[Example] = Field(min_length=1, max_length=MAX_LEARN_EXAMPLES)
    held_out: list[Example] | None = Field(default=None, max_length=MAX_LEARN_EXAMPLES)


class SafeJSON(JSONResponse):
    """JSON that can always be sent: non-ASCII escaped (a lone surrogate read from a damaged file cannot break
    the answer), non-finite numbers as null."""

    def render(self, content) -> bytes:
        return json.dumps(_finite(content), ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


def _finite(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


class Gate:
    """ASGI middleware, before any body is read: `POST /learn`'s token (403 when learning is off, 401 without
    'Bearer TOKEN'), then the body: 413 past its path's limit (declared or streamed), 408 when it stalls."""

    def __init__(self, app, limits: dict[str, int], default: int, learn_token: str | None, timeout: float):
        self.app, self.limits, self.default, self.token, self.timeout = app, limits, default, learn_token, timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if scope["path"] == "/learn":
            refused = _refuse_learn(self.token, headers.get(b"authorization"))
            if refused:
                return await _answer(send, *refused)
        limit = self.limits.get(scope["path"], self.default)
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await _answer(send, 413, f"request body over {limit} bytes")
        seen, answered, done = 0, False, False

        async def counted():
            nonlocal seen, answered, done
            if done:  # the body is in: what follows is a wait for a disconnect, untimed
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
            except TimeoutError:
                message, why = None, (408, f"request body stalled for {self.timeout:g} seconds")
            else:
                if message["type"] == "http.request":
                    seen += len(message.get("body", b""))
                    done = not message.get("more_body", False)
                    why = (413, f"request body over {limit} bytes") if seen > limit else None
                else:
                    why = None
            if why:
                if not answered:
                    answered = True
                    await _answer(send, *why)
                return {"type": "http.disconnect"}  # the app stops reading; its own answer is dropped
            return message

        async def guarded(message):
            if not answered:
                await send(message)

        await self.app(scope, counted, guarded)


def _refuse_learn(token: str | None, header: bytes | None) -> tuple[int, str] | None:
    if token is None:
        return 403, "learning over HTTP is off; start `lifelong serve` with --learn-token"
    scheme, _, given = (header or b"").decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode("latin-1"), token.encode()):
        return 401, "missing or wrong token (send 'Authorization: Bearer TOKEN')"
    return None


async def _answer(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def check_token(token: str | None) -> str | None:
    """An empty or blank token would turn learning on for anyone; a token must also fit in a header."""
    if token is not None and not re.fullmatch(r"[!-~]+", token):
        raise LifelongError("--learn-token must be non-empty printable ASCII without spaces"
                            + (" (it is empty)" if not token else ""))
    return token


class TimedH11(H11Protocol):
    """uvicorn's h11 protocol with a deadline for headers: uvicorn times out only an idle keep-alive connection,
    so a client sending its headers a byte a minute would hold a connection for ever."""

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def _arm(self) -> None:
        waiting = self.scope  # replaced when the next request's headers are complete
        self.loop.call_later(HEADER_TIMEOUT, lambda: self.scope is waiting and self.transport.close())


WORKER_SPEC = "LIFELONG_SERVE_WORKER"  # how `serve --workers` tells its worker processes what to serve (JSON)


def _announce(app: FastAPI, host: str, port: int, worker: bool) -> None:
    print(f"lifelong: serving {app.state.model_path} on http://{host}:{port} (version {app.state.version()}"
          + (f", worker {os.getpid()}" if worker else "") + "); /health answers, /openapi.json describes the API",
          flush=True)


class Server(uvicorn.Server):
    """Prints one line once listening with the model loaded."""

    app: FastAPI

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            _announce(self.app, self.config.host, self.config.port, worker=False)


def _config(app, host: str, port: int, **kw) -> uvicorn.Config:
    logging.getLogger("uvicorn").setLevel(logging.getLogger("lifelong").getEffectiveLevel())
    return uvicorn.Config(app, host=host, port=port, log_config=None, http=TimedH11, timeout_keep_alive=5,
                          h11_max_incomplete_event_size=MAX_HEADER_BYTES, **kw)


def run(app: FastAPI, host: str, port: int) -> None:
    """uvicorn in this process, on the root logger (one log format with the CLI)."""
    server = Server(_config(app, host, port))
    server.app = app
    server.run()


def run_workers(path, learn_token: str | None, device: str, host: str, port: int, workers: int) -> None:
    """`workers` server processes on one socket (uvicorn's supervisor restarts one that dies). Each loads the model
    and follows the store's manifest as one process does, so a `learn` reaches every worker at its next request;
    the threads (LIFELONG_THREADS, else every core) are split between them. The checks run here first, so a bad
    model, token or device is one line before any worker starts."""
    from uvicorn.supervisors import Multiprocess

    from ..devices import split_threads

    create_app(path, learn_token, device)
    threads = split_threads(workers)
    os.environ[WORKER_SPEC] = json.dumps({"path": str(path), "learn_token": learn_token, "device": device,
                                          "host": host, "port": port})
    os.environ["LIFELONG_THREADS"] = threads
    config = _config("lifelong.store.server:worker_app", host, port, factory=True, workers=workers)
    Multiprocess(config, sockets=[config.bind_socket()]).run()


def worker_app() -> FastAPI:
    """The app of one `serve --workers` process (uvicorn imports this by name in each worker). The socket already
    listens (the supervisor bound it), so the worker's line is printed once its model is loaded."""
    from ..devices import set_threads
    from ..options import setup_logging

    setup_logging()
    set_threads()
    spec = json.loads(os.environ[WORKER_SPEC])
    app = create_app(spec["path"], spec["learn_token"], spec["device"])
    app.state.announce = lambda: _announce(app, spec["host"], spec["port"], worker=True)
    return app


def create_app(path, learn_token: str | None = None, device: str = "auto") -> FastAPI:
    from ..devices import resolve_device

    check_token(learn_token)
    resolve_device(device)  # an absent GPU fails at start, in one line
    store = ModelStore(path, device)
    store.manifest()  # fail at start, with one line, if this is not a model
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        """Load the backbone and the current version before the first request, not during it."""
        model = current()
        log.info("ready: %s, version %s, %d classes", store.path, model.version, len(model.classes))
        if hasattr(app.state, "announce"):
            app.state.announce()
        yield

    # no /docs or /redoc: their pages load scripts from a CDN and are blank offline; /openapi.json is served
    app = FastAPI(title="lifelong", description="A continually learning classifier: predict, learn, inspect.",
                  default_response_class=SafeJSON, docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.model_path = str(store.path)
    app.state.version = lambda: store.manifest()["current"]
    app.add_middleware(Gate, limits={"/learn": MAX_LEARN_BODY}, default=MAX_PREDICT_BODY, learn_token=learn_token,
                       timeout=BODY_TIMEOUT)
    lock = threading.Lock()
    loaded: dict[str, Model] = {}
    root = str(store.path).rstrip("/")

    def scrub(message: str) -> str:
        """A message without the server's paths: the model folder's files by their name inside it."""
        message = message.replace(root + "/", "").replace(root, "the model")
        return re.sub(r"(?<![\w.])/(?:[^\s/:'\"]+/)+([^\s/:'\"]+)", r"\1", message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> SafeJSON:
        """FastAPI's own handler echoes the input, which may not be encodable: only where and what."""
        errors = [{"loc": [show(p)[1:-1] if isinstance(p, str) else p for p in err.get("loc", ())],
                   "msg": show(str(err.get("msg", "")), 300)[1:-1], "type": str(err.get("type", ""))}
                  for err in e.errors()[:20]]
        return SafeJSON({"detail": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def refused(request: Request, e: StarletteHTTPException) -> SafeJSON:
        return SafeJSON({"detail": e.detail}, status_code=e.status_code, headers=getattr(e, "headers", None))

    @app.exception_handler(LifelongError)
    async def unreadable(request: Request, e: LifelongError) -> SafeJSON:
        return SafeJSON({"detail": scrub(str(e))}, status_code=503)

    def current() -> Model:
        """The store's current version, loaded once; a new version is picked up at the next request."""
        version = store.manifest()["current"]
        with lock:
            if "model" not in loaded or loaded["model"].version != version:
                loaded["model"] = store.load(version)
                log.info("serving version %d", version)
            return loaded["model"]

    @app.get("/health")
    def health() -> Health:
        return {"status": "ok", "version": store.manifest()["current"]}

    @app.get("/info")
    def info() -> dict:
        manifest = store.manifest()
        entry = store.entry(None, manifest)
        return {
            "backbone": manifest["backbone"],
            "method": manifest["method"],
            "settings": manifest["settings"],
            "current": manifest["current"],
            "classes": [{"name": c, "task": t["name"], "version": t["version"]} for t in entry["tasks"] for c in t["classes"]],
            "threshold": entry["threshold"],
            "versions": [{k: e.get(k) for k in ("version", "created", "parent", "bytes", "new_bytes", "threshold", "calibrated",
                                                 "metrics")}
                         | {"tasks": len(e["tasks"])} for e in manifest["versions"]],
            "learn_enabled": learn_token is not None,
        }

    @app.post("/predict")
    def predict(request: PredictRequest) -> PredictResponse:
        model = current()
        if not model.classes:
            raise HTTPException(409, "the model has learned no classes yet")
        with lock:
            predictions = model.predict_top(request.texts, request.top_k)
        return {"version": model.version, "predictions": predictions}

    @app.post("/learn")
    def learn(request: LearnRequest) -> LearnResponse:
        """The token was checked by `Gate` before the body was read."""
        rows = [(e.text, e.label) for e in request.examples]
        held = [(e.text, e.label) for e in request.held_out] if request.held_out else None
        try:
            entry = store.learn(rows, request.name, held, wait=0, source="request")
        except StoreBusy as e:
            raise HTTPException(409, scrub(str(e))) from None
        except LifelongError as e:
            raise HTTPException(422, scrub(str(e))) from None
        return {"version": entry["version"], "threshold": entry["threshold"], "metrics": entry["metrics"]}

    return app
