import pytest
import torch

from mot.models.diffusion import (
    DiffusionSchedule,
    cfg_combine,
    ddim_sample,
    ddim_scheduler,
    patchify,
    squared_error_per_token,
    timestep_embedding,
    tokens_per_image,
    unpatchify,
    validation_grid,
)

PREDICTIONS = ["epsilon", "v_prediction"]


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


# --- patch tokens ----------------------------------------------------------------------------


@pytest.mark.parametrize("patch", [1, 2, 4])
def test_patchify_and_unpatchify_are_exact_inverses(patch):
    latents = torch.randn(3, 4, 8, 8)
    patches = patchify(latents, patch)
    assert patches.shape == (3, tokens_per_image((4, 8, 8), patch), 4 * patch * patch)
    assert torch.equal(unpatchify(patches, patch, 4, 8, 8), latents)
    tokens = torch.randn(3, 64 // patch**2, 4 * patch * patch)
    assert torch.equal(patchify(unpatchify(tokens, patch, 4, 8, 8), patch), tokens)


def test_patchify_orders_patches_row_major_and_keeps_each_patch_together():
    latents = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    patches = patchify(latents, 2)
    # second patch = top-right 2x2 block: channel 0 values first, then channel 1
    assert patches[0, 1].tolist() == [2, 3, 6, 7, 18, 19, 22, 23]


def test_patchify_rejects_a_grid_the_patch_does_not_divide():
    with pytest.raises(ValueError, match="not divisible"):
        patchify(torch.zeros(1, 4, 6, 6), 4)


# --- forward process and loss ----------------------------------------------------------------


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_loss_is_zero_when_the_model_predicts_the_true_target(prediction):
    schedule = DiffusionSchedule(prediction=prediction)
    x0, noise = torch.randn(6, 4, 8, 8), torch.randn(6, 4, 8, 8)
    t = schedule.sample_timesteps(6, torch.Generator().manual_seed(0))
    x_t = schedule.add_noise(x0, noise, t)
    alpha_bar = schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
    truth = noise if prediction == "epsilon" else alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0
    assert torch.allclose(schedule.target(x0, noise, t), truth, atol=1e-6)
    assert torch.allclose(x_t, alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise, atol=1e-6)
    assert torch.equal(schedule.loss_per_image(truth, schedule.target(x0, noise, t)), torch.zeros(6))
    assert torch.allclose(schedule.predicted_x0(x_t, truth, t), x0, atol=1e-3)


def test_loss_per_image_is_the_mean_of_the_per_token_errors():
    pred, target = torch.randn(3, 16, 16), torch.randn(3, 16, 16)
    per_token = squared_error_per_token(pred, target)
    assert per_token.shape == (3, 16)
    assert torch.allclose(DiffusionSchedule.loss_per_image(pred, target), per_token.mean(1))
    assert torch.allclose(DiffusionSchedule.loss_per_image(pred, target), (pred - target).pow(2).mean((1, 2)))


def test_training_example_is_reproducible_and_consistent():
    schedule = DiffusionSchedule(prediction="v_prediction")
    x0 = torch.randn(5, 4, 8, 8)
    x_t, t, target = schedule.training_example(x0, torch.Generator().manual_seed(3))
    again = schedule.training_example(x0, torch.Generator().manual_seed(3))
    assert torch.equal(x_t, again[0]) and torch.equal(t, again[1]) and torch.equal(target, again[2])
    assert t.dtype == torch.long and 0 <= int(t.min()) and int(t.max()) < 1000
    assert torch.allclose(schedule.predicted_x0(x_t, target, t), x0, atol=1e-4)


def test_schedule_rejects_unknown_prediction_and_schedule():
    with pytest.raises(ValueError, match="prediction"):
        DiffusionSchedule(prediction="x0")
    with pytest.raises(ValueError, match="beta_schedule"):
        DiffusionSchedule(beta_schedule="cosine")


# --- validation grid -------------------------------------------------------------------------


def test_validation_grid_is_fixed_and_covers_the_schedule_evenly():
    timesteps, noise = validation_grid(20, (4, 8, 8), n_timesteps=8, seed=0)
    again_t, again_noise = validation_grid(20, (4, 8, 8), n_timesteps=8, seed=0)
    assert torch.equal(timesteps, again_t) and torch.equal(noise, again_noise)
    assert noise.shape == (20, 4, 8, 8) and timesteps.shape == (20,)
    assert timesteps[:8].tolist() == [62, 187, 312, 437, 562, 687, 812, 937]
    assert torch.equal(timesteps[8:16], timesteps[:8]), "the grid is cycled over the images"
    assert not torch.equal(validation_grid(20, (4, 8, 8), seed=1)[1], noise)


# --- sampling --------------------------------------------------------------------------------


def perfect_predictor(schedule: DiffusionSchedule, x0: torch.Tensor):
    """The model output that maps any x_t back to x0 exactly, from alphas_cumprod."""
    def predict(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha_bar = schedule.alphas_cumprod[t].to(x_t.dtype).view(-1, 1, 1, 1)
        eps = (x_t - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()
        if schedule.prediction == "epsilon":
            return eps
        return alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * x0
    return predict


@pytest.mark.parametrize("beta_schedule", ["squaredcos_cap_v2", "linear"])
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("steps", [8, 50])
def test_ddim_with_a_perfect_predictor_returns_the_data(prediction, beta_schedule, steps):
    schedule = DiffusionSchedule(beta_schedule=beta_schedule, prediction=prediction)
    x0 = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    sample = ddim_sample(perfect_predictor(schedule, x0), x0.shape, schedule, steps,
                         torch.Generator().manual_seed(0))
    assert (sample - x0).abs().max() < 1e-4


def test_ddim_default_spacing_starts_from_pure_noise_for_v_and_near_it_for_epsilon():
    v_first = int(ddim_scheduler(DiffusionSchedule(prediction="v_prediction"), 25).timesteps[0])
    eps_first = int(ddim_scheduler(DiffusionSchedule(prediction="epsilon"), 25).timesteps[0])
    assert v_first == 999 and 950 < eps_first < 999


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_is_deterministic_for_a_generator(eta):
    schedule = DiffusionSchedule()
    predict = lambda x, t: 0.5 * x + timestep_embedding(t, 4)[:, :, None, None]  # noqa: E731
    def sample(seed: int) -> torch.Tensor:
        return ddim_sample(predict, (2, 4, 4, 4), schedule, 10, torch.Generator().manual_seed(seed), eta=eta)
    assert torch.equal(sample(0), sample(0))
    assert not torch.equal(sample(0), sample(1))


def test_cfg_combine_interpolates_and_extrapolates():
    cond, uncond = torch.tensor([3.0]), torch.tensor([1.0])
    assert cfg_combine(cond, uncond, 0.0).item() == 1.0
    assert cfg_combine(cond, uncond, 1.0).item() == 3.0
    assert cfg_combine(cond, uncond, 5.0).item() == 11.0


# --- timestep embedding ----------------------------------------------------------------------


@pytest.mark.parametrize("dim", [64, 33])
def test_timestep_embedding_shape_range_and_distinctness(dim):
    t = torch.arange(0, 1000, 37)
    embedding = timestep_embedding(t, dim)
    assert embedding.shape == (len(t), dim) and embedding.dtype == torch.float32
    assert float(embedding.abs().max()) <= 1.0
    distances = torch.cdist(embedding, embedding) + torch.eye(len(t)) * 1e9
    assert float(distances.min()) > 0.1, "distinct timesteps must get distinct embeddings"
    assert torch.equal(timestep_embedding(torch.tensor([5, 5]), dim)[0], timestep_embedding(torch.tensor([5]), dim)[0])
