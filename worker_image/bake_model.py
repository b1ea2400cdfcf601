"""Put the worker's model into the image at build time, and check it as the worker will load it.

    bake_model.py SOURCE REVISION PRECISION MODEL_DIR CACHE_DIR [EXPORT_DIR]
    bake_model.py --check

SOURCE is a Hugging Face hub id (downloaded once, at REVISION, while the image
builds) or ``offline:base`` / ``offline:tiny`` (the offline DistilBERT with
random weights, for a build machine without a network). MODEL_DIR ends up a
directory ``from_pretrained`` loads; for an ONNX PRECISION the export the
worker would otherwise make at every start is made now, into CACHE_DIR, where
the worker looks for it; with EXPORT_DIR, the export alone (model.onnx, its
config and tokenizer) is copied there too: the runtime stage of the image ships
that directory and nothing else of the model. ``--check`` (run as the
container's user, with the image's settings) loads the model exactly as a
worker does and serves one text.

Any failure is one line on stdout starting ``inferq-build:``, and exit status 1,
so a bad build argument stops the build with a reason rather than a traceback.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

FIXED_MTIME = 0
"""Time stamp of every baked model file. The ONNX export's cache key hashes the
model files' mtimes (tasks.onnx_export.cache_key); image layers written by
`docker save` keep whole seconds only, so a sub-second mtime would change the
key on a host that loaded the image, and its workers would export again."""


def fetch(source: str, revision: str, out_dir: Path) -> None:
    """Save SOURCE's tokenizer and model (a hub id at revision, or offline:SIZE) into out_dir."""
    if source.startswith("offline:"):
        from inferq.model.builder import build

        build(source.partition(":")[2], out_dir)
        return
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    kwargs = {"revision": revision} if revision else {}
    AutoTokenizer.from_pretrained(source, **kwargs).save_pretrained(out_dir)
    AutoModelForSequenceClassification.from_pretrained(source, **kwargs).save_pretrained(out_dir)


def settle(directory: Path, mtime: int | None = None) -> None:
    """Make everything under directory readable by every user (and fix its mtimes, if given)."""
    # safetensors writes model.safetensors mode 600: root's file, unreadable by
    # the container's user, and the worker would exit 3 at every start.
    for path in [directory, *directory.rglob("*")]:
        mode = path.stat().st_mode
        os.chmod(path, mode | (0o555 if path.is_dir() else 0o444))
        if mtime is not None and path.is_file():
            os.utime(path, (mtime, mtime))


def bake(source: str, revision: str, precision: str, model_dir: Path, cache_dir: Path,
         export_dir: Path | None = None) -> None:
    """Fetch or build the model, export it for precision (a copy of the export in export_dir), all of it readable."""
    fetch(source, revision, model_dir)
    settle(model_dir, FIXED_MTIME)
    if precision.startswith("onnx-"):
        from inferq.model.onnx_export import export

        onnx = export(str(model_dir), str(cache_dir), precision == "onnx-int8")
        settle(cache_dir)
        if export_dir is not None:
            shutil.copytree(onnx.parent, export_dir)
            settle(export_dir, FIXED_MTIME)
    elif export_dir is not None:
        raise ValueError(f"PRECISION={precision} runs on torch, which the ONNX runtime stage does not have: "
                         "build with --target torch, or PRECISION=onnx-int8/onnx-fp32")


def check() -> None:
    """Load the model as a worker would, with this process's settings; serve one text."""
    from inferq.model.inference import classify
    from inferq.model.loader import load
    from inferq.model.onnx_export import cached
    from inferq.model.onnx_model import exported
    from inferq.settings import Worker, current

    settings = current(Worker)
    model = settings.model
    if settings.precision.startswith("onnx-") and not exported(model.name) and cached(
            model.name, model.cache, settings.precision == "onnx-int8") is None:
        raise RuntimeError(f"no ONNX export of {model.name} under {model.cache}: "
                           "every worker would export it again at start")
    loaded = load(model.name, model.cache, settings.precision, settings.torch_threads)
    [result] = classify(loaded, ["the image is ready"])
    print(f"inferq-build: {model.name} ({settings.precision}) loads as uid {os.getuid()}: {result['label']}")


def main(argv: list[str]) -> int:
    """Bake (five arguments) or check (--check); one line and exit 1 on failure."""
    try:
        if argv == ["--check"]:
            check()
        elif len(argv) in (5, 6):
            source, revision, precision, model_dir, cache_dir = argv[:5]
            bake(source, revision, precision, Path(model_dir), Path(cache_dir), Path(argv[5]) if argv[5:] else None)
        else:
            print("usage: bake_model.py SOURCE REVISION PRECISION MODEL_DIR CACHE_DIR [EXPORT_DIR] | --check")
            return 2
    except Exception as exc:
        what = "the baked model does not load" if argv == ["--check"] else f"cannot bake MODEL={argv[0]}"
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"inferq-build: {what}: {type(exc).__name__}: {reason}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
