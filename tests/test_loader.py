"""Streams rendered in worker processes cut exactly the windows of the in-process stream, and a
stream resumed mid-exposure with workers goes on exactly where it stopped."""

from __future__ import annotations

import numpy as np
import pytest

from kcap.data.dataset import load_dataset
from kcap.tokenization.factory import make_stream
from kcap.tokenization.stream import ExposureStream


def _windows(stream, limit=None):
    out = []
    for i, w in enumerate(stream):
        out.append(np.stack([w.ids, w.people, w.labels]))
        if limit is not None and i + 1 == limit:
            break
    return out


@pytest.mark.parametrize("family", ["bios", "junk"])
def test_two_workers_cut_the_same_windows_and_resume_mid_exposure(family, bios_dir, junk_dirs):
    ds = load_dataset(bios_dir if family == "bios" else junk_dirs["random"])

    def stream(workers: int, state=None):
        if family == "bios":  # blocks of 8 of the 40 people: states fall inside exposures
            s = ExposureStream(ds.source(), ds.tokenizer, exposures=3, seed=1, window=32, block=8)
        else:
            s = make_stream(ds, exposures=3, seed=1, window=32)
        s.render_in_workers(workers)
        if state is not None:
            s.load_state_dict(state)
        return s

    base = stream(0)
    reference = _windows(base)
    ref_counts = base.counts.copy()
    assert (ref_counts == 3).all()

    two = stream(2)
    assert all(map(np.array_equal, _windows(two), reference)) and len(reference) > 100
    assert (two.counts == ref_counts).all()  # every person exactly E exposures

    if family != "bios":
        return
    for cut in (len(reference) // 2 + 7,):
        first = stream(2)
        head = _windows(first, limit=cut)
        state = first.state_dict()
        assert state["exposure"] >= 1 and state["position"] > 0  # inside an exposure
        tail = _windows(stream(2, state=state))
        assert len(head) + len(tail) == len(reference)
        assert all(map(np.array_equal, head + tail, reference))


def test_a_run_fed_by_loader_workers_equals_one_fed_in_process(tmp_path, bios_dir):
    import torch
    from tests.tiny import tiny_run

    from kcap.training.config import parse_config
    from kcap.training.trainer import Trainer

    runs = {}
    for workers in (0, 2):
        cfg = parse_config(tiny_run(bios_dir, exposures=2, loader_workers=workers))
        trainer = Trainer(cfg, tmp_path / f"w{workers}", progress=False)
        trainer.fit()
        runs[workers] = trainer
    for a, b in zip(runs[0].model.parameters(), runs[2].model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert (runs[2].stream.counts == 2).all()
