"""What every `experiments/` command shares: flags, start-up and one-line errors.

    from absl import flags
from ml_collections import config_flags
    from mopeft_jax.experiment import cli

    def run(): ...                      # the command, reading its absl flags
    if __name__ == "__main__":
        sys.exit(cli.main(run))

`cli.main` parses the flags, then, before the first computation: keeps freed host memory for
reuse (`mopeft_jax.host_memory`), turns JAX's persistent compilation cache on (`--jax_cache_dir`,
so a second run of the same command skips most compilation), and quiets third-party INFO logs.
Errors a user can act on (a missing file, a bad config, a diverged run) print one line on stderr
and exit with status 1; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import logging
import os
import pathlib
import sys
from typing import Callable, Optional, Sequence

from absl import flags
from ml_collections import config_flags

from mopeft_jax.host_memory import retain_freed_memory

_DEBUG = flags.DEFINE_bool("debug", False, "show the traceback of errors instead of one line")
_CACHE = flags.DEFINE_string(
    "jax_cache_dir",
    os.environ.get(
        "MOPEFT_JAX_CACHE_DIR",
        str(pathlib.Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "mopeft_jax" / "jax"),
    ),
    "JAX's persistent compilation cache ('' turns it off; default from $MOPEFT_JAX_CACHE_DIR)",
)

# Flags several commands share (absl flags are global to the process, so each is defined once).
CONFIG = config_flags.DEFINE_config_file(
    "config", None, "an experiment config file, or the name of one in experiments/configs"
)
WORKDIR = flags.DEFINE_string("workdir", None, "output folder (a run folder for training)")
CHECKPOINT = flags.DEFINE_string(
    "checkpoint",
    None,
    "a model: a pretrained folder (python -m weights_convert), a training run's folder, or a "
    "step of one (RUN/checkpoints/STEP)",
)
STEP = flags.DEFINE_integer("step", None, "with a run folder as --checkpoint: this step")
PROGRESS = flags.DEFINE_bool("progress", True, "show progress bars")

# Errors whose message says what to do: shown as one line. Anything else is a bug: traceback.
USER_ERRORS = (FileNotFoundError, FileExistsError, ValueError, KeyError, ImportError, OSError)

# Libraries whose INFO logs would drown the progress bars (orbax logs every save and restore).
_QUIET_LOGGERS = ("absl", "orbax", "jax", "grain", "tensorflow_datasets", "tensorstore")


def require(*holders) -> None:
    """Raises a one-line ValueError naming the flags among `holders` that were not given."""
    missing = [f"--{h.name}" for h in holders if h.value is None]
    if missing:
        raise ValueError(f"{', '.join(missing)} must be given (see --help)")


def main(
    run: Callable[[], Optional[int]],
    argv: Optional[Sequence[str]] = None,
    configs_dir: Optional[os.PathLike] = None,
    single_malloc_arena: bool = True,
) -> int:
    """Parses the flags in `argv` (default sys.argv), sets up the process and calls `run()`.

    Args:
      run: the command; it reads its absl flags.
      argv: the arguments, without the program name (default: sys.argv[1:]).
      configs_dir: where `--config NAME` finds NAME.py (the shipped experiments/configs).
      single_malloc_arena: `retain_freed_memory`'s `single_arena`: on for large models
        (fewer page faults), off for many small kernels in several threads (less contention).

    Returns:
      The exit status: `run()`'s (None counts as 0), 1 for a user error, 2 for bad flags.
    """
    argv = [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]
    try:
        parse_flags(argv, configs_dir)
    except flags.Error as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    setup_process(single_malloc_arena)
    try:
        return run() or 0
    except (*USER_ERRORS, RuntimeError) as error:
        if _DEBUG.value:
            raise
        print(f"error: {one_line(error)} (--debug shows the traceback)", file=sys.stderr)
        return 1


def parse_flags(argv: Sequence[str], configs_dir: Optional[os.PathLike] = None) -> None:
    """Parses `argv` into the absl flags, starting from every flag's default (so that one
    process can run several commands, as tests do). A `--config NAME[:ARG]` that names a file
    of `configs_dir` (`--config demo`, `--config mess_vit_b_gpu:lora`) becomes its path."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        if configs_dir is not None and arg.startswith("--config="):
            argv[i] = "--config=" + config_path(arg[len("--config=") :], configs_dir)
        elif configs_dir is not None and i > 0 and argv[i - 1] == "--config":
            argv[i] = config_path(arg, configs_dir)
    flags.FLAGS.unparse_flags()
    flags.FLAGS(argv)


def config_path(value: str, configs_dir: os.PathLike) -> str:
    """A config file argument: a path (`~` expanded), or NAME[:ARG] of a file in `configs_dir`."""
    name, sep, arg = value.partition(":")
    shipped = pathlib.Path(configs_dir) / f"{name}.py"
    if not os.path.exists(os.path.expanduser(name)) and shipped.is_file():
        return f"{shipped}{sep}{arg}"
    return os.path.expanduser(value)


def setup_process(single_malloc_arena: bool = True) -> None:
    """Host memory (`retain_freed_memory(single_malloc_arena)`), the compilation cache and log
    levels, before the first computation."""
    retain_freed_memory(single_malloc_arena)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top

    absl_logging.set_verbosity(absl_logging.WARNING)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    enable_compilation_cache(_CACHE.value)


def enable_compilation_cache(directory: str) -> None:
    """JAX's persistent compilation cache in `directory` ('' leaves it off).

    Every executable is cached, however fast it compiled: the offline demo compiles a few
    dozen small functions, and together they are most of a second run's start-up.
    """
    if not directory:
        return
    import jax  # pylint: disable=g-import-not-at-top

    directory = os.path.expanduser(os.path.expandvars(directory))
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def one_line(error: BaseException) -> str:
    """An error's message on one line (some list expected files on several)."""
    return " ".join(str(error).split()) or type(error).__name__
