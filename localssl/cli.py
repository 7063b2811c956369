"""Command line: ``localssl pretrain | probe | export | plot | demo | reproduce | align | bench | config | data``
(DESIGN.md §4).

Options and ``key=value`` overrides may come in any order (``localssl bench P --out f.json k=v``): tokens
that argparse leaves over and that look like ``key=value`` are added to the subcommand's ``overrides``.
To add an option to a subcommand, add it to that subcommand's block in :func:`build_parser`; what the
subcommand does is in :mod:`localssl.commands`.
"""

from __future__ import annotations

import argparse
import sys

from localssl import commands
from localssl.experiments.engine.options import launcher_options
from localssl.registry import ConfigError, import_components
from localssl.utils import describe_os_error


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose ``--help`` ends with a list computed only when help is printed
    (``lazy_epilog``: a callable returning the text), so listing choices costs nothing otherwise."""

    lazy_epilog = None

    def error(self, message: str):  # type: ignore[override]
        """A usage mistake: one line naming it and where the valid usage is listed, exit 2."""
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")

    def format_help(self) -> str:
        if self.lazy_epilog is not None:
            self.epilog = self.lazy_epilog()
        return super().format_help()


def _presets_help() -> str:
    """One entry per preset: the first sentence of its YAML file's header comment (:func:`preset_description`)."""
    import textwrap

    from localssl.config import CONFIG_DIR, available_presets

    lines = ["presets (configs/*.yaml; `localssl config PRESET` shows every key and its meaning):"]
    for name in available_presets():
        text = preset_description((CONFIG_DIR / f"{name}.yaml").read_text())
        indent = " " * 23  # a long description goes on over lines of its own, never cut
        lines.append(textwrap.fill(text, 118, initial_indent=f"  {name:20s} ", subsequent_indent=indent))
    return "\n".join(lines)


def preset_description(yaml_text: str, most: int = 300) -> str:
    """A preset's description: its header comment up to the end of the first line that ends a sentence
    (a sentence may go on over several comment lines), else shortened at a word with "…"."""
    import textwrap

    words: list[str] = []
    for line in yaml_text.splitlines():
        if not line.startswith("#"):
            break
        words += line.lstrip("# ").split()
        if line.rstrip().endswith("."):
            break
    return textwrap.shorten(" ".join(words), most, placeholder=" …")


def _datasets_help() -> str:
    from localssl.data.catalog import DATASETS, FOLDER
    from localssl.data.user_folder import LAYOUT

    own = f"  {FOLDER:13s}your own images, nothing to download: data.name={FOLDER} data.root=DIR with {LAYOUT}"
    return "datasets:\n" + "\n".join(f"  {name}" for name in sorted(DATASETS)) + "\n" + own


def _experiments_help() -> str:
    from localssl.experiments import load_all

    exps = load_all()
    return "experiments:\n" + "\n".join(f"  {n:14s} {exps[n].description}" for n in sorted(exps))


def _suites_help() -> str:
    from localssl.bench_suites import load_all

    suites = load_all()
    return "suites (--suite NAME):\n" + "\n".join(f"  {n:14s} {suites[n].description}" for n in sorted(suites))


