"""Model registry: discovery, loading, checks against the graph, batching, caching and thread counts."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from modelrun.config import ConfigurationError
from modelrun.errors import ModelConfigError, UnknownModel
from modelrun.images.decode import Limits
from modelrun.inference import predict_arrays
from modelrun.models import onnx as registry_module
from modelrun.models.onnx import LoadedModel, default_threads
from modelrun.models.registry import ModelRegistry, version_key
from modelrun.transforms.pipeline import preprocess
from tests.modelfactory import DELETE, make_model, write_spec

RED, GREEN, BLUE = (230, 20, 20), (20, 230, 20), (20, 20, 230)


def png(color: tuple[int, int, int], size: tuple[int, int] = (24, 24)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def bright_quadrant_png(quadrant: int, size: int = 24) -> bytes:
    """A black grey image with one white quadrant (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right)."""
    image = Image.new("L", (size, size), 0)
    half = size // 2
    left, top = (quadrant % 2) * half, (quadrant // 2) * half
    image.paste(255, (left, top, left + half, top + half))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def predict_labels(model: LoadedModel, images: list[bytes]) -> list[str]:
    arrays = [preprocess(data, model.spec, Limits()) for data in images]
    return [prediction.label for prediction in predict_arrays(model, arrays)]


def spy_on_runs(model: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the batch size of every session.run call."""
    sizes: list[int] = []
    original = model.session.run

    def run(output_names: list[str], feed: dict[str, np.ndarray], *args: Any, **kwargs: Any) -> Any:
        sizes.append(next(iter(feed.values())).shape[0])
        return original(output_names, feed, *args, **kwargs)

    monkeypatch.setattr(model.session, "run", run)
    return sizes


def five_colour_images() -> list[bytes]:
    return [png(RED), png(GREEN), png(BLUE), png(GREEN), png(RED)]


# --- loading and predicting -------------------------------------------------------------------------------


def test_an_nhwc_rgb_model_loads_from_its_folder_and_predicts_the_right_labels(tmp_path: Path) -> None:
    # given an NHWC RGB model folder
    make_model(tmp_path, name="colours", layout="NHWC", color_mode="RGB")

    # when it is loaded and given red, green and blue images
    model = ModelRegistry(tmp_path).get("colours")
    labels = predict_labels(model, [png(RED), png(GREEN), png(BLUE)])

    # then each colour is recognised
    assert labels == ["red", "green", "blue"]


def test_a_bgr_model_gets_its_channels_reversed_and_still_predicts_the_right_labels(tmp_path: Path) -> None:
    # given a BGR model whose class i is tensor channel i (blue, green, red)
    make_model(tmp_path, name="bgr", color_mode="BGR")

    # when it sees red, green and blue images
    labels = predict_labels(ModelRegistry(tmp_path).get("bgr"), [png(RED), png(GREEN), png(BLUE)])

    # then the labels are right, so channel order was reversed
    assert labels == ["red", "green", "blue"]


def test_a_fixed_batch_one_model_loads_and_predicts_the_right_label(tmp_path: Path) -> None:
    # given a model whose graph has a fixed batch of 1
    make_model(tmp_path, name="single", batch=1)

    # when it is loaded
    model = ModelRegistry(tmp_path).get("single")

    # then it reports its batch size and predicts correctly
    assert model.batch_size == 1
    assert predict_labels(model, [png(BLUE)]) == ["blue"]


def test_a_grey_model_predicts_the_brightest_quadrant(tmp_path: Path) -> None:
    # given a grey quadrant model
    make_model(tmp_path, name="quadrants", color_mode="L", classes=4)

    # when each quadrant in turn is bright
    labels = predict_labels(ModelRegistry(tmp_path).get("quadrants"), [bright_quadrant_png(q) for q in range(4)])

    # then the bright quadrant is named
    assert labels == ["top-left", "top-right", "bottom-left", "bottom-right"]


@pytest.mark.parametrize("dtype", ["float16", "uint8"])
def test_a_model_with_another_input_dtype_predicts_the_right_label(tmp_path: Path, dtype: str) -> None:
    # given a model taking float16 or uint8 input
    make_model(tmp_path, name="typed", dtype=dtype)

    # when it sees a green image
    labels = predict_labels(ModelRegistry(tmp_path).get("typed"), [png(GREEN)])

    # then it is recognised
    assert labels == ["green"]


def test_a_logits_model_returns_probabilities(tmp_path: Path) -> None:
    # given a model whose output is raw logits
    make_model(tmp_path, name="raw", output_type="logits")
    model = ModelRegistry(tmp_path).get("raw")
    batch = np.stack([preprocess(png(RED), model.spec, Limits()), preprocess(png(BLUE), model.spec, Limits())])

    # when it is run
    probs = model.run(batch)

    # then each row is a probability distribution with the right winner
    assert probs.shape == (2, 3)
    np.testing.assert_allclose(probs.sum(axis=1), [1.0, 1.0], rtol=1e-6)
    assert list(probs.argmax(axis=1)) == [0, 2]


