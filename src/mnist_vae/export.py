"""``vae export DIR --format onnx``: a finished run's encoder and decoder as files other runtimes load.

ONNX is the one format: onnxruntime (Python, C++, and onnxruntime-web in a browser) runs it with
no Keras or TensorFlow. Keras' own ``Model.export(format="onnx")`` writes the graphs (through
tf2onnx on the TensorFlow backend); ``export.json`` beside them says how to call them and what
their outputs mean, since the decoder returns distribution parameters (Bernoulli logits, or the
logistic mixture's parameters), not images, and works on the padded model side.
"""

import json
import warnings

from mnist_vae.errors import UserError

FORMATS = ("onnx",)


def _export_onnx(model, path):
    """Keras' ONNX export, without the NumPy FutureWarning its tf2onnx shim raises.

    Keras' ``tf2onnx_lib`` probes ``hasattr(np, "object")``, and NumPy 2 warns on that probe. It
    is their code, harmless, and the only warning of a successful export: that one is dropped.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"In the future `np\.object` will be defined", category=FutureWarning)
        model.export(str(path), format="onnx", verbose=False)


def export_run(run_dir, fmt="onnx"):
    """Write ``DIR/export/{encoder,decoder}.onnx`` and ``export.json``; returns the paths written."""
    from mnist_vae.atomic import replace_atomically, write_text_atomic
    from mnist_vae.lock import locked
    from mnist_vae.rundir import RunDir, load_inference_model

    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {list(FORMATS)}, got {fmt!r}")
    try:
        import onnx  # noqa: F401  Keras' ONNX export needs both
        import tf2onnx  # noqa: F401
    except ImportError:
        raise UserError("ONNX export needs the onnx and tf2onnx packages: pip install onnx tf2onnx") from None
    run = RunDir(run_dir)
    config = run.load_config()
    with locked(run, "vae export"):
        vae = load_inference_model(run)
        run.check_writable()
        run.check_free_space(8 * run.vae.stat().st_size + (16 << 20))
        paths = []
        for name, model in (("encoder", vae.encoder), ("decoder", vae.decoder)):
            path = run.export / f"{name}.onnx"
            replace_atomically(lambda tmp, model=model: _export_onnx(model, tmp), path, suffix=".onnx")
            paths.append(path)
        meta = describe(vae, config)
        write_text_atomic(run.export / "export.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return paths + [run.export / "export.json"]


def describe(vae, config):
    """What a runtime needs to use the exported graphs: inputs, outputs and how outputs become images."""
    geometry = vae.geometry
    inputs = {
        "encoder": [spec(t) for t in vae.encoder.inputs],
        "decoder": [spec(t) for t in vae.decoder.inputs],
    }
    return {
        "format": "onnx",
        "dataset": config.dataset,
        "architecture": config.architecture,
        "likelihood": vae.likelihood,
        "latent_dim": vae.latent_dim,
        "conditional": vae.conditional,
        "num_classes": vae.num_classes,
        "autoregressive": vae.autoregressive,
        "image_side": geometry.side,
        "channels": geometry.channels,
        "pad": geometry.pad,
        "inputs": inputs,
        "notes": {
            "encoder": "images in [0, 1], zero-padded by `pad` on each side (labels one-hot, for a conditional "
                       "model) -> z_mean, z_log_var",
            "decoder": ("z (and the one-hot label) -> distribution parameters on the padded side; crop `pad` "
                        "from each side. bernoulli: logits, sigmoid gives the mean image. bernoulli_ar: "
                        "the decoder also reads the image, so sampling runs it once per pixel. "
                        "logistic_mixture: see observation.DiscretizedLogisticMixture"),
        },
    }


def spec(tensor):
    return {"name": tensor.name, "shape": [None if d is None else int(d) for d in tensor.shape]}
