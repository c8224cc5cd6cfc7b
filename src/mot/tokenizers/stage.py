"""The tokenizer stages: fit the text BPE and the image VQ-VAE on the training split, then
encode every split into token arrays (`results/{study}/tokens/{split}.npz`)."""

from __future__ import annotations

import json
import logging
from collections import Counter

import numpy as np
import torch

from mot.config.files import ConfigError
from mot.config.grid import text_only_seq_len
from mot.data.captions import most_frequent_caption
from mot.data.sequences import SpeechTokens, TextChunks, TokenizedSplit
from mot.data.shards import load_manifest, load_split_arrays
from mot.data.speech import read_speech_split
from mot.data.text import read_text_split
from mot.data.token_shards import write_row_shards
from mot.paths import StudyPaths
from mot.tokenizers.image_vq import VQConfig, VQVAE, train_vqvae
from mot.tokenizers.speech_units import SpeechUnits, unit_stats
from mot.tokenizers.text_bpe import TextTokenizer
from mot.vocabulary import Vocabulary

log = logging.getLogger("mot.tokenize")


def fit_tokenizers(config: dict, logger=None) -> dict:
    """Fit BPE on the training captions and the VQ-VAE on the training images; log VQ quality."""
    paths = StudyPaths.from_config(config)
    torch.set_num_threads(config["train"]["threads"])
    _, images, captions = load_split_arrays(paths.data, "train")
    text_cfg, vq_cfg = config["tokenizers"]["text"], config["tokenizers"]["image_vq"]
    paths.tokenizers.mkdir(parents=True, exist_ok=True)

    text = TextTokenizer.fit((c for caps in captions for c in caps), text_cfg["vocab_size"], text_cfg["min_frequency"])
    text.save(paths.text_tokenizer)
    log.info("text BPE: %d tokens from %d captions", text.vocab_size, sum(map(len, captions)))

    vq = VQConfig(codebook_size=vq_cfg["codebook_size"], code_dim=vq_cfg["code_dim"], hidden=vq_cfg["hidden"],
                  downsample=vq_cfg["downsample"], commitment=vq_cfg["commitment"])
    log_fn = (lambda metrics, step: logger.log_metrics(metrics, step)) if logger else None
    model, metrics = train_vqvae(images, vq, vq_cfg["steps"], vq_cfg["batch_size"], vq_cfg["lr"],
                                 vq_cfg["seed"], log_fn=log_fn)
    model.save(paths.image_tokenizer)
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
    paths.fit_summary.write_text(json.dumps(summary, indent=2))
    # written last: its presence means both tokenizers are complete (the Snakemake output)
    paths.vocab.write_text(json.dumps(vocab.as_dict(), indent=2))
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
    text = TextTokenizer.load(paths.text_tokenizer)
    vq = VQVAE.load(paths.image_tokenizer)
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
        TokenizedSplit(codes, caption_ids, lengths, np.asarray(keys)).save(paths.split_tokens(split))
        stats[split] = {"samples": len(keys), "captions": int(sum(truncated.values())),
                        "truncated_captions": truncated[True],
                        "mean_caption_tokens": float(lengths[lengths > 0].mean())}
        log.info("tokenized %s: %s", split, stats[split])
        if logger:
            logger.log_metrics({f"tokens/{split}_{k}": v for k, v in stats[split].items()}, 0)
    paths.tokens_stats.write_text(json.dumps(stats, indent=2))
    return stats


# --- Transfusion: the continuous image tokenizer ---------------------------------------------------

def vae_config_from(config: dict):
    from mot.tokenizers.image_vae import VAEConfig  # diffusers: seconds to import, only for Transfusion

    cfg = {k: v for k, v in config["tokenizers"]["image_vae"].items() if k != "pretrained"}
    return VAEConfig(**{**cfg, "block_out_channels": tuple(cfg["block_out_channels"])})


def latent_shape_from(config: dict, image_size: int) -> tuple[int, int, int]:
    """The latent grid the config implies (a pretrained VAE's own config is read at fit time)."""
    cfg = vae_config_from(config)
    return cfg.latent_channels, image_size // cfg.downsample, image_size // cfg.downsample


def fit_image_vae(config: dict, logger=None) -> dict:
    """Fit the KL autoencoder on the training images (or load a local pretrained one), fit the latent
    shift/scale on training latents (as Stable Diffusion does), and save every split's scaled latents."""
    from mot.tokenizers.image_vae import ImageVAE, evaluate_vae, fit_latent_stats, train_vae  # diffusers: slow

    paths = StudyPaths.from_config(config)
    torch.set_num_threads(config["train"]["threads"])
    vae_cfg = config["tokenizers"]["image_vae"]
    _, images, _ = load_split_arrays(paths.data, "train")
    log_fn = (lambda metrics, step: logger.log_metrics(metrics, step)) if logger else None
    if vae_cfg["pretrained"]:
        vae = ImageVAE.load(vae_cfg["pretrained"])
        metrics = {**evaluate_vae(vae, images[:1024]), **fit_latent_stats(vae, images)}
    else:
        vae, metrics = train_vae(images, vae_config_from(config), log_fn=log_fn)
    vae.save(paths.image_vae)
    log.info("image VAE: recon_mse %.4f, KL %.3f, latent std %.3f -> scaling factor %.3f", metrics["recon_mse"],
             metrics["kl"], metrics["latent_std"], metrics["scaling_factor"])
    paths.tokens.mkdir(parents=True, exist_ok=True)
    stats = {"vae_final/" + k: v for k, v in metrics.items()}
    for split in load_manifest(paths.data)["splits"]:
        _, split_images, _ = load_split_arrays(paths.data, split)
        latents = vae.encode(split_images).numpy().astype(np.float32)
        np.save(paths.split_latents(split), latents)
        stats[f"latents/{split}_std"] = float(latents.std())
        stats["latent_shape"] = list(latents.shape[1:])
    if logger:
        logger.log_metrics({k: v for k, v in stats.items() if isinstance(v, float)}, vae_cfg["steps"])
    paths.latents_stats.write_text(json.dumps(stats, indent=2))  # last: the stage's output
    return stats