def test_a_dynamic_batch_runs_five_images_in_one_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given a model with a symbolic batch dimension
    make_model(tmp_path, name="dynamic")
    model = ModelRegistry(tmp_path).get("dynamic")
    runs = spy_on_runs(model, monkeypatch)

    # when five images are predicted together
    labels = predict_labels(model, five_colour_images())

    # then one session run handled all five
    assert model.batch_size is None
    assert runs == [5]
    assert labels == ["red", "green", "blue", "green", "red"]


def test_a_fixed_batch_one_model_loops_over_five_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given a fixed-batch-1 model
    make_model(tmp_path, name="single", batch=1)
    model = ModelRegistry(tmp_path).get("single")
    arrays = [preprocess(data, model.spec, Limits()) for data in five_colour_images()]
    one_by_one = np.concatenate([model.run(array[np.newaxis]) for array in arrays])
    runs = spy_on_runs(model, monkeypatch)

    # when the five images are run as one batch
    together = model.run(np.stack(arrays))

    # then it ran once per image and matches running them one by one
    assert runs == [1, 1, 1, 1, 1]
    np.testing.assert_array_equal(together, one_by_one)


def test_a_fixed_batch_of_two_pads_the_last_chunk_and_trims(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given a model with a fixed batch of 2
    make_model(tmp_path, name="pairs", batch=2)
    model = ModelRegistry(tmp_path).get("pairs")
    runs = spy_on_runs(model, monkeypatch)

    # when five images are predicted
    labels = predict_labels(model, five_colour_images())

    # then three full chunks ran and only five results came back
    assert runs == [2, 2, 2]
    assert labels == ["red", "green", "blue", "green", "red"]


def test_a_batch_of_the_wrong_image_shape_is_a_caller_error(tmp_path: Path) -> None:
    # given a 16x16 RGB model
    make_model(tmp_path)
    model = ModelRegistry(tmp_path).get("tiny")

    # when it is given an 8x8 tensor
    # then it refuses before calling ONNX Runtime
    with pytest.raises(ValueError, match="does not match"):
        model.run(np.zeros((1, 3, 8, 8), dtype=np.float32))


def test_the_session_uses_the_requested_threads(tmp_path: Path) -> None:
    # given a registry asked for 2 intra-op threads
    make_model(tmp_path)

    # when a model is loaded
    model = ModelRegistry(tmp_path, intra_op_threads=2).get("tiny")

    # then its session is configured that way on the CPU provider
    options = model.session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)
    assert model.session.get_providers() == ["CPUExecutionProvider"]
    assert model.load_ms > 0


# --- model.json against the graph -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        pytest.param({"input": {"size": [8, 8]}}, "input.size", "[8, 8] does not match", id="size"),
        pytest.param({"input": {"color_mode": "L", "mean": DELETE}}, "input.color_mode", '"L" (1', id="channels"),
        pytest.param({"input": {"layout": "NHWC"}}, "input.layout", 'it looks like "NCHW"', id="layout"),
        pytest.param({"labels": ["a", "b", "c", "d"]}, "labels", "has 4 entries", id="label count"),
        pytest.param({"input": {"name": "pixels"}}, "input.name", '"pixels" is not an input', id="input name"),
        pytest.param({"output": {"name": "scores"}}, "output.name", '"scores" is not an output', id="output name"),
        pytest.param({"input": {"dtype": "float16"}}, "input.dtype", "type tensor(float)", id="dtype"),
    ],
)
def test_a_spec_that_disagrees_with_the_graph_fails_at_load_naming_the_field(
    tmp_path: Path, changes: dict[str, Any], field: str, fragment: str
) -> None:
    # given a model whose model.json disagrees with its graph in one field
    folder = make_model(tmp_path)
    write_spec(folder, **changes)

    # when it is loaded
    with pytest.raises(ModelConfigError) as caught:
        ModelRegistry(tmp_path).get("tiny")

    # then the error names the field and the file
    assert caught.value.details["field"] == field
    assert f"model.json: {field} " in caught.value.message
    assert fragment in caught.value.message
    assert str(folder / "model.json") in caught.value.message


def test_a_size_mismatch_message_shows_the_graph_shape(tmp_path: Path) -> None:
    # given a fixed-batch 28x28 grey graph described as 8x8
    folder = make_model(tmp_path, color_mode="L", size=(28, 28), batch=1, classes=4)
    write_spec(folder, input={"size": [8, 8]})

    # when it is loaded
    with pytest.raises(ModelConfigError) as caught:
        ModelRegistry(tmp_path).get("tiny")

    # then the message reads as documented
    assert caught.value.message.endswith(
        'input.size [8, 8] does not match the graph input "image" shape [1, 1, 28, 28] (layout NCHW)'
    )


