"""An experiment YAML (experiments/ablations.yaml, ...): its header checked as a whole, and one
Job per run and seed with the profile applied, in the order a sweep runs them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dped.config import Config, ConfigError, project_root, read_yaml_file
from dped.runs import run_name


@dataclass(frozen=True)
class Job:
    name: str  # <run>-s<seed>
    preset: str
    overrides: dict
    config: Config
    reverts: str = ""  # what the run takes back from the experiment's baseline (report label)


def load_experiment(path: str | Path, profile: str) -> tuple[dict, list[Job]]:
    """The experiment's header and one Job per run and seed, with the profile applied, in the
    order they run."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no experiment file at {path}: give experiments/<name>.yaml")
    spec = read_yaml_file(path)
    problems = experiment_problems(spec, profile, Path(path))
    if problems:  # every problem at once, one line each, before any run starts
        raise ConfigError("\n".join(f"{path}: {p}" for p in problems))
    keys, notes = profile_keys(spec["profiles"][profile])
    spec = {**spec, "profile": profile, "profile_keys": keys, "profile_notes": notes}
    jobs = []
    # Run by run, the baseline first, every seed of a run together: a sweep stopped part way
    # (a budget, a lost machine) leaves whole runs with their spread over seeds, and every
    # effect needs the baseline's.
    runs = sorted(spec["runs"].items(), key=lambda item: item[0] != spec.get("baseline"))
    for run, given in runs:
        for seed in run_seeds(spec, run):
            settings = dict(given)
            preset = settings.pop("preset")
            reverts = settings.pop("reverts", "")
            name = run_name(run, seed)
            # A run's own keys win over the profile's: the change a run exists to make
            # (no pre-training, say) survives a profile that scales that key for every run.
            overrides = {**keys, **settings, "seed": seed, "name": name}
            try:
                config = Config.from_dict({"preset": preset, **overrides})
            except ConfigError as err:
                raise ConfigError(f"{path}: run '{run}': {err}") from None
            jobs.append(Job(name, preset, overrides, config, reverts))
    return spec, jobs


def run_seeds(spec: dict, run: str) -> list[int]:
    """The seeds `run` trains with under the spec's profile: the experiment's `seeds`, or for
    its baseline `baseline_seeds` where the profile has them (more seeds of the one run every
    effect is measured against: its spread over seeds is the headline's and the yardstick of
    whether its curve has flattened; effects pair the seeds both runs have)."""
    profile = spec["profile"]
    more = spec.get("baseline_seeds") or {}
    if run == spec.get("baseline") and more.get(profile):
        return list(more[profile])
    return list(spec["seeds"][profile])


def experiment_problems(spec, profile: str, path: Path) -> list[str]:
    """What makes an experiment YAML unusable as a whole (each problem one line): the shape of
    `runs`, `seeds` and `profiles`, and whether `baseline` (and `baseline_from`) name runs."""
    if not isinstance(spec, dict):
        kind = "nothing" if spec is None else f"a {type(spec).__name__}"
        return [f"expected a mapping with name, runs, seeds and profiles, got {kind}"]
    problems = [f"'{k}' is missing" for k in ("name", "runs", "seeds", "profiles") if k not in spec]
    runs, seeds, profiles = spec.get("runs"), spec.get("seeds"), spec.get("profiles")
    if "runs" in spec and (not isinstance(runs, dict) or not runs):
        problems.append(f"runs: expected a mapping of run name -> settings, got {runs!r}")
        runs = {}
    for run, settings in (runs or {}).items():
        if not isinstance(settings, dict) or "preset" not in settings:
            problems.append(f"run '{run}': expected a mapping with a preset, got {settings!r}")
    if isinstance(profiles, dict) and profile not in profiles:
        problems.append(
            f"unknown profile '{profile}': expected one of {', '.join(map(str, profiles))}"
        )
    elif "profiles" in spec and not isinstance(profiles, dict):
        problems.append(f"profiles: expected a mapping of profile -> config keys, got {profiles!r}")
    chosen = seeds.get(profile) if isinstance(seeds, dict) else None
    if "seeds" in spec and not (
        isinstance(chosen, list) and chosen and all(type(s) is int for s in chosen)
    ):
        problems.append(f"seeds: {profile}: expected a list of integer seeds, got {chosen!r}")
    elif chosen and len(set(chosen)) < len(chosen):
        problems.append(f"seeds: {profile}: a seed is given twice in {chosen}")
    problems += _baseline_seeds_problems(spec, profile, chosen)
    for key in ("compare", "held_longer"):  # other sweeps the report sets beside this one
        if key in spec and not (
            isinstance(spec[key], dict) and all(isinstance(v, str) for v in spec[key].values())
        ):
            problems.append(f"{key}: expected profile -> results folder, got {spec[key]!r}")
    baseline = spec.get("baseline")
    source = spec.get("baseline_from")
    if source:
        other = path.parent / f"{source}.yaml"
        other_runs = read_yaml_file(other).get("runs", {}) if other.is_file() else None
        if other_runs is None:
            problems.append(f"baseline_from: no experiment {other}")
        elif baseline not in other_runs:
            problems.append(f"baseline: '{baseline}' is not a run of {other}")
    elif baseline is not None and runs and baseline not in runs:
        problems.append(f"baseline: '{baseline}' is not one of the runs ({', '.join(runs)})")
    return problems


def _baseline_seeds_problems(spec: dict, profile: str, seeds) -> list[str]:
    if "baseline_seeds" not in spec:
        return []
    more = spec["baseline_seeds"]
    given = more.get(profile) if isinstance(more, dict) else None
    if not isinstance(more, dict) or (
        given is not None and not (given and all(type(s) is int for s in given))
    ):
        return [f"baseline_seeds: expected profile -> list of integer seeds, got {more!r}"]
    if given is None:
        return []
    if spec.get("baseline_from"):
        return [
            f"baseline_seeds: the baseline's runs belong to {spec['baseline_from']}: set them there"
        ]
    if len(set(given)) < len(given):
        return [f"baseline_seeds: {profile}: a seed is given twice in {given}"]
    missing = [s for s in seeds or [] if s not in given]
    if missing:  # every effect pairs a run's seed with the baseline's
        return [f"baseline_seeds: {profile}: {given} lacks seeds {missing} the other runs use"]
    return []


def profile_keys(profile: dict | str | None) -> tuple[dict, str]:
    """A profile's config keys and its notes: a mapping given in the experiment (no notes), or
    a config YAML named by its path (experiments/cpu.yaml: one file for every experiment's
    profile and for `make data`), whose preset and name are the runs' own, and whose leading
    comment says how it differs from full scale."""
    if not isinstance(profile, str):
        return dict(profile or {}), ""
    path = project_root() / profile
    if not path.is_file():
        raise ConfigError(f"profile {profile}: no such config file ({path})")
    text = path.read_text()
    Config.from_yaml(path)  # a mistake in it is reported against that file
    keys = {k: v for k, v in read_yaml_file(path).items() if k not in ("preset", "name")}
    comments = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        comments.append(line[1:].removeprefix(" "))
    return keys, "\n".join(comments)
