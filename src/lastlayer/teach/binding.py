"""Which model, scale and input normalisation a teaching state is taught with: recorded by its first session, checked by the next."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from lastlayer.learn.imprinting import DEFAULT_SCALE
from lastlayer.model.export import read_imprinting_layer
from lastlayer.model.file import ModelFile, ModelKind
from lastlayer.model.normalization import Normalization, Values, as_values, input_normalization
from lastlayer.model.zoo import DEFAULT_EXTRACTOR, open_model
from lastlayer.teach.store import StateError, StateStore


def bind_model(store: StateStore, model: str | os.PathLike[str] | None, scale: float | None, input_mean: Values | str | None,
          input_std: Values | str | None) -> tuple[ModelFile, float, Normalization]:
    """The state's model, scale and normalisation (see :class:`~lastlayer.teach.session.TeachingSession` for the arguments).

    A new state records them, and imports the classes of an imprinted model; an existing one refuses
    another model, or a normalisation its examples were not embedded with.
    """
    stored_model = store.get_meta("model")
    if stored_model is None and store.read_only:
        raise StateError(f"{store.folder} holds no teaching state (no model recorded); check the path", subject="state")
    base = open_model(model if model is not None else (stored_model["path"] if stored_model else DEFAULT_EXTRACTOR))
    digest = hashlib.sha256(base.data).hexdigest()
    if stored_model is None:
        store.set_meta("model", {"path": str(Path(base.name).resolve()), "sha256": digest})
        store.set_meta("scale", float(scale or DEFAULT_SCALE))
        if base.kind is ModelKind.IMPRINTING:
            layer = read_imprinting_layer(base)
            norms = {int(k): float(v) for k, v in layer.state.get("norms", {}).items()}
            shots = {int(k): int(v) for k, v in layer.state.get("shots", {}).items()}
            store.set_meta("scale", float(layer.scale))
            for index, (row, label) in enumerate(zip(layer.weights, layer.labels)):
                store.add_class(label, np.asarray(row, np.float64) * norms.get(index, 1.0), shots.get(index, 0), index in norms)
    elif stored_model["sha256"] != digest:
        raise StateError(f"state folder {store.folder} was taught with {stored_model['path']}, not {base.name}; "
                         "use that model or a new state folder", subject="state")
    stored_feed = store.get_meta("normalization")
    if input_mean is not None or input_std is not None:
        given = {"mean": _listed(as_values(input_mean, "mean")), "std": _listed(as_values(input_std, "std"))}
        if stored_feed is not None and stored_feed != given:
            raise StateError(f"state folder {store.folder} was taught with input mean {stored_feed['mean']} and std "
                             f"{stored_feed['std']}; its examples were embedded that way: use the same or a new state folder",
                             subject="normalization")
        if stored_feed is None and store.examples():
            raise StateError(f"state folder {store.folder} already holds examples embedded with the model's own "
                             "normalisation; use a new state folder for another one", subject="normalization")
        if not store.read_only:
            store.set_meta("normalization", given)
        stored_feed = given
    feed = stored_feed or {}
    return base, float(store.get_meta("scale")), input_normalization(base, feed.get("mean"), feed.get("std"))


def _listed(values: tuple[float, ...] | None) -> list[float] | None:
    return None if values is None else list(values)
