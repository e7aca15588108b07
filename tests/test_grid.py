"""Grid expansion: product and zip over dotted keys, blocks, file values, needs, naming."""

import pytest
import yaml

from kcap.errors import KcapError
from kcap.experiments.grid import dataset_key, expand, load_grid, parse_grid, select
from kcap.training.config import config_hash

BASE = {
    "dataset": {"kind": "bios", "n": 50, "vocab": 600},
    "model": {"preset": "gpt2-1-1", "overrides": {"d_model": 32}},
    "training": {"exposures": 3, "batch_size": 2, "window": 64},
}


def _points(**grid):
    return expand(parse_grid({"base": BASE, **grid}))


def test_product_is_every_combination_in_order():
    points = _points(product={"dataset.n": [50, 100], "training.seed": [0, 1, 2]})
    assert len(points) == 6
    assert [(p.config.dataset.n, p.config.training.seed) for p in points] == [
        (50, 0),
        (50, 1),
        (50, 2),
        (100, 0),
        (100, 1),
        (100, 2),
    ]
    assert points[4].coords == {"dataset.n": 100, "training.seed": 1}


def test_zip_advances_together_and_multiplies_with_product():
    points = _points(
        product={"training.seed": [0, 1]},
        zip={"model.preset": ["gpt2-1-1", "gpt2-2-1"], "model.overrides.d_model": [16, 48]},
    )
    assert len(points) == 4
    shapes = {(p.config.model.preset, p.config.model.overrides["d_model"]) for p in points}
    assert shapes == {("gpt2-1-1", 16), ("gpt2-2-1", 48)}
    # two zip groups are two independent axes
    points = _points(zip=[{"dataset.n": [50, 60]}, {"training.lr": [1e-3, 2e-3, 3e-3]}])
    assert len(points) == 6


def test_zip_lists_must_have_equal_lengths():
    with pytest.raises(KcapError, match="equal length"):
        _points(zip={"dataset.n": [50, 60], "training.seed": [0]})


def test_run_id_is_the_hash_of_the_full_config_and_names_are_derived():
    a, b = _points(product={"dataset.n": [50, 100]})
    assert a.run_id == config_hash(a.config.model_dump())  # the id `kcap train` records
    assert a.name.startswith("bios-n50-gpt2-1-1-d32-e3-")
    assert a.run_id != b.run_id
    # the same point in another grid (another name, other coordinates) has the same id
    (c,) = expand(parse_grid({"name": "other", "base": BASE}))
    assert c.run_id == a.run_id and c.name == a.name


@pytest.mark.parametrize(
    ("dataset", "prefix"),
    [
        ({"kind": "biod", "n": 8, "k": 2, "c": 1, "d": 4, "l": 1, "t": 4}, "biod-n8-k2c1d4l1t4-"),
        ({"kind": "bios", "n": 8, "variant": "simple"}, "bios-simple-n8-"),
        ({"kind": "junk", "n": 8, "ratio": 7, "junk": "random"}, "junk-random-r7-bios-n8-"),
        (
            {
                "kind": "junk",
                "n": 8,
                "ratio": 3,
                "junk": "repetitive",
                "domain": "junk",
                "junk_n": 5,
            },
            "junk-repetitive5-r3-junk-token-bios-n8-",
        ),
        ({"kind": "bior", "n": 8, "rewriter": "lm", "rewrites": 5}, "bior-n8-w5-"),
        ({"kind": "random", "m": 9, "s": 16, "v": 64}, "random-m9-s16-v64-"),
    ],
)
def test_names_say_what_data_a_run_trains_on(dataset, prefix):
    (point,) = expand(parse_grid({"base": {**BASE, "dataset": dataset}}))
    assert point.name.startswith(prefix + "gpt2-1-1-d32-e3-")


def test_duplicates_are_kept_once_and_blocks_are_a_union():
    points = _points(
        blocks=[
            {"product": {"dataset.n": [50, 100]}},
            {"product": {"dataset.n": [100, 200]}, "set": {"training.seed": 0}},
        ]
    )
    assert [p.config.dataset.n for p in points] == [50, 100, 200]


