"""Data-parallel training with PyTorch's own engine on CPU (gloo, 2 processes under torchrun): DDP and FSDP2 give
the losses and parameters of one process on the same global batch; a killed 2-process run resumes from its
sharded (DCP) checkpoint into the same MLflow run and ends where an uninterrupted run ends; each rank trains on
a disjoint slice of every global batch."""

import os
import signal
import subprocess
import time

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from mot.cli import main
from mot.data.sequences import ImagePatches, collate_token_rows
from mot.grouping import MODALITIES, group_tokens
from mot.settings.chameleon import next_token_loss_sums
from mot.train.distributed import World, micro_batches
from tests.conftest import BIN, REPO

TRAIN = {"steps": 40, "batch_size": 8, "warmup_steps": 2, "log_every": 5, "eval_every": 20, "checkpoint_every": 5,
         "device": "cpu"}
CONFIG = {
    "study": "dist",
    "data": {"synthetic": {"n_train": 200, "n_val": 32, "n_test": 16, "image_size": 16}, "shard_size": 256},
    "tokenizers": {"text": {"vocab_size": 128}, "image_vq": {"codebook_size": 16, "hidden": 16, "code_dim": 8,
                                                             "steps": 10, "batch_size": 16}},
    "sequences": {"seq_len": 40, "max_caption_tokens": 16},
    "model": {"d_model": 16, "n_layers": 2, "n_heads": 2, "ffn_hidden": 32},
    "train": TRAIN,
    "eval": {"batch_size": 12, "over_training": {"steps": [20]}},
    "settings": {"chameleon": {"modalities": ["text", "image"], "runs": {
        "one": {"untie": ["attn", "ffn", "norm"]},
        "ddp": {"untie": ["attn", "ffn", "norm"], "train": {"parallel": "ddp", "gpus_per_node": 2, "grad_accum": 2}},
        "fsdp": {"untie": ["attn", "ffn", "norm"],
                 "train": {"parallel": "fsdp", "gpus_per_node": 2, "activation_checkpointing": True}},
    }}},
}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A tiny prepared study (tokens on disk) and the 1-process reference run, in this process."""
    root = tmp_path_factory.mktemp("dist")
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "results_dir": str(root / "results")}))
    threads = torch.get_num_threads()
    try:
        for stage in ("init-tracking", "data", "fit-tokenizers", "tokenize"):
            assert main([stage, "--config", str(path)]) == 0
        assert main(["train", "--config", str(path), "--setting", "chameleon", "--run", "one"]) == 0
    finally:
        torch.set_num_threads(threads)
    return path


def torchrun(config, run: str) -> subprocess.Popen:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen([str(BIN / "torchrun"), "--standalone", "--nproc-per-node=2", "-m", "mot", "--", "train",
                             "--config", str(config), "--setting", "chameleon", "--run", run],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def descendants(pid: int) -> list[int]:
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def finished(process: subprocess.Popen) -> str:
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 0, out[-3000:]
    return out


def run_dir(config, run):
    loaded = yaml.safe_load(config.read_text())
    return loaded["results_dir"] + f"/{loaded['study']}/chameleon/{run}/train"


def metrics(config, run) -> dict[str, list[tuple[int, float]]]:
    client = MlflowClient(tracking_uri=f"sqlite:///{yaml.safe_load(config.read_text())['results_dir']}/mlflow.db")
    run_id = open(f"{run_dir(config, run)}/mlflow_run_id").read().strip()
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
            for key in client.get_run(run_id).data.metrics}


def weights(config, run, name="final.pt") -> dict[str, torch.Tensor]:
    return torch.load(f"{run_dir(config, run)}/{name}", weights_only=False)["model"]


def assert_same_training(config, run, reference="one", tol=1e-5):
    got, want = metrics(config, run), metrics(config, reference)
    for key in ("train/loss", "train/loss_text", "train/loss_image", "val/loss_text", "val/loss_image"):
        assert [s for s, _ in got[key]] == [s for s, _ in want[key]], key
        for (step, a), (_, b) in zip(got[key], want[key]):
            assert a == pytest.approx(b, abs=tol), (key, step)
    for name in ("final.pt", "snapshots/step_0000020.pt"):
        a, b = weights(config, run, name), weights(config, reference, name)
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], atol=tol, rtol=0, msg=f"{name}: {key}")


def test_ddp_with_gradient_accumulation_equals_one_process_on_the_same_global_batch(study):
    finished(torchrun(study, "ddp"))
    assert_same_training(study, "ddp")


def test_fsdp_killed_after_a_checkpoint_resumes_into_one_mlflow_run_and_equals_one_process(study):
    checkpoints = f"{run_dir(study, 'fsdp')}/checkpoints"
    process = torchrun(study, "fsdp")
    deadline = time.time() + 240
    while not (os.path.isdir(checkpoints) and any(p.endswith(".dcp") for p in os.listdir(checkpoints))):
        assert process.poll() is None, "the run ended before it could be killed: " + process.stdout.read()[-2000:]
        assert time.time() < deadline
        time.sleep(0.05)
    for pid in [process.pid, *descendants(process.pid)]:  # preemption: torchrun and both ranks, no clean-up
        os.kill(pid, signal.SIGKILL)  # (torchrun starts each rank in a session of its own)
    process.wait()
    assert not os.path.exists(f"{run_dir(study, 'fsdp')}/final.pt")
    assert not os.path.exists(f"{run_dir(study, 'fsdp')}/complete")

    out = finished(torchrun(study, "fsdp"))
    assert "resumed from step_" in out and ".dcp" in out and "starting over" not in out
    assert sorted(os.listdir(checkpoints)) == ["step_0000035.dcp", "step_0000040.dcp"]  # train.keep_checkpoints: 2
    assert os.path.exists(f"{run_dir(study, 'fsdp')}/complete")

    client = MlflowClient(tracking_uri=f"sqlite:///{yaml.safe_load(study.read_text())['results_dir']}/mlflow.db")
    experiment = client.get_experiment_by_name("dist/chameleon").experiment_id
    assert [r.info.run_name for r in client.search_runs([experiment])].count("fsdp") == 1
    for key, points in metrics(study, "fsdp").items():
        steps = [s for s, _ in points]
        assert len(steps) == len(set(steps)), f"duplicated steps in {key}"
    assert_same_training(study, "fsdp")  # the same final loss and weights as the uninterrupted 1-process run


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    """The tiny study reading webdataset token shards in streams (text-only rows mixed in), and its 1-process run."""
    root = tmp_path_factory.mktemp("streamed")
    path = root / "config.yaml"
    chameleon = CONFIG["settings"]["chameleon"]
    config = {**CONFIG, "study": "streamed", "results_dir": str(root / "results"),
              "data": {**CONFIG["data"], "token_shard_rows": 40,
                       "text_only": {"n_train": 60, "n_val": 8, "sentences_per_doc": 2}},
              "sequences": {**CONFIG["sequences"], "sampling": "streams", "store": "shards", "streams": 4,
                            "mixture": {"image_text": 3, "text_only": 1}},
              "settings": {"chameleon": {**chameleon, "runs": {
                  "one": chameleon["runs"]["one"],
                  "ddp": {**chameleon["runs"]["ddp"], "train": {**chameleon["runs"]["ddp"]["train"], "data_workers": 2}},
              }}}}
    path.write_text(yaml.safe_dump(config))
    threads = torch.get_num_threads()
    try:
        for stage in ("init-tracking", "data", "text-data", "fit-tokenizers", "tokenize", "tokenize-text"):
            assert main([stage, "--config", str(path)]) == 0
        for source in ("image_text", "text_only"):
            assert main(["shard-tokens", "--config", str(path), "--source", source]) == 0
        assert main(["train", "--config", str(path), "--setting", "chameleon", "--run", "one"]) == 0
    finally:
        torch.set_num_threads(threads)
    return path


def test_ddp_ranks_streaming_their_own_rows_from_token_shards_equal_one_process(streamed):
    """Each rank builds only its rows of every global batch from the shards (counts summed over ranks), in 2 DataLoader
    workers taking turns by step: the same losses and weights as one process that builds whole batches itself."""
    shards = yaml.safe_load(streamed.read_text())["results_dir"] + "/streamed/tokens/shards"
    assert sorted(os.listdir(f"{shards}/image_text")) == ["manifest.json"] + [f"shard-{i:05d}.tar" for i in range(5)]
    finished(torchrun(streamed, "ddp"))
    got, want = metrics(streamed, "ddp"), metrics(streamed, "one")
    assert "val/loss_text_only" in got
    for key in ("train/loss", "train/loss_text", "train/loss_image", "val/loss_text", "val/loss_image",
                "perf/cum_flops"):
        assert [s for s, _ in got[key]] == [s for s, _ in want[key]], key
        for (step, a), (_, b) in zip(got[key], want[key]):
            assert a == pytest.approx(b, abs=1e-5, rel=1e-9), (key, step)
    a, b = weights(streamed, "ddp"), weights(streamed, "one")
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=0, msg=key)


def synthetic_batch(rows=8, seq=12, seed=0):
    """A host batch with text (< 20) and image (>= 20) tokens, and Transfusion-style latent patches at the
    image positions."""
    generator = torch.Generator().manual_seed(seed)
    sequences = [torch.randint(0, 40, (int(torch.randint(6, seq + 2, (1,), generator=generator)),),
                               generator=generator).numpy() for _ in range(rows)]
    batch = collate_token_rows(sequences, seq, pad=0, modality_of=lambda t: (t >= 20).long(),
                               group_of_modality=(0, 1, 0), n_groups=2)
    index = torch.nonzero(batch.input_modality.reshape(-1) == 1).squeeze(1)
    n = len(index)
    batch.image = ImagePatches(index, torch.randn(n, 3, generator=generator), torch.randn(n, 3, generator=generator),
                               torch.randint(0, 10, (n,), generator=generator),
                               torch.rand(n, generator=generator) < 0.5, 0)
    return batch


def test_each_rank_trains_on_a_disjoint_slice_and_the_slices_make_up_the_global_batch():
    batch = synthetic_batch()
    seq = batch.tokens.shape[1]
    parts = [p for rank in range(2) for p in micro_batches(batch, World(rank, 2), 2, (0, 1, 0), 2)]
    assert len(parts) == 4 and all(p.tokens.shape[0] == 2 for p in parts)
    torch.testing.assert_close(torch.cat([p.tokens for p in parts]), batch.tokens)  # disjoint, in order, complete
    torch.testing.assert_close(torch.cat([p.targets for p in parts]), batch.targets)
    for i, part in enumerate(parts):
        regrouped = group_tokens(part.input_modality, (0, 1, 0), 2)
        assert part.groups.sizes == regrouped.sizes and torch.equal(part.groups.perm, regrouped.perm)
        # the latent patches of a part are the global ones of its rows
        rows = torch.div(batch.image.index, seq, rounding_mode="floor")
        mine = (rows >= 2 * i) & (rows < 2 * i + 2)
        torch.testing.assert_close(part.image.index + 2 * i * seq, batch.image.index[mine])
        torch.testing.assert_close(part.image.clean, batch.image.clean[mine])
        assert part.image.n_noised == int(batch.image.noised[mine].sum())
        assert part.target_counts == tuple(c / 4 for c in batch.target_counts)


def test_averaged_accumulated_gradients_equal_the_global_batch_gradient():
    """Two ranks x two micro-batches, the ranks' gradients averaged (as DDP / FSDP2 do): the gradient of the global
    batch's token-weighted mean loss, however unevenly the targets fall into the parts."""
    batch = synthetic_batch(seed=1)
    weight = torch.randn(batch.tokens.shape[1], 40, requires_grad=True)

    def loss_of(b):
        logits = weight[None].expand(b.tokens.shape[0], -1, -1) * (1 + b.tokens[..., None].float() / 40)
        return next_token_loss_sums(logits, b)[0]

    (full,) = torch.autograd.grad(loss_of(batch), weight)
    ranks = []
    for rank in range(2):
        parts = micro_batches(batch, World(rank, 2), 2, (0, 1, 0), 2)
        ranks.append(sum(torch.autograd.grad(loss_of(p) / len(parts), weight)[0] for p in parts))
    torch.testing.assert_close((ranks[0] + ranks[1]) / 2, full)
    assert sum(batch.target_counts[m] for m in range(len(MODALITIES))) > 0
