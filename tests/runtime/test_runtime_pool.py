"""Batch extraction on a pool of single-threaded interpreters: same rows, same errors, same warnings as one by one."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from lastlayer.errors import ImageError
from lastlayer.images.decode import load_resized
from lastlayer.model.file import ModelFile
from lastlayer.model.normalization import NormalizationWarning
from lastlayer.runtime import Interpreter, extract_embeddings
from lastlayer.runtime import batch as batch_module
from lastlayer.runtime.batch import iter_embeddings, plan, replicas
from lastlayer.runtime.interpreter import usable_cores

from conftest import EXTRACTOR
from graphs import colour_dataset, layout_extractor


def _stub(num_threads: int, edgetpu: bool = False) -> SimpleNamespace:
    return SimpleNamespace(num_threads=num_threads, uses_edgetpu=edgetpu)


def test_usable_cores_follows_the_affinity_mask():
    assert 1 <= usable_cores() <= (__import__("os").cpu_count() or 1)


@pytest.mark.parametrize(("cores", "threads", "workers", "images", "expected"), [
    (2, 2, None, 100, (2, 0)),     # two cores: two single-threaded interpreters side by side
    (16, 16, None, 100, (16, 0)),  # a workstation: one per core
    (64, 64, None, 100, (16, 0)),  # capped where the Python around each image would limit the rate
    (16, 4, None, 100, (4, 0)),    # the interpreter's thread budget caps the pool
    (16, 16, None, 3, (3, 0)),     # never more interpreters than images
    (1, 1, None, 100, (1, 0)),     # one core: one interpreter decoding a chunk, then running it
    (1, 1, 1, 100, (1, 1)),        # ... unless the caller asks for one image in flight: one decode thread ahead
    (2, 2, 1, 100, (1, 1)),
    (4, 1, None, 100, (1, 3)),     # a one-thread budget: one interpreter, decoding on the other cores
    (2, 2, 3, 100, (3, 0)),        # workers chosen by the caller
])
def test_plan_follows_cores_and_thread_budget(monkeypatch, cores, threads, workers, images, expected):
    monkeypatch.setattr(batch_module, "usable_cores", lambda: cores)
    chosen = plan(_stub(threads), workers, images)  # type: ignore[arg-type]
    assert (chosen.interpreters, chosen.decoders) == expected and chosen.pooled == (expected[1] == 0)


def test_an_edge_tpu_model_keeps_one_interpreter(monkeypatch):
    monkeypatch.setattr(batch_module, "usable_cores", lambda: 16)
    chosen = plan(_stub(16, edgetpu=True), None, 1000)  # type: ignore[arg-type]
    assert chosen.interpreters == 1 and not chosen.pooled and chosen.decoders == batch_module.MAX_DECODERS
    assert plan(_stub(16, edgetpu=True), 3, 1000).decoders == 3  # type: ignore[arg-type]


def _photos(images_dir: Path) -> list[Path]:
    return sorted(images_dir.glob("*.bmp")) + sorted(images_dir.glob("*.jpg"))


def test_a_pool_gives_the_rows_of_one_interpreter_in_order(model_file, images_dir):
    interpreter = Interpreter(model_file(EXTRACTOR))
    paths = _photos(images_dir) * 2
    expected = np.stack([interpreter.run(load_resized(p, interpreter.input_size)) for p in paths])
    for workers in (1, 2, 3):
        latencies: list[float] = []
        rows = extract_embeddings(interpreter, paths, progress=False, workers=workers, latencies=latencies)
        np.testing.assert_array_equal(rows, expected)
        assert len(latencies) == len(paths) and all(t > 0 for t in latencies)


def test_the_pool_is_made_once_and_kept_with_the_interpreter(model_file):
    interpreter = Interpreter(model_file(EXTRACTOR), num_threads=2)
    first = replicas(interpreter, 3)
    assert len(first) == 3 and all(r.num_threads == 1 and r is not interpreter for r in first)
    assert replicas(interpreter, 2) == first[:2] and replicas(interpreter, 3) == first
    assert len({id(r.litert) for r in first}) == 3  # independent tensors
    single = Interpreter(model_file(EXTRACTOR), num_threads=1)
    assert replicas(single, 2)[0] is single  # a one-thread interpreter is a member of its own pool


def test_a_clone_runs_the_same_model_fed_the_same_way(model_file, images_dir):
    interpreter = Interpreter(model_file(EXTRACTOR), input_mean=100, input_std=80)
    twin = interpreter.clone(num_threads=1)
    assert twin.num_threads == 1 and twin.normalization == interpreter.normalization
    assert twin.cache_key == interpreter.cache_key and twin.litert is not interpreter.litert
    pixels = load_resized(images_dir / "cat.bmp", interpreter.input_size)
    np.testing.assert_array_equal(twin.run(pixels), interpreter.run(pixels))


def test_two_batches_at_once_on_one_interpreter_do_not_share_interpreters(model_file, images_dir):
    import threading

    interpreter = Interpreter(model_file(EXTRACTOR), num_threads=2)
    paths = _photos(images_dir) * 3
    expected = extract_embeddings(interpreter, paths, progress=False)
    results: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda: results.append(extract_embeddings(interpreter, paths, progress=False)))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 3
    for rows in results:
        np.testing.assert_array_equal(rows, expected)


def test_unreadable_images_are_reported_in_row_order_with_nan_rows(model_file, images_dir, tmp_path):
    good = _photos(images_dir)[:4]
    broken = []
    for i in range(3):
        path = tmp_path / f"broken{i}.jpg"
        path.write_bytes((images_dir / "owl.jpg").read_bytes()[:200 + i])
        broken.append(path)
    paths = [good[0], broken[0], good[1], broken[1], broken[2], good[2], good[3]]
    interpreter = Interpreter(model_file(EXTRACTOR))
    reported: list[Path] = []
    latencies: list[float] = []
    rows = extract_embeddings(interpreter, paths, progress=False, workers=2, latencies=latencies,
                              on_error=lambda path, error: reported.append(path))
    assert reported == broken and len(latencies) == 4
    assert np.isnan(rows[[1, 3, 4]]).all() and not np.isnan(rows[[0, 2, 5, 6]]).any()
    with pytest.raises(ImageError, match="broken0.jpg"):
        extract_embeddings(interpreter, paths, progress=False, workers=2)


def test_leaving_the_iteration_early_stops_the_work(model_file, images_dir):
    interpreter = Interpreter(model_file(EXTRACTOR))
    outcomes = iter_embeddings(interpreter, _photos(images_dir) * 10, workers=2)
    first = next(outcomes)
    outcomes.close()  # cancels what was queued and waits for the images in flight
    assert first.row == 0 and first.error is None and first.vector is not None and first.vector.shape == (1024,)


def test_the_wrong_normalisation_warning_still_fires_on_a_pool(tmp_path):
    folder = colour_dataset(tmp_path, ("red", "green", "blue", "grey"), per_class=4, size=32)
    paths = sorted(folder.rglob("*.png"))[::2][:8]
    wrong = Interpreter(ModelFile.from_tree(layout_extractor(size=32, rescale=(1 / 127.5, -1.0)), "keras-style"))
    with pytest.warns(NormalizationWarning, match="hardly differ"):
        extract_embeddings(wrong, paths, progress=False, workers=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        extract_embeddings(wrong, paths, progress=False, workers=2)  # once only


@pytest.mark.parametrize(("images", "workers", "expected"), [(1000, 2, 16), (80, 2, 10), (12, 2, 1), (3, 4, 1), (64, 1, 16)])
def test_chunks_are_small_enough_for_every_worker(images, workers, expected):
    assert batch_module.chunk_size(images, workers) == expected


def _numbered_images(folder: Path, count: int) -> list[Path]:
    from PIL import Image

    folder.mkdir()
    paths = []
    for i in range(count):
        path = folder / f"{i:03d}.png"
        Image.new("RGB", (40, 30), (i, 255 - i, (7 * i) % 256)).save(path)
        paths.append(path)
    return paths


def test_a_failure_in_the_middle_of_a_chunk_comes_after_the_rows_before_it(model_file, tmp_path, monkeypatch):
    from lastlayer.errors import InferenceError

    paths = _numbered_images(tmp_path / "numbered", 80)
    interpreter = Interpreter(model_file(EXTRACTOR), num_threads=2)
    assert batch_module.chunk_size(len(paths), 2) == 10
    marker = load_resized(paths[23], interpreter.input_size)
    original = Interpreter.set_image

    def set_image(self, pixels):
        if np.array_equal(pixels, marker):
            raise InferenceError("running the model failed on image 23")
        original(self, pixels)

    monkeypatch.setattr(Interpreter, "set_image", set_image)
    rows = []
    with pytest.raises(InferenceError, match="image 23"):
        for outcome in iter_embeddings(interpreter, paths, workers=2):
            rows.append(outcome.row)
    assert rows == list(range(23))  # image 23 sits in the middle of the third chunk


def test_one_core_decodes_a_chunk_then_runs_it_with_the_same_rows(model_file, images_dir, monkeypatch):
    monkeypatch.setattr(batch_module, "usable_cores", lambda: 1)
    interpreter = Interpreter(model_file(EXTRACTOR), num_threads=1)
    paths = _photos(images_dir) * 3
    assert plan(interpreter, images=len(paths)) == batch_module.Plan(1, 0)
    expected = np.stack([interpreter.run(load_resized(p, interpreter.input_size)) for p in paths])
    np.testing.assert_array_equal(extract_embeddings(interpreter, paths, progress=False), expected)
    assert replicas(interpreter, 1) == [interpreter]  # the interpreter itself ran them: no clone made


def test_lanes_and_batches_draw_on_one_pool_of_clones(model_file, images_dir, monkeypatch):
    import threading

    from lastlayer.runtime.lanes import Lanes

    monkeypatch.setattr(batch_module, "usable_cores", lambda: 3)
    made: list[Interpreter] = []
    clone = Interpreter.clone
    monkeypatch.setattr(Interpreter, "clone", lambda self, num_threads=None: made.append(clone(self, num_threads)) or made[-1])
    interpreter = Interpreter(model_file(EXTRACTOR), num_threads=3)
    lanes = Lanes(interpreter, threading.Lock())
    assert len(lanes) == 3 and len(made) == 3 and all(twin.num_threads == 1 for twin in made)
    assert replicas(interpreter, 3) == made  # the lanes' clones, not new ones
    extract_embeddings(interpreter, _photos(images_dir) * 3, progress=False)
    assert len(made) == 3 and len(Lanes(interpreter, threading.Lock())) == 3 and len(made) == 3


def test_a_batch_and_a_stream_on_the_same_interpreter_at_the_same_time_give_the_results_of_each_alone(model_file, images_dir):
    import threading

    from lastlayer.runtime.lanes import Lanes

    interpreter = Interpreter(model_file(EXTRACTOR), num_threads=2)
    paths = _photos(images_dir) * 4
    expected = extract_embeddings(interpreter, paths, progress=False, workers=2)
    lanes = Lanes(interpreter, threading.Lock())
    pixels = [load_resized(p, interpreter.input_size) for p in _photos(images_dir)]
    alone = [lanes.run(p) for p in pixels]
    streamed: list[tuple[int, np.ndarray]] = []

    def stream() -> None:
        for round_ in range(6):
            for index, frame in enumerate(pixels):
                streamed.append((index, lanes.run(frame, round_ + index)))

    thread = threading.Thread(target=stream)
    thread.start()
    rows = extract_embeddings(interpreter, paths, progress=False, workers=2)
    thread.join()
    np.testing.assert_array_equal(rows, expected)
    assert len(streamed) == 6 * len(pixels)
    for index, vector in streamed:
        np.testing.assert_array_equal(vector, alone[index])


def test_the_wrong_normalisation_check_is_fed_by_every_lane(tmp_path, monkeypatch):
    import threading

    from lastlayer.runtime.lanes import Lanes

    monkeypatch.setattr(batch_module, "usable_cores", lambda: 2)
    folder = colour_dataset(tmp_path, ("red", "green", "blue", "grey"), per_class=4, size=32)
    frames = [load_resized(p, (32, 32)) for p in sorted(folder.rglob("*.png"))[::2][:8]]
    wrong = Interpreter(ModelFile.from_tree(layout_extractor(size=32, rescale=(1 / 127.5, -1.0)), "keras-style"), num_threads=2)
    lanes = Lanes(wrong, threading.Lock())
    assert len(lanes) == 2
    with pytest.warns(NormalizationWarning, match="hardly differ"):
        for index, frame in enumerate(frames):
            lanes.run(frame, index)  # only the clones run: the owner itself sees none of these frames
    assert wrong.degenerate_check is None  # concluded once, for the owner and its clones
