"""The variant registry: one record per variant, and every user of a variant fact reads it there."""
import dataclasses

import pytest
from conftest import ALL_MODELS

import pvtv2
from pvtv2.bench import PAPER_GFLOPS
from pvtv2.checkpoint import HUB_IDS, OFFICIAL_URLS
from pvtv2.classification import TrainConfig
from pvtv2.model import DEFAULT_DROP_PATH, VARIANTS
from pvtv2.registry import REGISTRY, Variant, get_variant


@pytest.mark.parametrize("name", ALL_MODELS)
def test_every_user_reads_the_record(name):
    v = get_variant(name)
    config = pvtv2.variant_config(name)
    assert {k: getattr(config, k) for k in v.architecture()} == v.architecture() == VARIANTS[name]
    assert config.name == name
    assert HUB_IDS[name] == v.hub_id and OFFICIAL_URLS[name] == v.url and PAPER_GFLOPS[name] == v.paper_gflops
    cfg = TrainConfig(data="x", model=name).resolved()
    assert (cfg.drop_path, cfg.clip_grad) == (v.drop_path, v.clip_grad) and DEFAULT_DROP_PATH[name] == v.drop_path


def test_records_follow_the_official_patterns():
    for name, v in REGISTRY.items():
        if v.family != "pvt_v2":  # PVTv1's records: tests/test_pvt_v1.py
            continue
        assert v.name == name
        assert v.hub_id == f"timm/{name}.in1k" and v.url.endswith(f"/download/v2/{name}.pth")
        # configs/pvt_v2: the deep variants (b3-b5) train with drop path 0.3 and clipping 1.0.
        assert (v.drop_path, v.clip_grad) == ((0.3, 1.0) if sum(v.depths) > 20 else (0.1, 0.0)), name
        assert 0 < v.paper_gflops < 20 and 70 < v.paper_top1 < 85 and v.params_m == round(v.num_params / 1e6, 1)


def test_records_are_frozen_and_unknown_names_listed():
    with pytest.raises(dataclasses.FrozenInstanceError):
        REGISTRY["pvt_v2_b0"].drop_path = 0.5
    with pytest.raises(ValueError, match="unknown model 'pvt_v2_b9'; known models: pvt_v2_b0, .*pvt_v2_b5"):
        get_variant("pvt_v2_b9")
    assert isinstance(pvtv2.get_variant("pvt_v2_b0"), Variant)
