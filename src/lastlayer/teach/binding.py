"""Which model, scale and input normalisation a teaching state is taught with: recorded by its first session, checked by the next."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from lastlayer.errors import ConflictError
from lastlayer.learn.imprinting import DEFAULT_SCALE
from lastlayer.model.export import read_imprinting_layer
from lastlayer.model.file import ModelFile, ModelKind
from lastlayer.model.keep import has_appended_classes
from lastlayer.model.normalization import Normalization, Values, as_values, input_normalization
from lastlayer.model.zoo import DEFAULT_EXTRACTOR, open_model
from lastlayer.teach.kept import ModelClasses, set_keeping
from lastlayer.teach.store import KEEP_CLASSES, StateError, StateStore


def bind_model(store: StateStore, model: str | os.PathLike[str] | None, scale: float | None, input_mean: Values | str | None,
               input_std: Values | str | None, keep_classes: bool | None = None) -> tuple[ModelFile, float, Normalization, ModelClasses]:
    """The state's model, scale, normalisation and the model's own classes (see
    :class:`~lastlayer.teach.session.TeachingSession` for the arguments).

    A new state records them, imports the classes of an imprinted model, and keeps a classifier's own
    classes if asked (importing any it had appended); an existing one refuses another model, a
    normalisation its examples were not embedded with, or keeping the model's classes (or not) once
    it holds a class.
    """
    stored_model = store.get_meta("model")
    if stored_model is None and store.read_only:
        raise StateError(f"{store.folder} holds no teaching state (no model recorded); check the path", subject="state")
    base = open_model(model if model is not None else (stored_model["path"] if stored_model else DEFAULT_EXTRACTOR))
    own = ModelClasses(base)
    digest = hashlib.sha256(base.data).hexdigest()
    keep = base.kind is not ModelKind.IMPRINTING and (keep_classes if keep_classes is not None else has_appended_classes(base))
    if stored_model is None:
        if keep:
            own.layer()  # a model without a class layer is refused before anything is recorded
        store.set_meta("model", {"path": str(Path(base.name).resolve()), "sha256": digest})
        store.set_meta("scale", float(scale or DEFAULT_SCALE))
        if base.kind is ModelKind.IMPRINTING:
            layer = read_imprinting_layer(base)
            norms = {int(k): float(v) for k, v in layer.state.get("norms", {}).items()}
            shots = {int(k): int(v) for k, v in layer.state.get("shots", {}).items()}
            store.set_meta("scale", float(layer.scale))
            for index, (row, label) in enumerate(zip(layer.weights, layer.labels)):
                store.add_class(label, np.asarray(row, np.float64) * norms.get(index, 1.0), shots.get(index, 0), index in norms)
        elif keep:
            set_keeping(store, own, True)
    elif stored_model["sha256"] != digest:
        raise StateError(f"state folder {store.folder} was taught with {stored_model['path']}, not {base.name}; "
                         "use that model or a new state folder", subject="state")
    elif keep_classes is not None and base.kind is not ModelKind.IMPRINTING and keep != (store.get_meta(KEEP_CLASSES) is not None):
        _rebind_keeping(store, own, keep)
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
    return base, float(store.get_meta("scale")), input_normalization(base, feed.get("mean"), feed.get("std")), own


def _rebind_keeping(store: StateStore, own: ModelClasses, keep: bool) -> None:
    """Keep the model's classes in an existing state (or stop), which only a state without classes allows."""
    if store.read_only:
        raise StateError(f"state folder {store.folder} {'does not keep' if keep else 'keeps'} the classes of its model, and a "
                         "read-only session changes nothing; leave the setting out", subject="state")
    try:
        set_keeping(store, own, keep)
    except ConflictError:
        raise StateError(f"state folder {store.folder} holds classes taught {'without' if keep else 'while'} keeping the classes "
                         f"of {Path(own.model.name).name}; use a new state folder "
                         f"({'with' if keep else 'without'} --keep-classes)", subject="state") from None


def _listed(values: tuple[float, ...] | None) -> list[float] | None:
    return None if values is None else list(values)
