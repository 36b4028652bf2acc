"""UniRESModel: shapes, loss, save/load, encode-once, from_clip, ablations and bad input (tiny configs, CPU)."""

import json
import math

import pytest
import torch

from modeling_unires.token_pooling_unires import pool_tokens, unpool_tokens
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPModel

from modeling_unires import UniRESConfig, UniRESModel, UniRESProcessor
from modeling_unires.modeling_unires import UniRESDecoderLayer, sine_position_encoding
from tiny_models.unires import tiny_config, tiny_model_and_processor, tiny_tokenizer

EXPRESSIONS = ["the red car", "left wheel of the blue bus", "the window"]


def _text(processor, texts=EXPRESSIONS):
    return processor.tokenize(texts, return_tensors="pt")


def test_shapes_dtypes_and_outputs():
    model, processor = tiny_model_and_processor()
    text = _text(processor)
    pixel_values = torch.randn(1, 3, 32, 32)
    labels = torch.rand(3, 32, 32) > 0.5
    out = model(
        pixel_values=pixel_values, **text, labels=labels,
        output_attentions=True, output_image_embeddings=True, output_group_tokens=True,
    )
    assert out.logits.shape == (3, 32, 32) and out.logits.dtype == torch.float32
    assert out.loss.shape == () and torch.isfinite(out.loss)
    # 16 patches + 4 low + 2 high group tokens, at the vision width.
    assert out.image_embeddings.shape == (1, 16 + 6, 32)
    assert out.group_tokens.shape == (3, 6, 32)
    assert ((out.group_token_scores >= 0) & (out.group_token_scores <= 1)).all()
    # The region filter's maps: low (4) then high (2) group tokens over the 17 text tokens.
    assert [tuple(a.shape) for a in out.region_filter_attentions] == [(3, 2, 4, 17), (3, 2, 2, 17)]
    # The decoder's: 1 stage-1 layer (16 visual over 17 text tokens), 1 stage-2 layer (over the 6 group tokens).
    assert [tuple(a.shape) for a in out.decoder_attentions] == [(3, 2, 16, 17), (3, 2, 16, 6)]
    plain = model(pixel_values=pixel_values, **text)
    assert plain.loss is None and plain.image_embeddings is None
    assert plain.region_filter_attentions is None and plain.decoder_attentions is None
    torch.testing.assert_close(plain.logits, out.logits)


def test_non_clip_parameters_live_outside_the_backbone():
    model, _ = tiny_model_and_processor()
    names = [name for name, _ in model.named_parameters()]
    assert "vision_encoder.group_tokens.low" in names and "vision_encoder.group_tokens.high" in names
    towers = ("vision_encoder.vision_model.", "text_model.")
    assert not any("group" in name for name in names if name.startswith(towers))
    assert any(name.startswith("vision_encoder.vision_model.encoder.layers.") for name in names)
    assert any(name.startswith("text_model.encoder.layers.") for name in names)
    # Every parameter belongs to one of the four parts, as SamModel's to its vision encoder, prompt encoder and decoder.
    assert {name.split(".")[0] for name in names} == {"vision_encoder", "text_model", "decoder", "mask_head"}
    # The vision tower is also reachable where composite transformers models keep theirs.
    assert model.vision_model is model.vision_encoder.vision_model


@pytest.mark.parametrize(
    "ablation,num_group_tokens,num_stage2",
    [("full", 6, 1), ("no_group_tokens", 0, 0), ("low_only", 4, 1), ("high_only", 2, 1)],
)
def test_ablations(ablation, num_group_tokens, num_stage2):
    tokenizer = tiny_tokenizer()
    base = tiny_config(tokenizer)
    config = UniRESConfig.ablation(ablation, **{k: v for k, v in base.to_dict().items() if k in _INIT_KEYS})
    assert config.ablation_name == ablation
    model = UniRESModel(config).eval()
    assert len(model.decoder.stage2_layers) == num_stage2
    embeddings = model.get_image_embeddings(torch.randn(2, 3, 32, 32))
    assert embeddings.shape == (2, 16 + num_group_tokens, 32)
    text = tokenizer(EXPRESSIONS[:2], padding="max_length", max_length=17, return_tensors="pt")
    out = model(image_embeddings=embeddings, input_ids=text.input_ids, attention_mask=text.attention_mask,
                labels=torch.zeros(2, 32, 32), output_group_tokens=True)
    assert out.logits.shape == (2, 32, 32)
    out.loss.backward()
    if num_group_tokens:
        assert out.group_tokens.shape == (2, num_group_tokens, 32)
    else:
        assert out.group_tokens is None and model.decoder.group_projection is None


