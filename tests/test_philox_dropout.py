"""Dropout's Philox4x32-10 masks (gpunet/kernels/philox.cu and its NumPy twin): the generator against
published known answers, the kernel against the twin bit for bit, one seed giving one set of masks on
every device and every rank, the counter kept and advanced on the device, and the checkpoints."""
import math

import numpy as np
import pytest

import gpunet
from gpunet import layers, models, random
from gpunet.kernels import cuda, philox
from gpunet.utils import to_categorical

F = np.float32

# Random123's tests/kat_vectors (github.com/DEShawResearch/random123, commit 9545ff64, lines 27-29), the
# "philox4x32 10" lines: counter c0..c3, key k0 k1 -> the four output words. (NumPy's Philox bit
# generator is Philox4x64-10, not this one: it is no reference here.)
KAT = [((0x00000000, 0x00000000, 0x00000000, 0x00000000), (0x00000000, 0x00000000),
        (0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8)),
       ((0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff), (0xffffffff, 0xffffffff),
        (0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd)),
       ((0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344), (0xa4093822, 0x299f31d0),
        (0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1))]
# Counters of the form dropout uses, (lo32(block), hi32(block), 0, 0): computed with Random123's own
# include/Random123/philox.h (r123::Philox4x32_R<10>, same commit) compiled by g++.
R123_STREAM = [((5, 0, 0, 0), (0x12345678, 0x9abcdef0), (0xb42b0a9d, 0xd55cf6e1, 0xc8f7f1d9, 0x5ae4cdb9)),
               ((0xffffffff, 1, 0, 0), (0xdeadbeef, 0x01234567), (0x5b8c2f1e, 0xdd3d6e93, 0x09b06a51, 0x44465ac7)),
               ((1, 0, 0, 0), (0, 0), (0xf8e4cca4, 0x5cb200db, 0xb1a574eb, 0x097eff67))]


def test_philox4x32_10_gives_the_published_known_answers():
    for counter, key, want in KAT + R123_STREAM:
        assert tuple(int(w) for w in philox.philox4x32_10(np.array(counter, np.uint32), key)) == want
    counters = np.array([c for c, _, _ in KAT], np.uint32)                 # vectorized: many counters at once
    got = philox.philox4x32_10(counters.reshape(3, 1, 4), KAT[0][1])
    assert got.shape == (3, 1, 4) and tuple(got[0, 0]) == KAT[0][2]


def _uniforms(key, first, n):
    """The documented float mapping, computed from the generator itself: element e takes word e % 4 of
    Philox4x32-10(key, (lo32(e // 4), hi32(e // 4), 0, 0)), u = (word >> 8) * 2**-24 in float32."""
    e = np.arange(first, first + n, dtype=np.uint64)
    blocks = e >> np.uint64(2)
    counters = np.stack([blocks & np.uint64(0xFFFFFFFF), blocks >> np.uint64(32), 0 * blocks, 0 * blocks], -1)
    words = philox.philox4x32_10(counters.astype(np.uint32), (key & 0xFFFFFFFF, key >> 32))
    word = words[np.arange(n), (e & np.uint64(3)).astype(np.intp)]
    return (word >> 8).astype(F) * F(2 ** -24)


def _state(xp, key, counter):
    return xp.asarray(np.array([key, counter], np.uint64))


def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.75])
def test_the_mask_follows_the_documented_mapping(dev, rate):
    key, counter = 0x0123456789ABCDEF, 2 ** 32 * 4 - 6          # the block number crosses 2**32 inside the draw
    state = _state(dev.xp, key, counter)
    _, mask = philox.dropout_mask(dev.xp, state, (5, 7), rate)
    u = _uniforms(key, counter, 35).reshape(5, 7)
    want = np.where(u >= F(rate), F(1) / F(1 - rate), F(0)).astype(F)
    np.testing.assert_array_equal(_host(mask), want)
    assert int(_host(state)[1]) == counter + 35 and int(_host(state)[0]) == key


