import dataclasses

import pytest

from lenstrt.config import load_config, override
from lenstrt.errors import ConfigError


def test_shipped_configs_load():
    cfg = load_config("configs/accelerated.yaml")
    assert cfg.training.scheduler == "cosine" and cfg.training.gradient_clip == 1.0
    assert cfg.data.persistent_workers is True
    inf = load_config("configs/inference.yaml")
    assert inf.ensemble.models == ("resnet18", "vit_b_16")
    assert inf.inference.batch_size == 128


def test_cli_overrides_win_and_none_keeps(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("training:\n  lr: 0.01\n  batch_size: 32\n")
    cfg = load_config(p).training
    cfg2 = override(cfg, lr=None, batch_size=8, arch=("vit_small",))
    assert cfg2.lr == 0.01 and cfg2.batch_size == 8 and cfg2.arch == ("vit_small",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg2.lr = 1  # frozen


@pytest.mark.parametrize("text,msg", [
    ("training:\n  lrr: 1\n", "unknown key(s) lrr"),
    ("trainin:\n  lr: 1\n", "unknown section(s) trainin"),
    ("training: [1\n", "not valid YAML"),
    ("training:\n  band_jitter: abc\n", "[training] band_jitter: 'abc' is not float"),
    ("training:\n  band_jitter: 1.5\n", "need 0 <= band_jitter < 1"),
    ("training:\n  members: 2.5\n", "members: 2.5 is not int"),
    ("training:\n  lr: -0.5\n", "lr -0.5: need a learning rate >= 0"),
    ("training:\n  lr: .nan\n", "lr nan: need a learning rate >= 0"),
    ("training:\n  weight_decay: -0.1\n", "weight_decay -0.1: need a number >= 0"),
    ("training:\n  augment: 'no'\n", "augment: 'no' is not bool"),
])
def test_bad_config_names_file_and_problem(tmp_path, text, msg):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert str(p) in str(ei.value) and msg in str(ei.value) and "\n" not in str(ei.value)