_INIT_KEYS = (
    "vision_config", "text_config", "num_low_group_tokens", "num_high_group_tokens", "decoder_hidden_size",
    "decoder_num_attention_heads", "decoder_stage1_layers", "decoder_stage2_layers", "text_max_length",
)


def test_loss_decreases_on_a_fixed_batch():
    model, processor = tiny_model_and_processor(seed=1)
    model.train()
    text = _text(processor)
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(1, 3, 32, 32, generator=generator)
    labels = torch.zeros(3, 32, 32)
    labels[0, :16] = 1  # top half
    labels[1, :, 16:] = 1  # right half
    labels[2, 8:24, 8:24] = 1  # centre square
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        loss = model(pixel_values=pixel_values, **text, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_save_load_round_trip_gives_identical_logits(tmp_path):
    model, processor = tiny_model_and_processor()
    text = _text(processor)
    pixel_values = torch.randn(2, 3, 32, 32)
    indices = torch.tensor([0, 1, 1])
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = UniRESModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        expected = model(pixel_values=pixel_values, **text, image_indices=indices).logits
        actual = loaded(pixel_values=pixel_values, **text, image_indices=indices).logits
    assert torch.equal(expected, actual)


def test_encode_once_equals_plain_forward():
    model, processor = tiny_model_and_processor()
    text = _text(processor)
    images = torch.randn(2, 3, 32, 32)
    indices = torch.tensor([1, 0, 1])
    with torch.no_grad():
        embeddings = model.get_image_embeddings(images)
        shared = model(image_embeddings=embeddings, **text, image_indices=indices).logits
        plain = model(pixel_values=images[indices], **text).logits
        broadcast = model(pixel_values=images[:1], **text).logits
        repeated = model(pixel_values=images[:1].expand(3, -1, -1, -1), **text).logits
    torch.testing.assert_close(shared, plain, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(broadcast, repeated, rtol=1e-4, atol=1e-5)


def test_shared_encoding_trains_with_image_indices():
    model, processor = tiny_model_and_processor()
    model.train()
    text = _text(processor)
    out = model(pixel_values=torch.randn(2, 3, 32, 32), **text, image_indices=torch.tensor([0, 0, 1]),
                labels=torch.ones(3, 32, 32))
    out.loss.backward()
    encoder = model.vision_encoder
    for parameter in (encoder.group_tokens.low, encoder.group_tokens.high,
                      encoder.vision_model.embeddings.patch_embedding.weight):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0


def test_other_input_sizes_interpolate_positions():
    model, processor = tiny_model_and_processor()
    text = _text(processor, EXPRESSIONS[:1])
    with torch.no_grad():
        out = model(pixel_values=torch.randn(1, 3, 48, 64), **text)
    assert out.logits.shape == (1, 48, 64)


def test_upsample_mask_head():
    """The "upsample" head predicts one logit per patch and upsamples it bilinearly; "pixel_shuffle" predicts each
    patch's 8x8 block. Same weights elsewhere: the head's own layer and the logits must differ accordingly."""
    upsample, processor = tiny_model_and_processor(mask_head_type="upsample")
    pixel_shuffle, _ = tiny_model_and_processor(mask_head_type="pixel_shuffle")
    assert (upsample.mask_head.projection.out_features, pixel_shuffle.mask_head.projection.out_features) == (1, 64)
    shared = {k: v for k, v in pixel_shuffle.state_dict().items() if not k.startswith("mask_head.projection.")}
    missing = upsample.load_state_dict(shared, strict=False).missing_keys
    assert missing == ["mask_head.projection.weight", "mask_head.projection.bias"]
    for model in (upsample, pixel_shuffle):  # silence the per-patch alignment term: the head alone makes the logits
        torch.nn.init.zeros_(model.mask_head.alignment_visual_projection.weight)
        torch.nn.init.zeros_(model.mask_head.alignment_visual_projection.bias)
    inputs = dict(pixel_values=torch.randn(1, 3, 32, 32), **_text(processor), output_hidden_states=True)
    with torch.no_grad():
        out = upsample(**inputs)
        shuffled = pixel_shuffle(**inputs)
        decoded = upsample.decoder.norm(out.decoder_hidden_states[-1])
        per_patch = upsample.mask_head.projection(decoded).view(3, 1, 4, 4)
    assert out.logits.shape == shuffled.logits.shape == (3, 32, 32)
    expected = F.interpolate(per_patch, size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(out.logits, expected)
    assert not torch.allclose(out.logits, shuffled.logits, atol=1e-3)


@pytest.mark.parametrize("stride,channels", [(2, 0), (3, 4), (1, 4)])
def test_pooled_decoder_and_pixel_branch(stride, channels, tmp_path):
    model, processor = tiny_model_and_processor(decoder_token_stride=stride, pixel_decoder_channels=channels)
    text = _text(processor)
    images = torch.randn(2, 3, 32, 32)
    indices = torch.tensor([1, 0, 1])
    out = model(pixel_values=images, **text, image_indices=indices, labels=torch.rand(3, 32, 32) > 0.5,
                output_attentions=True)
    # The 4x4 patch grid reaches the decoder as ceil(4 / stride)^2 pooled cells (stage-1 queries over 17 text tokens).
    cells = math.ceil(4 / stride) ** 2
    assert out.logits.shape == (3, 32, 32) and out.decoder_attentions[0].shape == (3, 2, cells, 17)
    model.train()
    out.loss.backward()
    trained = [model.decoder.stage1_layers[0].mlp.fc1.weight, model.mask_head.projection.weight]
    if channels:
        trained += [model.mask_head.pixel_decoder.conv_in.weight, model.mask_head.pixel_filter.weight]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trained)
    model.eval()
    with torch.no_grad():
        # Passing the images beside their embeddings works with and without a pixel branch.
        shared = model(image_embeddings=model.get_image_embeddings(images), pixel_values=images, **text,
                       image_indices=indices)
        plain = model(pixel_values=images[indices], **text)
    torch.testing.assert_close(shared.logits, plain.logits, rtol=1e-4, atol=1e-5)
    model.save_pretrained(tmp_path)
    loaded = UniRESModel.from_pretrained(tmp_path).eval()
    assert (loaded.config.decoder_token_stride, loaded.config.pixel_decoder_channels) == (stride, channels)
    with torch.no_grad():
        assert torch.equal(loaded(pixel_values=images[indices], **text).logits, plain.logits)


def test_pooling_copies_cells_back_onto_their_patches():
    model, _ = tiny_model_and_processor(decoder_token_stride=2)
    cells = torch.arange(9.0).view(1, 9, 1).expand(1, 9, 3)  # a 3x3 map of cells, 3 channels
    patches = unpool_tokens(cells, (5, 5), model.config.decoder_token_stride)  # a 5x5 grid: the last row and column of cells are partial
    expected = torch.arange(9.0).view(3, 3).repeat_interleave(2, 0).repeat_interleave(2, 1)[:5, :5]
    assert torch.equal(patches[0, :, 0], expected.flatten())
    # Pooling averages only the patches inside the grid, so a map that is constant per cell pools back to its cells.
    assert torch.equal(pool_tokens(patches, (5, 5), model.config.decoder_token_stride), cells)


def test_sine_position_encoding_codes_rows_and_columns_apart():
    encoding = sine_position_encoding((3, 5), 16).view(3, 5, 16)
    rows, cols = encoding[..., :8], encoding[..., 8:]
    # The first half depends on the row only, the second on the column only, and every cell is told apart.
    assert torch.equal(rows, rows[:, :1].expand_as(rows)) and torch.equal(cols, cols[:1].expand_as(cols))
    assert len({tuple(cell.tolist()) for cell in encoding.view(15, 16)}) == 15
    # Sines then cosines of one angle per frequency: each (sin, cos) pair lies on the unit circle.
    torch.testing.assert_close(rows[..., :4] ** 2 + rows[..., 4:] ** 2, torch.ones(3, 5, 4))


@pytest.mark.parametrize("with_positions", [False, True])
def test_decoder_positions_break_token_permutation_symmetry(with_positions):
    """Without positions a decoder layer cannot tell token order (shuffled tokens give shuffled outputs), so no mask
    can depend on where a token is ("the car on the left"); the position encoding is what lets it."""
    config = tiny_config(tiny_tokenizer())
    torch.manual_seed(0)
    layer = UniRESDecoderLayer(config).eval()
    width = config.decoder_hidden_size
    tokens, memory = torch.randn(1, 9, width), torch.randn(1, 4, width)
    positions = sine_position_encoding((3, 3), width) if with_positions else None
    order = torch.randperm(9)
    with torch.no_grad():
        out = layer(tokens, memory, positions=positions)[0]
        shuffled = layer(tokens[:, order], memory, positions=positions)[0]
    assert torch.allclose(shuffled, out[:, order], atol=1e-5) is not with_positions


def test_decoder_position_encoding_is_used_and_saved(tmp_path):
    model, processor = tiny_model_and_processor(decoder_token_stride=2)
    assert model.config.decoder_position_encoding == "sine"  # the default
    plain, _ = tiny_model_and_processor(decoder_token_stride=2, decoder_position_encoding=None)
    plain.load_state_dict(model.state_dict())  # no weights of its own: the same parameters load into both
    text = _text(processor)
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        # (small at initialisation, where attention is nearly uniform, but not rounding noise)
        assert not torch.allclose(model(pixel_values=images, **text).logits,
                                  plain(pixel_values=images, **text).logits, rtol=0, atol=1e-6)
    plain.save_pretrained(tmp_path)
    assert UniRESModel.from_pretrained(tmp_path).config.decoder_position_encoding is None


def test_config_saved_before_the_position_encoding_keeps_its_decoder(tmp_path):
    config = tiny_config(tiny_tokenizer())
    config.save_pretrained(tmp_path)
    assert UniRESConfig.from_pretrained(tmp_path).decoder_position_encoding == "sine"
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["decoder_position_encoding"]  # as written before the option existed
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert UniRESConfig.from_pretrained(tmp_path).decoder_position_encoding is None
    assert UniRESConfig.from_pretrained(tmp_path, decoder_position_encoding="sine").decoder_position_encoding == "sine"


def test_pixel_branch_reads_only_nearby_pixels():
    """Given fixed image embeddings, a change to one pixel moves the logits only within the two 3x3 convolutions'
    5x5 reach: the pixel branch sharpens edges locally and cannot move the mask elsewhere."""
    model, processor = tiny_model_and_processor(pixel_decoder_channels=4)
    text = _text(processor, EXPRESSIONS[:1])
    image = torch.randn(1, 3, 32, 32)
    changed = image.clone()
    changed[0, :, 13, 21] += 5.0
    with torch.no_grad():
        embeddings = model.get_image_embeddings(image)
        before = model(image_embeddings=embeddings, pixel_values=image, **text).logits[0]
        after = model(image_embeddings=embeddings, pixel_values=changed, **text).logits[0]
    moved = (after - before).abs() > 1e-6
    assert moved[13, 21] and moved.any()
    rows, cols = torch.nonzero(moved, as_tuple=True)
    assert rows.min() >= 11 and rows.max() <= 15 and cols.min() >= 19 and cols.max() <= 23


def test_pixel_branch_input_errors_are_named():
    model, processor = tiny_model_and_processor(pixel_decoder_channels=4)
    text = _text(processor)
    images = torch.randn(1, 3, 32, 32)
    embeddings = model.get_image_embeddings(images)
    with pytest.raises(ValueError, match="pixel_decoder_channels=4"):
        model(image_embeddings=embeddings, **text)
    with pytest.raises(ValueError, match=r"1 images of \(48, 48\) but image_embeddings hold 1 images of a 4x4"):
        model(image_embeddings=embeddings, pixel_values=torch.randn(1, 3, 48, 48), **text)
    with pytest.raises(ValueError, match=r"pixel_values are 2 images of \(32, 32\) but image_embeddings hold 1 images"):
        model(image_embeddings=embeddings, pixel_values=torch.randn(2, 3, 32, 32), **text)


def test_gradient_checkpointing_matches():
    model, processor = tiny_model_and_processor()
    model.train()
    text = _text(processor)
    pixel_values, labels = torch.randn(1, 3, 32, 32), torch.rand(3, 32, 32)

    def loss_and_grad():
        model.zero_grad()
        loss = model(pixel_values=pixel_values, **text, labels=labels).loss
        loss.backward()
        return loss.detach(), model.vision_encoder.group_tokens.low.grad.clone()

    reference = loss_and_grad()
    # transformers 5 renamed it activation_checkpointing_enable; both set the same per-layer flags.
    getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    assert all(layer.gradient_checkpointing for layer in model.decoder.stage1_layers)
    assert all(layer.gradient_checkpointing for layer in model.vision_encoder.vision_model.encoder.layers)
    checkpointed = loss_and_grad()
    torch.testing.assert_close(reference, checkpointed)


def test_sdpa_matches_eager():
    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    sdpa = UniRESModel(tiny_config(tokenizer, attn_implementation="sdpa")).eval()
    eager = UniRESModel(tiny_config(tokenizer, attn_implementation="eager")).eval()
    eager.load_state_dict(sdpa.state_dict())
    assert sdpa.vision_encoder.vision_model.config._attn_implementation == "sdpa"
    assert eager.text_model.config._attn_implementation == "eager"
    text = tokenizer(EXPRESSIONS, padding="max_length", max_length=17, return_tensors="pt")
    pixel_values = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(sdpa(pixel_values=pixel_values, **text).logits,
                                   eager(pixel_values=pixel_values, **text).logits, rtol=1e-4, atol=1e-5)


def test_from_clip_copies_backbone_weights(tmp_path):
    tokenizer = tiny_tokenizer()
    clip_config = CLIPConfig(
        text_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         vocab_size=len(tokenizer), max_position_embeddings=17,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id),
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                           patch_size=8, image_size=32),
        projection_dim=16,
    )
    torch.manual_seed(3)
    clip = CLIPModel(clip_config).eval()
    clip.save_pretrained(tmp_path)
    overrides = dict(num_low_group_tokens=4, num_high_group_tokens=2, decoder_hidden_size=32,
                     decoder_num_attention_heads=2, decoder_stage1_layers=1, decoder_stage2_layers=1)
    model = UniRESModel.from_clip(str(tmp_path), **overrides).eval()
    text = tokenizer(EXPRESSIONS, padding="max_length", max_length=17, return_tensors="pt")
    pixel_values = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.vision_encoder.vision_model(pixel_values).last_hidden_state,
                                   clip.vision_model(pixel_values).last_hidden_state)
        torch.testing.assert_close(model.text_model(**text).last_hidden_state, clip.text_model(**text).last_hidden_state)
        assert model(pixel_values=pixel_values[:1], **text).logits.shape == (3, 32, 32)

    # The processor of such a model takes the CLIP checkpoint's tokenizer.
    tokenizer.save_pretrained(tmp_path)
    processor = UniRESProcessor.from_clip(str(tmp_path), config=model.config)
    assert processor.image_processor.size == {"height": 32, "width": 32} and processor.text_max_length == 17
    assert processor(text="the red car")["input_ids"].tolist() == text["input_ids"][:1].tolist()
    eager = UniRESModel.from_clip(str(tmp_path), attn_implementation="eager", **overrides)
    assert eager.vision_encoder.vision_model.config._attn_implementation == "eager"

    # A larger input size resizes the position table as CLIP itself interpolates it at run time.
    bigger = UniRESModel.from_clip(str(tmp_path), image_size=48, **overrides).eval()
    assert bigger.config.image_size == 48
    large = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(
            bigger.vision_encoder.vision_model(large).last_hidden_state,
            clip.vision_model(large, interpolate_pos_encoding=True).last_hidden_state,
            rtol=1e-4, atol=1e-5,
        )
        torch.testing.assert_close(bigger.text_model(**text).last_hidden_state,
                                   clip.text_model(**text).last_hidden_state)