def test_a_rate_equal_to_a_uniform_keeps_it():
    """``u >= rate`` exactly: the twin's integer threshold is the float comparison."""
    u = _uniforms(0, 0, 4)                     # the first KAT block's words
    assert [int(w >> 8) for w in KAT[0][2]] == [int(v * 2 ** 24) for v in u]
    for i, v in enumerate(u):
        for rate, kept in ((v, True), (np.nextafter(v, F(1)), False)):
            _, mask = philox.dropout_mask(np, np.zeros(2, np.uint64), (4,), rate)
            assert (mask[i] != 0) == kept
    assert philox.keep_threshold(np.nextafter(F(1), F(0))) == (2 ** 24 - 1) << 8


SHAPES = [((1, 1), 0, 1), ((3, 5), 1, 6), ((17, 241), 4, 30), ((6, 0), 0, 6), ((0, 5), 2, 2), ((64, 600), 0, 64)]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")      # inf * 0 in the inputs
@pytest.mark.parametrize("launch", ["gpunet-grid", "small-grid"])
@pytest.mark.parametrize("shape,offset,rows", SHAPES, ids=str)
def test_the_kernel_gives_the_twins_bits(dev, monkeypatch, shape, offset, rows, launch):
    if launch == "small-grid":          # a grid small enough that the grid-stride loop iterates
        monkeypatch.setattr(cuda, "THREADS_PER_BLOCK", 32)
        monkeypatch.setattr(cuda, "MAX_BLOCKS", 3)
    xp, rng = dev.xp, np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 3).astype(F)
    if x.size > 8:
        x.reshape(-1)[[1, 3, 5, 7]] = [np.nan, np.inf, -np.inf, -0.0]
    key, counter = int(rng.integers(0, 2 ** 63)) * 2 + 1, int(rng.integers(0, 2 ** 40))
    cols = math.prod(shape[1:])
    want_state = np.array([key, counter], np.uint64)
    want_y, want_mask = philox.dropout_mask(np, want_state, shape, 0.3, offset, rows, x=x)
    for fused in (True, False):           # float32 x: one kernel writes y; float64 x: the mask, then a product
        state = _state(xp, key, counter)
        xd = xp.asarray(x if fused else x.astype(np.float64))
        y, mask = philox.dropout_mask(xp, state, shape, 0.3, offset, rows, x=xd)
        np.testing.assert_array_equal(_host(mask).view(np.uint32), want_mask.view(np.uint32))
        got_y = _host(y)
        assert got_y.dtype == (F if fused else np.float64)
        same = (got_y.astype(F).view(np.uint32) == want_y.view(np.uint32)) | (np.isnan(got_y) & np.isnan(want_y))
        assert same.all()
        np.testing.assert_array_equal(_host(state), [key, counter + rows * cols])
    assert int(want_state[1]) == counter + rows * cols


def test_one_seed_gives_the_same_masks_on_the_cpu_and_the_gpu(gpu_dev):
    x = np.random.default_rng(0).standard_normal((9, 4, 6)).astype(F)
    outs = []
    for device in ("cpu", gpu_dev):
        gpunet.random.seed(21)
        seeded = layers.Dropout(0.4, seed=5)
        shared = layers.Dropout(0.3, noise_shape=(None, 1, None))
        t = gpunet.tensor(x, device=device)
        outs.append([seeded(t, training=True).numpy(), seeded(t, training=True).numpy(),
                     shared(t, training=True).numpy(), layers.Dropout(0.5)(t, training=True).numpy()])
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(outs[0][0], outs[0][1])          # a stream goes on
    assert (outs[0][2] == 0).any() and ((outs[0][2] == 0) == (outs[0][2][:, :1] == 0)).all()


def test_a_gpu_draw_is_device_work_only(gpu_dev):
    cupy = pytest.importorskip("cupy")
    if not getattr(cupy, "EMULATED", False):
        pytest.skip("counts host syncs and transfers on the emulated CuPy")
    layer = layers.Dropout(0.5)
    x = cupy.ones((8, 16), F)
    layer.forward(cupy, x, True)                   # the first draw on this GPU puts the stream's state there
    cupy.reset_stats()
    (y1, (_, m1, _)), (y2, (_, m2, _)) = layer.forward(cupy, x, True), layer.forward(cupy, x * 2, True)
    assert cupy.STATS["host_syncs"] == 0 and cupy.STATS["transfers"] == 0
    assert not np.array_equal(m1.get(), m2.get()) and np.array_equal(y2.get(), 2 * m2.get())


