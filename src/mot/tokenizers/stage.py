"""The tokenizer stages: fit the text BPE and the image VQ-VAE on the training split, then
encode every split into token arrays (`results/{study}/tokens/{split}.npz`)."""

from __future__ import annotations

import json
import logging
from collections import Counter

import numpy as np
import torch

from mot.config import ConfigError
from mot.data.captions import most_frequent_caption
from mot.data.sequences import TokenizedSplit, Vocabulary
from mot.data.shards import load_manifest, load_split_arrays
from mot.paths import StudyPaths
from mot.tokenizers.image_vq import VQConfig, VQVAE, train_vqvae
from mot.tokenizers.text_bpe import TextTokenizer

log = logging.getLogger("mot.tokenize")
TEXT_TOKENIZER, IMAGE_TOKENIZER, VOCAB, FIT_SUMMARY = "text_bpe.json", "vqvae.pt", "vocab.json", "fit_summary.json"


def fit_tokenizers(config: dict, logger=None) -> dict:
    """Fit BPE on the training captions and the VQ-VAE on the training images; log VQ quality."""
    paths = StudyPaths.from_config(config)
    torch.set_num_threads(config["train"]["threads"])
    _, images, captions = load_split_arrays(paths.data, "train")
    text_cfg, vq_cfg = config["tokenizers"]["text"], config["tokenizers"]["image_vq"]
    paths.tokenizers.mkdir(parents=True, exist_ok=True)

    text = TextTokenizer.fit((c for caps in captions for c in caps), text_cfg["vocab_size"], text_cfg["min_frequency"])
    text.save(paths.tokenizers / TEXT_TOKENIZER)
    log.info("text BPE: %d tokens from %d captions", text.vocab_size, sum(map(len, captions)))

    vq = VQConfig(codebook_size=vq_cfg["codebook_size"], code_dim=vq_cfg["code_dim"], hidden=vq_cfg["hidden"],
                  downsample=vq_cfg["downsample"], commitment=vq_cfg["commitment"])
    log_fn = (lambda metrics, step: logger.log_metrics(metrics, step)) if logger else None
    model, metrics = train_vqvae(images, vq, vq_cfg["steps"], vq_cfg["batch_size"], vq_cfg["lr"],
                                 vq_cfg["seed"], log_fn=log_fn)
    model.save(paths.tokenizers / IMAGE_TOKENIZER)
    log.info("VQ-VAE: recon_mse %.4f, perplexity %.1f, codebook usage %.0f%%",
             metrics["recon_mse"], metrics["perplexity"], 100 * metrics["codebook_usage"])

    vocab = Vocabulary(text_size=text.vocab_size, image_codes=vq.codebook_size, pad=text.pad_id,
                       bos=text.bos_id, eos=text.eos_id, boi=text.boi_id, eoi=text.eoi_id)
    summary = {"text_vocab_size": text.vocab_size, "image_codebook_size": vq.codebook_size,
               # the constant-caption baseline of evaluation, computed here where the training captions are loaded
               "most_frequent_caption": most_frequent_caption(c for caps in captions for c in caps),
               "image_tokens_per_image": model.tokens_per_image(images.shape[1]),
               **{f"vq_final/{k}": v for k, v in metrics.items()}}
    if logger:
        logger.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))}, vq_cfg["steps"])
    (paths.tokenizers / FIT_SUMMARY).write_text(json.dumps(summary, indent=2))
    # written last: its presence means both tokenizers are complete (the Snakemake output)
    (paths.tokenizers / VOCAB).write_text(json.dumps(vocab.as_dict(), indent=2))
    return summary


def check_sequence_fits(config: dict, image_tokens: int) -> None:
    seq = config["sequences"]
    needed = image_tokens + seq["max_caption_tokens"] + 4 - 1  # bos, boi, eoi, eos; inputs drop one token
    if needed > seq["seq_len"]:
        raise ConfigError(f"sequences.seq_len: {seq['seq_len']} is too short for {image_tokens} image tokens "
                          f"+ max_caption_tokens {seq['max_caption_tokens']} + 4 specials (need >= {needed})")


def tokenize_splits(config: dict, logger=None) -> dict:
    """Encode every split with the fitted tokenizers; captions longer than the limit are truncated and counted."""
    paths = StudyPaths.from_config(config)
    torch.set_num_threads(config["train"]["threads"])
    text = TextTokenizer.load(paths.tokenizers / TEXT_TOKENIZER)
    vq = VQVAE.load(paths.tokenizers / IMAGE_TOKENIZER)
    max_caption = config["sequences"]["max_caption_tokens"]
    paths.tokens.mkdir(parents=True, exist_ok=True)
    stats = {}
    for split in load_manifest(paths.data)["splits"]:
        keys, images, captions = load_split_arrays(paths.data, split)
        check_sequence_fits(config, vq.tokens_per_image(images.shape[1]))
        codes = vq.encode(images).numpy().astype(np.int16)
        slots = max(len(c) for c in captions)
        caption_ids = np.full((len(captions), slots, max_caption), -1, dtype=np.int32)
        lengths = np.zeros((len(captions), slots), dtype=np.int32)
        truncated = Counter()
        for i, caps in enumerate(captions):
            for j, caption in enumerate(caps):
                ids = text.encode(caption)
                truncated[len(ids) > max_caption] += 1
                ids = ids[:max_caption]
                caption_ids[i, j, : len(ids)] = ids
                lengths[i, j] = len(ids)
        TokenizedSplit(codes, caption_ids, lengths, np.asarray(keys)).save(paths.tokens / f"{split}.npz")
        stats[split] = {"samples": len(keys), "captions": int(sum(truncated.values())),
                        "truncated_captions": truncated[True],
                        "mean_caption_tokens": float(lengths[lengths > 0].mean())}
        log.info("tokenized %s: %s", split, stats[split])
        if logger:
            logger.log_metrics({f"tokens/{split}_{k}": v for k, v in stats[split].items()}, 0)
    (paths.tokens / "stats.json").write_text(json.dumps(stats, indent=2))
    return stats