def build_parser() -> argparse.ArgumentParser:
    from localssl import __version__

    p = _Parser(prog="localssl", description="Local self-supervised learning rules and baselines.")
    p.add_argument("--version", action="version", version=f"localssl {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, help: str, epilog=None, imports: bool = False) -> _Parser:
        s = sub.add_parser(name, help=help, description=help, formatter_class=argparse.RawDescriptionHelpFormatter)
        s.lazy_epilog = epilog
        if imports:  # commands that build components from a preset or a run's config.yaml
            s.add_argument(
                "--import",
                dest="imports",
                action="append",
                default=[],
                metavar="MODULE",
                help="import MODULE (or FILE.py) first, to register components of your own (repeatable); "
                "a run's config.yaml names the module of each (components:), and localssl never imports it unasked",
            )
        return s

    s = add("pretrain", "self-supervised pretraining; prints the run directory last", _presets_help, imports=True)
    s.add_argument("preset", nargs="?", help="preset name (e.g. clapp++) or YAML file")
    s.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=4 model.width=0.25")
    s.add_argument("--resume", metavar="RUN_DIR", help="continue this run exactly")
    launcher_options(s, one_run=True)
    s.set_defaults(fn=commands.pretrain)

    s = add("probe", "linear probe of a run (probe.protocol=honest|paper); writes RUN_DIR/probe.json", imports=True)
    s.add_argument(
        "run_dir", metavar="RUN_DIR|FILE|NAME", help="a run, an exported .safetensors file or a shipped name"
    )
    s.add_argument("overrides", nargs="*", help="probe.* overrides, e.g. probe.epochs=50 probe.protocol=paper")
    s.add_argument("--per-layer", action="store_true", help="each layer alone and all together: table and plot")
    s.add_argument("--out", metavar="DIR", help="exported weights only: where probe.json goes (default runs/STEM/)")
    s.set_defaults(fn=commands.probe)

    s = add("export", "a run's encoder as NAME-<sha256>.safetensors with its model card (.json, .md); prints the file")
    s.add_argument("run_dir", metavar="RUN_DIR")
    s.add_argument("--name", help="the file's name before its hash (default: the run's preset)")
    s.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="stored precision (default fp32)")
    s.add_argument("--out", metavar="DIR", help="output folder (default RUN_DIR/export/)")
    s.add_argument("--ship", metavar="NAME", help="into localssl/weights/ as hub entry NAME, replacing its older file")
    s.add_argument("--baseline", metavar="RUN_DIR", help="a probed run of the random preset of the same network")
    s.set_defaults(fn=commands.export)

    s = add("plot", "learning curves (per-layer loss) of several runs on one figure", imports=True)
    s.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    s.add_argument("--out", default="curves.png", help="figure file (default curves.png)")
    s.set_defaults(fn=commands.plot)

    s = add("demo", "the offline main job: local CLAPP vs backprop vs random init (eSpeak NG speech; CIFAR-10)")
    s.add_argument("--data-dir", help="a data root holding full CIFAR-10 for the CIFAR panel (else the shipped subset)")
    s.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    s.add_argument("--seeds", type=_positive_int, default=3, help="seeds per method (default 3)")
    s.add_argument("--workers", type=_positive_int, default=None, help="processes (default: up to 2 cores)")
    s.add_argument(
        "--docs", action="store_true", help="then copy demo.json and demo.png into docs/ and re-render the README"
    )
    s.set_defaults(fn=commands.demo)

    s = add("reproduce", "run a paper table/figure", _experiments_help, imports=True)
    s.add_argument("name", nargs="?", help="experiment name (listed below)")
    s.add_argument(
        "--docs",
        action="store_true",
        help="run nothing: regenerate docs/results.md and every generated region of README.md and docs/*.md",
    )
    s.add_argument(
        "--scale",
        default="cpu",
        help="smoke: pipeline check; cpu: reduced for 2 cores; gpu (table2): every row, full width, 1 epoch, "
        "about 8 min of one H100-class device; paper: as published (300 epochs); an experiment may declare "
        "others (checked against its own list, e.g. core-cifar10's cpu-epoch1 and cpu-epoch1-fp32)",
    )
    s.add_argument(
        "--jobs",
        type=int,
        help="runs at once, in separate processes (CPU: one per core, torch threads divided; CUDA: sharing the "
        "device); the results are those of a sequential run (default 1, or $LOCALSSL_WORKERS)",
    )
    s.add_argument("--seeds", type=int, default=1)
    s.add_argument("--out", help="output folder (default results/NAME/SCALE)")
    s.add_argument("--steps", type=int, help="training-step budget (experiments that train, e.g. fig3b, fig4c)")
    s.add_argument(
        "--only",
        action="append",
        metavar="PRESET",
        help="re-run only this row (repeatable; the table experiments) and keep the other rows from OUT/results.csv",
    )
    launcher_options(s, one_run=False)
    s.set_defaults(fn=commands.reproduce)

    s = add(
        "bench",
        "images/s and peak (activation) memory vs the backprop counterpart, or a named speed study (--suite)",
        lambda: _presets_help() + "\n\n" + _suites_help(),
        imports=True,
    )
    s.add_argument("preset", nargs="?", help="preset to measure against its counterpart (not with --suite)")
    s.add_argument("overrides", nargs="*", help="key=value overrides applied to both presets (or every suite preset)")
    s.add_argument("--suite", metavar="NAME", help="run a named speed study instead (listed below)")
    s.add_argument("--presets", nargs="+", metavar="PRESET", help="the presets a suite runs (default: its own)")
    s.add_argument("--vs", help="preset to compare with (default: the backprop counterpart; 'none' to skip)")
    s.add_argument("--own", action="append", default=[], metavar="KEY=VALUE", help="override for PRESET only")
    s.add_argument("--out", metavar="FILE.json", help="write the measurements as JSON")
    s.add_argument("--results", metavar="FILE.md", help="append the table to this Markdown file (default: none)")
    s.add_argument("--rounds", type=int, default=5, help="alternating timing rounds (0: memory only)")
    s.add_argument("--steps", type=int, default=2, help="steps per preset and round")
    s.add_argument("--warmup", type=int, default=1, help="untimed steps per preset first")
    s.add_argument("--memory-repeats", type=int, default=1, help="memory measurements per preset (0: none)")
    s.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    s.add_argument("--note", default="", help="a sentence added to the results entry")
    s.set_defaults(fn=commands.bench)

    s = add("align", "per-layer alignment of a run's rule with backprop; writes RUN_DIR/alignment.json", imports=True)
    s.add_argument("run_dir")
    s.add_argument("--batches", type=int, default=8, help="held-out batches to average over (default 8)")
    s.add_argument("--split", default="test", help="data split the batches come from (default test)")
    s.add_argument("--optimal-steps", type=int, default=0, help="also fit the Def. 3.4 optimal B for N steps")
    s.add_argument("--params", choices=("weight", "all"), default="weight", help="compare weights only or all")
    s.set_defaults(fn=commands.align)

    s = add("config", "print a preset's resolved config, every key with its meaning", _presets_help, imports=True)
    s.add_argument("preset", help="preset name (listed below) or YAML file")
    s.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=4")
    s.set_defaults(fn=commands.config)

    s = add("data", "dataset utilities")
    dsub = s.add_subparsers(dest="data_command", required=True)
    d = dsub.add_parser(
        "download",
        help="download a dataset (exit 1 with the commands to run when it cannot)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d.lazy_epilog = _datasets_help
    d.add_argument("name", help="dataset name (listed below)")
    d.add_argument("--root", help="data root (default $LOCALSSL_DATA or ./data)")
    d.set_defaults(fn=commands.data)
    d = dsub.add_parser(
        "make",
        help="generate a speech corpus with eSpeak NG (needs pip install 'localssl[speech]')",
        description="Generate espeak-SCALE under the data root: 2 s utterances of phrases from a shipped word list, "
        "≥ 100 speakers, 39 folded TIMIT phone classes per 10 ms, speaker ids, room response and noise; the same seed "
        "gives the same bytes (localssl/data/espeak.py).",
    )
    d.add_argument("name", choices=["espeak-demo", "espeak-cpu", "espeak-gpu"], help="corpus (its default size)")
    d.add_argument("--root", help="data root (default $LOCALSSL_DATA or ./data)")
    d.add_argument("--hours", type=float, help="hours of audio (default: demo 0.2, cpu 0.6, gpu 100)")
    d.add_argument("--speakers", type=int, help="number of speakers (default: 100; gpu 251)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--clean", action="store_true", help="no room response and no background noise")
    d.add_argument("--workers", type=int, help="processes (default: up to 2); the bytes do not depend on it")
    d.set_defaults(fn=commands.data_make)
    return p


def main(argv: list[str] | None = None) -> int:
    """The ``localssl`` command; returns its exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value tokens after an option (``bench P --out f.json k=v``) belong to the overrides
    overrides = [t for t in extra if "=" in t and not t.startswith("-")]
    unknown = [t for t in extra if t not in overrides]
    if unknown or (overrides and not hasattr(args, "overrides")):
        prog = " ".join(["localssl", *filter(None, [args.command, getattr(args, "data_command", None)])])
        words = " ".join(unknown or overrides)
        parser.exit(2, f"{prog}: error: unrecognized arguments: {words} (see `{prog} --help`)\n")
    if overrides:
        args.overrides = [*args.overrides, *overrides]
    try:
        import_components(getattr(args, "imports", []))  # components of the user's own, asked for by name
        return args.fn(args)
    except KeyboardInterrupt as err:  # a training run's says where its last checkpoint is (RunInterrupted)
        print(f"localssl: {str(err) or 'interrupted (Ctrl-C); nothing half-written was left behind'}", file=sys.stderr)
        return 130
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError) as err:
        return _error(err, 2)
    except RuntimeError as err:  # NonFiniteLossError, RunLockedError, CUDA unavailable, ...
        from localssl.data.base import DatasetError
        from localssl.data.download import DownloadNotDone

        if isinstance(err, DownloadNotDone):  # the one line, then the commands to paste (usage.md: exit 1)
            print(f"localssl: error: {err}", file=sys.stderr)
            return 1
        return _error(err, 2 if isinstance(err, DatasetError) else 1)  # data missing, unreadable or another's: 2
    except OSError as err:  # full disk, read-only or invalid folder, permissions
        print(f"localssl: error: {_one_line(describe_os_error(err))}", file=sys.stderr)
        return 1


def _error(err: BaseException, status: int) -> int:
    """Print ``err`` as the one line ``localssl: error: ...`` on stderr; return the exit status."""
    if isinstance(err, FileNotFoundError) and err.filename is not None:  # a raw [Errno 2] from open()
        text = f"{err.filename} does not exist"
    else:
        text = str(err)
    print(f"localssl: error: {_one_line(text)}", file=sys.stderr)
    return status


def _one_line(text: str) -> str:
    """A message written over several lines (a list of differences, say) as one: its lines joined with
    '; ' (with ' ' after a line that ends in ':'), indentation and list dashes dropped."""
    out = ""
    for line in (x.strip().removeprefix("- ").strip() for x in text.splitlines()):
        if line:
            out = line if not out else out + (" " if out.endswith(":") else "; ") + line
    return out


if __name__ == "__main__":
    sys.exit(main())