@pytest.mark.parametrize(
    "bad,name",
    [
        (dict(mask_threshold=1.5), "mask_threshold"),
        (dict(mask_head_type="deconv"), "mask_head_type"),
        (dict(group_insert_layer=2), "group_insert_layer"),  # the tiny ViT has 2 layers: insert must be 1
        (dict(decoder_num_attention_heads=3), "decoder_num_attention_heads"),
        (dict(num_low_group_tokens=0), "num_low_group_tokens"),
        (dict(text_max_length=2), "text_max_length"),
        (dict(use_high_group_tokens="yes"), "use_high_group_tokens"),
        (dict(pixel_decoder_channels=-1), "pixel_decoder_channels"),
        (dict(decoder_token_stride=0), "decoder_token_stride"),
        (dict(decoder_position_encoding="learned"), "decoder_position_encoding"),
        (dict(decoder_hidden_size=6, decoder_num_attention_heads=2), "decoder_position_encoding"),
    ],
)
def test_bad_config_values_name_the_field(bad, name):
    with pytest.raises(ValueError, match=name):
        tiny_config(tiny_tokenizer(), **bad)


def test_unknown_ablation_is_named():
    with pytest.raises(ValueError, match="'low_high'"):
        UniRESConfig.ablation("low_high")
    # The one lookup the training script and the demo use: the error names their option and the valid choices.
    choices = r"\['full', 'high_only', 'low_only', 'no_group_tokens'\]"
    with pytest.raises(ValueError, match=rf"^--ablation 'low_high' is unknown; choose one of {choices}$"):
        UniRESConfig.ablation_kwargs("low_high", option="--ablation")
    assert UniRESConfig.ablation_kwargs("low_only") == {"use_low_group_tokens": True, "use_high_group_tokens": False}


