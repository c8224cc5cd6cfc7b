"""A config is checked as a whole before any job runs; errors name the file and the key."""

import pytest
import yaml

from mot.config import ConfigError, find_run, run_specs
from mot.config.load import load_config
from mot.config.inputs import run_fingerprint
from tests.conftest import REPO, snakemake

UNTUNED = REPO / "configs" / "experiments" / "tiny_untuned.yaml"  # the default until issue 23


def write(tmp_path, content: dict, name="bad.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(content))
    return path


def base():
    return yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())


def test_default_and_smoke_configs_are_valid():
    for name in ("pipeline.yaml", "smoke.yaml"):
        config = load_config([REPO / "configs" / name])
        assert {s.name for s in run_specs(config)} >= {"dense", "mot"}


def test_defaults_are_filled_and_run_overrides_only_what_they_name(tmp_path):
    config = base()
    config["settings"]["chameleon"]["model"] = {"d_model": 48}
    config["settings"]["chameleon"]["runs"]["mot"]["model"] = {"n_layers": 3}
    loaded = load_config([write(tmp_path, config)])
    mot, dense = find_run(loaded, "chameleon", "mot"), find_run(loaded, "chameleon", "dense")
    assert (mot.model["d_model"], mot.model["n_layers"]) == (48, 3)
    assert (dense.model["d_model"], dense.model["n_layers"]) == (48, 2)
    assert loaded["train"]["grad_clip"] == 1.0  # schema default
    assert loaded["train"]["eval_samples"] is None  # the in-training curve on the whole val split unless set


def test_seeds_most_specific_wins_and_names_follow_each_runs_seed_count(tmp_path):
    config = base()
    config["seeds"] = [0]
    config["settings"]["chameleon"]["seeds"] = [0, 1]
    config["settings"]["chameleon"]["runs"]["mot"]["seeds"] = [0, 1, 2]
    config["settings"]["chameleon"]["runs"]["moe4x"]["seeds"] = [7]
    specs = run_specs(load_config([write(tmp_path, config)]), "chameleon")
    assert sorted((s.name, s.base_name, s.seed) for s in specs) == [
        ("dense-s0", "dense", 0), ("dense-s1", "dense", 1),                # the setting's seeds
        ("moe4x", "moe4x", 7),                                             # one seed: the plain name
        ("mot-s0", "mot", 0), ("mot-s1", "mot", 1), ("mot-s2", "mot", 2)]  # the run's own
    del config["settings"]["chameleon"]["seeds"]
    specs = run_specs(load_config([write(tmp_path, config)]), "chameleon")
    assert [s.name for s in specs if s.base_name == "dense"] == ["dense"]  # the study's single seed


def test_tiny_seeds_is_the_default_study_with_three_seeds_where_comparisons_hinge():
    default = load_config([UNTUNED])  # the default study its runs were measured on (lr 1e-3, ε-prediction)
    seeded = load_config([UNTUNED, REPO / "configs" / "experiments" / "tiny_seeds.yaml"])
    assert seeded["study"] == "tiny_seeds"
    for section in ("data", "tokenizers", "model", "train", "sequences", "diffusion", "eval", "report"):
        assert seeded[section] == default[section], f"tiny_seeds.yaml: {section} differs from tiny_untuned.yaml"
    hinge = {"dense", "mot", "mot-shared_attn", "mot-shared_ffn", "mot-shared_norm",
             "merge-text_image", "merge-text_speech", "merge-image_speech"}
    for setting, setting_cfg in default["settings"].items():
        runs = {name: {k: v for k, v in run.items() if k != "seeds"}
                for name, run in seeded["settings"][setting]["runs"].items()}
        assert runs == setting_cfg["runs"], setting
        seeds = {}
        for spec in run_specs(seeded, setting):
            seeds.setdefault(spec.base_name, []).append(spec.seed)
        # dense and mot run the seeds the setting's declared claims need where that is more than 3 (tiny_seeds.yaml:
        # chameleon's image claim 6, chameleon_speech's speech claim 5, from `mot power`)
        declared = max(c["seeds"] for c in seeded["claims"] if c["setting"] == setting)
        sized = {"dense": declared, "mot": declared} if declared > 3 else {}
        assert (setting, declared) in {("chameleon", 6), ("chameleon_speech", 5), ("transfusion", 3)}
        assert {name: len(s) for name, s in seeds.items()} == {
            name: sized.get(name, 3 if name in hinge else 1) for name in runs}


