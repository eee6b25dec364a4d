"""Sweep specifications: a YAML file (or the embedded default) expanded into design points.

A spec names a base hardware preset, the workloads and phases to run, and the axes to vary::

    name: my-sweep
    hardware: flexible-nm            # base preset name or a hardware file
    workloads: [llama2-7b, llama2-13b]
    phases:
      prefill: {seq: [2048]}          # every value may be a scalar or a list (crossed)
      decode: {batch: [16], kv_len: [2048]}
    axes:
      pattern: [2:4, 8:16]            # a sweepable hardware field and its values
      metadata:                       # a linked axis: each value sets several fields together
        - {encoding: rank, decoder: rank_pipeline}
        - {encoding: index, decoder: direct}
                                      # (metadata: all = every encoding x decoder pair)
    baseline: {pattern: dense, supported_patterns: []}   # each point's dense twin (speedup)
    skip_invalid: false               # true: drop combinations the hardware rejects

See docs/sweep.md for every field (masks, compression, evaluator).

Every problem in a spec is collected and reported at once (:class:`SpecError`); nothing runs on an
invalid spec. A design point is a plain JSON-able dict; its key is a hash of its canonical JSON, so
the same point always lands on the same row of the results store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from accel_sim.limits import MAX_BATCH, MAX_TOKENS, check_workload_parameters
from accel_sim.sweep.default_spec import DEFAULT_ACCURACY_REPORT, DEFAULT_SPEC_YAML
from accel_sim.sweep.evaluate import EVALUATORS, simulator_version
from accel_sim.yaml_io import MAX_BYTES, YamlError, load_yaml

TOP_LEVEL_KEYS = ("name", "evaluator", "hardware", "workloads", "phases", "axes", "baseline",
                  "skip_invalid", "masks", "compression", "energy_table")
REQUIRED_KEYS = ("hardware", "workloads", "phases", "axes")
# Which workload parameters each phase takes, and their defaults.
PHASE_PARAMETERS = {
    "prefill": {"seq": 2048, "batch": 1},
    "decode": {"batch": 1, "kv_len": 2048},
}
# Default cap on a spec's design points (``nmsim sweep --max-points``): 100,000 points validate
# in seconds, but at ~0.1-1 s of simulation each they already take hours to days on one machine.
MAX_POINTS = 100_000
# A spec's name becomes runs/NAME.sqlite and reports/NAME: a plain name, never a path.
NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,100}")


# An error message lists this many problems, each cut to this many characters (a spec can hold
# thousands of bad values; the message stays readable).
_MAX_LISTED_PROBLEMS = 10
_MAX_PROBLEM_CHARS = 400


class SpecError(ValueError):
    """An invalid sweep spec; ``problems`` lists every offending field."""

    def __init__(self, source: str, problems: list[str]):
        self.problems = problems
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        listed = "; ".join(p[:_MAX_PROBLEM_CHARS] for p in problems[:_MAX_LISTED_PROBLEMS])
        more = (f"; and {len(problems) - _MAX_LISTED_PROBLEMS} more"
                if len(problems) > _MAX_LISTED_PROBLEMS else "")
        super().__init__(f"invalid sweep spec {source} ({count}): {listed}{more}")


@dataclass(frozen=True)
class SweepSpec:
    """A validated spec: the cross product of ``axes`` x workloads x phase parameters."""

    name: str
    evaluator: str
    hardware: str
    workloads: tuple[str, ...]
    phases: dict[str, dict[str, tuple[int, ...]]]
    axes: dict[str, tuple]  # axis name -> values (scalars, or dicts of fields for linked axes)
    baseline: dict = field(default_factory=dict)
    skipped: tuple[str, ...] = ()  # combinations the hardware rejects, dropped by skip_invalid
    masks: dict | None = None
    compression: tuple[str, ...] = ()
    source: str = "<spec>"
    base_pattern: str = "dense"  # the base preset's pattern (points that do not override it)
    text: str = ""  # the spec's YAML, kept with each run in the results store
    hardware_digest: str = ""  # content_digest of the hardware file (part of every point key)
    energy_table: str | None = None  # energy reference table (None: the packaged default)
    energy_digest: str = ""  # its content_digest (part of every point key)

    def hardware_settings(self) -> list[dict]:
        """Every combination of the axes, as a dict of hardware field overrides."""
        skipped = set(self.skipped)
        return [hw for hw, _ in _combinations(self.axes)
                if not skipped or json.dumps(hw, sort_keys=True) not in skipped]

    def workload_settings(self) -> list[dict]:
        """Every (workload, phase, phase parameters) combination."""
        settings = []
        for workload in self.workloads:
            for phase, params in self.phases.items():
                names = list(params)
                for values in itertools.product(*(params[n] for n in names)):
                    settings.append({"workload": workload, "phase": phase,
                                     **dict(zip(names, values))})
        return settings

    def points(self) -> list[dict]:
        """All design points, baseline twins included (deduplicated, in a stable order)."""
        points: dict[str, dict] = {}
        hardware = self.hardware_settings()
        for work in self.workload_settings():
            for hw in hardware:
                point = self._point(hw, work)
                points.setdefault(point_key(point), point)
                if self.baseline:
                    twin = baseline_twin(point)
                    points.setdefault(point_key(twin), twin)
        return list(points.values())

    def _point(self, hw: dict, work: dict) -> dict:
        # Contents, not names: editing the hardware, a config.json or a mask folder makes new
        # points.
        hw, workload_fields = split_point_fields(hw)
        point = {"evaluator": self.evaluator, "hardware": self.hardware, "hw": hw, **work,
                 **workload_fields, "inputs": {"hardware": self.hardware_digest}}
        if is_config_json(work["workload"]):
            point["inputs"]["workload"] = content_digest(work["workload"])
        if self.evaluator == "accel_sim":  # results of another simulator version are not reused
            point["simulator"] = simulator_version()
        if self.baseline:
            point["baseline"] = dict(self.baseline)
        if self.energy_table:
            point["energy_table"] = self.energy_table
            point["inputs"]["energy_table"] = self.energy_digest
        if self.masks and work["workload"] == self.masks["workload"]:
            mask_file = self.masks["files"].get(str(hw.get("pattern", self.base_pattern)))
            if mask_file:
                point["masks"] = mask_file
                point["inputs"]["masks"] = self.masks["digests"][mask_file]
        return point


# Fields a linked axis may set beside hardware fields: what the workload runs on the design.
# ``salient``: the structured side-car pattern (e.g. "16:256") run on the salient lanes.
POINT_FIELDS = ("salient",)


def split_point_fields(fields: dict) -> tuple[dict, dict]:
    """(hardware fields, point fields) of an axis combination; a null point field is dropped."""
    hw = {k: v for k, v in fields.items() if k not in POINT_FIELDS}
    return hw, {k: v for k, v in fields.items() if k in POINT_FIELDS and v is not None}


def is_config_json(workload) -> bool:
    """Whether a spec's workload names a Hugging Face config.json rather than a built-in model."""
    return isinstance(workload, str) and workload.endswith(".json")


