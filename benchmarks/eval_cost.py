"""What the in-training validation pass (`train.eval_every`) costs beside training, at a config's size.

    python benchmarks/eval_cost.py                                  # configs/pipeline.yaml, dense and mot
    python benchmarks/eval_cost.py --config configs/smoke.yaml --runs mot --samples 1024 256

Random tokens of the study's shapes (64 image codes + a caption per sequence, seq_len from the config)
go through the Chameleon objective's real batch builder, model, loss, optimizer and validation loss; train steps and validation
passes over the first n val samples are interleaved so that machine noise hits them alike. Prints the
median time of one train step and of one validation pass, and what evaluating every k steps adds to
training (one pass per k steps) for a few k.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from mot.config import find_run
from mot.config.load import load_config
from mot.data.sequences import TokenizedSplit
from mot.settings.chameleon import ChameleonObjective
from mot.train.optim import build_optimizer, lr_at
from mot.vocabulary import Vocabulary


class RandomTokensChameleon(ChameleonObjective):
    """The Chameleon objective (sequences, loss, validation loss) over given random splits, no files."""

    def __init__(self, config: dict, setting: str, vocab: Vocabulary, splits: dict[str, TokenizedSplit]):
        super().__init__(config, setting)
        self._vocab, self._splits = vocab, splits


def random_split(n: int, image_tokens: int, codes: int, text_size: int, max_caption: int, rng) -> TokenizedSplit:
    lengths = rng.integers(6, max_caption + 1, size=(n, 5))
    captions = np.full((n, 5, max_caption), -1, dtype=np.int64)
    for i in range(n):
        for slot in range(5):
            captions[i, slot, : lengths[i, slot]] = rng.integers(5, text_size, size=lengths[i, slot])
    return TokenizedSplit(rng.integers(0, codes, size=(n, image_tokens)), captions, lengths, np.arange(n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/pipeline.yaml")
    parser.add_argument("--setting", default="chameleon")
    parser.add_argument("--runs", nargs="+", default=["dense", "mot"])
    parser.add_argument("--samples", nargs="+", type=int, default=[1024, 512, 256],
                        help="validation samples per pass (the val split has data.synthetic.n_val)")
    parser.add_argument("--repeats", type=int, default=5, help="validation passes per size")
    parser.add_argument("--train-steps", type=int, default=20, help="train steps between validation passes")
    parser.add_argument("--every", nargs="+", type=int, default=[100, 50, 30, 20])
    args = parser.parse_args()

    config = load_config([args.config])
    seq_len = ChameleonObjective(config, args.setting).seq_len
    image_tokens = (config["data"]["synthetic"]["image_size"] // config["tokenizers"]["image_vq"]["downsample"]) ** 2
    codes, text_size = config["tokenizers"]["image_vq"]["codebook_size"], config["tokenizers"]["text"]["vocab_size"]
    vocab = Vocabulary(text_size=text_size, image_codes=codes, pad=0, bos=1, eos=2, boi=3, eoi=4)
    rng = np.random.default_rng(0)
    max_caption = config["sequences"]["max_caption_tokens"]
    train_split = random_split(4096, image_tokens, codes, text_size, max_caption, rng)
    val_split = random_split(max(args.samples), image_tokens, codes, text_size, max_caption, rng)
    print(f"config {args.config}: seq_len {seq_len}, {image_tokens} image tokens, eval batch "
          f"{config['eval']['batch_size']}, train batch per run below, torch threads per run below")
    objective = RandomTokensChameleon(config, args.setting, vocab, {"train": train_split, "val": val_split})
    for name in args.runs:
        run = find_run(config, args.setting, name)
        train_cfg = run.train
        torch.set_num_threads(train_cfg["threads"])
        torch.manual_seed(0)
        model = objective.build_model(run)
        train_data, val_data = objective.sequences("train", model), objective.sequences("val", model)
        optimizer = build_optimizer(model, train_cfg)
        step_counter = iter(range(10**9))

        def train_step() -> float:
            step = next(step_counter)
            t0 = time.perf_counter()
            batch = train_data.train_batch(step, train_cfg["batch_size"], 0)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, train_cfg)
            loss, _ = objective.loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg["grad_clip"])
            optimizer.step()
            return time.perf_counter() - t0

        def eval_pass(n: int) -> float:
            t0 = time.perf_counter()
            objective.validation_loss(model, val_data.eval_batches(config["eval"]["batch_size"], limit=n), "cpu",
                                      run.modalities)
            return time.perf_counter() - t0

        for _ in range(5):  # warm-up
            train_step()
        eval_pass(min(args.samples))
        step_times, eval_times = [], {n: [] for n in args.samples}
        for _ in range(args.repeats):
            for n in args.samples:
                step_times += [train_step() for _ in range(args.train_steps)]
                eval_times[n].append(eval_pass(n))
        step_s = statistics.median(step_times)
        print(f"\n{args.setting}/{name}: batch {train_cfg['batch_size']}, threads {train_cfg['threads']}, "
              f"{train_cfg['steps']} steps; train step {step_s * 1e3:.1f} ms (median of {len(step_times)})")
        print("| val samples | pass (s) | pass / train step | " + " | ".join(f"every {k}" for k in args.every) + " |")
        print("|---|---|---|" + "---|" * len(args.every))
        for n in args.samples:
            pass_s = statistics.median(eval_times[n])
            overheads = " | ".join(f"{pass_s / (k * step_s):.1%}" for k in args.every)
            print(f"| {n} | {pass_s:.2f} | {pass_s / step_s:.1f} | {overheads} |")


if __name__ == "__main__":
    main()
