"""Which compute precision a run uses on this backend and hardware, and why bf16 would be slow or fail here.

Reads the CPU's flags and oneDNN's environment variables; knows nothing of models (the layers'
policies are set by ``models.precision``).
"""

import os
from pathlib import Path

import keras

from mnist_vae.errors import UserError

# Compute precisions by name (Keras dtype policies). Weights and optimizer state are float32 in both.
PRECISIONS = ("float32", "mixed_bfloat16")


def resolve_precision(precision, cpuinfo="/proc/cpuinfo", environ=None):
    """``precision`` itself, or for ``auto`` the one measured faster on this backend and hardware."""
    if precision != "auto":
        return precision
    # Measured (BENCHMARKS.md): TensorFlow's oneDNN kernels train the seed model ~1.2x faster in
    # bf16 on a CPU with AVX512_BF16. Without native bf16 they would emulate it, so float32 there;
    # on GPUs and the other backends it is unmeasured, so float32 too.
    if keras.backend.backend() != "tensorflow" or not cpu_has_native_bf16(cpuinfo, environ):
        return "float32"
    return "float32" if _accelerator_present() else "mixed_bfloat16"


def emulated_bf16_warning(precision, cpuinfo="/proc/cpuinfo", environ=None):
    """Why ``precision`` will be slow here, or None: bf16 asked for on a CPU without bf16 instructions.

    ``auto`` never picks it there; an explicit ``--precision mixed_bfloat16`` (or a config file
    saying so) does, and TensorFlow then emulates bf16 in software.
    """
    if precision != "mixed_bfloat16" or cpu_has_native_bf16(cpuinfo, environ) or _accelerator_present():
        return None
    if _cpu_flags(cpuinfo) & BF16_FLAGS:  # the CPU has bf16; the environment keeps it from TensorFlow's kernels
        if keras.backend.backend() != "tensorflow":
            return None  # these variables are TensorFlow's: nothing measured says what they do to the other backends
        if not _onednn_enabled(environ):
            return (f"mixed_bfloat16 with TF_ENABLE_ONEDNN_OPTS={_environ(environ)['TF_ENABLE_ONEDNN_OPTS']} runs "
                    "TensorFlow's generic kernels, which emulate bf16 (measured 10x slower than float32); unset it, "
                    "or use --precision float32")
        return (f"mixed_bfloat16 with ONEDNN_MAX_CPU_ISA={onednn_isa_cap(environ)} is emulated (oneDNN is capped "
                "below its bf16 kernels); unset it, or use --precision float32")
    return ("mixed_bfloat16 on a CPU without native bf16 (no avx512_bf16 or amx_bf16 flag) is emulated: measured 8x "
            "slower than float32 on such a CPU (BENCHMARKS.md); --precision auto or float32 avoids it")


def precision_refusal(precision, cpuinfo="/proc/cpuinfo", environ=None):
    """Why ``precision`` cannot run here, or None: bf16 where TensorFlow would pick oneDNN's bf16 kernels
    that oneDNN then will not build.

    TensorFlow decides from the CPU's flags; a user's ``ONEDNN_MAX_CPU_ISA`` below AVX512_CORE_BF16
    (set, say, to see what an AVX2-only CPU's kernels do) makes oneDNN refuse those kernels, and
    the first convolution fails with "could not create a primitive descriptor" (a bf16 matrix
    product crashes the process).
    """
    cap = onednn_isa_cap(environ)
    if (precision == "mixed_bfloat16" and keras.backend.backend() == "tensorflow" and not _accelerator_present()
            and _onednn_enabled(environ) and _cpu_flags(cpuinfo) & BF16_FLAGS and cap in ONEDNN_ISAS_WITHOUT_BF16):
        return (f"--precision mixed_bfloat16 cannot run with ONEDNN_MAX_CPU_ISA={cap}: oneDNN is capped below its "
                "bf16 kernels, which TensorFlow asks for on this CPU; unset it, or use --precision float32")
    return None


def check_precision_runs(precision, cpuinfo="/proc/cpuinfo", environ=None):
    """Refuse, in one line and before anything is written, a precision that cannot run here (``precision_refusal``)."""
    refusal = precision_refusal(precision, cpuinfo, environ)
    if refusal:
        raise UserError(refusal)


def _accelerator_present():
    """Whether the backend sees a GPU (or other accelerator), where bf16 is native whatever the CPU."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    if backend == "jax":
        import jax

        return jax.default_backend() != "cpu"
    return False


# The CPU flags of bf16 arithmetic that oneDNN (and so TensorFlow on the CPU) computes in natively.
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
# oneDNN's names for the instruction sets it can be capped to (ONEDNN_MAX_CPU_ISA) that have no bf16
# arithmetic; from AVX512_CORE_BF16 up (and ALL, the default) they have it.
ONEDNN_ISAS_WITHOUT_BF16 = frozenset({"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE",
                                      "AVX512_CORE_VNNI"})


def cpu_has_native_bf16(cpuinfo="/proc/cpuinfo", environ=None):
    """Whether TensorFlow's CPU kernels compute bf16 natively here: the CPU lists AVX512_BF16 or AMX_BF16
    among its flags (Linux; False where unreadable), and oneDNN is neither turned off
    (``TF_ENABLE_ONEDNN_OPTS=0``: TensorFlow's generic kernels, which emulate bf16) nor capped below
    its bf16 kernels (``ONEDNN_MAX_CPU_ISA``)."""
    return (bool(_cpu_flags(cpuinfo) & BF16_FLAGS) and _onednn_enabled(environ)
            and onednn_isa_cap(environ) not in ONEDNN_ISAS_WITHOUT_BF16)


def onednn_isa_cap(environ=None):
    """The instruction set oneDNN is capped to (``ONEDNN_MAX_CPU_ISA``, or its old name ``DNNL_MAX_CPU_ISA``), upper case; None if unset."""
    environ = _environ(environ)
    cap = environ.get("ONEDNN_MAX_CPU_ISA") or environ.get("DNNL_MAX_CPU_ISA")
    return cap.strip().upper() if cap else None


def _onednn_enabled(environ=None):
    """Whether TensorFlow uses its oneDNN kernels on the CPU (on unless ``TF_ENABLE_ONEDNN_OPTS`` is 0 or false)."""
    return _environ(environ).get("TF_ENABLE_ONEDNN_OPTS", "1").strip().lower() not in ("0", "false")


def _environ(environ):
    return os.environ if environ is None else environ


def _cpu_flags(cpuinfo):
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return flags