def _combinations(axes: dict[str, tuple]):
    """Yield (hardware overrides, [(axis, value index), ...]) for every combination of axes."""
    names = list(axes)
    for picks in itertools.product(*(range(len(axes[n])) for n in names)):
        hw: dict = {}
        for name, i in zip(names, picks):
            value = axes[name][i]
            hw.update(value if isinstance(value, dict) else {name: value})
        yield hw, list(zip(names, picks))


def point_key(point: dict) -> str:
    """A stable 32-hex-digit key: SHA-256 of the point's canonical JSON."""
    canonical = json.dumps(point, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def baseline_twin(point: dict) -> dict:
    """The point's dense twin: its hardware with the baseline overrides applied, running the
    uncompressed model (no mask file nor side-car: the twin is the dense reference for real
    masks and side-cars too)."""
    twin = {k: v for k, v in point.items() if k not in ("masks", *POINT_FIELDS)}
    if "inputs" in point:
        twin["inputs"] = {k: v for k, v in point["inputs"].items() if k != "masks"}
    return {**twin, "hw": {**point["hw"], **point.get("baseline", {})}}


def point_identity(point: dict) -> str:
    """The key of the point without its input digests: the same design on the same workload,
    whatever the contents of its files (a report keeps only the latest result of each)."""
    return point_key({k: v for k, v in point.items() if k != "inputs"})


def content_digest(path: str | Path) -> str:
    """16 hex digits of SHA-256 over a file's bytes, or over a folder's files (names and bytes)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()[:16]


def hardware_file(preset_or_path: str) -> Path:
    """The YAML file a spec's ``hardware`` names (a preset's file, or the path itself)."""
    from accel_sim.config import PRESET_DIR, PRESETS

    return PRESET_DIR / f"{preset_or_path}.yaml" if preset_or_path in PRESETS \
        else Path(preset_or_path)


def load_spec(path: str | Path | None = None, max_points: int = MAX_POINTS) -> SweepSpec:
    """Parse and validate a spec file (``None``: the embedded default)."""
    if path is None:
        return parse_spec(DEFAULT_SPEC_YAML, "<default>", max_points)
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no such sweep spec: {path}")
    if path.stat().st_size > MAX_BYTES:
        raise SpecError(str(path), [f"larger than {MAX_BYTES >> 20} MiB; refused"])
    return parse_spec(path.read_text(), str(path), max_points)


def parse_spec(text: str, source: str = "<spec>", max_points: int = MAX_POINTS) -> SweepSpec:
    """Parse YAML text and validate it, listing every problem in one :class:`SpecError`."""
    try:
        raw = load_yaml(text, "the spec")
    except YamlError as exc:
        raise SpecError(source, [str(exc).removeprefix("the spec: ")]) from None
    if not isinstance(raw, dict):
        raise SpecError(source, ["the spec must be a mapping of fields (name, hardware, ...)"])
    return _validate(raw, source, text, max_points)


def _validate_header(raw: dict, source: str, problems: list[str]) -> tuple:
    """Top-level keys, the spec's name and its evaluator."""
    problems += [f"{key}: unknown field (known: {', '.join(TOP_LEVEL_KEYS)})"
                 for key in raw if key not in TOP_LEVEL_KEYS]
    problems += [f"{key}: missing" for key in REQUIRED_KEYS if key not in raw]
    name = raw.get("name", source.strip("<>") if source.startswith("<") else Path(source).stem)
    if not (isinstance(name, str) and NAME_RE.fullmatch(name) and name not in (".", "..")):
        problems.append(f"name: must be a name of letters, digits, '.', '_' or '-' (not '.' "
                        f"or '..'; it names runs/NAME.sqlite and reports/NAME), got {name!r}")
    evaluator = raw.get("evaluator", "accel_sim")
    if not isinstance(evaluator, str) or evaluator not in EVALUATORS:
        problems.append(f"evaluator: unknown '{evaluator}' (choose {', '.join(EVALUATORS)})")
    return name, evaluator


