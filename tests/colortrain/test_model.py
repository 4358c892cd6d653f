"""The colorizer and its baselines: shapes, presets, caption packing, FiLM conditioning."""

from __future__ import annotations

import pytest
import torch

from colorfeat.errors import UserError
from colortrain.config import ModelConfig, create_model_config
from colortrain.model import CaptionEncoder, create_model

SHAPES = {
    "feature_channels": 512,
    "feature_size": 7,
    "target_size": 14,
    "vocab_size": 30,
    "embedding_dim": 300,
    "num_bins": 625,
}


def _caption_batch() -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.tensor([[2, 3, 4, 0, 0, 0], [5, 6, 7, 8, 9, 10], [11, 0, 0, 0, 0, 0]])
    return tokens, torch.tensor([3, 6, 1])


@pytest.mark.parametrize("kind", ["film", "concat", "nolang"])
@pytest.mark.parametrize("preset", ["paper", "small"])
def test_logits_shape_and_finite(kind: str, preset: str) -> None:
    torch.manual_seed(0)
    model = create_model(create_model_config(kind, preset, SHAPES))
    tokens, lengths = _caption_batch()
    feats = torch.randn(3, 512, 7, 7)
    logits, last = model(feats, tokens, lengths, return_activation=True)
    assert logits.shape == (3, 625, 14, 14)
    assert last.shape[0] == 3 and last.shape[2:] == (7, 7)
    assert torch.isfinite(logits).all()
    logits.float().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_paper_preset_matches_the_paper() -> None:
    config = create_model_config("film", "paper", SHAPES)
    model = create_model(config)
    assert config.width == 512 and config.num_blocks == 4 and config.lstm_hidden == 256
    assert config.dropout == 0.2 and config.upsample == 2
    enc = model.encoder
    assert enc is not None
    assert enc.lstm.bidirectional and enc.lstm.num_layers == 1 and enc.lstm.hidden_size == 256
    assert enc.embed.weight.shape == (30, 300)
    block = model.blocks[0]
    assert block.conv1.kernel_size == (1, 1) and block.conv2.kernel_size == (3, 3)
    assert block.conv1.in_channels == 512 and block.film.in_features == 512
    assert block.film.out_features == 2 * 512
    assert model.classifier.out_channels == 625


def test_small_preset_projects_to_narrow_blocks() -> None:
    config = create_model_config("film", "small", SHAPES)
    model = create_model(config)
    assert config.width < 512 and config.lstm_hidden < 256
    n_small = sum(p.numel() for p in model.parameters())
    n_paper = sum(
        p.numel() for p in create_model(create_model_config("film", "paper", SHAPES)).parameters()
    )
    assert n_small < n_paper / 10


def test_caption_encodes_the_same_alone_and_in_a_padded_batch() -> None:
    torch.manual_seed(0)
    enc = CaptionEncoder(vocab_size=30, embedding_dim=16, hidden=8, dropout=0.2).eval()
    tokens, lengths = _caption_batch()
    batch = enc(tokens, lengths)  # (3, 16)
    for i in range(3):
        alone = enc(tokens[i : i + 1, : lengths[i]], lengths[i : i + 1])
        torch.testing.assert_close(batch[i : i + 1], alone, rtol=1e-5, atol=1e-6)
    # Padding must not leak in: more padding, same vector.
    padded = torch.cat([tokens, torch.zeros(3, 5, dtype=tokens.dtype)], dim=1)
    torch.testing.assert_close(enc(padded, lengths), batch, rtol=1e-5, atol=1e-6)
    # The backward direction's final state sees the first word: a different first word changes it.
    other = tokens.clone()
    other[1, 0] = 12
    assert not torch.allclose(enc(other, lengths)[1, 8:], batch[1, 8:])


def test_film_starts_as_identity_and_caption_changes_output() -> None:
    torch.manual_seed(0)
    model = create_model(create_model_config("film", "small", SHAPES)).eval()
    tokens, lengths = _caption_batch()
    feats = torch.randn(1, 512, 7, 7).expand(3, -1, -1, -1)
    out = model(feats, tokens, lengths)
    torch.testing.assert_close(out[0], out[1])  # zero-initialised FiLM: no caption effect yet
    for block in model.blocks:
        torch.nn.init.normal_(block.film.weight, std=0.5)
    out = model(feats, tokens, lengths)
    assert not torch.allclose(out[0], out[1])


