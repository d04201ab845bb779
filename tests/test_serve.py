"""vae serve: the latent explorer's server answers the page, validates every request and never leaks a traceback."""

import base64
import json

import numpy as np
import pytest

from mnist_vae import explore, inference, serve
from mnist_vae.errors import UserError

from conftest import refused_here, run_cli, tiny_config

fastapi_testclient = pytest.importorskip("fastapi.testclient", reason="vae serve's tests need fastapi and httpx")
LOOPBACK = "http://127.0.0.1"  # requests must name the server (the client's default Host, testserver, is refused)


@pytest.fixture(scope="module")
def explorer(trained_run):
    return explore.Explorer.from_run(trained_run[0])


@pytest.fixture(scope="module")
def client(explorer):
    return fastapi_testclient.TestClient(serve.create_app(explorer), raise_server_exceptions=False, base_url=LOOPBACK)


def pixels_of(base64_text, side=28, channels=1):
    return np.frombuffer(base64.b64decode(base64_text), np.uint8).reshape(side, side, channels)


def test_info_lists_every_test_point_on_the_latent_plane(client, explorer):
    info = client.get("/api/info").json()
    assert (info["latent_dim"], info["conditional"], info["live"], info["side"]) == (2, False, True, 28)
    assert info["plane"]["kind"] == "latent" and len(info["points"]) == len(info["labels"]) == 500
    # For a 2-D latent the plane is the latent space: a point's coordinates are its z_mean.
    np.testing.assert_allclose(info["points"], explorer.z_mean, atol=1e-4)
    assert "<canvas id=\"scatter\"" in client.get("/").text


def test_decode_returns_the_models_mean_images(client, explorer):
    z = [[0.5, -1.0], [2.0, 0.25]]
    response = client.post("/api/decode", json={"z": z})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = inference.decode(explorer.vae, np.asarray(z, np.float32))
    for image, want in zip(body["images"], expected):
        got = pixels_of(image)
        assert np.abs(got.astype(int) - np.rint(want * 255)).max() <= 1
    assert not np.array_equal(pixels_of(body["images"][0]), pixels_of(body["images"][1]))


def test_encode_of_a_test_image_gives_its_code_and_a_reconstruction(client, explorer):
    image, _, z_mean = explorer.test_image(3)
    levels = np.rint(image * 255).astype(np.uint8)  # MNIST's grey levels are k / 255: exact
    pixels = base64.b64encode(levels.tobytes()).decode()
    body = client.post("/api/encode", json={"pixels": pixels}).json()
    np.testing.assert_allclose(body["z_mean"], z_mean, atol=1e-5)
    assert len(body["z_log_var"]) == 2 and pixels_of(body["reconstruction"]).shape == (28, 28, 1)
    test = client.get("/api/test/3").json()
    np.testing.assert_allclose(test["z_mean"], z_mean, atol=1e-6)
    assert np.array_equal(pixels_of(test["pixels"]), levels)


@pytest.mark.parametrize("path,body,status,message", [
    ("/api/decode", {"z": [[0.0]]}, 422, "z.0: List should have at least 2 items"),
    ("/api/decode", {"z": [[0.0, 1e3]]}, 422, "z.0.1: Input should be less than or equal to 100"),
    ("/api/decode", {"z": []}, 422, "z: List should have at least 1 item"),
    ("/api/decode", {"z": [[0.0, 0.0]] * 257}, 422, "z: List should have at most 256 items"),
    ("/api/decode", {"z": [[0.0, "1"]]}, 422, "z.0.1: Input should be a valid number"),
    ("/api/decode", {"z": [[0.0, 0.0]], "label": 3}, 422, "this model is not conditional"),
    ("/api/decode", {"z": [[0.0, 0.0]], "extra": 1}, 422, "extra: Extra inputs are not permitted"),
    ("/api/decode", [1, 2], 422, "body: Input should be an object"),
    ("/api/encode", {"pixels": "%%%"}, 422, "pixels: not base64"),
    ("/api/encode", {"pixels": base64.b64encode(b"\0" * 100).decode()}, 422, "expected 28x28x1 = 784 bytes"),
    ("/api/encode", {"pixels": "A" * 5000}, 422, "pixels: String should have at most 3136 characters"),
])
def test_bad_requests_are_one_line_json_errors(client, path, body, status, message):
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error and "\n" not in error and "Traceback" not in response.text