def test_the_counter_advances_on_the_device_and_a_replayed_graph_draws_fresh_masks(gpu_dev):
    """The draw's launches, recorded once and replayed twice (a CUDA graph on a real GPU; the emulator's
    deferred launches otherwise), draw the masks of two successive draws: the counter moves on the device."""
    cupy = pytest.importorskip("cupy")
    key, shape = 0xFEEDFACE12345678, (6, 10)
    state = _state(cupy, key, 7)
    x = cupy.asarray(np.ones(shape, F))
    y, mask = cupy.empty(shape, F), cupy.empty(shape, F)
    philox.dropout_mask(cupy, state, shape, 0.5, x=x, y=y, mask=mask)           # compiled and warm
    assert int(_host(state)[1]) == 7 + 60
    if getattr(cupy, "EMULATED", False):
        from cupy import _raw
        with _raw.recording(execute=False) as launches:
            philox.dropout_mask(cupy, state, shape, 0.5, x=x, y=y, mask=mask)
        assert [launch.kernel.name for launch in launches] == ["dropout_mask", "philox_advance"]

        def replay():
            for launch in launches:
                launch.run()
    else:
        stream = cupy.cuda.Stream(non_blocking=True)
        with stream:
            stream.begin_capture()
            philox.dropout_mask(cupy, state, shape, 0.5, x=x, y=y, mask=mask)
            graph = stream.end_capture()

        def replay():
            graph.launch(stream)
            stream.synchronize()
    assert int(_host(state)[1]) == 7 + 60                       # recording ran nothing
    seen = []
    for i in range(2):
        replay()
        seen.append(_host(mask))
        assert int(_host(state)[1]) == 7 + 60 * (2 + i)           # each replay advances the counter
        _, want = philox.dropout_mask(np, np.array([key, 7 + 60 * (1 + i)], np.uint64), shape, 0.5)
        np.testing.assert_array_equal(seen[-1], want)
        np.testing.assert_array_equal(_host(y), want)
    assert not np.array_equal(seen[0], seen[1])


def test_every_rank_draws_its_rows_of_the_single_process_masks(dev):
    """fit(distributed=True) runs each step inside random.batch_shard: a rank's mask rows are those rows
    of the global draw, and every rank's counter moves on by the global draw (an empty shard too)."""
    x = np.random.default_rng(1).standard_normal((10, 3, 4)).astype(F)
    for noise_shape in (None, (None, 1, None), (1, 3, 4)):
        gpunet.random.seed(4)
        layer = layers.Dropout(0.5, noise_shape=noise_shape)
        whole = [layer(gpunet.tensor(x, device=dev), training=True).numpy() for _ in range(2)]
        for lo, hi in ((0, 0), (0, 3), (3, 10), (9, 10)):
            gpunet.random.seed(4)
            with random.batch_shard(10, lo, hi):
                part = [layer(gpunet.tensor(x[lo:hi], device=dev), training=True).numpy() for _ in range(2)]
            for p, w in zip(part, whole):
                np.testing.assert_array_equal(p, w[lo:hi])
            per_draw = {None: 10 * 12, (None, 1, None): 10 * 4, (1, 3, 4): 12}[noise_shape]
            assert random.get_state()["philox"]["counter"] == 2 * per_draw


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5, 0.9])
def test_keep_rate_statistics(rate):
    n = 1 << 20
    state = np.array([0x5DEECE66D, 3], np.uint64)
    _, first = philox.dropout_mask(np, state, (1024, 1024), rate)
    _, second = philox.dropout_mask(np, state, (1024, 1024), rate)
    p = 1 - rate
    for mask in (first, second):
        kept = mask != 0
        assert abs(kept.mean() - p) < 5 * math.sqrt(p * (1 - p) / n)
        assert np.allclose(mask[kept], 1 / p, rtol=1e-7)
        for axis in (0, 1):             # rows and columns alike: no structure along either axis
            per = kept.mean(axis=axis)
            assert np.abs(per - p).max() < 6 * math.sqrt(p * (1 - p) / 1024)
    both = ((first != 0) == (second != 0)).mean()         # two draws are independent
    assert abs(both - (p * p + (1 - p) ** 2)) < 5 * math.sqrt(0.25 / n)
    u = _uniforms(0x5DEECE66D, 0, 1 << 16)                 # the uniforms: 16 equal bins
    counts = np.bincount((u * 16).astype(int), minlength=16)
    assert ((counts - 4096) ** 2 / 4096).sum() < 45        # chi-square, 15 degrees of freedom (p < 1e-4)