def _validate_compression(raw: dict, source: str, problems: list[str]) -> tuple[str, ...]:
    """The perplexity reports to join: paths that exist; the default spec joins the committed
    whole-split report, found from the package (the report states it when missing, e.g. in an
    installed copy without reports/)."""
    compression = _as_list(raw.get("compression"))
    problems += [f"compression[{i}]: must be a file or folder path, got {p!r}"[:200]
                 for i, p in enumerate(compression) if not isinstance(p, str)]
    if source == "<default>":
        return (str(DEFAULT_ACCURACY_REPORT),)
    compression = tuple(p for p in compression if isinstance(p, str))
    problems += [f"compression[{i}]: no such file or folder {p}"
                 for i, p in enumerate(compression) if not _exists(p)]
    return compression


def _validate(raw: dict, source: str, text: str, max_points: int) -> SweepSpec:
    from accel_sim.config import SWEEPABLE_FIELDS, load_hardware

    problems: list[str] = []
    name, evaluator = _validate_header(raw, source, problems)

    base = None
    hardware = raw.get("hardware")
    if "hardware" in raw:
        try:
            base = load_hardware(str(hardware))
        except (ValueError, OSError) as exc:
            problems.append(f"hardware: {exc}")

    workloads = _as_list(raw.get("workloads"))
    if "workloads" in raw and not workloads:
        problems.append("workloads: must list at least one workload")
    problems += _workload_problems(workloads)

    phases = _validate_phases(raw.get("phases"), problems) if "phases" in raw else {}
    axes = (_validate_axes(raw.get("axes"), SWEEPABLE_FIELDS, problems)
            if "axes" in raw else {})
    count = point_count(axes, phases, workloads)
    if count > max_points:  # before the combination check, which would take as long
        problems.append(f"axes: {count:,} design points exceed the limit of {max_points:,} "
                        "(raise it with --max-points)")
        axes = {}

    baseline = raw.get("baseline") or {}
    if not isinstance(baseline, dict):
        problems.append("baseline: must be a mapping of hardware fields")
        baseline = {}
    else:
        baseline = _normalise_fields(baseline)
        _check_fields("baseline", baseline, base, SWEEPABLE_FIELDS, problems)

    masks = raw.get("masks")
    if masks is not None:
        masks = _validate_masks(masks, workloads, problems)
    compression = _validate_compression(raw, source, problems)

    skip_invalid = raw.get("skip_invalid", False)
    if not isinstance(skip_invalid, bool):
        problems.append(f"skip_invalid: must be true or false, got {skip_invalid!r}")
    invalid = []
    checkable = {axis: values for axis, values in axes.items()
                 if all(f in SWEEPABLE_FIELDS + POINT_FIELDS for v in values
                        for f in (v if isinstance(v, dict) else {axis: v}))}
    if base is not None and checkable:
        invalid = _check_combinations(checkable, baseline, base, skip_invalid is True, problems)
    energy_table = raw.get("energy_table")
    if energy_table is not None and base is not None and not problems:
        try:
            check_energy_table(str(energy_table), base, axes, baseline, invalid)
        except ValueError as exc:
            problems.append(f"energy_table: {exc}")
    if problems:
        raise SpecError(source, problems)
    return SweepSpec(name=name, evaluator=evaluator, hardware=str(hardware),
                     workloads=tuple(workloads), phases=phases, axes=axes, baseline=baseline,
                     masks=masks, compression=compression, source=source,
                     base_pattern=str(base.pattern), text=text,
                     hardware_digest=content_digest(hardware_file(str(hardware))),
                     skipped=tuple(json.dumps(hw, sort_keys=True) for hw in invalid),
                     energy_table=None if energy_table is None else str(energy_table),
                     energy_digest="" if energy_table is None else content_digest(energy_table))


