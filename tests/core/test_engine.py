from pathlib import Path

import numpy as np

from sentiment_api.core.engine import Classifier, softmax


def test_softmax_is_stable_and_normalised() -> None:
    probabilities = softmax(np.array([[1000.0, 1000.0, 0.0], [0.0, 1.0, 2.0]]))
    assert np.allclose(probabilities.sum(axis=1), 1)
    assert np.allclose(probabilities[0], [0.5, 0.5, 0.0])


def test_length_bucketing_returns_results_in_input_order(trained_tiny_bert) -> None:
    classifier = Classifier.load(trained_tiny_bert)
    texts = ["love", "the worst broken app ever " * 3, "session at the store", "great"]
    together, _ = classifier.probabilities(texts, batch_size=2)
    one_by_one = np.vstack([classifier.probabilities([t])[0] for t in texts])
    assert np.allclose(together, one_by_one, atol=1e-5)


def test_predict_applies_the_card_normaliser(trained_tiny_bert) -> None:
    classifier = Classifier.load(trained_tiny_bert)
    raw = classifier.predict(["@someone I LOVE it http://t.co/x"], top_k=3)[0]
    clean, _ = classifier.probabilities(["i love it"])
    assert np.isclose(raw.scores[raw.labels.index(classifier.labels[0])], clean[0][0], atol=1e-6)


def test_top_k_is_clamped_to_the_label_count(trained_tiny_bert) -> None:
    classifier = Classifier.load(trained_tiny_bert)
    assert len(classifier.predict(["ok"], top_k=10)[0].labels) == 3
    assert len(classifier.predict(["ok"], top_k=0)[0].labels) == 1


def test_each_length_bucket_but_the_last_is_reported_as_soon_as_it_is_done(trained_tiny_bert) -> None:
    classifier = Classifier.load(trained_tiny_bert)
    texts = [
        "great",
        "a much longer tweet about the new ipad",
        "ok",
        "meh x",
        "the longest tweet of all " * 3,
    ]
    ids = classifier.tokenizer.encode(texts).ids
    reported: list[tuple[list[int], np.ndarray]] = []

    probabilities = classifier.infer(ids, 2, lambda rows, p: reported.append((list(rows), p)))

    assert len(reported) == 2  # three buckets; the last comes back with the return value
    assert sorted(i for rows, _ in reported for i in rows) == [0, 1, 2, 3]  # not 4, the longest: last
    for rows, bucket in reported:
        np.testing.assert_allclose(bucket, probabilities[rows])
    assert max(len(ids[i]) for i in reported[0][0]) <= min(len(ids[i]) for i in reported[1][0])
    one_bucket: list[object] = []
    classifier.infer(ids[:2], 2, lambda rows, p: one_bucket.append(rows))
    assert one_bucket == []  # a single bucket is all in the return value


def test_spin_modes_set_onnx_runtime_s_spinning_options(tmp_path) -> None:
    """never: threads sleep; while_running: they spin inside a run and stop as it returns; always:
    they spin between runs too (the session options ONNX Runtime reads)."""
    import onnx
    from onnx import TensorProto, helper

    from sentiment_api.core.engine import OnnxBackend

    graph = helper.make_graph(
        [helper.make_node("Identity", ["input_ids"], ["logits"])],
        "identity",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [None, None])],
        [helper.make_tensor_value_info("logits", TensorProto.INT64, [None, None])],
    )
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    expected = {
        "never": ("0", "0"),
        "while_running": ("1", "1"),
        "always": ("1", "0"),
        True: ("1", "0"),
        False: ("0", "0"),
    }
    for spin, (allow, stop) in expected.items():
        options = OnnxBackend(path, threads=2, spin=spin).session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == allow, spin
        assert options.get_session_config_entry("session.force_spinning_stop") == stop, spin


def resident_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_every_cpu_session_draws_on_one_arena(tmp_path) -> None:
    """Two sessions of a model, and the sessions of every model beside it, share one memory arena:
    a 64 MiB activation that one session needed is not held again by each of the others."""
    import onnx
    from onnx import TensorProto, helper

    from sentiment_api.core.engine import OnnxBackend

    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["input_ids"], ["wide"]),
            helper.make_node("ReduceSum", ["wide"], ["logits"]),
        ],
        "wide",
        [helper.make_tensor_value_info("input_ids", TensorProto.FLOAT, [None, None])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)],
    )
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    wide = np.ones((16, 1 << 20), dtype=np.float32)  # 64 MiB, and as much for Relu's output

    sessions = [OnnxBackend(path, threads=1).session for _ in range(3)]
    for _ in range(2):  # an arena reaches its working size over two runs
        sessions[0].run(None, {"input_ids": wide})
    before = resident_mib()
    for session in sessions[1:] * 2:
        session.run(None, {"input_ids": wide})
    grown = resident_mib() - before

    assert all(
        session.get_session_options().get_session_config_entry("session.use_env_allocators") == "1"
        for session in sessions
    )
    # an arena each: 128 MiB more for each of the two other sessions
    assert grown < 32, f"{grown:.0f} MiB more for two more sessions' 64 MiB activations"