def test_training_false_is_the_identity_and_the_stream_stays(dev):
    gpunet.random.seed(3)
    before = random.get_state()["philox"]
    x = gpunet.tensor(np.ones((4, 5), F), device=dev)
    assert layers.Dropout(0.5)(x, training=False) is x
    assert random.get_state()["philox"] == before


def _net(seed=None):
    net = models.Sequential([layers.Dense(8, activation="relu", input_shape=(6,)), layers.Dropout(0.3),
                             layers.Dense(8, activation="relu"), layers.Dropout(0.4, seed=seed),
                             layers.Dense(3, activation="softmax")])
    net.compile(optimizer="adam", loss="categorical_crossentropy")
    return net


def test_checkpoints_keep_both_streams(dev, tmp_path):
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((40, 6)).astype(F), to_categorical(rng.integers(0, 3, 40), 3)
    gpunet.random.seed(8)
    with dev:
        straight = _net(seed=17)
        straight.fit(x, y, epochs=3, batch_size=8, verbose=0)
        gpunet.random.seed(8)
        first = _net(seed=17)
        first.fit(x, y, epochs=1, batch_size=8, verbose=0)
        first.save(tmp_path / "m.npz")
        state, layer_state = random.get_state(), first.layers[3].get_state()
        assert state["philox"]["counter"] == 40 * 8 and layer_state["philox"]["counter"] == 40 * 8
        gpunet.random.seed(99)
        back = models.load_model(tmp_path / "m.npz")
        assert random.get_state() == state and back.layers[3].get_state() == layer_state
        back.fit(x, y, epochs=3, batch_size=8, verbose=0, initial_epoch=1)
    for a, b in zip(back.get_weights(), straight.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_state_from_before_philox_draws_the_old_masks():
    """An old checkpoint's random state (PCG64 only) or seeded layer state ('generator') keeps drawing the
    masks gpunet drew then (host PCG64 numbers >= rate), and saves in that form again; seed() ends it."""
    x = np.ones((6, 5), F)
    old = np.random.default_rng(5).bit_generator.state
    random.set_state(old)
    assert "philox" not in random.get_state()
    got = layers.Dropout(0.4)(x, training=True).numpy()
    want = (np.random.default_rng(5).random((6, 5), dtype=F) >= 0.4).astype(F) / F(0.6)
    np.testing.assert_array_equal(got, want)
    seeded = layers.Dropout(0.4, seed=1)
    seeded.set_state({"generator": np.random.default_rng(6).bit_generator.state})
    want = (np.random.default_rng(6).random((6, 5), dtype=F) >= 0.4).astype(F) / F(0.6)
    np.testing.assert_array_equal(seeded(x, training=True).numpy(), want)
    assert set(seeded.get_state()) == {"generator"}
    gpunet.random.seed(1)
    assert "philox" in random.get_state()
    seeded.set_state({"philox": {"key": 3, "counter": 0}})
    assert seeded.get_state() == {"philox": {"key": 3, "counter": 0}}


def test_stream_states_are_checked_and_seeds_give_distinct_keys():
    with pytest.raises(ValueError, match="64-bit key and counter"):
        random.PhiloxStream().set_state({"key": -1, "counter": 0})
    keys = {random.PhiloxStream(s).get_state()["key"] for s in range(50)}
    assert len(keys) == 50 and random.PhiloxStream(7).get_state() == {"key": random.PhiloxStream(7).get_state()["key"],
                                                                        "counter": 0}
    with pytest.raises(ValueError, match="rows"):
        philox.dropout_mask(np, np.zeros(2, np.uint64), (4, 2), 0.5, 3, 5)
