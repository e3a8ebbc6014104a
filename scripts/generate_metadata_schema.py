"""Regenerate ``src/lastlayer/model/metadata_schema_py_generated.py``: TFLite's metadata schema as Python.

The module is the FlatBuffers compiler's Python output (object API) for TensorFlow Lite's
``metadata_schema.fbs``, as published inside the ``tflite-support`` wheel on PyPI (Apache 2.0,
Copyright The TensorFlow Authors). lastlayer reads and writes a model's ``TFLITE_METADATA``
(``ModelMetadata``, file identifier ``M001``) with it, never with hand-written offsets.

Run outside CI, with network access to PyPI::

    python scripts/generate_metadata_schema.py            # tflite-support 0.4.4 (the committed version)
    python scripts/generate_metadata_schema.py --version 0.4.4 --wheel path/to/tflite_support-*.whl

It downloads the wheel with ``pip download --no-deps`` (or uses ``--wheel``), takes
``tensorflow_lite_support/metadata/metadata_schema_py_generated.py`` out of it unchanged, and writes
it with a header saying where it came from.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MEMBER = "tensorflow_lite_support/metadata/metadata_schema_py_generated.py"
TARGET = Path(__file__).resolve().parents[1] / "src" / "lastlayer" / "model" / "metadata_schema_py_generated.py"
HEADER = '''# ruff: noqa
# Generated code: do not edit. Regenerate with scripts/generate_metadata_schema.py.
#
# Source: {member} from the tflite-support {version} wheel on PyPI,
# the FlatBuffers compiler's Python output (object API) for TensorFlow Lite's metadata_schema.fbs.
#
# Copyright 2020 The TensorFlow Authors. All Rights Reserved.
# Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file except in
# compliance with the License. You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software distributed under the License is
# distributed on an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and limitations under the License.
#
# The generated file's own header follows.

'''


def _download(version: str, folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(folder),
                    f"tflite-support=={version}"], check=True)
    wheels = sorted(folder.glob("tflite_support-*.whl"))
    if not wheels:
        raise SystemExit(f"pip downloaded no tflite-support {version} wheel into {folder}")
    return wheels[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default="0.4.4", help="tflite-support version to take the module from (default: 0.4.4)")
    parser.add_argument("--wheel", type=Path, help="use this tflite-support wheel instead of downloading one")
    parser.add_argument("--output", type=Path, default=TARGET, help=f"where to write the module (default: {TARGET})")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or _download(args.version, Path(tmp))
        with zipfile.ZipFile(wheel) as archive:
            source = archive.read(MEMBER).decode("utf-8")
    args.output.write_text(HEADER.format(member=MEMBER, version=args.version) + source, encoding="utf-8")
    print(f"wrote {args.output} from {wheel.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