def _workload_problems(workloads: list) -> list[str]:
    """Each workload must be a built-in model or a readable LLaMa-family config.json."""
    from workloads.models import ARCHITECTURES, get_arch

    problems = []
    for i, w in enumerate(workloads):
        if is_config_json(w):
            try:
                get_arch(w)
            except (ValueError, OSError) as exc:
                problems.append(f"workloads[{i}]: {exc}")
        elif not isinstance(w, str) or w not in ARCHITECTURES:
            problems.append(f"workloads[{i}]: unknown workload '{w}' (known: "
                            f"{', '.join(ARCHITECTURES)}, or a Hugging Face config.json path)")
    return problems


def _exists(path: str) -> bool:
    """Whether ``path`` exists; a name the OS cannot even look up (too long) does not."""
    try:
        return Path(path).exists()
    except (OSError, ValueError):
        return False


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _validate_phases(raw, problems: list[str]) -> dict[str, dict[str, tuple[int, ...]]]:
    if not isinstance(raw, dict) or not raw:
        problems.append(f"phases: must map phase names ({', '.join(PHASE_PARAMETERS)}) "
                        "to their parameters")
        return {}
    phases = {}
    for phase, params in raw.items():
        if phase not in PHASE_PARAMETERS:
            problems.append(f"phases.{phase}: unknown phase (choose "
                            f"{', '.join(PHASE_PARAMETERS)})")
            continue
        params = params or {}
        if not isinstance(params, dict):
            problems.append(f"phases.{phase}: must be a mapping such as "
                            f"{{{', '.join(PHASE_PARAMETERS[phase])}: ...}}")
            continue
        resolved = {}
        for pname, default in PHASE_PARAMETERS[phase].items():
            values = _as_list(params.get(pname, default))
            bad = []
            for v in values:
                try:
                    check_workload_parameters(**{pname: v})
                except ValueError:
                    bad.append(v)
            if not values or bad:
                bound = MAX_BATCH if pname == "batch" else MAX_TOKENS
                problems.append(f"phases.{phase}.{pname}: must be positive integers at most "
                                f"{bound}, got {params.get(pname)!r}")
            resolved[pname] = tuple(values)
        problems += [f"phases.{phase}.{k}: unknown parameter (known: "
                     f"{', '.join(PHASE_PARAMETERS[phase])})"
                     for k in params if k not in PHASE_PARAMETERS[phase]]
        phases[phase] = resolved
    return phases