def test_a_corrupt_onnx_file_is_a_model_config_error(tmp_path: Path) -> None:
    # given a model folder whose model.onnx is garbage
    folder = make_model(tmp_path)
    (folder / "model.onnx").write_bytes(b"this is not a protobuf" * 10)

    # when it is loaded
    # then ONNX Runtime's failure is reported as a config error naming the file
    with pytest.raises(ModelConfigError, match="ONNX Runtime cannot load the model"):
        ModelRegistry(tmp_path).get("tiny")


def test_a_missing_onnx_file_is_a_model_config_error(tmp_path: Path) -> None:
    # given a model folder with only model.json
    folder = make_model(tmp_path)
    (folder / "model.onnx").unlink()

    # when it is loaded
    with pytest.raises(ModelConfigError, match=r"model\.onnx is missing"):
        ModelRegistry(tmp_path).get("tiny")


# --- names and versions -----------------------------------------------------------------------------------


def test_an_unknown_model_name_lists_the_available_models(tmp_path: Path) -> None:
    # given two models
    make_model(tmp_path, name="alpha")
    make_model(tmp_path, name="beta")

    # when an unknown one is asked for
    with pytest.raises(UnknownModel) as caught:
        ModelRegistry(tmp_path).get("gamma")

    # then the message lists what exists
    assert caught.value.message == 'unknown model "gamma"; available models: "alpha", "beta"'
    assert caught.value.status == 404


def test_an_unknown_version_lists_the_available_versions(tmp_path: Path) -> None:
    # given a model with versions 1 and 2
    make_model(tmp_path, version="1")
    make_model(tmp_path, version="2")

    # when version 3 is asked for
    with pytest.raises(UnknownModel) as caught:
        ModelRegistry(tmp_path).get("tiny", "3")

    # then the message lists the versions
    assert caught.value.message == 'model "tiny" has no version "3"; available versions: "1", "2"'


@pytest.mark.parametrize(
    ("name", "version"),
    [
        pytest.param("../outside", None, id="name climbs out"),
        pytest.param("../outside", "1", id="name climbs out with version"),
        pytest.param("tiny", "../../outside/1", id="version climbs out"),
        pytest.param("tiny/../../outside", "1", id="name with separators"),
        pytest.param("", None, id="empty name"),
        pytest.param("tiny", ".", id="version dot"),
    ],
)
def test_a_path_in_the_name_or_version_is_an_unknown_model(tmp_path: Path, name: str, version: str | None) -> None:
    # given a valid model outside the root and one inside it
    make_model(tmp_path, name="outside")
    root = tmp_path / "root"
    make_model(root, name="tiny")

    # when a name or version tries to reach outside the root
    # then it is simply unknown
    with pytest.raises(UnknownModel):
        ModelRegistry(root).get(name, version)


def test_the_latest_version_is_chosen_numerically(tmp_path: Path) -> None:
    # given versions 2, 9 and 10
    for version in ("2", "10", "9"):
        make_model(tmp_path, version=version)
    registry = ModelRegistry(tmp_path)

    # when no version is asked for
    model = registry.get("tiny")

    # then 10 is the latest
    assert registry.versions("tiny") == ["2", "9", "10"]
    assert model.spec.version == "10"


def test_version_key_orders_dotted_and_suffixed_versions() -> None:
    # given versions in random order
    versions = ["1.10", "1.2", "2", "1.2-rc1", "10", "1"]

    # when they are sorted with the version key
    ordered = sorted(versions, key=version_key)

    # then digit runs compare as numbers
    assert ordered == ["1", "1.2", "1.2-rc1", "1.10", "2", "10"]


def test_list_models_returns_every_version_sorted_and_skips_folders_without_model_json(tmp_path: Path) -> None:
    # given two models, three versions, and a stray folder with no model.json
    make_model(tmp_path, name="beta", version="10")
    make_model(tmp_path, name="beta", version="2")
    make_model(tmp_path, name="alpha", version="1")
    (tmp_path / "beta" / "scratch").mkdir()
    (tmp_path / "notes").mkdir()

    # when the models are listed
    listed = ModelRegistry(tmp_path).list_models()

    # then each version appears once, in name then version order
    assert [(spec.name, spec.version) for spec in listed] == [("alpha", "1"), ("beta", "2"), ("beta", "10")]