def test_nolang_ignores_the_caption_and_film_needs_one() -> None:
    feats = torch.randn(2, 512, 7, 7)
    nolang = create_model(create_model_config("nolang", "small", SHAPES)).eval()
    assert nolang.encoder is None
    assert nolang(feats).shape == (2, 625, 14, 14)
    film = create_model(create_model_config("film", "small", SHAPES))
    with pytest.raises(ValueError, match="needs a caption"):
        film(feats)


def _with_init(init: str):
    config = create_model_config("film", "small", SHAPES).to_dict()
    return create_model(ModelConfig(**{**config, "embedding_init": init}))


def test_embeddings_load_from_the_store_vectors() -> None:
    # Vectors with a large shared direction, as word2vec gives on a small corpus.
    vectors = torch.randn(30, 300) * 0.1 + torch.randn(300)
    vectors[0] = 0
    raw = _with_init("raw")
    raw.load_embeddings(vectors)
    torch.testing.assert_close(raw.encoder.embed.weight.detach(), vectors)
    model = _with_init("standardized")
    model.load_embeddings(vectors)
    weight = model.encoder.embed.weight.detach()
    assert (weight[0] == 0).all()  # <pad>
    words = weight[2:]
    torch.testing.assert_close(words.mean(0), torch.zeros(300), atol=1e-5, rtol=0)
    torch.testing.assert_close(words.std(0), torch.ones(300), atol=1e-4, rtol=0)
    cos = torch.nn.functional.cosine_similarity(words[:1], words[1:])
    assert cos.abs().mean() < 0.3  # the shared direction is gone
    with pytest.raises(ValueError):
        model.load_embeddings(torch.randn(31, 300))


def test_whitened_embeddings_separate_words_used_alike() -> None:
    # 20 words spread along a few directions, and 8 "colour" words that share almost
    # everything (cosine ~0.99 after standardising, as colours do in word2vec on simple captions).
    torch.manual_seed(0)
    common = torch.randn(300)
    vectors = torch.cat([torch.zeros(2, 300), torch.randn(20, 4) @ torch.randn(4, 300)])
    colours = common + 0.05 * torch.randn(8, 300)
    vectors = torch.cat([vectors, colours])  # (30, 300)
    assert create_model_config("film", "small", SHAPES).embedding_init == "whitened"
    model = create_model(create_model_config("film", "small", SHAPES))
    model.load_embeddings(vectors)
    weight = model.encoder.embed.weight.detach().double()
    assert (weight[0] == 0).all()  # <pad>
    words = weight[2:]  # (28, 300)
    centred = words - words.mean(0)
    sv = torch.linalg.svdvals(centred)
    kept = sv[sv > 1e-6 * sv[0]]
    # unit variance along every direction the words span
    torch.testing.assert_close(kept**2 / (len(words) - 1), torch.ones_like(kept), rtol=1e-6, atol=0)
    col = torch.nn.functional.normalize(weight[-8:], dim=1)
    off_diag = (col @ col.T)[~torch.eye(8, dtype=bool)]
    assert off_diag.max() < 0.5  # the colours no longer point the same way
    standardized = _with_init("standardized")
    standardized.load_embeddings(vectors)
    s_col = torch.nn.functional.normalize(standardized.encoder.embed.weight.detach()[-8:], dim=1)
    assert (s_col @ s_col.T)[~torch.eye(8, dtype=bool)].min() > 0.9  # what whitening fixes


def test_config_validates_and_round_trips() -> None:
    config = create_model_config("concat", "small", SHAPES)
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(UserError, match="--model"):
        create_model_config("gan", "small", SHAPES)
    with pytest.raises(UserError, match="--preset"):
        create_model_config("film", "huge", SHAPES)
    with pytest.raises(UserError, match="multiple"):
        create_model_config("film", "small", {**SHAPES, "target_size": 15})


def test_forward_under_bf16_autocast_keeps_the_caption_encoder_in_float32() -> None:
    torch.manual_seed(0)
    model = create_model(create_model_config("film", "small", SHAPES))
    tokens, lengths = _caption_batch()
    seen = {}
    model.encoder.register_forward_hook(lambda m, i, out: seen.update(dtype=out.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(torch.randn(3, 512, 7, 7), tokens, lengths)
    assert seen["dtype"] == torch.float32
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()