def _validate_axes(raw, sweepable, problems: list[str]) -> dict[str, tuple]:
    if not isinstance(raw, dict) or not raw:
        problems.append("axes: must map at least one axis to a list of values")
        return {}
    axes = {}
    for axis, values in raw.items():
        values = _registry_values(axis, _as_list(values))
        if not values:
            problems.append(f"axes.{axis}: needs at least one value")
            continue
        linked = all(isinstance(v, dict) for v in values)
        if axis not in sweepable and not linked:
            problems.append(f"axes.{axis}: unknown axis: not a sweepable hardware field "
                            f"({', '.join(sweepable)}) nor a linked axis of field mappings")
            continue
        for i, value in enumerate(values):
            fields = value if isinstance(value, dict) else {axis: value}
            problems += [f"axes.{axis}[{i}].{f}: unknown hardware field (sweepable: "
                         f"{', '.join(sweepable)}; point fields: {', '.join(POINT_FIELDS)})"
                         for f in fields if f not in sweepable and f not in POINT_FIELDS]
        # " 2:4" and "2:4" are one design: patterns are compared in their canonical form.
        axes[axis] = tuple(_normalise_fields(v) if isinstance(v, dict)
                           else _normalise_fields({axis: v})[axis] for v in values)
    return axes


def _registry_values(axis: str, values: list) -> list:
    """``[all]`` on an ``encoding`` axis or a linked ``metadata`` axis: every registered
    encoding, or every (encoding, decoder) pair (the decoder registry,
    :data:`accel_sim.decoders.DECODER_MODELS`); other values as they are."""
    from accel_sim.config import DECODERS_FOR_ENCODING

    if values != ["all"] or axis not in ("encoding", "metadata"):
        return values
    if axis == "encoding":
        return list(DECODERS_FOR_ENCODING)
    return [{"encoding": encoding, "decoder": decoder}
            for encoding, decoders in DECODERS_FOR_ENCODING.items() for decoder in decoders]


def _normalise_fields(fields: dict) -> dict:
    """``fields`` with pattern values in canonical form (``" 2:4"`` -> ``"2:4"``); values that
    do not parse are left as they are for the hardware check to name."""
    from compression.formats import Pattern

    def canonical(value):
        if isinstance(value, str) and value.strip() != "dense":
            try:
                return str(Pattern.parse(value))
            except ValueError:
                return value
        return value.strip() if isinstance(value, str) else value

    out = dict(fields)
    if "pattern" in out:
        out["pattern"] = canonical(out["pattern"])
    if isinstance(out.get("supported_patterns"), list):
        out["supported_patterns"] = [canonical(v) for v in out["supported_patterns"]]
    return out


def point_count(axes: dict, phases: dict, workloads: list) -> int:
    """Design points before baseline twins: axis combinations x workload settings."""
    combos = math.prod(len(v) for v in axes.values()) if axes else 0
    settings = sum(math.prod(len(v) for v in params.values()) for params in phases.values())
    return combos * settings * len(workloads)