def test_seeded_run_name_clashing_with_another_run_is_rejected(tmp_path):
    config = base()
    config["settings"]["chameleon"]["runs"]["mot"]["seeds"] = [0, 1]
    config["settings"]["chameleon"]["runs"]["mot-s1"] = {"untie": ["ffn"]}
    path = write(tmp_path, config)
    with pytest.raises(ConfigError, match=rf"^{path}: settings\.chameleon\.runs\.mot-s1\.seeds: run 'mot-s1' .* "
                                          r"named 'mot-s1', like a seed of run 'mot'"):
        load_config([path])


def test_unknown_key_names_file_and_key_path(tmp_path):
    config = base()
    config["model"]["d_modle"] = 64
    path = write(tmp_path, config)
    with pytest.raises(ConfigError, match=rf"^{path}: model\.d_modle: unknown key \(expected one of: .*d_model"):
        load_config([path])


def test_wrong_type_names_file_and_key_path(tmp_path):
    config = base()
    config["train"]["steps"] = "many"
    path = write(tmp_path, config)
    with pytest.raises(ConfigError, match=rf"^{path}: train\.steps: expected integer, got str 'many'"):
        load_config([path])


def test_error_points_at_the_file_that_set_the_key(tmp_path):
    override = write(tmp_path, {"settings": {"chameleon": {"runs": {"mot": {"untie": ["atn"]}}}}}, "override.yaml")
    with pytest.raises(ConfigError, match=rf"^{override}: settings\.chameleon\.runs\.mot\.untie\[0\]: expected one of"):
        load_config([REPO / "configs" / "smoke.yaml", override])


def test_malformed_config_stops_snakemake_before_any_job(tmp_path):
    config = base()
    config["results_dir"] = str(tmp_path / "results")
    config["model"]["d_modle"] = 64
    path = write(tmp_path, config)
    result = snakemake("-n", "--cores", "1", "--configfile", str(path))
    assert result.returncode != 0
    assert f"{path}: model.d_modle: unknown key" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_dry_run_plans_every_stage_in_order(smoke_config):
    result = snakemake("-n", "--cores", "1", "--configfile", str(smoke_config))
    assert result.returncode == 0, result.stderr
    counts = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and not parts[0].endswith(":"):
            counts[parts[0]] = int(parts[1])
    # 3 settings: chameleon (3 runs), transfusion (2) and chameleon_speech (3), each with its report
    assert counts == {"init_tracking": 1, "data": 1, "fit_tokenizers": 1, "tokenize": 1, "fit_clip": 1,
                      "fid_reference": 1, "speech_data": 1, "fit_speech_units": 1, "fit_image_vae": 1,
                      "fid_random": 3, "train": 8, "evaluate": 8, "report": 3, "all": 1, "total": 32}
    graph = snakemake("--rulegraph", "--configfile", str(smoke_config)).stdout
    labels = {line.split("[")[0].strip(): line.split('label = "')[1].split('"')[0]
              for line in graph.splitlines() if "label = " in line}
    edges = {(labels[a.strip()], labels[b.strip().rstrip(";")])
             for line in graph.splitlines() if "->" in line for a, b in [line.split("->")]}
    for upstream, downstream in [("data", "fit_tokenizers"), ("fit_tokenizers", "tokenize"), ("tokenize", "train"),
                                 ("train", "evaluate"), ("evaluate", "report"), ("init_tracking", "data"),
                                 ("data", "fit_clip"), ("fit_clip", "fid_reference"), ("fid_reference", "fid_random"),
                                 ("tokenize", "fid_random"), ("fid_random", "evaluate"),
                                 ("data", "speech_data"), ("speech_data", "fit_speech_units"),
                                 ("fit_tokenizers", "fit_speech_units"), ("fit_speech_units", "train"),
                                 ("data", "fit_image_vae"), ("fit_image_vae", "train")]:
        assert (upstream, downstream) in edges


