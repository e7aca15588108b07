"""Recipes: every result has lab, gpu and paper grids that expand into valid runs, the runs pinned
in ``tests/recipe_run_ids.json``."""

import json
from pathlib import Path

import pytest

from kcap.errors import KcapError
from kcap.experiments.grid import expand, load_grid
from kcap.experiments.paper import CLAIMS

CONFIGS = Path(__file__).parents[1] / "configs"
RECIPES = sorted((CONFIGS / "recipes").glob("*.yaml"))
EXPERIMENTS = sorted((CONFIGS / "experiments").glob("*.yaml"))
PINNED = Path(__file__).with_name("recipe_run_ids.json")


def run_ids() -> dict[str, list[str]]:
    """Recipe file stem -> the sorted run ids it expands to."""
    return {path.stem: sorted(p.run_id for p in expand(load_grid(path))) for path in RECIPES}


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_experiment_expands_into_distinct_runs(path):
    """The measurement grids that README.md and configs/README.md cite still load and expand."""
    points = expand(load_grid(path))
    assert points and len({p.run_id for p in points}) == len(points)


def test_every_claim_has_a_recipe_at_every_scale():
    for claim in CLAIMS:
        files = list((CONFIGS / "recipes").glob(f"{claim.recipe}-*.yaml"))
        scales = {f.stem.rsplit("-", 1)[1] for f in files}
        assert scales == {"lab", "gpu", "paper"}, (claim.id, files)


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_expands_into_valid_runs(path):
    try:
        grid = load_grid(path)
    except KcapError as e:  # a recipe for a feature this kcap lacks says so, in one line
        assert "does not support yet" in str(e)
        return
    points = expand(grid)
    assert points and grid.result in range(1, 13) and grid.scale in ("lab", "gpu", "paper")
    assert len({p.run_id for p in points}) == len(points)


def test_recipes_expand_to_the_pinned_runs():
    """The recipes are edited by hand, over shared layers (configs/recipes/shared/): they expand to
    exactly the runs the former generator wrote. After an intended change of a recipe's runs,
    rewrite the pins with ``python -m tests.test_recipes`` and say so in the commit."""
    pinned = json.loads(PINNED.read_text())
    actual = run_ids()
    assert actual.keys() == pinned.keys()
    changed = [stem for stem in pinned if actual[stem] != pinned[stem]]
    assert not changed, f"recipes whose runs changed: {changed}"


def test_smoke_sweep_is_four_tiny_runs():
    points = expand(load_grid(CONFIGS / "sweep-smoke.yaml"))
    assert len(points) == 4
    assert all(p.config.dataset.n <= 200 and p.config.training.exposures <= 100 for p in points)


if __name__ == "__main__":
    PINNED.write_text(json.dumps(run_ids(), indent=1) + "\n")
