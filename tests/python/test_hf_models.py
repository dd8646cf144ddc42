"""Hugging Face models and a convolutional classifier, unmodified, train on moreh exactly as on CPU."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from training_loop import assert_same_training, run_training

transformers = pytest.importorskip("transformers")

VOCAB, STEPS = 256, 10


def gpt2(tie=True):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=128, n_layer=2, n_head=4,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=tie)
    return transformers.GPT2LMHeadModel(cfg)


def llama():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return transformers.LlamaForCausalLM(cfg)


def token_batches(steps=STEPS, batch=4, seq=32):
    # Two batches in turn: a few steps are enough to see the loss fall.
    g = torch.Generator().manual_seed(1)
    two = [(torch.randint(0, VOCAB, (batch, seq), generator=g),) for _ in range(2)]
    return [two[i % 2] for i in range(steps)]


def lm_loss(model, ids):
    return model(input_ids=ids, labels=ids).loss


def adamw(params):
    return torch.optim.AdamW(params, lr=1e-3)


def compare_lm(make_model):
    model = make_model()
    batches = token_batches()
    ref = run_training(copy.deepcopy(model), "cpu", batches, lm_loss, adamw)
    got = run_training(model, "moreh", batches, lm_loss, adamw)
    # AdamW at lr 1e-3: a key bias (loss-free, see key_bias_rows) moves up to ~lr a step in each run.
    assert_same_training(ref, got, rel=1e-4, atol=1e-5, key_bias_atol=2 * 1e-3 * len(batches))
    return got


def test_gpt2_trains_like_cpu():
    losses, _ = compare_lm(gpt2)
    assert losses[-2] + losses[-1] < losses[0] + losses[1]


def test_llama_trains_like_cpu():
    losses, _ = compare_lm(llama)
    assert losses[-2] + losses[-1] < losses[0] + losses[1]


def test_moving_a_model_keeps_tied_weights_tied():
    # Module.to("moreh") must keep each Parameter object (it sets .data), or GPT-2's lm_head would stop
    # sharing wte's weight and half of the embedding's gradient would be lost.
    model = gpt2().to("moreh")
    assert model.lm_head.weight is model.transformer.wte.weight
    assert len(list(model.parameters())) == len(list(gpt2().parameters()))
    param = nn.Parameter(torch.ones(3))
    param.data = torch.full((3,), 2.0, device="moreh")
    assert param.device.type == "moreh" and param.cpu().tolist() == [2.0, 2.0, 2.0]


class ConvNet(nn.Module):
    """A small image classifier: conv, batch norm, max pool, dropout, log_softmax + nll_loss."""

    def __init__(self, dropout):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        return F.log_softmax(self.fc(self.drop(torch.flatten(x, 1))), dim=1)


def image_batches(steps=STEPS):
    g = torch.Generator().manual_seed(2)
    return [(torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(steps)]


def nll(model, x, y):
    return F.nll_loss(model(x), y)


def sgd(params):
    return torch.optim.SGD(params, lr=0.05, momentum=0.9)


def test_conv_classifier_trains_like_cpu():
    # Dropout's masks come from each device's own generator (as on CUDA), so the exact comparison runs
    # with p=0; the running statistics, eval mode and the dropout path are checked below.
    torch.manual_seed(0)
    model = ConvNet(dropout=0.0)
    batches = image_batches()
    ref = run_training(copy.deepcopy(model), "cpu", batches, nll, sgd)
    moved = copy.deepcopy(model)
    got = run_training(moved, "moreh", batches, nll, sgd)
    assert_same_training(ref, got, rel=1e-4, atol=1e-5)
    cpu_model = copy.deepcopy(model)
    run_training(cpu_model, "cpu", batches, nll, sgd)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(moved.bn2, name).cpu(), getattr(cpu_model.bn2, name))
    x = image_batches(1)[0][0]
    moved.eval()
    cpu_model.eval()
    with torch.no_grad():
        torch.testing.assert_close(moved(x.to("moreh")).cpu(), cpu_model(x), rtol=1e-5, atol=1e-6)


def test_conv_classifier_with_dropout_learns_and_repeats():
    def run():
        torch.manual_seed(0)
        torch.moreh.manual_seed(5)
        return run_training(ConvNet(dropout=0.5), "moreh", image_batches(3) * 4, nll, sgd)[0]

    losses = run()
    assert losses == run()
    assert sum(losses[-3:]) < sum(losses[:3])


def test_gpt2_greedy_generation_matches_cpu():
    # Evaluation a script does between training steps: generate() reads the device every token.
    model = gpt2().eval()
    ids = torch.randint(0, VOCAB, (2, 8), generator=torch.Generator().manual_seed(4))
    ref = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=0)
    out = model.to("moreh").generate(ids.to("moreh"), max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert out.device.type == "moreh"
    assert torch.equal(out.cpu(), ref)