# --- every kind of bad config stops with one line naming the file, the key path and the expectation

def modified(change):
    config = base()
    change(config)
    return config


BAD_CONFIGS = {
    "unknown key": (lambda c: c["train"].update(stpes=3), r"train\.stpes: unknown key"),
    "wrong type": (lambda c: c["model"].update(n_layers=2.5), r"model\.n_layers: expected integer"),
    "out of range": (lambda c: c["data"].update(max_bad_fraction=1.5), r"data\.max_bad_fraction: 1\.5 is greater than"),
    "heads do not divide d_model": (lambda c: c["model"].update(n_heads=3),
                                    r"settings\.chameleon\.runs\.dense\.model\.n_heads: d_model=32 must be divisible by n_heads=3"),
    "unknown component (architecture)": (lambda c: c["settings"]["chameleon"]["runs"]["mot"].update(untie=["attention"]),
                                         r"settings\.chameleon\.runs\.mot\.untie\[0\]: expected one of \['attn', 'ffn', 'norm'\]"),
    "unknown modality in a merge": (lambda c: c["settings"]["chameleon"]["runs"]["mot"].update(groups=[["text"], ["audio"]]),
                                    r"settings\.chameleon\.runs\.mot\.groups\[1\]\[0\]: expected one of \['text', 'image', 'speech'\]"),
    "modality outside the setting": (lambda c: c["settings"]["chameleon"]["runs"]["mot"].update(groups=[["text"], ["speech"]]),
                                     r"settings\.chameleon\.runs\.mot\.groups: modality 'speech' is not in this setting"),
    "MoE subset on a shared FFN": (lambda c: c["settings"]["chameleon"]["runs"].update(moe4x={"untie": [], "moe": {"modalities": ["text"]}}),
                                   r"settings\.chameleon\.runs\.moe4x\.moe\.modalities: a shared FFN is an MoE"),
    "missing data path": (lambda c: c["data"].update(source="coco", coco={"train_json": "/nonexistent/a.json", "train_images": "/tmp",
                                                                           "val_json": "/tmp", "val_images": "/tmp"}),
                          r"data\.coco\.train_json: path '/nonexistent/a\.json' does not exist"),
    "empty seeds": (lambda c: c.update(seeds=[]), r"seeds: \[\] should be non-empty"),
    "empty seeds of a run": (lambda c: c["settings"]["chameleon"]["runs"]["mot"].update(seeds=[]),
                             r"settings\.chameleon\.runs\.mot\.seeds: \[\] should be non-empty"),
    "repeated seed of a setting": (lambda c: c["settings"]["chameleon"].update(seeds=[1, 1]),
                                   r"settings\.chameleon\.seeds: .*non-unique"),
    "unknown setting": (lambda c: c["settings"].update(flamingo={"modalities": ["text"], "runs": {"dense": {}}}),
                        r"settings\.flamingo: unknown setting \(expected one of: chameleon, chameleon_speech, transfusion, "
                        r"or `module:` naming your setting's module\)"),
    "setting module without an objective": (
        lambda c: c["settings"].update(flamingo={"module": "mot.grouping", "modalities": ["text"], "runs": {"dense": {}}}),
        r"settings\.flamingo\.module: module 'mot\.grouping' has no OBJECTIVE"),
    "setting module that is not there": (
        lambda c: c["settings"].update(flamingo={"module": "my_lab.flamingo", "modalities": ["text"],
                                                 "runs": {"dense": {}}}),
        r"settings\.flamingo\.module: no module 'my_lab\.flamingo'"),
    "bad run name": (lambda c: c["settings"]["chameleon"]["runs"].update({"My Run": {}}), r"settings\.chameleon\.runs"),
    "unknown feature extractor": (lambda c: c["eval"].update(fid_extractor="dinov2"),
                                  r"eval\.fid_extractor: expected one of \['tiny_clip', 'inception'\], got 'dinov2'"),
    "setting with the wrong modalities": (lambda c: c["settings"]["transfusion"].update(modalities=["text", "image", "speech"]),
                                          r"settings\.transfusion\.modalities: expected \['text', 'image'\] for the transfusion setting"),
    "speech sequences without speech": (lambda c: c["settings"]["chameleon"].update(sequences={"mixture": {"speech_only": 0.5}}),
                                        r"settings\.chameleon\.sequences\.mixture\.speech_only: the chameleon setting draws no speech_only sequences "
                                        r"\(its kinds: image_text, text_only\); expected weight 0"),
    "empty mixture": (lambda c: c["sequences"].update(mixture={"image_text": 0}),
                      r"settings\.chameleon\.sequences\.mixture: at least one sequence kind"),
    "unknown sequence kind": (lambda c: c["settings"]["chameleon_speech"].update(sequences={"mixture": {"video": 1}}),
                              r"settings\.chameleon_speech\.sequences\.mixture\.video: unknown key"),
    "text-only rows in transfusion": (lambda c: c["settings"]["transfusion"].update(sequences={"seq_len": 48, "mixture": {"text_only": 1}}),
                                      r"settings\.transfusion\.sequences\.mixture\.text_only: the transfusion setting draws no text_only "
                                      r"sequences \(its kinds: image_text\)"),
    "text-only import without a path": (lambda c: (c["data"].update(text_only={"source": "jsonl"}),
                                                   c["settings"]["chameleon"].update(sequences={"mixture": {"text_only": 1}})),
                                        r"data\.text_only\.path: required when data\.text_only\.source is jsonl"),
    "text-only import path missing": (lambda c: (c["data"].update(text_only={"source": "folder", "path": "/nonexistent/corpus"}),
                                                 c["settings"]["chameleon"].update(sequences={"mixture": {"text_only": 1}})),
                                      r"data\.text_only\.path: path '/nonexistent/corpus' does not exist"),
    "unknown text-only source": (lambda c: c["data"].update(text_only={"source": "web"}),
                                 r"data\.text_only\.source: expected one of \['synthetic', 'folder', 'jsonl'\]"),
    "token shards without streams": (lambda c: c["settings"]["chameleon"].update(sequences={"store": "shards"}),
                                     r"settings\.chameleon\.sequences\.store: store: shards reads rows in streams; expected sampling: streams"),
    "streams in transfusion": (lambda c: c["settings"]["transfusion"].update(sequences={"seq_len": 48, "sampling": "streams"}),
                               r"settings\.transfusion\.sequences\.sampling: the transfusion setting draws no streams; expected iid"),
    "streams that do not cut the batch": (lambda c: c["settings"]["chameleon"].update(sequences={"sampling": "streams", "streams": 5}),
                                          r"settings\.chameleon\.sequences\.streams: run dense's train\.batch_size \d+ is not a multiple of the 5 streams"),
    "unknown routing": (lambda c: c["settings"]["chameleon"]["runs"].update(moe4x={"moe": {"routing": "top2"}}),
                        r"settings\.chameleon\.runs\.moe4x\.moe\.routing: expected one of \['top1', 'expert_choice'\]"),
}


