"""Datasets and the input pipeline, on files fabricated in the real on-disk formats."""

from __future__ import annotations

import pickle
import socket

import numpy as np
import pytest
import torch
from torchvision.transforms import functional as TF

from equinorm.data import DATASETS, DeviceLoader, TorchLoader, build_loaders, dataset_info
from equinorm.data.augment import crop_flip
from equinorm.data.fabricate import write_cifar, write_imagenet, write_svhn
from equinorm.errors import ConfigError, DatasetError


def cfg(name, root, **kw):
    return {"name": name, "root": str(root), "verify": False, "download": False, **kw}


def build(dataset, **kw):
    options = {"batch_size": 16, "eval_batch_size": 64, "seed": 0}
    options.update(kw)
    return build_loaders(dataset, **options)


# --- augmentation semantics ------------------------------------------------------------------


def test_crop_flip_matches_torchvision_pixels():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8, generator=g)
    top = torch.randint(0, 9, (12,), generator=g)
    left = torch.randint(0, 9, (12,), generator=g)
    flip = torch.rand(12, generator=g) < 0.5
    ours = crop_flip(images, top, left, flip, padding=4)
    for i in range(12):
        pil = TF.to_pil_image(images[i])
        ref = TF.crop(TF.pad(pil, 4, fill=0), int(top[i]), int(left[i]), 32, 32)
        if flip[i]:
            ref = TF.hflip(ref)
        assert torch.equal(ours[i], TF.pil_to_tensor(ref)), i


def test_crop_offsets_cover_the_padding_range_and_flips_half():
    from equinorm.data import seeding
    from equinorm.data.augment import draw_crop_flip

    top, left, flips = draw_crop_flip(4000, 2, True, seeding.generator(0, 0, seeding.AUGMENT))
    assert set(top.tolist()) == set(range(5)) == set(left.tolist())
    assert 0.45 < flips.float().mean().item() < 0.55


# --- the device loader ----------------------------------------------------------------------


def digits_loader(**kw):
    from equinorm.data import get_source

    x, y = get_source("digits").arrays(True)
    options = {"train": True, "seed": 3, "crop_padding": 1, "flip": True}
    options.update(kw)
    return DeviceLoader(x, y, 100, **options)


def test_device_loader_is_reproducible_per_seed_and_varies_by_epoch_and_seed():
    a = [x for x, _ in digits_loader().iterate(2)]
    b = [x for x, _ in digits_loader().iterate(2)]
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert not torch.equal(a[0], next(digits_loader().iterate(3))[0])
    assert not torch.equal(a[0], next(digits_loader(seed=4).iterate(2))[0])


def test_device_loader_resumes_mid_epoch():
    full = list(digits_loader().iterate(1))
    tail = list(digits_loader().iterate(1, start_batch=5))
    assert len(tail) == len(full) - 5
    for (x, y), (xt, yt) in zip(full[5:], tail, strict=True):
        assert torch.equal(x, xt) and torch.equal(y, yt)


def test_device_loader_covers_each_example_once_per_epoch():
    loader = digits_loader(crop_padding=0, flip=False)
    seen = torch.cat([y for _, y in loader.iterate(0)])
    assert len(seen) == loader.num_examples == 1437
    assert torch.equal(torch.bincount(seen), torch.bincount(loader.labels))