def _check_fields(where: str, fields: dict, base, sweepable, problems: list[str]) -> None:
    """Each field must be sweepable, and the base hardware must accept the values together."""
    unknown = [f for f in fields if f not in sweepable]
    for f in unknown:
        problems.append(f"{where}.{f}: unknown hardware field (sweepable: {', '.join(sweepable)})")
    if unknown or base is None:
        return
    try:
        base.replace(**fields)
    except ValueError as exc:
        label = f"{where}.{next(iter(fields))}" if len(fields) == 1 else where
        problems.append(f"{label}: {exc}")


def _validate_masks(raw, workloads: list, problems: list[str]) -> dict | None:
    """``{workload, dir, required, allow_partial}`` -> ``{workload, files: {pattern: folder},
    digests: {folder: content digest}}``."""
    keys = {"dir", "workload", "required", "allow_partial"}
    if not isinstance(raw, dict) or not {"dir", "workload"} <= set(raw) or not set(raw) <= keys:
        problems.append("masks: must be {workload: NAME, dir: PRUNE_OUTPUT_DIR(S), "
                        "required: true|false, allow_partial: true|false}")
        return None
    if raw["workload"] not in workloads:
        problems.append(f"masks.workload: '{raw['workload']}' is not one of the spec's workloads")
        return None
    try:
        files = find_mask_files(str(raw["dir"]))
        _check_mask_coverage(raw["workload"], files, raw.get("allow_partial") is True)
    except (ValueError, OSError) as exc:
        problems.append(f"masks.dir: {exc}")
        return None
    if not files and raw.get("required", True):
        problems.append(f"masks.dir: no prune output with compressed layers in {raw['dir']} "
                        "or its subfolders (expected `nmsim prune --out DIR` output folders)")
    return {"workload": raw["workload"], "files": files, "digests": _digests(files)}


def _check_mask_coverage(workload: str, files: dict[str, str], allow_partial: bool) -> None:
    """Each mask folder must cover every decoder-layer weight of ``workload`` (or be allowed
    not to: the rest then run uniform N:M, counted in each result's ``uniform_weights``)."""
    from accel_sim.workload_io import check_coverage
    from compression.prune_output import covered_weights
    from workloads.models import gemms

    layer_gemms = gemms(workload, "decode", per_layer=True)
    for folder in sorted(set(files.values())):
        check_coverage(layer_gemms, covered_weights(folder), allow_partial, where=folder)


def find_mask_files(folder: str | Path) -> dict[str, str]:
    """Pattern -> prune output folder with compressed layers, for ``folder`` and one level below."""
    from compression.prune_output import INDEX_FILE, bulk_pattern

    folder = Path(folder)
    found = {}
    for index in sorted([folder / INDEX_FILE, *folder.glob(f"*/{INDEX_FILE}")]):
        if not index.is_file():
            continue
        try:
            pattern = bulk_pattern(index.parent)
        except ValueError as exc:  # FormatError is a ValueError
            raise ValueError(f"masks: {index.parent} is not a readable prune output ({exc})"
                             ) from None
        if pattern is not None:
            found.setdefault(pattern, str(index.parent))
    return found


# Cap on how many invalid axis combinations one error message names.
_MAX_LISTED_COMBINATIONS = 5