@pytest.mark.parametrize("kind", list(BAD_CONFIGS))
def test_bad_config_kind_gives_one_line_error(tmp_path, kind):
    change, message = BAD_CONFIGS[kind]
    path = write(tmp_path, modified(change))
    with pytest.raises(ConfigError) as err:
        load_config([path])
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(f"{path}: ")
    assert __import__("re").search(message, text), text


def test_duplicate_run_name_is_rejected(tmp_path):
    path = tmp_path / "dup.yaml"
    text = (REPO / "configs" / "smoke.yaml").read_text()
    path.write_text(text.replace("      mot: {arch: mot", "      dense: {arch: dense}\n      mot: {arch: mot"))
    with pytest.raises(ConfigError, match=rf"^{path}: line \d+: duplicate key 'dense'$"):
        load_config([path])


def test_not_a_mapping_and_missing_file(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config([path])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config([tmp_path / "nope.yaml"])


# --- text-only data in the mixture ---------------------------------------------------------------------

def test_text_only_weight_zero_keeps_every_fingerprint_and_a_weight_adds_the_text_data_to_its_setting_only(tmp_path):
    default = load_config([REPO / "configs" / "smoke.yaml"])
    fingerprints = {(s.setting, s.name): run_fingerprint(default, s) for s in run_specs(default)}
    spelled = base()
    spelled["sequences"]["mixture"] = {"text_only": 0.0}
    spelled["data"]["text_only"] = {"n_train": 5}  # unused: no setting draws text-only rows
    loaded = load_config([write(tmp_path, spelled)])
    assert {(s.setting, s.name): run_fingerprint(loaded, s) for s in run_specs(loaded)} == fingerprints

    mixed = base()
    mixed["settings"]["chameleon"]["sequences"] = {"mixture": {"text_only": 0.5}}
    loaded = load_config([write(tmp_path, mixed)])
    changed = {(s.setting, s.name) for s in run_specs(loaded) if run_fingerprint(loaded, s) != fingerprints[(s.setting, s.name)]}
    assert changed == {("chameleon", name) for name in ("dense", "mot", "moe4x")}
    mixed["data"]["text_only"] = {"sentences_per_doc": 6}
    again = load_config([write(tmp_path, mixed)])
    assert all(run_fingerprint(again, find_run(again, "chameleon", n)) != run_fingerprint(loaded, find_run(loaded, "chameleon", n))
               for n in ("dense", "mot"))


def test_iid_sampling_from_memory_and_data_workers_keep_every_fingerprint_and_streams_change_their_setting_only(tmp_path):
    default = load_config([REPO / "configs" / "smoke.yaml"])
    fingerprints = {(s.setting, s.name): run_fingerprint(default, s) for s in run_specs(default)}
    spelled = base()
    spelled["sequences"].update(sampling="iid", store="memory", streams=16)
    spelled["train"]["data_workers"] = 3
    spelled["data"]["token_shard_rows"] = 77  # read only by streams
    loaded = load_config([write(tmp_path, spelled)])
    assert {(s.setting, s.name): run_fingerprint(loaded, s) for s in run_specs(loaded)} == fingerprints

    streamed = base()
    streamed["settings"]["chameleon"]["sequences"] = {"sampling": "streams", "streams": 4}
    loaded = load_config([write(tmp_path, streamed)])
    changed = {s.setting for s in run_specs(loaded) if run_fingerprint(loaded, s) != fingerprints[(s.setting, s.name)]}
    assert changed == {"chameleon"}
    streamed["data"]["token_shard_rows"] = 50  # the streams' shards: another sampler
    again = load_config([write(tmp_path, streamed)])
    assert run_fingerprint(again, find_run(again, "chameleon", "mot")) != run_fingerprint(loaded, find_run(loaded, "chameleon", "mot"))


def test_text_data_and_its_tokenization_are_planned_only_when_a_mixture_draws_text_only_rows(tmp_path):
    def planned(config):
        config["results_dir"] = str(tmp_path / "results")
        result = snakemake("-n", "--cores", "1", "--configfile", str(write(tmp_path, config)))
        assert result.returncode == 0, result.stderr
        return {line.split()[0]: int(line.split()[1]) for line in result.stdout.splitlines()
                if len(line.split()) == 2 and line.split()[1].isdigit() and not line.split()[0].endswith(":")}

    assert "text_data" not in planned(base()) and "tokenize_text" not in planned(base())
    mixed = base()
    mixed["settings"]["chameleon"]["sequences"] = {"mixture": {"text_only": 0.5}}
    counts = planned(mixed)
    assert (counts["text_data"], counts["tokenize_text"]) == (1, 1)


def test_tiny_mixture_is_the_default_chameleon_study_at_three_text_image_ratios_one_study_each():
    default = load_config([UNTUNED])
    experiments = REPO / "configs" / "experiments"
    studies = [load_config([experiments / "tiny_mixture.yaml", *extra]) for extra in
               ([], [experiments / "tiny_mixture-1to1.yaml"], [experiments / "tiny_mixture-2to1.yaml"])]
    assert len({s["study"] for s in studies}) == 3  # one results/{study}/ and one report per ratio
    for study in studies:
        for section in ("model", "train", "eval", "report"):
            assert study[section] == default[section], f"tiny_mixture: {section} differs from tiny_untuned.yaml"
        assert {k: v for k, v in study["sequences"].items() if k != "mixture"} == {
            k: v for k, v in default["sequences"].items() if k != "mixture"}
        assert study["data"]["synthetic"] == default["data"]["synthetic"]
        assert list(study["settings"]) == ["chameleon"]
        runs = study["settings"]["chameleon"]["runs"]
        assert runs == {name: default["settings"]["chameleon"]["runs"][name] for name in ("dense", "mot")}
        assert sorted(s.name for s in run_specs(study)) == [f"{r}-s{i}" for r in ("dense", "mot") for i in range(3)]
    weights = [s["settings"]["chameleon"]["sequences"]["mixture"]["text_only"] for s in studies]
    assert weights[0] == 0 and 0 < weights[1] < weights[2] < 1


def test_tiny_long_is_the_lr_sweeps_study_four_times_longer_at_each_architectures_pick():
    experiments = REPO / "configs" / "experiments"
    sweep, long = (load_config([experiments / name]) for name in ("tiny_lr.yaml", "tiny_long.yaml"))
    for section in ("data", "tokenizers", "sequences", "model"):
        assert long[section] == sweep[section], section
    assert long["train"]["steps"] == 4 * sweep["train"]["steps"]
    assert long["train"]["warmup_steps"] == 4 * sweep["train"]["warmup_steps"]
    assert long["train"]["checkpoint_every"] == 4 * sweep["train"]["checkpoint_every"]
    runs = long["settings"]["chameleon"]["runs"]
    assert runs["dense"]["train"]["lr"] == sweep["settings"]["chameleon"]["runs"]["dense-lr4e-3"]["train"]["lr"]
    assert runs["mot"]["train"]["lr"] == sweep["settings"]["chameleon"]["runs"]["mot-lr2e-3"]["train"]["lr"]
    assert [c["seeds"] for c in long["claims"]] == [5, 5] == [len(long["seeds"])] * 2


def test_a_transfusion_run_changes_its_own_diffusion_section_only(tmp_path):
    from mot.settings import objective_for
    default = load_config([REPO / "configs" / "smoke.yaml"])
    fingerprints = {(s.setting, s.name): run_fingerprint(default, s) for s in run_specs(default)}
    changed = base()
    changed["settings"]["transfusion"]["runs"]["mot-eps"] = {"arch": "mot", "untie": ["attn", "ffn", "norm"],
                                                             "diffusion": {"prediction": "epsilon", "loss_weight": 1.0}}
    loaded = load_config([write(tmp_path, changed)])
    after = {(s.setting, s.name): run_fingerprint(loaded, s) for s in run_specs(loaded)}
    assert {k: v for k, v in after.items() if k != ("transfusion", "mot-eps")} == fingerprints  # the others keep theirs
    run = find_run(loaded, "transfusion", "mot-eps")
    assert after[("transfusion", "mot-eps")] != fingerprints[("transfusion", "mot")]
    own = objective_for(loaded, "transfusion", run).dcfg
    assert (own["prediction"], own["loss_weight"]) == ("epsilon", 1.0)
    assert own["ddim_steps"] == loaded["diffusion"]["ddim_steps"]  # the rest is the study's section
    study = objective_for(loaded, "transfusion", find_run(loaded, "transfusion", "mot")).dcfg
    assert (study["prediction"], study["loss_weight"]) == ("v_prediction", loaded["diffusion"]["loss_weight"])

    changed["settings"]["chameleon"]["runs"]["dense"]["diffusion"] = {"loss_weight": 1.0}
    path = write(tmp_path, changed)
    with pytest.raises(ConfigError, match=rf"^{path}: settings\.chameleon\.runs\.dense\.diffusion: the chameleon "
                                          r"setting reads no diffusion section .*expected no diffusion on its runs"):
        load_config([path])


@pytest.mark.parametrize("name,setting", [("tiny_lr-speech.yaml", "chameleon_speech"),
                                          ("tiny_lr-transfusion.yaml", "transfusion"),
                                          ("tiny_transfusion-objective.yaml", "transfusion")])
def test_the_other_settings_studies_are_the_default_setting_with_only_their_documented_changes(name, setting):
    default = load_config([UNTUNED])
    study = load_config([REPO / "configs" / "experiments" / name])
    assert list(study["settings"]) == [setting]
    for section in ("data", "tokenizers", "sequences", "model", "report"):
        assert study[section] == default[section], section
    assert {k: v for k, v in study["train"].items() if k != "lr"} == {k: v for k, v in default["train"].items() if k != "lr"}
    assert {k: v for k, v in study["eval"].items() if k not in ("split", "over_training")} == {
        k: v for k, v in default["eval"].items() if k not in ("split", "over_training")}
    ours, theirs = study["settings"][setting], default["settings"][setting]
    assert ours.get("sequences") == theirs.get("sequences") and ours.get("train") == theirs.get("train")
    changed = {k: v for k, v in study["diffusion"].items() if v != default["diffusion"][k]}
    assert changed == ({"prediction": "v_prediction"} if name == "tiny_lr-transfusion.yaml" else {})
    assert {s.seed for s in run_specs(study)} == set(study["seeds"])
    for claim in study["claims"]:  # declared at the seeds every run has
        assert claim["setting"] == setting and claim["seeds"] == len(study["seeds"])


@pytest.mark.parametrize("setting,sweep,picks", [
    ("chameleon", "tiny_lr.yaml", {"dense": "dense-lr4e-3", "mot": "mot-lr2e-3"}),
    ("chameleon_speech", "tiny_lr-speech.yaml", {"dense": "dense-lr4e-3", "mot": "mot-lr2e-3"}),
    ("transfusion", "tiny_lr-transfusion.yaml", {"dense": "dense-lr2e-3", "mot": "mot-lr1e-3"}),
])
def test_the_defaults_dense_and_mot_train_as_the_lr_sweeps_picks(setting, sweep, picks):
    """The default study's dense and mot are each lr sweep's picks (README "The default, from the evidence"): the
    same run config (names and study apart), data, tokenizers, sequences and objective as the sweep's seed-0 run,
    so the default's one seed reproduces the sweep's seed 0."""
    from mot.config.inputs import run_inputs

    def trained_as(config, spec):  # what the run's fingerprint hashes, less its names and kept snapshots
        inputs = {k: v for k, v in run_inputs(config, spec).items() if k != "snapshots"}
        inputs["run"] = {k: v for k, v in inputs["run"].items() if k not in ("study", "run")}
        return inputs

    default = load_config([REPO / "configs" / "pipeline.yaml"])
    study = load_config([REPO / "configs" / "experiments" / sweep])
    for name, pick in picks.items():
        ours = next(s for s in run_specs(default, setting) if s.name == name)
        theirs = next(s for s in run_specs(study, setting) if s.base_name == pick and s.seed == ours.seed)
        assert trained_as(default, ours) == trained_as(study, theirs), (setting, name, pick)
    assert default["diffusion"]["prediction"] == "v_prediction"  # the objective whose samples follow their prompts
