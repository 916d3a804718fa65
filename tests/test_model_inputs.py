"""What ``PyramidVisionTransformerV2`` says about inputs it cannot take, and the mixed-precision
uses it must keep taking."""
import pytest
import torch

import pvtv2
from pvtv2.errors import ConfigError


@pytest.fixture(scope="module")
def b0():
    return pvtv2.create_model("pvt_v2_b0", num_classes=3).eval()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_input_dtype_must_match_the_weights(b0, dtype):
    with pytest.raises(ValueError, match=f"input dtype {dtype} does not match the model's torch.float32: "
                                         r"convert the input with x.to\(torch.float32\)"):
        b0(torch.zeros(1, 3, 32, 32, dtype=dtype))


def test_empty_batch_is_refused(b0):
    with pytest.raises(ValueError, match=r"empty batch: got shape \(0, 3, 32, 32\); expected at least one image"):
        b0(torch.zeros(0, 3, 32, 32))


def test_mixed_precision_uses_still_work(b0):
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert b0(x).dtype == torch.bfloat16                             # AMP: float32 input, float32 model
        assert b0(x.bfloat16()).shape == (2, 3)
        with pytest.raises(ValueError, match="float64"):                 # autocast never casts float64
            b0(x.double())
    half = pvtv2.create_model("pvt_v2_b0", num_classes=3).eval().to(torch.bfloat16)
    with torch.no_grad():
        assert half(x.bfloat16()).dtype == torch.bfloat16                 # a converted model, matching input
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert half(x).dtype == torch.bfloat16                        # float32 input to a bf16 model


@pytest.mark.parametrize("rate", [1.0, 1.5, -0.1, float("nan")])
def test_drop_rates_outside_0_1_are_refused_by_create_model(b0, rate):
    with pytest.raises(ConfigError, match=rf"drop_path_rate must be in \[0, 1\) \(a probability; 0 disables\), "
                                                rf"got {rate}"):
        pvtv2.create_model("pvt_v2_b0", drop_path_rate=rate)
    with pytest.raises(ConfigError, match=r"drop_path_rate must be in \[0, 1\)"):
        pvtv2.create_model("pvt_v2_b0", pretrained=b0.state_dict(), drop_path_rate=rate)
    with pytest.raises(ConfigError, match=rf"attn_drop_rate must be in \[0, 1\).*got {rate}"):
        pvtv2.create_model("pvt_v2_b0", attn_drop_rate=rate)