def _check_combinations(axes: dict, baseline: dict, base, skip_invalid: bool,
                        problems: list[str]) -> list[dict]:
    """Try every design on the base hardware; return the invalid combinations.

    A value that no combination accepts is a problem of that value (``axes.AXIS[i]``). Values
    valid one by one may still clash together (a ROM decoder and 16:32): such combinations are a
    problem unless ``skip_invalid`` drops them.
    """
    invalid, usable, first_error = [], set(), {}
    for hw, picks in _combinations(axes):
        try:
            check_design(base, hw)
            if baseline:
                base.replace(**{**split_point_fields(hw)[0], **baseline})
        except ValueError as exc:
            invalid.append((hw, picks, str(exc)))
            for pick in picks:
                first_error.setdefault(pick, str(exc))
            continue
        usable.update(picks)
    never = set(first_error) - usable
    order = {axis: n for n, axis in enumerate(axes)}
    for axis, i in sorted(never, key=lambda pick: (order[pick[0]], pick[1])):
        value = axes[axis][i]
        try:
            check_design(base, value if isinstance(value, dict) else {axis: value})
            why = f"accepted by no combination of the other axes ({first_error[(axis, i)]})"
        except ValueError as exc:
            why = str(exc)
        problems.append(f"axes.{axis}[{i}]: {why}")
    clashes = [(hw, why) for hw, picks, why in invalid if not set(picks) & never]
    if clashes and not skip_invalid:
        listed = "; ".join(f"{hw}: {why}" for hw, why in clashes[:_MAX_LISTED_COMBINATIONS])
        more = (f" (and {len(clashes) - _MAX_LISTED_COMBINATIONS} more)"
                if len(clashes) > _MAX_LISTED_COMBINATIONS else "")
        problems.append(f"axes: {len(clashes)} combination(s) the hardware rejects - link the "
                        f"axes that depend on each other, or set skip_invalid: true: "
                        f"{listed}{more}")
    return [hw for hw, _, _ in invalid]

def check_design(base, fields: dict):
    """The base hardware with ``fields`` applied; a side-car needs a pattern and salient lanes."""
    from compression.formats import Pattern

    hw_fields, point_fields = split_point_fields(fields)
    hw = base.replace(**hw_fields)
    salient = point_fields.get("salient")
    if salient is not None:
        Pattern.parse(str(salient))
        if hw.salient_lanes < 1:
            raise ValueError(f"salient {salient}: the design has no salient lanes "
                             "(salient_lanes 0)")
    return hw


def with_masks(spec: SweepSpec, folder: str | Path, workload: str | None = None,
               allow_partial: bool = False) -> SweepSpec:
    """The spec with its real-mask workload fed from ``folder`` (prune output folders)."""
    workload = workload or (spec.masks or {}).get("workload") or "smollm2-135m"
    if workload not in spec.workloads:
        raise ValueError(f"--masks: workload '{workload}' is not in spec {spec.name} "
                         f"({', '.join(spec.workloads)})")
    files = find_mask_files(folder)
    if not files:
        raise ValueError(f"--masks: no prune output with compressed layers in {folder} or its "
                         "subfolders")
    _check_mask_coverage(workload, files, allow_partial)
    return dataclasses.replace(spec, masks={"workload": workload, "files": files,
                                            "digests": _digests(files)})


def check_energy_table(path: str, base, axes: dict, baseline: dict, invalid=()) -> None:
    """Raise unless the energy table at ``path`` prices every design of the sweep (each
    distinct dtype / decoder / pattern set is checked once)."""
    from accel_sim.energy import check_table, load_table

    table = load_table(path)
    skipped = [json.dumps(hw, sort_keys=True) for hw in invalid]
    seen = set()
    for hw, _ in _combinations(axes):
        for fields in (hw, {**hw, **baseline}) if baseline else (hw,):
            if json.dumps(fields, sort_keys=True) in skipped:
                continue
            design = base.replace(**fields)
            key = (design.dtype, design.decoder_kind, design.encoding, design.supported,
                   design.process_nm, design.template)
            if key not in seen:
                seen.add(key)
                check_table(table, design)


def with_energy_table(spec: SweepSpec, path: str | Path) -> SweepSpec:
    """The spec priced with the energy table at ``path`` (``sweep --energy-table``)."""
    from accel_sim.config import load_hardware

    skipped = [json.loads(hw) for hw in spec.skipped]
    check_energy_table(str(path), load_hardware(spec.hardware), spec.axes, spec.baseline,
                       skipped)
    return dataclasses.replace(spec, energy_table=str(path),
                               energy_digest=content_digest(path))


def _digests(files: dict[str, str]) -> dict[str, str]:
    """Content digest of each mask folder, by folder."""
    return {folder: content_digest(folder) for folder in set(files.values())}
