"""Every inference path a worker can pick agrees with torch fp32 on the same texts."""
from __future__ import annotations

import pytest

from inferq.bench import workload
from inferq.model.inference import classify
from inferq.model.loader import load
from inferq.settings import PRECISIONS


@pytest.fixture(scope="module")
def texts():
    return workload.texts("mixed", 30)


@pytest.fixture(scope="module")
def fp32_results(tiny_model, texts):
    return classify(load(str(tiny_model), "", "fp32"), texts)


@pytest.mark.parametrize("precision", [p for p in PRECISIONS if p != "fp32"])
def test_path_agrees_with_fp32(precision, tiny_model, tmp_path_factory, texts, fp32_results):
    loaded = load(str(tiny_model), str(tmp_path_factory.mktemp("cache")), precision)
    assert loaded.info["precision"] == precision
    results = classify(loaded, texts)
    diffs = [abs(a["probabilities"][k] - b["probabilities"][k])
             for a, b in zip(results, fp32_results, strict=True) for k in a["probabilities"]]
    # Quantization moves probabilities a little; fp32 through ONNX Runtime barely at all.
    assert max(diffs) < (1e-4 if precision == "onnx-fp32" else 0.05)
    for r in results:
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)


def test_onnx_export_is_cached_and_reused(tiny_model, tmp_path):
    from inferq.model.onnx_export import cached

    assert cached(str(tiny_model), str(tmp_path), quantized=True) is None
    load(str(tiny_model), str(tmp_path), "onnx-int8")
    path = cached(str(tiny_model), str(tmp_path), quantized=True)
    assert path is not None and path.stat().st_size > 0
    mtime = path.stat().st_mtime_ns
    load(str(tiny_model), str(tmp_path), "onnx-int8")
    assert path.stat().st_mtime_ns == mtime  # not exported again
