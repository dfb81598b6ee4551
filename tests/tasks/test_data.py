"""Data as a task: loaders per file kind, kind inference, label encoding,
train-only normalisation, the fixed-seed validation carve, and one-line errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from archgram.tasks.data import DataError, data_task, from_arrays, from_path, infer_kind
from archgram.tasks.data.fingerprint import changes, fingerprint

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("x, y, override, expected", [
    (np.zeros((4, 7), np.float32), np.array([0, 1, 0, 1]), None, "tabular-classification"),
    (np.zeros((4, 7), np.float32), np.zeros(4, np.float32), None, "tabular-regression"),
    (np.zeros((4, 9, 3), np.float32), np.array(["a", "b", "a", "b"]), None, "sequence-classification"),
    (np.zeros((4, 8, 8), np.uint8), np.array([0, 1, 0, 1]), None, "image-classification"),
    (np.zeros((4, 3, 8, 8), np.float32), np.zeros((4, 2)), None, "image-regression"),
    (np.zeros((4, 7), np.float32), np.array([0, 1, 0, 1]), "sequence", "sequence-classification"),
    (np.zeros((4, 7), np.float32), np.array([0, 1, 0, 1]), "regression", "tabular-regression"),
])
def test_kind_follows_the_documented_rules_and_the_override(x, y, override, expected):
    assert str(infer_kind(x, y, override)) == expected


def test_layouts_give_the_body_the_documented_shapes():
    x = RNG.integers(0, 255, (40, 6, 5, 3), dtype=np.uint8)  # channels last
    y = np.arange(40) % 2
    t = from_arrays(x, y, x_val=x[:4], y_val=y[:4], x_test=x[:4], y_test=y[:4])  # nothing carved
    assert t.body_input_shape(8) == (8, 3, 6, 5)
    assert torch.equal(t.data(0).x_train, torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    assert from_arrays(np.zeros((40, 11), np.float32) + RNG.normal(size=(40, 11)), y, kind="sequence").body_input_shape(2) == (2, 11, 1)
    assert from_arrays(RNG.normal(size=(40, 11)).astype(np.float32), y).body_input_shape(2) == (2, 11, 16)


def test_string_labels_become_sorted_class_indices():
    y = np.array(["cat", "dog", "ant"] * 20)
    t = from_arrays(RNG.normal(size=(60, 3)).astype(np.float32), y, x_val=np.zeros((3, 3), np.float32),
                    y_val=np.array(["dog", "ant", "cat"]))
    assert list(t.classes) == ["ant", "cat", "dog"]
    assert t.data(0).y_val.tolist() == [2, 0, 1]


def test_normalisation_statistics_come_from_the_training_split_only():
    x = RNG.normal(3.0, 2.0, size=(200, 4)).astype(np.float32)
    xv = np.full((50, 4), 1000.0, np.float32)  # would move the mean a lot if it leaked in
    t = from_arrays(x, np.arange(200) % 2, x_val=xv, y_val=np.arange(50) % 2)
    train = t.data(0).x_train.numpy()
    assert np.allclose(t.x_mean, train.mean(0), atol=1e-5) and np.allclose(t.x_std, train.std(0), atol=1e-5)
    z = t.stem(t.body_input_shape(4))
    tokens = z(torch.from_numpy(train))  # standardised features scale their tokens
    assert tokens.shape == (len(train), 4, 16)
    assert abs(float(t.x_mean[0]) - 3.0) < 0.4


def test_image_statistics_are_per_channel_over_train():
    x = RNG.integers(0, 255, (30, 3, 4, 4), dtype=np.uint8)
    t = from_arrays(x, np.arange(30) % 3)
    tr = t.data(0).x_train.numpy().astype(np.float64)
    assert np.allclose(t.x_mean, tr.mean((0, 2, 3))) and np.allclose(t.x_std, tr.std((0, 2, 3)))
    out = t.stem(t.body_input_shape(2))(torch.from_numpy(x[:2]))
    assert out.dtype == torch.float32 and out.shape == (2, 3, 4, 4)


def test_validation_is_carved_from_train_with_a_fixed_seed():
    x = np.arange(100, dtype=np.float32)[:, None].repeat(2, 1)
    y = np.arange(100) % 2
    a, b = from_arrays(x, y), from_arrays(x, y)
    da, db = a.data(0), b.data(0)
    assert torch.equal(da.x_val, db.x_val) and torch.equal(da.x_test, db.x_test)
    assert (da.n_train, da.n_val, da.n_test) == (80, 10, 10)
    ids = [set(t[:, 0].int().tolist()) for t in (da.x_train, da.x_val, da.x_test)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert len(ids[0] | ids[1] | ids[2]) == 100
    other = from_arrays(x, y, val_seed=1).data(0)
    assert not torch.equal(other.x_val, da.x_val)
    given = from_arrays(x, y, x_val=x[:5], y_val=y[:5]).data(0)
    assert given.n_val == 5 and given.n_train == 90  # only test is carved


def test_regression_head_predicts_in_data_units_and_r2_matches_sklearn():
    x = RNG.normal(size=(100, 3)).astype(np.float32)
    y = (1000 + 50 * x[:, 0]).astype(np.float32)
    t = from_arrays(x, y)
    head = t.head((4, 3, 16))
    torch.nn.init.zeros_(head.fc.weight)
    torch.nn.init.zeros_(head.fc.bias)
    assert torch.allclose(head(torch.randn(4, 3, 16)), torch.full((4,), t.y_mean[0]))
    # hand-computed: mean 7/3, SS_tot = 42/9, SS_res = 1 -> R2 = 1 - 9/42
    assert t.metric(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 4.0])) == pytest.approx(33 / 42, abs=1e-12)
    two = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 1.0]]), torch.tensor([[1.0, 0.0], [2.0, 1.0], [4.0, 1.0]])
    assert t.metric(*two) == pytest.approx((33 / 42 + (1 - 1 / (2 / 3))) / 2, abs=1e-12)  # mean over outputs
    yt = torch.tensor(y[:4])
    assert float(t.loss(yt + t.y_std[0], yt)) == pytest.approx(1.0, rel=1e-5)  # one std off: unit loss


# ------------------------------------------------------------------ files
def test_npz_csv_parquet_and_pt_load_the_same_table(tmp_path):
    x = RNG.normal(size=(50, 3)).astype(np.float32)
    y = np.arange(50) % 3
    np.savez(tmp_path / "d.npz", x=x, y=y)
    torch.save({"x": torch.from_numpy(x), "y": torch.from_numpy(y)}, tmp_path / "d.pt")
    import pandas as pd

    frame = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "label": y})
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_parquet(tmp_path / "d.parquet")
    tasks = [from_path(tmp_path / "d.npz"), from_path(tmp_path / "d.pt"),
             from_path(tmp_path / "d.csv", target="label"), from_path(tmp_path / "d.parquet", target="label")]
    for t in tasks:
        assert str(t.kind) == "tabular-classification"
        assert torch.allclose(t.data(0).x_train, tasks[0].data(0).x_train, atol=1e-6)
        assert torch.equal(t.data(0).y_val, tasks[0].data(0).y_val)


def test_npz_splits_and_one_hot_text_columns(tmp_path):
    x = RNG.normal(size=(40, 2)).astype(np.float32)
    np.savez(tmp_path / "s.npz", x=x, y=np.arange(40) % 2, x_val=x[:6], y_val=np.arange(6) % 2,
             x_test=x[:7], y_test=np.arange(7) % 2)
    d = from_path(tmp_path / "s.npz").data(0)
    assert (d.n_train, d.n_val, d.n_test) == (40, 6, 7)
    import pandas as pd

    pd.DataFrame({"colour": ["red", "blue"] * 10, "size": np.arange(20.0), "price": np.arange(20.0) * 2}).to_csv(
        tmp_path / "t.csv", index=False)
    t = from_path(tmp_path / "t.csv", target="price")
    assert str(t.kind) == "tabular-regression" and t.info["features"] == ["size", "colour_blue", "colour_red"]


def test_image_folder_is_read_by_pillow_into_uint8_nchw(tmp_path):
    from PIL import Image

    pixels = {}
    for c, cls in enumerate(("cat", "dog")):
        (tmp_path / cls).mkdir()
        for i in range(6):
            a = np.full((5, 4, 3), 10 * i + c, np.uint8)
            a[0, 0] = (255, 0, 7)
            Image.fromarray(a).save(tmp_path / cls / f"{i}.png")
            pixels[(cls, i)] = a
    t = from_path(tmp_path, val_fraction=0.2, test_fraction=0.2)
    assert str(t.kind) == "image-classification" and t.body_input_shape(2) == (2, 3, 5, 4)
    assert list(t.classes) == ["cat", "dog"]
    x = np.concatenate([t.arrays[k] for k in ("x_train", "x_val", "x_test")])
    assert x.dtype == np.uint8 and x.shape == (12, 3, 5, 4)
    assert {tuple(v[:, 0, 0]) for v in x} == {(255, 0, 7)}
    assert sorted(int(v[0, 1, 1]) for v in x) == sorted(10 * i + c for i in range(6) for c in range(2))


@pytest.mark.parametrize("make, message", [
    (lambda p: (np.zeros((5, 2)), np.zeros(4)), "x has 5 rows but y has 4"),
    (lambda p: (np.array([[0.0], [np.nan], [1], [2]]), np.array([0, 1, 0, 1])), "NaN or inf values in 1 row (first: row 1)"),
    (lambda p: (np.array([[0.0], [np.inf], [1], [2]]), np.array([0, 1, 0, 1])), "NaN or inf"),
    (lambda p: (np.zeros((6, 2)), np.ones(6, int)), "single class"),
])
def test_bad_arrays_are_one_line_errors(make, message):
    x, y = make(None)
    with pytest.raises(DataError) as err:
        from_arrays(x, y)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_validation_labels_never_seen_in_training_are_refused():
    with pytest.raises(DataError, match=r"y_val holds label 7 that the training targets never show"):
        from_arrays(np.zeros((6, 2)), np.arange(6) % 2, x_val=np.zeros((2, 2)), y_val=np.array([1, 7]))


def test_unreadable_and_unsupported_files_are_one_line_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}, None], dtype=object), y=np.array([0, 1]))
    torch.save({"x": torch.zeros(2, 2), "y": torch.zeros(2), "extra": __import__("argparse").Namespace(a=1)}, tmp_path / "sneaky.pt")
    np.savez(tmp_path / "nox.npz", inputs=np.zeros(3))
    for name, message in (("notes.txt", "unsupported file type '.txt'"), ("broken.npz", "cannot read it"),
                          ("objects.npz", "would need unpickling"), ("sneaky.pt", "more than tensors"),
                          ("nox.npz", "needs arrays 'x' and 'y'"), ("missing.npz", "no such file")):
        with pytest.raises(DataError) as err:
            from_path(tmp_path / name)
        assert message in str(err.value) and "\n" not in str(err.value), (name, err.value)
    import pandas as pd

    pd.DataFrame({"a": [1.0, 2.0], "label": [0, 1]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match="needs --target"):
        from_path(tmp_path / "t.csv")
    with pytest.raises(DataError, match="did you mean 'label'"):
        from_path(tmp_path / "t.csv", target="labl")


def test_a_torch_dataset_is_read_through_a_dataloader():
    class Squares(torch.utils.data.Dataset):
        def __len__(self):
            return 30

        def __getitem__(self, i):
            return torch.tensor([float(i), float(i * i)]), i % 3

    t = data_task(Squares())
    d = t.data(0)
    rows = torch.cat([d.x_train, d.x_val, d.x_test])
    assert sorted(rows[:, 0].int().tolist()) == list(range(30))
    assert torch.equal(rows[:, 1], rows[:, 0] ** 2) and str(t.kind) == "tabular-classification"


def test_fingerprint_names_the_array_that_changed():
    a = {"x": np.arange(6.0).reshape(3, 2), "y": np.array([0, 1, 0])}
    before = fingerprint(a)
    assert changes(before, fingerprint({k: v.copy() for k, v in a.items()})) == []
    b = dict(a, y=np.array([0, 1, 1]))
    assert changes(before, fingerprint(b)) == [f"y contents (sha256 {before['arrays']['y']['sha256'][:12]} -> "
                                               f"{fingerprint(b)['arrays']['y']['sha256'][:12]})"]
    assert changes(before, fingerprint(dict(a, x=np.zeros((4, 2))))) == ["x shape (3, 2) -> (4, 2)"]


# ------------------------------------------------------- larger than memory
def test_npy_folder_inputs_stay_on_disk_and_stream_the_same_batches(tmp_path):
    """x.npy is memory-mapped: splits are row indices, pickling ships the path and
    indices (not the data), and training batches read through a DataLoader with
    worker processes equal the in-memory ones batch for batch."""
    import pickle

    from archgram.search.evaluator import train_batches
    from archgram.tasks.data.lazy import LazyRows

    x = RNG.integers(0, 256, (300, 6, 5, 3), dtype=np.uint8)  # channels last, laid out per batch
    y = np.arange(300) % 3
    (tmp_path / "d").mkdir()
    np.save(tmp_path / "d" / "x.npy", x)
    np.save(tmp_path / "d" / "y.npy", y)
    lazy, memory = from_path(tmp_path / "d", loader_workers=2), from_arrays(x, y)
    dl, dm = lazy.data(0), memory.data(0)
    assert isinstance(dl.x_train, LazyRows) and dl.x_train.shape == dm.x_train.shape == (240, 3, 6, 5)
    assert torch.equal(dl.x_val[:7], dm.x_val[:7]) and torch.equal(dl.x_test[[3, 1]], dm.x_test[[3, 1]])
    assert lazy.x_mean == pytest.approx(memory.x_mean) and lazy.fingerprint == memory.fingerprint
    assert len(pickle.dumps(dl.x_train)) < x.nbytes / 10  # the path and row indices, not the pixels
    streamed = train_batches(dl, 16, torch.Generator().manual_seed(3), torch.device("cpu"))
    in_memory = train_batches(dm, 16, torch.Generator().manual_seed(3), torch.device("cpu"))
    for _ in range(20):  # past the first epoch (15 batches)
        (xs, ys), (xm, ym) = next(streamed), next(in_memory)
        assert torch.equal(xs, xm) and torch.equal(ys, ym)
    streamed.close()


def test_uncompressed_npz_members_are_memory_mapped_compressed_ones_read(tmp_path):
    """np.savez stores members uncompressed: the loader maps them where they sit
    (page cache, not private memory); np.savez_compressed members are read."""
    from archgram.tasks.data.loaders import load_path

    x = RNG.normal(size=(50, 3, 4)).astype(np.float32)
    xf = np.asfortranarray(RNG.normal(size=(6, 3, 4)))
    y = np.arange(50) % 2
    np.savez(tmp_path / "plain.npz", x=x, y=y, x_val=xf, y_val=y[:6])
    np.savez_compressed(tmp_path / "packed.npz", x=x, y=y, x_val=xf, y_val=y[:6])
    plain, packed = load_path(tmp_path / "plain.npz"), load_path(tmp_path / "packed.npz")
    assert isinstance(plain.splits["train"][0], np.memmap) and not isinstance(packed.splits["train"][0], np.memmap)
    for split in ("train", "val"):
        for a, b in zip(plain.splits[split], packed.splits[split]):
            assert np.array_equal(a, b)  # same values, Fortran order included
    tasks = from_path(tmp_path / "plain.npz"), from_path(tmp_path / "packed.npz")
    assert tasks[0].fingerprint == tasks[1].fingerprint
    assert torch.equal(tasks[0].data(0).x_train, tasks[1].data(0).x_train)
    import pickle

    np.savez(tmp_path / "all.npz", x=x, y=y, x_val=xf, y_val=y[:6], x_test=xf, y_test=y[:6])  # nothing carved
    mapped = from_path(tmp_path / "all.npz")
    assert isinstance(mapped.arrays["x_train"], np.memmap)
    shipped = pickle.loads(pickle.dumps(mapped))  # as Ray ships it: plain arrays, which Ray shares zero-copy
    assert type(shipped.arrays["x_train"]) is np.ndarray and np.array_equal(shipped.arrays["x_train"], x)