# --- Chameleon + Speech: discrete speech units ---------------------------------------------------

def fit_speech_units(config: dict, logger=None) -> dict:
    """k-means speech units fitted on the training audio; every split encoded as units (truncated to
    tokenizers.speech.max_units, counted) with its transcript as BPE ids."""
    paths = StudyPaths.from_config(config)
    threads = config["train"]["threads"]
    torch.set_num_threads(threads)
    scfg, speech_dir = config["tokenizers"]["speech"], paths.speech_data
    text = TextTokenizer.load(paths.text_tokenizer)
    sample_rate = load_manifest(speech_dir)["sample_rate"]
    waveforms = (waveform for _, waveform, _ in read_speech_split(speech_dir, "train"))  # streamed: bounded memory
    units = SpeechUnits.fit(waveforms, sample_rate, scfg["n_units"], scfg["seed"], scfg["max_frames"], scfg["n_mels"],
                            scfg["hop_ms"], scfg["win_ms"], scfg["dedup"], threads=threads)
    units.save(paths.speech_units)
    max_units, max_text = scfg["max_units"], config["sequences"]["max_caption_tokens"]
    stats: dict = {"n_units": units.n_units}
    paths.tokens.mkdir(parents=True, exist_ok=True)
    for split in load_manifest(speech_dir)["splits"]:
        keys, encoded, transcripts = [], [], []
        for key, waveform, transcript in read_speech_split(speech_dir, split):
            keys.append(key)
            encoded.append(units.encode(waveform))
            transcripts.append(transcript)
        unit_ids = np.full((len(keys), max_units), -1, dtype=np.int16)
        text_ids = np.full((len(keys), max_text), -1, dtype=np.int32)
        unit_lengths, text_lengths = np.zeros(len(keys), np.int32), np.zeros(len(keys), np.int32)
        for i, (u, transcript) in enumerate(zip(encoded, transcripts)):
            unit_lengths[i] = min(len(u), max_units)
            unit_ids[i, : unit_lengths[i]] = u[:max_units]
            ids = text.encode(transcript)[:max_text]
            text_lengths[i] = len(ids)
            text_ids[i, : len(ids)] = ids
        SpeechTokens(unit_ids, unit_lengths, text_ids, text_lengths, np.asarray(keys)).save(
            paths.split_speech(split))
        lengths = np.array([len(u) for u in encoded])
        usage = unit_stats(encoded, units.n_units)
        stats[split] = {"utterances": len(keys), "mean_units": float(lengths.mean()), "max_units": int(lengths.max()),
                        "truncated": int((lengths > max_units).sum()), "unit_usage": usage["usage"],
                        "unit_perplexity": usage["perplexity"]}
        log.info("speech units %s: %s", split, stats[split])
        if logger:
            logger.log_metrics({f"speech/{split}_{k}": v for k, v in stats[split].items()}, 0)
    paths.speech_stats.write_text(json.dumps(stats, indent=2))  # last: the stage's output
    return stats


# --- text-only documents -------------------------------------------------------------------------


def tokenize_text(config: dict, logger=None) -> dict:
    """Encode the text-only documents with the caption BPE (tokenizers/text_bpe.json): each document as
    `<bos> ids <eos>`, cut into rows of text_only_seq_len + 1 tokens (tokens/{split}_text.npz)."""
    paths = StudyPaths.from_config(config)
    text = TextTokenizer.load(paths.text_tokenizer)
    width = text_only_seq_len(config) + 1
    paths.tokens.mkdir(parents=True, exist_ok=True)
    stats: dict = {"row_tokens": width}
    for split in load_manifest(paths.text_data)["splits"]:
        documents, words = [], 0
        for _, document in read_text_split(paths.text_data, split):
            documents.append([text.bos_id, *text.encode(document), text.eos_id])
            words += len(document.split())
        chunks = TextChunks.from_documents(documents, width)
        chunks.save(paths.split_text(split))
        lengths = np.array([len(d) for d in documents])
        stats[split] = {"documents": len(documents), "rows": len(chunks), "tokens": int(chunks.lengths.sum()),
                        "mean_document_tokens": float(lengths.mean()) if len(lengths) else 0.0,
                        "documents_over_one_row": int((lengths > width).sum()),
                        "tokens_per_word": float((lengths - 2).sum() / max(words, 1))}
        log.info("tokenized text-only %s: %s", split, stats[split])
        if logger:
            logger.log_metrics({f"text_only/{split}_{k}": v for k, v in stats[split].items()}, 0)
    paths.text_stats.write_text(json.dumps(stats, indent=2))  # last: the stage's output
    return stats


def shard_tokens(config: dict, source: str, logger=None) -> dict:
    """The train split's rows of one token source (image_text, text_only, speech) as webdataset token shards of
    data.token_shard_rows samples (tokens/shards/{source}/), read by training with sequences.store: shards."""
    paths = StudyPaths.from_config(config)
    with np.load(paths.source_rows(source, "train")) as f:
        arrays = {name: f[name] for name in f.files}
    manifest = write_row_shards(arrays, paths.token_shards(source), config["data"]["token_shard_rows"])
    log.info("token shards %s: %d rows in %d shards", source, manifest["rows"], len(manifest["shards"]))
    if logger:
        logger.log_metrics({f"token_shards/{source}_rows": manifest["rows"],
                            f"token_shards/{source}_shards": len(manifest["shards"])}, 0)
    return manifest