def test_set_and_base_from_files_and_section_values(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    (tmp_path / "llama.yaml").write_text(
        yaml.safe_dump({"preset": "llama-4-4", "overrides": {"tied": True}})
    )
    (tmp_path / "grid.yaml").write_text(
        yaml.safe_dump(
            {
                "base": "base.yaml",
                "set": {"training.exposures": 7},
                "product": {"model": ["@llama.yaml"]},
                "zip": {"model.preset": ["llama-1-1"], "model.overrides.d_model": [32]},
            }
        )
    )
    grid = load_grid(tmp_path / "grid.yaml", ["training.lr=0.005"])
    assert grid.name == "grid"
    (p,) = expand(grid)
    # the whole section comes from the file; deeper keys then override parts of it
    assert p.config.model.preset == "llama-1-1"
    assert p.config.model.overrides == {"tied": True, "d_model": 32}
    assert p.config.training.exposures == 7 and p.config.training.lr == 0.005


def test_base_layers_merge_in_order_and_blocks_come_from_files(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "scale.yaml").write_text(
        yaml.safe_dump({k: v for k, v in BASE.items() if k != "dataset"})
    )
    (tmp_path / "shared" / "table.yaml").write_text(
        yaml.safe_dump([{"set": {"dataset.n": 60}}, {"product": {"dataset.n": [70, 80]}}])
    )
    grid = {
        "base": ["shared/scale.yaml", {"dataset": BASE["dataset"], "training": {"exposures": 9}}],
        "blocks": ["@shared/table.yaml", {"set": {"dataset.n": 90}}],
    }
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    points = expand(load_grid(tmp_path / "grid.yaml", ["training.window=32"]))
    assert [p.config.dataset.n for p in points] == [60, 70, 80, 90]
    # a layer's mappings merge into the layers below key by key; --set applies to the merge
    (p, *_) = points
    assert (p.config.training.exposures, p.config.training.batch_size) == (9, 2)
    assert p.config.training.window == 32 and p.config.model.overrides == {"d_model": 32}
    # the same runs as the one-mapping base
    flat = parse_grid(
        {
            "base": {**BASE, "training": {**BASE["training"], "exposures": 9, "window": 32}},
            "product": {"dataset.n": [60, 70, 80, 90]},
        }
    )
    assert [q.run_id for q in expand(flat)] == [q.run_id for q in points]
    with pytest.raises(KcapError, match=r"grid\.base\[1\]"):
        parse_grid({"base": [BASE, 3]})
    with pytest.raises(KcapError, match="list of blocks"):
        parse_grid({"base": BASE, "blocks": ["@shared/scale.yaml"]}, root=tmp_path)


def test_a_mapping_value_merges_into_the_base_section_a_file_replaces_it(tmp_path):
    base = {**BASE, "model": {"preset": "gpt2-1-1", "overrides": {"d_model": 32, "context": 64}}}
    (tmp_path / "llama.yaml").write_text(yaml.safe_dump({"preset": "llama-1-1"}))
    rows = [{"mlp_ratio": 1}, {"d_model": 16}]
    merged = expand(parse_grid({"base": base, "zip": {"model.overrides": rows}}))
    # a zip row of overrides keeps the scale's (the lab's rotary floor, its width, ...)
    assert [p.config.model.overrides for p in merged] == [
        {"d_model": 32, "context": 64, "mlp_ratio": 1},
        {"d_model": 16, "context": 64},
    ]
    (whole,) = expand(
        parse_grid({"base": base, "product": {"model": ["@llama.yaml"]}}, root=tmp_path)
    )
    assert whole.config.model.preset == "llama-1-1" and not whole.config.model.overrides


def test_invalid_points_name_their_coordinates():
    with pytest.raises(KcapError, match=r"training.lr.*training.lr=-1"):
        _points(product={"training.lr": [1e-3, -1]})
    with pytest.raises(KcapError, match="unknown keys"):
        parse_grid({"base": BASE, "prodcut": {}})


def test_needs_refuse_a_grid_and_skip_a_block():
    with pytest.raises(KcapError, match=r"dataset\.teleport"):
        parse_grid({"base": BASE, "needs": ["dataset.teleport"]})
    with pytest.raises(KcapError, match=r"dataset\.kind=telepathy"):
        parse_grid({"base": BASE, "needs": ["dataset.kind=telepathy"]})
    assert parse_grid({"base": BASE, "needs": ["dataset.kind=biod", "training.exposures"]})
    grid = parse_grid(
        {
            "base": BASE,
            "blocks": [{"product": {"dataset.n": [50]}}, {"needs": ["model.teleport"], "set": {}}],
        }
    )
    assert len(expand(grid)) == 1 and "model.teleport" in grid.skipped[0]


def test_runs_sharing_a_dataset_spec_share_a_dataset_key():
    a, b, c = _points(product={"training.seed": [0, 1]}, blocks=[{}, {"set": {"dataset.n": 60}}])[
        :3
    ]
    assert dataset_key(a.config) == dataset_key(b.config) != dataset_key(c.config)


def test_only_selects_points_by_config_value_or_name_glob():
    """`kcap sweep --only`: config keys (block `set` values included, numbers as numbers, lists
    of values as alternatives), name/id globs, and several filters narrowing together."""
    points = _points(
        blocks=[
            {"set": {"model.overrides.d_model": 16}, "product": {"dataset.n": [50, 100]}},
            {"product": {"dataset.n": [50, 160], "training.lr": [1e-3, 3e-3]}},
        ]
    )
    assert len(points) == 6

    def picked(*filters):
        return [
            (p.config.model.overrides["d_model"], p.config.dataset.n)
            for p in select(points, list(filters))
        ]

    assert picked("model.overrides.d_model=16") == [(16, 50), (16, 100)]
    assert picked("dataset.n=160,100") == [(16, 100), (32, 160), (32, 160)]  # not 16 in "160"
    assert len(select(points, ["training.lr=3e-3"])) == 2  # YAML reads 3e-3 as a string
    assert picked("training.lr=0.003", "dataset.n=50") == [(32, 50)]
    assert select(points, [points[3].run_id]) == [points[3]]
    assert select(points, ["*-d16-*"]) == points[:2]
    assert select(points, []) == points
    with pytest.raises(KcapError, match=r"'training\.lrr' is not a run config key"):
        select(points, ["training.lrr=1"])
    with pytest.raises(KcapError, match=r"'dataset\.n=7' leaves no run of the grid"):
        select(points, ["dataset.n=7"])
