"""Tiny, randomly initialised models for the engine's tests and CPU benchmarks (no download).

Each builder returns what the matching stage accepts in place of a Hub checkpoint; the weights
are random, so outputs are meaningless but shaped exactly like the real models'.
"""

from __future__ import annotations

from functools import partial

import torch

from mres_engine.options import StageOptions


def build_tiny_segment_anything(image_size: int = 64, seed: int = 0):
    """A ``segment_anything.modeling.Sam`` built from the package's own modules with tiny dims."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(seed)
    patch_size, prompt_dim = 16, 32
    embedding_size = image_size // patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=image_size, patch_size=patch_size, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2,
            out_chans=prompt_dim, qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True, window_size=2, global_attn_indexes=(1,),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_dim, image_embedding_size=(embedding_size, embedding_size),
            input_image_size=(image_size, image_size), mask_in_chans=4,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=prompt_dim, mlp_dim=64, num_heads=2),
            transformer_dim=prompt_dim, iou_head_depth=2, iou_head_hidden_dim=32,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def build_tiny_transformers_sam(image_size: int = 64, seed: int = 0):
    """A tiny transformers ``SamModel`` and a ``SamProcessor`` resizing to ``image_size``."""
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor
    from transformers.models.sam.configuration_sam import SamMaskDecoderConfig, SamPromptEncoderConfig, SamVisionConfig

    torch.manual_seed(seed)
    hidden = 32
    vision = SamVisionConfig(hidden_size=32, output_channels=hidden, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, image_size=image_size, patch_size=16, window_size=2,
                             global_attn_indexes=[1], mlp_dim=64, num_pos_feats=hidden // 2)
    prompt = SamPromptEncoderConfig(hidden_size=hidden, image_size=image_size, patch_size=16, mask_input_channels=4)
    decoder = SamMaskDecoderConfig(hidden_size=hidden, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32)
    model = SamModel(SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)).eval()
    processor = SamProcessor(SamImageProcessor(size={"longest_edge": image_size}, pad_size={"height": image_size, "width": image_size}))
    return model, processor


def build_tiny_transformers_sam2(image_size: int = 128, seed: int = 0):
    """A tiny transformers ``Sam2Model`` (Hiera with 5 blocks) and a ``Sam2Processor`` resizing to ``image_size``."""
    from transformers import Sam2Config, Sam2ImageProcessor, Sam2Model, Sam2Processor

    torch.manual_seed(seed)
    # A global-attention block must not open a stage (those pool queries inside windows): blocks 0, 1, 2, 4 open stages.
    backbone = dict(model_type="sam2_hiera_det_model", hidden_size=8, num_attention_heads=1, image_size=[image_size, image_size],
                    blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[8, 16, 32, 64], num_attention_heads_per_stage=[1, 1, 1, 1],
                    window_size_per_stage=[4, 4, 4, 4], global_attention_blocks=[3], window_positional_embedding_background_size=[2, 2])
    sizes = [[image_size // 4] * 2, [image_size // 8] * 2, [image_size // 16] * 2]
    config = Sam2Config(
        vision_config=dict(backbone_config=backbone, backbone_channel_list=[64, 32, 16, 8], backbone_feature_sizes=sizes, fpn_hidden_size=32),
        prompt_encoder_config=dict(hidden_size=32, image_size=image_size, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32),
    )
    processor = Sam2Processor(Sam2ImageProcessor(size={"height": image_size, "width": image_size}))
    return Sam2Model(config).eval(), processor


def write_synth_detection_set(folder, num_images: int = 3, image_size: int = 64, seed: int = 0, split: str = "validation"):
    """A miniature detection set from MRES-Synth: ``images/*.png`` and a COCO-format ``detections.json``
    holding each object's box and category (no masks, no sentences), in ``folder``.

    Returns:
        ``(annotations_json, image_dir, rows)``: the two paths and the MRES-Synth rows (the
        ground truth, in the shared schema).
    """
    import json
    import os

    from dataset_scripts.mres_synth.builder import MRESSynthConfig, generate_row

    config = MRESSynthConfig(image_size=image_size, seed=seed)
    image_dir = os.path.join(os.fspath(folder), "images")
    os.makedirs(image_dir, exist_ok=True)
    rows = [generate_row(split, index, config) for index in range(num_images)]
    categories = sorted({r["category"] for row in rows for r in row["referents"] if r["granularity"] == "object"})
    category_ids = {name: i + 1 for i, name in enumerate(categories)}
    images, annotations = [], []
    for row in rows:  # string image ids, the ground truth's, so that outputs compare with it
        file_name = f"{row['image_id']}.png"
        with open(os.path.join(image_dir, file_name), "wb") as f:
            f.write(row["image"]["bytes"])
        images.append({"id": row["image_id"], "file_name": file_name, "width": row["width"], "height": row["height"]})
        for referent in row["referents"]:
            if referent["granularity"] == "object":
                annotations.append({"id": len(annotations) + 1, "image_id": row["image_id"], "bbox": list(referent["bbox"]),
                                    "category_id": category_ids[referent["category"]], "iscrowd": 0})
    annotations_json = os.path.join(os.fspath(folder), "detections.json")
    with open(annotations_json, "w", encoding="utf-8") as f:
        json.dump({"images": images, "annotations": annotations,
                   "categories": [{"id": i, "name": n} for n, i in category_ids.items()]}, f)
    return annotations_json, image_dir, rows


def build_tiny_causal_lm(seed: int = 0):
    """A random two-layer Qwen2 causal LM and the captioner's locally trained tokenizer (with a chat template).

    Its answers are gibberish: exactly what the part vocabulary's validation and retries must handle.
    """
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from captioner.tiny import CHAT_TEMPLATE, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return Qwen2ForCausalLM(config).eval(), tokenizer


class FakeChatServer:
    """An OpenAI-compatible ``/chat/completions`` endpoint on 127.0.0.1 answering from a function.

    ``answer(messages) -> str`` (or ``(str, finish_reason)``) decides each reply; ``requests`` holds every request body received.
    Use as a context manager; ``url`` is the base URL to give a client (``http://127.0.0.1:PORT/v1``).
    """

    def __init__(self, answer):
        import http.server
        import json
        import threading

        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                answer = server.answer(body["messages"])
                content, finish_reason = answer if isinstance(answer, tuple) else (answer, "stop")
                reply = json.dumps({"choices": [{"index": 0, "finish_reason": finish_reason,
                                                 "message": {"role": "assistant", "content": content}}]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(reply.encode())

            def log_message(self, *args):
                pass

        self.answer = answer
        self.requests: list[dict] = []
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._httpd.shutdown()
        self._httpd.server_close()


def build_tiny_clip_tokenizer(model_max_length: int = 16):
    """A CLIP tokenizer trained locally on engine-like phrases (CLIP, OWL-ViT and OWLv2 use CLIP's tokenizer)."""
    from modeling_unires.tokenization_local import build_clip_tokenizer

    corpus = ["wheel of car", "window of house", "ear of dog", "head of person", "a red car on the left",
              "the small blue boat", "a person standing", "sail of boat", "roof of house", "leg of chair"]
    import json

    from transformers import CLIPTokenizer

    tokenizer = build_clip_tokenizer(corpus, vocab_size=600, model_max_length=model_max_length)
    # OWL treats a query whose first token id is 0 as padding; real CLIP vocabularies put the start
    # token last (49406), so do the same: swap it with the last id.
    vocab = tokenizer.get_vocab()
    start, last = tokenizer.bos_token, max(vocab, key=vocab.get)
    vocab[start], vocab[last] = vocab[last], vocab[start]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" "))
              for m in json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]]
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def _tiny_tower_configs(tokenizer, image_size: int, max_positions: int) -> dict:
    """Text and vision tower configs (width 32, 2 layers, 8-px patches) of the tiny CLIP-family models."""
    return dict(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": max_positions,
                     "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                     "pad_token_id": tokenizer.pad_token_id},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": image_size, "patch_size": 8},
        projection_dim=32,
    )


def build_tiny_owlv2(image_size: int = 32, seed: int = 0):
    """A tiny ``Owlv2ForObjectDetection`` and an ``Owlv2Processor`` resizing crops to ``image_size``."""
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    tokenizer = build_tiny_clip_tokenizer()
    torch.manual_seed(seed)
    config = Owlv2Config(**_tiny_tower_configs(tokenizer, image_size, max_positions=16))
    model = Owlv2ForObjectDetection(config).eval()
    processor = Owlv2Processor(Owlv2ImageProcessor(size={"height": image_size, "width": image_size}), tokenizer)
    return model, processor


def build_tiny_clip(image_size: int = 32, seed: int = 0):
    """A tiny ``CLIPModel`` and a ``CLIPProcessor`` (local tokenizer) resizing crops to ``image_size``."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = build_tiny_clip_tokenizer(model_max_length=32)
    torch.manual_seed(seed)
    config = CLIPConfig(**_tiny_tower_configs(tokenizer, image_size, max_positions=32))
    processor = CLIPProcessor(CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}),
                              tokenizer)
    return CLIPModel(config).eval(), processor


def tiny_chat_answer(messages) -> str:
    """Answers of a fake endpoint serving both the part LLM and the captioner: a caption when the
    request holds an image, else a JSON part list."""
    import json

    if any(isinstance(m.get("content"), list) for m in messages):
        return "a small thing"
    return json.dumps({"parts": ["left part", "top part"]})


def save_tiny_stage_models(folder, chat_url: str):
    """Save tiny SAM (transformers), OWLv2 and CLIP under ``folder`` and return
    :class:`~mres_engine.options.StageOptions` that load them by path, with the part
    LLM and the captioner served at ``chat_url`` (a :class:`FakeChatServer` answering with
    :func:`tiny_chat_answer`) and every threshold open, so that random weights keep referents.
    """
    import os

    folder = os.fspath(folder)
    paths = {name: os.path.join(folder, name) for name in ("sam", "owlv2", "clip")}
    for name, (model, processor) in {"sam": build_tiny_transformers_sam(), "owlv2": build_tiny_owlv2(), "clip": build_tiny_clip()}.items():
        model.save_pretrained(paths[name])
        processor.save_pretrained(paths[name])
    return StageOptions(
        device="cpu", sam_backend="transformers", sam_model=paths["sam"], sam_min_iou=-1.0, sam_min_stability=-1.0,
        part_vocabulary="openai", part_llm="tiny-llm", part_llm_url=chat_url,
        part_vocabulary_cache=os.path.join(folder, "part_vocabulary_cache.json"),
        part_detector=paths["owlv2"], part_min_score=0.0, part_max_per_name=1, part_min_inside=0.0,
        captioner="tiny-captioner", captioner_url=chat_url, clip_model=paths["clip"], clip_min_score=-1.0,
    )


def build_tiny_sam3(image_size: int = 56, seed: int = 0):
    """A tiny transformers ``Sam3Model`` (ViT 2 x 32, 8 queries) and a ``Sam3Processor`` with a local CLIP tokenizer."""
    from transformers import Sam3Config, Sam3ImageProcessor, Sam3Model, Sam3Processor

    tokenizer = build_tiny_clip_tokenizer(model_max_length=32)
    torch.manual_seed(seed)
    hidden, feature = 32, image_size // 14
    small = dict(hidden_size=hidden, num_layers=1, num_attention_heads=2, intermediate_size=64)
    config = Sam3Config(
        vision_config=dict(
            backbone_config=dict(model_type="sam3_vit_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=2, image_size=image_size, patch_size=14, window_size=2,
                                 global_attn_indexes=[1], pretrain_image_size=image_size),
            fpn_hidden_size=hidden, backbone_feature_sizes=[[4 * feature] * 2, [2 * feature] * 2, [feature] * 2]),
        text_config=dict(model_type="clip_text_model", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=32, projection_dim=32,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
        geometry_encoder_config=small, detr_encoder_config=small, detr_decoder_config={**small, "num_queries": 8},
        mask_decoder_config=dict(hidden_size=hidden, num_attention_heads=2),
    )
    processor = Sam3Processor(Sam3ImageProcessor(size={"height": image_size, "width": image_size}), tokenizer)
    return Sam3Model(config).eval(), processor
