"""Every flag of ``train`` and ``imprint`` reaches the job's options (the jobs' tests prove each option's effect)."""

from __future__ import annotations

import pytest

from lastlayer.cli import main


class _Stop(BaseException):  # not an Exception: the CLI turns those into "internal error"
    pass


def _captured(monkeypatch, module: str, function: str, argv: list[str]) -> dict:
    seen: dict = {}

    def fake(*args, **kwargs):
        seen.update(args=args, kwargs=kwargs)
        raise _Stop

    monkeypatch.setattr(f"lastlayer.jobs.{module}.{function}", fake)
    with pytest.raises(_Stop):
        main(argv)
    return seen


def test_train_flags_become_options(monkeypatch, tmp_path):
    seen = _captured(monkeypatch, "train", "train", [
        "train", "data", "-o", "out", "-e", "x.tflite", "--solver", "sgd", "--epochs", "3", "--lr", "0.5", "--batch-size", "7", "--momentum", "0.5",
        "--reg", "0.1", "--val-ratio", "0.3", "--seed", "4", "--balanced", "--early-stopping", "--print-every", "9", "--no-cache",
        "--strict", "--quiet"])
    data, output, extractor, options = seen["args"]
    assert (data, output, extractor) == ("data", "out", "x.tflite")
    assert (options.epochs, options.learning_rate, options.batch_size, options.momentum, options.reg, options.val_ratio, options.seed) \
        == (3.0, 0.5, 7, 0.5, 0.1, 0.3, 4)
    assert options.class_weight == "balanced" and options.early_stopping and options.print_every == 9 and options.solver == "sgd"
    assert not options.use_cache and options.strict and not options.progress


def test_imprint_flags_become_options(monkeypatch):
    seen = _captured(monkeypatch, "imprint", "imprint", [
        "imprint", "data", "-o", "out", "-m", "m.tflite", "--keep-classes", "--test-ratio", "0", "--shots", "3", "--finetune",
        "--finetune-steps", "12", "--scale", "20", "--seed", "2", "--no-cache", "--strict", "--resume", "old.tflite"])
    data, output, model, options = seen["args"]
    assert (data, output, model, seen["kwargs"]["resume"]) == ("data", "out", "m.tflite", "old.tflite")
    assert (options.test_ratio, options.shots, options.finetune, options.finetune_steps, options.scale, options.seed) == (0.0, 3, True, 12, 20.0, 2)
    assert options.keep_classes and not options.use_cache and options.strict


@pytest.mark.parametrize("argv", [
    ["imprint", "d", "-o", "o", "--shots", "0"], ["train", "d", "-o", "o", "--lr", "nan"], ["train", "d", "-o", "o", "--num-iter", "-5"],
    ["train", "d", "-o", "o", "--val-ratio", "1.5"], ["train", "d", "-o", "o", "--batch-size", "0"], ["imprint", "d", "-o", "o", "--scale", "-1"],
    ["classify", "x.jpg", "--top-k", "0"], ["check", "m.tflite", "--runtime", "99"], ["check", "m.tflite", "--runtime", "0"],
])
def test_senseless_values_are_usage_errors_at_parse_time(argv, capsys, tmp_path):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: lastlayer " + argv[0]) and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_resume_updates_in_place_only_when_asked(monkeypatch, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["imprint", "data", "--resume", "old/model.tflite"])
    assert stopped.value.code == 2 and "--in-place" in capsys.readouterr().err
    seen = _captured(monkeypatch, "imprint", "imprint", ["imprint", "data", "--resume", "old/model.tflite", "--in-place"])
    assert seen["args"][1] == "old"


def test_sgd_options_need_the_sgd_solver(monkeypatch, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["train", "data", "-o", "out", "--lr", "0.1", "--early-stopping"])
    assert stopped.value.code == 2 and "--lr, --early-stopping apply to --solver sgd" in capsys.readouterr().err
    seen = _captured(monkeypatch, "train", "train", ["train", "data", "-o", "out"])
    options = seen["args"][3]
    assert options.solver == "tuned" and options.learning_rate == 0.01 and options.momentum == 0.9  # the SGD defaults stay