def test_config_round_trip(tmp_path):
    config = tiny_config(tiny_tokenizer(), num_low_group_tokens=5, use_high_group_tokens=False)
    config.save_pretrained(tmp_path)
    loaded = UniRESConfig.from_pretrained(tmp_path)
    assert loaded.num_low_group_tokens == 5 and loaded.use_high_group_tokens is False
    assert loaded.image_size == 32 and loaded.vision_config.patch_size == 8 and loaded.ablation_name == "low_only"


def test_bad_forward_inputs_are_named():
    model, processor = tiny_model_and_processor()
    text = _text(processor)
    images = torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match="2 images and 3 expressions"):
        model(pixel_values=images, **text)
    with pytest.raises(ValueError, match=r"pixel_values are 2 images of \(48, 48\) but image_embeddings hold 2 "):
        model(pixel_values=torch.randn(2, 3, 48, 48), image_embeddings=model.get_image_embeddings(images), **text,
              image_indices=torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="Pass `pixel_values` or `image_embeddings`"):
        model(**text)
    with pytest.raises(ValueError, match=r"labels have shape \(3, 16, 16\)"):
        model(pixel_values=images[:1], **text, labels=torch.zeros(3, 16, 16))
    with pytest.raises(ValueError, match="out of range"):
        model(pixel_values=images, **text, image_indices=torch.tensor([0, 1, 2]))
    for floats in ([0.0, 0.5, 1.0], torch.tensor([0.0, 0.5, 1.0])):  # 0.5 was read as image 0
        with pytest.raises(ValueError, match=r"image_indices must be integers .* values \[0\.0, 0\.5, 1\.0\]"):
            model(pixel_values=images, **text, image_indices=floats)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        model(pixel_values=torch.randn(1, 3, 30, 32), **text)


