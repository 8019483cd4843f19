"""The DeepSpeed JSON of a run: which one (the run config's ``deepspeed`` or the one accelerate
launch was given), its "auto" values filled from the run config, and what it must not say
(a precision other than the run's, ZeRO-3 saves without gathered weights). ``distributed``
builds the accelerator from it; this module reads files and the environment only.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from amazon_sft.config import RunConfig
from amazon_sft.errors import UserError

if TYPE_CHECKING:
    from amazon_sft.distributed import BatchPlan

DS_CONFIG_DIR = Path(__file__).resolve().parents[1] / "ds_configs"


def deepspeed_name(cfg: RunConfig) -> str | None:
    """``deepspeed`` of the run config, else the config accelerate launch was given."""
    return cfg.deepspeed or os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")


def deepspeed_config_path(cfg: RunConfig) -> Path | None:
    """The DeepSpeed JSON from the run config, else the one accelerate launch was given."""
    name = deepspeed_name(cfg)
    if not name or name == "none":
        return None
    path = Path(name)
    if not path.suffix:
        path = DS_CONFIG_DIR / f"{name}.json"
    if path.is_dir():
        raise UserError(f"deepspeed config {name!r} is a folder: give the JSON file in it")
    if not path.is_file():
        raise UserError(
            f"deepspeed config {name!r} not found: use zero2, zero3, zero3_offload or a JSON path"
        )
    return path


OBJECT_SECTIONS = ("zero_optimization", "bf16", "fp16", "optimizer", "scheduler")
"""The sections of a DeepSpeed JSON that are objects ({"enabled": ...}, {"stage": ...}): a
``"bf16": true`` was passed over by the precision check, a ``"zero_optimization": "3"`` was an
AttributeError traceback."""

_EXAMPLE = {
    "zero_optimization": '"stage": 3',
    "bf16": '"enabled": "auto"',
    "fp16": '"enabled": false',
}


def read_deepspeed_json(path: Path) -> dict:
    """The DeepSpeed JSON at ``path``, as an object whose sections are objects; else one line."""
    try:
        ds = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise UserError(
            f"{path} is not UTF-8 (byte 0x{err.object[err.start]:02x} at {err.start}): save it "
            "as UTF-8"
        ) from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON: {err}") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read it ({err.strerror})") from None
    if not isinstance(ds, dict):
        raise UserError(
            f"{path} is not a JSON object of DeepSpeed settings (it holds a "
            f"{type(ds).__name__}): start from ds_configs/zero2.json or zero3.json"
        )
    for section in OBJECT_SECTIONS:
        if section in ds and not isinstance(ds[section], dict):
            raise UserError(
                f"{path}: {section} must be an object ({section}: {json.dumps(ds[section])}), "
                f'such as "{section}": {{{_EXAMPLE.get(section, "...")}}}'
            )
    return ds


MIN_DEEPSPEED = "0.19.3"
"""The oldest DeepSpeed training may run on (pyproject.toml asks for it too): up to 0.19.1 the
engine's ``module.bfloat16()`` cast RoPE's inv_freq buffer to bf16 (DeepSpeed #8066; rotations
off by up to 1.5 at position 2047 for Mistral's head size and theta, silently, and inference then
ran the fp32 ones), and up to 0.19.2 every LoRA + ZeRO-3 run failed at its first backward, the
chunked loss's checkpointed call of the tied head recomputed as an empty shard (DeepSpeed #8148).
Neither shows on CPU, where no GPU runs DeepSpeed's bf16 engine: enforced here instead."""


def check_deepspeed_version() -> None:
    from packaging.version import Version

    try:
        import deepspeed
    except ImportError as err:
        raise UserError(
            f"this accelerate config runs DeepSpeed, which is not installed ({err}): "
            f"pip install 'deepspeed>={MIN_DEEPSPEED}', or launch with a config without DeepSpeed "
            "(launch/accelerate/single_gpu.yaml, multi_gpu.yaml)"
        ) from None

    if Version(deepspeed.__version__) < Version(MIN_DEEPSPEED):
        raise UserError(
            f"deepspeed {deepspeed.__version__} is older than {MIN_DEEPSPEED}, which training "
            "needs (older ones cast RoPE's frequencies to bf16, and fail LoRA under ZeRO-3): "
            f"pip install 'deepspeed>={MIN_DEEPSPEED}'"
        )


def fill_deepspeed_config(
    path: Path, cfg: RunConfig, plan: BatchPlan, precision: str | None
) -> dict:
    """The DeepSpeed config with every "auto" filled from the run config (``precision`` None:
    bf16/fp16 left as they are), on a DeepSpeed new enough (``MIN_DEEPSPEED``)."""
    ds = read_deepspeed_json(path)  # before the version: a bad file is said without deepspeed
    check_deepspeed_version()
    filled = {
        "train_micro_batch_size_per_gpu": plan.micro_batch_size,
        "gradient_accumulation_steps": plan.accumulation_steps,
        "train_batch_size": plan.global_batch_size,
        "gradient_clipping": cfg.train.max_grad_norm,
    }
    for key, value in filled.items():
        if ds.get(key, "auto") == "auto":
            ds[key] = value
        elif ds[key] != value:
            raise UserError(
                f'{path}: {key}={ds[key]} disagrees with the run config ({value}); set it to "auto"'
            )
    if precision is not None:
        _fill_precision(ds, path, precision)
    _check_zero3_saves(ds, path)
    return ds