def test_non_finite_numbers_bodies_too_large_and_other_content_types_are_refused(client):
    for text in ['{"z": [[NaN, 0]]}', '{"z": [[Infinity, 0]]}', '{"z": [[0, 1e999]]}']:
        response = client.post("/api/decode", content=text, headers={"Content-Type": "application/json"})
        assert response.status_code == 422 and "finite number" in response.json()["error"], text
    response = client.post("/api/decode", content="z=1", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415 and "send JSON" in response.json()["error"]
    big = b'{"z": [' + b"[0.0, 0.0]," * 200_000 + b'[0.0, 0.0]]}'
    response = client.post("/api/decode", content=big, headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and "at most 1,048,576 bytes" in response.json()["error"]

    def chunks():  # no Content-Length: counted as it arrives
        yield b'{"z": ['
        for _ in range(200_000):
            yield b"[0.0, 0.0],"
    response = client.post("/api/decode", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    response = client.post("/api/decode", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and "Invalid JSON" in response.json()["error"]
    assert client.get("/api/test/500").status_code == 404 and client.get("/api/test/-1").status_code == 404
    assert client.get("/api/nothing").json() == {"error": "Not Found"}


def test_a_server_side_failure_is_json_without_a_traceback(client, explorer, monkeypatch):
    def broken(*args):
        raise RuntimeError("secret internal detail")
    monkeypatch.setattr(explorer, "decode", broken)
    response = client.post("/api/decode", json={"z": [[0.0, 0.0]]})
    assert response.status_code == 500
    assert response.json() == {"error": "internal error (RuntimeError); see the server's log"}


def test_planes_of_a_larger_latent_space(tmp_path):
    from mnist_vae.train import train

    train(tiny_config(latent_dim=4, epochs=1), tmp_path, verbose=0)
    explorer = explore.Explorer.from_run(tmp_path)
    client = fastapi_testclient.TestClient(serve.create_app(explorer), base_url=LOOPBACK)
    info = client.get("/api/info").json()
    plane = info["plane"]
    assert plane["kind"] == "pca" and len(plane["explained"]) == 2 and sum(plane["explained"]) <= 1 + 1e-9
    axes = np.asarray(plane["axes"])
    np.testing.assert_allclose(axes @ axes.T, np.eye(2), atol=1e-9)  # orthonormal
    # A point of the plane decodes like the latent the page computes from it.
    z = np.asarray(plane["origin"]) + 0.5 * axes[0] - 0.25 * axes[1]
    np.testing.assert_allclose(explore.Plane(**{**plane, "origin": np.asarray(plane["origin"]), "axes": axes,
                                               "explained": None, "dims": None}).project(z[None])[0],
                               [0.5, -0.25], atol=1e-9)
    dims = client.get("/api/points", params={"kind": "dims", "i": 3, "j": 1, "origin": 7}).json()
    points = np.asarray(dims["points"])
    np.testing.assert_allclose(points, explorer.z_mean[:, [3, 1]] - explorer.z_mean[7, [3, 1]], atol=1e-4)
    assert client.get("/api/points", params={"kind": "dims", "i": 2, "j": 2}).status_code == 422
    assert client.get("/api/points", params={"kind": "dims", "i": 0, "j": 4}).status_code == 422
    assert client.get("/api/points", params={"origin": 10_000}).status_code == 422
    assert client.get("/api/points", params={"kind": "tsne"}).status_code == 422


def test_conditional_models_need_a_label_per_request_or_per_latent(tmp_path):
    from mnist_vae.train import train

    train(tiny_config(conditional=True, epochs=1), tmp_path, verbose=0)
    explorer = explore.Explorer.from_run(tmp_path)
    client = fastapi_testclient.TestClient(serve.create_app(explorer), base_url=LOOPBACK)
    assert client.get("/api/info").json()["class_names"][:2] == explorer.class_names[:2]
    z = [[0.0, 0.0]] * 10
    ten = client.post("/api/decode", json={"z": z, "label": list(range(10))}).json()["images"]
    expected = inference.decode(explorer.vae, np.zeros((10, 2), np.float32), np.arange(10))
    for image, want in zip(ten, expected):
        assert np.abs(pixels_of(image).astype(int) - np.rint(want * 255)).max() <= 1
    assert "send a label" in client.post("/api/decode", json={"z": z}).json()["error"]
    assert "less than or equal to 9" in client.post("/api/decode", json={"z": z, "label": 10}).json()["error"]
    assert "one per z (10), not 2" in client.post("/api/decode", json={"z": z, "label": [1, 2]}).json()["error"]


@pytest.mark.slow
def test_an_autoregressive_model_is_not_decoded_live(tmp_path):
    from mnist_vae.train import train

    train(tiny_config(architecture="resnet_ar", binarize="dynamic", latent_dim=2, limit=64, test_limit=50,
                      grid_size=2), tmp_path, verbose=0)
    client = fastapi_testclient.TestClient(serve.create_app(explore.Explorer.from_run(tmp_path)), base_url=LOOPBACK)
    info = client.get("/api/info").json()
    assert (info["live"], info["autoregressive"], info["max_decode"]) == (False, True, 16)
    assert client.post("/api/decode", json={"z": [[0.0, 0.0]] * 17}).status_code == 422
    image = pixels_of(client.post("/api/decode", json={"z": [[0.0, 0.0]]}).json()["images"][0])
    assert image.shape == (28, 28, 1)


def test_host_port_and_run_errors_are_one_line_exit_2(tmp_path, trained_run):
    import socket

    assert serve.is_loopback("127.0.0.1") and serve.is_loopback("::1") and serve.is_loopback("localhost")
    assert not serve.is_loopback("0.0.0.0") and not serve.is_loopback("example.org")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(UserError, match=f"cannot listen on 127.0.0.1:{port}"):
            serve.open_socket("127.0.0.1", port)
    with pytest.raises(UserError, match="--port must be between 0 and 65,535"):
        serve.open_socket("127.0.0.1", 70000)
    with pytest.raises(UserError, match="not an address of this machine"):
        serve.open_socket("no-such-host.invalid", 0)
    result = refused_here("serve", tmp_path / "missing", "--port", "0")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "vae serve: error:" in result.stderr
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text(json.dumps({"epochs": 1}))
    result = refused_here("serve", tmp_path / "half", "--port", "0")
    assert result.returncode == 2 and "no finished model" in result.stderr, result.stderr


def test_export_writes_onnx_graphs_that_onnxruntime_runs_like_keras(tmp_path, trained_run):
    import shutil

    ort = pytest.importorskip("onnxruntime", reason="the ONNX check needs onnxruntime")
    pytest.importorskip("tf2onnx", reason="ONNX export needs tf2onnx")
    run = tmp_path / "run"
    shutil.copytree(trained_run[0], run)
    result = run_cli("export", run)
    assert result.returncode == 0, result.stderr[-2000:]
    meta = json.loads((run / "export" / "export.json").read_text())
    assert (meta["latent_dim"], meta["pad"], meta["likelihood"], meta["conditional"]) == (2, 2, "bernoulli", False)
    from mnist_vae.rundir import RunDir, load_inference_model

    vae = load_inference_model(RunDir(run))
    z = np.asarray([[0.5, -1.0], [2.0, 0.25]], np.float32)
    session = ort.InferenceSession(str(run / "export" / "decoder.onnx"))
    logits = session.run(None, {session.get_inputs()[0].name: z})[0]
    np.testing.assert_allclose(logits, np.asarray(vae.decoder.predict_on_batch({"z": z})), atol=1e-4)
    images = vae.geometry.to_model_input(np.zeros((1, 28, 28), np.uint8))
    session = ort.InferenceSession(str(run / "export" / "encoder.onnx"))
    z_mean = session.run(None, {session.get_inputs()[0].name: images})[0]
    np.testing.assert_allclose(z_mean, inference.encode(vae, images)[0], atol=1e-4)
    # The export is one of the run's outputs: --overwrite clears it with the rest.
    assert (run / "export" / "decoder.onnx") in RunDir(run).output_files()
    assert refused_here("export", run, "--format", "tflite").returncode == 2


def test_a_host_that_is_not_loopback_warns(tmp_path):
    # The socket opens (and the warning prints) before the run loads; the missing run then stops it.
    result = run_cli("serve", tmp_path / "missing", "--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 2
    assert "warning: --host 0.0.0.0 is not a loopback address" in result.stderr, result.stderr
    assert run_cli("serve", tmp_path / "missing", "--port", "0").stderr.count("warning") == 0