# ---------------------------------------------------------------------- transformers conventions (issue 10)


def test_hidden_states_of_both_towers_and_the_decoder():
    model, processor = tiny_model_and_processor()
    text = _text(processor)
    images = torch.randn(2, 3, 32, 32)
    indices = torch.tensor([0, 1, 1])
    with torch.no_grad():
        out = model(pixel_values=images, **text, image_indices=indices, output_hidden_states=True,
                    output_image_embeddings=True)
    # Vision: input + 2 layers over CLS + 16 patches + 4 low group tokens, then + 2 high ones after insert layer 1.
    assert [tuple(h.shape) for h in out.vision_hidden_states] == [(2, 21, 32), (2, 21, 32), (2, 19, 32)]
    assert [tuple(h.shape) for h in out.text_hidden_states] == [(3, 17, 32)] * 3
    # Decoder: its input and 1 stage-1 + 1 stage-2 layer, over the 16 patch tokens of each expression.
    assert [tuple(h.shape) for h in out.decoder_hidden_states] == [(3, 16, 32)] * 3
    with torch.no_grad():
        # They are the states the model computed: the last vision state gives the image embeddings' patches...
        patches = model.vision_encoder.vision_model.post_layernorm(out.vision_hidden_states[-1][:, 1:17])
        torch.testing.assert_close(patches, out.image_embeddings[:, :16])
        # ... and the last text state the text tower's output.
        text_final = model.text_model.final_layer_norm(out.text_hidden_states[-1])
        torch.testing.assert_close(text_final, model.text_model(**text).last_hidden_state)
    plain = model(pixel_values=images, **text, image_indices=indices)
    assert plain.vision_hidden_states is plain.text_hidden_states is plain.decoder_hidden_states is None
    torch.testing.assert_close(plain.logits, out.logits)

    # The default comes from the config; with image embeddings the vision tower does not run in this call.
    model.config.output_hidden_states = True
    with torch.no_grad():
        shared = model(image_embeddings=out.image_embeddings, **text, image_indices=indices)
    assert shared.vision_hidden_states is None
    assert len(shared.text_hidden_states) == 3 and len(shared.decoder_hidden_states) == 3
    torch.testing.assert_close(shared.decoder_hidden_states[-1], out.decoder_hidden_states[-1])