def test_device_loader_shards_across_ranks():
    shards = [digits_loader(rank=r, world_size=2).epoch_indices(4) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 1437 // 2
    assert not set(shards[0].tolist()) & set(shards[1].tolist())
    evals = [digits_loader(train=False, rank=r, world_size=2).epoch_indices(0) for r in range(2)]
    assert sorted(torch.cat(evals).tolist()) == list(range(1437))


def test_device_loader_emits_channels_last_and_normalizes():
    loader = digits_loader(channels_last=True, mean=[0.5], std=[0.25], crop_padding=0, flip=False)
    x, _ = next(loader.iterate(0))
    assert x.is_contiguous(memory_format=torch.channels_last)
    raw = loader.images[loader.epoch_indices(0)[:100]].float() / 255
    torch.testing.assert_close(x, (raw - 0.5) / 0.25)


# --- fabricated files through the real classes ----------------------------------------------


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
def test_cifar_pickles_load_with_the_written_pixels_and_labels(tmp_path, kind):
    ref = write_cifar(tmp_path, kind, n_train=50, n_test=20)
    data = build(cfg(kind, tmp_path), standardize_default=False)
    assert data.info.num_classes == (10 if kind == "cifar10" else 100)
    x, y = next(data.test.iterate(0))
    assert torch.equal(y, torch.as_tensor(ref["test"][1]))
    torch.testing.assert_close(x, torch.as_tensor(ref["test"][0]).float() / 255)
    assert data.train.num_examples == 50


def test_svhn_trains_on_train_plus_extra_and_maps_label_10_to_0(tmp_path):
    ref = write_svhn(tmp_path, n_train=30, n_extra=20, n_test=10)
    data = build(cfg("svhn", tmp_path), standardize_default=False)
    assert data.train.num_examples == 50
    x, y = next(data.test.iterate(0))
    assert torch.equal(y, torch.as_tensor(ref["test"][1]))
    torch.testing.assert_close(x, torch.as_tensor(ref["test"][0]).float() / 255)
    assert build(cfg("svhn", tmp_path, extra=False)).train.num_examples == 30


def test_imagenet_folder_tree_through_the_dataloader_path(tmp_path):
    write_imagenet(tmp_path, classes=3, per_class=4, size=40)
    dataset = cfg(
        "imagenet",
        tmp_path,
        workers=0,
        augment={"random_resized_crop": True, "flip": True, "eval_resize": 36},
    )
    data = build(dataset, batch_size=4, eval_batch_size=6)
    assert isinstance(data.train, TorchLoader)
    x, y = next(data.train.iterate(0))
    assert x.shape == (4, 3, 224, 224) and y.max() < 3
    xt, _ = next(data.test.iterate(0))
    assert xt.shape == (6, 3, 224, 224)
    with pytest.raises(DatasetError, match="same 1000"):
        build(dict(dataset, verify=True))


def test_torch_loader_is_reproducible_whatever_the_workers_and_resumes(tmp_path):
    write_cifar(tmp_path, "cifar10", n_train=64, n_test=8)
    dataset = cfg("cifar10", tmp_path, loader="torch", augment={"crop_padding": 4, "flip": True})
    runs = {}
    for workers in (0, 2):
        data = build(dict(dataset, workers=workers), batch_size=8)
        runs[workers] = [x for x, _ in data.train.iterate(1)]
        tail = [x for x, _ in data.train.iterate(1, start_batch=3)]
        assert all(torch.equal(a, b) for a, b in zip(runs[workers][3:], tail, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(runs[0], runs[2], strict=True))
    assert not torch.equal(runs[0][0], next(data.train.iterate(2))[0])


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn", "imagenet"])
def test_the_torch_loader_s_datasets_pickle_for_spawned_workers(name, tmp_path):
    # spawn and forkserver (Python 3.14's default on Linux) send the dataset to every worker
    # pickled; the local classes (files unchecked, ImageNet's error naming) did not pickle
    write = {"svhn": write_svhn, "imagenet": write_imagenet}.get(name)
    write(tmp_path) if write else write_cifar(tmp_path, name)
    data = build(cfg(name, tmp_path, loader="torch", workers=1), batch_size=4)
    for loader in (data.train, data.test):
        dataset = loader.loader.dataset
        (x, y), (x2, y2) = dataset[(1, 2)], pickle.loads(pickle.dumps(dataset))[(1, 2)]
        assert torch.equal(x, x2) and y == y2


def test_device_and_torch_loader_agree_without_augmentation(tmp_path):
    write_cifar(tmp_path, "cifar10", n_train=40, n_test=24)
    outs = {}
    for kind in ("device", "torch"):
        data = build(cfg("cifar10", tmp_path, loader=kind, workers=0), standardize_default=True)
        outs[kind] = next(data.test.iterate(0))
    torch.testing.assert_close(outs["device"][0], outs["torch"][0])
    assert torch.equal(outs["device"][1], outs["torch"][1])


def test_digits_fixed_split():
    data = build({"name": "digits"}, standardize_default=False)
    assert data.train.num_examples == 1437 and data.test.num_examples == 360
    again = build({"name": "digits"}, seed=7)
    assert torch.equal(data.test.labels, again.test.labels)
    counts_all = np.bincount(np.concatenate([data.train.labels.numpy(), data.test.labels.numpy()]))
    counts_test = np.bincount(data.test.labels.numpy())
    assert counts_all.sum() == 1797
    assert np.abs(counts_test - 0.2 * counts_all).max() <= 1  # stratified
    assert data.train.images.dtype == torch.uint8 and int(data.train.images.max()) == 255


def test_standardization_follows_the_norm_unless_overridden(tmp_path):
    write_cifar(tmp_path, "cifar10", n_train=20, n_test=20)
    raw = build(cfg("cifar10", tmp_path), standardize_default=False)
    std = build(cfg("cifar10", tmp_path), standardize_default=True)
    forced = build(cfg("cifar10", tmp_path, standardize=True), standardize_default=False)
    x_raw = next(raw.test.iterate(0))[0]
    assert x_raw.min() >= 0 and x_raw.max() <= 1
    mean = torch.tensor(dataset_info("cifar10").mean).view(1, 3, 1, 1)
    sd = torch.tensor(dataset_info("cifar10").std).view(1, 3, 1, 1)
    torch.testing.assert_close(next(std.test.iterate(0))[0], (x_raw - mean) / sd)
    torch.testing.assert_close(next(forced.test.iterate(0))[0], (x_raw - mean) / sd)


# --- errors a user can act on ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn", "imagenet"])
def test_missing_dataset_names_the_root(tmp_path, name):
    with pytest.raises(DatasetError, match=f"Looked in dataset.root={tmp_path}$") as err:
        build(cfg(name, tmp_path))
    assert name in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["cifar10", "svhn"])
def test_offline_download_fails_fast_naming_the_root_and_leaves_no_folder(
    tmp_path, monkeypatch, name
):
    def offline(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", offline)
    monkeypatch.setattr(socket, "getaddrinfo", offline)
    typo = tmp_path / "dtaa" / "sets"  # a mistyped root: the failed download leaves it unmade
    with pytest.raises(DatasetError, match=r"download failed.*Looked in dataset\.root="):
        build(cfg(name, typo, download=True))
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()  # a root that was there before stays
    with pytest.raises(DatasetError, match="download failed"):
        build(cfg(name, tmp_path / "kept", download=True))
    assert list(tmp_path.iterdir()) == [tmp_path / "kept"]


def test_checksums_are_verified_by_default(tmp_path):
    ref = write_cifar(tmp_path, "cifar10", n_train=20, n_test=10)
    with pytest.raises(DatasetError, match="data_batch_1 is corrupt or truncated"):
        build(cfg("cifar10", tmp_path, verify=True))
    write_svhn(tmp_path)
    with pytest.raises(DatasetError, match=r"train_32x32\.mat is corrupt"):
        build(cfg("svhn", tmp_path, verify=True))
    assert ref["folder"].is_dir()


def test_truncated_file_is_named(tmp_path):
    ref = write_cifar(tmp_path, "cifar10", n_train=20, n_test=10)
    path = ref["folder"] / "data_batch_3"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DatasetError, match="data_batch_3 is corrupt or truncated"):
        build(cfg("cifar10", tmp_path))
    write_svhn(tmp_path)
    mat = tmp_path / "svhn" / "test_32x32.mat"
    mat.write_bytes(mat.read_bytes()[:200])
    with pytest.raises(DatasetError, match=r"test_32x32\.mat is corrupt or truncated"):
        build(cfg("svhn", tmp_path))


def _rewrite(path, **changes):
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    entry.update(changes)
    with open(path, "wb") as f:
        pickle.dump(entry, f)
    return entry


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: {"labels": e["labels"][:-1]}, "4 images but 3 labels"),
        (lambda e: {"labels": [*e["labels"][:-1], 10]}, r"labels \d+\.\.10 outside 0\.\.9"),
        (lambda e: {"data": e["data"].astype(np.float32)}, "pixels are float32, expected uint8"),
        (
            lambda e: {"data": e["data"].reshape(-1, 3, 32, 32)[:, :, :16, :16].reshape(-1, 768)},
            "data_batch_2 is corrupt",
        ),  # 16x16 images: the file cannot be the release
    ],
    ids=["fewer-labels", "label-range", "float-pixels", "16x16"],
)
def test_a_cifar_file_that_is_not_the_release_is_named_in_one_line(tmp_path, change, message):
    ref = write_cifar(tmp_path, "cifar10", n_train=20, n_test=10)
    path = ref["folder"] / "data_batch_2"
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    _rewrite(path, **change(entry))
    with pytest.raises(DatasetError, match=message) as err:
        build(cfg("cifar10", tmp_path))
    assert "data_batch_2" in str(err.value) and "\n" not in str(err.value)


