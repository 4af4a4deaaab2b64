import pytest

from keras_cra.applications import get_model
from keras_cra.profiling import count_macs, count_parameters


@pytest.mark.parametrize(
    "model_name, gmacs",
    # torchvision's published GFLOPS (multiply-adds) for these models.
    [("CRAResNet18", 1.81), ("CRAResNet50", 4.09), ("CRAResNeXt50", 4.23)],
)
def test_backbone_macs_match_published_figures(model_name, gmacs):
    model = get_model(model_name, attention=None)
    assert count_macs(model) / 1e9 == pytest.approx(gmacs, abs=0.01)


def test_cra_is_computationally_lightweight():
    plain = get_model("CRAResNet50", attention=None)
    cra = get_model("CRAResNet50")
    se = get_model("CRAResNet50", attention="se")
    extra = count_macs(cra) - count_macs(plain)
    # Gating multiplies (sum of H*W*C over blocks) + 49*C per block: < 0.5% of the model.
    assert 0 < extra / count_macs(plain) < 0.005
    assert count_macs(cra) < count_macs(se)
    assert count_parameters(cra) - count_parameters(plain) == 755_200