def test_misspelled_forward_argument_is_a_type_error():
    model, processor = tiny_model_and_processor()
    text = _text(processor)
    with pytest.raises(TypeError, match="attention_masks"):
        model(pixel_values=torch.randn(1, 3, 32, 32), input_ids=text["input_ids"],
              attention_masks=text["attention_mask"])


def test_resize_token_embeddings_round_trip(tmp_path):
    model, processor = tiny_model_and_processor()
    text = _text(processor)
    pixel_values = torch.randn(1, 3, 32, 32)
    vocab = model.config.text_config.vocab_size
    assert model.get_input_embeddings() is model.text_model.embeddings.token_embedding
    original = model.get_input_embeddings().weight.detach().clone()
    with torch.no_grad():
        before = model(pixel_values=pixel_values, **text).logits

    model.resize_token_embeddings(vocab + 7)
    assert model.config.text_config.vocab_size == model.text_model.config.vocab_size == vocab + 7
    assert model.get_input_embeddings().weight.shape == (vocab + 7, 32)
    assert torch.equal(model.get_input_embeddings().weight[:vocab], original)
    new_ids = text["input_ids"].clone()
    new_ids[:, 1] = vocab + 6  # a token only the resized vocabulary has
    model.save_pretrained(tmp_path)
    loaded = UniRESModel.from_pretrained(tmp_path).eval()
    new_text = dict(input_ids=new_ids, attention_mask=text["attention_mask"])
    with torch.no_grad():
        assert torch.equal(loaded(pixel_values=pixel_values, **new_text).logits,
                           model(pixel_values=pixel_values, **new_text).logits)

    model.resize_token_embeddings(vocab)
    assert model.config.text_config.vocab_size == vocab
    with torch.no_grad():
        assert torch.equal(model(pixel_values=pixel_values, **text).logits, before)


