"""The command line refuses every invalid option value or combination before any work: one
error line, exit status 2, no data loaded, nothing written. No training runs here."""
import pytest
import torch

from cnn.train import checkpoint as ckpt
from cnn.train import cli, run
from cnn.train.recipes import RECIPES
from cnn.train.run import main

PROG_ERROR = "python -m cnn.train: error: "


@pytest.fixture
def no_work(monkeypatch):
    """A tripwire: loading or generating data fails the test."""
    def tripwire(*args, **kwargs):
        raise AssertionError("data was loaded before the arguments were checked")

    monkeypatch.setattr(run, "load_mnist", tripwire)
    monkeypatch.setattr(run, "synthetic_mnist", tripwire)


def refused(argv, capsys, tmp_path):
    """Run main(argv) with --out in tmp_path; return its error line after checking the
    contract: exit 2, exactly one line on stderr, nothing on stdout, no run folder made."""
    out = tmp_path / "run"
    if "--out" not in argv:
        argv = [*argv, "--out", str(out)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(PROG_ERROR), captured.err
    assert captured.out == ""
    assert not out.exists()
    return lines[0]


BAD_VALUES = {
    "limit-train 0 is not 'all'": (["--limit-train", "0"], "--limit-train"),
    "limit-train negative": (["--limit-train", "-5"], "--limit-train"),
    "limit-train above MNIST's 48000": (["--limit-train", "48001"], "48000"),
    "limit-train above the synthetic set": (["--synthetic", "10", "--limit-train", "9"], "8"),
    "batch-size 0": (["--batch-size", "0"], "--batch-size"),
    "batch-size negative": (["--batch-size", "-5"], "--batch-size"),
    "batch-size not a number": (["--batch-size", "x"], "--batch-size"),
    "eval-batch-size 0": (["--eval-batch-size", "0"], "--eval-batch-size"),
    "epochs 0": (["--epochs", "0"], "--epochs"),
    "epochs negative": (["--epochs", "-1"], "--epochs"),
    "synthetic 0 is not real MNIST": (["--synthetic", "0"], "--synthetic"),
    "synthetic 1 leaves no validation image": (["--synthetic", "1"], "--synthetic"),
    "lr negative": (["--lr", "-1"], "--lr"),
    "lr zero": (["--lr", "0"], "--lr"),
    "lr nan": (["--lr", "nan"], "--lr"),
    "lr inf": (["--lr", "inf"], "--lr"),
    "weight-decay negative": (["--weight-decay", "-1e-5"], "--weight-decay"),
    "dropout 1": (["--dropout", "1"], "--dropout"),
    "dropout negative": (["--dropout", "-0.1"], "--dropout"),
    "patience 0": (["--patience", "0"], "--patience"),
    "rotation above 180": (["--augment", "--rotation", "200"], "--rotation"),
    "hflip without augment": (["--hflip"], "--augment"),
    "save-every 0": (["--save-every", "0"], "--save-every"),
    "seed negative": (["--seed", "-1"], "--seed"),
    "device foo": (["--device", "foo"], "--device"),
    "device meta": (["--device", "meta"], "--device"),
    "backend unknown": (["--backend", "cudnn"], "--backend"),
    "amp unknown": (["--amp", "fp8"], "--amp"),
    "resume and overwrite": (["--resume", "--overwrite"], "choose one"),
    "recipe unknown": (["--recipe", "slow"], "--recipe"),
    "schedule unknown": (["--schedule", "cosine"], "--schedule"),
    "label-smoothing 1": (["--label-smoothing", "1"], "--label-smoothing"),
    "arch unknown": (["--arch", "vgg16"], "--arch"),
    "num-classes below MNIST's 10": (["--num-classes", "5"], "at least 10"),
    "resnet-width with MyCNN": (["--resnet-width", "8"], "--arch resnet"),
    "batchnorm is MyCNN's": (["--arch", "resnet18", "--batchnorm"], "MyCNN's options"),
    "dropout is MyCNN's": (["--arch", "resnet34", "--dropout"], "MyCNN's options"),
    "fast recipe is MyCNN's": (["--arch", "resnet50", "--recipe", "fast"], "--arch mycnn"),
    "freeze-backbone without weights": (["--freeze-backbone"], "--weights FILE"),
    "finetune without weights": (["--finetune"], "--weights FILE"),
    "freeze-backbone and finetune": (["--freeze-backbone", "--finetune", "--weights", "w.pt"],
                                     "choose one"),
    "backbone-lr-scale without finetune": (["--backbone-lr-scale", "0.5"], "pass --finetune"),
    "backbone-lr-scale 0": (["--finetune", "--backbone-lr-scale", "0"], "--backbone-lr-scale"),
    "weights not a file": (["--weights", "/nonexistent/resnet18.pth"], "is not a file"),
}


@pytest.mark.parametrize("argv, names", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_bad_values_are_refused_before_any_work(argv, names, capsys, tmp_path, no_work):
    assert names in refused(argv, capsys, tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_cuda_is_refused(device, capsys, tmp_path, no_work):
    assert "CUDA is not available" in refused(["--device", device], capsys, tmp_path)


def test_weights_must_be_a_file_and_sync_bn_has_nothing_to_sync_when_frozen(
        capsys, tmp_path, no_work):
    weights = tmp_path / "weights.pt"
    assert "is not a file" in refused(["--weights", str(tmp_path)], capsys, tmp_path)
    weights.write_bytes(b"")
    assert "nothing to sync" in refused(["--weights", str(weights), "--freeze-backbone",
                                         "--arch", "resnet18", "--sync-bn"], capsys, tmp_path)


def test_weights_that_do_not_fit_the_model_are_refused_in_one_line(capsys, tmp_path):
    """Read after the data (the file's contents are needed): exit 2, one line, nothing run."""
    weights = tmp_path / "mycnn.pt"
    torch.save({"model": {"conv1.0.weight": torch.zeros(3)}}, weights)
    out = tmp_path / "run"
    assert main(["--synthetic", "20", "--weights", str(weights), "--freeze-backbone",
                 "--backend", "torch", "--out", str(out), "--no-progress"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(lines) == 1 and lines[0].startswith(PROG_ERROR + "argument --weights"), lines
    assert "does not fit --arch mycnn" in lines[0]
    assert not (out / "metrics.json").exists()


def test_recipes_set_defaults_that_explicit_options_override(tmp_path):
    out = ["--out", str(tmp_path / "r")]
    seed = cli.parse_args(out)
    assert (seed.recipe, seed.batch_size, seed.lr, seed.schedule, seed.label_smoothing,
            seed.epochs, seed.batchnorm) == ("seed", 64, 1e-3, "plateau", 0.0, 10, False)
    assert vars(cli.parse_args([*out, "--recipe", "seed"])) == vars(seed)
    fast = cli.parse_args([*out, "--recipe", "fast"])
    for key, value in RECIPES["fast"].items():
        assert getattr(fast, key) == value, key
    assert fast.schedule == "onecycle" and fast.batchnorm and fast.epochs == 2
    mine = cli.parse_args([*out, "--recipe", "fast", "--batch-size", "32", "--epochs", "3"])
    assert (mine.batch_size, mine.epochs, mine.lr) == (32, 3, RECIPES["fast"]["lr"])
    assert "recipe" in cli.resume_fixed_options() and "schedule" in cli.resume_fixed_options()


def test_files_where_folders_belong(capsys, tmp_path, no_work):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert "not a folder" in refused(["--data-dir", str(a_file)], capsys, tmp_path)
    assert "not a folder" in refused(["--out", str(a_file)], capsys, tmp_path)
    assert "cannot write" in refused(["--out", str(a_file / "run")], capsys, tmp_path)


def test_an_existing_run_is_refused_without_resume_or_overwrite(capsys, tmp_path, no_work):
    out = tmp_path / "run"
    out.mkdir()
    (out / "train.log").write_text("a caller's log")    # not a run: accepted
    assert cli.parse_args(["--out", str(out), "--synthetic"]).out == str(out)
    (out / "metrics.json").write_text("{}")
    assert main(["--out", str(out), "--synthetic"]) == 2
    line = capsys.readouterr().err.strip()
    assert "already holds a run (metrics.json)" in line and "--overwrite" in line
    assert cli.parse_args(["--out", str(out), "--synthetic", "--overwrite"]).overwrite


def test_resume_needs_a_readable_last_checkpoint(capsys, tmp_path, no_work):
    out = tmp_path / "run"
    assert "no " in refused(["--resume", "--out", str(out)], capsys, tmp_path)
    out.mkdir()
    whole = tmp_path / "whole.pt"
    ckpt.save_checkpoint(whole, {"model": {"w": torch.zeros(1000)}, "epoch": 0})
    (out / ckpt.LAST).write_bytes(whole.read_bytes()[:-300])  # truncated
    assert main(["--synthetic", "--resume", "--out", str(out)]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith(PROG_ERROR) and "not a readable checkpoint" in line
    assert "\n" not in line
    (out / ckpt.LAST).write_bytes(whole.read_bytes())  # readable, but not a last.pt
    assert main(["--synthetic", "--resume", "--out", str(out)]) == 2
    assert "not a last.pt" in capsys.readouterr().err


def test_help_shows_every_default(capsys):
    assert main(["--help"]) == 0
    entries, current = {}, None  # option -> its help entry, from the lines after the usage
    for line in capsys.readouterr().out.split("\n\n", 2)[2].splitlines():
        if line.startswith("  -"):
            current = line.split()[0].rstrip(",")
            entries[current] = ""
        if current:
            entries[current] += " " + line.strip()
    for option, default in (("--epochs", 10), ("--batch-size", 64), ("--lr", 0.001),
                            ("--eval-batch-size", 1000), ("--out", "runs/mnist")):
        assert f"(default: {default})" in entries[option], (option, entries.get(option))


def test_every_option_has_help():
    with pytest.raises(TypeError, match="help"):
        cli.add(cli.build_parser(), "--compile", action="store_true")
    for action in cli.build_parser()._actions:
        assert action.help, action.dest


def test_resolved_values(tmp_path):
    args = cli.parse_args(["--out", str(tmp_path / "r")])
    assert args.device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert args.channels_last == torch.cuda.is_available()  # channels_last on CUDA only
    assert cli.parse_args(["--out", str(tmp_path / "r"), "--channels-last"]).channels_last
    assert not cli.parse_args(["--out", str(tmp_path / "r"), "--no-channels-last"]).channels_last
    assert "batch_size" in cli.resume_fixed_options() and "epochs" not in \
        cli.resume_fixed_options()
