"""What every ``python -m ecgcap.*`` command shares: common options and error handling.

An entry point looks like::

    def main(argv=None):
        parser = make_parser("train_ecg", "Train an ECG classifier.")
        ...add its own options...
        return run(parser, _work, argv)

``run`` parses, applies ``--device/--seed``, calls the work function and turns an
:class:`EcgcapError` into one line on stderr with its exit code (2 bad usage or input, 1 other);
any other exception is one line with exit code 1, and a traceback only with ``--debug``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ecgcap.runtime.errors import EXIT_FAILURE, EXIT_USAGE, EcgcapError


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line: ``prog: error: ...`` and exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


class DefaultsOnceFormatter(argparse.HelpFormatter):
    """Shows an option's default after its help once: not when the help already says it, nor
    for options without a value to show (``None``, flags off)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text.lower() or default is None or default is False
                or default == argparse.SUPPRESS
                or action.option_strings == [] or "%(default)" in text):
            return text
        return f"{text} (default: %(default)s)"


def length_penalty(text: str) -> float:
    """argparse type: a length penalty, a number >= 0 (``--length-penalty``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a number >= 0")
    return value


def ngram_size(text: str) -> int:
    """argparse type: 0 (off) or an n-gram size >= 2 (``--no-repeat``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0 or value == 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 (off) or 2 or more")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def int_list(text: str) -> tuple[int, ...]:
    """argparse type: comma-separated integers >= 1, e.g. ``32,32,64,64``."""
    parts = [t.strip() for t in text.split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers")
    return tuple(positive_int(t) for t in parts)


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number greater than 0")
    return value


def make_parser(prog: str, description: str, *, data: bool = True,
                run_folder: bool = False, distribute: bool = False) -> OneLineParser:
    """A parser with the options every command has.

    ``data`` adds ``--data-dir``; ``run_folder`` adds ``--runs-dir/--name/--overwrite``;
    ``distribute`` adds ``--distribute/--replicas`` (training commands).
    """
    parser = OneLineParser(prog=f"python -m ecgcap.{prog}", description=description,
                           formatter_class=DefaultsOnceFormatter)
    common = parser.add_argument_group("common options")
    if data:
        common.add_argument("--data-dir", metavar="DIR", default=None,
                            help="where datasets live (a dataset's own folder or a folder holding "
                                 "it); default: $ECGCAP_DATA, else data/")
    common.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                        help="where to run; gpu fails clearly when there is none")
    common.add_argument("--mixed-precision", action="store_true",
                        help="use mixed_float16 on GPU (ignored on CPU)")
    common.add_argument("--seed", type=int, default=0, help="seed for every random generator")
    if run_folder:
        common.add_argument("--runs-dir", metavar="DIR", default="runs",
                            help="folder that holds run folders")
        common.add_argument("--name", default=None,
                            help="run folder under --runs-dir (default: made from the options)")
        common.add_argument("--overwrite", action="store_true",
                            help="replace an existing run folder of the same name")
    if distribute:
        common.add_argument("--distribute", choices=("none", "mirrored", "multi-worker"),
                            default="none",
                            help="mirrored: tf.distribute.MirroredStrategy over the local GPUs "
                                 "(keras.distribution.DataParallel on jax); multi-worker: "
                                 "MultiWorkerMirroredStrategy over the hosts in TF_CONFIG. "
                                 "Training then streams from shards; see the README")
        common.add_argument("--replicas", type=positive_int, default=None,
                            help="mirrored: use this many GPUs, or split a GPU-less machine's "
                                 "CPU into this many logical devices")
    common.add_argument("-q", "--quiet", action="store_true", help="print results only")
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def say(args: argparse.Namespace, *parts: object) -> None:
    """Print a status line to stderr unless ``--quiet``."""
    if not getattr(args, "quiet", False):
        print(*parts, file=sys.stderr, flush=True)


def setup_runtime(args: argparse.Namespace) -> str:
    """Apply ``--device``, ``--mixed-precision``, ``--distribute`` (into
    ``args.distribution``) and ``--seed``; report the device line."""
    from ecgcap.runtime.device import configure_device, list_gpus
    from ecgcap.runtime.seed import set_seed

    line = configure_device(args.device, mixed_precision=args.mixed_precision)
    if hasattr(args, "distribute"):
        from ecgcap.runtime.distribute import configure_distribution

        gpus = [] if args.device == "cpu" else list_gpus()
        args.distribution = configure_distribution(args.distribute, args.replicas, gpus=gpus)
    set_seed(args.seed)
    say(args, line)
    return line


def run(parser: argparse.ArgumentParser, work: Callable[[argparse.Namespace], int | None],
        argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run ``work(args)`` and return the exit code (errors as one line)."""
    args = parser.parse_args(argv)
    if args.debug:  # let the frameworks' own log lines through (ecgcap.runtime.quiet)
        os.environ["ECGCAP_DEBUG"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1" if args.debug else "3")
    import warnings

    def one_line(message, category, filename, lineno, file=None, line=None):  # noqa: ARG001
        print(f"{parser.prog}: warning: {message}", file=sys.stderr)

    previous = warnings.showwarning
    if not args.debug:
        warnings.showwarning = one_line  # skipped inputs and the like: one line each
    try:
        return int(work(args) or 0)
    except EcgcapError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence of a command
        if args.debug:
            traceback.print_exc()
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"{parser.prog}: error: {type(exc).__name__}: {detail} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        warnings.showwarning = previous


def training_run_dir(args: argparse.Namespace, name: str, config: Any) -> tuple[Path, Any]:
    """The run folder of a ``train_*`` command and the distribution it trains under.

    A streamed run (``config.pipeline == "shards"``) checks that the global batch splits over
    the replicas, says how it is spread, and continues a backed-up run
    (:func:`ecgcap.runtime.distribute.streamed_run_dir`); otherwise
    :func:`ecgcap.runtime.paths.make_run_dir`.
    """
    from ecgcap.runtime.distribute import Distribution, streamed_run_dir
    from ecgcap.runtime.paths import make_run_dir

    dist = getattr(args, "distribution", None) or Distribution()
    if config.pipeline == "shards":
        dist.check_batch(config.batch_size)
        say(args, dist.describe(config.batch_size, config.learning_rate, config.clipnorm))
        return streamed_run_dir(name, args.runs_dir, dist, overwrite=args.overwrite,
                                resume=args.resume, keep_replaced=True), dist
    return make_run_dir(name, args.runs_dir, overwrite=args.overwrite,
                        resume=args.resume, keep_replaced=True), dist


@contextlib.contextmanager
def tidy_on_failure(runs_dir: str | os.PathLike) -> Iterator[list[Path]]:
    """Yield a list for the run folder a training command makes; if the command then fails
    (bad data met while preparing, say), that folder is removed again when this call made it
    and it is still empty, and ``runs_dir`` too when this call created it. Folders with
    anything in them (a checkpoint, prepared shards) are kept for ``--resume``.

    A run folder that ``--overwrite`` set aside (:func:`ecgcap.runtime.paths.replaced_path`)
    is deleted once the new run has written something or succeeded; until then a failed or
    interrupted call (Ctrl-C, or SIGTERM, which stops the call as Ctrl-C does until training
    installs its own handler) puts it back as it was.
    """
    from ecgcap.runtime.errors import EcgcapError
    from ecgcap.runtime.paths import replaced_path

    runs_dir = Path(runs_dir)
    existed = runs_dir.exists()
    before = set(runs_dir.iterdir()) if runs_dir.is_dir() else set()
    made: list[Path] = []
    try:
        with _sigterm_as_interrupt():
            yield made
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt) or getattr(exc, "exit_code", None) == 130
        restored = []
        for folder in made:
            aside = replaced_path(folder)
            if aside.is_dir() and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
                aside.rename(folder)  # the new run wrote nothing: the old one stays
                restored.append(folder)
        _drop_replaced(made)
        if interrupted and restored:
            raise EcgcapError("interrupted before the first checkpoint; the earlier run is "
                              "back as it was", input=str(restored[0]), exit_code=130) from None
        if interrupted:
            raise  # the message points at the folder for --resume
        new = [p for p in made if p not in before] + ([] if existed else [runs_dir])
        for folder in new:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only an empty folder goes
        raise
    _drop_replaced(made)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises ``KeyboardInterrupt`` inside the block (main thread only), so that a
    ``timeout`` or a batch scheduler stopping the call early tidies up as Ctrl-C does."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):  # noqa: ARG001 - signal handler signature
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _drop_replaced(folders: list[Path]) -> None:
    import shutil

    from ecgcap.runtime.paths import replaced_path

    for folder in folders:
        shutil.rmtree(replaced_path(folder), ignore_errors=True)


def finish_worker(distribution: Any, run_dir: Path) -> None:
    """A worker other than the chief removes its folder (only its backup was there)."""
    if not distribution.is_chief:
        import shutil

        shutil.rmtree(run_dir, ignore_errors=True)