def refuse_one_process_launch(accelerate_yaml: str, world_size: int) -> None:
    """An accelerate config of ``distributed_type: NO`` starts one process whatever
    ``--num_processes`` says: a job of ``world_size`` > 1 would run one lone process a node, each
    training by itself into the same out_dir (``--check-world`` said N processes could run)."""
    kind = read_accelerate_yaml(accelerate_yaml).get("distributed_type")
    if world_size > 1 and kind == "NO":
        raise UserError(
            f"--accelerate-config {accelerate_yaml} starts one process (distributed_type: "
            f"NO), not the {world_size} of this launch: use "
            "launch/accelerate/multi_gpu.yaml, zero2.yaml or zero3.yaml"
        )


def deepspeed_json_of(accelerate_yaml: str) -> str | None:
    """The DeepSpeed JSON an accelerate config names (``deepspeed_config.deepspeed_config_file``),
    read as accelerate reads it; None for a config without one. A config that turns DeepSpeed on
    marks the environment as ``accelerate launch`` would (``ACCELERATE_USE_DEEPSPEED``), so
    ``check_for_world`` sees what a rank will."""
    loaded = read_accelerate_yaml(accelerate_yaml)
    ds = loaded.get("deepspeed_config")
    name = ds.get("deepspeed_config_file") if isinstance(ds, dict) else None
    if loaded.get("distributed_type") == "DEEPSPEED":
        os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"  # as accelerate launch tells each rank
    return str(name) if name else None


def read_accelerate_yaml(accelerate_yaml: str) -> dict:
    """The accelerate config as a mapping, else one line naming the file (not UTF-8, not YAML,
    or not a mapping of accelerate's settings)."""
    import yaml

    where = f"--accelerate-config {accelerate_yaml}"
    try:
        loaded = yaml.safe_load(Path(accelerate_yaml).read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise UserError(f"{where} is not UTF-8 (byte at {err.start}): save it as UTF-8") from None
    except (OSError, yaml.YAMLError) as err:
        raise UserError(f"{where}: cannot read it ({err})") from None
    if not isinstance(loaded, dict):
        raise UserError(
            f"{where} is not a mapping of accelerate settings: start from launch/accelerate/"
        )
    return loaded


NO_DEEPSPEED_UNDER_DEEPSPEED = (
    "deepspeed=none asks for no DeepSpeed, but the accelerate config launches DeepSpeed: launch "
    "with launch/accelerate/multi_gpu.yaml (single_gpu.yaml on one card), or drop deepspeed=none"
)


INLINE_DEEPSPEED = (
    "the accelerate config turns DeepSpeed on without a deepspeed_config_file (its own "
    "zero_stage: ..., as `accelerate config` writes): give deepspeed=zero2|zero3|zero3_offload "
    "or a JSON path, or launch with launch/accelerate/zero2.yaml / zero3.yaml"
)
"""accelerate then builds DeepSpeed from its own few settings, and prepare() stopped in a
ValueError about train_micro_batch_size_per_gpu after the model had loaded."""


def _fill_precision(ds: dict, path: Path, precision: str) -> None:
    """bf16/fp16 "enabled" from the run's precision; an explicit value that disagrees is refused
    (a JSON saying bf16 trained in bf16 while config.yaml, and what resume compares, said fp32)."""
    run = "bf16" if precision == "bf16" else "fp32"
    for section, enabled in (("bf16", precision == "bf16"), ("fp16", False)):
        block = ds.get(section)
        if not isinstance(block, dict):
            continue
        value = block.get("enabled", False)
        if value == "auto":
            block["enabled"] = enabled
        elif _as_bool(value) != enabled:
            raise UserError(
                f"{path}: {section}.enabled={json.dumps(value)} disagrees with the run's precision "
                f'({run}: train.precision={{auto,bf16,fp32}}); set it to "auto"'
            )


def _as_bool(value) -> bool:
    """A JSON flag as DeepSpeed's config reads it (pydantic: "false" and "0" are False)."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "t", "yes", "y", "on")
    return bool(value)


def _check_zero3_saves(ds: dict, path: Path) -> None:
    """ZeRO-3 keeps each weight in pieces across ranks: the final save gathers them only when
    the JSON says so, else accelerate's get_state_dict raises there, after the whole run."""
    zero = ds.get("zero_optimization")
    if not isinstance(zero, dict) or zero.get("stage") != 3:
        return
    names = (
        "stage3_gather_16bit_weights_on_model_save",
        "stage3_gather_fp16_weights_on_model_save",
    )
    # "auto": accelerate fills it from this variable (a YAML's zero3_save_16bit_model sets it)
    from_env = os.environ.get("ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL", "false")
    given = [zero[name] for name in names if name in zero]
    if not any(from_env.lower() == "true" if v == "auto" else _as_bool(v) for v in given):
        raise UserError(
            f"{path}: ZeRO-3 without zero_optimization.stage3_gather_16bit_weights_on_model_save "
            "cannot save the trained model (the run would fail at its final save): set it to true"
        )


def prebuilt_ops_dir() -> Path:
    """Where ``make install`` compiles DeepSpeed's CPU ops (scripts/build_deepspeed_ops.py): one
    folder per environment, since the shared default cache's build files name one environment's
    include paths and every other environment rebuilds them (minutes on 2 cores)."""
    return Path(sys.prefix) / "torch_extensions"


def use_prebuilt_ops() -> None:
    """Point DeepSpeed at the ops ``make install`` built, when it did (the user's own
    ``TORCH_EXTENSIONS_DIR`` wins); else DeepSpeed's default cache, as before."""
    if prebuilt_ops_dir().is_dir():
        os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(prebuilt_ops_dir()))