def test_list_models_fails_fast_on_an_invalid_model_json(tmp_path: Path) -> None:
    # given one valid model and one with a bad field
    make_model(tmp_path, name="alpha")
    write_spec(make_model(tmp_path, name="beta"), top_k=0)

    # when the models are listed
    # then the bad one raises instead of being hidden
    with pytest.raises(ModelConfigError, match="top_k"):
        ModelRegistry(tmp_path).list_models()


def test_a_missing_root_has_no_models(tmp_path: Path) -> None:
    # given a root that does not exist
    registry = ModelRegistry(tmp_path / "missing")

    # when it is listed
    # then it is empty
    assert registry.list_models() == []


# --- caching ----------------------------------------------------------------------------------------------


def count_sessions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every InferenceSession the registry creates."""
    created: list[str] = []
    original: Callable[..., Any] = registry_module.ort.InferenceSession

    def counting(path: str, *args: Any, **kwargs: Any) -> Any:
        created.append(path)
        return original(path, *args, **kwargs)

    monkeypatch.setattr(registry_module.ort, "InferenceSession", counting)
    return created


def test_a_model_is_loaded_once_and_then_served_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given a registry with one model
    make_model(tmp_path)
    registry = ModelRegistry(tmp_path)
    created = count_sessions(monkeypatch)

    # when it is asked for three times, by latest and by explicit version
    first = registry.get("tiny")
    second = registry.get("tiny")
    third = registry.get("tiny", "1")

    # then one session was created and the same object returned
    assert len(created) == 1
    assert first is second is third


def test_eight_threads_asking_at_once_load_the_model_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given a registry and eight threads released together
    make_model(tmp_path)
    registry = ModelRegistry(tmp_path)
    created = count_sessions(monkeypatch)
    barrier = threading.Barrier(8)
    results: list[LoadedModel] = []

    def fetch() -> None:
        barrier.wait(timeout=30)
        results.append(registry.get("tiny"))

    # when they all get the model
    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    # then it was loaded once and all got the same object
    assert len(created) == 1
    assert len(results) == 8
    assert all(result is results[0] for result in results)


def test_a_failed_load_is_not_cached(tmp_path: Path) -> None:
    # given a model whose spec is broken
    folder = make_model(tmp_path)
    write_spec(folder, input={"size": [8, 8]})
    registry = ModelRegistry(tmp_path)
    with pytest.raises(ModelConfigError):
        registry.get("tiny")

    # when the spec is fixed and the model asked for again
    write_spec(folder, input={"size": [16, 16]})
    model = registry.get("tiny")

    # then it loads
    assert model.spec.input.size == (16, 16)


# --- threads ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("memory_mb", "cpus", "expected"),
    [
        pytest.param("128", 8, 1, id="smallest function"),
        pytest.param("1769", 8, 1, id="exactly one vCPU"),
        pytest.param("1770", 8, 2, id="just over one vCPU"),
        pytest.param("3008", 8, 2, id="3 GB"),
        pytest.param("10240", 8, 6, id="largest function"),
        pytest.param("10240", 4, 4, id="capped by the machine"),
    ],
)
def test_default_threads_follow_the_lambda_memory_size(
    monkeypatch: pytest.MonkeyPatch, memory_mb: str, cpus: int, expected: int
) -> None:
    # given a Lambda memory size and a machine's CPU count
    monkeypatch.delenv("INTRA_OP_THREADS", raising=False)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory_mb)
    monkeypatch.setattr(registry_module.os, "cpu_count", lambda: cpus)

    # when the default thread count is computed
    # then it matches Lambda's vCPU allocation
    assert default_threads() == expected


def test_default_threads_outside_lambda_is_the_cpu_count(monkeypatch: pytest.MonkeyPatch) -> None:
    # given no Lambda memory variable on a 3-CPU machine
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", raising=False)
    monkeypatch.delenv("INTRA_OP_THREADS", raising=False)
    monkeypatch.setattr(registry_module.os, "cpu_count", lambda: 3)

    # when the default thread count is computed
    # then it is the CPU count
    assert default_threads() == 3


def test_intra_op_threads_set_outright_win_over_the_memory_size(monkeypatch: pytest.MonkeyPatch) -> None:
    # given a 3538 MB function (two vCPUs) on an 8-CPU machine, told to use one thread
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "3538")
    monkeypatch.setenv("INTRA_OP_THREADS", "1")
    monkeypatch.setattr(registry_module.os, "cpu_count", lambda: 8)

    # when the default thread count is computed
    # then it is the one set
    assert default_threads() == 1


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_intra_op_threads_that_are_not_a_positive_integer_fail_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    # given a malformed setting
    monkeypatch.setenv("INTRA_OP_THREADS", value)

    # when the default thread count is computed, then the function's configuration is refused, naming the variable
    with pytest.raises(ConfigurationError, match="INTRA_OP_THREADS"):
        default_threads()