def test_missing_tower_weights_get_clips_own_init(tmp_path):
    """A checkpoint without some CLIP weights: those are initialised as `UniRESModel(config)` initialises them (CLIP's
    scheme: e.g. q_proj std = hidden**-0.5 * (2 * layers)**-0.5), not with a plain N(0, 0.02); loaded ones are kept."""
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    model, _ = tiny_model_and_processor()
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    dropped = [k for k in state if k.startswith(("vision_model.encoder.layers.1.", "text_model.encoder.layers.0."))]
    assert any(k.endswith("self_attn.q_proj.weight") for k in dropped)
    assert any(k.endswith("mlp.fc1.weight") for k in dropped)
    save_file({k: v for k, v in state.items() if k not in dropped}, tmp_path / "model.safetensors",
              metadata={"format": "pt"})
    loaded = UniRESModel.from_pretrained(tmp_path)
    fresh = dict(model.named_parameters())
    for name, parameter in loaded.named_parameters():
        if name not in dropped:
            assert torch.equal(parameter, fresh[name]), name
        elif name.endswith(("proj.weight", "fc1.weight", "fc2.weight")):
            # 1024 or 2048 draws: the sample std is within a few percent; N(0, 0.02) would be 4-9x off.
            ratio = parameter.std().item() / fresh[name].std().item()
            assert 0.85 < ratio < 1.15, (name, ratio)
        else:  # biases and layer norms
            assert torch.equal(parameter, fresh[name]), name