def test_svhn_labels_and_imagenet_class_folders_are_checked(tmp_path):
    from scipy.io import loadmat, savemat

    write_svhn(tmp_path, n_train=6, n_extra=4, n_test=4)
    mat = tmp_path / "svhn" / "extra_32x32.mat"
    data = loadmat(mat)
    savemat(mat, {"X": data["X"], "y": np.full_like(data["y"], 12)})
    with pytest.raises(DatasetError, match=r"extra_32x32\.mat: labels 12\.\.12 outside 0\.\.9"):
        build(cfg("svhn", tmp_path))
    write_imagenet(tmp_path, classes=3, per_class=2, size=40)
    (tmp_path / "imagenet" / "val" / "n00000000").rename(tmp_path / "imagenet" / "val" / "zz")
    with pytest.raises(DatasetError, match="must hold the same class folders"):
        build(cfg("imagenet", tmp_path, workers=0, verify=False))


def test_a_batch_larger_than_the_data_with_drop_last_is_refused(tmp_path):
    write_cifar(tmp_path, "cifar10", n_train=20, n_test=10)
    dataset = cfg("cifar10", tmp_path, drop_last=True)
    with pytest.raises(DatasetError, match=r"makes no batch of 32 with dataset\.drop_last=true"):
        build_loaders(dataset, batch_size=32, eval_batch_size=8, seed=0)
    assert len(build_loaders(dataset, batch_size=16, eval_batch_size=8, seed=0).train) == 1


