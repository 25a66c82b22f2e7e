"""`lifelong serve`: a model store over HTTP (FastAPI). Predictions follow the store's current version: after a
`learn` (from the command line or `POST /learn`) the next request loads the new version, with no restart.

Every request is validated before the model sees it: body size (413), batch size, text length and types (422),
learning disabled or a wrong token (403/401), a writer already running (409). Inference is serialised: the
backbone already uses every core it is given, so concurrent requests would only contend.
"""

from __future__ import annotations

import hmac
import logging
import threading
from typing import Annotated

from fastapi import FastAPI, Header, HTTPException
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ..errors import LifelongError
from .store import Model, ModelStore, StoreBusy

log = logging.getLogger(__name__)

MAX_BATCH = 256
MAX_TEXT_CHARS = 2_000
MAX_PREDICT_BODY = 1_000_000  # bytes
MAX_LEARN_BODY = 64_000_000
MAX_LEARN_EXAMPLES = 200_000

Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS)]


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    texts: list[Text] = Field(min_length=1, max_length=MAX_BATCH)
    top_k: int = Field(default=1, ge=1, le=20)


class Example(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    text: Text
    label: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class LearnRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: Annotated[str, StringConstraints(max_length=200)] = ""
    examples: list[Example] = Field(min_length=1, max_length=MAX_LEARN_EXAMPLES)
    held_out: list[Example] | None = Field(default=None, max_length=MAX_LEARN_EXAMPLES)


class BodyLimit:
    """ASGI middleware: answer 413 once a request body passes its path's limit (declared or streamed)."""

    def __init__(self, app, limits: dict[str, int], default: int):
        self.app, self.limits, self.default = app, limits, default

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limits.get(scope["path"], self.default)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await _too_large(send, limit)
        seen, answered = 0, False

        async def counted():
            nonlocal seen, answered
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    if not answered:
                        answered = True
                        await _too_large(send, limit)
                    return {"type": "http.disconnect"}  # the app stops reading; its own answer is dropped
            return message

        async def guarded(message):
            if not answered:
                await send(message)

        await self.app(scope, counted, guarded)


async def _too_large(send, limit: int) -> None:
    body = f'{{"detail":"request body over {limit} bytes"}}'.encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def create_app(path, learn_token: str | None = None) -> FastAPI:
    store = ModelStore(path)
    store.manifest()  # fail at start, with one line, if this is not a model
    app = FastAPI(title="lifelong", description="A continually learning classifier: predict, learn, inspect.")
    app.add_middleware(BodyLimit, limits={"/learn": MAX_LEARN_BODY}, default=MAX_PREDICT_BODY)
    lock = threading.Lock()
    loaded: dict[str, Model] = {}

    def current() -> Model:
        """The store's current version, loaded once; a new version is picked up at the next request."""
        try:
            version = store.manifest()["current"]
            with lock:
                if "model" not in loaded or loaded["model"].version != version:
                    loaded["model"] = store.load(version)
                    log.info("serving version %d", version)
                return loaded["model"]
        except LifelongError as e:
            raise HTTPException(503, str(e)) from None

    @app.get("/health")
    def health() -> dict:
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
            "versions": [{k: e.get(k) for k in ("version", "created", "parent", "bytes", "new_bytes", "metrics")}
                         | {"tasks": len(e["tasks"])} for e in manifest["versions"]],
            "learn_enabled": learn_token is not None,
        }

    @app.post("/predict")
    def predict(request: PredictRequest) -> dict:
        model = current()
        if not model.classes:
            raise HTTPException(409, "the model has learned no classes yet")
        with lock:
            predictions = model.predict(request.texts, request.top_k)
        return {"version": model.version, "predictions": predictions}

    @app.post("/learn")
    def learn(request: LearnRequest, authorization: Annotated[str | None, Header()] = None) -> dict:
        if learn_token is None:
            raise HTTPException(403, "learning over HTTP is off; start `lifelong serve` with --learn-token")
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), learn_token.encode()):
            raise HTTPException(401, "missing or wrong token (send 'Authorization: Bearer TOKEN')")
        rows = [(e.text, e.label) for e in request.examples]
        held = [(e.text, e.label) for e in request.held_out] if request.held_out else None
        try:
            entry = store.learn(rows, request.name, held, wait=0, source="request")
        except StoreBusy as e:
            raise HTTPException(409, str(e)) from None
        except LifelongError as e:
            raise HTTPException(422, str(e)) from None
        return {"version": entry["version"], "threshold": entry["threshold"], "metrics": entry["metrics"]}

    return app
