"""UniRES model configuration.

This file is copied beside saved checkpoints (remote code), so it imports only `transformers`.
"""

from transformers import CLIPTextConfig, CLIPVisionConfig, PretrainedConfig

# Ablation presets of the paper's Table 8, as (use_low_group_tokens, use_high_group_tokens).
ABLATIONS = {
    "full": (True, True),
    "no_group_tokens": (False, False),
    "low_only": (True, False),
    "high_only": (False, True),
}

MASK_HEAD_TYPES = ("pixel_shuffle", "upsample")
DECODER_POSITION_ENCODINGS = ("sine", None)

# The paper's inference threshold on mask probabilities; the one default every other threshold falls back to.
DEFAULT_MASK_THRESHOLD = 0.35


class UniRESConfig(PretrainedConfig):
    r"""
    Configuration of a [`UniRESModel`]: a CLIP vision tower carrying learnable group tokens, a CLIP text tower, a
    language-guided region filter and a two-stage vision-language decoder with a mask head.

    Args:
        vision_config (`dict` or `CLIPVisionConfig`, *optional*):
            The CLIP vision transformer. `vision_config.image_size` is the model's (square) input size.
        text_config (`dict` or `CLIPTextConfig`, *optional*):
            The CLIP text transformer.
        num_low_group_tokens (`int`, defaults to 64):
            Low-level group tokens: they join the visual tokens before the first ViT layer and leave at
            `group_insert_layer`.
        num_high_group_tokens (`int`, defaults to 8):
            High-level group tokens: they join at `group_insert_layer` and leave after the last ViT layer.
        group_insert_layer (`int`, *optional*):
            Index of the ViT layer where low-level tokens leave and high-level tokens enter. Defaults to half the
            depth (`vision_config.num_hidden_layers // 2`); must lie in `[1, num_hidden_layers - 1]`.
        use_low_group_tokens / use_high_group_tokens (`bool`, default `True`):
            Ablation switches (paper, Table 8). Both `False` is the "no group tokens" setting, which also drops the
            stage-2 decoder. See [`UniRESConfig.ablation`].
        decoder_hidden_size (`int`, defaults to 256): width of the region filter and the decoder.
        decoder_num_attention_heads (`int`, defaults to 8): heads of every decoder attention.
        decoder_stage1_layers (`int`, defaults to 3): layers fusing visual tokens with the text.
        decoder_stage2_layers (`int`, defaults to 3): layers fusing that result with the filtered group tokens.
        decoder_intermediate_size (`int`, *optional*): MLP width of the decoder layers (default 4x hidden).
        mask_threshold (`float`, defaults to 0.35): probability threshold of the predicted masks.
        text_max_length (`int`, defaults to 17): token length, with start and end tokens (22 for RefCOCOg).
        dice_loss_weight / bce_loss_weight (`float`, default 1.0): weights of the two loss terms.
        mask_head_type (`str`, defaults to `"pixel_shuffle"`): `"pixel_shuffle"` projects every decoder visual token
            linearly to `patch_size * patch_size` logits laid out at full input resolution; `"upsample"` projects
            it to one logit and upsamples bilinearly.
        pixel_decoder_channels (`int`, defaults to 0):
            Width of an optional full-resolution pixel branch (two 3x3 convolutions on the input image). When > 0,
            every decoded token also predicts a `pixel_decoder_channels`-long filter whose dot product with the
            pixel features of its own patch adds a logit per pixel, so mask edges follow the image's edges rather
            than the patch grid. 0 (the paper's model) disables it; it needs `pixel_values` at every forward (see
            [`UniRESModel.forward`]).
        decoder_token_stride (`int`, defaults to 1):
            Average-pool the fused visual tokens by this factor before the decoder layers and add the decoded tokens
            back onto the full patch grid afterwards: the decoder's cost per expression falls by `stride**2`. 1 (the
            paper's model) decodes every patch token.
        decoder_position_encoding (`str` or `None`, defaults to `"sine"`):
            Position encoding of the visual tokens inside the decoder. `"sine"`: DETR's fixed 2D sine encoding of the
            (pooled) token grid, added to the queries and keys of every decoder layer (as in CRIS, the paper's
            lineage), so that the decoder can compare positions ("the man on the left") rather than rely on what the
            ViT's input position embeddings left in its last layer. It has no weights and follows the input
            resolution. `None` disables it; a saved config that predates the option loads with `None`, as its
            checkpoint was trained.
        decoder_dropout (`float`, defaults to 0.0): dropout inside the decoder layers.
        initializer_range (`float`, defaults to 0.02): std of the normal init of the non-CLIP layers.

    Example:

    ```python
    >>> from modeling_unires import UniRESConfig, UniRESModel
    >>> config = UniRESConfig.ablation("low_only")
    >>> model = UniRESModel(config)
    ```
    """

    model_type = "unires"
    sub_configs_defaults = {"vision_config": CLIPVisionConfig, "text_config": CLIPTextConfig}

    def __init__(
        self,
        vision_config=None,
        text_config=None,
        num_low_group_tokens=64,
        num_high_group_tokens=8,
        group_insert_layer=None,
        use_low_group_tokens=True,
        use_high_group_tokens=True,
        decoder_hidden_size=256,
        decoder_num_attention_heads=8,
        decoder_stage1_layers=3,
        decoder_stage2_layers=3,
        decoder_intermediate_size=None,
        mask_threshold=DEFAULT_MASK_THRESHOLD,
        text_max_length=17,
        dice_loss_weight=1.0,
        bce_loss_weight=1.0,
        mask_head_type="pixel_shuffle",
        pixel_decoder_channels=0,
        decoder_token_stride=1,
        decoder_position_encoding="sine",
        decoder_dropout=0.0,
        initializer_range=0.02,
        **kwargs,
    ):
        self.vision_config = self._as_sub_config(vision_config, CLIPVisionConfig, "vision_config")
        self.text_config = self._as_sub_config(text_config, CLIPTextConfig, "text_config")
        self.num_low_group_tokens = num_low_group_tokens
        self.num_high_group_tokens = num_high_group_tokens
        self.use_low_group_tokens = use_low_group_tokens
        self.use_high_group_tokens = use_high_group_tokens
        depth = self.vision_config.num_hidden_layers
        self.group_insert_layer = depth // 2 if group_insert_layer is None else group_insert_layer
        self.decoder_hidden_size = decoder_hidden_size
        self.decoder_num_attention_heads = decoder_num_attention_heads
        self.decoder_stage1_layers = decoder_stage1_layers
        self.decoder_stage2_layers = decoder_stage2_layers
        self.decoder_intermediate_size = (
            4 * decoder_hidden_size if decoder_intermediate_size is None else decoder_intermediate_size
        )
        self.mask_threshold = mask_threshold
        self.text_max_length = text_max_length
        self.dice_loss_weight = dice_loss_weight
        self.bce_loss_weight = bce_loss_weight
        self.mask_head_type = mask_head_type
        self.pixel_decoder_channels = pixel_decoder_channels
        self.decoder_token_stride = decoder_token_stride
        self.decoder_position_encoding = decoder_position_encoding
        self.decoder_dropout = decoder_dropout
        self.initializer_range = initializer_range
        super().__init__(**kwargs)
        self._validate_unires()

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        # Checkpoints saved before the decoder had a position encoding were trained without one: a saved config that
        # does not name the option keeps that decoder (new configs get the default).
        if "decoder_position_encoding" not in config_dict and "decoder_position_encoding" not in kwargs:
            config_dict = {**config_dict, "decoder_position_encoding": None}
        return super().from_dict(config_dict, **kwargs)

    @staticmethod
    def _as_sub_config(value, config_class, name):
        if value is None:
            return config_class()
        if isinstance(value, config_class):
            return value
        if isinstance(value, PretrainedConfig):
            return config_class(**value.to_dict())
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in ("model_type", "transformers_version")}
            return config_class(**value)
        raise ValueError(f"{name} must be a dict or a {config_class.__name__}, got {type(value).__name__}")

    def _validate_unires(self):
        def check(name, ok, expected):
            if not ok:
                raise ValueError(f"UniRESConfig.{name}={getattr(self, name)!r} is invalid: expected {expected}")

        def is_int(value, minimum):
            return isinstance(value, int) and not isinstance(value, bool) and value >= minimum

        def is_prob(value):
            return isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0

        check("use_low_group_tokens", isinstance(self.use_low_group_tokens, bool), "a bool")
        check("use_high_group_tokens", isinstance(self.use_high_group_tokens, bool), "a bool")
        check("num_low_group_tokens", is_int(self.num_low_group_tokens, 1), "an int >= 1")
        check("num_high_group_tokens", is_int(self.num_high_group_tokens, 1), "an int >= 1")
        depth = self.vision_config.num_hidden_layers
        if self.uses_group_tokens:
            check(
                "group_insert_layer",
                is_int(self.group_insert_layer, 1) and self.group_insert_layer <= depth - 1,
                f"an int in [1, {depth - 1}] (vision depth {depth})",
            )
        check("decoder_hidden_size", is_int(self.decoder_hidden_size, 1), "an int >= 1")
        check(
            "decoder_num_attention_heads",
            is_int(self.decoder_num_attention_heads, 1)
            and self.decoder_hidden_size % self.decoder_num_attention_heads == 0,
            f"an int >= 1 dividing decoder_hidden_size={self.decoder_hidden_size}",
        )
        check("decoder_stage1_layers", is_int(self.decoder_stage1_layers, 0), "an int >= 0")
        check("decoder_stage2_layers", is_int(self.decoder_stage2_layers, 0), "an int >= 0")
        check("decoder_intermediate_size", is_int(self.decoder_intermediate_size, 1), "an int >= 1")
        check("mask_threshold", is_prob(self.mask_threshold), "a float in [0, 1]")
        check(
            "text_max_length",
            is_int(self.text_max_length, 3) and self.text_max_length <= self.text_config.max_position_embeddings,
            f"an int in [3, text_config.max_position_embeddings={self.text_config.max_position_embeddings}]",
        )
        for name in ("dice_loss_weight", "bce_loss_weight"):
            value = getattr(self, name)
            check(name, isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0, "a float >= 0")
        check("mask_head_type", self.mask_head_type in MASK_HEAD_TYPES, f"one of {MASK_HEAD_TYPES}")
        check("pixel_decoder_channels", is_int(self.pixel_decoder_channels, 0), "an int >= 0 (0 disables the branch)")
        check("decoder_token_stride", is_int(self.decoder_token_stride, 1), "an int >= 1")
        check(
            "decoder_position_encoding",
            self.decoder_position_encoding in DECODER_POSITION_ENCODINGS,
            f"one of {DECODER_POSITION_ENCODINGS}",
        )
        check(
            "decoder_position_encoding",
            self.decoder_position_encoding is None or self.decoder_hidden_size % 4 == 0,
            f"None when decoder_hidden_size={self.decoder_hidden_size} is not a multiple of 4 (a 2D sine encoding "
            "splits the width in four)",
        )
        check("decoder_dropout", is_prob(self.decoder_dropout), "a float in [0, 1]")
        vision = self.vision_config
        if vision.image_size % vision.patch_size != 0:
            raise ValueError(
                f"UniRESConfig.vision_config.image_size={vision.image_size} is invalid: expected a multiple of "
                f"patch_size={vision.patch_size}"
            )

    @property
    def custom_pipelines(self) -> dict:
        """
        The pipelines this checkpoint carries as code (`config.json`'s `custom_pipelines`, which
        [`UniRESModel.save_pretrained`] writes), less the tasks this Python process already serves with a registered
        pipeline (`PIPELINE_REGISTRY`, as after `import modeling_unires`).

        transformers' `pipeline()` treats every task listed here as remote code and refuses it without
        `trust_remote_code=True`, even when the installed package serves the task. So the installed code serves it;
        where the package is not installed, the task is not registered and the checkpoint's copy runs. The stored
        value is saved unchanged.
        """
        from transformers.pipelines import PIPELINE_REGISTRY

        stored = self.__dict__.get("custom_pipelines") or {}
        served = PIPELINE_REGISTRY.get_supported_tasks()
        return {task: info for task, info in stored.items() if task not in served}

    @custom_pipelines.setter
    def custom_pipelines(self, value) -> None:
        self.__dict__["custom_pipelines"] = value  # under its own name: `to_dict` serialises `__dict__`

    @property
    def image_size(self) -> int:
        """Side of the square model input, in pixels (`vision_config.image_size`)."""
        return self.vision_config.image_size

    @property
    def patch_size(self) -> int:
        return self.vision_config.patch_size

    @property
    def uses_group_tokens(self) -> bool:
        return self.use_low_group_tokens or self.use_high_group_tokens

    @property
    def num_group_tokens_used(self) -> int:
        """How many group tokens follow the visual tokens in the image embeddings."""
        return self.num_low_group_tokens * self.use_low_group_tokens + (
            self.num_high_group_tokens * self.use_high_group_tokens
        )

    def fit_to_tokenizer(self, tokenizer) -> "UniRESConfig":
        """
        Size the text tower to `tokenizer` (vocabulary, start/end/padding ids) and to `text_max_length` positions;
        for a tower trained from scratch with a tokenizer made for it. Returns `self`.
        """
        text = self.text_config
        text.vocab_size = len(tokenizer)
        text.max_position_embeddings = max(self.text_max_length, 1)
        text.bos_token_id = tokenizer.bos_token_id
        text.eos_token_id = tokenizer.eos_token_id
        text.pad_token_id = tokenizer.pad_token_id
        return self

    @staticmethod
    def ablation_kwargs(name: str, option: str = "ablation") -> dict:
        """
        The constructor arguments of one row of the paper's Table 8, `{"use_low_group_tokens": ...,
        "use_high_group_tokens": ...}`: `"full"` (low and high group tokens), `"no_group_tokens"` (no group tokens and
        no stage-2 decoder), `"low_only"` or `"high_only"`. For callers that pass config overrides rather than build a
        config (`from_pretrained(**overrides)`, `from_clip`). An unknown name is a `ValueError` naming `option` (e.g.
        `"--ablation"`, as the caller's user spells it) and the valid choices.
        """
        if name not in ABLATIONS:
            raise ValueError(f"{option} {name!r} is unknown; choose one of {sorted(ABLATIONS)}")
        use_low, use_high = ABLATIONS[name]
        return {"use_low_group_tokens": use_low, "use_high_group_tokens": use_high}

    @classmethod
    def ablation(cls, name: str, **kwargs) -> "UniRESConfig":
        """
        Config of one row of the paper's Table 8 (see [`UniRESConfig.ablation_kwargs`]). Other keyword arguments go to
        the constructor.
        """
        return cls(**cls.ablation_kwargs(name), **kwargs)

    @property
    def ablation_name(self) -> str:
        """The Table-8 setting this config implements (inverse of [`UniRESConfig.ablation`])."""
        flags = (self.use_low_group_tokens, self.use_high_group_tokens)
        return next(name for name, value in ABLATIONS.items() if value == flags)


__all__ = ["UniRESConfig"]