def test_a_batch_larger_than_the_data_says_that_an_epoch_is_one_step(tmp_path, caplog):
    write_cifar(tmp_path, "cifar10", n_train=20, n_test=10)
    train = build(cfg("cifar10", tmp_path, workers=0), batch_size=32).train
    assert len(train) == 1  # train.batch_size=100000 on the digits ran, recorded as 100000
    assert "a training batch of 32 is more than this process's 20 training images" in caplog.text
    caplog.clear()
    build(cfg("cifar10", tmp_path, workers=0), batch_size=16)
    assert "training batch" not in caplog.text


def test_bad_names_and_loader_choices_name_the_valid_ones(tmp_path):
    with pytest.raises(KeyError, match="valid datasets: cifar10, cifar100, svhn, imagenet, digits"):
        dataset_info("mnist")
    with pytest.raises(ConfigError, match="device, torch"):
        build({"name": "digits", "loader": "gpu"})
    with pytest.raises(TypeError, match="takes no option"):
        build({"name": "digits", "extra": True})
    assert set(DATASETS) == {"cifar10", "cifar100", "svhn", "imagenet", "digits"}


def test_env_variable_sets_the_default_root(tmp_path, monkeypatch):
    from equinorm.data import default_root, get_source

    monkeypatch.setenv("EQUINORM_DATA", str(tmp_path))
    assert default_root() == str(tmp_path)
    assert get_source("cifar10").root == tmp_path
    monkeypatch.delenv("EQUINORM_DATA")
    assert default_root() == "data"


@pytest.mark.parametrize("kind", ["device", "torch"])
@pytest.mark.parametrize("world", [1, 2])
def test_virtual_devices_take_the_batches_of_that_many_ranks(tmp_path, kind, world):
    """k virtual devices on rank r: each batch is, in turn, the batches that ranks r*k .. r*k+k-1
    of a world_size*k DDP run would take -- same examples, same augmentation, same order."""
    write_cifar(tmp_path, "cifar10", n_train=90, n_test=8)
    dataset = cfg("cifar10", tmp_path, loader=kind, workers=0, augment={"crop_padding": 4})
    k = 2
    for rank in range(world):
        virtual = build(dataset, batch_size=8, rank=rank, world_size=world, virtual_devices=k)
        ranks = [
            build(dataset, batch_size=8, rank=rank * k + j, world_size=world * k) for j in range(k)
        ]
        assert len(virtual.train) == len(ranks[0].train) == -(-(90 // (world * k)) // 8)
        for (x, y), *parts in zip(
            virtual.train.iterate(1), *(r.train.iterate(1) for r in ranks), strict=True
        ):
            assert len(y) == sum(len(p[1]) for p in parts)  # the partial last batch too
            torch.testing.assert_close(x, torch.cat([p[0] for p in parts]), rtol=0, atol=0)
            assert torch.equal(y, torch.cat([p[1] for p in parts]))
        resumed = next(virtual.train.iterate(1, start_batch=2))[1]
        assert torch.equal(resumed, list(virtual.train.iterate(1))[2][1])
