"""Every subcommand's common mistakes (issue 41 item 2): each is exit 2 with one line on stderr naming the
problem and the fix (docs/usage.md: "Errors are one line ... exit 2 for a bad setting or a missing file"),
before anything is written."""

from __future__ import annotations

from localssl import __version__
from localssl.cli import main
from localssl.config import load_config
from localssl.train import pretrain
from tests.conftest import write_cifar_pickles

TINY = ["model.width=0.0625", "train.batch_size=8", "train.device=cpu", "train.progress=false", "train.epochs=1"]


def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own refusals and --version
        status = exc.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_every_subcommand_says_its_common_mistakes_in_one_line_with_exit_2(cifar_root, tmp_path, capsys):
    run = pretrain(load_config("clapp++", [*TINY, f"data.root={cifar_root}", f"out_dir={tmp_path / 'runs'}"]))
    other = write_cifar_pickles(tmp_path / "other", seed=1)  # same shapes, other pixels
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "new-runs"
    capsys.readouterr()  # the run's own progress lines
    new = [*TINY, f"out_dir={out}", f"data.root={cifar_root}"]  # then the mistake, which overrides
    mistakes = {  # argv: words the one line must hold
        ("pretrain", "nope"): ["no preset", "presets:"],
        ("pretrain", "clapp++", *new, "train.nope=1"): ["nope"],
        ("pretrain", "clapp++", *new, "train.epochs=-1"): ["train.epochs"],
        ("pretrain", "clapp++", *new, "data.name=nope"): ["unknown dataset 'nope'", "known datasets"],
        ("pretrain", "clapp++", *new, "data.name=folder", "data.root=null"): ["data.name=folder needs data.root"],
        ("pretrain", "clapp++", *new, "data.name=folder", f"data.root={tmp_path / 'no'}"): ["is not a folder"],
        ("pretrain", "clapp++", *new, f"data.root={empty}"): ["cifar10 not found", "localssl data download cifar10"],
        ("pretrain", "clapp++", "--resume", str(run)): ["drop 'clapp++'", "key=value"],
        ("pretrain", "--resume", str(tmp_path / "nope")): ["nothing to resume"],
        ("pretrain", "clapp++", "--bogus"): ["unrecognized arguments: --bogus", "localssl pretrain --help"],
        ("pretrain",): ["give a preset"],
        ("probe", str(tmp_path / "nope")): ["does not exist", "localssl pretrain"],
        ("probe", str(empty)): ["is not a run folder"],
        ("probe", str(run), "train.lr=1"): ["probe overrides must be"],
        ("probe", str(run), f"data.root={empty}"): ["cifar10 not found"],
        ("probe", str(run), f"data.root={other}"): ["not the data recorded", "pretrain a new run"],
        ("plot", str(tmp_path / "nope")): ["no config.yaml"],
        ("plot",): ["required: RUN_DIR"],
        ("demo", "--seeds", "0"): ["--seeds", ">= 1"],
        ("reproduce",): ["name an experiment"],
        ("reproduce", "nope"): ["unknown experiment 'nope'"],
        ("reproduce", "fig2", "--scale", "nope"): ["no scale 'nope'"],
        ("bench", "nope"): ["no preset"],
        ("bench",): ["give a preset"],
        ("align", str(tmp_path / "nope")): ["does not exist"],
        ("config", "nope"): ["no preset"],
        ("config", "clapp++", "train.nope=1"): ["nope"],
        ("data", "download", "nope"): ["unknown dataset 'nope'"],
        ("data",): ["required"],
        ("nope",): ["invalid choice"],
        (): ["required"],
    }
    for argv, words in mistakes.items():
        status, _, err = _run(capsys, list(argv))
        assert status == 2, (argv[-1], status, err)
        assert len(err.splitlines()) == 1 and err.startswith("localssl"), (argv, err)
        for word in words:
            assert word in err, (argv, word, err)
    assert not out.exists()  # nothing was written by a refused run
    assert _run(capsys, ["--version"])[:2] == (0, f"localssl {__version__}\n")
