"""What each ``localssl`` subcommand does (:mod:`localssl.cli` parses the command line and calls one of
these with its ``argparse.Namespace``; each returns the exit status)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from localssl.registry import ConfigError


def pretrain(args: argparse.Namespace) -> int:
    from localssl.config import load_config
    from localssl.distributed import world_from_env
    from localssl.train import pretrain, resume

    if args.launcher == "slurm":
        from localssl.experiments.engine.slurm import pretrain_from_cli

        return pretrain_from_cli(args)
    if args.resume:
        if args.preset and "=" not in args.preset:
            raise ConfigError(
                f"--resume continues {args.resume} with the preset and settings it was made with; drop "
                f"'{args.preset}' (after --resume RUN give only key=value settings, e.g. train.epochs=N)"
            )
        if args.preset:
            args.overrides.insert(0, args.preset)
        run_dir = resume(Path(args.resume), args.overrides)
    else:
        if not args.preset:
            raise ConfigError("give a preset name or YAML file, or --resume RUN_DIR")
        run_dir = pretrain(load_config(args.preset, args.overrides))
    if world_from_env().is_main:  # under torchrun only rank 0 prints
        print(run_dir)
    return 0


def probe(args: argparse.Namespace) -> int:
    from localssl.evaluate.probe import probe

    result = probe(args.run_dir, args.overrides, per_layer=args.per_layer, out_dir=args.out)
    if args.per_layer:
        from localssl.evaluate.per_layer import per_layer_table, plot_per_layer
        from localssl.evaluate.probe import probe_folder

        folder = probe_folder(args.run_dir, args.out)
        print(per_layer_table(result))
        print(plot_per_layer(result, folder / f"probe_per_layer_{result['protocol']}.png"))
        return 0
    if result["protocol"] == "paper":
        keys = ("test_acc_pct", "best_test_acc_selected_on_test_pct", "best_epoch_selected_on_test")
    else:
        keys = ("test_acc_pct", "val_acc_pct", "best_epoch")
    keys = ("protocol", *keys, "feature_dim", "n_train", "n_val", "n_test", "checkpoint_epoch")
    print(json.dumps({k: result[k] for k in keys}, indent=2))
    return 0


def export(args: argparse.Namespace) -> int:
    from localssl.evaluate.export import export_run
    from localssl.experiments.engine.report import code_version

    done = export_run(args.run_dir, args.name, args.dtype, args.out, args.ship, args.baseline, code=code_version())
    print(done.describe(), file=sys.stderr)
    print(done.path)
    return 0


def demo(args: argparse.Namespace) -> int:
    import dataclasses

    from localssl.demo import DEFAULT_BUDGET, run_demo

    budget = dataclasses.replace(DEFAULT_BUDGET, seeds=args.seeds)
    run_demo(data_dir=args.data_dir, out_dir=Path(args.out), budget=budget, workers=args.workers)
    if args.docs:  # the README's demo numbers and figure are these files
        from localssl.experiments.engine.report import write_docs

        write_docs(copy={Path(args.out) / "demo.json": "docs/demo.json", Path(args.out) / "demo.png": "docs/demo.png"})
    return 0


def data(args: argparse.Namespace) -> int:
    from localssl.config import default_data_root
    from localssl.data.download import download

    root = Path(args.root) if args.root else default_data_root()
    print(download(args.name, root))  # raises DownloadNotDone (exit 1) when nothing was downloaded
    return 0


def data_make(args: argparse.Namespace) -> int:
    from localssl.config import default_data_root
    from localssl.data.espeak import SCALES, corpus_dir, espeak_available, make_corpus

    scale = args.name.removeprefix("espeak-")
    if not espeak_available():
        from localssl.data.espeak import EXTRA_MISSING

        print(f"localssl data make: {EXTRA_MISSING}", file=sys.stderr)
        return 1
    root = Path(args.root) if args.root else default_data_root()
    spec = SCALES[scale]
    hours = spec["hours"] if args.hours is None else args.hours
    speakers = int(spec["speakers"]) if args.speakers is None else args.speakers
    out = corpus_dir(root, scale)

    def progress(done: int, total: int) -> None:
        print(f"\r{out}: {done}/{total} utterances", end="", file=sys.stderr, flush=True)

    manifest = make_corpus(out, hours, speakers, args.seed, not args.clean, progress, args.workers)
    speed = json.loads((out / "generation.json").read_text())
    print(
        f"\n{out}: {manifest['splits']['train']['utterances']} train / {manifest['splits']['test']['utterances']} test "
        f"utterances of 2 s, {speakers} speakers, {len(manifest['classes'])} phone classes; "
        f"{speed['audio_hours_per_cpu_minute']} h of audio per CPU minute"
    )
    return 0


def config(args: argparse.Namespace) -> int:
    from localssl.config import describe_config, load_config

    print(describe_config(load_config(args.preset, args.overrides)))
    return 0


def reproduce(args: argparse.Namespace) -> int:
    if args.docs:
        from localssl.experiments.engine.report import write_docs

        write_docs()
        return 0
    if args.name is None:
        raise ConfigError("name an experiment (listed by `localssl reproduce --help`), or give --docs")
    from localssl.experiments import load_all

    experiments = load_all()
    if args.name not in experiments:
        names = ", ".join(sorted(experiments)) or "(none registered)"
        raise ConfigError(f"unknown experiment '{args.name}'; available: {names}")
    if args.scale not in experiments[args.name].scales:
        raise ConfigError(
            f"experiment '{args.name}' has no scale '{args.scale}'; scales: {', '.join(experiments[args.name].scales)}"
        )
    kwargs = {}
    if args.steps is not None:
        import inspect

        if "steps" not in inspect.signature(experiments[args.name].run).parameters:
            raise ConfigError(f"experiment '{args.name}' takes no --steps budget")
        kwargs["steps"] = args.steps
    if args.only:
        import inspect

        if "only" not in inspect.signature(experiments[args.name].run).parameters:
            raise ConfigError(f"experiment '{args.name}' cannot re-run single rows (--only); run it whole")
        kwargs["only"] = args.only
    if args.jobs is not None:
        if args.jobs < 1:
            raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
        import os

        os.environ["LOCALSSL_WORKERS"] = str(args.jobs)  # read by every experiment that runs jobs in parallel
    out = Path(args.out) if args.out else Path("results") / args.name / args.scale
    from localssl.experiments.engine.run import StatusListed, current, use, use_from_cli

    before = current()  # this command's launcher, for this command only (main() may be called again in-process)
    try:
        if args.launcher == "slurm" or args.status:
            use_from_cli(args, experiments, out)
        out.mkdir(parents=True, exist_ok=True)
        experiments[args.name].run(out, args.scale, args.seeds, **kwargs)
    except StatusListed:  # --status: the cells were listed, nothing ran
        pass
    finally:
        use(before)
    print(out)
    return 0


def bench(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    results = Path(args.results) if args.results else None
    if args.suite:
        return _bench_suite(args, results)
    if not args.preset:
        raise ConfigError("give a preset to compare with its counterpart, or --suite NAME")
    if args.presets:
        raise ConfigError("--presets is for suites (--suite NAME); give one preset, and --vs for the other")
    from localssl.bench import main as bench

    bench(
        args.preset,
        args.vs,
        args.overrides,
        Path(args.out) if args.out else None,
        results,
        rounds=args.rounds,
        steps=args.steps,
        warmup=args.warmup,
        memory_repeats=args.memory_repeats,
        note=args.note,
        own=args.own,
    )
    return 0


def _bench_suite(args: argparse.Namespace, results: Path | None) -> int:
    """``localssl bench --suite NAME``: a named speed study (:mod:`localssl.bench_suites`)."""
    from localssl.bench_suites import Options, run_suite

    if args.preset and "=" not in args.preset:
        raise ConfigError(f"--suite {args.suite} runs its own presets; give '{args.preset}' with --presets")
    # argparse takes `--suite S k=v` 's first key=value for the preset, and `--presets a b k=v` 's for a preset
    overrides = [*([args.preset] if args.preset else []), *args.overrides]
    overrides += [t for t in args.presets or [] if "=" in t]
    presets = [t for t in args.presets or [] if "=" not in t]
    if args.vs or args.own or args.note:
        raise ConfigError("--vs, --own and --note are for a preset against its counterpart, not for --suite")
    options = [f"--rounds {args.rounds}", f"--steps {args.steps}", f"--warmup {args.warmup}"]
    # --threads only as given: each suite has its own default (roofline and speedrun-steps 1), and torch's
    # thread count echoed here would make the command measure something else (speedrun-steps: the record)
    options += [f"--memory-repeats {args.memory_repeats}", *([f"--threads {args.threads}"] if args.threads else [])]
    command = " ".join(
        ["localssl bench --suite", args.suite, *(["--presets", *presets] if presets else []), *overrides, *options]
    )
    opts = Options(
        command,
        overrides,
        rounds=args.rounds,
        steps=args.steps,
        warmup=args.warmup,
        memory_repeats=args.memory_repeats,
        threads=args.threads,
        presets=presets or None,
    )
    out = run_suite(args.suite, opts, results)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2, default=str) + "\n")
    return 1 if out.get("failed") else 0


def align(args: argparse.Namespace) -> int:
    from localssl.evaluate.alignment import align_run

    result = align_run(Path(args.run_dir), args.batches, args.split, args.optimal_steps, args.params)
    print(result["table"])
    print(Path(args.run_dir) / "alignment.json")
    return 0


def plot(args: argparse.Namespace) -> int:
    from localssl.experiments.curves import plot_runs

    print(plot_runs([Path(d) for d in args.run_dirs], Path(args.out)))
    return 0