def test_set_attn_implementation_reaches_the_config_and_the_decoder():
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    model, processor = tiny_model_and_processor()
    inputs = dict(pixel_values=torch.randn(1, 3, 32, 32), **_text(processor))
    sdpa_forward = ALL_ATTENTION_FUNCTIONS["sdpa"]
    calls = []

    def counting_sdpa(module, *args, **kwargs):
        calls.append(type(module).__name__)
        return sdpa_forward(module, *args, **kwargs)

    ALL_ATTENTION_FUNCTIONS["sdpa"] = counting_sdpa
    try:
        with torch.no_grad():
            assert model.config._attn_implementation == "sdpa"
            sdpa_logits = model(**inputs).logits
            assert "UniRESAttention" in calls and "CLIPAttention" in calls
            model.set_attn_implementation("eager")
            configs = (model.config, model.vision_encoder.vision_model.config, model.text_model.config)
            assert [c._attn_implementation for c in configs] == ["eager"] * 3
            calls.clear()
            eager_logits = model(**inputs).logits
            assert calls == []  # neither the towers nor the decoder use sdpa any more
    finally:
        del ALL_ATTENTION_FUNCTIONS["sdpa"]
    torch.testing.assert_close(eager_logits, sdpa_logits, rtol=1e-4, atol=1e-5)


def test_output_hidden_states_takes_only_a_bool():
    model, processor = tiny_model_and_processor()
    with pytest.raises(TypeError, match=r"output_hidden_states must be a bool, got \[0, 2\]"):
        model(pixel_values=torch.randn(1, 3, 32, 32), **_text(processor), output_hidden_states=[0, 2])


def test_processor_output_goes_straight_into_the_model():
    # `model(**processor(...))` is how transformers users call a model: the processor's `original_sizes` (for
    # post-processing) must not make that a TypeError, while a misspelled argument still is one.
    from PIL import Image

    model, processor = tiny_model_and_processor()
    image = Image.new("RGB", (40, 30), (200, 30, 30))
    inputs = processor(images=image, text=["the red car", "the wheel"], return_tensors="pt")
    assert "original_sizes" in inputs
    with torch.no_grad():
        logits = model(**inputs).logits
    masks = processor.post_process_masks(logits, inputs["original_sizes"].tolist() * 2)
    assert [m.shape for m in masks] == [(30, 40), (30, 40)]
    with pytest.raises(TypeError, match="attention_masks"):
        model(**inputs, attention_masks=inputs["attention_mask"])
