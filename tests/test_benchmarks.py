"""The benchmark scripts run (tiny settings) and count what they say they count."""

import importlib.util

from conftest import REPO


def _load(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_counts_the_seed_models_flops_and_prints_every_row(capsys):
    compare = _load("compare")
    from mnist_vae import models

    # Multiply-adds by hand, 32x32 input: conv 16*16*32*9*1 + conv 8*8*64*9*32 + dense 4096*16 + 2*(16*2)
    # + dense 2*4096 + deconv 8*8*64*9*64 + deconv 16*16*64*9*32 + deconv 32*32*32*9*1.
    macs = 73_728 + 1_179_648 + 65_536 + 64 + 8_192 + 2_359_296 + 4_718_592 + 294_912
    assert compare.train_flops_per_image(models.build_seed_encoder(), models.build_seed_decoder()) == 6 * macs
    rates, _ = compare.main(["--images", "256", "--repeats", "1", "--no-torch"])
    table = capsys.readouterr().out
    assert len(rates) == 3 and all(len(v) == 1 and v[0] > 0 for v in rates.values())
    for name in rates:
        assert f"| {name} |" in table
