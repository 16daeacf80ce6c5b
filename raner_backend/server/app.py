"""Flask routes: parse and validate the request, call the backend, shape the answer. Nothing else."""
from __future__ import annotations

import base64
import hmac
import logging
import time
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from ..service import Backend, BadRequest, ModelUnavailable, Unavailable, project_id_of
from ..model.registry import RegistryError

log = logging.getLogger(__name__)

OPEN_ROUTES = {"/health", "/webhook"}  # Label Studio's health check and webhooks send no credentials


def _json_body() -> Any:
    if not request.data:
        raise BadRequest("the request body is empty; JSON expected")
    try:
        return request.get_json(force=True, silent=False)
    except HTTPException:
        raise BadRequest("the request body is not valid JSON") from None


def _object_body() -> dict:
    body = _json_body()
    if not isinstance(body, dict):
        raise BadRequest(f"the request body must be a JSON object, not {type(body).__name__}")
    return body


def _authorized(user: str, password: str) -> bool:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return False
    try:
        given_user, _, given_pass = base64.b64decode(header[6:], validate=True).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return False
    user_ok = hmac.compare_digest(given_user.encode(), user.encode())
    pass_ok = hmac.compare_digest(given_pass.encode(), password.encode())
    return user_ok and pass_ok


def _texts_of(body: dict) -> list[str]:
    if "texts" in body:
        texts = body["texts"]
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise BadRequest("'texts' must be a list of strings")
        return texts
    if isinstance(body.get("text"), str):
        return [body["text"]]
    raise BadRequest("give 'text' (a string) or 'texts' (a list of strings)")


def _checked_project(project: Any) -> None:
    if project is not None and project_id_of(project) is None:
        raise BadRequest(f"'project' must be a Label Studio project id, not {project!r}")


def create_app(backend: Backend) -> Flask:
    app = Flask("raner_backend")
    settings = backend.settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes

    @app.before_request
    def require_auth():
        if not settings.basic_auth_user or request.path in OPEN_ROUTES:
            return None
        if _authorized(settings.basic_auth_user, settings.basic_auth_pass):
            return None
        return Response('{"error": "authentication required"}', 401, mimetype="application/json",
                        headers={"WWW-Authenticate": 'Basic realm="raner-backend"'})

    @app.errorhandler(BadRequest)
    def bad_request(exc: BadRequest):
        return jsonify(error=str(exc)), 400

    @app.errorhandler(Unavailable)
    @app.errorhandler(ModelUnavailable)
    def unavailable(exc: Exception):
        log.warning("%s: %s", request.path, exc)
        return jsonify(error=str(exc)), 503

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return jsonify(error=exc.description or exc.name), exc.code

    @app.errorhandler(Exception)
    def server_error(exc: Exception):
        log.exception("unexpected error on %s", request.path)
        return jsonify(error=f"internal error: {type(exc).__name__}"), 500

    @app.get("/")
    @app.get("/health")
    def health():
        return jsonify(backend.health())

    @app.post("/setup")
    def setup():
        body = _object_body()
        return jsonify(backend.setup(body.get("project"), body.get("schema")))

    @app.post("/predict")
    def predict():
        body = _object_body()
        tasks = body.get("tasks")
        if not isinstance(tasks, list):
            raise BadRequest("'tasks' is missing or not a list")
        started = time.perf_counter()
        predictions = backend.predict_tasks(tasks, body.get("label_config"), body.get("project"))
        for task, p in zip(tasks, predictions):
            log.debug("task %s: score %.4f %s", task.get("id") if isinstance(task, dict) else None, p.score,
                      p.components)
        model_version = backend.model_version(body.get("project"))
        # One line per request: a Retrieve Predictions of 10,000 tasks is one request.
        log.info("/predict: %d tasks of project %s answered by %s in %.2f s", len(predictions), body.get("project"),
                 model_version, time.perf_counter() - started)
        return jsonify(results=[p.to_ls() for p in predictions], model_version=model_version)

    @app.post("/ner")
    def ner():
        body = _object_body()
        return jsonify(backend.ner(_texts_of(body), body.get("project")))

    @app.post("/webhook")
    def webhook():
        return jsonify(backend.webhook(_object_body()))

    @app.route("/versions", methods=["GET", "POST"])
    def versions():
        project = request.args.get("project")
        if project is None and request.method == "POST" and request.data:
            project = _object_body().get("project")
        _checked_project(project)
        return jsonify(backend.versions(project))

    @app.post("/rollback")
    def rollback():
        body = _object_body()
        _checked_project(body.get("project"))
        try:
            info = backend.rollback(body.get("version"), body.get("project"), wait=False)
        except RegistryError as exc:
            raise BadRequest(str(exc)) from None
        return jsonify(version=info.name, project=project_id_of(body.get("project")), state="loading",
                       check="GET /health → rollback"), 202

    return app
