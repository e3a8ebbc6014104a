"""One Edge TPU delegate loader for the interpreter and the PyCoral adapter, each wording its error its own way."""

from __future__ import annotations

import pytest

from lastlayer.errors import EdgeTpuError
from lastlayer.pycoral.utils import edgetpu as pycoral_edgetpu
from lastlayer.runtime import Interpreter
from lastlayer.runtime import delegate as runtime_delegate

from conftest import EXTRACTOR_EDGETPU


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict]]:
    """A runtime library that is "installed", and a LiteRT load_delegate that finds no device, recording each call."""
    calls: list[tuple[str, dict]] = []

    def load_delegate(library: str, options: dict) -> None:
        calls.append((library, options))
        raise ValueError("Failed to load delegate from libedgetpu.so.1\nno Edge TPU found")

    monkeypatch.setattr(runtime_delegate, "edgetpu_runtime", lambda: object())
    monkeypatch.setattr(runtime_delegate.litert, "load_delegate", load_delegate)
    return calls


def test_without_a_device_both_entry_points_go_through_the_one_loader(loads, model_file):
    model = model_file(EXTRACTOR_EDGETPU)
    with pytest.raises(EdgeTpuError, match="could not open a device") as caught:
        Interpreter(model)
    assert "compiled for the Edge TPU" in str(caught.value) and caught.value.installed
    with pytest.raises(ValueError, match=r"Failed to load delegate from libedgetpu\S* \(Failed to load delegate .*\); plug in"):
        pycoral_edgetpu.make_interpreter(str(model), device="usb:1")
    assert loads == [(runtime_delegate.edgetpu_library_name(), {}), (runtime_delegate.edgetpu_library_name(), {"device": "usb:1"})]


def test_without_the_runtime_nothing_is_loaded_and_each_says_how_to_proceed(monkeypatch, model_file):
    monkeypatch.setattr(runtime_delegate, "edgetpu_runtime", lambda: None)
    monkeypatch.setattr(runtime_delegate.litert, "load_delegate", lambda *a: pytest.fail("load_delegate without a runtime"))
    with pytest.raises(EdgeTpuError, match=r"runtime \(libedgetpu\S*\) is not installed; use the CPU build"):
        Interpreter(model_file(EXTRACTOR_EDGETPU))
    with pytest.raises(pycoral_edgetpu.EdgeTpuUnavailableError, match="the Edge TPU runtime is not installed; install libedgetpu"):
        pycoral_edgetpu.load_edgetpu_delegate()
    assert pycoral_edgetpu.list_edge_tpus() == [] and pycoral_edgetpu.set_verbosity(0) is False
